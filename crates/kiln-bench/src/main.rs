//! `kiln-bench`: how fast kiln trains (and W4 samples), in images or tokens per second and
//! GFLOP/s, on workloads that `xtask/bench/pytorch_bench.py` runs in PyTorch too (issue 8: "kiln
//! trains faster than PyTorch on the same CPU").
//!
//! ```text
//! kiln-bench [--workload w1,w2,w3,w4,w5,w6,w7] [--reps N] [--warmup N] [--threads N] [--device cpu] [--json] [--tiny]
//! ```
//! Prints a table, or with `--json` one JSON object per workload and line. `cargo xtask bench`
//! builds and runs it in release, keeps a history, and with `--compare` runs PyTorch interleaved.
//! See `workloads.rs` for what each workload is and `flops.rs` for how FLOPs are counted.
//!
//! Built with `--features mpi` and started by mpirun (`mpirun -n 2 kiln-bench --workload w1
//! --threads 1`), every rank runs the workload's batch data-parallel — the gradients averaged
//! through kiln-optim's seam on MPI, as `kiln train --world-size 2` does — and rank 0 reports the
//! job's images/s (ranks × batch per step) and the ms each step spent exchanging gradients.
//! `cargo xtask bench --dist 1x1,2x1,1x2` runs such layouts interleaved.

mod flops;
mod measure;
mod workloads;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use serde_json::{Value, json};

use crate::workloads::{Scale, Workload};
use kiln_device::{DeviceInfo, Job};

/// Throughput benchmarks of kiln's training steps and kernels.
#[derive(Parser, Debug)]
#[command(name = "kiln-bench", version)]
struct Args {
    /// Comma-separated workloads: w1 (DCGAN-64 step), w2 (VAE-64 step), w3 (VQ-VAE step), w4
    /// (gpt-mini: train step, KV-cached and recomputed sampling), w5 (DRAW step), w6 (kernels), w7
    /// (the emoji diffusion U-Net's step),
    /// all, or full names such as w6-vq-search.
    #[arg(long, default_value = "w1,w2,w3,w4,w5,w6,w7")]
    workload: String,
    /// Timed repetitions per workload.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Untimed repetitions first (allocator, caches, lazy parameter init).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Size of rayon's global pool, which burn-flex and its GEMM run on (default: the number of
    /// physical cores, as `torch.set_num_threads` is given in the PyTorch script).
    #[arg(long)]
    threads: Option<usize>,
    /// cpu (the benchmark's CPU backend, burn-flex), ndarray, cuda:N or wgpu.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// One JSON object per workload and line instead of a table.
    #[arg(long)]
    json: bool,
    /// Tiny shapes (batch 2–4, small networks): checks that everything runs, measures nothing.
    #[arg(long)]
    tiny: bool,
    /// Under mpirun: the longest any one gradient exchange may wait for the other ranks, in
    /// seconds, before the run stops with an error.
    #[arg(long, default_value_t = 120.0)]
    dist_timeout: f64,
}

struct Bench {
    workloads: Vec<Workload>,
    /// The engine of a data-parallel run (this process started by mpirun), installed on the
    /// thread that runs the steps.
    sync: Option<std::sync::Arc<dyn kiln_optim::GradSync>>,
    scale: Scale,
    warmup: usize,
    reps: usize,
    threads: usize,
    json: bool,
}

impl Job for Bench {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, info: &DeviceInfo) -> Result<()> {
        let _installed = self.sync.clone().map(kiln_optim::sync::install);
        // Every rank steps in lockstep with the others; one report is enough.
        let report = self.sync.as_ref().is_none_or(|s| s.rank() == 0);
        let backend = info.backend;
        let mut context = serde_json::Map::new();
        context.insert("impl".into(), json!("kiln"));
        context.insert("backend".into(), json!(backend));
        context.insert("threads".into(), json!(self.threads));
        context.insert("tiny".into(), json!(self.scale == Scale::Tiny));
        if !self.json && report {
            let load = measure::load_average().map_or("?".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]));
            println!(
                "kiln-bench: backend {backend}, {} threads, warm-up {}, {} timed reps; load average {load}",
                self.threads, self.warmup, self.reps
            );
            println!("{}", measure::table_header());
        }
        #[cfg(feature = "flex")]
        context.insert("block_cache_mb".into(), json!(ALLOC.configure_from_env() >> 20));
        for workload in self.workloads {
            // Each workload starts with an empty cache, so its peak memory is its own.
            #[cfg(feature = "flex")]
            ALLOC.release();
            let record = workloads::run::<B>(workload, self.scale, &device, self.warmup, self.reps)
                .with_context(|| format!("workload {}", workload.name()))?;
            if let Some(failure) = kiln_optim::sync::take_failure() {
                anyhow::bail!("workload {}: {failure}", workload.name());
            }
            match (report, self.json) {
                (false, _) => {}
                (true, true) => println!("{}", Value::to_string(&record.to_json(&context))),
                (true, false) => println!("{}", measure::table_row(&record)),
            }
        }
        if !self.json && report {
            println!(
                "GFLOP/s: conv/convT/linear multiply-adds ×2 from the layer shapes (W4: + QKᵀ and PV), a training \
                 pass = 3 × forward; \
                 peak MiB: VmHWM, reset before each workload"
            );
        }
        Ok(())
    }
}

/// Freed large blocks are reused rather than returned to the system and faulted in again on
/// the next step (see `kiln_cpu::BlockCache`).
#[cfg(feature = "flex")]
#[global_allocator]
static ALLOC: kiln_cpu::BlockCache = kiln_cpu::BlockCache::new();

fn main() -> Result<()> {
    let args = Args::parse();
    #[cfg(feature = "flex")]
    ALLOC.configure_from_env();
    let workloads = Workload::parse_list(&args.workload)?;
    anyhow::ensure!(args.reps > 0, "--reps must be at least 1");
    let scale = if args.tiny { Scale::Tiny } else { Scale::Full };
    let sync = join_mpi(args.dist_timeout)?;
    kiln_device::with_threads(args.threads, |threads| {
        let job = Bench { workloads, sync, scale, warmup: args.warmup, reps: args.reps, threads, json: args.json };
        kiln_device::run_on(&args.device, job)?
    })?
}

/// This process's rank, when mpirun (or another MPI launcher) started it.
#[cfg(feature = "mpi")]
fn join_mpi(timeout: f64) -> Result<Option<std::sync::Arc<dyn kiln_optim::GradSync>>> {
    if !kiln_mpi::launched_by_mpi() {
        return Ok(None);
    }
    anyhow::ensure!(
        timeout.is_finite() && timeout > 0.0,
        "--dist-timeout {timeout}: must be a positive number of seconds"
    );
    let sync =
        kiln_mpi::MpiSync::init(std::time::Duration::from_secs_f64(timeout)).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(std::sync::Arc::new(sync)))
}

#[cfg(not(feature = "mpi"))]
fn join_mpi(_timeout: f64) -> Result<Option<std::sync::Arc<dyn kiln_optim::GradSync>>> {
    Ok(None)
}
