//! Safetensors files for weights and optimiser state, always written atomically.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_store::{ModuleSnapshot, SafetensorsStore};
use safetensors::tensor::{Dtype, TensorView};

use crate::OptimError;

/// A set of named `f32` tensors with string metadata: the on-disk form of optimiser state
/// (moments, pending gradients) and counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorFile {
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    metadata: HashMap<String, String>,
}

impl TensorFile {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor, copying it to the host.
    pub fn push<B: Backend, const D: usize>(&mut self, name: impl Into<String>, tensor: Tensor<B, D>) {
        let dims = tensor.dims().to_vec();
        let values = tensor.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default();
        self.tensors.push((name.into(), dims, values));
    }

    /// Sets a metadata entry.
    pub fn set_meta(&mut self, key: impl Into<String>, value: impl ToString) {
        self.metadata.insert(key.into(), value.to_string());
    }

    /// A metadata entry.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// A metadata entry parsed as a number; the error names the file and key.
    pub fn meta_parse<T: std::str::FromStr>(&self, key: &str, path: &Path) -> Result<T, OptimError> {
        let raw = self.meta(key).ok_or_else(|| state_err(path, format!("metadata has no `{key}`")))?;
        raw.parse().map_err(|_| state_err(path, format!("metadata `{key}` = {raw:?} is not a number")))
    }

