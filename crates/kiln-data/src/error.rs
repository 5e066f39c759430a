use std::path::PathBuf;

/// Everything that can be wrong with a data set on disk or on its way there.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said. Not marked as the error's `source`: the message already says it,
        /// and an error chain (anyhow's `{:#}`) would print it twice.
        error: std::io::Error,
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
    /// A download failed (after its retries).
    #[error("{url}: {message}")]
    Download {
        /// The address.
        url: String,
        /// What went wrong, in words.
        message: String,
    },
    /// A file's sha256 is not the one its manifest pins.
    #[error("{path}: sha256 is {found}, expected {expected}")]
    Checksum {
        /// The file (or the download it came from).
        path: PathBuf,
        /// The pinned digest.
        expected: String,
        /// The digest of the bytes received.
        found: String,
    },
    /// An archive entry that would escape the target directory, or is too large.
    #[error("{archive}: refusing entry {entry:?}: {reason}")]
    UnsafeArchive {
        /// The archive.
        archive: PathBuf,
        /// The entry's name as stored.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// An image that cannot be written as a PNG.
    #[error(transparent)]
    Png(#[from] crate::PngError),
    /// A size or filter that the resampler refuses.
    #[error("resize: {0}")]
    Resize(#[from] kiln_kernels::KernelError),
}

impl DataError {
    /// An [`DataError::Io`] for `path`.
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
        move |error| DataError::Io { path: path.to_path_buf(), error }
    }

    /// A [`DataError::Format`] for `path`.
    pub(crate) fn format(path: &std::path::Path, message: impl Into<String>) -> DataError {
        DataError::Format { path: path.to_path_buf(), message: message.into() }
    }
}
