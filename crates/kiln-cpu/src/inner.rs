//! What `KilnCpu` needs from the backend it wraps: host-memory f32 views of float tensors.

use burn_backend::tensor::FloatTensor;
use burn_backend::{Backend, DType, Shape, TensorData};
use burn_flex::{Flex, FlexTensor};
use std::borrow::Cow;

/// A backend whose float tensors live in host memory, so that `KilnCpu`'s kernels can read them
/// as `f32` slices and hand results back without a device transfer.
///
/// Implemented for burn-flex. Another CPU backend (ndarray) would need only these two methods.
pub trait CpuInner: Backend {
    /// The elements of `tensor` in contiguous row-major order, if it holds `f32`; `None` for any
    /// other dtype, which makes the caller fall back to the inner backend's own kernel.
    ///
    /// Borrows when the tensor is already contiguous (the common case under autodiff) and
    /// copies otherwise (a transposed or sliced view).
    fn f32_view(tensor: &FloatTensor<Self>) -> Option<Cow<'_, [f32]>>;

    /// A float tensor of `shape` that takes ownership of `data` (row-major, `f32`).
    fn f32_tensor(data: Vec<f32>, shape: Shape) -> FloatTensor<Self>;

    /// A contiguous copy of `tensor` made by kiln-cpu's strided copy (`crate::strided`), when
    /// it is an f32 view that is not contiguous and has a layout that copy handles; `None`
    /// otherwise.
    fn f32_contiguous(tensor: &FloatTensor<Self>) -> Option<FloatTensor<Self>>;

    /// `tensor` with its elements (contiguous, row-major) rewritten by `f`: in place when its
    /// buffer is not shared with another tensor, on a copy otherwise. `None` for a dtype other
    /// than f32, and `f` is not called.
    fn f32_update(tensor: FloatTensor<Self>, f: impl FnOnce(&mut [f32])) -> Option<FloatTensor<Self>>;
}

/// A contiguous tensor with `t`'s elements, for a kernel that keeps its inputs for a backward
/// pass: the strided copy of a view, or `t` itself (already contiguous, or not f32).
pub(crate) fn contiguous<B: CpuInner>(t: &FloatTensor<B>) -> FloatTensor<B> {
    B::f32_contiguous(t).unwrap_or_else(|| t.clone())
}

/// The elements of an f32 flex view in row-major order through [`crate::strided::gather`].
fn strided_copy(tensor: &FlexTensor) -> Option<Vec<f32>> {
    let layout = tensor.layout();
    let shape: Vec<usize> = (0..layout.num_dims()).map(|i| layout.shape()[i]).collect();
    crate::strided::gather(tensor.storage::<f32>(), &shape, layout.strides(), layout.start_offset())
}

impl CpuInner for Flex {
    fn f32_view(tensor: &FlexTensor) -> Option<Cow<'_, [f32]>> {
        if tensor.dtype() != DType::F32 {
            return None;
        }
        match tensor.as_slice::<f32>() {
            Some(slice) => Some(Cow::Borrowed(slice)),
            None => match strided_copy(tensor) {
                Some(copy) => Some(Cow::Owned(copy)),
                None => tensor.to_contiguous().into_data().into_vec::<f32>().ok().map(Cow::Owned),
            },
        }
    }

    fn f32_contiguous(tensor: &FlexTensor) -> Option<FlexTensor> {
        if tensor.dtype() != DType::F32 || tensor.as_slice::<f32>().is_some() {
            return None;
        }
        let shape = tensor.layout().shape().clone();
        strided_copy(tensor).map(|data| FlexTensor::from_data(TensorData::new(data, shape)))
    }

    fn f32_update(tensor: FlexTensor, f: impl FnOnce(&mut [f32])) -> Option<FlexTensor> {
        if tensor.dtype() != DType::F32 {
            return None;
        }
        let layout = tensor.layout();
        let mut tensor = if layout.is_contiguous() && layout.start_offset() == 0 {
            tensor
        } else {
            Self::f32_contiguous(&tensor).unwrap_or_else(|| tensor.to_contiguous())
        };
        let n = tensor.layout().num_elements();
        // Copy on write: flex clones the buffer first if another tensor holds it.
        f(&mut tensor.storage_mut::<f32>()[..n]);
        Some(tensor)
    }

    fn f32_tensor(data: Vec<f32>, shape: Shape) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(data, shape))
    }
}
