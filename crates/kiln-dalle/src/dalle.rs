//! The DALL·E transformer: Ramesh et al., "Zero-Shot Text-to-Image Generation", arXiv:2102.12092.
//!
//! One decoder-only transformer models the concatenation of a caption's text tokens and an
//! image's grid of discrete codes, `[BOS; t₁ … t_L; i₁ … i_N]`, with the next-token loss. The
//! layout of one sequence:
//!
//! ```text
//! input   BOS  t₁  t₂ … t_L   i₁  i₂ … i_{N−1}        (L + N tokens)
//! target  t₁   t₂  t₃ … i₁    i₂  i₃ … i_N
//!         └── text head ──┘└──── image head ─────┘
//! ```
//!
//! Text and image tokens share one embedding table (text ids first, then the `K` image codes,
//! then BOS) but have their own output heads, so a text position never spends probability on
//! image codes and vice versa. Positions: a learned embedding for BOS and the `L` text slots, and
//! for image tokens the sum of a row and a column embedding of the code grid (the paper's
//! row/column embeddings for its 32×32 grid). The blocks are GPT-2's: pre-norm, causal multi-head
//! self-attention, a GELU MLP of four times the width, a final LayerNorm; weights drawn from
//! N(0, 0.02) with the residual projections scaled by `1/√(2·layers)` (GPT-2's initialisation).
//! The paper weights the text and image losses 1/8 and 7/8; so does the default here.
//!
//! With `text_len = 0` the same model is an unconditional prior over a VQ-VAE's codes — what
//! makes a VQ-VAE a generator.
//!
//! Attention runs on kiln-kernels' scaled dot-product attention (burn's fused op at inference).
//! Sampling keeps an explicit key/value cache per layer ([`KvCache`]): each new token attends to
//! the cached keys of its prefix once, `O(T)` attention work per token, where recomputing the
//! whole prefix each step (what burn-nn's `MhaCache` amounts to) costs `O(T²)` per token.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::{gelu, log_softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use kiln_kernels::attention::{AttentionMask, SdpaOptions, scaled_dot_product_attention};

use crate::DalleError;

/// Configuration of a [`Dalle`] transformer.
///
/// The defaults are the `emoji` preset's network (width 128, 4 layers of 4 heads): sized so
/// that a few minutes on two CPU cores bring the bundled captioned emoji's image-token loss well
/// below the codes' entropy (measured in `experiments/dalle-emoji.toml`).
#[derive(Config, Debug)]
pub struct DalleConfig {
    /// Text vocabulary, the pad token included (the BPE's `vocab_size`); ignored when
    /// `text_len = 0`.
    pub text_vocab: usize,
    /// Text tokens per caption (captions are padded or cut to this); 0 makes an unconditional
    /// prior over image codes.
    pub text_len: usize,
    /// Image codes `K` (the VQ-VAE's codebook size).
    pub image_vocab: usize,
    /// Side of the code grid (`N = grid²` image tokens).
    pub grid: usize,
    /// Transformer blocks.
    #[config(default = 4)]
    pub layers: usize,
    /// Attention heads per block; must divide `width`.
    #[config(default = 4)]
    pub heads: usize,
    /// Model width.
    #[config(default = 128)]
    pub width: usize,
    /// Dropout on attention outputs, MLP outputs and embeddings.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Weight of the text loss; the image loss gets `1 − text_loss_weight` (the paper: 1/8).
    #[config(default = 0.125)]
    pub text_loss_weight: f64,
}

