use std::path::PathBuf;

/// Everything that can be wrong with a data set on disk.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file ended before its header said it would.
    #[error("{path}: truncated: the header promises {expected} bytes of data but the file holds {found}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header promises.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The file is not in the format it claims to be.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        message: String,
    },
    /// Two files that belong together disagree (e.g. images and labels counts).
    #[error("{message}")]
    Mismatch {
        /// What disagrees, naming both files.
        message: String,
    },
    /// A directory that should hold a data set does not.
    #[error("{path}: {message}")]
    Missing {
        /// The path looked at.
        path: PathBuf,
        /// What was expected there.
        message: String,
    },
}
