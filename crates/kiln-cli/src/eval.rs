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
use crate::experiment::{DataFormat, DataSpec, Experiment};
use crate::family::classifier::Extractor as OwnExtractor;
use crate::family::registry;

/// `kiln eval`: score a trained model — FID, KID, Inception Score, precision/recall against the
/// real data, next to the floor two disjoint halves of the real data reach. Writes JSON.
#[derive(clap::Args, Debug)]
pub struct Eval {
    /// A run directory written by `kiln train` (or one of its checkpoints/step-N): its model's
    /// samples are scored against its data (with --samples: those images, against its data).
    #[arg(long, required_unless_present = "samples")]
    pub checkpoint: Option<PathBuf>,
    /// Score these images instead of a model's: a .npy float32 array [N, C, H, W] in [0, 1] (what
    /// `kiln sample --out x.npy` writes, or another framework's samples) or a directory of
    /// PNG/JPEG pictures; against --checkpoint's data or --data. Scored as 8-bit images, as their
    /// PNGs would be.
    #[arg(long)]
    pub samples: Option<PathBuf>,
    /// With --samples from a conditional model: the class each sample was drawn for, a .npy of
    /// integers [N] (int64, int32 or uint8). Adds `class_accuracy`: how often the extractor's
    /// classifier names the class asked for (kiln's own extractor only).
    #[arg(long, requires = "samples")]
    pub labels: Option<PathBuf>,
    /// The real images to score --samples against, when no --checkpoint names a run: a data
    /// directory in --data-format.
    #[arg(long, requires = "samples", conflicts_with = "checkpoint")]
    pub data: Option<PathBuf>,
    /// The format of --data.
    #[arg(long, value_enum, default_value = "mnist")]
    pub data_format: DataFormat,
    /// Samples to draw (default: as many as the real half they are compared with, so model and
    /// floor are measured with the same counts); with --samples, how many of them to score
    /// (default: all).
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

    /// How many images the extractor assigns to each of its `classes`: mode dropping shows
    /// here first (a model that draws few nines has a short bar at 9).
    fn histogram(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &p in &self.predicted {
            if let Some(c) = counts.get_mut(p) {
                *c += 1;
            }
        }
        counts
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
    // Inception's 1,008 ImageNet classes say little about digits or emoji; kiln's own
    // extractors classify the data set's own classes.
    let histogram = (classes <= MAX_HISTOGRAM_CLASSES).then(|| other.histogram(classes));
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
        "class_histogram": histogram,
    }))
}

/// Extractors with more classes than this get no class histogram in the scores.
const MAX_HISTOGRAM_CLASSES: usize = 100;

