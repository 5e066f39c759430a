//! Borrowed views of feature rows and the checks every metric runs on its inputs.

use crate::error::{MetricsError, Result};

/// `count` rows of `dim` features each, stored row after row in one `f32` slice: the layout of an
/// `[N, D]` tensor copied to the host. Cheap to copy; it only borrows.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    data: &'a [f32],
    count: usize,
    dim: usize,
}

impl<'a> Rows<'a> {
    /// Views `data` as `count` rows of `dim` values.
    ///
    /// # Errors
    /// [`MetricsError::BadShape`] if `data.len() != count * dim` or `dim == 0`.
    pub fn new(data: &'a [f32], count: usize, dim: usize) -> Result<Self> {
        check_shape("feature rows", data.len(), count, dim)?;
        Ok(Self { data, count, dim })
    }

    /// A view whose shape the caller has already established (`data.len() == count * dim`).
    pub(crate) fn from_parts(data: &'a [f32], count: usize, dim: usize) -> Self {
        debug_assert_eq!(data.len(), count * dim);
        Self { data, count, dim }
    }

    /// Number of rows.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Row `i`. Panics if `i >= count`, like slice indexing.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All values, row after row.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }
}

pub(crate) fn check_shape(what: &'static str, len: usize, rows: usize, dim: usize) -> Result<()> {
    if dim == 0 || rows.checked_mul(dim) != Some(len) {
        return Err(MetricsError::BadShape { what, len, rows, dim });
    }
    Ok(())
}

/// First non-finite value of `data` (rows of `dim`), reported with row numbers counted from
/// `first_row` so that streams name the row as the caller counted it.
pub(crate) fn check_finite(what: &'static str, data: &[f32], dim: usize, first_row: usize) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(at) => {
            Err(MetricsError::NonFinite { what, row: first_row + at / dim, col: at % dim, value: f64::from(data[at]) })
        }
    }
}

pub(crate) fn check_same_dim(left: &'static str, left_dim: usize, right: &'static str, right_dim: usize) -> Result<()> {
    if left_dim != right_dim {
        return Err(MetricsError::DimMismatch { left, left_dim, right, right_dim });
    }
    Ok(())
}

/// Mean and (population) standard deviation of per-subset or per-split scores.
pub(crate) fn mean_std(values: &[f64]) -> crate::MeanStd {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    crate::MeanStd { mean, std: var.sqrt() }
}
