//! `cargo xtask quality [--compare]`: kiln's MNIST generators at their default budgets, scored
//! by `kiln eval`, beside PyTorch peers trained for the same wall-clock (issue 19).
//!
//! ```text
//! cargo xtask quality [--compare] [--seeds 42,43,44] [--only vae-mnist,dcgan-mnist,cgan-mnist,draw-mnist]
//!                     [--n 2250] [--steps N] [--threads 2] [--python PATH] [--readme]
//! ```
//! For every seed and experiment, in turn: kiln trains the experiment (its own budget, or
//! `--steps`) with that seed; with `--compare` the peer of `xtask/quality/peers.py` then trains for
//! the seconds kiln's run took, on the same data and threads. Each side writes `--n` samples as
//! `.npy`, and one `kiln eval --samples` scores both against the same real half with kiln's MNIST
//! extractor, so the figures differ only by the models. kiln and its peer run back to back, so a
//! drift in the machine's speed reaches both alike; nothing else should run meanwhile.
//!
//! Everything lands in `target/quality/<UTC time>-<git rev>/`: the runs, the samples, each score's
//! JSON, `results.jsonl` and `report.md` (kiln vs peer per seed, the FID ratio, the median over
//! seeds). `--readme` puts the report between the README's `quality` markers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::bench::{ensure_venv, git_revision, machine, spread, utc_now};
use crate::{root, run};

const README_START: &str = "<!-- quality:start (written by `cargo xtask quality --compare --readme`) -->";
const README_END: &str = "<!-- quality:end -->";

/// The experiments with a PyTorch peer in `xtask/quality/peers.py`, and whether each is
/// class-conditional (its samples cycle through the ten classes, and class accuracy is scored).
const PEERS: &[(&str, bool)] =
    &[("vae-mnist", false), ("dcgan-mnist", false), ("cgan-mnist", true), ("draw-mnist", false)];

/// The issue's bar: kiln's FID at most this fraction of its peer's.
const FID_RATIO_GOAL: f64 = 0.7;

#[derive(Debug)]
struct Options {
    compare: bool,
    seeds: Vec<u64>,
    only: Vec<String>,
    n: usize,
    steps: Option<usize>,
    threads: usize,
    python: Option<PathBuf>,
    readme: bool,
    rescore: Option<PathBuf>,
}

fn parse(args: &[&str]) -> Result<Options> {
    let mut o = Options {
        compare: false,
        seeds: vec![42, 43, 44],
        only: PEERS.iter().map(|(n, _)| n.to_string()).collect(),
        n: 2250,
        steps: None,
        threads: 2,
        python: None,
        readme: false,
        rescore: None,
    };
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        let mut value = |flag: &str| it.next().copied().with_context(|| format!("quality: {flag} needs a value"));
        match arg {
            "--compare" => o.compare = true,
            "--readme" => o.readme = true,
            "--seeds" => {
                let v = value("--seeds")?;
                o.seeds = v.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>().with_context(|| {
                    format!("quality: --seeds {v}: a comma-separated list of integers, e.g. 42,43,44")
                })?;
            }
            "--only" => {
                let v = value("--only")?;
                o.only = v.split(',').map(|s| s.trim().to_string()).collect();
                for name in &o.only {
                    ensure!(
                        PEERS.iter().any(|(p, _)| p == name),
                        "quality: --only {name}: no PyTorch peer for it (have: {})",
                        PEERS.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
                    );
                }
            }
            "--n" => o.n = value("--n")?.parse().context("quality: --n takes a count")?,
            "--steps" => o.steps = Some(value("--steps")?.parse().context("quality: --steps takes a count")?),
            "--threads" => o.threads = value("--threads")?.parse().context("quality: --threads takes a count")?,
            "--python" => o.python = Some(PathBuf::from(value("--python")?)),
            "--rescore" => o.rescore = Some(PathBuf::from(value("--rescore")?)),
            other => bail!("quality: unknown option {other}"),
        }
    }
    ensure!(!o.seeds.is_empty(), "quality: --seeds names no seed");
    ensure!(o.n >= 20, "quality: --n {}: kiln eval needs at least 20 samples", o.n);
    ensure!(
        !o.readme || o.compare || o.rescore.is_some(),
        "quality: --readme writes the kiln-vs-peer table; it needs --compare (or --rescore DIR)"
    );
    Ok(o)
}

