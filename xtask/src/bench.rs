//! `cargo xtask bench`: runs `kiln-bench` in release, keeps every result in a JSONL history, and
//! with `--compare` runs the same workloads in PyTorch (`xtask/bench/pytorch_bench.py`),
//! interleaved with kiln's, and prints kiln/PyTorch ratios (issue 8).
//!
//! ```text
//! cargo xtask bench [--compare] [--workload w1,w2,w3,w4,w5,w6,w7] [--reps N] [--warmup N] [--rounds N]
//!                   [--threads N] [--backend flex|ndarray] [--history FILE] [--markdown]
//!                   [--readme] [--python PATH]
//! cargo xtask bench --dist 1x1,2x1,1x2 [--workload w1] [--reps N] [--warmup N] [--rounds N]
//! ```
//! `--dist` times layouts of processes × threads, the processes ranks of one data-parallel MPI
//! job (see `bench_dist.rs`).
//! Interleaving (kiln, torch, kiln, torch, …) exposes both to the same drift in machine load, so
//! the per-round ratio is steadier than either figure alone: on a shared 2-core machine a build
//! in the next terminal halves both. Every figure is written with the 1-minute load average when
//! it was taken; compare only figures from one run, and distrust rounds with a load above the
//! core count.
//!
//! xtask does not depend on burn: it shells out to cargo, which keeps `cargo xtask` quick to build.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::root;

/// Parsed `cargo xtask bench` arguments.
#[derive(Debug)]
struct Options {
    compare: bool,
    workload: String,
    reps: usize,
    warmup: usize,
    rounds: usize,
    threads: Option<usize>,
    backend: String,
    history: PathBuf,
    markdown: bool,
    readme: bool,
    python: Option<PathBuf>,
    /// `--dist`: data-parallel layouts instead of the ordinary run.
    dist: Option<Vec<crate::bench_dist::Layout>>,
    workload_given: bool,
}

fn parse(args: &[&str]) -> Result<Options> {
    let mut o = Options {
        compare: false,
        workload: "w1,w2,w3,w4,w5,w6,w7".into(),
        reps: 3,
        warmup: 1,
        rounds: 3,
        threads: None,
        backend: "flex".into(),
        history: root().join("target/bench-history.jsonl"),
        markdown: false,
        readme: false,
        python: None,
        dist: None,
        workload_given: false,
    };
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        let mut value = || it.next().copied().with_context(|| format!("bench: {arg} needs a value"));
        let number = |v: &str| v.parse::<usize>().with_context(|| format!("bench: {arg} {v:?} is not a number"));
        match arg {
            "--compare" => o.compare = true,
            "--markdown" => o.markdown = true,
            "--readme" => o.readme = true,
            "--workload" => {
                o.workload = value()?.to_string();
                o.workload_given = true;
            }
            "--dist" => o.dist = Some(crate::bench_dist::parse_layouts(value()?)?),
            "--reps" => o.reps = number(value()?)?,
            "--warmup" => o.warmup = number(value()?)?,
            "--rounds" => o.rounds = number(value()?)?,
            "--threads" => o.threads = Some(number(value()?)?),
            "--backend" => o.backend = value()?.to_string(),
            "--history" => o.history = PathBuf::from(value()?),
            "--python" => o.python = Some(PathBuf::from(value()?)),
            other => bail!("bench: unknown argument {other:?}\n{USAGE}"),
        }
    }
    if !["flex", "ndarray"].contains(&o.backend.as_str()) {
        bail!("bench: --backend {:?}: expected flex or ndarray", o.backend);
    }
    if o.readme && !o.compare {
        bail!("bench: --readme writes the kiln/PyTorch comparison: add --compare");
    }
    if o.reps == 0 || o.rounds == 0 {
        bail!("bench: --reps and --rounds must be at least 1");
    }
    if o.dist.is_some() {
        if o.compare || o.readme || o.threads.is_some() || o.backend != "flex" {
            bail!(
                "bench: --dist times kiln's layouts alone (threads are in each layout): drop --compare, --readme, --threads and --backend"
            );
        }
        if !o.workload_given {
            o.workload = "w1".into();
        }
    }
    Ok(o)
}

