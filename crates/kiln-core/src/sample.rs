//! The seam between a trained generator and whatever asks it for images: the `kiln` binary's
//! `sample`, `interpolate`, `reconstruct` and `eval`, a notebook, another program.
//!
//! Model families differ in what a sample is drawn from — a VAE decodes `z ~ N(0, I)`, a GAN maps
//! noise and a class, DRAW paints a canvas over T steps, DALL·E samples tokens after a caption,
//! diffusion denoises image-shaped noise over T steps of a sampler — so the request carries every
//! knob any family has, and each model checks it against what it accepts ([`ModelCard::accepts`],
//! [`SampleRequest::check`]) and refuses the rest with an error that names the option. What comes
//! back is the same for all: images `[N, C, H, W]` in `[0, 1]`, plus the frames of the process for
//! families whose process is worth seeing.
//!
//! Noise is drawn on the host from the request's seed ([`standard_normal`]), so the same request
//! gives the same images on every backend.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::rng::standard_normal;

/// One knob of a [`SampleRequest`] besides the count and the seed, named as `kiln sample`'s flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleOption {
    /// Class labels (`--class`).
    Class,
    /// A text prompt (`--prompt`).
    Prompt,
    /// The truncation trick (`--truncation`).
    Truncation,
    /// Number of sampling steps (`--steps`).
    Steps,
    /// The sampler's name (`--sampler`).
    Sampler,
    /// DDIM's stochasticity `η` (`--eta`).
    Eta,
    /// Classifier-free guidance scale (`--guidance`).
    Guidance,
    /// Softmax temperature (`--temperature`).
    Temperature,
    /// Top-k filtering (`--top-k`).
    TopK,
    /// Nucleus filtering (`--top-p`).
    TopP,
}

impl SampleOption {
    /// The flag's name without dashes, as error messages print it (`--class`).
    pub fn flag(self) -> &'static str {
        match self {
            Self::Class => "class",
            Self::Prompt => "prompt",
            Self::Truncation => "truncation",
            Self::Steps => "steps",
            Self::Sampler => "sampler",
            Self::Eta => "eta",
            Self::Guidance => "guidance",
            Self::Temperature => "temperature",
            Self::TopK => "top-k",
            Self::TopP => "top-p",
        }
    }

    /// What a model that does not accept the option lacks.
    fn missing(self) -> &'static str {
        match self {
            Self::Class => "is unconditional; it takes no class",
            Self::Prompt => "takes no text prompt",
            Self::Truncation => "draws no Gaussian latent to truncate",
            Self::Steps | Self::Sampler => "samples in one pass; it has no sampling steps or sampler",
            Self::Eta => "has no DDIM sampler; η applies to diffusion models only",
            Self::Guidance => "has no guidance",
            Self::Temperature | Self::TopK | Self::TopP => {
                "samples no tokens; temperature, top-k and top-p do not apply"
            }
        }
    }
}

/// What a caller asks a trained generator for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleRequest {
    /// Number of images.
    pub n: usize,
    /// Seed of every random draw the model makes for this request.
    pub seed: u64,
    /// One class per image (length `n`), or empty: a conditional model then gives image `i`
    /// class `i mod K`, so every class is drawn equally.
    pub classes: Vec<usize>,
    /// A caption to draw (text-conditioned models).
    pub prompt: Option<String>,
    /// Truncation threshold `τ > 0`: latent entries outside `[−τ, τ]` are redrawn (BigGAN's
    /// trick: less variety, cleaner images).
    pub truncation: Option<f64>,
    /// Number of sampling steps (iterative samplers).
    pub steps: Option<usize>,
    /// The sampler, by the name the model gives it (e.g. `ddpm`, `ddim`).
    pub sampler: Option<String>,
    /// DDIM's `η`: 0 is the deterministic DDIM sampler, 1 is ancestral (DDPM) sampling.
    pub eta: Option<f64>,
    /// Classifier-free guidance scale.
    pub guidance: Option<f64>,
    /// Softmax temperature of token sampling.
    pub temperature: Option<f64>,
    /// Keep only the `k` likeliest tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches `p`.
    pub top_p: Option<f64>,
}

impl SampleRequest {
    /// `n` images from `seed`, every other option at the model's default.
    pub fn new(n: usize, seed: u64) -> Self {
        Self { n, seed, ..Self::default() }
    }

