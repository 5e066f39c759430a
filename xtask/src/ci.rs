//! `cargo xtask ci`: everything CI checks, in the order that fails fastest.

use anyhow::{Context, Result, bail, ensure};

use crate::run as sh;

/// The README's test command; `.ci/run` runs it too.
pub const TEST_COMMAND: [&str; 3] = ["test", "--workspace", "--release"];

pub fn run_ci(no_tests: bool) -> Result<()> {
    sh("cargo", &["fmt", "--all", "--", "--check"])?;
    sh("cargo", &["clippy", "--workspace", "--release", "--all-targets", "--", "-D", "warnings"])?;
    if !no_tests {
        sh("cargo", &TEST_COMMAND)?;
    }
    // The backend-agnostic claim, tested: the tests of every crate that declares a
    // `test-ndarray` feature run again on burn-ndarray. One invocation, so burn is built once with
    // this feature set.
    let crates = ndarray_crates()?;
    ensure!(!crates.is_empty(), "no workspace crate declares a `test-ndarray` feature");
    let features = crates.iter().map(|c| format!("{c}/test-ndarray")).collect::<Vec<_>>().join(",");
    let mut args = vec!["test", "--release"];
    for c in &crates {
        args.extend(["-p", c.as_str()]);
    }
    args.extend(["--features", features.as_str()]);
    sh("cargo", &args)?;
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