pub fn run_quality(args: &[&str]) -> Result<()> {
    let o = parse(args)?;
    if let Some(dir) = &o.rescore {
        return rescore(&o, dir);
    }
    let python = if o.compare { Some(ensure_venv(o.python.as_deref())?) } else { None };
    run("cargo", &["build", "--release", "--quiet", "-p", "kiln-cli"])?;
    let stamp = format!("{}-{}", utc_now().replace([':', '-'], ""), git_revision());
    let out = root().join("target/quality").join(&stamp);
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    // One binary for the whole comparison, whatever is rebuilt meanwhile.
    let kiln = out.join("kiln");
    std::fs::copy(root().join("target/release/kiln"), &kiln).context("copying target/release/kiln")?;
    let header = json!({
        "started": utc_now(), "git": git_revision(), "machine": machine(), "threads": o.threads,
        "n": o.n, "steps": o.steps, "seeds": o.seeds,
    });
    std::fs::write(out.join("machine.json"), serde_json::to_string_pretty(&header)?)?;
    let mut records = Vec::new();
    for &seed in &o.seeds {
        for name in &o.only {
            let conditional = PEERS.iter().any(|(p, c)| p == name && *c);
            let dir = out.join(name).join(format!("seed-{seed}"));
            let kiln_record = kiln_side(&o, &kiln, name, seed, conditional, &dir)?;
            append(&out, &kiln_record)?;
            records.push(kiln_record.clone());
            if let Some(python) = &python {
                let seconds = kiln_record["train_s"].as_f64().context("kiln's run has no wall time")?;
                let peer = peer_side(&o, &kiln, python, name, seed, seconds, conditional, &dir)?;
                append(&out, &peer)?;
                records.push(peer);
            }
        }
    }
    publish(&records, &header, o.compare, o.readme, &out)?;
    eprintln!("quality: everything is in {}", out.display());
    Ok(())
}

/// Writes `report.md` into `out`, prints it, and with `readme` puts it between the README's
/// `quality` markers.
fn publish(records: &[Value], header: &Value, compare: bool, readme: bool, out: &Path) -> Result<()> {
    let report = render(records, header, compare);
    std::fs::write(out.join("report.md"), &report)?;
    println!("{report}");
    if readme {
        let previous = crate::read_readme_section(README_START, README_END)?;
        let fresh: Vec<&str> = records.iter().filter_map(|r| r["experiment"].as_str()).collect();
        let section = with_carried_rows(&report, &previous, &fresh);
        crate::write_readme_section(README_START, README_END, section.trim_end())?;
        eprintln!("quality: table written to README.md");
    }
    Ok(())
}

/// The first cell of a Markdown table row, and how many cells it has.
fn table_row(line: &str) -> Option<(&str, usize)> {
    let rest = line.strip_prefix("| ")?.strip_suffix(" |")?;
    let first = rest.split(" | ").next()?;
    (first != "experiment").then_some((first, rest.split(" | ").count()))
}

