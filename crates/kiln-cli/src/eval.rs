//! `kiln eval`: a trained generator's FID, KID, Inception Score and precision/recall, next to the
//! same metrics between two disjoint halves of the real data (the floor a perfect model would
//! reach with this many images), all through one named feature extractor.
//!
//! `--extractor inception` fetches pytorch-fid's weights through kiln-data's verified downloader
//! (the `pt-inception` manifest) into the data directory the first time, and reads them from there
//! offline afterwards; `inception=MANIFEST.toml` does the same from another manifest (a mirror),
//! `inception=FILE` reads a weights file as it is.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use kiln_core::{Generative, PixelRange, SampleRequest};
use kiln_data::{
    DataError, DataFormat as FileFormat, FetchOptions, Fetched, ImageSet, Manifest, SplitMix64, data_dir, fetch_file,
    gather, sha256_file,
};
use kiln_device::{DeviceInfo, Job};
use kiln_inception::FidInception;
use kiln_metrics::{
    DEFAULT_K, DEFAULT_SPLITS, FeatureStats, KidConfig, Rows, fid, inception_score, kid, precision_recall,
};
use serde_json::json;

use crate::checkpoint::run_dir_of;
use crate::experiment::Experiment;
use crate::family::classifier::Extractor as OwnExtractor;
use crate::family::registry;

/// `kiln eval`: score a trained model — FID, KID, Inception Score, precision/recall against the
/// real data, next to the floor two disjoint halves of the real data reach. Writes JSON.
#[derive(clap::Args, Debug)]
pub struct Eval {
    /// A run directory written by `kiln train` (or one of its checkpoints/step-N).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Samples to draw (default: as many as the real half they are compared with, so model and
    /// floor are measured with the same counts).
    #[arg(long)]
    pub n: Option<usize>,
    /// Feature network: `mnist`, `emoji32` (kiln's own, in crates/kiln-features/weights), a
    /// directory with features.json + features.safetensors, or `inception`: pytorch-fid's
    /// InceptionV3 (FID comparable with papers; slow on a CPU), whose weights (95 MB) are
    /// downloaded once into the data directory and verified by sha256 (datasets/pt-inception.toml);
    /// `inception=MANIFEST.toml` fetches them from another manifest (a mirror),
    /// `inception=FILE` reads a .pth or .safetensors copy. Default: kiln's own for the run's data.
    #[arg(long)]
    pub extractor: Option<String>,
    /// The JSON file to write (default: RUN/eval-<extractor>.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the latents (and of KID's subsets).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Real images per half (reference and floor; default: all, split in two).
    #[arg(long)]
    pub real_n: Option<usize>,
    /// Data directory for downloaded weights (default: $KILN_DATA, else the user cache
    /// directory's kiln/), as for `kiln data fetch`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// The built-in manifest of pytorch-fid's weights (`datasets/pt-inception.toml`).
const INCEPTION_MANIFEST: &str = "pt-inception";

/// Seed of the fixed shuffle that splits the real images into reference and floor halves.
const SPLIT_SEED: u64 = 0x5EED_F1D0;

/// Images per forward pass.
const BATCH: usize = 250;

/// The network that turns images into features and class probabilities.
#[allow(clippy::large_enum_variant)] // one per command run
enum Extractor<B: Backend> {
    /// kiln's own classifier for the data (the classifier family's networks).
    Own(OwnExtractor<B>),
    /// pytorch-fid's InceptionV3 (`kiln-inception`): scores comparable with published ones.
    Inception(FidInception<B>),
}

impl<B: Backend> Extractor<B> {
    /// Features `[N, F]` and class logits `[N, K]` of images in `[0, 1]`.
    fn run(&self, images: Tensor<B, 4>) -> Result<(Tensor<B, 2>, Tensor<B, 2>)> {
        match self {
            Self::Own(net) => Ok(net.run(images)),
            Self::Inception(net) => {
                let out = net.forward(images)?;
                Ok((out.features, out.logits))
            }
        }
    }
}

/// Features, class probabilities and predicted classes of a set of images, row after row.
struct Extracted {
    features: Vec<f32>,
    probs: Vec<f32>,
    predicted: Vec<usize>,
    count: usize,
}

impl Extracted {
    fn new() -> Self {
        Self { features: Vec::new(), probs: Vec::new(), predicted: Vec::new(), count: 0 }
    }

