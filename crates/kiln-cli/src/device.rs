//! The one place a backend is chosen.
//!
//! `--device` names a device; each backend compiled into this binary (cargo features `flex`,
//! `ndarray`, `cuda`, `wgpu`) can serve some of them. A command is written once as a [`Job`],
//! generic over the backend, and [`run_on`] instantiates it for the backend the device needs.

use anyhow::{Result, bail};
use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;

/// Work that can run on any backend.
pub trait Job {
    /// Runs on backend `B` (always autodiff-capable; inference uses it as a plain backend).
    fn run<B: AutodiffBackend>(self, device: B::Device, device_name: &str) -> Result<()>;
}

/// Backends this binary was built with, as `--device` spells them.
pub fn compiled() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("cpu");
        v.push("flex");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda:N");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    v
}

/// A parsed `--device` value.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Parses `cpu`, `ndarray`, `cuda`, `cuda:N`, `wgpu` or `auto` (the best compiled-in backend:
    /// CUDA when built with it and an NVIDIA device node exists, else wgpu, else the CPU).
    pub fn parse(text: &str) -> Result<Self> {
        if text.contains(',') {
            bail!(
                "--device {text:?}: kiln trains on one device; data-parallel training over several is not \
                 available yet (burn 0.21 offers it only inside burn-train's Learner; see kiln-train's docs)"
            );
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
                _ => bail!(
                    "unknown --device {text:?}: expected cpu, flex, ndarray, cuda:N, wgpu or auto (this binary has: {})",
                    compiled().join(", ")
                ),
            },
        };
        Ok(spec)
    }

    fn name(&self) -> String {
        match self {
            Self::Cpu => format!("cpu (kiln-cpu over burn-flex, {})", cpu_threads()),
            Self::Flex => format!("flex (burn-flex, {})", cpu_threads()),
            Self::NdArray => format!("ndarray (burn-ndarray, {})", cpu_threads()),
            Self::Cuda(n) => format!("cuda:{n}"),
            Self::Wgpu => "wgpu".into(),
        }
    }
}

/// The size of rayon's global pool, which the CPU backends run on (`--threads`).
fn cpu_threads() -> String {
    #[cfg(feature = "flex")]
    let n = kiln_cpu::threads();
    #[cfg(not(feature = "flex"))]
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    if n == 1 { "1 thread".into() } else { format!("{n} threads") }
}

/// Runs `job` on the backend and device that `device` names.
pub fn run_on(device: &str, job: impl Job) -> Result<()> {
    let spec = DeviceSpec::parse(device)?;
    let name = spec.name();
    #[allow(unused_variables)] // every arm uses it only when its backend is not compiled in
    let missing = |feature: &str| {
        anyhow::anyhow!(
            "--device {device}: this kiln was built without the `{feature}` feature (it has: {}); rebuild with `--features {feature}`",
            compiled().join(", ")
        )
    };
    match spec {
        DeviceSpec::Cpu => {
            #[cfg(feature = "flex")]
            return job.run::<Autodiff<kiln_cpu::KilnCpu<burn::backend::Flex>>>(Default::default(), &name);
            #[cfg(not(feature = "flex"))]
            Err(missing("flex"))
        }
        DeviceSpec::Flex => {
            #[cfg(feature = "flex")]
            return job.run::<Autodiff<burn::backend::Flex>>(Default::default(), &name);
            #[cfg(not(feature = "flex"))]
            Err(missing("flex"))
        }
        DeviceSpec::NdArray => {
            #[cfg(feature = "ndarray")]
            return job.run::<Autodiff<burn::backend::NdArray>>(Default::default(), &name);
            #[cfg(not(feature = "ndarray"))]
            Err(missing("ndarray"))
        }
        DeviceSpec::Cuda(_index) => {
            #[cfg(feature = "cuda")]
            return job.run::<Autodiff<burn::backend::Cuda>>(burn::backend::cuda::CudaDevice::new(_index), &name);
            #[cfg(not(feature = "cuda"))]
            Err(missing("cuda"))
        }
        DeviceSpec::Wgpu => {
            #[cfg(feature = "wgpu")]
            return job.run::<Autodiff<burn::backend::Wgpu>>(Default::default(), &name);
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
        assert!(err.contains("kiln trains on one device"), "{err}");
        assert!(DeviceSpec::parse("cuda:x").is_err());
    }
}