    /// The options this request sets.
    pub fn given(&self) -> Vec<SampleOption> {
        use SampleOption::*;
        let set = [
            (!self.classes.is_empty(), Class),
            (self.prompt.is_some(), Prompt),
            (self.truncation.is_some(), Truncation),
            (self.steps.is_some(), Steps),
            (self.sampler.is_some(), Sampler),
            (self.eta.is_some(), Eta),
            (self.guidance.is_some(), Guidance),
            (self.temperature.is_some(), Temperature),
            (self.top_k.is_some(), TopK),
            (self.top_p.is_some(), TopP),
        ];
        set.into_iter().filter_map(|(on, option)| on.then_some(option)).collect()
    }

    /// Checks the request against what `card`'s model accepts: a count of at least one, no option
    /// it lacks, valid values for the generic ones (truncation, classes). Returns the class of
    /// each image for a conditional model (empty for an unconditional one).
    pub fn check(&self, card: &ModelCard) -> Result<Vec<usize>, SampleError> {
        if self.n == 0 {
            return Err(SampleError::invalid("n", 0, "ask for at least one image"));
        }
        if let Some(option) = self.given().into_iter().find(|o| !card.accepts.contains(o)) {
            return Err(SampleError::Unsupported {
                option: option.flag(),
                reason: format!("{} {}", card.name, option.missing()),
            });
        }
        check_truncation(self.truncation)?;
        card.classes_for(self.n, &self.classes)
    }

    /// `n` latents `[n, d]` from `N(0, I)` (truncated when asked), drawn on the host from the
    /// request's seed.
    pub fn latents<B: Backend>(&self, d: usize, device: &B::Device) -> Tensor<B, 2> {
        let values = standard_normal(self.n * d, self.seed, self.truncation);
        Tensor::from_data(TensorData::new(values, [self.n, d]), device)
    }
}

/// Checks a truncation threshold: positive and finite.
pub fn check_truncation(truncation: Option<f64>) -> Result<(), SampleError> {
    match truncation {
        Some(tau) if !(tau.is_finite() && tau > 0.0) => {
            Err(SampleError::invalid("truncation", tau, "must be a positive number (0.5 to 1 is usual)"))
        }
        _ => Ok(()),
    }
}

/// What a trained model is, and what a [`SampleRequest`] may ask of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    /// How messages refer to it, e.g. "this VAE", "this conditional GAN".
    pub name: String,
    /// `[C, H, W]` of its images.
    pub image: [usize; 3],
    /// Classes it can be asked for (0: unconditional).
    pub classes: usize,
    /// The request options it accepts beyond `n` and `seed`.
    pub accepts: Vec<SampleOption>,
}

impl ModelCard {
    /// The class of each of `n` images: `given` checked (one per image, each below
    /// [`ModelCard::classes`]), or `i mod K` when none are given; empty when unconditional.
    pub fn classes_for(&self, n: usize, given: &[usize]) -> Result<Vec<usize>, SampleError> {
        let k = self.classes;
        if k == 0 {
            if !given.is_empty() {
                return Err(SampleError::Unsupported {
                    option: "class",
                    reason: format!("{} {}", self.name, SampleOption::Class.missing()),
                });
            }
            return Ok(Vec::new());
        }
        if given.is_empty() {
            return Ok((0..n).map(|i| i % k).collect());
        }
        if let Some(&bad) = given.iter().find(|&&c| c >= k) {
            return Err(SampleError::invalid("class", bad, format!("the model has classes 0 to {}", k - 1)));
        }
        if given.len() != n {
            return Err(SampleError::invalid(
                "class",
                format!("({} labels)", given.len()),
                format!("give one class per image ({n})"),
            ));
        }
        Ok(given.to_vec())
    }
}

/// What a model returns for a [`SampleRequest`].
#[derive(Debug, Clone)]
pub struct Samples<B: Backend> {
    /// The final images in `[0, 1]`, `[N, C, H, W]`.
    pub images: Tensor<B, 4>,
    /// The process that made them, frame by frame, for families where it is worth seeing (DRAW's
    /// canvases, a diffusion trajectory): `[T, N, C, H, W]` in `[0, 1]`, the last frame equal to
    /// `images`. `None` for one-pass generators.
    pub frames: Option<Tensor<B, 5>>,
}

impl<B: Backend> Samples<B> {
    /// Images without frames.
    pub fn images(images: Tensor<B, 4>) -> Self {
        Self { images, frames: None }
    }
}

/// A trained generator, as the tools that sample, interpolate, reconstruct and score it see it.
///
/// Only [`Generative::card`] and [`Generative::sample`] are required; the optional capabilities
/// default to a clear refusal.
pub trait Generative<B: Backend> {
    /// What the model is and what it accepts.
    fn card(&self) -> ModelCard;

