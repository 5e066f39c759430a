//! `cargo xtask experiment` and `cargo xtask report`: from an experiment file to a results table.
//!
//! `experiment NAME|FILE` trains with the `kiln` binary (release, the default CPU backend unless
//! `--features`), scores the result with `kiln eval` (kiln's own feature network for the data,
//! against the real-data floor), and records how: `runs/<name>/<UTC time>-<git rev>/` holds the
//! run (resolved config, metrics, grids, checkpoints) plus `xtask-run.json` with the machine, the
//! backend, the git revision and the wall times. `report` gathers the newest such run of every
//! experiment into the Markdown table between the README's `results` markers, with a thumbnail of
//! each run's sample grid copied to `experiments/results/<name>.png`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::bench::{git_revision, machine, utc_now};
use crate::{root, run};

const README_START: &str = "<!-- results:start (written by `cargo xtask report`) -->";
const README_END: &str = "<!-- results:end -->";

struct Options {
    file: PathBuf,
    steps: Option<usize>,
    eval_n: Option<usize>,
    features: Option<String>,
    no_eval: bool,
    quick: bool,
}

fn parse(args: &[&str]) -> Result<Options> {
    let mut o =
        Options { file: PathBuf::new(), steps: None, eval_n: None, features: None, no_eval: false, quick: false };
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        let mut value = |flag: &str| it.next().copied().with_context(|| format!("experiment: {flag} needs a value"));
        match arg {
            "--steps" => o.steps = Some(value("--steps")?.parse().context("--steps")?),
            "--quick" => o.quick = true,
            "--eval-n" => o.eval_n = Some(value("--eval-n")?.parse().context("--eval-n")?),
            "--features" => o.features = Some(value("--features")?.to_string()),
            "--no-eval" => o.no_eval = true,
            flag if flag.starts_with("--") => bail!("experiment: unknown option {flag}"),
            name => {
                ensure!(o.file.as_os_str().is_empty(), "experiment: one experiment at a time (got {name} too)");
                o.file = resolve(name)?;
            }
        }
    }
    ensure!(!o.file.as_os_str().is_empty(), "usage: cargo xtask experiment <name|file> [--quick] [--steps N] …");
    if o.quick && o.steps.is_none() {
        o.steps = Some((train_steps(&o.file)? / QUICK_FRACTION).max(1));
    }
    Ok(o)
}

/// `--quick` trains for this fraction of the experiment's steps: a run of minutes on two CPU cores
/// whose numbers show the trend, not the result.
const QUICK_FRACTION: usize = 5;

/// The experiment's `steps = N` under `[train]`.
fn train_steps(file: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut in_train = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_train = line == "[train]";
        } else if in_train && let Some(v) = line.strip_prefix("steps").and_then(|r| r.trim().strip_prefix('=')) {
            return v
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .parse()
                .with_context(|| format!("{}: steps", file.display()));
        }
    }
    bail!("{}: no `steps = N` under [train]", file.display())
}

/// Whether the run in `out` trained a generator (so `kiln eval` scores it): its family, from
/// `run.json`, as the `kiln` binary's registry describes it (`kiln families --json`).
fn generates_images(cargo: &[&str], out: &Path) -> Result<bool> {
    let run_json = out.join("run.json");
    let run: Value = serde_json::from_str(
        &std::fs::read_to_string(&run_json).with_context(|| format!("reading {}", run_json.display()))?,
    )
    .with_context(|| format!("{}: not JSON", run_json.display()))?;
    let family = run["family"].as_str().with_context(|| format!("{}: no \"family\"", run_json.display()))?;
    let mut args = cargo.to_vec();
    args.extend(["--", "families", "--json"]);
    let listing = std::process::Command::new("cargo").args(&args).output().context("running kiln families")?;
    ensure!(listing.status.success(), "kiln families failed: {}", String::from_utf8_lossy(&listing.stderr));
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let f: Value = serde_json::from_str(line).with_context(|| format!("kiln families printed {line:?}"))?;
        if f["name"] == family {
            return Ok(f["generator"].as_bool().unwrap_or(false));
        }
    }
    bail!("kiln families does not list the run's family {family:?}")
}

