//! Reading pytorch-fid's state dict (a `.pth` torch pickle or a `.safetensors` file with the same
//! keys) and building [`FidInception`] from it.
//!
//! The module is built by hand, tensor by tensor, rather than through burn-store's
//! `ModuleSnapshot::load_from`: the batch norms are folded into the convolutions and `fc.weight`
//! is transposed while loading, so the burn module has no field for many state-dict keys, and
//! walking the architecture ourselves gives an error that names the first missing or misshapen
//! key. Keys the network does not use (`num_batches_tracked`, an `AuxLogits` head) are ignored.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_store::pytorch::PytorchReader;
use burn_store::{ModuleStore, SafetensorsStore, TensorSnapshot};

use crate::InceptionError;
use crate::model::{
    BranchPool, CLASSES, ConvBn, ConvBnParts, FEATURES, FidInception, InceptionA, InceptionB, InceptionC, InceptionD,
    InceptionE,
};

/// Configuration of [`FidInception`]. The default reproduces pytorch-fid's
/// `InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True)`.
#[derive(Config, Debug)]
pub struct InceptionConfig {
    /// Resize every image to 299×299 first (pytorch-fid's `resize_input`). Published FIDs use it;
    /// turn it off only to feed images that are already 299×299 or to study the network.
    #[config(default = true)]
    pub resize_input: bool,
}