impl DalleConfig {
    /// The named network shapes. Each leaves the data-given fields (`text_vocab`, `text_len`,
    /// `image_vocab`, `grid`) at placeholders that a caller fills from its tokenizers.
    pub const PRESETS: &'static [&'static str] = &["small", "gpt-mini"];

    /// A preset by name: `small` (width 128, 4 layers of 4 heads: the CPU experiments') or
    /// `gpt-mini` (minGPT's: width 192, 6 layers of 6 heads; benchmark W4).
    pub fn preset(name: &str) -> Option<Self> {
        let base = Self::new(2, 0, 1, 1);
        match name {
            "small" => Some(base),
            "gpt-mini" => Some(base.with_layers(6).with_heads(6).with_width(192)),
            _ => None,
        }
    }

    /// Tokens in one input sequence, `1 + L + N − 1 = L + N`.
    pub fn seq_len(&self) -> usize {
        self.text_len + self.image_tokens()
    }

    /// Image tokens per image, `N = grid²`.
    pub fn image_tokens(&self) -> usize {
        self.grid * self.grid
    }

    /// Checks every field; `init` assumes a validated config.
    pub fn validate(&self) -> Result<(), DalleError> {
        let bad = |field, value: String, reason: &str| Err(DalleError::Config { field, value, reason: reason.into() });
        for (field, value) in [
            ("image_vocab", self.image_vocab),
            ("grid", self.grid),
            ("layers", self.layers),
            ("heads", self.heads),
            ("width", self.width),
        ] {
            if value == 0 {
                return bad(field, value.to_string(), "must be at least 1");
            }
        }
        if self.text_len > 0 && self.text_vocab < 2 {
            return bad("text_vocab", self.text_vocab.to_string(), "must be at least 2 (a token and the pad)");
        }
        if !self.width.is_multiple_of(self.heads) {
            return bad("heads", self.heads.to_string(), &format!("must divide width = {}", self.width));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", self.dropout.to_string(), "must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.text_loss_weight) {
            return bad("text_loss_weight", self.text_loss_weight.to_string(), "must be in [0, 1) (the paper: 0.125)");
        }
        Ok(())
    }

    /// Builds the transformer on `device`.
    ///
    /// # Panics
    /// If the config is invalid; call [`DalleConfig::validate`] first on user-supplied configs.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Dalle<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let w = self.width;
        let normal = |std: f64| Initializer::Normal { mean: 0.0, std };
        let linear = |i, o, std| LinearConfig::new(i, o).with_initializer(normal(std)).init(device);
        let residual_std = 0.02 / (2.0 * self.layers as f64).sqrt();
        let embedding = |n: usize| EmbeddingConfig::new(n.max(1), w).with_initializer(normal(0.02)).init(device);
        let blocks = (0..self.layers)
            .map(|_| Block {
                norm1: LayerNormConfig::new(w).init(device),
                qkv: linear(w, 3 * w, 0.02),
                proj: linear(w, w, residual_std),
                norm2: LayerNormConfig::new(w).init(device),
                fc: linear(w, 4 * w, 0.02),
                out: linear(4 * w, w, residual_std),
                dropout: DropoutConfig::new(self.dropout).init(),
                heads: self.heads,
            })
            .collect();
        let text_vocab = if self.text_len == 0 { 0 } else { self.text_vocab };
        Dalle {
            tokens: embedding(text_vocab + self.image_vocab + 1),
            text_pos: embedding(self.text_len + 1),
            row: embedding(self.grid),
            col: embedding(self.grid),
            blocks,
            norm: LayerNormConfig::new(w).init(device),
            text_head: linear(w, text_vocab.max(1), 0.02),
            image_head: linear(w, self.image_vocab, 0.02),
            dropout: DropoutConfig::new(self.dropout).init(),
            text_vocab,
            text_len: self.text_len,
            image_vocab: self.image_vocab,
            grid: self.grid,
            text_loss_weight: self.text_loss_weight,
        }
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
struct Block<B: Backend> {
    norm1: LayerNorm<B>,
    /// Queries, keys and values in one product.
    qkv: Linear<B>,
    proj: Linear<B>,
    norm2: LayerNorm<B>,
    fc: Linear<B>,
    out: Linear<B>,
    dropout: Dropout,
    heads: usize,
}

/// The keys and values one block has seen so far, `[B, H, t, D/H]` each.
#[derive(Debug, Clone)]
struct LayerCache<B: Backend> {
    keys: Tensor<B, 4>,
    values: Tensor<B, 4>,
}

/// Keys and values of every block for the tokens decoded so far: what makes each sampling step
/// attend to its prefix without recomputing it.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<LayerCache<B>>>,
    /// Tokens already in the cache.
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// Tokens the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<B: Backend> Block<B> {
    /// `x` `[B, T, W]` → `[B, T, W]`. With a cache, `x` holds the next tokens after those cached:
    /// either the whole prompt on an empty cache (causal among themselves) or one token, which
    /// may attend to everything before it.
    fn forward(&self, x: Tensor<B, 3>, cache: Option<&mut Option<LayerCache<B>>>) -> Tensor<B, 3> {
        let [b, t, w] = x.dims();
        let (h, d) = (self.heads, w / self.heads);
        let qkv = self.qkv.forward(self.norm1.forward(x.clone())); // [B, T, 3W]
        let heads = |i: usize| qkv.clone().narrow(2, i * w, w).reshape([b, t, h, d]).swap_dims(1, 2); // [B, H, T, d]
        let (q, mut k, mut v) = (heads(0), heads(1), heads(2));
        let mut causal = true;
        if let Some(slot) = cache {
            if let Some(past) = slot.take() {
                assert_eq!(t, 1, "a cached step decodes one token at a time");
                k = Tensor::cat(vec![past.keys, k], 2); // [B, H, t_past + 1, d]
                v = Tensor::cat(vec![past.values, v], 2);
                // One query after every cached key: nothing it may not see.
                causal = false;
            }
            *slot = Some(LayerCache { keys: k.clone(), values: v.clone() });
        }
        let options = if causal { SdpaOptions::causal() } else { SdpaOptions::default() };
        let a = scaled_dot_product_attention(q, k, v, AttentionMask::None, options); // [B, H, T, d]
        let a = a.swap_dims(1, 2).reshape([b, t, w]); // [B, T, W]
        let x = x + self.dropout.forward(self.proj.forward(a));
        let m = gelu(self.fc.forward(self.norm2.forward(x.clone()))); // [B, T, 4W]
        x + self.dropout.forward(self.out.forward(m))
    }
}

