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
    let raw = std::fs::read(path).map_err(DataError::io(path))?;
    IdxArray::parse(&raw, path)
}

impl IdxArray {
    /// Parses the bytes of an IDX file, gzip-compressed or raw (detected from the bytes); `path`
    /// only names the file in errors. [`read_idx`] is this on the file's contents.
    ///
    /// A gzip stream is decompressed only as far as its IDX header says the data goes (plus one
    /// byte to detect trailing data, which is then counted without being kept), so a small file
    /// that inflates to gigabytes costs no more memory than its header declares.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
        if bytes.starts_with(&GZIP_MAGIC) {
            let (head, tail) = gunzip_idx(bytes, path)?;
            parse_with_tail(&head, tail, path)
        } else {
            parse_idx(bytes, path)
        }
    }
}

/// Inflates a gzip-compressed IDX file: the 4-byte magic, then the `4 · ndims` header bytes it
/// announces, then at most the data those dimensions declare plus one byte. Whatever follows is
/// only counted (streamed into a sink): the second value is that count, so that trailing data can
/// be reported with its exact size without being held in memory.
fn gunzip_idx(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, u64), DataError> {
    let corrupt = |e: std::io::Error| DataError::Format {
        path: path.to_path_buf(),
        message: format!("corrupt or truncated gzip stream: {e}"),
    };
    let mut gz = flate2::read::GzDecoder::new(bytes);
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(1 << 20));
    // The magic, `0, 0, dtype, ndims`, then the dimensions.
    gz.by_ref().take(4).read_to_end(&mut out).map_err(corrupt)?;
    let header = out.get(3).map_or(4, |&n| 4 + 4 * usize::from(n));
    gz.by_ref().take((header - out.len().min(4)) as u64).read_to_end(&mut out).map_err(corrupt)?;
    // Dimensions whose product overflows are reported by `parse_with_tail` from the header.
    let declared = (out.len() == header)
        .then(|| {
            out[4..]
                .chunks_exact(4)
                .try_fold(1u64, |acc, c| acc.checked_mul(u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))))
        })
        .flatten()
        .unwrap_or(0);
    gz.by_ref().take(declared.saturating_add(1)).read_to_end(&mut out).map_err(corrupt)?;
    let tail = std::io::copy(&mut gz, &mut std::io::sink()).map_err(corrupt)?;
    Ok((out, tail))
}

/// Parses an uncompressed IDX file held in memory.
fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    parse_with_tail(bytes, 0, path)
}

/// Parses an IDX file of which `bytes` is the start and `tail` more bytes followed (already
/// known to be more than the header declares).
fn parse_with_tail(bytes: &[u8], tail: u64, path: &Path) -> Result<IdxArray, DataError> {
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
    let found = (bytes.len() - header).saturating_add(usize::try_from(tail).unwrap_or(usize::MAX));
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

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_and_raw_give_the_same_answers() {
        let cases: [&[u8]; 7] = [
            &[0, 0, 8],
            &[0, 0, 8, 2, 0, 0],
            &[1, 0, 8, 1, 0, 0, 0, 1, 5, 6],
            &[0, 0, 8, 1, 0, 0, 0, 2, 5],
            &[0, 0, 8, 1, 0, 0, 0, 2, 5, 6, 7, 8],
            &[0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1],
            &[0, 0, 8, 1, 0, 0, 0, 2, 5, 6],
        ];
        for raw in cases {
            let plain = IdxArray::parse(raw, p()).map_err(|e| e.to_string());
            let packed = IdxArray::parse(&gzip(raw), p()).map_err(|e| e.to_string());
            assert_eq!(plain, packed, "{raw:?}");
        }
    }

    /// A few kilobytes of gzip that inflate to 64 MiB behind a header declaring 16 bytes: only
    /// the declared bytes (plus one) are kept, the rest is counted, not allocated.
    #[test]
    fn gzip_bomb_is_counted_not_inflated_into_memory() {
        let mut bytes = encode_idx(&[4, 4], &[1; 16]);
        bytes.resize(bytes.len() + (64 << 20), 0);
        let gz = gzip(&bytes);
        assert!(gz.len() < 1 << 20, "{}", gz.len());
        let err = IdxArray::parse(&gz, p()).unwrap_err().to_string();
        assert_eq!(err, format!("x.idx: {} bytes of trailing data after the 16 the header declares", 64 << 20));
        let (head, tail) = gunzip_idx(&gz, p()).unwrap();
        assert_eq!((head.len(), tail), (12 + 17, (64 << 20) - 1));
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
