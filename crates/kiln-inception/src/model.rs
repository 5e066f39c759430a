//! The network: InceptionV3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for
//! Computer Vision", arXiv:1512.00567) in the variant that TensorFlow's FID code froze in 2015 and
//! pytorch-fid 0.3.0 (`pytorch_fid/inception.py`) ports: torchvision's `Inception3` with the
//! `FIDInceptionA/C/E_1/E_2` blocks, whose pooling branches differ from torchvision's (see
//! [`BranchPool`]).
//!
//! Every `BasicConv2d` (convolution without bias → batch norm with eps 0.001 → ReLU) is held as
//! one [`ConvBn`]: a convolution whose weight and bias already contain the frozen batch norm
//! (folded when the weights are loaded). The network only ever runs in inference mode, where a
//! batch norm is a per-channel affine map, so folding it changes results by float rounding only
//! and saves a full pass over every activation.

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::{adaptive_avg_pool2d, avg_pool2d, conv2d, interpolate, max_pool2d};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};

use crate::InceptionError;

/// Side of the square input the network was trained on; pytorch-fid resizes every image to it.
pub const INPUT_SIZE: usize = 299;
/// Width of the pool3 features FID uses.
pub const FEATURES: usize = 2048;
/// Number of logits: the 1008 outputs of the 2015 TensorFlow graph (1000 ImageNet classes plus
/// 8 unused ones), which Inception Score implementations take as they are.
pub const CLASSES: usize = 1008;
/// Smallest side the network accepts without resizing: below 75 pixels the feature map vanishes
/// before `Mixed_7a`.
pub const MIN_INPUT_SIZE: usize = 75;

/// pytorch-fid's `BasicConv2d` with its batch norm folded in: `relu(conv(x, w') + b')`.
#[derive(Module, Debug)]
pub struct ConvBn<B: Backend> {
    /// `[out, in, kh, kw]`: the convolution weight times `gamma / sqrt(running_var + eps)`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`: `beta - running_mean * gamma / sqrt(running_var + eps)`.
    pub bias: Param<Tensor<B, 1>>,
    /// Stride `[h, w]`.
    pub stride: [usize; 2],
    /// Zero padding `[h, w]` on both sides.
    pub padding: [usize; 2],
}

impl<B: Backend> ConvBn<B> {
    /// `[N, in, H, W]` → `[N, out, H', W']`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let options = ConvOptions::new(self.stride, self.padding, [1, 1], 1);
        relu(conv2d(x, self.weight.val(), Some(self.bias.val()), options))
    }
}

/// The pooling in front of a block's `branch_pool` convolution. The FID graph differs from
/// torchvision's Inception here, and the difference changes the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchPool {
    /// 3×3 average, stride 1, padding 1, averaging only the pixels inside the image
    /// (`count_include_pad=False`, as TensorFlow pools): `FIDInceptionA`, `C` and `E_1`.
    AverageValid,
    /// 3×3 max, stride 1, padding 1: `FIDInceptionE_2` (`Mixed_7c`), very likely a slip in the
    /// original graph, kept because every published FID was computed with it.
    Max,
}

impl BranchPool {
    fn forward<B: Backend>(self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::AverageValid => avg_pool2d(x, [3, 3], [1, 1], [1, 1], false, false),
            Self::Max => max_pool2d(x, [3, 3], [1, 1], [1, 1], [1, 1], false),
        }
    }
}

/// 3×3 max pool with stride 2 and no padding, between the stem's stages and in the reduction
/// blocks.
fn max_pool_3x3_s2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false)
}

/// `FIDInceptionA` (`Mixed_5b/c/d`): 1×1, 5×5, double 3×3 and pooled branches.
#[derive(Module, Debug)]
pub struct InceptionA<B: Backend> {
    pub(crate) branch1x1: ConvBn<B>,
    pub(crate) branch5x5_1: ConvBn<B>,
    pub(crate) branch5x5_2: ConvBn<B>,
    pub(crate) branch3x3dbl_1: ConvBn<B>,
    pub(crate) branch3x3dbl_2: ConvBn<B>,
    pub(crate) branch3x3dbl_3: ConvBn<B>,
    pub(crate) branch_pool: ConvBn<B>,
}

