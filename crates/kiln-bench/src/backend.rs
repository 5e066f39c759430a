//! The one place the benchmark names a backend.
//!
//! A mirror of `kiln-cli`'s `device.rs`, trimmed to what a benchmark needs. The CPU backend is
//! the [`Cpu`] alias — kiln-cpu's convolution kernels over burn-flex — and `--device flex` runs
//! plain burn-flex, so the two can be compared in one run.

use anyhow::{Result, bail};
use burn::tensor::backend::AutodiffBackend;

/// The CPU backend `--device cpu` measures (kiln's default CPU path, as in `kiln train`).
#[cfg(feature = "flex")]
pub type Cpu = kiln_cpu::KilnCpu<burn::backend::Flex>;

/// Work that can run on any backend.
pub trait Job {
    /// What the job returns.
    type Output;
    /// Runs on backend `B` (autodiff-capable; inference kernels use `B::InnerBackend`).
    /// `backend` names it for the records, e.g. `"flex"`.
    fn run<B: AutodiffBackend>(self, device: B::Device, backend: &'static str) -> Result<Self::Output>;
}

/// `--device` values this binary was built with.
fn compiled() -> String {
    let all = [
        (cfg!(feature = "flex"), "cpu, flex"),
        (cfg!(feature = "ndarray"), "ndarray"),
        (cfg!(feature = "cuda"), "cuda:N"),
        (cfg!(feature = "wgpu"), "wgpu"),
    ];
    all.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect::<Vec<_>>().join(", ")
}

/// Runs `job` on the backend and device that `device` names: `cpu` (the [`Cpu`] alias),
/// `ndarray`, `cuda[:N]` or `wgpu`.
pub fn run_on<J: Job>(device: &str, job: J) -> Result<J::Output> {
    let spec = device.trim().to_ascii_lowercase();
    #[allow(unused_variables)] // each closure use disappears when its backend is compiled in
    let missing = |feature: &str| {
        anyhow::anyhow!(
            "--device {device}: kiln-bench was built without the `{feature}` feature (it has: {}); \
             rebuild with `--features {feature}`",
            compiled()
        )
    };
    match spec.as_str() {
        "cpu" => {
            #[cfg(feature = "flex")]
            return job.run::<burn::backend::Autodiff<Cpu>>(Default::default(), "kiln-cpu");
            #[cfg(not(feature = "flex"))]
            Err(missing("flex"))
        }
        "flex" => {
            #[cfg(feature = "flex")]
            return job.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default(), "flex");
            #[cfg(not(feature = "flex"))]
            Err(missing("flex"))
        }
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            return job.run::<burn::backend::Autodiff<burn::backend::NdArray>>(Default::default(), "ndarray");
            #[cfg(not(feature = "ndarray"))]
            Err(missing("ndarray"))
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return job.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(Default::default(), "wgpu");
            #[cfg(not(feature = "wgpu"))]
            Err(missing("wgpu"))
        }
        other => {
            let index = match other.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => match rest.strip_prefix(':').map(str::parse::<usize>) {
                    Some(Ok(n)) => n,
                    _ => bail!(
                        "unknown --device {device:?}: expected cpu, ndarray, cuda:N or wgpu (built with: {})",
                        compiled()
                    ),
                },
                None => {
                    bail!(
                        "unknown --device {device:?}: expected cpu, ndarray, cuda:N or wgpu (built with: {})",
                        compiled()
                    )
                }
            };
            #[cfg(feature = "cuda")]
            return job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(
                burn::backend::cuda::CudaDevice::new(index),
                "cuda",
            );
            #[cfg(not(feature = "cuda"))]
            {
                let _ = index;
                Err(missing("cuda"))
            }
        }
    }
}