/// `vae-mnist` → `experiments/vae-mnist.toml`; a path is taken as it is.
fn resolve(name: &str) -> Result<PathBuf> {
    let as_path = PathBuf::from(name);
    if as_path.is_file() {
        return Ok(as_path);
    }
    let named = root().join("experiments").join(format!("{name}.toml"));
    ensure!(named.is_file(), "experiment {name:?}: neither a file nor experiments/{name}.toml");
    Ok(named)
}

/// The experiment's `name = "…"` (the run directory's parent).
fn experiment_name(file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("name").and_then(|r| r.trim().strip_prefix('=')))
        .map(|v| v.trim().trim_matches('"').to_string())
        .with_context(|| format!("{}: no `name = \"…\"` line", file.display()))
}

pub fn run_experiment(args: &[&str]) -> Result<()> {
    let o = parse(args)?;
    let name = experiment_name(&o.file)?;
    let rev = git_revision();
    let stamp = utc_now().replace([':', '-'], "");
    let out = root().join("runs").join(&name).join(format!("{stamp}-{rev}"));
    let (file, out_s) = (o.file.to_string_lossy().to_string(), out.to_string_lossy().to_string());
    let mut cargo = vec!["run", "--release", "-p", "kiln-cli"];
    if let Some(f) = &o.features {
        cargo.extend(["--no-default-features", "--features", f.as_str()]);
    }
    let mut train = cargo.clone();
    train.extend(["--", "train", file.as_str(), "--out", out_s.as_str(), "--quiet"]);
    let steps = o.steps.map(|s| s.to_string());
    if let Some(s) = &steps {
        train.extend(["--steps", s.as_str()]);
    }
    let started = Instant::now();
    run("cargo", &train)?;
    let train_s = started.elapsed().as_secs_f64();

    let generator = generates_images(&cargo, &out)?;
    let mut eval_s = None;
    if generator && !o.no_eval {
        let mut eval = cargo.clone();
        eval.extend(["--", "eval", "--checkpoint", out_s.as_str()]);
        let n = o.eval_n.map(|n| n.to_string());
        if let Some(n) = &n {
            eval.extend(["--n", n.as_str()]);
        }
        let t = Instant::now();
        run("cargo", &eval)?;
        eval_s = Some(t.elapsed().as_secs_f64());
    }
    let record = json!({
        "experiment": name,
        "file": o.file.strip_prefix(root()).unwrap_or(&o.file).display().to_string(),
        "started_utc": stamp,
        "git_revision": rev,
        "machine": machine(),
        "backend": o.features.as_deref().unwrap_or("flex"),
        "steps_override": o.steps,
        "quick": o.quick,
        "train_wall_s": train_s,
        "eval_wall_s": eval_s,
    });
    let path = out.join("xtask-run.json");
    std::fs::write(&path, serde_json::to_string_pretty(&record)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("experiment {name}: {}", out.display());
    Ok(())
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The newest run of each experiment that `cargo xtask experiment` completed, by name.
fn latest_runs() -> Result<Vec<(String, PathBuf)>> {
    let runs = root().join("runs");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&runs) else { return Ok(out) };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    names.sort();
    for dir in names {
        let mut stamped: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("xtask-run.json").is_file() && p.join("summary.json").is_file())
            .collect();
        stamped.sort(); // UTC stamps sort by time
        if let Some(latest) = stamped.pop() {
            let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            out.push((name, latest));
        }
    }
    Ok(out)
}

/// The results table's header.
const TABLE_HEAD: &str = "| experiment | model | data | steps | wall time | img/s | held-out split | FID (floor) | KID (floor) | IS (floor) | precision / recall (floor) | samples |\n\
     |---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|\n";

/// Cells in a row of [`TABLE_HEAD`].
const TABLE_CELLS: usize = 12;

/// A table row or a note, with the experiment it belongs to.
type Named = (String, String);

