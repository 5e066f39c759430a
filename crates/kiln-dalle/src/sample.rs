//! Drawing image codes from a [`Dalle`] token by token: temperature, top-k, top-p and
//! classifier-free guidance, with the key/value cache.
//!
//! The logits of each step come to the host (`[rows, K]`, a few kilobytes) and the token is drawn
//! there from a [`SplitMix64`] seeded by the request, so the same seed draws the same images on
//! every backend. **Guidance convention:** `logits = cond + (s − 1)·(cond − null)`, the same as
//! `null + s·(cond − null)` and the convention of diffusers' `guidance_scale`: `s = 1` is plain
//! conditional sampling, `s = 0` ignores the caption, `s > 1` follows it more closely (the
//! form used keeps `s = 1` exactly the conditional logits, with no rounding). The conditional and
//! null rows run as one batch.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_core::SplitMix64;

use crate::Dalle;

/// How to draw each token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSampling {
    /// Softmax temperature (> 0; 1 = the model's distribution).
    pub temperature: f64,
    /// Keep only the `k` likeliest codes (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of codes whose probability reaches `p` (`None`: all).
    pub top_p: Option<f64>,
    /// Classifier-free guidance scale (`None`: no null rows are run; `Some(1.0)` runs them and
    /// gives the same tokens).
    pub guidance: Option<f64>,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for TokenSampling {
    fn default() -> Self {
        Self { temperature: 1.0, top_k: None, top_p: None, guidance: None, seed: 0 }
    }
}

/// Which decoding path [`sample_codes`] takes (the two give the same tokens; the second exists to
/// prove it and to measure what the cache saves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    /// Prefill once, then one token per step against the key/value cache.
    Cached,
    /// Recompute the whole prefix for every token.
    Recompute,
}

/// Draws `[n, N]` image codes for `text` (`[n, L]` ids; `[n, 0]` for a prior). With guidance,
/// `null` (`[n, L]`, the null caption) is run beside it.
pub fn sample_codes<B: Backend>(
    model: &Dalle<B>,
    text: Tensor<B, 2, Int>,
    null: Option<Tensor<B, 2, Int>>,
    sampling: &TokenSampling,
    decoding: Decoding,
) -> Vec<Vec<u32>> {
    let [n, _] = text.dims();
    let device = text.device();
    let guided = match (sampling.guidance, null) {
        (Some(s), Some(null)) => Some((s, null)),
        _ => None,
    };
    let input = match &guided {
        Some((_, null)) => Tensor::cat(vec![text, null.clone()], 0), // [2n, L]
        None => text,
    };
    let rows = input.dims()[0];
    let total = model.image_tokens();
    let mut rng = SplitMix64::new(sampling.seed);
    let mut codes: Vec<Vec<u32>> = vec![Vec::with_capacity(total); n];
    let mut cache = model.cache();
    let mut logits = match decoding {
        Decoding::Cached => model.prefill(input.clone(), &mut cache),
        Decoding::Recompute => {
            let none = Tensor::<B, 2, Int>::zeros([rows, total], &device);
            model.next_logits_recompute(input.clone(), none, 0)
        }
    };
    for j in 0..total {
        let host: Vec<f32> = logits.into_data().iter::<f32>().collect();
        let k = host.len() / rows;
        let mut drawn = Vec::with_capacity(n);
        for (i, row_codes) in codes.iter_mut().enumerate() {
            let cond = &host[i * k..(i + 1) * k];
            let row: Vec<f32> = match &guided {
                Some((s, _)) => {
                    let null = &host[(n + i) * k..(n + i + 1) * k];
                    cond.iter().zip(null).map(|(&c, &u)| c + (*s as f32 - 1.0) * (c - u)).collect()
                }
                None => cond.to_vec(),
            };
            let token = draw(&row, sampling, rng.uniform());
            row_codes.push(token);
            drawn.push(token as i64);
        }
        if j + 1 == total {
            break;
        }
        // The guided pair shares each drawn token: the null row continues the same image.
        let mut step_ids = drawn.clone();
        if guided.is_some() {
            step_ids.extend_from_slice(&drawn);
        }
        logits = match decoding {
            Decoding::Cached => {
                let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(step_ids, [rows]), &device);
                model.step(ids, &mut cache)
            }
            Decoding::Recompute => {
                let mut prefix: Vec<i64> = Vec::with_capacity(rows * total);
                for r in 0..rows {
                    let row = &codes[r % n];
                    prefix.extend(row.iter().map(|&c| c as i64));
                    prefix.extend(std::iter::repeat_n(0, total - row.len()));
                }
                let image = Tensor::<B, 2, Int>::from_data(TensorData::new(prefix, [rows, total]), &device);
                model.next_logits_recompute(input.clone(), image, j + 1)
            }
        };
    }
    codes
}

/// Draws one token from `logits` with temperature, top-k and top-p, using the uniform `u ∈ [0, 1)`.
pub fn draw(logits: &[f32], sampling: &TokenSampling, u: f64) -> u32 {
    let t = sampling.temperature.max(1e-6);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    if sampling.top_k.is_none() && sampling.top_p.is_none() {
        // Nothing to cut: draw in index order, without sorting the row.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let probs: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) / t).exp()).collect();
        let target = u * probs.iter().sum::<f64>();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if target < acc {
                return i as u32;
            }
        }
        return (logits.len() - 1) as u32;
    }
    // Likeliest first; ties by index, so the draw is deterministic.
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let keep = sampling.top_k.unwrap_or(order.len()).clamp(1, order.len());
    order.truncate(keep);
    let max = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - max) / t).exp()).collect();
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    if let Some(p) = sampling.top_p {
        let mut mass = 0.0;
        let mut cut = probs.len();
        for (i, q) in probs.iter().enumerate() {
            mass += q;
            if mass >= p {
                cut = i + 1;
                break;
            }
        }
        probs.truncate(cut);
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= sum);
    }
    let mut acc = 0.0;
    for (i, q) in probs.iter().enumerate() {
        acc += q;
        if u < acc {
            return order[i] as u32;
        }
    }
    order[probs.len() - 1] as u32
}