    /// Names of the tensors, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _, _)| n.as_str())
    }

    /// The values of the tensor called `name`, if there is one.
    pub fn values(&self, name: &str) -> Option<&[f32]> {
        self.tensors.iter().find(|(n, _, _)| n == name).map(|(_, _, v)| v.as_slice())
    }

    /// The tensor called `name` on `device`, checked to hold `expect` values.
    pub fn tensor<B: Backend>(
        &self,
        name: &str,
        expect: usize,
        device: &B::Device,
        path: &Path,
    ) -> Result<Tensor<B, 1>, OptimError> {
        let (_, _, values) = self
            .tensors
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| state_err(path, format!("no tensor `{name}`")))?;
        if values.len() != expect {
            return Err(state_err(path, format!("`{name}` has {} values, the model needs {expect}", values.len())));
        }
        Ok(Tensor::from_data(TensorData::new(values.clone(), [expect]), device))
    }

    /// Encodes the file as safetensors bytes (little-endian `f32`).
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>, OptimError> {
        let buffers: Vec<Vec<u8>> =
            self.tensors.iter().map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let views = self
            .tensors
            .iter()
            .zip(&buffers)
            .map(|((name, dims, _), bytes)| TensorView::new(Dtype::F32, dims.clone(), bytes).map(|v| (name.clone(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| state_err(path, e.to_string()))?;
        let bytes = safetensors::tensor::serialize(views, Some(self.metadata.clone()))
            .map_err(|e| state_err(path, e.to_string()))?;
        Ok(canonical_header(bytes))
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<(), OptimError> {
        let bytes = self.to_bytes(path)?;
        kiln_core::atomic_write(path, &bytes)?;
        Ok(())
    }

    /// Reads a file written by [`TensorFile::write`]; a missing, truncated or foreign file is an
    /// error naming it.
    pub fn read(path: &Path) -> Result<Self, OptimError> {
        let bytes = std::fs::read(path).map_err(|e| state_err(path, e.to_string()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| state_err(path, format!("not a safetensors file: {e}")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| state_err(path, format!("not a safetensors file: {e}")))?;
        check_finite(&st, path)?;
        let mut tensors = Vec::new();
        let mut names: Vec<_> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        for name in names {
            let view = st.tensor(&name).map_err(|e| state_err(path, e.to_string()))?;
            if view.dtype() != Dtype::F32 {
                return Err(state_err(path, format!("`{name}` is {:?}, expected F32", view.dtype())));
            }
            let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            tensors.push((name, view.shape().to_vec(), values));
        }
        Ok(Self { tensors, metadata })
    }
}

pub(crate) fn state_err(path: &Path, message: impl Into<String>) -> OptimError {
    OptimError::State { path: path.to_path_buf(), message: message.into() }
}

/// Writes `module`'s parameters to `path` as safetensors (atomically), with `metadata`.
pub fn save_module<B: Backend, M: Module<B>>(
    module: &M,
    path: &Path,
    metadata: &[(&str, String)],
) -> Result<(), OptimError> {
    let mut store = SafetensorsStore::from_bytes(None);
    for (k, v) in metadata {
        store = store.metadata(*k, v.clone());
    }
    module.save_into(&mut store).map_err(|e| state_err(path, e.to_string()))?;
    let bytes = canonical_header(store.get_bytes().map_err(|e| state_err(path, e.to_string()))?);
    kiln_core::atomic_write(path, &bytes)?;
    Ok(())
}

/// Loads `path` into `module` (which fixes the architecture), strictly: a missing, extra or
/// wrongly shaped tensor is an error naming the file and the tensor.
pub fn load_module<B: Backend, M: Module<B>>(module: M, path: &Path) -> Result<M, OptimError> {
    let bytes = std::fs::read(path).map_err(|e| state_err(path, e.to_string()))?;
    load_module_bytes(module, bytes, path)
}

/// [`load_module`] from the bytes of a safetensors file (weights built into a binary); `path`
/// names them in errors.
pub fn load_module_bytes<B: Backend, M: Module<B>>(
    mut module: M,
    bytes: Vec<u8>,
    path: &Path,
) -> Result<M, OptimError> {
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| state_err(path, format!("not a safetensors file: {e}")))?;
    check_finite(&st, path)?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result = module.load_from(&mut store).map_err(|e| state_err(path, format!("does not fit this model: {e}")))?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        let mut problems = Vec::new();
        problems.extend(result.errors.iter().map(|e| format!("{e:?}")));
        problems.extend(result.missing.iter().map(|(name, _)| format!("missing `{name}`")));
        problems.extend(result.unused.iter().map(|name| format!("unexpected `{name}`")));
        return Err(state_err(path, format!("does not fit this model: {}", problems.join(", "))));
    }
    Ok(module)
}

/// Refuses a file holding a NaN or an infinity in a float tensor, naming the tensor: such weights
/// can only come from corruption or a diverged run (the trainer never checkpoints one), and would
/// otherwise surface as black samples or a NaN loss far from the cause.
fn check_finite(st: &safetensors::SafeTensors<'_>, path: &Path) -> Result<(), OptimError> {
    let mut names: Vec<&str> = st.names();
    names.sort();
    for name in names {
        let view = st.tensor(name).map_err(|e| state_err(path, e.to_string()))?;
        let bad = match view.dtype() {
            Dtype::F32 => {
                view.data().chunks_exact(4).position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
            }
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .position(|b| !f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]).is_finite()),
            _ => None,
        };
        if let Some(i) = bad {
            return Err(state_err(
                path,
                format!(
                    "`{name}` holds a non-finite value (NaN or infinity) at element {i}: the file is corrupt or was written by a diverged run"
                ),
            ));
        }
    }
    Ok(())
}

/// Rewrites a safetensors file's JSON header with its keys in sorted order. The writers keep
/// metadata (and burn-store its tensor table) in hash maps, whose order changes from one process
/// to the next, so two identical runs would write different bytes; sorted, they write the same.
/// The header keeps its length (the same JSON, reordered, padded with spaces as the format allows),
/// so the data offsets stay valid. Bytes that do not parse are returned as they are.
pub(crate) fn canonical_header(mut bytes: Vec<u8>) -> Vec<u8> {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            other => other,
        }
    }
    let Some(len) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize) else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return bytes;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let Ok(mut json) = serde_json::to_vec(&sorted(value)) else {
        return bytes;
    };
    if json.len() > len {
        return bytes;
    }
    json.resize(len, b' ');
    bytes[8..8 + len].copy_from_slice(&json);
    bytes
}
