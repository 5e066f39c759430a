//! `kiln`: train, sample, reconstruct and interpolate generative image models.
//!
//! Every command is generic over the burn backend; `--device` picks one at run time from those
//! compiled in (`kiln-device`, the only place a backend is named), and every model family plugs
//! in through `family/` (the only place a family is named).

mod checkpoint;
mod data_cmd;
mod dist;
mod eval;
mod experiment;
mod family;
mod generate;
mod resize;
mod train;

use std::process::ExitCode;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use clap::{Parser, Subcommand};
use kiln_device::{DeviceInfo, Job};

/// Generative image models on burn: VAEs, GANs, VQ-VAEs, DRAW, a small DALL·E and diffusion.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, after_help = HELP_MAIN)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Device: cpu, flex, ndarray, cuda:N, wgpu or auto; for `kiln train`, a list such as
    /// cuda:0,cuda:1 trains data-parallel with one rank per device.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// Threads of the CPU backends (rayon's pool, which burn-flex, its GEMM and kiln-cpu run
    /// on); default: the number of physical cores, since hyper-threads share a core's FMA units.
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model from an experiment file (TOML under experiments/).
    ///
    /// Ctrl-C (or SIGTERM) stops after the current step with a checkpoint; `--resume` continues.
    #[command(after_help = HELP_TRAIN)]
    Train(train::TrainArgs),
    /// Draw samples from a trained model (a conditional model: of the classes asked for).
    #[command(after_help = HELP_SAMPLE)]
    Sample(generate::Sample),
    /// Draw images from text prompts with a text-to-image model, one grid row per prompt.
    #[command(after_help = HELP_GENERATE)]
    Generate(generate::Generate),
    /// Reconstruct held-out images: a grid of originals with their reconstructions underneath.
    #[command(after_help = HELP_RECONSTRUCT)]
    Reconstruct(generate::Reconstruct),
    /// Walk between pairs of prior latents and write the decoded strips as one PNG (a row per pair).
    #[command(after_help = HELP_INTERPOLATE)]
    Interpolate(generate::Interpolate),
    /// Score a trained model: FID, KID, Inception Score, precision/recall against the real data,
    /// next to the floor two disjoint halves of the real data reach. Writes JSON.
    #[command(after_help = HELP_EVAL)]
    Eval(eval::Eval),
    /// Download, verify and list data sets (`kiln data fetch NAME`, `kiln data ls`).
    #[command(after_help = HELP_DATA)]
    Data {
        #[command(subcommand)]
        command: data_cmd::DataCommand,
    },
    /// Resize PNG/JPEG images with kiln's filters (nearest, bilinear, bicubic, area; antialias).
    #[command(after_help = HELP_RESIZE)]
    Resize(resize::ResizeArgs),
    /// List the model families this kiln trains (`--json`: one object per line).
    #[command(after_help = "Example:\n  kiln families --json")]
    Families {
        /// One JSON object per line: name, about, generator.
        #[arg(long)]
        json: bool,
    },
}

const HELP_MAIN: &str = "\
Examples:
  kiln train experiments/vae-mnist.toml          # a VAE on the bundled MNIST sample, ~2 minutes
  kiln sample --checkpoint runs/vae-mnist/<UTC time> --out grid.png
  kiln eval --checkpoint runs/vae-mnist/<UTC time>