impl Job for Eval {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, info: &DeviceInfo) -> Result<()> {
        let device_name = &info.description;
        let device: burn::tensor::Device<B::InnerBackend> = device;
        // What is scored — a run's model, or the images of --samples — and against which data:
        // the run's, or --data's.
        let model = match (&self.checkpoint, &self.samples) {
            (Some(checkpoint), None) => Some(registry::open::<B::InnerBackend>(checkpoint, &device)?),
            _ => None,
        };
        let (run_dir, data, experiment) = match &self.checkpoint {
            Some(checkpoint) => {
                let run_dir = run_dir_of(checkpoint)?;
                let exp = Experiment::load(&run_dir.join("experiment.toml")).context("finding the run's data")?;
                (Some(run_dir), exp.data, Some(exp.name))
            }
            None => {
                let path = self.data.clone().context("--samples: score them against --checkpoint RUN or --data DIR")?;
                (None, DataSpec { format: self.data_format, path, size: None, augment: None }, None)
            }
        };
        let real = data.load()?.train;
        let samples = match &self.samples {
            Some(path) => Some(load_samples(path, [real.channels, real.height, real.width])?),
            None => None,
        };
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
                data.path.display(),
                real.len
            ),
        }
        let (first, second) = (&first[..half], &second[..half]);
        let n = match (&samples, self.samples.as_deref()) {
            (Some(set), Some(path)) => {
                let n = self.n.unwrap_or(set.len);
                ensure!(n <= set.len, "--n {n}: {} holds {} images", path.display(), set.len);
                n
            }
            _ => self.n.unwrap_or(half),
        };
        match (self.n, self.samples.as_deref()) {
            (Some(asked), _) => ensure!(asked >= least, "--n {asked}: at least {least} samples are needed ({why})"),
            (None, Some(path)) => {
                ensure!(n >= least, "--samples {}: {n} images; at least {least} are needed ({why})", path.display())
            }
            (None, None) => {
                ensure!(n >= least, "{n} samples (as many as the real half): at least {least} are needed ({why})")
            }
        }
        // RUN/eval-NAME.json for a run's model; SAMPLES.eval-NAME.json beside a sample set.
        let out_path = |name: &str| match (&self.out, self.samples.as_deref(), &run_dir) {
            (Some(out), _, _) => out.clone(),
            (None, Some(path), _) => {
                let stem = path.file_stem().map_or_else(|| "samples".into(), |s| s.to_string_lossy().into_owned());
                path.with_file_name(format!("{stem}.eval-{}.json", file_safe(name)))
            }
            (None, None, Some(dir)) => dir.join(format!("eval-{}.json", file_safe(name))),
            (None, None, None) => PathBuf::from(format!("eval-{}.json", file_safe(name))),
        };
        let spec = match &self.extractor {
            Some(spec) => spec.clone(),
            None => OwnExtractor::<B::InnerBackend>::default_for([real.channels, real.height, real.width])
                .with_context(|| {
                    format!(
                        "{}: kiln has no feature network of its own for {}×{}×{} images; pass --extractor inception",
                        data.path.display(),
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
                data.path.display(),
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
                data.path.display(),
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

        let (fakes, k) = match (&samples, &model) {
            (Some(set), _) => (extract_real(&net, set, &(0..n).collect::<Vec<_>>(), &device)?, 0),
            (None, Some(model)) => (extract_fake(&net, model.as_ref(), n, self.seed, &device)?, model.card().classes),
            (None, None) => bail!("internal: neither a model nor samples to score"),
        };
        let mut model_scores = compare(&reference, &fakes, dim, classes, self.seed)?;
        // The class each sample was asked to be: i % k for a conditional model's samples, the
        // --labels file's for a sample set. How often does the classifier agree?
        let asked: Option<Vec<usize>> = match &self.labels {
            Some(path) => {
                ensure!(
                    matches!(net, Extractor::Own(_)),
                    "--labels: class accuracy needs kiln's own extractor for the data (its classes are the data's)"
                );
                let labels = read_npy_labels(path, classes)?;
                ensure!(
                    labels.len() >= n,
                    "--labels {}: {} labels for {n} scored samples",
                    path.display(),
                    labels.len()
                );
                Some(labels)
            }
            None if k > 0 && k == classes && matches!(net, Extractor::Own(_)) => Some((0..n).map(|i| i % k).collect()),
            None => None,
        };
        if let Some(asked) = asked {
            let hits = fakes.predicted.iter().zip(&asked).filter(|&(p, a)| p == a).count();
            model_scores["class_accuracy"] = json!(hits as f64 / n as f64);
        }
        let floor_scores = compare(&reference, &floor, dim, classes, self.seed)?;
        let warnings: Vec<String> = floor_warning(&model_scores, &floor_scores, n, half).into_iter().collect();
        let result = json!({
            "checkpoint": self.checkpoint.as_ref().map(|p| p.display().to_string()),
            "samples": self.samples.as_ref().map(|p| p.display().to_string()),
            "experiment": experiment,
            "device": device_name,
            "seed": self.seed,
            "extractor": info,
            "reference": { "data": data.path.display().to_string(), "images": reference.count, "which": "a fixed random half of the training images" },
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
        line(if samples.is_some() { "samples" } else { "model" }, &result["model"]);
        if let Some(histogram) = result["model"]["class_histogram"].as_array() {
            let counts: Vec<String> = histogram.iter().map(|c| c.to_string()).collect();
            eprintln!("kiln: classes of the samples (extractor's guess, class 0 first): {}", counts.join(" "));
        }
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

/// The images of `--samples`, shaped like the real ones (`image` = `[C, H, W]`): a `.npy`
/// float32 `[N, C, H, W]` in `[0, 1]`, or a folder of pictures (decoded as RGB; for grey real
/// images the channels are averaged, which is exact for grey PNGs). Values become bytes as a PNG
/// would hold them.
fn load_samples(path: &Path, image: [usize; 3]) -> Result<ImageSet> {
    let mut set = if path.is_dir() {
        kiln_data::ImageFolder::load(path, &kiln_data::FolderOptions::default())
            .with_context(|| format!("--samples {}", path.display()))?
            .set
    } else {
        read_npy_images(path)?
    };
    if image[0] == 1 && set.channels == 3 && path.is_dir() {
        set = to_grey(&set);
    }
    let [c, h, w] = image;
    ensure!(
        [set.channels, set.height, set.width] == image,
        "--samples {}: {}×{}×{} images; the real images are {c}×{h}×{w}",
        path.display(),
        set.channels,
        set.height,
        set.width
    );
    Ok(set)
}

/// RGB → grey by the mean of the three channels.
fn to_grey(set: &ImageSet) -> ImageSet {
    let plane = set.height * set.width;
    let mut pixels = Vec::with_capacity(set.len * plane);
    for i in 0..set.len {
        let rgb = set.image(i);
        pixels.extend((0..plane).map(|p| {
            let sum: u32 = (0..3).map(|c| u32::from(rgb[c * plane + p])).sum();
            ((sum + 1) / 3) as u8
        }));
    }
    ImageSet { pixels, labels: set.labels.clone(), len: set.len, channels: 1, height: set.height, width: set.width }
}

/// A NumPy `.npy` (format 1.x or 2.x) in C order, split into its dtype (`descr`, e.g. `'<f4'`),
/// its shape and the bytes of its values, which must be exactly what dtype and shape call for.
/// `what` names the file in every error (`--samples x.npy`).
struct Npy<'a> {
    descr: String,
    dims: Vec<usize>,
    data: &'a [u8],
}

impl<'a> Npy<'a> {
    fn parse(bytes: &'a [u8], what: &str) -> Result<Self> {
        let bad = |why: String| anyhow!("{what}: {why}");
        ensure!(bytes.starts_with(b"\x93NUMPY") && bytes.len() >= 10, bad("not a .npy file (no NumPy magic)".into()));
        let (header_len, start) = match bytes[6] {
            1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
            2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
            v => bail!(bad(format!(".npy format version {v} is not one kiln reads"))),
        };
        let header = bytes.get(start..start + header_len).ok_or_else(|| bad("the header runs past the end".into()))?;
        let header = std::str::from_utf8(header).map_err(|_| bad("the header is not text".into()))?;
        let field = |key: &str| {
            let at = header.find(&format!("'{key}'"))?;
            let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
            Some(rest.to_string())
        };
        let descr = field("descr").ok_or_else(|| bad("the header has no 'descr'".into()))?;
        let descr = descr.split(',').next().unwrap_or_default().trim().to_string();
        let fortran = field("fortran_order").ok_or_else(|| bad("the header has no 'fortran_order'".into()))?;
        ensure!(fortran.starts_with("False"), bad("Fortran-ordered arrays are not read; save in C order".into()));
        let shape = field("shape").ok_or_else(|| bad("the header has no 'shape'".into()))?;
        let inside =
            shape.strip_prefix('(').and_then(|r| r.split(')').next()).ok_or_else(|| bad("unreadable shape".into()))?;
        let dims: Vec<usize> = inside
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| d.parse().map_err(|_| bad(format!("shape ({inside}) is not a list of sizes"))))
            .collect::<Result<_>>()?;
        let width = match descr.as_str() {
            "'<f4'" | "'float32'" | "'<i4'" | "'int32'" => 4,
            "'<i8'" | "'int64'" => 8,
            "'|u1'" | "'uint8'" => 1,
            other => bail!(bad(format!("dtype {other} is not one kiln reads"))),
        };
        let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let bytes_needed = count.and_then(|c| c.checked_mul(width));
        let bytes_needed = bytes_needed.ok_or_else(|| bad(format!("shape ({inside}) is too large")))?;
        let data = &bytes[start + header_len..];
        ensure!(
            data.len() == bytes_needed,
            bad(format!("shape ({inside}) needs {bytes_needed} bytes of values; the file holds {}", data.len()))
        );
        Ok(Self { descr, dims, data })
    }
}

/// A `.npy` of little-endian float32 shaped `[N, C, H, W]` with values in `[0, 1]`, as 8-bit
/// images (`round(255 · v)`). Anything else — another dtype, Fortran order, a value outside
/// `[0, 1]` or not a number, a short file — is refused, naming the file and what was found.
fn read_npy_images(path: &Path) -> Result<ImageSet> {
    let bytes = std::fs::read(path).with_context(|| format!("--samples {}: cannot read", path.display()))?;
    let what = format!("--samples {}", path.display());
    let npy = Npy::parse(&bytes, &what)?;
    ensure!(
        matches!(npy.descr.as_str(), "'<f4'" | "'float32'"),
        "{what}: dtype {}: kiln reads little-endian float32 ('<f4')",
        npy.descr
    );
    let [len, channels, height, width] = npy.dims[..] else {
        bail!("{what}: shape {:?}: kiln scores [N, C, H, W] arrays", npy.dims)
    };
    let mut pixels = Vec::with_capacity(npy.data.len() / 4);
    for (i, v) in npy.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).enumerate() {
        ensure!(
            (0.0..=1.0).contains(&v),
            "{what}: value {v} at flat index {i} is outside [0, 1] (kiln sample writes [0, 1])"
        );
        pixels.push((v * 255.0).round() as u8);
    }
    Ok(ImageSet { pixels, labels: Vec::new(), len, channels, height, width })
}

/// The classes a set of samples was drawn for: a `.npy` of integers shaped `[N]` (int64, int32 or
/// uint8, little-endian), each in `0..classes`.
fn read_npy_labels(path: &Path, classes: usize) -> Result<Vec<usize>> {
    let bytes = std::fs::read(path).with_context(|| format!("--labels {}: cannot read", path.display()))?;
    let what = format!("--labels {}", path.display());
    let npy = Npy::parse(&bytes, &what)?;
    ensure!(npy.dims.len() == 1, "{what}: shape {:?}: labels are one integer per sample, shaped [N]", npy.dims);
    let values: Vec<i64> = match npy.descr.as_str() {
        "'<i8'" | "'int64'" => {
            npy.data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default())).collect()
        }
        "'<i4'" | "'int32'" => {
            npy.data.chunks_exact(4).map(|b| i64::from(i32::from_le_bytes(b.try_into().unwrap_or_default()))).collect()
        }
        "'|u1'" | "'uint8'" => npy.data.iter().map(|&b| i64::from(b)).collect(),
        other => bail!("{what}: dtype {other}: labels are integers (int64, int32 or uint8)"),
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| match usize::try_from(v) {
            Ok(class) if class < classes => Ok(class),
            _ => bail!("{what}: label {v} at index {i} is not a class of the extractor (0..{classes})"),
        })
        .collect()
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

    fn npy(path: &Path, header: &str, values: &[f32]) {
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn npy_samples_are_read_as_bytes_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("kiln-eval-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.npy");
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 1, 2), }\n";
        npy(&good, header, &[0.0, 1.0, 0.5, 0.2]);
        let set = load_samples(&good, [1, 1, 2]).unwrap();
        assert_eq!((set.len, set.channels, set.height, set.width), (2, 1, 1, 2));
        assert_eq!(set.pixels, vec![0, 255, 128, 51]);
        let err = |name: &str, header: &str, values: &[f32], image: [usize; 3]| {
            let path = dir.join(name);
            npy(&path, header, values);
            let e = load_samples(&path, image).unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
            e
        };
        assert!(err("shape.npy", header, &[0.0; 4], [3, 32, 32]).contains("1×1×2 images; the real images are 3×32×32"));
        assert!(err("range.npy", header, &[0.0, 2.0, 0.0, 0.0], [1, 1, 2]).contains("value 2 at flat index 1"));
        assert!(err("nan.npy", header, &[f32::NAN, 0.0, 0.0, 0.0], [1, 1, 2]).contains("outside [0, 1]"));
        assert!(err("short.npy", header, &[0.0; 3], [1, 1, 2]).contains("needs 16 bytes"));
        let f8 = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1, 1, 2), }\n";
        assert!(err("f8.npy", f8, &[0.0; 8], [1, 1, 2]).contains("'<f8'"));
        let rank3 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 2), }\n";
        assert!(err("rank3.npy", rank3, &[0.0; 4], [1, 1, 2]).contains("[N, C, H, W]"));
        // Labels: integers [N] within the extractor's classes.
        let labels = dir.join("labels.npy");
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let head = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }\n";
        bytes.extend((head.len() as u16).to_le_bytes());
        bytes.extend(head.as_bytes());
        for v in [0i64, 9, 3] {
            bytes.extend(v.to_le_bytes());
        }
        std::fs::write(&labels, &bytes).unwrap();
        assert_eq!(read_npy_labels(&labels, 10).unwrap(), vec![0, 9, 3]);
        let e = read_npy_labels(&labels, 5).unwrap_err().to_string();
        assert!(e.contains("labels.npy") && e.contains("label 9 at index 1"), "{e}");
        let e = read_npy_labels(&good, 10).unwrap_err().to_string();
        assert!(e.contains("good.npy") && e.contains("shaped [N]"), "{e}");
        std::fs::write(dir.join("text.npy"), "hello").unwrap();
        assert!(load_samples(&dir.join("text.npy"), [1, 1, 2]).unwrap_err().to_string().contains("no NumPy magic"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_model_below_the_real_floor_is_called_noise_not_a_win() {
        let (good, floor) = (json!({ "fid": 3.0 }), json!({ "fid": 5.0 }));
        let warning = floor_warning(&good, &floor, 20, 20).unwrap();
        assert!(warning.contains("below the real floor's (5.000)") && warning.contains("20 samples"), "{warning}");
        assert!(floor_warning(&json!({ "fid": 9.0 }), &floor, 20, 20).is_none());
    }
}
