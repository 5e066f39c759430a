//! Experiment files: TOML under `experiments/`, read strictly (an unknown field or a wrong type is
//! an error naming it, not a silently ignored setting).
//!
//! The schema here is the part every family shares: a name, a seed, the data, the budget and
//! bookkeeping under `[train]`. What a family's `[model]` and `[train.<family>]` tables hold is
//! the family adapter's business (`family/`): this module keeps them as TOML tables and hands
//! them over, with [`overlay`] as the one way a family lays a file's settings over its preset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_optim::OptimConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One experiment: what data, which model, how long.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Names the run directory (`runs/<name>/…`).
    pub name: String,
    /// Seeds weights, noise and data order.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The training data.
    pub data: DataSpec,
    /// The model: `family = "…"` and whatever that family's adapter reads.
    pub model: toml::Table,
    /// The budget and optimiser.
    pub train: TrainSpec,
}

fn default_seed() -> u64 {
    42
}

/// Keys a resumed run may change: its budget and bookkeeping, never what it trains.
pub const SAFE_ON_RESUME: &[&str] = &[
    "train.steps",
    "train.time_budget_s",
    "train.log_every",
    "train.preview_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
];

impl Experiment {
    /// The dotted keys whose values differ between `self` and `other` (a key present in one only
    /// counts), in sorted order.
    pub fn changed_keys(&self, other: &Experiment) -> Result<Vec<String>> {
        fn walk(prefix: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<String>) {
            match (a, b) {
                (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                    let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                    for k in keys {
                        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        walk(&path, x.get(k), y.get(k), out);
                    }
                }
                (x, y) if x != y => out.push(prefix.to_string()),
                _ => {}
            }
        }
        let value = |e: &Experiment| toml::Value::try_from(e).context("serialising an experiment");
        let mut out = Vec::new();
        walk("", Some(&value(self)?), Some(&value(other)?), &mut out);
        Ok(out)
    }
}

/// Where the training data lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// The format: `mnist` (a directory of MNIST-format IDX files: MNIST, Fashion-MNIST, the
    /// bundled sample) or `emoji` (a sheet written by `cargo xtask data emoji`, labelled by
    /// category).
    pub format: DataFormat,
    /// The directory, relative to the current directory unless absolute.
    pub path: PathBuf,
    /// `captioned` only: resize every picture to `size × size` (centre crop, white behind
    /// transparency); without it every picture must already be one size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// Training-time augmentation: `flip = true` (random horizontal flips), `crop_padding = N`
    /// (random crops after padding by N pixels). Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<AugmentSpec>,
}

/// `[data.augment]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentSpec {
    /// Random horizontal flips.
    #[serde(default)]
    pub flip: bool,
    /// Pad by this many pixels (edge-replicated) and crop back at a random offset.
    #[serde(default)]
    pub crop_padding: usize,
}

impl AugmentSpec {
    /// The data crate's augmentation.
    pub fn augment(&self) -> kiln_data::Augment {
        kiln_data::Augment { flip: self.flip, crop_padding: self.crop_padding }
    }
}

/// The images an experiment's `[data]` names, loaded.
#[derive(Debug, Clone)]
pub struct Data {
    /// The training images.
    pub train: std::sync::Arc<kiln_data::ImageSet>,
    /// The test images; the training images again for a one-split set.
    pub test: std::sync::Arc<kiln_data::ImageSet>,
    /// One caption per training image, for captioned sets.
    pub captions: Option<std::sync::Arc<Vec<String>>>,
    /// The set has one split, so `test` is `train`.
    pub one_split: bool,
}

impl DataSpec {
    /// Loads the images (and captions); errors name `data.path`. A split with no images is an
    /// error here, so no later step divides by its size or batches nothing.
    pub fn load(&self) -> Result<Data> {
        let data = self.load_any()?;
        for (split, set) in [("training", &data.train), ("test", &data.test)] {
            anyhow::ensure!(set.len > 0, "data.path = {}: the {split} split holds no images", self.path.display());
        }
        Ok(data)
    }

    fn folder_options(&self) -> kiln_data::FolderOptions {
        match self.size {
            Some(s) => kiln_data::FolderOptions::sized(s, s),
            None => kiln_data::FolderOptions::default(),
        }
    }

