//! `kiln`: train, sample, reconstruct and interpolate generative image models.
//!
//! Every command is generic over the burn backend; `--device` picks one at run time from those
//! compiled in (see `device.rs`, the only place a backend is named).

mod checkpoint;
mod data_cmd;
mod device;
mod eval;
mod experiment;
mod generate;
mod resize;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Generative image models on burn: VAEs and GANs today; VQ-VAEs, DRAW and a small DALL·E to come.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    Train {
        /// The experiment file, e.g. experiments/vae-mnist.toml (with --resume: the run's own).
        #[arg(required_unless_present = "resume")]
        experiment: Option<PathBuf>,
        /// Continue the run in this directory from its newest checkpoint, bit for bit.
        #[arg(long, conflicts_with_all = ["out", "seed"])]
        resume: Option<PathBuf>,
        /// Device: cpu, flex, ndarray, cuda:N, wgpu or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Run directory (default: runs/<name>/<UTC time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the experiment's step budget (the run's total, counting resumed steps).
        #[arg(long, conflicts_with = "epochs")]
        steps: Option<usize>,
        /// Train for this many passes over the training set instead of a step count.
        #[arg(long)]
        epochs: Option<usize>,
        /// Stop after this much wall time, with a checkpoint: 90s, 10m, 1h30m.
        #[arg(long, value_parser = train::parse_duration)]
        time_budget: Option<std::time::Duration>,
        /// Override the experiment's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Draw samples from a trained model's prior (a conditional GAN: of the classes asked for).
    Sample {
        /// A run directory written by `kiln train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// How many samples.
        #[arg(long, default_value_t = 64)]
        n: usize,
        /// A .png file (one grid), a directory (one PNG per sample), or a .npy file.
        #[arg(long)]
        out: PathBuf,
        /// Output format; `npy` writes one float32 array [N, C, H, W] in [0, 1].
        #[arg(long, value_enum, default_value_t = Format::Png)]
        format: Format,
        /// Seed of the latent noise (the same seed gives the same samples on every backend).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Class(es) of a conditional model, e.g. `--class 7` or `--class 0,3` (grid rows cycle
        /// through them); by default every class in turn.
        #[arg(long = "class", value_delimiter = ',')]
        classes: Vec<usize>,
        /// Truncation trick: redraw latent entries outside [-T, T] (BigGAN); less variety, cleaner images.
        #[arg(long)]
        truncation: Option<f64>,
        /// Device: cpu, flex, ndarray, cuda:N, wgpu or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Reconstruct held-out images: a grid of originals with their reconstructions underneath.
    Reconstruct {
        /// A run directory written by `kiln train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Data directory (default: the one the run trained on, from its experiment.toml).
        #[arg(long)]
        data: Option<PathBuf>,
        /// How many test images (a multiple of 8 reads best).
        #[arg(long, default_value_t = 32)]
        n: usize,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
        /// Device: cpu, flex, ndarray, cuda:N, wgpu or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Walk between pairs of prior latents and write the decoded strips as one PNG (a row per pair).
    Interpolate {
        /// A run directory written by `kiln train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Images per strip, endpoints included.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Strips (pairs of latents).
        #[arg(long, default_value_t = 4)]
        rows: usize,
        /// lerp (straight line) or slerp (great circle: stays where the prior has its mass).
        #[arg(long, value_enum, default_value_t = Walk::Slerp)]
        path: Walk,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the endpoint latents.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Class(es) of a conditional model, e.g. `--class 7` or `--class 0,3` (strips cycle
        /// through them); by default strip r has class r.
        #[arg(long = "class", value_delimiter = ',')]
        classes: Vec<usize>,
        /// Truncation trick: redraw latent entries outside [-T, T] (BigGAN); less variety, cleaner images.
        #[arg(long)]
        truncation: Option<f64>,
        /// Device: cpu, flex, ndarray, cuda:N, wgpu or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Score a trained model: FID, KID, Inception Score, precision/recall against the real data,
    /// next to the floor two disjoint halves of the real data reach. Writes JSON.
    Eval {
        /// A run directory written by `kiln train` (or one of its checkpoints/step-N).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Samples to draw (default: as many as the real half they are compared with, so model and
        /// floor are measured with the same counts).
        #[arg(long)]
        n: Option<usize>,
        /// Feature network: `mnist`, `emoji32` (kiln's own, in crates/kiln-features/weights), a
        /// directory with features.json + features.safetensors, or `inception`: pytorch-fid's
        /// InceptionV3 (FID comparable with papers; slow on a CPU), whose weights (95 MB) are
        /// downloaded once into the data directory and verified by sha256 (datasets/pt-inception.toml);
        /// `inception=MANIFEST.toml` fetches them from another manifest (a mirror),
        /// `inception=FILE` reads a .pth or .safetensors copy. Default: kiln's own for the run's data.
        #[arg(long)]
        extractor: Option<String>,
        /// Real images per half (reference and floor; default: all, split in two).
        #[arg(long)]
        real_n: Option<usize>,
        /// The JSON file to write (default: RUN/eval-<extractor>.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seed of the latents (and of KID's subsets).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Data directory for downloaded weights (default: $KILN_DATA, else the user cache
        /// directory's kiln/), as for `kiln data fetch`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Device: cpu, flex, ndarray, cuda:N, wgpu or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Download, verify and list data sets (`kiln data fetch NAME`, `kiln data ls`).
    Data {
        #[command(subcommand)]
        command: data_cmd::DataCommand,
    },
    /// Resize PNG/JPEG images with kiln's filters (nearest, bilinear, bicubic, area; antialias).
    Resize {
        #[command(flatten)]
        args: resize::ResizeArgs,
        /// Device: cpu, flex, ndarray, cuda:N, wgpu or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

/// Output formats of `kiln sample`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// PNG: a grid for a .png path, one file per sample for a directory.
    Png,
    /// NumPy .npy, float32 [N, C, H, W].
    Npy,
}

/// Interpolation paths.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Linear interpolation.
    Lerp,
    /// Spherical linear interpolation.
    Slerp,
}

/// `kiln resize` on the chosen backend (inference only: the inner, non-autodiff backend).
struct ResizeJob(resize::ResizeArgs);

impl device::Job for ResizeJob {
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: B::Device, _name: &str) -> anyhow::Result<()> {
        resize::run::<B::InnerBackend>(&self.0, &device)
    }
}

/// Freed large blocks are reused rather than returned to the system and faulted in again on
/// the next step (see `kiln_cpu::BlockCache`).
#[cfg(feature = "flex")]
#[global_allocator]
static ALLOC: kiln_cpu::BlockCache = kiln_cpu::BlockCache::new();

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "flex")]
    ALLOC.configure_from_env();
    #[cfg(feature = "flex")]
    if let Err(e) = kiln_cpu::init_threads(cli.threads) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    // A build without the CPU backend has no pool of its own to size.
    #[cfg(not(feature = "flex"))]
    let _ = cli.threads;
    let result = match cli.command {
        Command::Train { experiment, resume, device, out, steps, epochs, time_budget, seed, quiet } => {
            train::run(train::TrainArgs { experiment, resume, out, steps, epochs, time_budget, seed, quiet }, &device)
        }
        Command::Sample { checkpoint, n, out, format, seed, classes, truncation, device } => {
            device::run_on(&device, generate::Sample { checkpoint, n, out, format, seed, classes, truncation })
        }
        Command::Reconstruct { checkpoint, data, n, out, device } => {
            device::run_on(&device, generate::Reconstruct { checkpoint, data, n, out })
        }
        Command::Interpolate { checkpoint, steps, rows, path, out, seed, classes, truncation, device } => {
            device::run_on(
                &device,
                generate::Interpolate { checkpoint, steps, rows, path, out, seed, classes, truncation },
            )
        }
        Command::Eval { checkpoint, n, extractor, real_n, out, seed, data_dir, device } => {
            device::run_on(&device, eval::Eval { checkpoint, n, extractor, out, seed, real_n, data_dir })
        }
        Command::Data { command } => data_cmd::run(command),
        Command::Resize { args, device } => device::run_on(&device, ResizeJob(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole cause chain, no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