/// The rows (`| name | … |`) and notes (`- name: …`) of a previous results section for the
/// experiments not in `fresh`, by name. A row from before the held-out column gets "–" there.
fn carried_over(section: &str, fresh: &[String]) -> (Vec<Named>, Vec<Named>) {
    let (mut rows, mut notes) = (Vec::new(), Vec::new());
    for line in section.lines() {
        if let Some(rest) = line.strip_prefix("| ") {
            let cells: Vec<&str> = rest.trim_end_matches('|').split(" | ").map(str::trim).collect();
            let name = cells[0].to_string();
            if name == "experiment" || name.starts_with("---") || fresh.contains(&name) {
                continue;
            }
            let mut cells: Vec<String> = cells.into_iter().map(String::from).collect();
            if cells.len() == TABLE_CELLS - 1 {
                cells.insert(6, "–".into());
            }
            rows.push((name, format!("| {} |\n", cells.join(" | "))));
        } else if let Some(rest) = line.strip_prefix("- ")
            && let Some((name, _)) = rest.split_once(": ")
            && !fresh.iter().any(|f| f == name)
            && !name.contains(' ')
        {
            notes.push((name.to_string(), rest.to_string()));
        }
    }
    (rows, notes)
}

/// The headline figures a family's run wrote to `eval.json` on its held-out split, the ones each
/// issue asks a README row for: the NLL bound of the VAE and DRAW, the VQ-VAE's reconstruction
/// NMSE, PSNR and code perplexity, the denoising loss of a diffusion model, DALL·E's image-token
/// cross-entropy and how often its samples show the class their caption names; a classifier's
/// accuracy. Keys a family does not write are skipped.
fn held_out_figures(eval: &Value) -> String {
    let mut parts = Vec::new();
    let mut add = |key: &str, show: &dyn Fn(f64) -> String| {
        if let Some(v) = eval[key].as_f64() {
            parts.push(show(v));
        }
    };
    add("neg_elbo_nats", &|v| format!("NLL ≤ {v:.1} nats"));
    add("nmse", &|v| format!("NMSE {v:.4}"));
    add("psnr", &|v| format!("PSNR {v:.1} dB"));
    add("perplexity", &|v| format!("perplexity {v:.1}"));
    add("loss", &|v| format!("loss {v:.4}"));
    add("image_ce", &|v| format!("image CE {v:.2} nats"));
    add("class_accuracy", &|v| format!("class acc. {:.0} %", 100.0 * v));
    add("accuracy", &|v| format!("accuracy {:.1} %", 100.0 * v));
    let guided = &eval["class_accuracy_guided"];
    if let (Some(s), Some(v)) = (guided["guidance"].as_f64(), guided["accuracy"].as_f64()) {
        parts.push(format!("{:.0} % at guidance {s}", 100.0 * v));
    }
    if parts.is_empty() {
        return "–".into();
    }
    let split = eval["split"].as_str().unwrap_or("test");
    format!("{split}: {}", parts.join(", "))
}

fn fmt(v: &Value, digits: usize) -> String {
    v.as_f64().map_or_else(|| "–".into(), |x| format!("{x:.digits$}"))
}