    /// Runs `net` on images in `[0, 1]` `[N, C, S, S]` and appends the results.
    fn push<B: Backend>(&mut self, net: &Extractor<B>, images: Tensor<B, 4>) -> Result<()> {
        let n = images.dims()[0];
        let (features, logits) = net.run(images)?; // [N, F], [N, K]
        let probs = softmax(logits, 1); // [N, K]
        let k = probs.dims()[1];
        let probs: Vec<f32> = probs.into_data().convert::<f32>().to_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.predicted.extend(
            probs
                .chunks_exact(k)
                .map(|row| row.iter().enumerate().fold(0, |best, (i, &p)| if p > row[best] { i } else { best })),
        );
        self.probs.extend(probs);
        self.features
            .extend(features.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?);
        self.count += n;
        Ok(())
    }
}

/// The metrics of one set against the reference set.
fn compare(
    reference: &Extracted,
    other: &Extracted,
    dim: usize,
    classes: usize,
    seed: u64,
) -> Result<serde_json::Value> {
    let (r, o) = (Rows::new(&reference.features, reference.count, dim)?, Rows::new(&other.features, other.count, dim)?);
    let distance = fid(
        &FeatureStats::from_rows(&reference.features, reference.count, dim)?,
        &FeatureStats::from_rows(&other.features, other.count, dim)?,
    )?;
    let subset_size = 1000.min(reference.count).min(other.count);
    let kid = kid(r, o, &KidConfig { subset_size, subsets: 50, seed })?;
    let pr = precision_recall(r, o, DEFAULT_K)?;
    let is = inception_score(Rows::new(&other.probs, other.count, classes)?, DEFAULT_SPLITS)?;
    Ok(json!({
        "images": other.count,
        "fid": distance,
        "kid": kid.mean,
        "kid_std": kid.std,
        "kid_subset_size": subset_size,
        "inception_score": is.mean,
        "inception_score_std": is.std,
        "precision": pr.precision,
        "recall": pr.recall,
    }))
}

impl Job for Eval {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, info: &DeviceInfo) -> Result<()> {
        let device_name = &info.description;
        let device: burn::tensor::Device<B::InnerBackend> = device;
        let model = registry::open::<B::InnerBackend>(&self.checkpoint, &device)?;
        let run_dir = run_dir_of(&self.checkpoint)?;
        let exp = Experiment::load(&run_dir.join("experiment.toml")).context("finding the run's data")?;
        let real = exp.data.load()?.train;
        // Counts and the output first: a run too small to score, or an --out that cannot be
        // written, fails before any extractor is loaded or sample drawn.
        // Two disjoint random halves of the real images (a fixed shuffle: sets such as the MNIST
        // sample are interleaved by class, so a split by position could split by class): the
        // first is the reference every set is measured against, the second gives the floor — what
        // a model that drew real images would score.
        let mut order: Vec<usize> = (0..real.len).collect();
        SplitMix64::new(SPLIT_SEED).shuffle(&mut order);
        let (first, second) = order.split_at(real.len / 2);
        let half = self.real_n.map_or(first.len(), |r| r.min(first.len())); // first.len() ≤ second.len()
        // Every set is scored with the Inception Score (DEFAULT_SPLITS splits of at least one
        // image) and precision/recall (each image's DEFAULT_K-th neighbour within its own set).
        let least = DEFAULT_SPLITS.max(DEFAULT_K + 1);
        let why = format!("the Inception Score's {DEFAULT_SPLITS} splits and precision/recall's k = {DEFAULT_K}");
        match self.real_n {
            Some(asked) => {
                ensure!(half >= least, "--real-n {asked}: at least {least} real images per half are needed ({why})")
            }
            None => ensure!(
                half >= least,
                "{}: {} training images give halves of {half}; scoring needs at least {least} per half ({why})",
                exp.data.path.display(),
                real.len
            ),
        }
        let (first, second) = (&first[..half], &second[..half]);
        let n = self.n.unwrap_or(half);
        match self.n {
            Some(asked) => ensure!(asked >= least, "--n {asked}: at least {least} samples are needed ({why})"),
            None => ensure!(n >= least, "{n} samples (as many as the real half): at least {least} are needed ({why})"),
        }
        let out_path =
            |name: &str| self.out.clone().unwrap_or_else(|| run_dir.join(format!("eval-{}.json", file_safe(name))));
        let spec = match &self.extractor {
            Some(spec) => spec.clone(),
            None => OwnExtractor::<B::InnerBackend>::default_for([real.channels, real.height, real.width])
                .with_context(|| {
                    format!(
                        "{}: kiln has no feature network of its own for {}×{}×{} images; pass --extractor inception",
                        exp.data.path.display(),
                        real.channels,
                        real.height,
                        real.width
                    )
                })?
                .to_string(),
        };
        let inception = spec == "inception" || spec.starts_with("inception=");
        crate::generate::check_writable(&out_path(if inception { "inception" } else { &spec }))?;
        // `name` is what the scores record: "inception" however the weights were found (their
        // path and sha256 say which), else the extractor as given.
        let (net, name, info, dim, classes) = if let Some(source) = WeightsSource::parse(&spec)? {
            ensure!(
                real.channels == 1 || real.channels == 3,
                "--extractor inception takes grey or RGB images; {} has {} channels",
                exp.data.path.display(),
                real.channels
            );
            let (path, sha256) = source.resolve(&spec, self.data_dir.as_deref())?;
            let net = FidInception::<B::InnerBackend>::load(&path, &device)
                .with_context(|| format!("--extractor {spec}: pytorch-fid's pt_inception-2015-12-05 weights"))?;
            // A file given as is: hashed once it has loaded, so that the scores say which weights.
            let sha256 = match sha256 {
                Some(sha256) => sha256,
                None => sha256_file(&path).map_err(|e| anyhow!("--extractor {spec}: {e}"))?,
            };
            let (dim, classes) = (kiln_inception::FEATURES, kiln_inception::CLASSES);
            let info = json!({
                "name": "inception", "path": path.display().to_string(), "sha256": sha256,
                "feature_dim": dim, "classes": classes,
            });
            (Extractor::Inception(net), "inception".to_string(), info, dim, classes)
        } else {
            let net = OwnExtractor::<B::InnerBackend>::load(&spec, &device)?;
            let [c, s, _] = net.image;
            ensure!(
                [real.channels, real.height, real.width] == net.image,
                "--extractor {spec} takes {c}×{s}×{s} images; {} holds {}×{}×{}",
                exp.data.path.display(),
                real.channels,
                real.height,
                real.width
            );
            let (dim, classes) = (net.feature_dim, net.classes);
            let info = json!({ "name": spec, "path": net.source, "feature_dim": dim, "classes": classes });
            (Extractor::Own(net), spec.clone(), info, dim, classes)
        };

