//! Reading a step's named scalars back from the device in one transfer.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Reads named one-element tensors back to the host with a single device→host transfer (one
/// `cat`, one read) and pairs each value with its name, in order. Keeping each name beside its
/// tensor is what stops names and positions from drifting apart as metrics are added.
///
/// Each tensor must hold exactly one value (`[1]`), as a mean or a sum does.
pub fn read_scalars<B: Backend>(named: Vec<(&'static str, Tensor<B, 1>)>) -> Vec<(&'static str, f64)> {
    if named.is_empty() {
        return Vec::new();
    }
    let (names, tensors): (Vec<_>, Vec<_>) = named.into_iter().unzip();
    let values = Tensor::cat(tensors, 0).into_data().iter::<f64>().collect::<Vec<_>>();
    assert_eq!(values.len(), names.len(), "read_scalars: every metric tensor must hold one value");
    names.into_iter().zip(values).collect()
}