/// The README's section: this run's `report`, plus the rows of the experiments it did not run
/// (`--only`) carried over from the `previous` section with the lines that say where they came
/// from — so refreshing one experiment keeps the others' comparison instead of dropping it.
fn with_carried_rows(report: &str, previous: &str, fresh: &[&str]) -> String {
    let carried = |cells: usize| -> Vec<&str> {
        previous
            .lines()
            .filter(|l| table_row(l).is_some_and(|(name, n)| n == cells && !fresh.contains(&name)))
            .collect()
    };
    let (per_seed, summary) = (carried(13), carried(5));
    if per_seed.is_empty() && summary.is_empty() {
        return report.to_string();
    }
    let mut names: Vec<&str> = per_seed.iter().chain(&summary).filter_map(|l| Some(table_row(l)?.0)).collect();
    names.sort_unstable();
    names.dedup();
    let mut lines: Vec<String> = Vec::new();
    let report_lines: Vec<&str> = report.lines().collect();
    for (i, line) in report_lines.iter().enumerate() {
        lines.push(line.to_string());
        // After the last row of each table, that table's carried rows.
        let next_cells = report_lines.get(i + 1).and_then(|l| table_row(l)).map(|(_, n)| n);
        if let Some((_, n)) = table_row(line).filter(|_| next_cells.is_none()) {
            let rows = if n == 13 { &per_seed } else { &summary };
            lines.extend(rows.iter().map(|r| r.to_string()));
        }
    }
    // Where the carried rows come from: the previous section's header for the rows that run
    // measured, and its own "Rows of …" lines for the rows it had carried in turn — one line per
    // source, so every row keeps the run it came from.
    const CARRIED: &str = ": carried over from an earlier comparison — ";
    let mut sources: Vec<(Vec<&str>, &str)> = Vec::new();
    let mut listed: Vec<&str> = Vec::new();
    for line in previous.lines() {
        if let Some((rows, from)) = line.strip_prefix("Rows of ").and_then(|r| r.split_once(CARRIED)) {
            let rows: Vec<&str> = rows.split(", ").collect();
            listed.extend(&rows);
            sources.push((rows.into_iter().filter(|r| names.contains(r)).collect(), from));
        }
    }
    if let Some(header) = previous.lines().find(|l| l.starts_with("kiln against PyTorch peers")) {
        sources.insert(0, (names.iter().copied().filter(|n| !listed.contains(n)).collect(), header));
    }
    lines.push(String::new());
    for (rows, from) in sources.iter().filter(|(rows, _)| !rows.is_empty()) {
        lines.push(format!("Rows of {}{CARRIED}{from}", rows.join(", ")));
    }
    lines.join("\n") + "\n"
}

/// Scores the sample sets of an earlier comparison in `out` again (those of `--only`'s
/// experiments, all by default) with that comparison's own `kiln` binary — with the label files
/// now beside them — and rewrites its `results.jsonl` and `report.md` (and, with `--readme`, the
/// README's table). Nothing is trained or drawn again.
fn rescore(o: &Options, out: &Path) -> Result<()> {
    let kiln = out.join("kiln");
    ensure!(kiln.exists(), "quality --rescore {}: no kiln binary there; not a quality comparison", out.display());
    let header = read_json(&out.join("machine.json"))?;
    let results = out.join("results.jsonl");
    let text = std::fs::read_to_string(&results).with_context(|| format!("{}: cannot read", results.display()))?;
    let mut records = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut record: Value = serde_json::from_str(line).with_context(|| format!("{}: {line}", results.display()))?;
        if !o.only.iter().any(|name| record["experiment"] == name.as_str()) {
            records.push(record); // not asked for (--only): kept as scored
            continue;
        }
        let samples = PathBuf::from(record["samples"].as_str().context("a record without its samples")?);
        let stem = samples.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let labels = samples.with_file_name(format!("{stem}.labels.npy"));
        record["score"] = score(o, &kiln, &samples, labels.exists().then_some(labels.as_path()))?;
        records.push(record);
    }
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    let tmp = results.with_extension("jsonl.tmp");
    std::fs::write(&tmp, lines)?;
    std::fs::rename(&tmp, &results)?;
    let compare = records.iter().any(|r| r["impl"] != "kiln");
    publish(&records, &header, compare, o.readme, out)
}

/// kiln's side: train, draw `n` samples, score them.
fn kiln_side(o: &Options, kiln: &Path, name: &str, seed: u64, conditional: bool, dir: &Path) -> Result<Value> {
    let run_dir = dir.join("kiln");
    let exp = root().join("experiments").join(format!("{name}.toml"));
    let (seed_s, threads) = (seed.to_string(), o.threads.to_string());
    let mut train = vec!["--threads", &threads, "train", path(&exp), "--seed", &seed_s, "--out", path(&run_dir)];
    train.push("--quiet");
    let steps = o.steps.map(|s| s.to_string());
    if let Some(steps) = &steps {
        train.extend(["--steps", steps]);
    }
    exec(kiln, &train)?;
    let summary = read_json(&run_dir.join("summary.json"))?;
    let samples = dir.join("kiln-samples.npy");
    let n = o.n.to_string();
    exec(kiln, &["--threads", &threads, "sample", "--checkpoint", path(&run_dir), "--n", &n, "--out", path(&samples)])?;
    // `kiln sample` writes a conditional model's classes beside its samples.
    let labels = conditional.then(|| dir.join("kiln-samples.labels.npy"));
    let score = score(o, kiln, &samples, labels.as_deref())?;
    Ok(json!({
        "impl": "kiln", "experiment": name, "seed": seed, "steps": summary["steps"],
        "train_s": summary["wall_s"], "img_per_s": summary["examples_per_s"],
        "run": run_dir.display().to_string(), "samples": samples.display().to_string(), "score": score,
    }))
}