impl InceptionConfig {
    /// Loads the network from pytorch-fid's weights file: the published
    /// `pt_inception-2015-12-05-6726825d.pth` (a torch pickle, legacy or zip format) or a
    /// `.safetensors` file with the same keys. The format is read from the file's first bytes.
    ///
    /// # Errors
    /// [`InceptionError::Read`] if the file cannot be parsed; [`InceptionError::MissingTensor`],
    /// [`InceptionError::ShapeMismatch`] or [`InceptionError::BadTensor`] naming the first key
    /// that does not fit the architecture.
    pub fn load<B: Backend>(
        &self,
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<FidInception<B>, InceptionError> {
        let path = path.as_ref();
        let snapshots = read_snapshots(path)?;
        let mut lookup = |name: &str| snapshots.get(name).map(|snapshot| snapshot.to_data().map_err(|e| e.to_string()));
        self.build(&mut lookup, path, device)
    }

    /// Builds the network from tensors already in memory, keyed as in pytorch-fid's state dict
    /// (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_var`, `fc.weight`, …). Errors
    /// name the file `<memory>`.
    pub fn from_tensors<B: Backend>(
        &self,
        mut tensors: HashMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<FidInception<B>, InceptionError> {
        let mut lookup = |name: &str| tensors.remove(name).map(Ok);
        self.build(&mut lookup, Path::new("<memory>"), device)
    }

    fn build<B: Backend>(
        &self,
        lookup: &mut dyn FnMut(&str) -> Option<Result<TensorData, String>>,
        origin: &Path,
        device: &B::Device,
    ) -> Result<FidInception<B>, InceptionError> {
        let mut l = Loader { lookup, origin, device };
        Ok(FidInception {
            conv2d_1a_3x3: l.conv("Conv2d_1a_3x3", 3, 32, [3, 3], [2, 2], [0, 0])?,
            conv2d_2a_3x3: l.conv("Conv2d_2a_3x3", 32, 32, [3, 3], [1, 1], [0, 0])?,
            conv2d_2b_3x3: l.conv("Conv2d_2b_3x3", 32, 64, [3, 3], [1, 1], [1, 1])?,
            conv2d_3b_1x1: l.conv("Conv2d_3b_1x1", 64, 80, [1, 1], [1, 1], [0, 0])?,
            conv2d_4a_3x3: l.conv("Conv2d_4a_3x3", 80, 192, [3, 3], [1, 1], [0, 0])?,
            mixed_5b: l.block_a("Mixed_5b", 192, 32)?,
            mixed_5c: l.block_a("Mixed_5c", 256, 64)?,
            mixed_5d: l.block_a("Mixed_5d", 288, 64)?,
            mixed_6a: l.block_b("Mixed_6a", 288)?,
            mixed_6b: l.block_c("Mixed_6b", 768, 128)?,
            mixed_6c: l.block_c("Mixed_6c", 768, 160)?,
            mixed_6d: l.block_c("Mixed_6d", 768, 160)?,
            mixed_6e: l.block_c("Mixed_6e", 768, 192)?,
            mixed_7a: l.block_d("Mixed_7a", 768)?,
            mixed_7b: l.block_e("Mixed_7b", 1280, BranchPool::AverageValid)?,
            mixed_7c: l.block_e("Mixed_7c", 2048, BranchPool::Max)?,
            fc_weight: {
                let weight = l.tensor("fc.weight", &[CLASSES, FEATURES])?;
                // [1008, 2048] → [2048, 1008], so the classifier is `x @ W`.
                let weight = Tensor::<B, 2>::from_data(weight, device).transpose();
                Param::from_tensor(Tensor::from_data(weight.into_data(), device))
            },
            fc_bias: Param::from_tensor(Tensor::from_data(l.tensor("fc.bias", &[CLASSES])?, device)),
            resize_input: self.resize_input,
        })
    }
}

impl<B: Backend> FidInception<B> {
    /// Loads pytorch-fid's weights with the default [`InceptionConfig`] (resize to 299×299): the
    /// usual way in. See [`InceptionConfig::load`].
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, InceptionError> {
        InceptionConfig::new().load(path, device)
    }
}

/// Every tensor the network reads, keyed and shaped as in pytorch-fid's state dict and in its
/// order: 94 `BasicConv2d`s (`{prefix}.conv.weight` `[out, in, kh, kw]`, then `{prefix}.bn.weight`,
/// `.bn.bias`, `.bn.running_mean`, `.bn.running_var`, each `[out]`), then `fc.weight`
/// `[1008, 2048]` and `fc.bias` `[1008]`; 472 tensors, 23.9M floats. A file with exactly these
/// (plus keys the network ignores, such as `num_batches_tracked`) loads.
pub fn state_dict_layout() -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::with_capacity(472);
    let mut conv = |prefix: String, cin: usize, cout: usize, kernel: [usize; 2]| {
        out.push((format!("{prefix}.conv.weight"), vec![cout, cin, kernel[0], kernel[1]]));
        for leaf in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{prefix}.bn.{leaf}"), vec![cout]));
        }
    };
    for (name, cin, cout, k) in [
        ("Conv2d_1a_3x3", 3, 32, 3),
        ("Conv2d_2a_3x3", 32, 32, 3),
        ("Conv2d_2b_3x3", 32, 64, 3),
        ("Conv2d_3b_1x1", 64, 80, 1),
        ("Conv2d_4a_3x3", 80, 192, 3),
    ] {
        conv(name.to_string(), cin, cout, [k, k]);
    }
    // Each block's convolutions as (branch, in, out, kernel), `in = 0` standing for the block's.
    type Branches<'a> = &'a [(&'a str, usize, usize, [usize; 2])];
    let mut block = |name: &str, cin: usize, branches: Branches<'_>| {
        for &(branch, bin, bout, kernel) in branches {
            conv(format!("{name}.{branch}"), if bin == 0 { cin } else { bin }, bout, kernel);
        }
    };
    for (name, cin, pool) in [("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)] {
        block(
            name,
            cin,
            &[
                ("branch1x1", 0, 64, [1, 1]),
                ("branch5x5_1", 0, 48, [1, 1]),
                ("branch5x5_2", 48, 64, [5, 5]),
                ("branch3x3dbl_1", 0, 64, [1, 1]),
                ("branch3x3dbl_2", 64, 96, [3, 3]),
                ("branch3x3dbl_3", 96, 96, [3, 3]),
                ("branch_pool", 0, pool, [1, 1]),
            ],
        );
    }
    block(
        "Mixed_6a",
        288,
        &[
            ("branch3x3", 0, 384, [3, 3]),
            ("branch3x3dbl_1", 0, 64, [1, 1]),
            ("branch3x3dbl_2", 64, 96, [3, 3]),
            ("branch3x3dbl_3", 96, 96, [3, 3]),
        ],
    );
    for (name, c7) in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)] {
        block(
            name,
            768,
            &[
                ("branch1x1", 0, 192, [1, 1]),
                ("branch7x7_1", 0, c7, [1, 1]),
                ("branch7x7_2", c7, c7, [1, 7]),
                ("branch7x7_3", c7, 192, [7, 1]),
                ("branch7x7dbl_1", 0, c7, [1, 1]),
                ("branch7x7dbl_2", c7, c7, [7, 1]),
                ("branch7x7dbl_3", c7, c7, [1, 7]),
                ("branch7x7dbl_4", c7, c7, [7, 1]),
                ("branch7x7dbl_5", c7, 192, [1, 7]),
                ("branch_pool", 0, 192, [1, 1]),
            ],
        );
    }
    block(
        "Mixed_7a",
        768,
        &[
            ("branch3x3_1", 0, 192, [1, 1]),
            ("branch3x3_2", 192, 320, [3, 3]),
            ("branch7x7x3_1", 0, 192, [1, 1]),
            ("branch7x7x3_2", 192, 192, [1, 7]),
            ("branch7x7x3_3", 192, 192, [7, 1]),
            ("branch7x7x3_4", 192, 192, [3, 3]),
        ],
    );
    for (name, cin) in [("Mixed_7b", 1280), ("Mixed_7c", 2048)] {
        block(
            name,
            cin,
            &[
                ("branch1x1", 0, 320, [1, 1]),
                ("branch3x3_1", 0, 384, [1, 1]),
                ("branch3x3_2a", 384, 384, [1, 3]),
                ("branch3x3_2b", 384, 384, [3, 1]),
                ("branch3x3dbl_1", 0, 448, [1, 1]),
                ("branch3x3dbl_2", 448, 384, [3, 3]),
                ("branch3x3dbl_3a", 384, 384, [1, 3]),
                ("branch3x3dbl_3b", 384, 384, [3, 1]),
                ("branch_pool", 0, 192, [1, 1]),
            ],
        );
    }
    out.push(("fc.weight".to_string(), vec![CLASSES, FEATURES]));
    out.push(("fc.bias".to_string(), vec![CLASSES]));
    out
}

