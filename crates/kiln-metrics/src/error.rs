//! The one error type of this crate.

/// Why a metric could not be computed. Every variant names the input at fault (`what`: "real
/// features", "fake features", "first covariance", …) so that a message read in a log is enough
/// to find the mistake.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// Two inputs that must live in the same feature space do not.
    #[error("dimension mismatch: {left} has dimension {left_dim} but {right} has dimension {right_dim}")]
    DimMismatch {
        /// The first input.
        left: &'static str,
        /// Its dimension.
        left_dim: usize,
        /// The second input.
        right: &'static str,
        /// Its dimension.
        right_dim: usize,
    },
    /// A flat buffer is not `rows × dim` long (also raised for `dim == 0`).
    #[error("{what}: {len} values do not make {rows} rows of dimension {dim}")]
    BadShape {
        /// The input.
        what: &'static str,
        /// Length of the buffer.
        len: usize,
        /// Rows it was said to hold.
        rows: usize,
        /// Values per row it was said to hold.
        dim: usize,
    },
    /// A NaN or infinity in the input; `row` counts from the first row ever pushed to a stream.
    #[error("{what}: row {row}, column {col} holds {value}, not a finite number")]
    NonFinite {
        /// The input.
        what: &'static str,
        /// Row of the offending value.
        row: usize,
        /// Column of the offending value.
        col: usize,
        /// The value itself (NaN or ±inf).
        value: f64,
    },
    /// Not enough samples for the estimate that was asked for.
    #[error("{what} has {have} rows but at least {need} are needed: {why}")]
    TooFewSamples {
        /// The input.
        what: &'static str,
        /// Samples it holds.
        have: usize,
        /// Samples the estimate needs.
        need: usize,
        /// Which estimate needs them, in words.
        why: &'static str,
    },
    /// A row of class probabilities is not a probability distribution.
    #[error("class probabilities: row {row} is not a distribution ({why})")]
    NotAProbability {
        /// The row at fault.
        row: usize,
        /// What is wrong with it.
        why: String,
    },
    /// A setting outside its valid range.
    #[error("invalid setting {name} = {value}: {why}")]
    InvalidSetting {
        /// The setting.
        name: &'static str,
        /// Its value, printed.
        value: String,
        /// The valid range, in words.
        why: &'static str,
    },
    /// A subset index past the end of its set (only from [`crate::kid_on_subsets`]).
    #[error("{what}: subset {subset} holds index {index} but the set has {len} rows")]
    IndexOutOfRange {
        /// The input.
        what: &'static str,
        /// Which subset.
        subset: usize,
        /// The offending index.
        index: usize,
        /// Rows in the set.
        len: usize,
    },
    /// The symmetric eigensolver did not converge. Not expected for finite input; reported rather
    /// than returning a wrong distance.
    #[error("symmetric eigensolver did not converge on a {dim}×{dim} matrix")]
    NoConvergence {
        /// Size of the matrix.
        dim: usize,
    },
}

/// `Result` with [`MetricsError`].
pub type Result<T> = std::result::Result<T, MetricsError>;
