//! `cargo xtask features [mnist|emoji32]`: trains kiln's own feature networks on the bundled data
//! with their experiment files, and copies the weights into `crates/kiln-features/weights/<name>/`
//! with a `provenance.json` (accuracy, seed, steps, git revision, wall time).
//!
//! The run is seeded and burn-flex is deterministic run to run on one machine, so the same machine
//! rebuilds the same bytes; another CPU may differ in the last bits of the floats.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::{root, run};

/// Extractors and their experiment files.
const NETS: &[(&str, &str)] =
    &[("mnist", "experiments/features-mnist.toml"), ("emoji32", "experiments/features-emoji32.toml")];

pub fn run_features(args: &[&str]) -> Result<()> {
    let wanted: Vec<&str> = if args.is_empty() { NETS.iter().map(|(n, _)| *n).collect() } else { args.to_vec() };
    for name in wanted {
        let Some((_, experiment)) = NETS.iter().find(|(n, _)| *n == name) else {
            bail!("features: unknown network {name:?} (known: mnist, emoji32)")
        };
        build(name, experiment)?;
    }
    Ok(())
}

fn build(name: &str, experiment: &str) -> Result<()> {
    let out = root().join("target").join("features").join(name);
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let out_arg = out.to_string_lossy().to_string();
    run("cargo", &["run", "--release", "-p", "kiln-cli", "--", "train", experiment, "--out", &out_arg, "--quiet"])?;

    let dest = root().join("crates/kiln-features/weights").join(name);
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    for file in ["features.json", "features.safetensors"] {
        std::fs::copy(out.join(file), dest.join(file))
            .with_context(|| format!("copying {file} from {}", out.display()))?;
    }
    let read = |file: &str| -> Result<serde_json::Value> {
        let path = out.join(file);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    };
    let (eval, summary, info) = (read("eval.json")?, read("summary.json")?, read("run.json")?);
    let provenance = serde_json::json!({
        "experiment": experiment,
        "seed": info["seed"],
        "git_revision": info["git_revision"],
        "steps": summary["steps"],
        "wall_s": summary["wall_s"],
        "accuracy": eval["accuracy"],
        "accuracy_split": eval["split"],
        "train_accuracy": eval["train_accuracy"],
        "rebuild": format!("cargo xtask features {name}"),
    });
    let text = serde_json::to_string_pretty(&provenance)? + "\n";
    std::fs::write(dest.join("provenance.json"), text).context("writing provenance.json")?;
    eprintln!(
        "features {name}: {} accuracy {:.4} → {}",
        eval["split"].as_str().unwrap_or("?"),
        eval["accuracy"].as_f64().unwrap_or(f64::NAN),
        relative(&dest)
    );
    Ok(())
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}
