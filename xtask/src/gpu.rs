//! `cargo xtask gpu-check`: builds what `xtask/gpu/run.sh` runs on a machine with an NVIDIA GPU.
//!
//! No session has had a GPU, so every CUDA path in kiln is compiled (`cargo xtask ci` checks the
//! `cuda` feature) but has never run. A borrowed GPU machine may have no Rust toolchain and no
//! network, and what travels to it is the working tree plus at most 64 MiB of build outputs; so
//! this builds `kiln` and `kiln-bench` with the `cuda` feature here (in their own target
//! directory, so the everyday CPU build is not rebuilt), without debug info and stripped, packs
//! them into `target/gpu-check/bin.tar.xz` and checks the size. The runner is one command there:
//! `bash xtask/gpu/run.sh` (what it runs is written at its top).

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::{root, run};

/// What the device machine accepts as carried build outputs.
const CARRY_LIMIT: u64 = 64 << 20;

pub fn run_gpu_check(args: &[&str]) -> Result<()> {
    ensure!(
        args.is_empty(),
        "gpu-check takes no arguments (the runner's settings are environment variables: see xtask/gpu/run.sh)"
    );
    let target = root().join("target/gpu-build");
    let target_s = target.to_string_lossy().into_owned();
    // Debug info and symbols are most of a release binary's size (kiln: 207 MB → 24 MB).
    let status = std::process::Command::new("cargo")
        .args(["build", "--release", "-p", "kiln-cli", "-p", "kiln-bench"])
        .args(["--features", "kiln-cli/cuda,kiln-bench/cuda", "--target-dir", &target_s])
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .current_dir(root())
        .status()
        .context("could not start cargo")?;
    if !status.success() {
        bail!("building kiln and kiln-bench with the cuda feature failed ({status})");
    }
    let out = root().join("target/gpu-check");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let release = target.join("release");
    for bin in ["kiln", "kiln-bench"] {
        ensure!(release.join(bin).is_file(), "{}: not built", release.join(bin).display());
    }
    let archive = out.join("bin.tar.xz");
    let tmp = out.join("bin.tar.xz.tmp");
    let (release_s, tmp_s) = (release.to_string_lossy().into_owned(), tmp.to_string_lossy().into_owned());
    run("tar", &["-cJf", &tmp_s, "-C", &release_s, "kiln", "kiln-bench"])?;
    std::fs::rename(&tmp, &archive).with_context(|| format!("writing {}", archive.display()))?;
    let size = file_len(&archive)?;
    ensure!(
        size <= CARRY_LIMIT,
        "{}: {:.1} MiB, over the {} MiB a device machine takes",
        archive.display(),
        size as f64 / (1 << 20) as f64,
        CARRY_LIMIT >> 20
    );
    eprintln!(
        "gpu-check: {} ({:.1} MiB). On a machine with an NVIDIA GPU, from the repository root with \
         target/gpu-check carried: bash xtask/gpu/run.sh",
        archive.display(),
        size as f64 / (1 << 20) as f64
    );
    Ok(())
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len())
}
