//! `cargo xtask ci`: everything CI checks, in the order that fails fastest.

use anyhow::{Context, Result, bail, ensure};

use crate::run as sh;

/// The README's test command; `.ci/run` runs it too.
pub const TEST_COMMAND: [&str; 3] = ["test", "--workspace", "--release"];

/// What `cargo xtask ci` runs; `.ci/run` asks for the CI machine's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Skip the README's test command (`.ci/run` has just run it).
    pub no_tests: bool,
    /// On burn-ndarray, run only the crates in [`CI_NDARRAY`] instead of every crate that declares
    /// `test-ndarray`: the full pass rebuilds burn and six test binaries for ndarray, 700 s of a
    /// 49-minute clean-clone run on two cores (AMD EPYC), and its tests took 680 s more. The model
    /// code is still compiled for ndarray, CUDA and wgpu by the backend check at the end.
    pub ci_budget: bool,
}

/// The crates whose tests `--ci-budget` runs on burn-ndarray: the kernels, where backends differ.
pub const CI_NDARRAY: &[&str] = &["kiln-kernels"];

pub fn run_ci(options: Options) -> Result<()> {
    let Options { no_tests, ci_budget } = options;
    sh("cargo", &["fmt", "--all", "--", "--check"])?;
    sh("cargo", &["clippy", "--workspace", "--release", "--all-targets", "--", "-D", "warnings"])?;
    if !no_tests {
        sh("cargo", &TEST_COMMAND)?;
    }
    // The backend-agnostic claim, tested: the tests of every crate that declares a
    // `test-ndarray` feature run again on burn-ndarray. One invocation, so burn is built once with
    // this feature set.
    let mut crates = ndarray_crates()?;
    ensure!(!crates.is_empty(), "no workspace crate declares a `test-ndarray` feature");
    if ci_budget {
        for c in CI_NDARRAY {
            ensure!(crates.iter().any(|k| k == c), "{c} declares no `test-ndarray` feature");
        }
        crates.retain(|c| CI_NDARRAY.contains(&c.as_str()));
    }
    let features = crates.iter().map(|c| format!("{c}/test-ndarray")).collect::<Vec<_>>().join(",");
    let mut args = vec!["test", "--release"];
    for c in &crates {
        args.extend(["-p", c.as_str()]);
    }
    args.extend(["--features", features.as_str()]);
    sh("cargo", &args)?;
    // The other backends must compile (no GPU here: checking is enough). One check with all of
    // them builds the shared dependencies once; each backend's code is behind its own cfg.
    // With an MPI on the machine (`.ci/run` installs one), the data-parallel code is checked in
    // the same build, so `--features cuda,mpi` — several GPUs, one rank each — compiles too.
    let mut features =
        "kiln-cli/ndarray,kiln-cli/cuda,kiln-cli/wgpu,kiln-bench/ndarray,kiln-bench/cuda,kiln-bench/wgpu".to_string();
    if mpi_available() {
        features += ",kiln-cli/mpi,kiln-bench/mpi";
    } else {
        eprintln!("ci: no mpicc here: the `mpi` feature is not compile-checked with cuda");
    }
    sh("cargo", &["check", "--release", "-p", "kiln-cli", "-p", "kiln-bench", "--features", &features])?;
    Ok(())
}

pub fn run(args: &[&str]) -> Result<()> {
    let mut options = Options { no_tests: false, ci_budget: false };
    for arg in args {
        match *arg {
            "--no-tests" => options.no_tests = true,
            "--ci-budget" => options.ci_budget = true,
            other => bail!("ci: unknown argument {other:?} (--no-tests, --ci-budget)"),
        }
    }
    run_ci(options)
}

/// Whether the system's MPI can be built against (its compiler wrapper is on `PATH`).
fn mpi_available() -> bool {
    std::process::Command::new("mpicc").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The workspace crates with a `test-ndarray` feature, from `cargo metadata`.
fn ndarray_crates() -> Result<Vec<String>> {
    let out = std::process::Command::new("cargo")
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    ensure!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")?;
    let mut crates: Vec<String> = meta["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter(|p| p["features"].get("test-ndarray").is_some())
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    crates.sort();
    Ok(crates)
}
