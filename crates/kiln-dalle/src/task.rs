//! Training a [`Dalle`] under `kiln-train`: the data set is turned into token rows once (captions
//! through the BPE, images through the frozen VQ-VAE), and each step is Adam on the next-token
//! loss with caption dropout for classifier-free guidance.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use kiln_bpe::Bpe;
use kiln_core::{LoadError, Loader, LoaderPosition, Preview, SaveError, StepOutput, Task, epoch_order, read_scalars};
use kiln_optim::{Optim, OptimConfig, load_train_state, save_train_state};
use kiln_vqvae::{VqVae, VqVaeConfig};
use serde::{Deserialize, Serialize};

use crate::generator::{Parts, save_parts};
use crate::sample::{Decoding, TokenSampling, sample_codes};
use crate::{Dalle, DalleConfig, DalleError};

/// Training settings of a [`DalleTask`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DalleTaskConfig {
    /// The transformer's optimizer.
    pub optim: OptimConfig,
    /// Share of captions replaced by the null caption (all pad) in each batch, so one model is
    /// both conditional and unconditional and guidance can contrast the two (0 turns it off;
    /// 0.1–0.2 is usual).
    pub caption_dropout: f64,
}

impl Default for DalleTaskConfig {
    fn default() -> Self {
        Self { optim: OptimConfig::default(), caption_dropout: 0.1 }
    }
}

impl DalleTaskConfig {
    /// Checks the fields the optimizer does not.
    pub fn validate(&self) -> Result<(), DalleError> {
        if !(0.0..1.0).contains(&self.caption_dropout) {
            return Err(DalleError::Config {
                field: "caption_dropout",
                value: self.caption_dropout.to_string(),
                reason: "must be in [0, 1)".into(),
            });
        }
        Ok(())
    }
}

/// A batch of token rows.
#[derive(Debug, Clone)]
pub struct TokenBatch<B: Backend> {
    /// Caption ids `[N, L]` (`[N, 0]` for a prior).
    pub text: Tensor<B, 2, Int>,
    /// Image codes `[N, grid²]`.
    pub image: Tensor<B, 2, Int>,
}

/// The training set as token rows: every caption encoded and padded, every image encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSet {
    /// `len × L` caption ids, row-major.
    pub text: Vec<u32>,
    /// `len × N` image codes, row-major.
    pub image: Vec<u32>,
    /// Rows.
    pub len: usize,
    /// `L`.
    pub text_len: usize,
    /// `N`.
    pub image_tokens: usize,
}

impl TokenSet {
    /// Captions (through `bpe`, padded to `text_len`; `None` with `text_len = 0` for a prior)
    /// beside image codes (one `Vec` of `N` per image). Returns how many captions were cut.
    pub fn new(captions: Option<(&Bpe, &[String])>, text_len: usize, codes: &[Vec<u32>]) -> (Self, usize) {
        let len = codes.len();
        let image_tokens = codes.first().map_or(0, Vec::len);
        let mut text = Vec::with_capacity(len * text_len);
        let mut cut = 0;
        if let Some((bpe, captions)) = captions {
            for caption in captions {
                let padded = bpe.encode_padded(caption, text_len);
                cut += padded.truncated as usize;
                text.extend(padded.ids);
            }
        }
        let image = codes.iter().flatten().copied().collect();
        (Self { text, image, len, text_len, image_tokens }, cut)
    }

    /// Rows `indices` as a batch on `device`.
    pub fn gather<B: Backend>(&self, indices: &[usize], device: &B::Device) -> TokenBatch<B> {
        let (l, n) = (self.text_len, self.image_tokens);
        let text: Vec<i64> =
            indices.iter().flat_map(|&i| self.text[i * l..(i + 1) * l].iter().map(|&t| t as i64)).collect();
        let image: Vec<i64> =
            indices.iter().flat_map(|&i| self.image[i * n..(i + 1) * n].iter().map(|&t| t as i64)).collect();
        TokenBatch {
            text: Tensor::from_data(TensorData::new(text, [indices.len(), l]), device),
            image: Tensor::from_data(TensorData::new(image, [indices.len(), n]), device),
        }
    }
}

/// Seeded, epoch-shuffled batches of a [`TokenSet`]: the [`Loader`] a DALL·E run pulls from.
/// Epoch `e`'s order depends only on `(seed, e)`, so a resumed run sees the same batches.
#[derive(Debug, Clone)]
pub struct TokenLoader<B: Backend> {
    set: std::sync::Arc<TokenSet>,
    batch_size: usize,
    seed: u64,
    epoch: u64,
    batch: u64,
    order: Vec<usize>,
    device: B::Device,
    /// `(rank, world)` of a data-parallel run (`(0, 1)` alone).
    shard: (usize, usize),
}

