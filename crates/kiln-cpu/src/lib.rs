//! `KilnCpu<B>`: a burn [`Backend`] decorator that makes 2-D convolutions fast on the CPU.
//!
//! burn-flex 0.21 runs a DCGAN-64 train step at about an eighth of PyTorch's speed on the same
//! cores, and nearly all of that time is in `conv2d`, `conv_transpose2d` and the backward ops
//! burn's autodiff calls for them (see this crate's README for the per-op profile). burn's
//! default backward ops re-express each gradient as another convolution with swapped batch and
//! channel axes and a kernel as large as the feature map, which flex's convolution was not
//! built for. This crate sits *under* autodiff and replaces exactly those ops with im2col /
//! col2im around the `gemm` crate (the one flex itself uses): per image on large maps, and on
//! small deep maps one GEMM per batch chunk over channels-last patches (see `src/conv.rs`):
//!
//! | op (`ModuleOps`)                    | kernel                                   |
//! |-------------------------------------|------------------------------------------|
//! | `conv2d`                            | `out = W · im2col(x)`                    |
//! | `conv2d_x_backward`                 | `dx = col2im(Wᵀ · dy)`                   |
//! | `conv2d_weight_backward`            | `dW = dy · im2col(x)ᵀ`                   |
//! | `conv_transpose2d`                  | `out = col2im(Wᵀ · x)`                   |
//! | `conv_transpose2d_x_backward`       | `dx = W · im2col(dy)`                    |
//! | `conv_transpose2d_weight_backward`  | `dW = x · im2col(dy)ᵀ`                   |
//! | `conv2d_bias_backward`, `conv_transpose2d_bias_backward` | `db[c] = Σ dy[·, c, ·, ·]` |
//! | `attention` (no bool mask, bias or soft cap)             | blocked, see `src/attention.rs` |
//!
//! Beside the backend ops, fused kernels that burn's autodiff would otherwise decompose into
//! many single-pass ops: [`attention_autodiff`] (blocks of query rows without the `[L_q, L_k]`
//! scores, `src/attention.rs`), [`lstm_cell_autodiff`] (an LSTM step's gates as one node),
//! [`filterbank_autodiff`] (one axis of DRAW's attention filterbank as one node),
//! [`norm_autodiff`] (batch or group norm with its affine transform, `src/norm.rs`),
//! [`leaky_relu_autodiff`] and [`silu_autodiff`] (one node each), [`adam_update`] (Adam's
//! update in one pass), and [`resample`] (a separable resize as tap loops, without autodiff). kiln-kernels and kiln-optim pick them up once
//! they are registered (`kiln_device::register_cpu_kernels`).
//!
//! Every other op, and any convolution these kernels do not handle (a dtype other than `f32`,
//! `groups > 1`, empty tensors), is forwarded unchanged to the inner backend, whose tensor
//! primitives `KilnCpu` uses as its own: no conversion happens at the boundary, and
//! `Autodiff<KilnCpu<Flex>>` is a drop-in for `Autodiff<Flex>`.
//!
//! ```
//! use burn::backend::Autodiff;
//! use burn::tensor::{Distribution, Tensor};
//! use burn::tensor::module::conv2d;
//! use burn::tensor::ops::ConvOptions;
//! use kiln_cpu::KilnCpu;
//!
//! type B = Autodiff<KilnCpu>; // KilnCpu<burn_flex::Flex>
//! let device = Default::default();
//! let x = Tensor::<B, 4>::random([2, 3, 8, 8], Distribution::Default, &device).require_grad();
//! let w = Tensor::<B, 4>::random([4, 3, 3, 3], Distribution::Default, &device).require_grad();
//! let y = conv2d(x.clone(), w.clone(), None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
//! let grads = y.sum().backward();
//! assert_eq!(x.grad(&grads).expect("x grad").dims(), [2, 3, 8, 8]);
//! ```
#![warn(missing_docs)]

mod activation;
mod adam;
mod alloc;
mod attention;
mod conv;
mod delegate;
mod filterbank;
mod gemm;
mod inner;
mod linear;
mod lstm;
mod norm;
mod pointwise;
mod resample;
mod rows;
mod strided;
mod threads;
mod transpose;

pub use adam::{AdamStep, Moments, adam_update};
pub use alloc::{BlockCache, CACHE_ENV, CacheStats};
pub use attention::attention_autodiff;
pub use filterbank::filterbank_autodiff;
pub use inner::CpuInner;
pub use lstm::lstm_cell_autodiff;
pub use norm::norm_autodiff;
pub use pointwise::{leaky_relu_autodiff, silu_autodiff};
pub use resample::resample;
pub use threads::{ThreadsError, init_threads, on_pool, physical_cores, run_shards, threads};

use burn_backend::{Backend, BackendTypes, DType, DTypeUsageSet, ExecutionError, TensorData};
use burn_flex::Flex;
use core::marker::PhantomData;

/// A backend that runs `B`'s kernels except for f32 2-D convolutions and their gradients, which
/// it computes with its own im2col/col2im + GEMM kernels, and their bias gradients (crate docs
/// list the ops).
///
/// The tensor primitives are `B`'s own, so wrapping costs nothing at op boundaries. Use it
/// under autodiff as `burn::backend::Autodiff<KilnCpu<Flex>>`.
#[derive(Clone, Copy, Default, Debug)]
pub struct KilnCpu<B = Flex> {
    _inner: PhantomData<B>,
}

impl<B: Backend> BackendTypes for KilnCpu<B> {
    type Device = B::Device;
    type FloatTensorPrimitive = B::FloatTensorPrimitive;
    type FloatElem = B::FloatElem;
    type IntTensorPrimitive = B::IntTensorPrimitive;
    type IntElem = B::IntElem;
    type BoolTensorPrimitive = B::BoolTensorPrimitive;
    type BoolElem = B::BoolElem;
    type QuantizedTensorPrimitive = B::QuantizedTensorPrimitive;
}

impl<B: CpuInner> Backend for KilnCpu<B> {
    fn ad_enabled(device: &Self::Device) -> bool {
        B::ad_enabled(device)
    }

    fn memory_persistent_allocations<Output: Send, Input: Send, Func: Fn(Input) -> Output + Send>(
        device: &Self::Device,
        input: Input,
        func: Func,
    ) -> Output {
        B::memory_persistent_allocations(device, input, func)
    }

    fn memory_cleanup(device: &Self::Device) {
        B::memory_cleanup(device)
    }

    fn name(device: &Self::Device) -> String {
        format!("kiln-cpu<{}>", B::name(device))
    }

    fn seed(device: &Self::Device, seed: u64) {
        B::seed(device, seed)
    }

    fn sync(device: &Self::Device) -> Result<(), ExecutionError> {
        B::sync(device)
    }

    fn staging<'a, Iter>(data: Iter, device: &Self::Device)
    where
        Iter: Iterator<Item = &'a mut TensorData>,
    {
        B::staging(data, device)
    }

    fn supports_dtype(device: &Self::Device, dtype: DType) -> bool {
        B::supports_dtype(device, dtype)
    }

    fn dtype_usage(device: &Self::Device, dtype: DType) -> DTypeUsageSet {
        B::dtype_usage(device, dtype)
    }

    fn device_count(type_id: u16) -> usize {
        B::device_count(type_id)
    }
}
