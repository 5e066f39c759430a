//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong loading the network's weights or feeding it images.
///
/// Weight errors name the file (or `"<memory>"` for [`crate::InceptionConfig::from_tensors`]) and
/// the state-dict key, so a user holding the wrong checkpoint sees which tensor gave it away.
#[derive(Debug, thiserror::Error)]
pub enum InceptionError {
    /// The file could not be opened or parsed as a PyTorch or safetensors file.
    #[error("{path}: cannot read weights: {message}")]
    Read {
        /// The weights file.
        path: PathBuf,
        /// The reader's own message.
        message: String,
    },
    /// A tensor the network needs is not in the file.
    #[error("{path}: missing tensor `{tensor}` (is this pytorch-fid's FID Inception state dict?)")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The missing state-dict key, e.g. `Mixed_5b.branch1x1.conv.weight`.
        tensor: String,
    },
    /// A tensor is present but has the wrong shape.
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The state-dict key.
        tensor: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is present but its data cannot be read as floats.
    #[error("{path}: tensor `{tensor}` cannot be read as f32: {message}")]
    BadTensor {
        /// The weights file.
        path: PathBuf,
        /// The state-dict key.
        tensor: String,
        /// What went wrong.
        message: String,
    },
    /// Images of a shape the network cannot take.
    #[error("images of shape {shape:?}: {reason}")]
    InputShape {
        /// The shape passed in, `[N, C, H, W]`.
        shape: [usize; 4],
        /// Why it is refused.
        reason: &'static str,
    },
}