impl<B: Backend> TokenLoader<B> {
    /// Batches of `batch_size` rows (`1 ≤ batch_size ≤ set.len`, checked by the caller).
    pub fn new(set: std::sync::Arc<TokenSet>, batch_size: usize, seed: u64, device: &B::Device) -> Self {
        let order = epoch_order(set.len, seed, 0);
        Self {
            set,
            batch_size: batch_size.max(1),
            seed,
            epoch: 0,
            batch: 0,
            order,
            device: device.clone(),
            shard: (0, 1),
        }
    }

    /// Rank `rank`'s share of a data-parallel run of `world` processes, as
    /// `kiln_data::Batcher::with_shard` does for images: every rank walks one stream of global
    /// batches of `world × batch_size` rows and takes the `rank`-th `batch_size`; the position is
    /// the same on every rank. `None` when the ranks' batches do not fit in the set.
    pub fn with_shard(mut self, rank: usize, world: usize) -> Option<Self> {
        (world > 0 && rank < world && self.batch_size * world <= self.set.len).then(|| {
            self.shard = (rank, world);
            self
        })
    }
}

impl<B: Backend> Loader for TokenLoader<B> {
    type Batch = TokenBatch<B>;

    fn next_batch(&mut self) -> TokenBatch<B> {
        let (rank, world) = self.shard;
        let global = self.batch_size * world;
        if (self.batch as usize + 1) * global > self.order.len() {
            self.epoch += 1;
            self.batch = 0;
            self.order = epoch_order(self.set.len, self.seed, self.epoch);
        }
        let start = self.batch as usize * global + rank * self.batch_size;
        self.batch += 1;
        self.set.gather(&self.order[start..start + self.batch_size], &self.device)
    }

    fn batches_per_epoch(&self) -> usize {
        (self.set.len / (self.batch_size * self.shard.1)).max(1)
    }

    fn position(&self) -> LoaderPosition {
        LoaderPosition { epoch: self.epoch, batch: self.batch, rng: 0 }
    }

    fn seek(&mut self, position: LoaderPosition) {
        self.epoch = position.epoch;
        self.batch = position.batch;
        self.order = epoch_order(self.set.len, self.seed, self.epoch);
    }
}

/// Samples per preview caption.
const PREVIEW_PER_CAPTION: usize = 8;

/// A [`Dalle`] in training, with the tokenizers it is saved with and the captions of its
/// preview grid.
pub struct DalleTask<B: AutodiffBackend> {
    config: DalleConfig,
    settings: DalleTaskConfig,
    model: Dalle<B>,
    optim: Optim<B>,
    bpe: Option<Bpe>,
    vqvae: VqVae<B::InnerBackend>,
    vq_config: VqVaeConfig,
    /// Token ids of the preview captions (one grid row each; one row of `[]` for a prior).
    preview: Vec<Vec<u32>>,
    device: Device<B>,
}

impl<B: AutodiffBackend> std::fmt::Debug for DalleTask<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DalleTask")
            .field("config", &self.config)
            .field("settings", &self.settings)
            .field("optim", &self.optim)
            .finish_non_exhaustive()
    }
}

/// What a [`DalleTask`] is built from besides its settings.
#[derive(Debug)]
pub struct DalleParts<B: Backend> {
    /// The text tokenizer (`None` for a prior).
    pub bpe: Option<Bpe>,
    /// The trained image tokenizer.
    pub vqvae: VqVae<B>,
    /// Its config.
    pub vq_config: VqVaeConfig,
    /// Captions drawn in every preview, one row each (ignored for a prior).
    pub preview_captions: Vec<String>,
}

impl<B: AutodiffBackend> DalleTask<B> {
    /// A fresh transformer from `config`, trained as `settings` say over `total_steps` steps.
    pub fn new(
        config: DalleConfig,
        settings: &DalleTaskConfig,
        total_steps: usize,
        parts: DalleParts<B::InnerBackend>,
        device: &Device<B>,
    ) -> Result<Self, DalleError> {
        config.validate()?;
        settings.validate()?;
        let DalleParts { bpe, vqvae, vq_config, preview_captions } = parts;
        let preview = match &bpe {
            Some(bpe) if config.text_len > 0 => {
                preview_captions.iter().map(|c| bpe.encode_padded(c, config.text_len).ids).collect()
            }
            _ => vec![Vec::new()],
        };
        let model = config.init::<B>(device);
        let optim = Optim::new(settings.optim.clone(), total_steps / settings.optim.accumulate.max(1))?;
        Ok(Self {
            config,
            settings: settings.clone(),
            model,
            optim,
            bpe,
            vqvae,
            vq_config,
            preview,
            device: device.clone(),
        })
    }

