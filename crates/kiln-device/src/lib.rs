//! The one place a backend is chosen, shared by every kiln binary (`kiln`, `kiln-bench`).
//!
//! `--device` names a device; each backend compiled in (this crate's cargo features `flex`,
//! `ndarray`, `cuda`, `wgpu`, which the binaries forward) can serve some of them. Work is written
//! once as a [`Job`], generic over the backend, and [`run_on`] instantiates it for the backend the
//! device needs — so a binary never names a backend type itself, and burn's habit of one
//! `#[cfg(feature = …)]` block per backend in every example is paid once, here.
#![warn(missing_docs)]

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;

/// The CPU backend `--device cpu` runs: kiln-cpu's convolution kernels over burn-flex.
#[cfg(feature = "flex")]
pub type Cpu = kiln_cpu::KilnCpu<burn::backend::Flex>;

/// The environment variable that, set to `0`, leaves kiln-cpu's fused kernels unregistered, so
/// that `--device cpu` runs the composed tensor ops instead: for measuring what the fused kernels
/// change (speed, and that training curves agree), not for everyday use.
pub const FUSED_ENV: &str = "KILN_FUSED";

/// Registers kiln-cpu's fused kernels for the backend `--device cpu` trains on, so that
/// kiln's generic ops use them (see `kiln_kernels::fused`): attention in blocks with its own
/// backward pass, the LSTM step of kiln-draw's cell, DRAW's filterbank axes, batch and group
/// norm, leaky ReLU and SiLU
/// as one autodiff node each, Adam's update in one pass, resizes outside autodiff as tap
/// loops, and the runner that steps a batch's shards on their own cores. [`run_on`] calls it; a program that uses kiln's
/// libraries on `Autodiff<Cpu>` directly calls it once before training. Does nothing when
/// [`FUSED_ENV`] is `0`.
#[cfg(feature = "flex")]
pub fn register_cpu_kernels() {
    use burn::backend::Flex;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use kiln_kernels::fused::{
        AdamKernel, AttentionKernel, FilterbankKernel, LeakyReluKernel, LstmCellKernel, NormKernel, ResampleKernel,
        ShardRunner, SiluKernel, register,
    };
    if std::env::var(FUSED_ENV).is_ok_and(|v| v.trim() == "0") {
        return;
    }
    register(AttentionKernel::<Autodiff<Cpu>>(kiln_cpu::attention_autodiff::<Flex, NoCheckpointing>));
    register(LstmCellKernel::<Autodiff<Cpu>>(kiln_cpu::lstm_cell_autodiff::<Flex, NoCheckpointing>));
    register(FilterbankKernel::<Autodiff<Cpu>>(kiln_cpu::filterbank_autodiff::<Flex, NoCheckpointing>));
    register(NormKernel::<Autodiff<Cpu>>(kiln_cpu::norm_autodiff::<Flex, NoCheckpointing>));
    register(LeakyReluKernel::<Autodiff<Cpu>>(kiln_cpu::leaky_relu_autodiff::<Flex, NoCheckpointing>));
    register(SiluKernel::<Autodiff<Cpu>>(kiln_cpu::silu_autodiff::<Flex, NoCheckpointing>));
    register(AdamKernel::<Cpu>(adam_on_cpu));
    register(ResampleKernel::<Cpu>(kiln_cpu::resample::<Flex>));
    register(ShardRunner::<Autodiff<Cpu>>::new(kiln_cpu::run_shards));
}

/// kiln-kernels' Adam kernel signature over kiln-cpu's: the same scalars, passed through.
#[cfg(feature = "flex")]
#[allow(clippy::type_complexity, clippy::result_large_err)] // the signature kiln-kernels names: `Err` moves the moments back
fn adam_on_cpu(
    u: &kiln_kernels::fused::AdamUpdate,
    w: &burn::tensor::ops::FloatTensor<Cpu>,
    g: &burn::tensor::ops::FloatTensor<Cpu>,
    moments: Option<kiln_cpu::Moments<burn::backend::Flex>>,
) -> Result<[burn::tensor::ops::FloatTensor<Cpu>; 3], Option<kiln_cpu::Moments<burn::backend::Flex>>> {
    let step = kiln_cpu::AdamStep {
        grad_scale: u.grad_scale,
        l2: u.l2,
        beta1: (u.beta1, u.one_minus_beta1),
        beta2: (u.beta2, u.one_minus_beta2),
        inv_sqrt_bc2: u.inv_sqrt_bc2,
        eps: u.eps,
        decay: u.decay,
        step_size: u.step_size,
    };
    kiln_cpu::adam_update::<burn::backend::Flex>(&step, w, g, moments)
}

