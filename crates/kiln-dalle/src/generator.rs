//! A trained text-to-image generator: the transformer with its two tokenizers, saved as one
//! directory so that `kiln generate` needs nothing else.
//!
//! ```text
//! model/
//!   kiln.json          family "dalle"
//!   dalle.json         DalleConfig
//!   dalle.safetensors  the transformer
//!   bpe.json           the text tokenizer (absent for a prior)
//!   vqvae/             the image tokenizer, a complete kiln-vqvae model directory
//! ```

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_bpe::Bpe;
use kiln_core::{Generative, ModelCard, ModelManifest, SampleError, SampleOption, SampleRequest, Samples};
use kiln_vqvae::{VqVae, VqVaeConfig};

use crate::sample::{Decoding, TokenSampling, sample_codes};
use crate::{Dalle, DalleConfig, DalleError};

/// File name of a saved [`DalleConfig`].
pub const CONFIG_FILE: &str = "dalle.json";
/// File name of the saved transformer weights.
pub const WEIGHTS_FILE: &str = "dalle.safetensors";
/// File name of the saved text tokenizer.
pub const BPE_FILE: &str = "bpe.json";
/// Sub-directory holding the image tokenizer.
pub const VQVAE_DIR: &str = "vqvae";
/// The family name in `kiln.json` and in experiment files.
pub const FAMILY: &str = "dalle";
/// Version of the directory layout.
pub const FORMAT: u32 = 1;

/// The transformer, its text tokenizer (`None` for a prior) and its image tokenizer.
#[derive(Debug)]
pub struct DalleGenerator<B: Backend> {
    /// The transformer.
    pub dalle: Dalle<B>,
    /// Its config.
    pub config: DalleConfig,
    /// Captions → text tokens (`None` for an unconditional prior).
    pub bpe: Option<Bpe>,
    /// Image codes → pixels.
    pub vqvae: VqVae<B>,
    /// The image tokenizer's config.
    pub vq_config: VqVaeConfig,
    /// The caption dropout it trained with: above 0 the null caption means something and
    /// guidance applies.
    pub caption_dropout: f64,
}

impl<B: Backend> DalleGenerator<B> {
    /// Text ids of `caption`, padded to `L`, `[1, L]`; a caption longer than `L` tokens is an
    /// error that says how long it is.
    pub fn encode_caption(&self, caption: &str) -> Result<Vec<u32>, SampleError> {
        let bpe = self.bpe.as_ref().ok_or_else(|| SampleError::Unsupported {
            option: SampleOption::Prompt.flag(),
            reason: "this DALL·E is an unconditional prior; it takes no text prompt".into(),
        })?;
        let padded = bpe.encode_padded(caption, self.config.text_len);
        if padded.truncated {
            let len = bpe.encode(caption).len();
            return Err(SampleError::invalid(
                "prompt",
                format!("{caption:?}"),
                format!("is {len} text tokens; this model reads at most {}", self.config.text_len),
            ));
        }
        Ok(padded.ids)
    }

    /// The null caption (every slot the pad token), what caption dropout trained on.
    pub fn null_caption(&self) -> Vec<u32> {
        let pad = self.bpe.as_ref().map(Bpe::pad_id).unwrap_or(0);
        vec![pad; self.config.text_len]
    }

    /// `[n, L]` text ids on `device`, the same caption on every row.
    fn rows(&self, ids: &[u32], n: usize, device: &B::Device) -> Tensor<B, 2, Int> {
        let data: Vec<i64> = (0..n).flat_map(|_| ids.iter().map(|&t| t as i64)).collect();
        Tensor::from_data(TensorData::new(data, [n, ids.len()]), device)
    }

    /// Image codes `[n, N]` → images in `[0, 1]` `[n, C, H, W]` through the VQ-VAE.
    pub fn decode(&self, codes: &[Vec<u32>], device: &B::Device) -> Tensor<B, 4> {
        let g = self.config.grid;
        let data: Vec<i64> = codes.iter().flat_map(|row| row.iter().map(|&c| c as i64)).collect();
        let indices = Tensor::<B, 3, Int>::from_data(TensorData::new(data, [codes.len(), g, g]), device);
        self.vqvae.decode_indices(indices).clamp(0.0, 1.0)
    }

    /// `n` images of `caption` (`None` for a prior), drawn as `sampling` says.
    pub fn generate(
        &self,
        caption: Option<&str>,
        n: usize,
        sampling: &TokenSampling,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>, SampleError> {
        let ids = match caption {
            Some(text) => self.encode_caption(text)?,
            None if self.config.text_len > 0 => self.null_caption(),
            None => Vec::new(),
        };
        let text = self.rows(&ids, n, device);
        let null = (sampling.guidance.is_some() && self.config.text_len > 0)
            .then(|| self.rows(&self.null_caption(), n, device));
        let codes = sample_codes(&self.dalle, text, null, sampling, Decoding::Cached);
        Ok(self.decode(&codes, device))
    }

    /// Writes the directory described in the module docs, each file atomically.
    pub fn save(&self, dir: &Path) -> Result<(), DalleError> {
        let parts = Parts { dalle: &self.dalle, config: &self.config, bpe: self.bpe.as_ref(), vqvae: &self.vqvae };
        save_parts(parts, &self.vq_config, self.caption_dropout, dir)
    }

    /// Loads a directory written by [`DalleGenerator::save`]; every error names the file.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, DalleError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| DalleError::file(&path, e))?;
        let saved: SavedConfig =
            serde_json::from_str(&text).map_err(|e| DalleError::file(&path, format!("not a DALL·E config: {e}")))?;
        let config = saved.dalle;
        config.validate().map_err(|e| DalleError::file(&path, e))?;
        let bpe = if config.text_len > 0 {
            let path = dir.join(BPE_FILE);
            let bpe = Bpe::load(&path).map_err(|e| DalleError::file(&path, e))?;
            if bpe.vocab_size() != config.text_vocab {
                return Err(DalleError::file(
                    &path,
                    format!("holds {} tokens; {CONFIG_FILE} says text_vocab = {}", bpe.vocab_size(), config.text_vocab),
                ));
            }
            Some(bpe)
        } else {
            None
        };
        let (vq_config, vqvae) = VqVae::<B>::load(&dir.join(VQVAE_DIR), device)?;
        if vq_config.codebook_size != config.image_vocab || vq_config.grid() != config.grid {
            return Err(DalleError::file(
                &dir.join(VQVAE_DIR),
                format!(
                    "a VQ-VAE of {} codes on a {}×{} grid; the transformer was built for {} codes on {}×{}",
                    vq_config.codebook_size,
                    vq_config.grid(),
                    vq_config.grid(),
                    config.image_vocab,
                    config.grid,
                    config.grid
                ),
            ));
        }
        let weights = dir.join(WEIGHTS_FILE);
        let dalle = kiln_optim::load_module(config.init::<B>(device), &weights)
            .map_err(|e| DalleError::file(&weights, format!("not a checkpoint of this DALL·E ({e})")))?;
        Ok(Self { dalle, config, bpe, vqvae, vq_config, caption_dropout: saved.caption_dropout })
    }
}