/// Mean cross-entropies of one batch, and the weighted loss that trains.
#[derive(Debug, Clone)]
pub struct DalleLoss<B: Backend> {
    /// `w·text + (1 − w)·image` (just `image` for a prior), `[1]`.
    pub loss: Tensor<B, 1>,
    /// Mean cross-entropy of the text tokens in nats (zero for a prior), `[1]`.
    pub text: Tensor<B, 1>,
    /// Mean cross-entropy of the image tokens in nats, `[1]`.
    pub image: Tensor<B, 1>,
}

/// The DALL·E transformer over `[text; image]` token sequences (see the module docs).
#[derive(Module, Debug)]
pub struct Dalle<B: Backend> {
    /// Text ids `0..V_t`, image codes `V_t..V_t+K`, BOS last.
    tokens: Embedding<B>,
    /// Positions of BOS and the text slots, `L + 1`.
    text_pos: Embedding<B>,
    row: Embedding<B>,
    col: Embedding<B>,
    blocks: Vec<Block<B>>,
    norm: LayerNorm<B>,
    text_head: Linear<B>,
    image_head: Linear<B>,
    dropout: Dropout,
    text_vocab: usize,
    text_len: usize,
    image_vocab: usize,
    grid: usize,
    text_loss_weight: f64,
}

impl<B: Backend> Dalle<B> {
    /// Text tokens per caption, `L`.
    pub fn text_len(&self) -> usize {
        self.text_len
    }

    /// Image tokens per image, `N`.
    pub fn image_tokens(&self) -> usize {
        self.grid * self.grid
    }

    /// Image codes `K`.
    pub fn image_vocab(&self) -> usize {
        self.image_vocab
    }

    /// Side of the code grid.
    pub fn grid(&self) -> usize {
        self.grid
    }

    /// An empty cache for [`Dalle::prefill`] and [`Dalle::step`].
    pub fn cache(&self) -> KvCache<B> {
        KvCache { layers: vec![None; self.blocks.len()], len: 0 }
    }

    /// The sequence input `[BOS; text; image[..count]]` as ids of the shared table, `[B, 1+L+count]`.
    fn input_ids(&self, text: Tensor<B, 2, Int>, image: Tensor<B, 2, Int>, count: usize) -> Tensor<B, 2, Int> {
        let [b, _] = image.dims();
        let bos = Tensor::<B, 2, Int>::full([b, 1], (self.text_vocab + self.image_vocab) as i64, &image.device());
        let mut parts = vec![bos];
        if self.text_len > 0 {
            parts.push(text);
        }
        if count > 0 {
            parts.push(image.narrow(1, 0, count).add_scalar(self.text_vocab as i64));
        }
        Tensor::cat(parts, 1)
    }

    /// Positional embeddings of sequence positions `start..start + len`, `[1, len, W]`.
    fn positions(&self, start: usize, len: usize, device: &B::Device) -> Tensor<B, 3> {
        let text_slots = self.text_len + 1;
        let mut parts = Vec::new();
        let text_end = (start + len).min(text_slots);
        if start < text_end {
            let ids = Tensor::<B, 1, Int>::arange(start as i64..text_end as i64, device).unsqueeze::<2>(); // [1, l]
            parts.push(self.text_pos.forward(ids));
        }
        let image_start = start.max(text_slots);
        if image_start < start + len {
            let cells = (image_start - text_slots) as i64..(start + len - text_slots) as i64;
            let cells = Tensor::<B, 1, Int>::arange(cells, device);
            let g = self.grid as i64;
            let rows = self.row.forward(cells.clone().div_scalar(g).unsqueeze::<2>()); // [1, l, W]
            let cols = self.col.forward(cells.remainder_scalar(g).unsqueeze::<2>());
            parts.push(rows + cols);
        }
        Tensor::cat(parts, 1)
    }