Experiment files (one per model, each a lab note): experiments/*.toml in the kiln repository.
The README there covers every family, your own data, several devices and the results.
`kiln COMMAND --help` has examples for each command.";

const HELP_TRAIN: &str = "\
Examples:
  kiln train experiments/dcgan-mnist.toml
  kiln train experiments/vae-mnist.toml --steps 500 --out runs/quick
  kiln train experiments/ddpm-mnist.toml --time-budget 10m --device cuda:0
  kiln train --resume runs/quick --steps 2000          # continue, bit for bit
  kiln train --resume runs/quick --resume-from 400     # from an older checkpoint

A run directory holds experiment.toml, metrics.jsonl, losses.png, samples.png, checkpoints/ and
the final model; its checkpoints' files are checked against the sha256 sums in their kiln.json.";

const HELP_SAMPLE: &str = "\
Examples:
  kiln sample --checkpoint RUN --out grid.png                   # 64 samples as one grid
  kiln sample --checkpoint RUN --n 10000 --out samples/         # one PNG each, written in batches
  kiln sample --checkpoint RUN --n 50000 --out x.npy            # float32 [N, C, H, W] in [0, 1]
  kiln sample --checkpoint RUN --class 7 --n 16 --out sevens.png
  kiln sample --checkpoint RUN --sampler ddim --steps 50 --guidance 3 --out x.png";

const HELP_GENERATE: &str = "\
Examples:
  kiln generate --checkpoint RUN \"grinning face\" \"red heart\" --n 8 --out faces.png
  kiln generate --checkpoint RUN --prompts-file prompts.txt --guidance 3 --top-k 64 --out grid.png";

const HELP_RECONSTRUCT: &str = "\
Examples:
  kiln reconstruct --checkpoint RUN --out recon.png
  kiln reconstruct --checkpoint RUN --data path/to/mnist --n 64 --out recon.png";

const HELP_INTERPOLATE: &str = "\
Examples:
  kiln interpolate --checkpoint RUN --out walk.png
  kiln interpolate --checkpoint RUN --path lerp --rows 8 --steps 12 --class 2,5 --out walk.png";

const HELP_EVAL: &str = "\
Examples:
  kiln eval --checkpoint RUN                                    # kiln's own extractor for the data
  kiln eval --checkpoint RUN --n 5000 --out scores.json
  kiln eval --checkpoint RUN --extractor inception              # pytorch-fid's weights (downloaded once)";

const HELP_DATA: &str = "\
Examples:
  kiln data ls
  kiln data fetch mnist
  kiln data fetch cifar-10 --data-dir /data/kiln";

const HELP_RESIZE: &str = "\
Examples:
  kiln resize photo.jpg --size 64x64 --filter bicubic --antialias --out small.png
  kiln resize a.png b.png --scale 0.5 --out halves/";

/// `kiln resize` on the chosen backend (inference only: the inner, non-autodiff backend).
struct ResizeJob(resize::ResizeArgs);

impl Job for ResizeJob {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _info: &DeviceInfo) -> Result<()> {
        resize::run::<B::InnerBackend>(&self.0, &device)
    }
}

/// `kiln families`.
fn families(json: bool) -> Result<()> {
    for f in family::registry::all() {
        if json {
            println!("{}", serde_json::to_string(&f)?);
        } else {
            let kind = if f.generator { "generator" } else { "not a generator" };
            println!("{:<12} {:<16} {}", f.name, kind, f.about);
        }
    }
    Ok(())
}

/// Freed large blocks are reused rather than returned to the system and faulted in again on
/// the next step (see `kiln_cpu::BlockCache`).
#[cfg(feature = "flex")]
#[global_allocator]
static ALLOC: kiln_cpu::BlockCache = kiln_cpu::BlockCache::new();

fn run(cli: Cli) -> Result<()> {
    kiln_device::with_threads(cli.threads, |pool| dispatch(cli, pool))?
}

/// Runs the command on the device `cli` names, with a CPU pool of `pool` threads.
fn dispatch(cli: Cli, pool: usize) -> Result<()> {
    let device = cli.device.as_str();
    match cli.command {
        Command::Train(args) => train::run(args, device, cli.threads.unwrap_or(pool), cli.threads.is_some()),
        Command::Sample(job) => kiln_device::run_on(device, job)?,
        Command::Generate(job) => kiln_device::run_on(device, job)?,
        Command::Reconstruct(job) => kiln_device::run_on(device, job)?,
        Command::Interpolate(job) => kiln_device::run_on(device, job)?,
        Command::Eval(job) => kiln_device::run_on(device, job)?,
        Command::Data { command } => data_cmd::run(command),
        Command::Resize(args) => kiln_device::run_on(device, ResizeJob(args))?,
        Command::Families { json } => families(json),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "flex")]
    ALLOC.configure_from_env();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The whole cause chain on one line, no backtrace — each cause once: many errors already end
/// with their source's text (`path: No such file (os error 2)`), and anyhow's `{:#}` would repeat
/// it. A cause that spans lines (toml's pointer at the bad line) keeps its line breaks.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(text.as_str()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(if text.contains('\n') { ":\n" } else { ": " });
        }
        line.push_str(text.trim_end());
    }
    line
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::error_line;

    #[test]
    fn an_os_error_is_printed_once() {
        let os = std::fs::read("/nonexistent/kiln-file").unwrap_err();
        let save = kiln_core::SaveError::Io { path: "/nonexistent/kiln-file".into(), source: os };
        let e = anyhow::Error::new(save).context("writing the grid");
        let line = error_line(&e);
        assert_eq!(line.matches("os error 2").count(), 1, "{line}");
        assert!(line.starts_with("writing the grid: /nonexistent/kiln-file: "), "{line}");
    }

    /// The seam, kept: outside `family/`, no file of the binary names a model crate, so a new
    /// family is its crate, its adapter and a registry line — never an edit here.
    #[test]
    fn outside_family_no_model_crate_is_named() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let crates =
            ["kiln_vae", "kiln_gan", "kiln_features", "kiln_vqvae", "kiln_draw", "kiln_dalle", "kiln_diffusion"];
        let mut leaks = Vec::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for name in crates {
                    if text.contains(&format!("{name}::")) || text.contains(&format!("use {name}")) {
                        leaks.push(format!("{} names {name}", path.display()));
                    }
                }
            }
        }
        assert!(leaks.is_empty(), "only src/family/ may name a model crate: {leaks:?}");
    }
}