/// Usage text, shown on a bad argument.
pub const USAGE: &str = "usage: cargo xtask bench [--compare] [--workload w1,w2,w3,w4,w5,w6,w7] [--reps N] [--warmup N] \
     [--rounds N] [--threads N] [--backend flex|ndarray] [--history FILE] [--markdown] [--readme] [--python PATH]\n       \
     cargo xtask bench --dist 1x1,2x1,1x2 [--workload w1] [--reps N] [--warmup N] [--rounds N] [--markdown]";

/// `cargo xtask bench …`.
pub fn run(args: &[&str]) -> Result<()> {
    let o = parse(args)?;
    if let Some(layouts) = &o.dist {
        return crate::bench_dist::run(&crate::bench_dist::DistOptions {
            layouts,
            workload: &o.workload,
            reps: o.reps,
            warmup: o.warmup,
            rounds: o.rounds,
            history: &o.history,
            markdown: o.markdown,
        });
    }
    let python = if o.compare { Some(ensure_venv(o.python.as_deref())?) } else { None };
    let machine = machine();
    let revision = git_revision();
    eprintln!("bench: {} on {}, git {revision}", o.backend, machine["cpu"].as_str().unwrap_or("?"));

    // Build up front: a compile inside the first round would load the machine while it measures.
    crate::run(
        "cargo",
        &["build", "--release", "-p", "kiln-bench", "--no-default-features", "--features", &o.backend],
    )?;

    let rounds = if o.compare { o.rounds } else { 1 };
    let mut records: Vec<Value> = Vec::new();
    for round in 0..rounds {
        let mut batch = run_kiln(&o)?;
        if let Some(python) = &python {
            batch.extend(run_torch(&o, python)?);
        }
        for r in batch {
            records.push(keep(r, &[], &revision, &machine, round, &o.history)?);
        }
    }
    eprintln!("bench: {} records appended to {}", records.len(), o.history.display());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let header = format!(
        "{} ({} cores), kiln {} vs {}, {} threads, {} round(s) × {} reps, git {revision}, {}; load average now {}",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        o.backend,
        records.iter().find(|r| r["impl"] == "pytorch").and_then(|r| r["backend"].as_str()).unwrap_or("no PyTorch"),
        records.first().map_or(json!(null), |r| r["threads"].clone()),
        rounds,
        o.reps,
        utc_now(),
        load.join(" "),
    );
    print!("{}", render(&records, &header, o.markdown));
    if o.readme {
        let command = format!(
            "cargo xtask bench --compare --rounds {} --reps {}{}",
            rounds,
            o.reps,
            o.threads.map_or(String::new(), |t| format!(" --threads {t}"))
        );
        let body = format!("`{command}`: {}", render(&records, &header, true));
        crate::write_readme_section(README_START, README_END, body.trim_end())?;
        eprintln!("bench: table written to README.md");
    }
    Ok(())
}

const README_START: &str = "<!-- performance:start (written by `cargo xtask bench --compare --readme`) -->";
const README_END: &str = "<!-- performance:end -->";

fn run_kiln(o: &Options) -> Result<Vec<Value>> {
    let device = if o.backend == "flex" { "cpu" } else { "ndarray" };
    let (reps, warmup) = (o.reps.to_string(), o.warmup.to_string());
    let threads = o.threads.map(|t| t.to_string());
    let mut args = vec![
        "run",
        "--release",
        "--quiet",
        "-p",
        "kiln-bench",
        "--no-default-features",
        "--features",
        &o.backend,
        "--",
        "--json",
        "--device",
        device,
        "--workload",
        &o.workload,
        "--reps",
        &reps,
        "--warmup",
        &warmup,
    ];
    if let Some(t) = &threads {
        args.extend(["--threads", t]);
    }
    json_lines(Command::new("cargo").args(&args), "kiln-bench")
}