        let reference = extract_real(&net, &real, first, &device)?;
        let floor = extract_real(&net, &real, second, &device)?;

        let k = model.card().classes;
        let fakes = extract_fake(&net, model.as_ref(), n, self.seed, &device)?;
        let mut model_scores = compare(&reference, &fakes, dim, classes, self.seed)?;
        if k > 0 && k == classes && matches!(net, Extractor::Own(_)) {
            // A conditional model asked for class i % k: how often does the classifier agree?
            let hits = fakes.predicted.iter().enumerate().filter(|&(i, &p)| p == i % k).count();
            model_scores["class_accuracy"] = json!(hits as f64 / n as f64);
        }
        let floor_scores = compare(&reference, &floor, dim, classes, self.seed)?;
        let warnings: Vec<String> = floor_warning(&model_scores, &floor_scores, n, half).into_iter().collect();
        let result = json!({
            "checkpoint": self.checkpoint.display().to_string(),
            "experiment": exp.name,
            "device": device_name,
            "seed": self.seed,
            "extractor": info,
            "reference": { "data": exp.data.path.display().to_string(), "images": reference.count, "which": "a fixed random half of the training images" },
            "model": model_scores,
            "real_floor": floor_scores,
            "warnings": warnings,
        });
        let text = serde_json::to_string_pretty(&result)?;
        let out = out_path(&name);
        kiln_core::atomic_write(&out, text.as_bytes())?;
        println!("{text}");
        let line = |label: &str, v: &serde_json::Value| {
            eprintln!(
                "kiln: {label:<10} FID {:>8.3}  KID {:>8.5}  IS {:>6.3}  precision {:.3}  recall {:.3}",
                v["fid"].as_f64().unwrap_or(f64::NAN),
                v["kid"].as_f64().unwrap_or(f64::NAN),
                v["inception_score"].as_f64().unwrap_or(f64::NAN),
                v["precision"].as_f64().unwrap_or(f64::NAN),
                v["recall"].as_f64().unwrap_or(f64::NAN),
            )
        };
        eprintln!("kiln: {n} samples against {} real images, extractor {name}:", reference.count);
        line("model", &result["model"]);
        line("real floor", &result["real_floor"]);
        for warning in &warnings {
            eprintln!("kiln: warning: {warning}");
        }
        eprintln!("kiln: wrote {}", out.display());
        Ok(())
    }
}