/// The peer's side: train for kiln's seconds, write `n` samples (and their classes), score them.
#[allow(clippy::too_many_arguments)]
fn peer_side(
    o: &Options,
    kiln: &Path,
    python: &Path,
    name: &str,
    seed: u64,
    seconds: f64,
    conditional: bool,
    dir: &Path,
) -> Result<Value> {
    let samples = dir.join("peer-samples.npy");
    let script = root().join("xtask/quality/peers.py");
    let (seconds_s, seed_s, threads, n) =
        (format!("{seconds:.3}"), seed.to_string(), o.threads.to_string(), o.n.to_string());
    let args = [
        path(&script),
        name,
        "--seconds",
        &seconds_s,
        "--seed",
        &seed_s,
        "--threads",
        &threads,
        "--n",
        &n,
        "--out",
        path(&samples),
    ];
    let stdout = exec(python, &args)?;
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).context("peers.py printed no JSON")?;
    let mut record: Value = serde_json::from_str(line).with_context(|| format!("peers.py printed {line}"))?;
    let labels = conditional.then(|| dir.join("peer-samples.labels.npy"));
    record["experiment"] = json!(name);
    record["score"] = score(o, kiln, &samples, labels.as_deref())?;
    Ok(record)
}

/// `kiln eval --samples` against the bundled MNIST sample with kiln's extractor: the model's
/// scores and the real floor.
fn score(o: &Options, kiln: &Path, samples: &Path, labels: Option<&Path>) -> Result<Value> {
    let json_path = samples.with_extension("eval.json");
    let data = root().join("datasets/mnist-sample");
    let threads = o.threads.to_string();
    let mut args = vec!["--threads", &threads, "eval", "--samples", path(samples), "--data", path(&data)];
    args.extend(["--out", path(&json_path)]);
    if let Some(labels) = labels {
        args.extend(["--labels", path(labels)]);
    }
    exec(kiln, &args)?;
    let eval = read_json(&json_path)?;
    Ok(json!({ "model": eval["model"], "real_floor_fid": eval["real_floor"]["fid"] }))
}

/// Runs a program in the workspace root with stderr passed through; returns its stdout.
fn exec(program: &Path, args: &[&str]) -> Result<String> {
    eprintln!("$ {} {}", program.display(), args.join(" "));
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {}", program.display()))?;
    ensure!(out.status.success(), "`{} {}` failed with {}", program.display(), args.join(" "), out.status);
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

fn append(out: &Path, record: &Value) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(out.join("results.jsonl"))?;
    writeln!(file, "{record}")?;
    Ok(())
}