impl<B: Backend> InceptionA<B> {
    /// `[N, C, 35, 35]` → `[N, 224 + pool_features, 35, 35]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone()); // [N, 64, 35, 35]
        let b5 = self.branch5x5_1.forward(x.clone()); // [N, 48, 35, 35]
        let b5 = self.branch5x5_2.forward(b5); // [N, 64, 35, 35]
        let b3 = self.branch3x3dbl_1.forward(x.clone()); // [N, 64, 35, 35]
        let b3 = self.branch3x3dbl_2.forward(b3); // [N, 96, 35, 35]
        let b3 = self.branch3x3dbl_3.forward(b3); // [N, 96, 35, 35]
        let bp = BranchPool::AverageValid.forward(x); // [N, C, 35, 35]
        let bp = self.branch_pool.forward(bp); // [N, pool_features, 35, 35]
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }
}

/// torchvision's `InceptionB` (`Mixed_6a`): the 35 → 17 grid reduction.
#[derive(Module, Debug)]
pub struct InceptionB<B: Backend> {
    pub(crate) branch3x3: ConvBn<B>,
    pub(crate) branch3x3dbl_1: ConvBn<B>,
    pub(crate) branch3x3dbl_2: ConvBn<B>,
    pub(crate) branch3x3dbl_3: ConvBn<B>,
}

impl<B: Backend> InceptionB<B> {
    /// `[N, 288, 35, 35]` → `[N, 768, 17, 17]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self.branch3x3.forward(x.clone()); // [N, 384, 17, 17]
        let bd = self.branch3x3dbl_1.forward(x.clone()); // [N, 64, 35, 35]
        let bd = self.branch3x3dbl_2.forward(bd); // [N, 96, 35, 35]
        let bd = self.branch3x3dbl_3.forward(bd); // [N, 96, 17, 17]
        let bp = max_pool_3x3_s2(x); // [N, 288, 17, 17]
        Tensor::cat(vec![b3, bd, bp], 1)
    }
}

/// `FIDInceptionC` (`Mixed_6b..e`): factorised 7×7 branches.
#[derive(Module, Debug)]
pub struct InceptionC<B: Backend> {
    pub(crate) branch1x1: ConvBn<B>,
    pub(crate) branch7x7_1: ConvBn<B>,
    pub(crate) branch7x7_2: ConvBn<B>,
    pub(crate) branch7x7_3: ConvBn<B>,
    pub(crate) branch7x7dbl_1: ConvBn<B>,
    pub(crate) branch7x7dbl_2: ConvBn<B>,
    pub(crate) branch7x7dbl_3: ConvBn<B>,
    pub(crate) branch7x7dbl_4: ConvBn<B>,
    pub(crate) branch7x7dbl_5: ConvBn<B>,
    pub(crate) branch_pool: ConvBn<B>,
}

impl<B: Backend> InceptionC<B> {
    /// `[N, 768, 17, 17]` → `[N, 768, 17, 17]` (`c7` = the block's inner width).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone()); // [N, 192, 17, 17]
        let b7 = self.branch7x7_1.forward(x.clone()); // [N, c7, 17, 17]
        let b7 = self.branch7x7_2.forward(b7); // [N, c7, 17, 17] (1×7)
        let b7 = self.branch7x7_3.forward(b7); // [N, 192, 17, 17] (7×1)
        let bd = self.branch7x7dbl_1.forward(x.clone()); // [N, c7, 17, 17]
        let bd = self.branch7x7dbl_2.forward(bd); // [N, c7, 17, 17] (7×1)
        let bd = self.branch7x7dbl_3.forward(bd); // [N, c7, 17, 17] (1×7)
        let bd = self.branch7x7dbl_4.forward(bd); // [N, c7, 17, 17] (7×1)
        let bd = self.branch7x7dbl_5.forward(bd); // [N, 192, 17, 17] (1×7)
        let bp = BranchPool::AverageValid.forward(x); // [N, 768, 17, 17]
        let bp = self.branch_pool.forward(bp); // [N, 192, 17, 17]
        Tensor::cat(vec![b1, b7, bd, bp], 1)
    }
}

/// torchvision's `InceptionD` (`Mixed_7a`): the 17 → 8 grid reduction.
#[derive(Module, Debug)]
pub struct InceptionD<B: Backend> {
    pub(crate) branch3x3_1: ConvBn<B>,
    pub(crate) branch3x3_2: ConvBn<B>,
    pub(crate) branch7x7x3_1: ConvBn<B>,
    pub(crate) branch7x7x3_2: ConvBn<B>,
    pub(crate) branch7x7x3_3: ConvBn<B>,
    pub(crate) branch7x7x3_4: ConvBn<B>,
}

