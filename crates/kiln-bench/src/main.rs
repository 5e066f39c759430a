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
}

struct Bench {
    workloads: Vec<Workload>,
    scale: Scale,
    warmup: usize,
    reps: usize,
    threads: usize,
    json: bool,
}

impl Job for Bench {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device, info: &DeviceInfo) -> Result<()> {
        let backend = info.backend;
        let mut context = serde_json::Map::new();
        context.insert("impl".into(), json!("kiln"));
        context.insert("backend".into(), json!(backend));
        context.insert("threads".into(), json!(self.threads));
        context.insert("tiny".into(), json!(self.scale == Scale::Tiny));
        if !self.json {
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
            if self.json {
                println!("{}", Value::to_string(&record.to_json(&context)));
            } else {
                println!("{}", measure::table_row(&record));
            }
        }
        if !self.json {
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
    let threads = kiln_device::init_threads(args.threads)?;
    let scale = if args.tiny { Scale::Tiny } else { Scale::Full };
    let job = Bench { workloads, scale, warmup: args.warmup, reps: args.reps, threads, json: args.json };
    kiln_device::run_on(&args.device, job)?
}