/// `job` on kiln-cpu, its fused kernels registered first.
#[cfg(feature = "flex")]
fn run_on_cpu<J: Job>(job: J, info: &DeviceInfo) -> J::Output {
    register_cpu_kernels();
    job.run::<Autodiff<Cpu>>(Default::default(), info)
}

/// Work that can run on any backend.
pub trait Job {
    /// What the job returns (a binary's own `Result`, typically).
    type Output;

    /// Runs on backend `B` (always autodiff-capable; inference uses `B::InnerBackend`).
    fn run<B: AutodiffBackend>(self, device: B::Device, info: &DeviceInfo) -> Self::Output;
}

/// What a job is told about the device it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The parsed `--device`.
    pub spec: DeviceSpec,
    /// For people and run records, e.g. `cpu (kiln-cpu over burn-flex, 2 threads)`.
    pub description: String,
    /// The backend's short name, e.g. `kiln-cpu`, `flex`, `cuda`.
    pub backend: &'static str,
}

/// A `--device` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not a device kiln knows.
    #[error(
        "unknown --device {given:?}: expected cpu, flex, ndarray, cuda:N, wgpu or auto (this binary has: {compiled})"
    )]
    Unknown {
        /// What was given.
        given: String,
        /// What this binary has.
        compiled: String,
    },
    /// Several devices where one is needed: only `kiln train` takes a list.
    #[error(
        "--device {0:?}: this command runs on one device; `kiln train` takes a list and trains data-parallel, \
         one rank per device (a build with `--features mpi`)"
    )]
    Several(String),
    /// A backend this binary was built without.
    #[error(
        "--device {given}: this binary was built without the `{feature}` feature (it has: {compiled}); \
         rebuild with `--features {feature}`"
    )]
    NotCompiled {
        /// What was given.
        given: String,
        /// The cargo feature that would provide it.
        feature: &'static str,
        /// What this binary has.
        compiled: String,
    },
    /// `--threads` was zero, or given to a build without a CPU backend.
    #[error("{0}")]
    Threads(String),
}

/// Backends this binary was built with, as `--device` spells them.
pub fn compiled() -> Vec<&'static str> {
    let all = [
        (cfg!(feature = "flex"), "cpu"),
        (cfg!(feature = "flex"), "flex"),
        (cfg!(feature = "ndarray"), "ndarray"),
        (cfg!(feature = "cuda"), "cuda:N"),
        (cfg!(feature = "wgpu"), "wgpu"),
    ];
    all.into_iter().filter_map(|(on, name)| on.then_some(name)).collect()
}

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU: kiln-cpu's convolution kernels over burn-flex (kiln's fast CPU path).
    Cpu,
    /// Plain burn-flex on the CPU, for comparison with `Cpu`.
    Flex,
    /// burn-ndarray on the CPU.
    NdArray,
    /// CUDA GPU `n`.
    Cuda(usize),
    /// The default wgpu adapter.
    Wgpu,
}

impl DeviceSpec {
    /// Parses `cpu`, `flex`, `ndarray`, `cuda`, `cuda:N`, `wgpu` or `auto` (the best compiled-in
    /// backend: CUDA when built with it and an NVIDIA device node exists, else wgpu, else the CPU).
    pub fn parse(text: &str) -> Result<Self, DeviceError> {
        if text.contains(',') {
            return Err(DeviceError::Several(text.into()));
        }
        let spec = match text.trim().to_ascii_lowercase().as_str() {
            "cpu" => Self::Cpu,
            "flex" => Self::Flex,
            "ndarray" => Self::NdArray,
            "cuda" => Self::Cuda(0),
            "wgpu" => Self::Wgpu,
            "auto" => {
                if cfg!(feature = "cuda") && std::path::Path::new("/dev/nvidia0").exists() {
                    Self::Cuda(0)
                } else if cfg!(feature = "wgpu") {
                    Self::Wgpu
                } else if cfg!(feature = "flex") {
                    Self::Cpu
                } else {
                    Self::NdArray
                }
            }
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Self::Cuda(n),
                _ => return Err(DeviceError::Unknown { given: text.into(), compiled: compiled().join(", ") }),
            },
        };
        Ok(spec)
    }

    /// The backend's short name.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Cpu => "kiln-cpu",
            Self::Flex => "flex",
            Self::NdArray => "ndarray",
            Self::Cuda(_) => "cuda",
            Self::Wgpu => "wgpu",
        }
    }

    /// A description for people and run records.
    pub fn describe(&self) -> String {
        match self {
            Self::Cpu => format!("cpu (kiln-cpu over burn-flex, {})", cpu_threads()),
            Self::Flex => format!("flex (burn-flex, {})", cpu_threads()),
            Self::NdArray => format!("ndarray (burn-ndarray, {})", cpu_threads()),
            Self::Cuda(n) => format!("cuda:{n}"),
            Self::Wgpu => "wgpu".into(),
        }
    }
}