impl<B: Backend> InceptionD<B> {
    /// `[N, 768, 17, 17]` → `[N, 1280, 8, 8]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self.branch3x3_1.forward(x.clone()); // [N, 192, 17, 17]
        let b3 = self.branch3x3_2.forward(b3); // [N, 320, 8, 8]
        let b7 = self.branch7x7x3_1.forward(x.clone()); // [N, 192, 17, 17]
        let b7 = self.branch7x7x3_2.forward(b7); // [N, 192, 17, 17] (1×7)
        let b7 = self.branch7x7x3_3.forward(b7); // [N, 192, 17, 17] (7×1)
        let b7 = self.branch7x7x3_4.forward(b7); // [N, 192, 8, 8]
        let bp = max_pool_3x3_s2(x); // [N, 768, 8, 8]
        Tensor::cat(vec![b3, b7, bp], 1)
    }
}

/// `FIDInceptionE_1` / `FIDInceptionE_2` (`Mixed_7b`, `Mixed_7c`): expanded 3×3 branches; the two
/// differ only in [`BranchPool`].
#[derive(Module, Debug)]
pub struct InceptionE<B: Backend> {
    pub(crate) branch1x1: ConvBn<B>,
    pub(crate) branch3x3_1: ConvBn<B>,
    pub(crate) branch3x3_2a: ConvBn<B>,
    pub(crate) branch3x3_2b: ConvBn<B>,
    pub(crate) branch3x3dbl_1: ConvBn<B>,
    pub(crate) branch3x3dbl_2: ConvBn<B>,
    pub(crate) branch3x3dbl_3a: ConvBn<B>,
    pub(crate) branch3x3dbl_3b: ConvBn<B>,
    pub(crate) branch_pool: ConvBn<B>,
    #[module(skip)]
    pub(crate) pool: BranchPool,
}

impl<B: Backend> InceptionE<B> {
    /// `[N, C, 8, 8]` → `[N, 2048, 8, 8]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone()); // [N, 320, 8, 8]
        let b3 = self.branch3x3_1.forward(x.clone()); // [N, 384, 8, 8]
        let b3a = self.branch3x3_2a.forward(b3.clone()); // [N, 384, 8, 8] (1×3)
        let b3b = self.branch3x3_2b.forward(b3); // [N, 384, 8, 8] (3×1)
        let bd = self.branch3x3dbl_1.forward(x.clone()); // [N, 448, 8, 8]
        let bd = self.branch3x3dbl_2.forward(bd); // [N, 384, 8, 8]
        let bda = self.branch3x3dbl_3a.forward(bd.clone()); // [N, 384, 8, 8] (1×3)
        let bdb = self.branch3x3dbl_3b.forward(bd); // [N, 384, 8, 8] (3×1)
        let bp = self.pool.forward(x); // [N, C, 8, 8]
        let bp = self.branch_pool.forward(bp); // [N, 192, 8, 8]
        Tensor::cat(vec![b1, b3a, b3b, bda, bdb, bp], 1)
    }
}

/// Both heads of the network for one batch.
#[derive(Debug, Clone)]
pub struct InceptionOutput<B: Backend> {
    /// `[N, 2048]` pool3 features (the input of FID, KID, precision/recall).
    pub features: Tensor<B, 2>,
    /// `[N, 1008]` logits of the classifier (softmax them for the Inception Score).
    pub logits: Tensor<B, 2>,
}