    /// Images as `request` says, after [`SampleRequest::check`].
    fn sample(&self, request: &SampleRequest, device: &B::Device) -> Result<Samples<B>, SampleError>;

    /// Reconstructions `[N, C, H, W]` in `[0, 1]` of images in `[0, 1]` (models with an encoder).
    fn reconstruct(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>, SampleError> {
        let _ = images;
        Err(SampleError::Incapable(format!("{} has no encoder, so it cannot reconstruct images", self.card().name)))
    }

    /// The continuous latent space samples are decoded from, for interpolation; `None` when
    /// there is none (discrete codes, a sampling process).
    fn latent_space(&self) -> Option<&dyn LatentSpace<B>> {
        None
    }
}

/// A latent space `z ∈ R^d` with prior `N(0, I)` that a model decodes images from.
pub trait LatentSpace<B: Backend> {
    /// `d`.
    fn dim(&self) -> usize;

    /// Images in `[0, 1]` `[n, C, H, W]` from latents `[n, d]`, with one class per row for a
    /// conditional model (checked by the model; empty for an unconditional one).
    fn decode(&self, z: Tensor<B, 2>, classes: &[usize]) -> Result<Tensor<B, 4>, SampleError>;
}

/// How an interpolation walks from one latent to another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatentPath {
    /// A straight line: `(1 − t)·a + t·b`. Its midpoints have a smaller norm than typical
    /// Gaussian samples, so they can look washed out.
    Linear,
    /// Spherical interpolation (White 2016, arXiv:1609.04468): keeps the norm typical of
    /// `N(0, I)` samples along the way. The usual choice.
    #[default]
    Spherical,
}

/// The latents of interpolation strips: row `i` of `from` and `to` (`[n, d]` each, row-major on
/// the host) joined in `steps ≥ 2` points, endpoints included. `n·steps` rows of `d`, strip by
/// strip.
pub fn latent_path(from: &[f32], to: &[f32], d: usize, steps: usize, path: LatentPath) -> Vec<f32> {
    let mut out = Vec::with_capacity(from.len() * steps);
    for (a, b) in from.chunks_exact(d).zip(to.chunks_exact(d)) {
        let (a, b): (Vec<f64>, Vec<f64>) =
            (a.iter().map(|&v| v.into()).collect(), b.iter().map(|&v| v.into()).collect());
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cos = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>() / (norm(&a) * norm(&b)).max(1e-12);
        let omega = cos.clamp(-1.0, 1.0).acos();
        for s in 0..steps {
            let t = s as f64 / (steps - 1).max(1) as f64;
            // Nearly parallel endpoints make slerp 0/0; a straight line is then the same path.
            let (wa, wb) = match path {
                LatentPath::Spherical if omega.sin().abs() > 1e-6 => {
                    (((1.0 - t) * omega).sin() / omega.sin(), (t * omega).sin() / omega.sin())
                }
                _ => (1.0 - t, t),
            };
            out.extend(a.iter().zip(&b).map(|(x, y)| (wa * x + wb * y) as f32));
        }
    }
    out
}

/// What [`interpolate`] draws: `rows` strips of `steps` images between pairs of prior latents.
#[derive(Debug, Clone, PartialEq)]
pub struct Interpolation {
    /// Strips.
    pub rows: usize,
    /// Images per strip, endpoints included (at least 2).
    pub steps: usize,
    /// Straight or spherical.
    pub path: LatentPath,
    /// Seed of the endpoints.
    pub seed: u64,
    /// One class per strip for a conditional model (empty: strip `r` has class `r mod K`).
    pub classes: Vec<usize>,
    /// Truncation of the endpoints' latents.
    pub truncation: Option<f64>,
}

/// Interpolation strips through `model`'s latent space: images in `[0, 1]`, row-major,
/// `[rows·steps, C, H, W]`, ready for a grid of `steps` columns. Each strip keeps its class.
pub fn interpolate<B: Backend>(
    model: &dyn Generative<B>,
    walk: &Interpolation,
    device: &B::Device,
) -> Result<Tensor<B, 4>, SampleError> {
    let card = model.card();
    let Some(space) = model.latent_space() else {
        return Err(SampleError::Incapable(format!("{} has no continuous latent space to interpolate in", card.name)));
    };
    if walk.steps < 2 {
        return Err(SampleError::invalid("steps", walk.steps, "a strip needs at least its two endpoints"));
    }
    if walk.rows == 0 {
        return Err(SampleError::invalid("rows", 0, "ask for at least one strip"));
    }
    check_truncation(walk.truncation)?;
    let per_strip = card.classes_for(walk.rows, &walk.classes)?;
    let d = space.dim();
    let ends = standard_normal(2 * walk.rows * d, walk.seed, walk.truncation);
    let (mut from, mut to) = (Vec::with_capacity(walk.rows * d), Vec::with_capacity(walk.rows * d));
    for pair in ends.chunks_exact(2 * d) {
        from.extend_from_slice(&pair[..d]);
        to.extend_from_slice(&pair[d..]);
    }
    let z = latent_path(&from, &to, d, walk.steps, walk.path);
    let z = Tensor::from_data(TensorData::new(z, [walk.rows * walk.steps, d]), device);
    let classes: Vec<usize> = per_strip.iter().flat_map(|&c| std::iter::repeat_n(c, walk.steps)).collect();
    space.decode(z, &classes)
}

