//! `kiln`: train, sample, reconstruct and interpolate generative image models.
//!
//! Every command is generic over the burn backend; `--device` picks one at run time from those
//! compiled in (`kiln-device`, the only place a backend is named), and every model family plugs
//! in through `family/` (the only place a family is named).

mod checkpoint;
mod data_cmd;
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

/// Generative image models on burn: VAEs, GANs, VQ-VAEs, DRAW and a small DALL·E.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Device: cpu, flex, ndarray, cuda:N, wgpu or auto.
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
    Train(train::TrainArgs),
    /// Draw samples from a trained model (a conditional model: of the classes asked for).
    Sample(generate::Sample),
    /// Draw images from text prompts with a text-to-image model, one grid row per prompt:
    /// `kiln generate --checkpoint RUN "grinning face" "red heart" --n 8 --out faces.png`.
    Generate(generate::Generate),
    /// Reconstruct held-out images: a grid of originals with their reconstructions underneath.
    Reconstruct(generate::Reconstruct),
    /// Walk between pairs of prior latents and write the decoded strips as one PNG (a row per pair).
    Interpolate(generate::Interpolate),
    /// Score a trained model: FID, KID, Inception Score, precision/recall against the real data,
    /// next to the floor two disjoint halves of the real data reach. Writes JSON.
    Eval(eval::Eval),
    /// Download, verify and list data sets (`kiln data fetch NAME`, `kiln data ls`).
    Data {
        #[command(subcommand)]
        command: data_cmd::DataCommand,
    },
    /// Resize PNG/JPEG images with kiln's filters (nearest, bilinear, bicubic, area; antialias).
    Resize(resize::ResizeArgs),
    /// List the model families this kiln trains (`--json`: one object per line).
    Families {
        /// One JSON object per line: name, about, generator.
        #[arg(long)]
        json: bool,
    },
}

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
    kiln_device::init_threads(cli.threads)?;
    let device = cli.device.as_str();
    match cli.command {
        Command::Train(args) => train::run(args, device),
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
            // One line, the whole cause chain, no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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
