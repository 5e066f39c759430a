//! The IDX format of LeCun's MNIST files: a 4-byte magic (`0, 0, dtype, ndims`), `ndims`
//! big-endian `u32` dimensions, then the data. Files may be gzip-compressed; that is detected from
//! the bytes, not the file name.

use std::io::Read;
use std::path::Path;

use crate::DataError;

/// An IDX array of unsigned bytes (the only element type MNIST-like sets use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first (`[n, rows, cols]` for images, `[n]` for labels).
    pub dims: Vec<usize>,
    /// Row-major data, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const IDX_U8: u8 = 0x08;

/// Reads an IDX file of `u8` elements, gzip-compressed or raw.
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let bytes = if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out).map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            message: format!("corrupt or truncated gzip stream: {e}"),
        })?;
        out
    } else {
        raw
    };
    parse_idx(&bytes, path)
}

fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    let format = |message: String| DataError::Format { path: path.to_path_buf(), message };
    if bytes.len() < 4 {
        return Err(format(format!("not an IDX file: {} bytes is shorter than the 4-byte magic", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format(format!(
            "not an IDX file: magic starts {:#04x} {:#04x}, expected 0x00 0x00",
            bytes[0], bytes[1]
        )));
    }
    if bytes[2] != IDX_U8 {
        return Err(format(format!("IDX element type {:#04x} is not supported (only 0x08, unsigned byte)", bytes[2])));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err(format("IDX header declares 0 dimensions".into()));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(DataError::Truncated { path: path.to_path_buf(), expected: header, found: bytes.len() });
    }
    let dims: Vec<usize> =
        bytes[4..header].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format(format!("IDX dimensions {dims:?} overflow")))?;
    let found = bytes.len() - header;
    if found < expected {
        return Err(DataError::Truncated { path: path.to_path_buf(), expected, found });
    }
    if found > expected {
        return Err(format(format!(
            "{} bytes of trailing data after the {expected} the header declares",
            found - expected
        )));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

/// Encodes `data` with `dims` as an IDX `u8` file (uncompressed); the inverse of [`read_idx`].
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, IDX_U8, dims.len() as u8]);
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.idx")
    }

    #[test]
    fn round_trip() {
        let bytes = encode_idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let a = parse_idx(&bytes, p()).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn truncated_data_is_reported_with_sizes() {
        let bytes = encode_idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let err = parse_idx(&bytes[..bytes.len() - 2], p()).unwrap_err();
        assert_eq!(err.to_string(), "x.idx: truncated: the header promises 6 bytes of data but the file holds 4");
    }

    #[test]
    fn wrong_magic_and_type() {
        let err = parse_idx(&[0x50, 0x4b, 3, 4, 0, 0, 0, 0], p()).unwrap_err();
        assert!(err.to_string().contains("not an IDX file"), "{err}");
        let err = parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 0], p()).unwrap_err();
        assert!(err.to_string().contains("element type 0x0d"), "{err}");
    }

    #[test]
    fn trailing_bytes_and_overflow() {
        let mut bytes = encode_idx(&[2], &[1, 2]);
        bytes.push(9);
        assert!(parse_idx(&bytes, p()).unwrap_err().to_string().contains("trailing"));
        let huge = encode_idx(&[u32::MAX as usize, u32::MAX as usize, u32::MAX as usize], &[]);
        let err = parse_idx(&huge, p()).unwrap_err().to_string();
        assert!(err.contains("overflow") || err.contains("truncated"), "{err}");
    }

    #[test]
    fn gzip_truncation_is_a_clear_error() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&encode_idx(&[100], &[7; 100])).unwrap();
        let gz = enc.finish().unwrap();
        let dir = std::env::temp_dir().join(format!("kiln-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cut.gz");
        std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
        let err = read_idx(&path).unwrap_err().to_string();
        assert!(err.contains("cut.gz") && err.contains("gzip"), "{err}");
        std::fs::write(&path, &gz).unwrap();
        assert_eq!(read_idx(&path).unwrap().data, vec![7; 100]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
