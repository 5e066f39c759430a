//! CIFAR-10 in its binary version (`cifar-10-binary.tar.gz`): files of 3,073-byte records, one
//! label byte then 1,024 red, 1,024 green and 1,024 blue bytes (already channel-first).

use std::path::{Path, PathBuf};

use crate::{DataError, ImageSet, Split};

const SIDE: usize = 32;
const RECORD: usize = 1 + 3 * SIDE * SIDE;

/// Loader for CIFAR-10's binary batches.
#[derive(Debug, Clone)]
pub struct Cifar10;

impl Cifar10 {
    /// The class names, in label order.
    pub const CLASSES: [&'static str; 10] =
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

    /// Loads one split from `dir`, which holds `data_batch_{1..5}.bin` and `test_batch.bin`, or
    /// the archive's `cifar-10-batches-bin/` folder holding them.
    pub fn load(dir: &Path, split: Split) -> Result<ImageSet, DataError> {
        let inner = dir.join("cifar-10-batches-bin");
        let dir = if inner.is_dir() { inner } else { dir.to_path_buf() };
        let files: Vec<PathBuf> = match split {
            Split::Train => (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect(),
            Split::Test => vec![dir.join("test_batch.bin")],
        };
        let mut set =
            ImageSet { pixels: Vec::new(), labels: Vec::new(), len: 0, channels: 3, height: SIDE, width: SIDE };
        for file in &files {
            let bytes = std::fs::read(file).map_err(DataError::io(file))?;
            parse_into(&bytes, file, &mut set)?;
        }
        Ok(set)
    }

    /// Parses one batch file's bytes (`path` only names it in errors).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<ImageSet, DataError> {
        let mut set =
            ImageSet { pixels: Vec::new(), labels: Vec::new(), len: 0, channels: 3, height: SIDE, width: SIDE };
        parse_into(bytes, path, &mut set)?;
        Ok(set)
    }
}

fn parse_into(bytes: &[u8], path: &Path, set: &mut ImageSet) -> Result<(), DataError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::format(
            path,
            format!("{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records", bytes.len()),
        ));
    }
    set.pixels.reserve(bytes.len() / RECORD * (RECORD - 1));
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        if record[0] > 9 {
            return Err(DataError::format(path, format!("record {i} has label {}, expected 0..=9", record[0])));
        }
        set.labels.push(u32::from(record[0]));
        set.pixels.extend_from_slice(&record[1..]);
        set.len += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_rejects_bad_sizes_and_labels() {
        let mut bytes = vec![0u8; 2 * RECORD];
        bytes[0] = 3;
        bytes[1] = 200; // first red pixel of image 0
        bytes[RECORD] = 9;
        bytes[RECORD + 1 + 1025] = 7; // second green pixel of image 1
        let set = Cifar10::parse(&bytes, Path::new("b.bin")).unwrap();
        assert_eq!((set.len, set.labels.clone()), (2, vec![3, 9]));
        assert_eq!(set.image(0)[0], 200);
        assert_eq!(set.image(1)[1025], 7);

        let err = Cifar10::parse(&bytes[..RECORD + 5], Path::new("b.bin")).unwrap_err().to_string();
        assert_eq!(err, "b.bin: 3078 bytes is not a whole number of 3073-byte CIFAR-10 records");
        bytes[RECORD] = 10;
        let err = Cifar10::parse(&bytes, Path::new("b.bin")).unwrap_err().to_string();
        assert_eq!(err, "b.bin: record 1 has label 10, expected 0..=9");

        let err = Cifar10::load(Path::new("/no/cifar"), Split::Test).unwrap_err().to_string();
        assert!(err.starts_with("/no/cifar/test_batch.bin: "), "{err}");
    }
}