fn run_torch(o: &Options, python: &Path) -> Result<Vec<Value>> {
    let script = root().join("xtask/bench/pytorch_bench.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script).args(["--json", "--workload", &o.workload, "--reps", &o.reps.to_string()]);
    cmd.args(["--warmup", &o.warmup.to_string()]);
    if let Some(t) = o.threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    json_lines(&mut cmd, "pytorch_bench.py")
}

/// Runs `cmd` in the workspace root, passing its stderr through, and parses each stdout line
/// that is a JSON object. The child's own progress goes to the terminal; its records come back.
pub(crate) fn json_lines(cmd: &mut Command, what: &str) -> Result<Vec<Value>> {
    eprintln!("bench: running {what}");
    let out = cmd
        .current_dir(root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {what}"))?;
    if !out.status.success() {
        bail!("{what} failed with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut records = Vec::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("{what} printed a bad JSON line: {line}"))?;
        eprintln!(
            "bench:   {:<8} {:<24} {:>10.2} {}/s  (median {:.1} ms, load {:.2})",
            value["impl"].as_str().unwrap_or("?"),
            value["workload"].as_str().unwrap_or("?"),
            value["items_per_s"].as_f64().unwrap_or(f64::NAN),
            value["unit"].as_str().unwrap_or("item"),
            value["median_ms"].as_f64().unwrap_or(f64::NAN),
            value["load1"].as_f64().unwrap_or(f64::NAN),
        );
        records.push(value);
    }
    if records.is_empty() {
        bail!("{what} printed no results");
    }
    Ok(records)
}

/// The Python that runs the PyTorch side: `--python`, else `target/pytorch-venv`, created with
/// `python3 -m venv` and `pip install torch numpy` from PyPI when missing.
pub(crate) fn ensure_venv(python: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = python {
        return Ok(p.to_path_buf());
    }
    let venv = root().join("target/pytorch-venv");
    let python = venv.join("bin/python");
    if python.exists() {
        return Ok(python);
    }
    eprintln!("bench: creating {} (PyTorch from PyPI: a large download, once)", venv.display());
    let venv_arg = venv.to_string_lossy().into_owned();
    crate::run("python3", &["-m", "venv", &venv_arg])?;
    let pip = venv.join("bin/pip").to_string_lossy().into_owned();
    crate::run(&pip, &["install", "--quiet", "torch", "numpy"])?;
    Ok(python)
}

/// Stamps a record with `extra` fields, the time, the git revision, the machine and its round,
/// and appends it to the history file; returns it.
pub(crate) fn keep(
    mut record: Value,
    extra: &[(&str, Value)],
    revision: &str,
    machine: &Value,
    round: usize,
    history: &Path,
) -> Result<Value> {
    if let Value::Object(map) = &mut record {
        for (key, value) in extra {
            map.insert((*key).into(), value.clone());
        }
        map.insert("timestamp".into(), json!(utc_now()));
        map.insert("git".into(), json!(revision));
        map.insert("machine".into(), machine.clone());
        map.insert("round".into(), json!(round));
    }
    append_history(history, &record)?;
    Ok(record)
}

fn append_history(path: &Path, record: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open for appending", path.display()))?;
    writeln!(file, "{record}").with_context(|| format!("{}: write failed", path.display()))
}

/// CPU model and core counts from `/proc/cpuinfo`.
pub(crate) fn machine() -> Value {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |line: &str, key: &str| {
        line.split_once(':').filter(|(k, _)| k.trim() == key).map(|(_, v)| v.trim().to_string())
    };
    let cpu = text.lines().find_map(|l| field(l, "model name")).unwrap_or_else(|| "unknown CPU".into());
    let logical = text.lines().filter(|l| field(l, "processor").is_some()).count();
    let mut cores = std::collections::BTreeSet::new();
    let mut physical = String::new();
    for line in text.lines() {
        if let Some(p) = field(line, "physical id") {
            physical = p;
        } else if let Some(c) = field(line, "core id") {
            cores.insert((physical.clone(), c));
        }
    }
    let cores = if cores.is_empty() { logical } else { cores.len() };
    json!({ "cpu": cpu, "cores": cores, "logical_cpus": logical })
}

/// `git rev-parse --short HEAD`, with `-dirty` when the work tree has changes (read-only git).
pub(crate) fn git_revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(rev) = git(&["rev-parse", "--short", "HEAD"]) else { return "unknown".into() };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{rev}-dirty"),
        _ => rev,
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_now() -> String {
    kiln_core::UtcTime::now().iso()
}

/// Median, minimum and maximum.
pub(crate) fn spread(values: &[f64]) -> Option<[f64; 3]> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) };
    Some([median, v[0], v[n - 1]])
}