/// A request a model cannot honour, naming the option (as `kiln`'s flags spell it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    /// The model does not take this option at all.
    #[error("--{option}: {reason}")]
    Unsupported {
        /// The option's flag, e.g. `class`.
        option: &'static str,
        /// Why not, e.g. "this VAE is unconditional; it takes no class".
        reason: String,
    },
    /// The option's value is out of range.
    #[error("--{option} {value}: {reason}")]
    Invalid {
        /// The option's flag.
        option: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        reason: String,
    },
    /// The model lacks a whole capability (reconstruction, a latent space).
    #[error("{0}")]
    Incapable(String),
}

impl SampleError {
    /// An [`SampleError::Invalid`].
    pub fn invalid(option: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        Self::Invalid { option, value: value.to_string(), reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(classes: usize) -> ModelCard {
        ModelCard { name: "this toy".into(), image: [1, 2, 2], classes, accepts: vec![SampleOption::Class] }
    }

    #[test]
    fn a_request_is_checked_against_the_card() {
        let mut r = SampleRequest::new(4, 0);
        assert_eq!(r.check(&card(3)).unwrap(), vec![0, 1, 2, 0]);
        assert_eq!(r.check(&card(0)).unwrap(), Vec::<usize>::new());
        r.classes = vec![2; 4];
        assert_eq!(r.check(&card(3)).unwrap(), vec![2; 4]);
        let err = r.check(&card(0)).unwrap_err().to_string();
        assert_eq!(err, "--class: this toy is unconditional; it takes no class");
        r.classes = vec![0, 1, 2, 3];
        assert_eq!(r.check(&card(3)).unwrap_err().to_string(), "--class 3: the model has classes 0 to 2");
        r.classes.clear();
        r.truncation = Some(0.5);
        let err = r.check(&card(3)).unwrap_err().to_string();
        assert!(err.starts_with("--truncation: this toy draws no Gaussian latent"), "{err}");
        r.truncation = None;
        r.prompt = Some("a cat".into());
        assert_eq!(r.check(&card(3)).unwrap_err().to_string(), "--prompt: this toy takes no text prompt");
        assert!(SampleRequest::new(0, 0).check(&card(3)).unwrap_err().to_string().starts_with("--n 0"));
        assert!(
            check_truncation(Some(-1.0)).unwrap_err().to_string().starts_with("--truncation -1: must be a positive")
        );
    }

    #[test]
    fn paths_hit_their_endpoints_and_slerp_keeps_the_norm() {
        let (a, b) = ([3.0f32, 0.0], [0.0f32, 3.0]);
        for path in [LatentPath::Linear, LatentPath::Spherical] {
            let z = latent_path(&a, &b, 2, 5, path);
            assert_eq!(z.len(), 10);
            assert!((z[0] - 3.0).abs() < 1e-6 && z[1].abs() < 1e-6, "{z:?}");
            assert!(z[8].abs() < 1e-6 && (z[9] - 3.0).abs() < 1e-6, "{z:?}");
        }
        let mid = latent_path(&a, &b, 2, 3, LatentPath::Spherical);
        let norm = (mid[2] * mid[2] + mid[3] * mid[3]).sqrt();
        assert!((norm - 3.0).abs() < 1e-5, "slerp's midpoint keeps the norm: {norm}");
        let mid = latent_path(&a, &b, 2, 3, LatentPath::Linear);
        assert!((mid[2] - 1.5).abs() < 1e-6 && (mid[3] - 1.5).abs() < 1e-6);
        // Parallel endpoints fall back to the straight line instead of dividing 0 by 0.
        let same = latent_path(&a, &a, 2, 3, LatentPath::Spherical);
        assert!(same.iter().all(|v| v.is_finite()));
    }
}
