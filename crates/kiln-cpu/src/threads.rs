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