    /// Where the data is: `path` as written, or — when that is no directory and `path` is the
    /// name of a data set `kiln data fetch` knows (`cifar-10`, `mnist`, …) — its folder in the data
    /// directory (`$KILN_DATA`, else the user cache's `kiln/`), so an experiment file works from
    /// any working directory once the set is fetched.
    pub fn resolved_path(&self) -> Result<PathBuf> {
        if self.path.is_dir() || self.path.is_absolute() {
            return Ok(self.path.clone());
        }
        let name = self.path.to_string_lossy();
        match kiln_data::Manifest::find(&name) {
            Ok(manifest) => {
                let dir = manifest.dir_in(&kiln_data::data_dir(None))?;
                anyhow::ensure!(
                    dir.is_dir(),
                    "data.path = {name:?}: no such directory here, and the data set of that name is not in {} yet \
                     (`kiln data fetch {name}` downloads it)",
                    dir.display()
                );
                Ok(dir)
            }
            Err(_) => Ok(self.path.clone()),
        }
    }

    fn load_any(&self) -> Result<Data> {
        let resolved = DataSpec { path: self.resolved_path()?, ..self.clone() };
        resolved.load_at()
    }

    fn load_at(&self) -> Result<Data> {
        use std::sync::Arc;
        let one = |images: kiln_data::ImageSet, captions: Option<Vec<String>>| {
            let set = Arc::new(images);
            Data { train: set.clone(), test: set, captions: captions.map(Arc::new), one_split: true }
        };
        match self.format {
            DataFormat::Mnist => {
                let load = |split| kiln_data::Mnist::load(&self.path, split).context("data.path");
                let (train, test) = (load(kiln_data::Split::Train)?, load(kiln_data::Split::Test)?);
                Ok(Data { train: Arc::new(train), test: Arc::new(test), captions: None, one_split: false })
            }
            DataFormat::Emoji => {
                let emoji = kiln_data::EmojiSet::load(&self.path).context("data.path")?;
                let captions = emoji.captions();
                Ok(one(emoji.images, Some(captions)))
            }
            DataFormat::Cifar10 => {
                let load = |split| kiln_data::Cifar10::load(&self.path, split).context("data.path");
                let (train, test) = (load(kiln_data::Split::Train)?, load(kiln_data::Split::Test)?);
                Ok(Data { train: Arc::new(train), test: Arc::new(test), captions: None, one_split: false })
            }
            DataFormat::Folder => {
                let folder = kiln_data::ImageFolder::load(&self.path, &self.folder_options()).context("data.path")?;
                Ok(one(folder.set, None))
            }
            DataFormat::Captioned => {
                let set = kiln_data::CaptionedSet::load(&self.path, &self.folder_options()).context("data.path")?;
                anyhow::ensure!(
                    set.images.len > 0,
                    "data.path = {}: captions.jsonl lists no images",
                    self.path.display()
                );
                Ok(one(set.images, Some(set.captions)))
            }
        }
    }
}

/// Data formats `kiln train` reads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
    Mnist,
    /// `emoji.png` + `dataset.json` + `captions.jsonl` (`datasets/emoji-32`); labels are the emoji
    /// categories. One split: a model that needs a test split evaluates on the training images.
    Emoji,
    /// CIFAR-10's binary batches (`kiln data fetch cifar-10`), 3×32×32, 10 classes.
    Cifar10,
    /// A folder of PNG/JPEG pictures, flat (unlabelled) or one sub-folder per class (labels in
    /// sorted folder order); resized to `data.size` if given (RGB). One split.
    Folder,
    /// A folder of PNG/JPEG pictures with `captions.jsonl`, one `{"file": "a.png", "text": "a red
    /// apple"}` per line (optional integer `"label"`); resized to `data.size` if given. One split.
    Captioned,
}

/// Training budget, optimiser and bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSpec {
    /// Optimisation steps (one batch each; with `optim.accumulate = k`, k steps make one update).
    pub steps: usize,
    /// Images per step.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Metrics line every N steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Preview grids every N steps (0: at the end only).
    #[serde(default)]
    pub preview_every: usize,
    /// Checkpoint every N steps (0: only at the end or when stopped).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Checkpoints kept (older ones are deleted).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Stop after this many seconds even if steps remain (resumable).
    pub time_budget_s: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay, for sampling.
    pub ema_decay: Option<f64>,
    /// The optimiser of a one-optimiser family: `[train.optim]` with kind, lr, beta1, beta2, eps,
    /// weight_decay, warmup, decay, min_lr_factor, clip_norm, accumulate.
    pub optim: Option<OptimConfig>,
    /// `[train.<family>]`: the family's own training settings (e.g. `[train.gan]`), read by its
    /// adapter. Any other key here is refused by [`Experiment::parse`].
    #[serde(flatten)]
    pub sections: BTreeMap<String, toml::Value>,
}

/// The keys of `[train]` every family shares, for the message that refuses any other.
const TRAIN_KEYS: &str = "steps, batch_size, log_every, preview_every, checkpoint_every, keep_checkpoints, \
                          time_budget_s, ema_decay, optim";