/// The comparison table: per workload, kiln's and PyTorch's items/s (median over rounds, with
/// min–max), the kiln/PyTorch ratio of each round (paired by round, so load drift cancels) and
/// each side's peak resident memory.
fn render(records: &[Value], header: &str, markdown: bool) -> String {
    #[derive(Default)]
    struct Row {
        unit: String,
        /// items/s by round
        kiln: BTreeMap<u64, f64>,
        torch: BTreeMap<u64, f64>,
        gflops: Vec<f64>,
        loads: Vec<f64>,
        /// largest peak RSS over rounds, MiB
        kiln_mib: f64,
        torch_mib: f64,
    }
    let mut rows: Vec<(String, Row)> = Vec::new();
    for r in records {
        let name = r["workload"].as_str().unwrap_or("?").to_string();
        let index = match rows.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                let unit = r["unit"].as_str().unwrap_or("item").to_string();
                rows.push((name, Row { unit, ..Row::default() }));
                rows.len() - 1
            }
        };
        let row = &mut rows[index].1;
        let round = r["round"].as_u64().unwrap_or(0);
        let rate = r["items_per_s"].as_f64().unwrap_or(f64::NAN);
        let mib = r["peak_rss_mib"].as_f64().unwrap_or(f64::NAN);
        if r["impl"] == "pytorch" {
            row.torch.insert(round, rate);
            row.torch_mib = row.torch_mib.max(mib);
        } else {
            row.kiln.insert(round, rate);
            row.kiln_mib = row.kiln_mib.max(mib);
            if let Some(g) = r["gflops"].as_f64() {
                row.gflops.push(g);
            }
        }
        if let Some(l) = r["load1"].as_f64() {
            row.loads.push(l);
        }
    }
    let fmt3 = |s: Option<[f64; 3]>, prec: usize| match s {
        Some([m, lo, hi]) => format!("{m:.prec$} ({lo:.prec$}–{hi:.prec$})"),
        None => "—".into(),
    };
    let mut lines = Vec::new();
    let cols =
        ["workload", "kiln /s", "PyTorch /s", "kiln/PyTorch", "kiln GFLOP/s", "peak MiB kiln / PyTorch", "load1"];
    if markdown {
        lines.push(format!("{header}\n"));
        lines.push(format!("| {} |", cols.join(" | ")));
        lines.push(format!("|{}", "---|".repeat(cols.len())));
    } else {
        lines.push(header.to_string());
        lines.push(format!(
            "{:<34} {:>26} {:>26} {:>20} {:>12} {:>24} {:>10}",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6]
        ));
    }
    for (name, row) in &rows {
        let ratios: Vec<f64> = row.kiln.iter().filter_map(|(round, k)| row.torch.get(round).map(|t| k / t)).collect();
        let kiln_s = fmt3(spread(&row.kiln.values().copied().collect::<Vec<_>>()), 1);
        let torch_s = fmt3(spread(&row.torch.values().copied().collect::<Vec<_>>()), 1);
        let ratio_s = fmt3(spread(&ratios), 2);
        let gflops_s = spread(&row.gflops).map_or("—".into(), |[m, _, _]| format!("{m:.1}"));
        let load_s = spread(&row.loads).map_or("—".into(), |[_, lo, hi]| format!("{lo:.1}–{hi:.1}"));
        let mib = |v: f64| if v > 0.0 { format!("{v:.0}") } else { "—".into() };
        let mem_s = format!("{} / {}", mib(row.kiln_mib), mib(row.torch_mib));
        let label = format!("{name} ({})", row.unit);
        if markdown {
            lines.push(format!("| {label} | {kiln_s} | {torch_s} | {ratio_s} | {gflops_s} | {mem_s} | {load_s} |"));
        } else {
            lines.push(format!(
                "{label:<34} {kiln_s:>26} {torch_s:>26} {ratio_s:>20} {gflops_s:>12} {mem_s:>24} {load_s:>10}"
            ));
        }
    }
    if let Some(line) = kv_cache_saving(&rows.iter().map(|(n, r)| (n.as_str(), &r.kiln, &r.torch)).collect::<Vec<_>>())
    {
        lines.push(if markdown { format!("\n{line}") } else { line });
    }
    let note = "Items per second at each run's median time; median (min–max) over rounds; the ratio is taken \
                per round. GFLOP/s: conv/convT/linear multiply-adds ×2 from layer shapes (W4: + QKᵀ and PV), \
                fwd+bwd = 3× fwd. \
                Peak MiB: the largest VmHWM of a workload over the rounds (PyTorch's includes the ~0.7 GB its \
                CUDA build maps at import).";
    lines.push(if markdown { format!("\n{note}") } else { note.to_string() });
    lines.join("\n") + "\n"
}