/// Sizes the pool the CPU backends run on (rayon's global pool, which burn-flex, its GEMM and
/// kiln-cpu share) to `threads`, by default the number of physical cores (hyper-threads share a
/// core's FMA units), then runs `command` with that size on one of the pool's threads and
/// returns its result. A command's tensor work then starts each parallel op from inside the
/// pool instead of waking the pool from outside and sleeping until it is done
/// (`kiln_cpu::on_pool` has the reason and the measurement). Call once per process, before any
/// tensor work.
pub fn with_threads<R: Send>(
    threads: Option<usize>,
    command: impl FnOnce(usize) -> R + Send,
) -> Result<R, DeviceError> {
    #[cfg(feature = "flex")]
    {
        let n = kiln_cpu::init_threads(threads).map_err(|e| DeviceError::Threads(e.to_string()))?;
        Ok(kiln_cpu::on_pool(|| command(n)))
    }
    // Without kiln-cpu (a GPU-only build) there is no CPU pool for --threads to size.
    #[cfg(not(feature = "flex"))]
    match threads {
        Some(_) => {
            Err(DeviceError::Threads("--threads sizes the CPU backend's pool: build with the `flex` feature".into()))
        }
        None => Ok(command(std::thread::available_parallelism().map_or(1, usize::from))),
    }
}

/// The size of the CPU backends' pool, in words.
fn cpu_threads() -> String {
    #[cfg(feature = "flex")]
    let n = kiln_cpu::threads();
    #[cfg(not(feature = "flex"))]
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    if n == 1 { "1 thread".into() } else { format!("{n} threads") }
}

/// Runs `job` on the backend and device that `device` names.
pub fn run_on<J: Job>(device: &str, job: J) -> Result<J::Output, DeviceError> {
    let spec = DeviceSpec::parse(device)?;
    let info = DeviceInfo { spec, description: spec.describe(), backend: spec.backend() };
    #[allow(unused_variables)] // every arm uses it only when its backend is not compiled in
    let missing = |feature: &'static str| DeviceError::NotCompiled {
        given: device.into(),
        feature,
        compiled: compiled().join(", "),
    };
    match spec {
        DeviceSpec::Cpu => {
            #[cfg(feature = "flex")]
            return Ok(run_on_cpu(job, &info));
            #[cfg(not(feature = "flex"))]
            Err(missing("flex"))
        }
        DeviceSpec::Flex => {
            #[cfg(feature = "flex")]
            return Ok(job.run::<Autodiff<burn::backend::Flex>>(Default::default(), &info));
            #[cfg(not(feature = "flex"))]
            Err(missing("flex"))
        }
        DeviceSpec::NdArray => {
            #[cfg(feature = "ndarray")]
            return Ok(job.run::<Autodiff<burn::backend::NdArray>>(Default::default(), &info));
            #[cfg(not(feature = "ndarray"))]
            Err(missing("ndarray"))
        }
        DeviceSpec::Cuda(_index) => {
            #[cfg(feature = "cuda")]
            return Ok(job.run::<Autodiff<burn::backend::Cuda>>(burn::backend::cuda::CudaDevice::new(_index), &info));
            #[cfg(not(feature = "cuda"))]
            Err(missing("cuda"))
        }
        DeviceSpec::Wgpu => {
            #[cfg(feature = "wgpu")]
            return Ok(job.run::<Autodiff<burn::backend::Wgpu>>(Default::default(), &info));
            #[cfg(not(feature = "wgpu"))]
            Err(missing("wgpu"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!(DeviceSpec::parse("cpu").unwrap(), DeviceSpec::Cpu);
        assert_eq!(DeviceSpec::parse("flex").unwrap(), DeviceSpec::Flex);
        assert_eq!(DeviceSpec::parse("CUDA:3").unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        let err = DeviceSpec::parse("tpu").unwrap_err().to_string();
        assert!(err.starts_with("unknown --device \"tpu\"") && err.contains("this binary has"), "{err}");
        let err = DeviceSpec::parse("cuda:0,cuda:1").unwrap_err().to_string();
        assert!(err.contains("runs on one device") && err.contains("`kiln train` takes a list"), "{err}");
        assert!(DeviceSpec::parse("cuda:x").is_err());
    }
}