fn default_batch() -> usize {
    64
}
fn default_log_every() -> usize {
    25
}
fn default_checkpoint_every() -> usize {
    500
}
fn default_keep() -> usize {
    3
}

impl Experiment {
    /// Reads and checks an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read experiment file", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}", path.display()))
    }

    /// Parses and checks experiment TOML, the family's tables included.
    pub fn parse(text: &str) -> Result<Self> {
        // toml's message names the field and points at the line: its line breaks are kept.
        let exp: Self = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        exp.check()?;
        crate::family::registry::check(&exp)?;
        Ok(exp)
    }

    /// The model family, as `[model] family = "…"` names it.
    pub fn family(&self) -> Result<&str> {
        match self.model.get("family") {
            Some(toml::Value::String(name)) => Ok(name),
            Some(other) => anyhow::bail!("model.family = {other}: expected a family name in quotes"),
            None => {
                anyhow::bail!("[model]: missing `family` (one of: {})", crate::family::registry::names().join(", "))
            }
        }
    }

    /// `[model]` without its `family` key: what the family's adapter parses.
    pub fn model_settings(&self) -> toml::Table {
        let mut table = self.model.clone();
        table.remove("family");
        table
    }

    /// `[train.<family>]`, if the file has one.
    pub fn family_settings(&self) -> Result<Option<&toml::Table>> {
        let family = self.family()?;
        match self.train.sections.get(family) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t)),
            Some(other) => anyhow::bail!("train.{family} = {other}: expected a table ([train.{family}])"),
        }
    }

    fn check(&self) -> Result<()> {
        let t = &self.train;
        anyhow::ensure!(t.steps > 0, "train.steps = 0: must be at least 1");
        anyhow::ensure!(t.batch_size > 0, "train.batch_size = 0: must be at least 1");
        anyhow::ensure!(t.keep_checkpoints > 0, "train.keep_checkpoints = 0: must be at least 1");
        if let Some(optim) = &t.optim {
            optim.validate().map_err(|e| anyhow::anyhow!("train.{e}"))?;
        }
        if let Some(d) = t.ema_decay {
            anyhow::ensure!((0.0..1.0).contains(&d), "train.ema_decay = {d}: must be in [0, 1)");
        }
        anyhow::ensure!(
            self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && !self.name.is_empty(),
            "name = {:?}: use letters, digits, '-', '_' and '.' (it names a directory)",
            self.name
        );
        if let Some(size) = self.data.size {
            anyhow::ensure!(
                matches!(self.data.format, DataFormat::Captioned | DataFormat::Folder),
                "data.size: only the folder formats (\"folder\", \"captioned\") resize their pictures; MNIST, CIFAR-10 \
                 and emoji have their own size"
            );
            anyhow::ensure!((1..=4096).contains(&size), "data.size = {size}: must be 1 to 4096 pixels");
        }
        let family = self.family()?;
        for (key, value) in &t.sections {
            if crate::family::registry::names().contains(&key.as_str()) && value.is_table() {
                anyhow::ensure!(
                    key == family,
                    "[train.{key}] is for family = \"{key}\"; this experiment's model is family = \"{family}\""
                );
            } else {
                anyhow::bail!("train: unknown field `{key}`, expected one of {TRAIN_KEYS} or [train.{family}]");
            }
        }
        Ok(())
    }
}

/// A TOML error on one line (toml's own messages span several).
pub fn one_line(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{}", e.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Reads `table` strictly as a `T` (a family's settings struct with `deny_unknown_fields`);
/// errors start with `section` (`model`, `train.gan`).
pub fn strict<T: DeserializeOwned>(table: &toml::Table, section: &str) -> Result<T> {
    toml::Value::Table(table.clone()).try_into().map_err(|e| one_line(format!("{section}: {e}")))
}

/// `base` (a family's preset: a model config or a training recipe) with `overrides` laid over it:
/// each key given replaces the base's, except that a table given for a table is laid over it key
/// by key (so `d_optim = { lr = 4e-4 }` keeps the preset's betas) — unless it names a `kind`, as a
/// tagged choice such as `penalty = { kind = "r1", gamma = 0.1 }` does, which replaces it whole.
/// `overrides` is a TOML table or a family's `Spec` struct (its fields that are set).
/// The result is read back as a `T` with the base's own checks; errors start with `section`.
pub fn overlay<T: Serialize + DeserializeOwned>(base: &T, overrides: &impl Serialize, section: &str) -> Result<T> {
    let mut table = to_table(base, section, "preset")?;
    for (key, value) in to_table(overrides, section, "overrides")? {
        match (table.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) if !new.contains_key("kind") => {
                old.extend(new);
            }
            (_, value) => {
                table.insert(key, value);
            }
        }
    }
    strict(&table, section)
}