/// The Markdown report: one table row per experiment and seed (kiln, and its peer when run),
/// then per experiment the median FID ratio over seeds against the goal.
fn render(records: &[Value], header: &Value, compare: bool) -> String {
    let f = |v: &Value, digits: usize| v.as_f64().map_or("—".into(), |x| format!("{x:.digits$}"));
    let pct = |v: &Value| v.as_f64().map_or("—".into(), |x| format!("{:.1} %", 100.0 * x));
    let histogram = |v: &Value| {
        v.as_array().map_or("—".into(), |a| a.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" "))
    };
    let mut lines = vec![
        format!(
            "kiln against PyTorch peers at the same wall-clock (`cargo xtask quality --compare`, git {}, {}, {} \
             threads, {} samples each scored by `kiln eval --samples` with kiln's MNIST extractor against 2,250 \
             training digits; real floor FID ≈ {}).\n",
            header["git"].as_str().unwrap_or("?"),
            header["machine"]["cpu"].as_str().unwrap_or("?"),
            header["threads"],
            header["n"],
            records.first().map_or("—".into(), |r| f(&r["score"]["real_floor_fid"], 2)),
        ),
        "| experiment | seed | side | steps | train s | img/s | FID | KID | IS | precision | recall | class acc | classes of the samples (0…9) |".into(),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|".into(),
    ];
    for r in records {
        let m = &r["score"]["model"];
        let side = if r["impl"] == "kiln" { "kiln".to_string() } else { "PyTorch peer".to_string() };
        lines.push(format!(
            "| {} | {} | {side} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r["experiment"].as_str().unwrap_or("?"),
            r["seed"],
            r["steps"],
            f(&r["train_s"], 1),
            f(&r["img_per_s"], 0),
            f(&m["fid"], 2),
            f(&m["kid"], 2),
            f(&m["inception_score"], 2),
            f(&m["precision"], 2),
            f(&m["recall"], 2),
            pct(&m["class_accuracy"]),
            histogram(&m["class_histogram"]),
        ));
    }
    if compare {
        lines.push(String::new());
        lines.push(format!(
            "| experiment | kiln FID / peer FID, per seed | median | goal ≤ {FID_RATIO_GOAL} | class accuracy, kiln / peer |"
        ));
        lines.push("|---|---|---|---|---|".into());
        let mut names: Vec<&str> = records.iter().filter_map(|r| r["experiment"].as_str()).collect();
        names.dedup();
        names.sort_unstable();
        names.dedup();
        for name in names {
            // One figure of the kiln or the peer side of a seed's pair.
            let figure = |side: &str, seed: &Value, key: &str| {
                records
                    .iter()
                    .find(|r| {
                        r["experiment"] == name && r["seed"] == *seed && (r["impl"] == "kiln") == (side == "kiln")
                    })
                    .and_then(|r| r["score"]["model"][key].as_f64())
            };
            let fid = |side: &str, seed: &Value| figure(side, seed, "fid");
            let seeds: Vec<&Value> =
                records.iter().filter(|r| r["experiment"] == name && r["impl"] == "kiln").map(|r| &r["seed"]).collect();
            let ratios: Vec<f64> = seeds.iter().filter_map(|s| Some(fid("kiln", s)? / fid("peer", s)?)).collect();
            let accuracy = |side: &str, seed: &Value| {
                figure(side, seed, "class_accuracy").map_or("—".to_string(), |a| format!("{:.1} %", 100.0 * a))
            };
            let accuracies: Vec<String> = seeds
                .iter()
                .filter(|s| fid("kiln", s).is_some())
                .map(|s| format!("{} / {}", accuracy("kiln", s), accuracy("peer", s)))
                .filter(|a| a != "— / —")
                .collect();
            let per_seed: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
            let (median, verdict) = match spread(&ratios) {
                Some([m, _, hi]) => (format!("{m:.2}"), if hi <= FID_RATIO_GOAL { "met" } else { "not met" }),
                None => ("—".into(), "—"),
            };
            let accuracies = if accuracies.is_empty() { "—".into() } else { accuracies.join(", ") };
            lines.push(format!("| {name} | {} | {median} | {verdict} | {accuracies} |", per_seed.join(", ")));
        }
    }
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_to_three_seeds_and_every_peer() {
        let o = parse(&["--compare"]).unwrap();
        assert_eq!(o.seeds, [42, 43, 44]);
        assert_eq!(o.only, ["vae-mnist", "dcgan-mnist", "cgan-mnist", "draw-mnist"]);
        assert!(parse(&["--only", "ddpm-mnist"]).unwrap_err().to_string().contains("no PyTorch peer"));
        assert!(parse(&["--seeds", "4x"]).is_err());
        assert!(parse(&["--readme"]).unwrap_err().to_string().contains("needs --compare"));
    }

    #[test]
    fn the_readme_keeps_the_rows_of_experiments_this_run_did_not_cover() {
        let row13 =
            |name: &str, seed: u32| format!("| {name} | {seed} | kiln | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | — | 1 |");
        let previous = [
            "kiln against PyTorch peers at the same wall-clock (git old).".to_string(),
            String::new(),
            "| experiment | seed | side | steps | train s | img/s | FID | KID | IS | precision | recall | class acc | classes |"
                .into(),
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|".into(),
            row13("vae-mnist", 42),
            row13("cgan-mnist", 42),
            String::new(),
            "| experiment | kiln FID / peer FID, per seed | median | goal ≤ 0.7 | class accuracy, kiln / peer |".into(),
            "|---|---|---|---|---|".into(),
            "| cgan-mnist | 3.05 | 3.05 | not met | — |".into(),
            "| vae-mnist | 0.16 | 0.16 | met | — |".into(),
        ]
        .join("\n");
        // A section that had itself carried a row from an older run.
        let older = previous
            .clone()
            .replace(&row13("cgan-mnist", 42), &format!("{}\n{}", row13("cgan-mnist", 42), row13("dcgan-mnist", 7)))
            + "\n\nRows of dcgan-mnist: carried over from an earlier comparison — kiln against PyTorch peers (git older).";
        let report = [
            "kiln against PyTorch peers at the same wall-clock (git new).".to_string(),
            String::new(),
            "| experiment | seed | side | steps | train s | img/s | FID | KID | IS | precision | recall | class acc | classes |"
                .into(),
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|".into(),
            row13("cgan-mnist", 43),
            String::new(),
            "| experiment | kiln FID / peer FID, per seed | median | goal ≤ 0.7 | class accuracy, kiln / peer |".into(),
            "|---|---|---|---|---|".into(),
            "| cgan-mnist | 0.9 | 0.9 | not met | — |".into(),
        ]
        .join("\n");
        let merged = with_carried_rows(&report, &previous, &["cgan-mnist"]);
        let lines: Vec<&str> = merged.lines().collect();
        // The fresh cGAN rows replace the old ones; the VAE's follow in each table.
        assert_eq!(lines[4], row13("cgan-mnist", 43));
        assert_eq!(lines[5], row13("vae-mnist", 42));
        assert_eq!(lines[9], "| cgan-mnist | 0.9 | 0.9 | not met | — |");
        assert_eq!(lines[10], "| vae-mnist | 0.16 | 0.16 | met | — |");
        assert!(!merged.contains("3.05"), "{merged}");
        assert!(merged.trim_end().ends_with("Rows of vae-mnist: carried over from an earlier comparison — kiln against PyTorch peers at the same wall-clock (git old)."), "{merged}");
        // Each carried row keeps its own source.
        let merged = with_carried_rows(&report, &older, &["cgan-mnist"]);
        let tail: Vec<&str> = merged.trim_end().lines().rev().take(2).collect();
        assert_eq!(
            tail[1],
            "Rows of vae-mnist: carried over from an earlier comparison — kiln against PyTorch peers at the same wall-clock (git old).",
            "{merged}"
        );
        assert_eq!(
            tail[0],
            "Rows of dcgan-mnist: carried over from an earlier comparison — kiln against PyTorch peers (git older).",
            "{merged}"
        );
        // Nothing to carry: the report alone.
        assert_eq!(with_carried_rows(&report, &previous, &["cgan-mnist", "vae-mnist"]), report);
    }

    #[test]
    fn the_report_pairs_kiln_and_peer_by_seed() {
        let rec = |side: &str, seed: u64, fid: f64| {
            json!({ "impl": side, "experiment": "dcgan-mnist", "seed": seed, "steps": 10, "train_s": 1.0,
                    "img_per_s": 64.0, "score": { "model": { "fid": fid }, "real_floor_fid": 1.05 } })
        };
        let records = [rec("kiln", 42, 6.0), rec("pytorch", 42, 10.0), rec("kiln", 43, 8.0), rec("pytorch", 43, 10.0)];
        let header = json!({ "git": "abc", "machine": { "cpu": "cpu" }, "threads": 2, "n": 100 });
        let report = render(&records, &header, true);
        assert!(report.contains("| dcgan-mnist | 0.60, 0.80 | 0.70 | not met | — |"), "{report}");
        let mut conditional = records.clone();
        conditional[0]["score"]["model"]["class_accuracy"] = json!(0.955);
        let report = render(&conditional, &header, true);
        assert!(report.contains("| not met | 95.5 % / — |"), "{report}");
    }
}