/// Reads every tensor of a `.pth` (torch pickle, zip or legacy format) or `.safetensors` file,
/// keyed as in the file: for inspecting a checkpoint, or editing one before
/// [`InceptionConfig::from_tensors`]. Tensors keep their stored dtype.
///
/// # Errors
/// [`InceptionError::Read`] if the file cannot be parsed, [`InceptionError::BadTensor`] if a
/// tensor's data cannot be read.
pub fn read_state_dict(path: impl AsRef<Path>) -> Result<HashMap<String, TensorData>, InceptionError> {
    let path = path.as_ref();
    read_snapshots(path)?
        .into_iter()
        .map(|(name, snapshot)| match snapshot.to_data() {
            Ok(data) => Ok((name, data)),
            Err(e) => Err(InceptionError::BadTensor { path: path.to_path_buf(), tensor: name, message: e.to_string() }),
        })
        .collect()
}

/// Reads every tensor of a `.pth` or `.safetensors` file (lazily: data is copied on use).
fn read_snapshots(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>, InceptionError> {
    let read_error = |message: String| InceptionError::Read { path: path.to_path_buf(), message };
    if is_safetensors(path).map_err(|e| read_error(e.to_string()))? {
        let mut store = SafetensorsStore::from_file(path);
        let snapshots = store.get_all_snapshots().map_err(|e| read_error(e.to_string()))?;
        Ok(snapshots.clone())
    } else {
        let reader = PytorchReader::new(path).map_err(|e| read_error(e.to_string()))?;
        Ok(reader.into_tensors().into_iter().collect())
    }
}

/// A safetensors file opens with a little-endian u64 header length and then the JSON header;
/// a torch file is a zip archive (`PK`) or, in the legacy format, a pickle (`0x80`).
fn is_safetensors(path: &Path) -> std::io::Result<bool> {
    let mut head = [0u8; 9];
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(head[8] == b'{')
}

/// Walks the architecture, taking each tensor from `lookup` and checking its shape.
struct Loader<'a, B: Backend> {
    lookup: &'a mut dyn FnMut(&str) -> Option<Result<TensorData, String>>,
    origin: &'a Path,
    device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    fn path(&self) -> PathBuf {
        self.origin.to_path_buf()
    }

    /// The tensor `name` as f32 data of shape `expected`.
    fn tensor(&mut self, name: &str, expected: &[usize]) -> Result<TensorData, InceptionError> {
        let data = (self.lookup)(name)
            .ok_or_else(|| InceptionError::MissingTensor { path: self.path(), tensor: name.to_string() })?
            .map_err(|message| InceptionError::BadTensor { path: self.path(), tensor: name.to_string(), message })?;
        if data.shape.as_slice() != expected {
            return Err(InceptionError::ShapeMismatch {
                path: self.path(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found: data.shape.to_vec(),
            });
        }
        if !data.dtype.is_float() {
            return Err(InceptionError::BadTensor {
                path: self.path(),
                tensor: name.to_string(),
                message: format!("dtype {:?} is not a float type", data.dtype),
            });
        }
        Ok(data.convert::<f32>())
    }

    fn floats(&mut self, name: &str, len: usize) -> Result<Vec<f32>, InceptionError> {
        let data = self.tensor(name, &[len])?;
        data.into_vec::<f32>().map_err(|e| InceptionError::BadTensor {
            path: self.path(),
            tensor: name.to_string(),
            message: format!("{e:?}"),
        })
    }

    /// A `BasicConv2d` at `prefix` (`{prefix}.conv.weight`, `{prefix}.bn.*`), folded.
    fn conv(
        &mut self,
        prefix: &str,
        cin: usize,
        cout: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Result<ConvBn<B>, InceptionError> {
        let weight_name = format!("{prefix}.conv.weight");
        let parts = ConvBnParts {
            weight: self.tensor(&weight_name, &[cout, cin, kernel[0], kernel[1]])?,
            gamma: self.floats(&format!("{prefix}.bn.weight"), cout)?,
            beta: self.floats(&format!("{prefix}.bn.bias"), cout)?,
            mean: self.floats(&format!("{prefix}.bn.running_mean"), cout)?,
            var: self.floats(&format!("{prefix}.bn.running_var"), cout)?,
        };
        parts.fold(stride, padding, self.device).map_err(|e| InceptionError::BadTensor {
            path: self.path(),
            tensor: weight_name,
            message: format!("{e:?}"),
        })
    }

    /// A `same`-padded stride-1 convolution `prefix.name` with kernel `[kh, kw]`.
    fn same(
        &mut self,
        prefix: &str,
        name: &str,
        cin: usize,
        cout: usize,
        kernel: [usize; 2],
    ) -> Result<ConvBn<B>, InceptionError> {
        let padding = [kernel[0] / 2, kernel[1] / 2];
        self.conv(&format!("{prefix}.{name}"), cin, cout, kernel, [1, 1], padding)
    }

    /// A 3×3 stride-2 unpadded (grid-reducing) convolution `prefix.name`.
    fn reduce(&mut self, prefix: &str, name: &str, cin: usize, cout: usize) -> Result<ConvBn<B>, InceptionError> {
        self.conv(&format!("{prefix}.{name}"), cin, cout, [3, 3], [2, 2], [0, 0])
    }

    fn block_a(&mut self, p: &str, cin: usize, pool: usize) -> Result<InceptionA<B>, InceptionError> {
        Ok(InceptionA {
            branch1x1: self.same(p, "branch1x1", cin, 64, [1, 1])?,
            branch5x5_1: self.same(p, "branch5x5_1", cin, 48, [1, 1])?,
            branch5x5_2: self.same(p, "branch5x5_2", 48, 64, [5, 5])?,
            branch3x3dbl_1: self.same(p, "branch3x3dbl_1", cin, 64, [1, 1])?,
            branch3x3dbl_2: self.same(p, "branch3x3dbl_2", 64, 96, [3, 3])?,
            branch3x3dbl_3: self.same(p, "branch3x3dbl_3", 96, 96, [3, 3])?,
            branch_pool: self.same(p, "branch_pool", cin, pool, [1, 1])?,
        })
    }

    fn block_b(&mut self, p: &str, cin: usize) -> Result<InceptionB<B>, InceptionError> {
        Ok(InceptionB {
            branch3x3: self.reduce(p, "branch3x3", cin, 384)?,
            branch3x3dbl_1: self.same(p, "branch3x3dbl_1", cin, 64, [1, 1])?,
            branch3x3dbl_2: self.same(p, "branch3x3dbl_2", 64, 96, [3, 3])?,
            branch3x3dbl_3: self.reduce(p, "branch3x3dbl_3", 96, 96)?,
        })
    }

    fn block_c(&mut self, p: &str, cin: usize, c7: usize) -> Result<InceptionC<B>, InceptionError> {
        Ok(InceptionC {
            branch1x1: self.same(p, "branch1x1", cin, 192, [1, 1])?,
            branch7x7_1: self.same(p, "branch7x7_1", cin, c7, [1, 1])?,
            branch7x7_2: self.same(p, "branch7x7_2", c7, c7, [1, 7])?,
            branch7x7_3: self.same(p, "branch7x7_3", c7, 192, [7, 1])?,
            branch7x7dbl_1: self.same(p, "branch7x7dbl_1", cin, c7, [1, 1])?,
            branch7x7dbl_2: self.same(p, "branch7x7dbl_2", c7, c7, [7, 1])?,
            branch7x7dbl_3: self.same(p, "branch7x7dbl_3", c7, c7, [1, 7])?,
            branch7x7dbl_4: self.same(p, "branch7x7dbl_4", c7, c7, [7, 1])?,
            branch7x7dbl_5: self.same(p, "branch7x7dbl_5", c7, 192, [1, 7])?,
            branch_pool: self.same(p, "branch_pool", cin, 192, [1, 1])?,
        })
    }

    fn block_d(&mut self, p: &str, cin: usize) -> Result<InceptionD<B>, InceptionError> {
        Ok(InceptionD {
            branch3x3_1: self.same(p, "branch3x3_1", cin, 192, [1, 1])?,
            branch3x3_2: self.reduce(p, "branch3x3_2", 192, 320)?,
            branch7x7x3_1: self.same(p, "branch7x7x3_1", cin, 192, [1, 1])?,
            branch7x7x3_2: self.same(p, "branch7x7x3_2", 192, 192, [1, 7])?,
            branch7x7x3_3: self.same(p, "branch7x7x3_3", 192, 192, [7, 1])?,
            branch7x7x3_4: self.reduce(p, "branch7x7x3_4", 192, 192)?,
        })
    }

    fn block_e(&mut self, p: &str, cin: usize, pool: BranchPool) -> Result<InceptionE<B>, InceptionError> {
        Ok(InceptionE {
            branch1x1: self.same(p, "branch1x1", cin, 320, [1, 1])?,
            branch3x3_1: self.same(p, "branch3x3_1", cin, 384, [1, 1])?,
            branch3x3_2a: self.same(p, "branch3x3_2a", 384, 384, [1, 3])?,
            branch3x3_2b: self.same(p, "branch3x3_2b", 384, 384, [3, 1])?,
            branch3x3dbl_1: self.same(p, "branch3x3dbl_1", cin, 448, [1, 1])?,
            branch3x3dbl_2: self.same(p, "branch3x3dbl_2", 448, 384, [3, 3])?,
            branch3x3dbl_3a: self.same(p, "branch3x3dbl_3a", 384, 384, [1, 3])?,
            branch3x3dbl_3b: self.same(p, "branch3x3dbl_3b", 384, 384, [3, 1])?,
            branch_pool: self.same(p, "branch_pool", cin, 192, [1, 1])?,
            pool,
        })
    }
}