fn to_table(value: &impl Serialize, section: &str, what: &str) -> Result<toml::Table> {
    match toml::Value::try_from(value).with_context(|| format!("{section}: serialising the {what}"))? {
        toml::Value::Table(t) => Ok(t),
        other => anyhow::bail!("{section}: the {what} serialised as {other:?}, not a table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "vae"
latent = 8
[train]
steps = 10
"#;

    #[test]
    fn good_file_parses_with_defaults() {
        let e = Experiment::parse(GOOD).unwrap();
        assert_eq!(e.seed, 42);
        assert_eq!(e.train.batch_size, 64);
        assert_eq!(e.family().unwrap(), "vae");
        assert_eq!(e.model_settings().get("latent").and_then(toml::Value::as_integer), Some(8));
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Experiment::parse(&GOOD.replace("latent = 8", "latnet = 8")).unwrap_err().to_string();
        assert!(err.contains("unknown field `latnet`"), "{err}");
        let err = Experiment::parse(&GOOD.replace("steps = 10", "steps = 10\nsteps_typo = 1")).unwrap_err().to_string();
        assert!(err.contains("unknown field `steps_typo`"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Experiment::parse(&GOOD.replace("steps = 10", "steps = \"ten\"")).unwrap_err().to_string();
        assert!(err.contains("steps") && err.contains("invalid type"), "{err}");
        // toml's own layout is kept: the offending line, and a caret under the value.
        assert!(err.contains("| steps = \"ten\"\n") && err.contains("^^^^^"), "{err}");
    }

    #[test]
    fn optimizer_table_is_strict() {
        let with = |extra: &str| GOOD.replace("steps = 10", &format!("steps = 10\n[train.optim]\n{extra}"));
        let e = Experiment::parse(&with("kind = \"adamw\"\nlr = 3e-4\nwarmup = 5\ndecay = \"cosine\"")).unwrap();
        let optim = e.train.optim.unwrap();
        assert_eq!((optim.lr, optim.warmup), (3e-4, 5));
        let err = Experiment::parse(&with("beta2 = 1.5")).unwrap_err().to_string();
        assert!(err.contains("train.optim.beta2 = 1.5: must be in [0, 1)"), "{err}");
        let err = Experiment::parse(&with("decay = \"exponential\"")).unwrap_err().to_string();
        assert!(err.contains("unknown variant `exponential`"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Experiment::parse(&GOOD.replace("latent = 8", "latent = 0")).unwrap_err().to_string();
        assert!(err.contains("latent = 0"), "{err}");
        let err = Experiment::parse(&GOOD.replace("family = \"vae\"", "family = \"vae\"\npreset = \"huge\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.preset = \"huge\""), "{err}");
        // A name no family will take; the list grows as families are added.
        let err =
            Experiment::parse(&GOOD.replace("family = \"vae\"", "family = \"hologram\"")).unwrap_err().to_string();
        assert!(
            err.contains("model.family = \"hologram\": unknown model family (known: vae, gan, classifier"),
            "{err}"
        );
        let err = Experiment::parse(&GOOD.replace("family = \"vae\"\n", "")).unwrap_err().to_string();
        assert!(err.contains("missing `family`"), "{err}");
    }

    #[test]
    fn every_bundled_experiment_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Experiment::load(&path).unwrap();
                seen += 1;
            }
        }
        assert!(seen >= 4, "only {seen} experiment files in {}", dir.display());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Recipe {
        lr: f64,
        optim: Inner,
        penalty: Choice,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        lr: f64,
        beta: f64,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
    enum Choice {
        A { x: f64 },
        B { y: f64 },
    }

    #[test]
    fn overlay_merges_tables_replaces_tagged_choices_and_is_strict() {
        let base = Recipe { lr: 1.0, optim: Inner { lr: 2.0, beta: 0.5 }, penalty: Choice::A { x: 1.0 } };
        let over: toml::Table =
            toml::from_str("lr = 3.0\noptim = { lr = 4.0 }\npenalty = { kind = \"b\", y = 2.0 }").unwrap();
        let got = overlay(&base, &over, "train.t").unwrap();
        assert_eq!(got, Recipe { lr: 3.0, optim: Inner { lr: 4.0, beta: 0.5 }, penalty: Choice::B { y: 2.0 } });
        let bad: toml::Table = toml::from_str("lrr = 3.0").unwrap();
        let err = overlay(&base, &bad, "train.t").unwrap_err().to_string();
        assert!(err.starts_with("train.t: unknown field `lrr`"), "{err}");
    }
}
