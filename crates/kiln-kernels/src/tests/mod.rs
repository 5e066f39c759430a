//! The crate's tests, in one binary. The backend is chosen here and nowhere else: Flex by
//! default, NdArray with the `test-ndarray` feature.

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use serde_json::Value;

mod activation;
mod attention;
mod draw;
mod norm;
mod pool;
mod resize;
mod spectral;
mod upsample;
mod vq;

#[cfg(not(feature = "test-ndarray"))]
pub type TestBackend = burn::backend::Flex;
#[cfg(feature = "test-ndarray")]
pub type TestBackend = burn::backend::NdArray;

/// The backend of the gradient tests.
pub type TestAutodiff = burn::backend::Autodiff<TestBackend>;

pub fn device() -> burn::tensor::Device<TestBackend> {
    Default::default()
}

/// Reads `golden/<file>` and returns its `cases` object.
pub fn golden(file: &str) -> serde_json::Map<String, Value> {
    let path = format!("{}/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    value["cases"].as_object().unwrap_or_else(|| panic!("{path}: no cases")).clone()
}

pub fn shape_of(v: &Value) -> Vec<usize> {
    v["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v["data"].as_array().expect("data").iter().map(|x| x.as_f64().expect("float") as f32).collect()
}

/// A float tensor from a golden `{shape, data}` entry.
pub fn tensor<B: Backend, const D: usize>(v: &Value, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(floats(v), shape_of(v)), device)
}

/// A bool tensor from a golden `{shape, data}` entry.
pub fn bool_tensor<B: Backend, const D: usize>(v: &Value, device: &B::Device) -> Tensor<B, D, Bool> {
    let data: Vec<bool> = v["data"].as_array().expect("data").iter().map(|x| x.as_bool().expect("bool")).collect();
    Tensor::from_data(TensorData::new(data, shape_of(v)), device)
}

pub fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("float data")
}

pub fn to_ints<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().to_vec::<i64>().expect("int data")
}

/// Largest absolute difference; panics (naming `what`) on a shape mismatch or a difference above
/// `tol`.
pub fn assert_close<B: Backend, const D: usize>(got: Tensor<B, D>, want: &Value, tol: f32, what: &str) {
    assert_eq!(got.dims().to_vec(), shape_of(want), "{what}: shape");
    assert_slice_close(&to_vec(got), &floats(want), tol, what);
}

pub fn assert_slice_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d > worst || d.is_nan() {
            worst = d;
            at = i;
        }
    }
    assert!(worst <= tol, "{what}: max |diff| {worst:e} > {tol:e} at {at} (got {}, want {})", got[at], want[at]);
}