pub fn report(args: &[&str]) -> Result<()> {
    ensure!(args.is_empty(), "report: takes no arguments");
    let runs = latest_runs()?;
    ensure!(!runs.is_empty(), "report: no completed `cargo xtask experiment` runs under runs/");
    let thumbs = root().join("experiments").join("results");
    std::fs::create_dir_all(&thumbs).context("creating experiments/results")?;
    let mut rows: Vec<Named> = Vec::new();
    let mut notes: Vec<Named> = Vec::new();
    for (name, dir) in &runs {
        let summary = read_json(&dir.join("summary.json")).unwrap_or_default();
        let record = read_json(&dir.join("xtask-run.json")).unwrap_or_default();
        let config = std::fs::read_to_string(dir.join("experiment.toml")).unwrap_or_default();
        let field = |key: &str| {
            config
                .lines()
                .find_map(|l| l.trim().strip_prefix(key).and_then(|r| r.trim().strip_prefix('=')))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_else(|| "–".into())
        };
        let eval = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("eval-")))
            .and_then(|p| read_json(&p));
        let pair = |key: &str, digits: usize| match &eval {
            Some(e) => format!("{} ({})", fmt(&e["model"][key], digits), fmt(&e["real_floor"][key], digits)),
            None => "–".into(),
        };
        let pr = match &eval {
            Some(e) => format!(
                "{} / {} ({} / {})",
                fmt(&e["model"]["precision"], 2),
                fmt(&e["model"]["recall"], 2),
                fmt(&e["real_floor"]["precision"], 2),
                fmt(&e["real_floor"]["recall"], 2)
            ),
            None => "–".into(),
        };
        let held_out = read_json(&dir.join("eval.json")).map_or_else(|| "–".into(), |e| held_out_figures(&e));
        let grid =
            ["samples-ema.png", "samples.png", "reconstructions.png"].iter().map(|g| dir.join(g)).find(|p| p.is_file());
        let thumb = match grid {
            Some(g) => {
                std::fs::copy(&g, thumbs.join(format!("{name}.png"))).context("copying a grid")?;
                format!("![{name}](experiments/results/{name}.png)")
            }
            None => "–".into(),
        };
        let family = field("family");
        let model = match field("preset").as_str() {
            "–" => family.clone(),
            preset => format!("{family} {preset}"),
        };
        rows.push((
            name.clone(),
            format!(
                "| {name} | {model} | {} | {} | {:.0} s | {} | {held_out} | {} | {} | {} | {pr} | {thumb} |\n",
                // Runs record an absolute data path; the table names the data set (its folder).
                std::path::Path::new(&field("path"))
                    .file_name()
                    .map_or_else(|| field("path"), |n| n.to_string_lossy().into_owned()),
                fmt(&summary["steps"], 0) + if record["quick"].as_bool() == Some(true) { " (quick)" } else { "" },
                summary["wall_s"].as_f64().unwrap_or(f64::NAN),
                fmt(&summary["examples_per_s"], 0),
                pair("fid", 2),
                pair("kid", 4),
                pair("inception_score", 2),
            ),
        ));
        if let Some(e) = &eval {
            notes.push((
                name.clone(),
                format!(
                    "{name}: {} samples vs {} real images, extractor `{}`",
                    e["model"]["images"],
                    e["reference"]["images"],
                    e["extractor"]["name"].as_str().unwrap_or("?")
                ),
            ));
        }
        let cpu = record["machine"]["cpu"].as_str().unwrap_or("?");
        // The device `kiln train` itself recorded (e.g. "cpu (kiln-cpu over burn-flex)").
        let device = read_json(&dir.join("run.json")).and_then(|r| r["device"].as_str().map(String::from));
        let cores = &record["machine"]["cores"];
        notes.push((
            name.clone(),
            format!(
                "{name}: run {} at git {} on {cpu} ({cores} cores), device {}{}",
                record["started_utc"].as_str().unwrap_or("?"),
                record["git_revision"].as_str().unwrap_or("?"),
                device.as_deref().unwrap_or("?"),
                if record["quick"].as_bool() == Some(true) {
                    ", quick budget (a fifth of the experiment's steps)"
                } else {
                    ""
                }
            ),
        ));
    }
    // runs/ stays on the machine that ran them: an experiment with no run here keeps its row and
    // notes from the table as it stands, so the table gathers runs from several machines.
    let previous = crate::read_readme_section(README_START, README_END)?;
    let (kept_rows, kept_notes) = carried_over(&previous, &runs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    rows.extend(kept_rows);
    notes.extend(kept_notes);
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    notes.sort_by(|a, b| a.0.cmp(&b.0)); // stable: each experiment's notes keep their order
    let table = format!("{TABLE_HEAD}{}", rows.iter().map(|(_, r)| r.as_str()).collect::<String>());
    let notes: Vec<String> = notes.into_iter().map(|(_, n)| n).collect();
    let block = format!(
        "{table}\nHeld-out split: the family's own figures on images it did not train on, from the run's \
         `eval.json` (NLL bound, reconstruction, denoising or token loss). \
         Floor: the same metric between two disjoint halves of the real training images \
         (what a model that drew real images would score with these counts). Scores from different extractors \
         are not comparable. Rows whose runs are not on the machine that last wrote this table are \
         carried over as they were; their notes say where and when they ran.\n\n{}",
        notes.iter().map(|n| format!("- {n}\n")).collect::<String>()
    );
    crate::write_readme_section(README_START, README_END, &block)?;
    eprintln!("report: {} experiments → README.md", runs.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quick_budget_reads_the_train_tables_steps() {
        let dir = std::env::temp_dir().join(format!("xtask-exp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("e.toml");
        std::fs::write(&file, "name = \"demo\"\n[model]\nsteps = 7\n[train]\nbatch_size = 8\nsteps = 1500 # budget\n")
            .unwrap();
        assert_eq!(train_steps(&file).unwrap(), 1500);
        assert_eq!(experiment_name(&file).unwrap(), "demo");
        std::fs::write(&file, "name = \"demo\"\n[train]\nbatch_size = 8\n").unwrap();
        assert!(train_steps(&file).unwrap_err().to_string().contains("no `steps = N` under [train]"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rows_without_a_local_run_are_carried_over() {
        let section = "| experiment | model | data | steps | wall time | img/s | FID (floor) | KID (floor) | IS (floor) | precision / recall (floor) | samples |\n\
            |---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n\
            | sagan-emoji | gan sagan32 | emoji-32 | 2000 | 664 s | 193 | 156.81 (8.09) | 194.1881 (4.9495) | 3.28 (5.67) | 0.92 / 0.60 (0.91 / 0.92) | ![sagan-emoji](experiments/results/sagan-emoji.png) |\n\
            | vae-mnist | vae mnist | mnist-sample | 720 (quick) | 24 s | 1947 | 65.56 (1.05) | 55.7692 (0.1834) | 5.10 (9.03) | 0.80 / 0.69 (0.91 / 0.91) | – |\n\
            \nFloor: the same metric between two disjoint halves: of the real images.\n\n\
            - sagan-emoji: 955 samples vs 955 real images, extractor `emoji32`\n\
            - sagan-emoji: run 20261201T201954Z at git 7712e24-dirty on AMD EPYC (2 cores)\n\
            - vae-mnist: 2250 samples vs 2250 real images, extractor `mnist`\n";
        let (rows, notes) = carried_over(section, &["vae-mnist".to_string()]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "sagan-emoji");
        assert!(
            rows[0].1.starts_with("| sagan-emoji | gan sagan32 | emoji-32 | 2000 | 664 s | 193 | – | 156.81 (8.09) |"),
            "{}",
            rows[0].1
        );
        assert_eq!(rows[0].1.matches(" | ").count(), TABLE_CELLS - 1);
        assert_eq!(notes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["sagan-emoji", "sagan-emoji"]);
        assert!(notes[1].1.starts_with("sagan-emoji: run 20261201T201954Z"));
    }

    #[test]
    fn held_out_figures_name_each_familys_headline() {
        let vq = json!({"split": "test", "nmse": 0.04671, "psnr": 22.04, "perplexity": 49.93, "usage": 0.98});
        assert_eq!(held_out_figures(&vq), "test: NMSE 0.0467, PSNR 22.0 dB, perplexity 49.9");
        let draw = json!({"split": "test", "neg_elbo_nats": 101.234});
        assert_eq!(held_out_figures(&draw), "test: NLL ≤ 101.2 nats");
        let dalle = json!({"split": "train", "image_ce": 1.923, "class_accuracy": 0.755,
            "class_accuracy_guided": {"guidance": 3.0, "accuracy": 0.95}});
        assert_eq!(held_out_figures(&dalle), "train: image CE 1.92 nats, class acc. 76 %, 95 % at guidance 3");
        assert_eq!(held_out_figures(&json!({"split": "test"})), "–");
    }

    #[test]
    fn every_experiment_file_resolves_by_name_and_has_a_budget() {
        for entry in std::fs::read_dir(root().join("experiments")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let stem = path.file_stem().unwrap().to_string_lossy().to_string();
                assert_eq!(resolve(&stem).unwrap(), path);
                assert_eq!(experiment_name(&path).unwrap(), stem, "name = file name in {}", path.display());
                assert!(train_steps(&path).unwrap() >= QUICK_FRACTION);
            }
        }
    }
}