/// A model cannot truly beat real images drawn from the same set: when its FID comes out below
/// the floor's, the counts are too small for the difference to mean anything, and this says so.
fn floor_warning(model: &serde_json::Value, floor: &serde_json::Value, n: usize, half: usize) -> Option<String> {
    let (m, f) = (model["fid"].as_f64()?, floor["fid"].as_f64()?);
    (m < f).then(|| {
        format!(
            "the model's FID ({m:.3}) is below the real floor's ({f:.3}): with {n} samples against {half} real \
             images the estimates are too noisy to rank them; score with more (--n, --real-n, a larger data set)"
        )
    })
}

fn extract_real<B: Backend>(
    net: &Extractor<B>,
    set: &ImageSet,
    indices: &[usize],
    device: &B::Device,
) -> Result<Extracted> {
    let mut out = Extracted::new();
    for chunk in indices.chunks(BATCH) {
        out.push(net, gather::<B>(set, chunk, PixelRange::ZeroOne, device).images)?;
    }
    Ok(out)
}

/// `n` samples from the model, seeded batch by batch; a conditional model is asked for class
/// `i % k` for sample `i`, so every class is drawn equally.
fn extract_fake<B: Backend>(
    net: &Extractor<B>,
    model: &dyn Generative<B>,
    n: usize,
    seed: u64,
    device: &B::Device,
) -> Result<Extracted> {
    let k = model.card().classes;
    let mut out = Extracted::new();
    for (b, start) in (0..n).step_by(BATCH).enumerate() {
        let len = BATCH.min(n - start);
        let classes = if k == 0 { Vec::new() } else { (start..start + len).map(|i| i % k).collect() };
        let request = SampleRequest { classes, ..SampleRequest::new(len, seed.wrapping_add(b as u64)) };
        out.push(net, model.sample(&request, device)?.images)?;
    }
    Ok(out)
}

/// Where `--extractor inception[=…]` takes pytorch-fid's weights from.
enum WeightsSource {
    /// A `pytorch-weights` manifest (`source`: its built-in name or its path): fetched and
    /// verified into the data directory unless already there.
    Manifest { manifest: Manifest, source: String },
    /// A `.pth` or `.safetensors` file, read as it is.
    File(PathBuf),
}

