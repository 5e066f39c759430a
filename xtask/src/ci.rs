//! `cargo xtask ci`: everything CI checks, in the order that fails fastest.

use anyhow::{Result, bail};

use crate::run as sh;

/// The README's test command; `.ci/run` runs it too.
pub const TEST_COMMAND: [&str; 3] = ["test", "--workspace", "--release"];

pub fn run_ci(no_tests: bool) -> Result<()> {
    sh("cargo", &["fmt", "--all", "--", "--check"])?;
    sh("cargo", &["clippy", "--workspace", "--release", "--all-targets", "--", "-D", "warnings"])?;
    if !no_tests {
        sh("cargo", &TEST_COMMAND)?;
    }
    // The backend-agnostic claim, tested: model and kernel tests again on burn-ndarray.
    // One invocation, so burn is built once with this feature set.
    sh(
        "cargo",
        &[
            "test",
            "--release",
            "-p",
            "kiln-vae",
            "-p",
            "kiln-gan",
            "-p",
            "kiln-kernels",
            "--features",
            "kiln-vae/test-ndarray,kiln-gan/test-ndarray,kiln-kernels/test-ndarray",
        ],
    )?;
    // The other backends must compile (no GPU here: checking is enough). One check with all of
    // them builds the shared dependencies once; each backend's code is behind its own cfg.
    sh(
        "cargo",
        &[
            "check",
            "--release",
            "-p",
            "kiln-cli",
            "-p",
            "kiln-bench",
            "--features",
            "kiln-cli/ndarray,kiln-cli/cuda,kiln-cli/wgpu,kiln-bench/ndarray,kiln-bench/cuda,kiln-bench/wgpu",
        ],
    )?;
    Ok(())
}

pub fn run(args: &[&str]) -> Result<()> {
    match args {
        [] => run_ci(false),
        ["--no-tests"] => run_ci(true),
        other => bail!("ci: unknown arguments {other:?} (only --no-tests)"),
    }
}