    /// Runs the blocks over embedded tokens starting at sequence position `start`.
    fn trunk(&self, ids: Tensor<B, 2, Int>, start: usize, mut cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let [_, t] = ids.dims();
        let device = ids.device();
        let mut x = self.tokens.forward(ids) + self.positions(start, t, &device); // [B, T, W]
        x = self.dropout.forward(x);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, cache.as_deref_mut().map(|c| &mut c.layers[i]));
        }
        if let Some(c) = cache {
            c.len += t;
        }
        self.norm.forward(x)
    }

    /// Logits of every next token for whole sequences, the training pass: `text` `[B, L]` (ids
    /// `< V_t`; ignored for a prior) and `image` `[B, N]` (codes `< K`). Returns the text logits
    /// `[B, L, V_t]` (`None` for a prior) and the image logits `[B, N, K]`.
    pub fn forward(&self, text: Tensor<B, 2, Int>, image: Tensor<B, 2, Int>) -> (Option<Tensor<B, 3>>, Tensor<B, 3>) {
        let n = self.image_tokens();
        let ids = self.input_ids(text, image, n - 1); // [B, L + N]
        let h = self.trunk(ids, 0, None); // [B, L + N, W]
        let l = self.text_len;
        let text = (l > 0).then(|| self.text_head.forward(h.clone().narrow(1, 0, l))); // [B, L, V_t]
        let image = self.image_head.forward(h.narrow(1, l, n)); // [B, N, K]
        (text, image)
    }

    /// The next-token cross-entropies of a batch and the weighted loss.
    pub fn loss(&self, text: Tensor<B, 2, Int>, image: Tensor<B, 2, Int>) -> DalleLoss<B> {
        let (text_logits, image_logits) = self.forward(text.clone(), image.clone());
        let image_ce = cross_entropy(image_logits, image);
        match text_logits {
            Some(logits) => {
                let text_ce = cross_entropy(logits, text);
                let w = self.text_loss_weight;
                let loss = text_ce.clone().mul_scalar(w) + image_ce.clone().mul_scalar(1.0 - w);
                DalleLoss { loss, text: text_ce, image: image_ce }
            }
            None => {
                let zero = Tensor::zeros([1], &image_ce.device());
                DalleLoss { loss: image_ce.clone(), text: zero, image: image_ce }
            }
        }
    }

    /// Starts decoding: runs `[BOS; text]` (`text` `[B, L]`, empty for a prior) through the blocks
    /// into an empty `cache` and returns the logits of the first image code, `[B, K]`.
    pub fn prefill(&self, text: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Tensor<B, 2> {
        assert!(cache.is_empty(), "prefill takes an empty cache");
        let [b, _] = text.dims();
        let device = text.device();
        let none = Tensor::<B, 2, Int>::zeros([b, 1], &device);
        let ids = self.input_ids(text, none, 0); // [B, 1 + L]
        let h = self.trunk(ids, 0, Some(cache)); // [B, 1 + L, W]
        self.last_image_logits(h)
    }

    /// One decoding step: appends image code `j` = `cache.len() − L − 1` (`codes` `[B]`) and
    /// returns the logits of the code after it, `[B, K]`.
    pub fn step(&self, codes: Tensor<B, 1, Int>, cache: &mut KvCache<B>) -> Tensor<B, 2> {
        let start = cache.len();
        assert!(start > self.text_len, "step comes after prefill");
        let ids = codes.add_scalar(self.text_vocab as i64).unsqueeze_dim::<2>(1); // [B, 1]
        let h = self.trunk(ids, start, Some(cache)); // [B, 1, W]
        self.last_image_logits(h)
    }

    /// The image logits of the full prefix `[BOS; text; image[..count]]`, recomputed without a
    /// cache: the next code's logits, `[B, K]`. What [`Dalle::step`] saves; kept for tests and
    /// the benchmark that measures the saving.
    pub fn next_logits_recompute(
        &self,
        text: Tensor<B, 2, Int>,
        image: Tensor<B, 2, Int>,
        count: usize,
    ) -> Tensor<B, 2> {
        let ids = self.input_ids(text, image, count);
        let h = self.trunk(ids, 0, None);
        self.last_image_logits(h)
    }

    fn last_image_logits(&self, h: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, t, w] = h.dims();
        let last = h.narrow(1, t - 1, 1).reshape([b, w]); // [B, W]
        self.image_head.forward(last) // [B, K]
    }
}

/// Mean cross-entropy of `logits` `[B, T, V]` against `targets` `[B, T]`, in nats, `[1]`.
fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let logp = log_softmax(logits.reshape([b * t, v]), 1); // [B·T, V]
    let picked = logp.gather(1, targets.reshape([b * t, 1])); // [B·T, 1]
    picked.mean().neg()
}