    /// The transformer being trained.
    pub fn model(&self) -> &Dalle<B> {
        &self.model
    }

    /// The trained generator without autodiff, for evaluation and export.
    pub fn trained(&self) -> crate::DalleGenerator<B::InnerBackend> {
        crate::DalleGenerator {
            dalle: self.model.valid(),
            config: self.config.clone(),
            bpe: self.bpe.clone(),
            vqvae: self.vqvae.clone(),
            vq_config: self.vq_config.clone(),
            caption_dropout: self.settings.caption_dropout,
        }
    }

    /// The padding id every dropped caption is filled with.
    fn pad(&self) -> i64 {
        self.bpe.as_ref().map_or(0, |b| b.pad_id() as i64)
    }
}

impl<B: AutodiffBackend> Task<B> for DalleTask<B> {
    type Batch = TokenBatch<B>;

    fn step(&mut self, batch: TokenBatch<B>, _step: usize) -> StepOutput {
        let TokenBatch { mut text, image } = batch;
        let [n, l] = text.dims();
        let p = self.settings.caption_dropout;
        if p > 0.0 && l > 0 {
            // Drawn from the backend's generator, which the trainer seeds per step: resumable.
            let drop = Tensor::<B, 1>::random([n], Distribution::Bernoulli(p), &self.device).equal_elem(1.0); // [N]
            text = text.mask_fill(drop.unsqueeze_dim::<2>(1).expand([n, l]), self.pad());
        }
        let out = self.model.loss(text, image);
        let grads = out.loss.backward();
        self.model = self.optim.step(self.model.clone(), &grads);
        let mut metrics = vec![("loss", out.loss.inner())];
        if l > 0 {
            metrics.push(("text_ce", out.text.inner()));
        }
        metrics.push(("image_ce", out.image.inner()));
        StepOutput { metrics: read_scalars(metrics), examples: n }
    }

    fn previews(&self) -> Vec<Preview<B::InnerBackend>> {
        let generator = self.trained();
        let device = self.vqvae.codebook().device();
        let mut images = Vec::new();
        for (row, ids) in self.preview.iter().enumerate() {
            let per = if ids.is_empty() { 4 * PREVIEW_PER_CAPTION } else { PREVIEW_PER_CAPTION };
            let data: Vec<i64> = (0..per).flat_map(|_| ids.iter().map(|&t| t as i64)).collect();
            let text = Tensor::from_data(TensorData::new(data, [per, ids.len()]), &device);
            let sampling = TokenSampling { seed: row as u64, ..TokenSampling::default() };
            let codes = sample_codes(&generator.dalle, text, None, &sampling, Decoding::Cached);
            images.push(generator.decode(&codes, &device));
        }
        vec![Preview::new("samples", Tensor::cat(images, 0), PREVIEW_PER_CAPTION)]
    }

    fn save(&self, dir: &Path) -> Result<(), SaveError> {
        let dalle = self.model.valid();
        let parts = Parts { dalle: &dalle, config: &self.config, bpe: self.bpe.as_ref(), vqvae: &self.vqvae };
        save_parts(parts, &self.vq_config, self.settings.caption_dropout, dir).map_err(|e| match e {
            DalleError::Save(e) => e,
            other => SaveError::Encode { path: dir.to_path_buf(), message: other.to_string() },
        })
    }

    fn save_state(&self, dir: &Path) -> Result<(), SaveError> {
        self.save(dir)?;
        save_train_state(dir, &self.model, &self.optim, None)
    }

    fn load_state(&mut self, dir: &Path) -> Result<(), LoadError> {
        self.model = load_train_state(
            dir,
            self.model.clone(),
            crate::generator::WEIGHTS_FILE,
            &mut self.optim,
            None,
            &self.device,
        )?;
        Ok(())
    }

    fn device(&self) -> Device<B> {
        self.device.clone()
    }
}

/// Image codes of `images` (`[n, C, H, W]` in `[0, 1]`) through `vqvae`, one `Vec` of `grid²` per image.
pub fn image_codes<B: Backend>(vqvae: &VqVae<B>, images: Tensor<B, 4>) -> Vec<Vec<u32>> {
    let indices = vqvae.encode(images); // [n, g, g]
    let [n, g, _] = indices.dims();
    let flat: Vec<i64> = indices.into_data().iter::<i64>().collect();
    flat.chunks(g * g).take(n).map(|row| row.iter().map(|&c| c as u32).collect()).collect()
}
