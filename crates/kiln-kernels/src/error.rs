//! The error type of kiln-kernels.
//!
//! Shapes that come from a user (a `--size` flag, a config file) are checked and reported here
//! rather than panicking deep inside a backend; shape mistakes inside a model's forward pass may
//! still panic, as burn's own ops do.

/// Bad arguments to a kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// A size that must be positive was zero.
    #[error("{what} must be positive, got {value}")]
    ZeroSize {
        /// Which size (e.g. "output height").
        what: &'static str,
        /// The value given.
        value: usize,
    },
    /// A scale factor that must be finite and positive was not.
    #[error("{what} must be finite and positive, got {value}")]
    BadScale {
        /// Which factor (e.g. "height scale factor").
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// A scale factor so small that the output would have no pixels.
    #[error("{what}: input size {input} times scale {scale} rounds down to an empty output")]
    EmptyOutput {
        /// Which axis.
        what: &'static str,
        /// The input size along that axis.
        input: usize,
        /// The scale factor.
        scale: f64,
    },
    /// An option that the chosen filter does not support (PyTorch rejects the same).
    #[error("{option} is not supported by the {filter} filter")]
    Unsupported {
        /// The option (e.g. "align_corners").
        option: &'static str,
        /// The filter's name.
        filter: &'static str,
    },
    /// Two shapes that must agree do not.
    #[error("{what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// What was being checked.
        what: &'static str,
        /// The expected shape, as text.
        expected: String,
        /// The shape received, as text.
        got: String,
    },
    /// A value outside its allowed range.
    #[error("{what} must be {allowed}, got {value}")]
    OutOfRange {
        /// Which argument.
        what: &'static str,
        /// The allowed range, as text.
        allowed: &'static str,
        /// The value given, as text.
        value: String,
    },
}

/// Result with [`KernelError`].
pub type Result<T> = core::result::Result<T, KernelError>;