/// pytorch-fid's FID InceptionV3, with its classifier. Build it with [`FidInception::load`] or
/// [`crate::InceptionConfig`].
///
/// Inputs are `[N, C, H, W]` images with values in `[0, 1]`; `C` is 3 (RGB) or 1 (greyscale,
/// repeated to three channels — the usual convention, which pytorch-fid leaves to the caller).
/// They are resized to 299×299 with bilinear interpolation, `align_corners = false` and no
/// antialiasing (exactly `F.interpolate(x, (299, 299), mode='bilinear', align_corners=False)`),
/// then mapped to `[-1, 1]` by `2x - 1`. Images in a batch share one size; any batch size works,
/// and each image's result does not depend on the others in its batch.
#[derive(Module, Debug)]
pub struct FidInception<B: Backend> {
    pub(crate) conv2d_1a_3x3: ConvBn<B>,
    pub(crate) conv2d_2a_3x3: ConvBn<B>,
    pub(crate) conv2d_2b_3x3: ConvBn<B>,
    pub(crate) conv2d_3b_1x1: ConvBn<B>,
    pub(crate) conv2d_4a_3x3: ConvBn<B>,
    pub(crate) mixed_5b: InceptionA<B>,
    pub(crate) mixed_5c: InceptionA<B>,
    pub(crate) mixed_5d: InceptionA<B>,
    pub(crate) mixed_6a: InceptionB<B>,
    pub(crate) mixed_6b: InceptionC<B>,
    pub(crate) mixed_6c: InceptionC<B>,
    pub(crate) mixed_6d: InceptionC<B>,
    pub(crate) mixed_6e: InceptionC<B>,
    pub(crate) mixed_7a: InceptionD<B>,
    pub(crate) mixed_7b: InceptionE<B>,
    pub(crate) mixed_7c: InceptionE<B>,
    /// `[2048, 1008]`: `fc.weight` transposed, so the classifier is a plain `x @ W + b`.
    pub(crate) fc_weight: Param<Tensor<B, 2>>,
    /// `[1008]`.
    pub(crate) fc_bias: Param<Tensor<B, 1>>,
    /// Resize to 299×299 first (pytorch-fid's `resize_input=True`).
    pub(crate) resize_input: bool,
}

impl<B: Backend> FidInception<B> {
    /// pool3 features and logits of `images` (`[N, C, H, W]`, values in `[0, 1]`): `[N, 2048]`
    /// and `[N, 1008]`.
    ///
    /// # Errors
    /// [`InceptionError::InputShape`] for an empty batch, a channel count other than 1 or 3, or
    /// (with resizing off) a side below 75 pixels.
    pub fn forward(&self, images: Tensor<B, 4>) -> Result<InceptionOutput<B>, InceptionError> {
        let features = self.features(images)?; // [N, 2048]
        let logits = self.classify(features.clone()); // [N, 1008]
        Ok(InceptionOutput { features, logits })
    }