/// `dalle.json`: the transformer's config and the one training fact sampling needs.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedConfig {
    dalle: DalleConfig,
    /// The caption dropout it trained with (0: the null caption was never seen).
    caption_dropout: f64,
}

/// What a saved generator is made of, borrowed (the training task holds the parts separately).
pub(crate) struct Parts<'a, B: Backend> {
    pub dalle: &'a Dalle<B>,
    pub config: &'a DalleConfig,
    pub bpe: Option<&'a Bpe>,
    pub vqvae: &'a VqVae<B>,
}

/// [`DalleGenerator::save`] from borrowed parts.
pub(crate) fn save_parts<B: Backend>(
    Parts { dalle, config, bpe, vqvae }: Parts<'_, B>,
    vq_config: &VqVaeConfig,
    caption_dropout: f64,
    dir: &Path,
) -> Result<(), DalleError> {
    let vq_dir = dir.join(VQVAE_DIR);
    std::fs::create_dir_all(&vq_dir).map_err(|e| DalleError::file(&vq_dir, e))?;
    vqvae.save(vq_config, &vq_dir)?;
    if let Some(bpe) = bpe {
        let path = dir.join(BPE_FILE);
        bpe.save(&path).map_err(|e| DalleError::file(&path, e))?;
    }
    kiln_optim::save_module(dalle, &dir.join(WEIGHTS_FILE), &[("kiln.family", FAMILY.into())])
        .map_err(|e| DalleError::file(&dir.join(WEIGHTS_FILE), e))?;
    let saved = SavedConfig { dalle: config.clone(), caption_dropout };
    let path = dir.join(CONFIG_FILE);
    let json = serde_json::to_string_pretty(&saved).map_err(|e| DalleError::file(&path, e))?;
    kiln_core::atomic_write(&path, json.as_bytes())?;
    // The tokenizer's directory is a model of its own, with its own kiln.json and checksums.
    let files: &[&str] =
        if bpe.is_some() { &[CONFIG_FILE, WEIGHTS_FILE, BPE_FILE] } else { &[CONFIG_FILE, WEIGHTS_FILE] };
    ModelManifest::new(FAMILY, FORMAT).describing(dir, files)?.write(dir)?;
    Ok(())
}

impl<B: Backend> Generative<B> for DalleGenerator<B> {
    fn card(&self) -> ModelCard {
        let mut accepts = vec![SampleOption::Temperature, SampleOption::TopK, SampleOption::TopP];
        let conditional = self.config.text_len > 0;
        if conditional {
            accepts.push(SampleOption::Prompt);
            if self.caption_dropout > 0.0 {
                accepts.push(SampleOption::Guidance);
            }
        }
        let name = if conditional { "this DALL·E" } else { "this VQ-VAE prior" };
        ModelCard { name: name.into(), image: self.vqvae.image_shape(), classes: 0, accepts }
    }

    fn sample(&self, request: &SampleRequest, device: &B::Device) -> Result<Samples<B>, SampleError> {
        request.check(&self.card())?;
        let sampling = sampling_of(request)?;
        let images = self.generate(request.prompt.as_deref(), request.n, &sampling, device)?;
        Ok(Samples::images(images))
    }

    fn reconstruct(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>, SampleError> {
        // Through the image tokenizer: what the transformer's codes can express at best.
        Generative::reconstruct(&self.vqvae, images)
    }
}

/// The token-sampling settings of `request`, checked; names the flag on a bad value.
pub fn sampling_of(request: &SampleRequest) -> Result<TokenSampling, SampleError> {
    let temperature = request.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(SampleError::invalid("temperature", temperature, "must be a positive number (1 = unchanged)"));
    }
    if request.top_k == Some(0) {
        return Err(SampleError::invalid("top-k", 0, "must keep at least one token"));
    }
    if let Some(p) = request.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(SampleError::invalid("top-p", p, "must be in (0, 1]"));
    }
    if let Some(s) = request.guidance
        && !(s.is_finite() && s >= 0.0)
    {
        return Err(SampleError::invalid("guidance", s, "must be ≥ 0 (1 = no guidance, 3 is usual)"));
    }
    Ok(TokenSampling {
        temperature,
        top_k: request.top_k,
        top_p: request.top_p,
        guidance: request.guidance,
        seed: request.seed,
    })
}
