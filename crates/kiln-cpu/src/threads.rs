//! How many threads the CPU backend runs on.
//!
//! burn-flex and the `gemm` crate under it (and kiln-cpu's own convolution kernels) run on
//! rayon's global pool, which by default has one thread per *logical* CPU. Hyper-threads share a
//! core's FMA units, so GEMM-bound training gains nothing from them and loses to the extra
//! contention; PyTorch defaults to physical cores for the same reason. The binaries size the pool
//! once, at start-up, with [`init_threads`].

/// Physical cores from `/proc/cpuinfo` (distinct `physical id` / `core id` pairs); the logical
/// count where that file says nothing (other systems, containers that hide it).
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, usize::from);
    let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") else { return logical };
    count_cores(&text).map_or(logical, |cores| cores.min(logical))
}

fn count_cores(cpuinfo: &str) -> Option<usize> {
    let mut pairs = std::collections::BTreeSet::new();
    let mut physical = None;
    for line in cpuinfo.lines() {
        let mut parts = line.splitn(2, ':').map(str::trim);
        match (parts.next(), parts.next()) {
            (Some("physical id"), Some(v)) => physical = Some(v.to_string()),
            (Some("core id"), Some(v)) => {
                pairs.insert((physical.clone(), v.to_string()));
            }
            _ => {}
        }
    }
    (!pairs.is_empty()).then_some(pairs.len())
}

/// Why [`init_threads`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    /// `--threads 0`.
    #[error("--threads must be at least 1")]
    Zero,
    /// rayon refused (the global pool was already built, by this or another call).
    #[error("could not size rayon's global thread pool: {0}")]
    Pool(#[from] rayon::ThreadPoolBuildError),
}

/// Sizes rayon's global pool to `threads`, or to [`physical_cores`] when `None`; returns the
/// count. Call it once, before any tensor work. Workers get a 16 MiB stack (the size of
/// a main thread's, doubled) because [`on_pool`] runs whole commands on one.
pub fn init_threads(threads: Option<usize>) -> Result<usize, ThreadsError> {
    let n = match threads {
        Some(0) => return Err(ThreadsError::Zero),
        Some(n) => n,
        None => physical_cores(),
    };
    rayon::ThreadPoolBuilder::new().num_threads(n).stack_size(16 << 20).build_global()?;
    Ok(n)
}

/// Runs `f` on one of the pool's worker threads and returns its result; the calling thread
/// waits.
///
/// A training step is a long serial chain of tensor ops (autodiff's bookkeeping, the optimizer),
/// each fanning out over the pool. Called from a thread outside the pool, every parallel op is
/// injected into the pool and the caller sleeps on a futex until the pool's threads finish —
/// two thread wake-ups per op, hundreds of ops per step, with the caller's core idle meanwhile.
/// Run from a worker, the op's first half runs on the calling thread while the other workers
/// steal the rest. Measured on the 2-core EPYC (`kiln train experiments/vqvae-mnist.toml --steps
/// 200`, five interleaved pairs): 1,187–1,410 img/s from the main thread, 1,351–1,727 on the
/// pool, 1.06–1.31× per pair; kiln-bench's DRAW step 1.28× and 1.49× (two pairs).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// The size of rayon's global pool now (built on first use if [`init_threads`] was not called).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// One thread pool per shard for [`run_shards`], kept between steps: `(shards, threads each,
/// pools)`.
type ShardPools = (usize, usize, Vec<std::sync::Arc<rayon::ThreadPool>>);
static SHARD_POOLS: std::sync::Mutex<Option<ShardPools>> = std::sync::Mutex::new(None);

