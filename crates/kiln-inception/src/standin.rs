//! Test support: deterministic stand-in weights for the whole network, so that tests (this
//! crate's, which compare against pytorch-fid, and `kiln eval`'s end-to-end ones) run the real
//! code path without the 95 MB published file.
//!
//! Every tensor is filled from a hash of its state-dict name and element index, scaled so that
//! activations stay O(1) through all 94 convolutions. `golden/make_golden.py` uses the same
//! formula (its `standin`), bit for bit, so the golden features were computed by pytorch-fid on
//! exactly these weights. They are noise: features computed with them mean nothing.

use std::io::Write;
use std::path::Path;

use crate::weights::state_dict_layout;

fn fnv1a32(text: &str) -> u32 {
    text.bytes().fold(0x811C_9DC5, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// `n` values in `[0, 1)`, multiples of 2^-24, from a hash of (`name`, index).
pub fn uniform(name: &str, n: usize) -> impl Iterator<Item = f64> {
    let offset = fnv1a32(name).wrapping_mul(0x9E37_79B9);
    (0..n).map(move |i| {
        // Indices stay far below 2^32 (the largest tensor holds 2.1M values); the Python side
        // wraps the same way.
        let mut x = (i as u32).wrapping_add(offset);
        x ^= x >> 16;
        x = x.wrapping_mul(0x7FEB_352D);
        x ^= x >> 15;
        x = x.wrapping_mul(0x846C_A68B);
        x ^= x >> 16;
        f64::from(x >> 8) / 16_777_216.0
    })
}

/// The stand-in value of state-dict tensor `name` of `shape`: convolution and `fc` weights
/// uniform in `±sqrt(6 / fan_in)`; batch-norm scales and variances in `[0.75, 1.25)`; means and
/// biases in `±0.1`.
pub fn tensor(name: &str, shape: &[usize]) -> Vec<f32> {
    let n = shape.iter().product();
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let u = uniform(name, n);
    if leaf == "weight" && shape.len() > 1 {
        let fan_in: usize = shape[1..].iter().product();
        let scale = (6.0 / fan_in as f64).sqrt();
        u.map(|u| ((2.0 * u - 1.0) * scale) as f32).collect()
    } else if leaf == "running_var" || (leaf == "weight" && name.contains(".bn.")) {
        u.map(|u| (0.75 + 0.5 * u) as f32).collect()
    } else {
        // `running_mean`, `bias`.
        u.map(|u| ((2.0 * u - 1.0) * 0.1) as f32).collect()
    }
}

/// Stand-in image `index`: `[3, size, size]` in `[0, 1)`, row-major.
pub fn image(index: usize, size: usize) -> Vec<f32> {
    uniform(&format!("image{index}"), 3 * size * size).map(|u| u as f32).collect()
}

/// Writes the whole stand-in state dict ([`state_dict_layout`], values from [`tensor`]) as an F32
/// safetensors file that [`crate::FidInception::load`] reads: ~95 MB, like the real file.
///
/// The format: a little-endian u64 header length, the JSON header (padded with spaces to a
/// multiple of 8 bytes), then the data, tensor after tensor. The names are plain identifiers, so
/// they go into the JSON unescaped.
pub fn write_safetensors(path: &Path) -> std::io::Result<()> {
    let layout = state_dict_layout();
    let mut header = String::from("{");
    let mut offset = 0usize;
    for (i, (name, shape)) in layout.iter().enumerate() {
        let end = offset + 4 * shape.iter().product::<usize>();
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let comma = if i == 0 { "" } else { "," };
        header += &format!(
            "{comma}\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            dims.join(",")
        );
        offset = end;
    }
    header.push('}');
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(&(header.len() as u64).to_le_bytes())?;
    file.write_all(header.as_bytes())?;
    for (name, shape) in &layout {
        for v in tensor(name, shape) {
            file.write_all(&v.to_le_bytes())?;
        }
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}