/// Items/s of one row by round: (workload, kiln's, PyTorch's).
type RoundRates<'a> = (&'a str, &'a BTreeMap<u64, f64>, &'a BTreeMap<u64, f64>);

/// W4's key/value-cache saving, measured: per implementation, cached sampling's tokens/s over
/// recomputed sampling's in each round (median (min–max) over rounds), when both rows ran.
fn kv_cache_saving(rows: &[RoundRates<'_>]) -> Option<String> {
    let find = |name: &str| rows.iter().find(|(n, _, _)| *n == name);
    let (_, kiln_kv, torch_kv) = find("w4-gpt-mini-sample-kv")?;
    let (_, kiln_full, torch_full) = find("w4-gpt-mini-sample-recompute")?;
    let saving = |kv: &BTreeMap<u64, f64>, full: &BTreeMap<u64, f64>| {
        let ratios: Vec<f64> = kv.iter().filter_map(|(round, k)| full.get(round).map(|f| k / f)).collect();
        spread(&ratios).map_or("—".into(), |[m, lo, hi]| format!("{m:.2}× ({lo:.2}–{hi:.2})"))
    };
    Some(format!(
        "W4 key/value cache: sampling with it is {} as fast as recomputing every prefix in kiln, {} in PyTorch \
         (cached over recomputed tokens/s, per round).",
        saving(kiln_kv, kiln_full),
        saving(torch_kv, torch_full)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_cache_saving_is_paired_by_round() {
        let rec = |imp: &str, name: &str, round: u64, rate: f64| json!({"impl": imp, "workload": name, "unit": "tok", "round": round, "items_per_s": rate});
        let (kv, full) = ("w4-gpt-mini-sample-kv", "w4-gpt-mini-sample-recompute");
        let records = [
            rec("kiln", kv, 0, 100.0),
            rec("kiln", full, 0, 20.0),
            rec("pytorch", kv, 0, 90.0),
            rec("pytorch", full, 0, 30.0),
            rec("kiln", kv, 1, 60.0),
            rec("kiln", full, 1, 20.0),
        ];
        let table = render(&records, "h", false);
        // kiln 5× then 3×: median 4; PyTorch only has round 0, 3×.
        assert!(
            table.contains("4.00× (3.00–5.00) as fast as recomputing every prefix in kiln, 3.00× (3.00–3.00)"),
            "{table}"
        );
    }

    #[test]
    fn utc_now_is_iso_8601() {
        let now = utc_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }

    #[test]
    fn ratios_are_paired_by_round() {
        let rec = |imp: &str, round: u64, rate: f64| {
            json!({"impl": imp, "workload": "w1-dcgan64", "unit": "img", "round": round, "items_per_s": rate,
                   "gflops": 1.0, "load1": 2.0, "peak_rss_mib": 100.0 * rate})
        };
        let records = [rec("kiln", 0, 10.0), rec("pytorch", 0, 20.0), rec("kiln", 1, 30.0), rec("pytorch", 1, 30.0)];
        let table = render(&records, "h", true);
        // Ratios 0.5 and 1.0: median 0.75.
        assert!(table.contains("0.75 (0.50–1.00)"), "{table}");
        // The largest peak of each side over the rounds.
        assert!(table.contains("| 3000 / 3000 |"), "{table}");
        assert!(!table.contains("key/value cache"), "no W4 rows, no saving line: {table}");
        assert!(parse(&["--backend", "cuda"]).is_err());
        assert!(parse(&["--readme"]).is_err(), "--readme needs --compare");
        assert_eq!(parse(&["--reps", "2", "--compare"]).unwrap().reps, 2);
    }
}