    /// pool3 features of `images` (`[N, C, H, W]`, values in `[0, 1]`): `[N, 2048]`, the rows FID
    /// is computed from. Errors as [`FidInception::forward`].
    pub fn features(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, InceptionError> {
        let x = preprocess(images, self.resize_input)?; // [N, 3, 299, 299] in [-1, 1]
        let x = self.conv2d_1a_3x3.forward(x); // [N, 32, 149, 149]
        let x = self.conv2d_2a_3x3.forward(x); // [N, 32, 147, 147]
        let x = self.conv2d_2b_3x3.forward(x); // [N, 64, 147, 147]
        let x = max_pool_3x3_s2(x); // [N, 64, 73, 73]
        let x = self.conv2d_3b_1x1.forward(x); // [N, 80, 73, 73]
        let x = self.conv2d_4a_3x3.forward(x); // [N, 192, 71, 71]
        let x = max_pool_3x3_s2(x); // [N, 192, 35, 35]
        let x = self.mixed_5b.forward(x); // [N, 256, 35, 35]
        let x = self.mixed_5c.forward(x); // [N, 288, 35, 35]
        let x = self.mixed_5d.forward(x); // [N, 288, 35, 35]
        let x = self.mixed_6a.forward(x); // [N, 768, 17, 17]
        let x = self.mixed_6b.forward(x); // [N, 768, 17, 17]
        let x = self.mixed_6c.forward(x); // [N, 768, 17, 17]
        let x = self.mixed_6d.forward(x); // [N, 768, 17, 17]
        let x = self.mixed_6e.forward(x); // [N, 768, 17, 17]
        let x = self.mixed_7a.forward(x); // [N, 1280, 8, 8]
        let x = self.mixed_7b.forward(x); // [N, 2048, 8, 8]
        let x = self.mixed_7c.forward(x); // [N, 2048, 8, 8]
        let x = adaptive_avg_pool2d(x, [1, 1]); // [N, 2048, 1, 1]
        Ok(x.flatten(1, 3)) // [N, 2048]
    }

    /// Logits of `images` (`[N, C, H, W]`, values in `[0, 1]`): `[N, 1008]`. For both heads at
    /// once use [`FidInception::forward`]. Errors as [`FidInception::forward`].
    pub fn logits(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, InceptionError> {
        Ok(self.classify(self.features(images)?))
    }

    /// The classifier on pool3 features: `[N, 2048]` → `[N, 1008]`. pytorch-fid's model has a
    /// dropout before it, which is the identity in inference.
    pub fn classify(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        features.matmul(self.fc_weight.val()) + self.fc_bias.val().unsqueeze_dim(0)
    }
}

/// pytorch-fid's input pipeline: greyscale → RGB, bilinear resize to 299×299 (when
/// `resize_input`), `[0, 1]` → `[-1, 1]`. `[N, C, H, W]` → `[N, 3, 299, 299]` (or
/// `[N, 3, H, W]` without resizing). [`FidInception`] calls it first; it is public for tests and
/// for callers who want to see what the network sees.
///
/// # Errors
/// [`InceptionError::InputShape`] for an empty batch, a channel count other than 1 or 3, or
/// (without resizing) a side below 75 pixels.
pub fn preprocess<B: Backend>(images: Tensor<B, 4>, resize_input: bool) -> Result<Tensor<B, 4>, InceptionError> {
    let shape = images.dims();
    let [n, c, h, w] = shape;
    let refuse = |reason| Err(InceptionError::InputShape { shape, reason });
    if n == 0 || h == 0 || w == 0 {
        return refuse("empty batch or image");
    }
    let x = match c {
        3 => images,
        1 => images.repeat_dim(1, 3), // [N, 3, H, W]
        _ => return refuse("expected 1 (greyscale) or 3 (RGB) channels"),
    };
    let x = if resize_input {
        resize_bilinear(x, [INPUT_SIZE, INPUT_SIZE]) // [N, 3, 299, 299]
    } else if h < MIN_INPUT_SIZE || w < MIN_INPUT_SIZE {
        return refuse("sides below 75 pixels need resize_input");
    } else {
        x
    };
    Ok(x * 2.0 - 1.0)
}

/// `F.interpolate(x, size, mode='bilinear', align_corners=False)` without antialiasing:
/// half-pixel centres, source coordinates clamped at 0. burn's `InterpolateOptions::new`
/// defaults to `align_corners = true`, which shifts every sample, hence the explicit setting.
pub fn resize_bilinear<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    if x.dims()[2..] == size {
        // Half-pixel bilinear at scale 1 samples every pixel exactly: the identity.
        return x;
    }
    let options = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false);
    interpolate(x, size, options)
}

/// Builds the parameters of a [`ConvBn`] from the five tensors of a `BasicConv2d`.
pub(crate) struct ConvBnParts {
    pub weight: TensorData,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

/// Batch-norm epsilon of the FID graph's `BasicConv2d` (TensorFlow's 0.001, not torch's 1e-5).
pub(crate) const BN_EPS: f64 = 1e-3;

impl ConvBnParts {
    /// Folds the batch norm into the convolution: for output channel `o`,
    /// `s = gamma / sqrt(var + eps)`, `w'[o] = s · w[o]`, `b'[o] = beta - s · mean`, in f64.
    pub fn fold<B: Backend>(
        self,
        stride: [usize; 2],
        padding: [usize; 2],
        device: &B::Device,
    ) -> Result<ConvBn<B>, burn::tensor::DataError> {
        let shape = self.weight.shape.clone();
        let per_out: usize = shape.as_slice()[1..].iter().product();
        let mut weight = self.weight.into_vec::<f32>()?;
        let mut bias = Vec::with_capacity(self.gamma.len());
        for (o, chunk) in weight.chunks_mut(per_out).enumerate() {
            let scale = f64::from(self.gamma[o]) / (f64::from(self.var[o]) + BN_EPS).sqrt();
            for v in chunk.iter_mut() {
                *v = (f64::from(*v) * scale) as f32;
            }
            bias.push((f64::from(self.beta[o]) - f64::from(self.mean[o]) * scale) as f32);
        }
        let out = bias.len();
        Ok(ConvBn {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(weight, shape), device)),
            bias: Param::from_tensor(Tensor::from_data(TensorData::new(bias, [out]), device)),
            stride,
            padding,
        })
    }
}
