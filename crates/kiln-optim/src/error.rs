use std::path::PathBuf;

/// Invalid optimiser settings, or a state file that does not fit the model.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// A setting is out of range; names the field and the value.
    #[error("{field} = {value}: {reason}")]
    Config {
        /// The field, as written in an experiment file (`optim.beta2`).
        field: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// A state or weights file could not be read or does not match the model.
    #[error("{path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Writing a file failed.
    #[error(transparent)]
    Save(#[from] kiln_core::SaveError),
}

impl From<OptimError> for kiln_core::LoadError {
    fn from(e: OptimError) -> Self {
        match e {
            OptimError::State { path, message } => kiln_core::LoadError { path, message },
            other => kiln_core::LoadError { path: PathBuf::new(), message: other.to_string() },
        }
    }
}