/// Calls `f(0)`, …, `f(shards − 1)` at the same time, each on a pool of its own with an equal
/// share of [`threads`] (at least one), and returns when all have; with fewer threads than
/// shards, one after the other on the calling thread. kiln-device registers it as kiln-kernels'
/// `ShardRunner`, which kiln-optim's `backward_shards` uses to step the slices of a batch
/// through a model concurrently.
///
/// Why pools of their own: from threads outside rayon's global pool, every parallel op of a
/// shard would be queued on that pool and the shards would wait on each other's ops; inside
/// pools of their own each shard's ops run where the shard runs. What it buys is the model's
/// business. Measured on the 2-core Intel Xeon: `kiln train experiments/draw-mnist.toml` (the small
/// preset, 150 steps, two interleaved pairs) 1,051 → 1,204 and 995 → 1,225 img/s with two shards;
/// kiln-bench's W5 (the paper's DRAW, batch 64) 0.97×, 1.07×, 1.32× in three pairs; W7 (the emoji
/// diffusion U-Net, batch 64) 1.32×, 1.23×, 1.20×; the diffusion experiments' `kiln train` about
/// 1.3× (ddpm-emoji 1.33, 1.02, 1.40, 1.34 over 80 steps). DRAW gains less than two cores'
/// worth: at 32 images a shard, burn-autodiff's bookkeeping (one graph node per op, hash
/// maps behind one global lock) is most of a step, and two shards one after the other take 1.33×
/// the time of the batch in one pass. GEMM-bound steps (DCGAN-64, the VQ-VAE) have nothing to gain:
/// their GEMMs already fill both cores.
///
/// # Panics
/// If a pool cannot be built (the system refused a thread), or if `f` panics.
pub fn run_shards(shards: usize, f: &(dyn Fn(usize) + Sync)) {
    let threads = threads();
    if shards <= 1 || threads < shards {
        (0..shards).for_each(f);
        return;
    }
    let each = threads / shards;
    let pools = {
        let mut cached = SHARD_POOLS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*cached {
            Some((n, t, pools)) if *n == shards && *t == each => pools.clone(),
            _ => {
                let pools: Vec<_> = (0..shards)
                    .map(|i| {
                        rayon::ThreadPoolBuilder::new()
                            .num_threads(each)
                            .stack_size(16 << 20)
                            .thread_name(move |t| format!("kiln-shard-{i}.{t}"))
                            .build()
                            .map(std::sync::Arc::new)
                            .expect("kiln-cpu: could not start a shard's thread pool")
                    })
                    .collect();
                *cached = Some((shards, each, pools.clone()));
                pools
            }
        }
    };
    std::thread::scope(|scope| {
        for (i, pool) in pools.iter().enumerate().skip(1) {
            scope.spawn(move || pool.install(|| f(i)));
        }
        pools[0].install(|| f(0));
    });
}

/// Segments per rayon task for work split into `len`-float segments: at least ~8K floats per
/// task, or the 1-float segments of DCGAN's last layer become half a million tasks.
pub(crate) fn grain(len: usize) -> usize {
    (8192 / len.max(1)).max(1)
}

/// The element-wise sum of `partials` (each `len` floats), added in their order: parallel
/// partial sums combined by rayon's `fold`/`reduce` are grouped by work stealing, so their float
/// sum differs from run to run; collected in order and added here, it does not.
pub(crate) fn sum_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut partials = partials.into_iter();
    let mut sum = partials.next().unwrap_or_else(|| vec![0.0; len]);
    for partial in partials {
        sum.iter_mut().zip(&partial).for_each(|(a, b)| *a += *b);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_counted_once_per_physical_core() {
        // Two sockets, two cores each, two hyper-threads per core.
        let mut text = String::new();
        for (socket, core) in [(0, 0), (0, 0), (0, 1), (0, 1), (1, 0), (1, 0), (1, 1), (1, 1)] {
            text.push_str(&format!("processor\t: x\nphysical id\t: {socket}\ncore id\t\t: {core}\n\n"));
        }
        assert_eq!(count_cores(&text), Some(4));
        assert_eq!(count_cores("processor : 0\nflags : avx2\n"), None);
        assert!(physical_cores() >= 1);
        assert!(matches!(init_threads(Some(0)), Err(ThreadsError::Zero)));
    }
}
