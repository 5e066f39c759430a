//! MNIST and Fashion-MNIST: four IDX files in one directory, under LeCun's names, gzip or raw.

use std::path::{Path, PathBuf};

use crate::{DataError, ImageSet, read_idx};

/// Which half of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training split (`train-*`).
    Train,
    /// The held-out split (`t10k-*`).
    Test,
}

/// Loader for a directory of MNIST-format IDX files (MNIST, Fashion-MNIST, kiln's bundled sample).
#[derive(Debug, Clone)]
pub struct Mnist;

impl Mnist {
    /// Loads one split from `dir`, which holds `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
    pub fn load(dir: &Path, split: Split) -> Result<ImageSet, DataError> {
        if !dir.is_dir() {
            return Err(DataError::Missing {
                path: dir.to_path_buf(),
                message: "no such directory (expected MNIST-format IDX files here)".into(),
            });
        }
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let images = read_idx(&images_path)?;
        let labels = read_idx(&labels_path)?;
        let &[n, h, w] = images.dims.as_slice() else {
            return Err(DataError::Format {
                path: images_path,
                message: format!("expected 3 dimensions [n, rows, cols], found {:?}", images.dims),
            });
        };
        if labels.dims.len() != 1 {
            return Err(DataError::Format {
                path: labels_path,
                message: format!("expected 1 dimension [n], found {:?}", labels.dims),
            });
        }
        if labels.dims[0] != n {
            return Err(DataError::Mismatch {
                message: format!(
                    "{} holds {n} images but {} holds {} labels",
                    images_path.display(),
                    labels_path.display(),
                    labels.dims[0]
                ),
            });
        }
        Ok(ImageSet {
            pixels: images.data,
            labels: labels.data.into_iter().map(u32::from).collect(),
            len: n,
            channels: 1,
            height: h,
            width: w,
        })
    }
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    [format!("{stem}.gz"), stem.to_string()].into_iter().map(|name| dir.join(name)).find(|p| p.is_file()).ok_or_else(
        || DataError::Missing { path: dir.to_path_buf(), message: format!("neither {stem}.gz nor {stem} is here") },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_idx;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-mnist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn loads_raw_files_and_checks_counts() {
        let d = tmp("ok");
        std::fs::write(d.join("t10k-images-idx3-ubyte"), encode_idx(&[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7])).unwrap();
        std::fs::write(d.join("t10k-labels-idx1-ubyte"), encode_idx(&[2], &[3, 9])).unwrap();
        let set = Mnist::load(&d, Split::Test).unwrap();
        assert_eq!((set.len, set.channels, set.height, set.width), (2, 1, 2, 2));
        assert_eq!(set.labels, vec![3, 9]);
        assert_eq!(set.image(1), &[4, 5, 6, 7]);

        std::fs::write(d.join("t10k-labels-idx1-ubyte"), encode_idx(&[3], &[3, 9, 1])).unwrap();
        let err = Mnist::load(&d, Split::Test).unwrap_err().to_string();
        assert!(err.contains("holds 2 images but") && err.contains("holds 3 labels"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_dir_and_files_are_named() {
        let err = Mnist::load(Path::new("/no/such/mnist"), Split::Train).unwrap_err().to_string();
        assert!(err.starts_with("/no/such/mnist: no such directory"), "{err}");
        let d = tmp("empty");
        let err = Mnist::load(&d, Split::Train).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