impl WeightsSource {
    /// What `--extractor` names, if it names Inception: `inception` (the built-in manifest),
    /// `inception=MANIFEST.toml` (another manifest: a mirror) or `inception=FILE`.
    fn parse(spec: &str) -> Result<Option<Self>> {
        let Some(arg) = spec.strip_prefix("inception") else { return Ok(None) };
        if arg.is_empty() {
            let manifest = Manifest::find(INCEPTION_MANIFEST)?;
            return Ok(Some(Self::Manifest { manifest, source: INCEPTION_MANIFEST.into() }));
        }
        Ok(match arg.strip_prefix('=') {
            Some(file) if file.ends_with(".toml") => {
                let manifest = Manifest::load(Path::new(file)).map_err(|e| anyhow!("--extractor {spec}: {e}"))?;
                Some(Self::Manifest { manifest, source: file.into() })
            }
            Some(file) => Some(Self::File(PathBuf::from(file))),
            None => None,
        })
    }

    /// The weights file, and its sha256 if a manifest pins it (its weights are fetched, or found
    /// verified in the cache).
    fn resolve(&self, spec: &str, dir: Option<&Path>) -> Result<(PathBuf, Option<String>)> {
        match self {
            Self::Manifest { manifest, source } => {
                fetch_weights(manifest, source, spec, dir).map(|(path, sha256)| (path, Some(sha256)))
            }
            Self::File(path) => Ok((path.clone(), None)),
        }
    }
}

/// Makes sure the one file of a `pytorch-weights` manifest is in the data directory, verified:
/// downloaded once, read from the cache (offline) after that.
fn fetch_weights(manifest: &Manifest, source: &str, spec: &str, dir: Option<&Path>) -> Result<(PathBuf, String)> {
    ensure!(
        manifest.format == FileFormat::PytorchWeights,
        "--extractor {spec}: {source} is a data set's manifest; weights need format = \"pytorch-weights\""
    );
    // Manifest::parse holds a weights manifest to one file.
    let [file] = manifest.files.as_slice() else {
        bail!("--extractor {spec}: {source} lists {} files; a weights manifest lists one", manifest.files.len())
    };
    let folder = manifest.dir_in(&data_dir(dir)).map_err(|e| anyhow::anyhow!("--extractor {spec}: {e}"))?;
    let dest = folder.join(&file.name);
    // A bar and retry notes for a person watching; a script's stderr gets only the outcome.
    let options = FetchOptions { progress: std::io::stderr().is_terminal(), ..FetchOptions::default() };
    // DataError's message is complete (it names the file or address): it goes into the one line.
    match fetch_file(&file.url, &dest, &file.sha256, &options) {
        Ok(Fetched::Cached) => {}
        Ok(Fetched::Downloaded { .. }) => {
            eprintln!("kiln: downloaded {} from {}, sha256 verified", dest.display(), file.url);
        }
        Err(e @ DataError::Download { .. }) => bail!(
            "--extractor {spec}: pytorch-fid's Inception weights {} are needed and are not in {} \
             (`kiln data fetch {source}` downloads them where there is a network; \
             --extractor inception=FILE reads a copy): {e}",
            file.name,
            folder.display()
        ),
        Err(e @ DataError::Checksum { .. }) => {
            bail!("--extractor {spec}: {} is not the file {source} pins: {e}", file.url)
        }
        Err(e) => bail!("--extractor {spec}: fetching {} into {}: {e}", file.url, folder.display()),
    }
    Ok((dest, file.sha256.clone()))
}

fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_below_the_real_floor_is_called_noise_not_a_win() {
        let (good, floor) = (json!({ "fid": 3.0 }), json!({ "fid": 5.0 }));
        let warning = floor_warning(&good, &floor, 20, 20).unwrap();
        assert!(warning.contains("below the real floor's (5.000)") && warning.contains("20 samples"), "{warning}");
        assert!(floor_warning(&json!({ "fid": 9.0 }), &floor, 20, 20).is_none());
    }
}
