//! `cargo xtask bench --dist 1x1,2x1,1x2`: what data parallelism buys on this machine — the same
//! workload (W1 unless `--workload` says otherwise) with several layouts of processes × threads,
//! interleaved round by round, every process a rank of one MPI job (issue 18).
//!
//! A layout `PxT` is P processes of T threads each. P = 1 runs `kiln-bench` alone; P > 1 runs it
//! under `mpirun -n P`, where each rank trains its own batch and the optimizers average the
//! gradients (kiln-optim's seam on kiln-mpi), so the job processes P batches per step. Each
//! record carries the job's images/s and, for P > 1, the ms per step rank 0 spent in exchanges
//! (waiting for the slower rank included). Ratios are against the first layout, paired by round
//! so that machine drift cancels, as in `--compare`.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::bench::{git_revision, json_lines, keep, machine, spread, utc_now};
use crate::root;

/// One layout: processes × threads per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub processes: usize,
    pub threads: usize,
}

impl Layout {
    fn name(self) -> String {
        format!("{}x{}", self.processes, self.threads)
    }
}

/// Parses `1x1,2x1,1x2`.
pub fn parse_layouts(text: &str) -> Result<Vec<Layout>> {
    let mut layouts = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = item.split_once(['x', 'X']).and_then(|(p, t)| Some((p.parse().ok()?, t.parse().ok()?)));
        match parsed {
            Some((processes, threads)) if processes > 0 && threads > 0 => layouts.push(Layout { processes, threads }),
            _ => bail!("bench: --dist {item:?}: expected PROCESSESxTHREADS, both at least 1 (e.g. 2x1)"),
        }
    }
    if layouts.is_empty() {
        bail!("bench: --dist names no layout (e.g. --dist 1x1,2x1,1x2)");
    }
    Ok(layouts)
}

/// What `--dist` needs of `cargo xtask bench`'s options.
pub struct DistOptions<'a> {
    pub layouts: &'a [Layout],
    pub workload: &'a str,
    pub reps: usize,
    pub warmup: usize,
    pub rounds: usize,
    pub history: &'a std::path::Path,
    pub markdown: bool,
}

pub fn run(o: &DistOptions<'_>) -> Result<()> {
    let machine = machine();
    let revision = git_revision();
    eprintln!("bench --dist: {} on {}, git {revision}", o.workload, machine["cpu"].as_str().unwrap_or("?"));
    crate::run(
        "cargo",
        &["build", "--release", "-p", "kiln-bench", "--no-default-features", "--features", "flex,mpi"],
    )?;
    let exe = root().join("target/release/kiln-bench");
    let mpirun = std::env::var_os("KILN_MPIRUN").unwrap_or_else(|| "mpirun".into());
    let mut records = Vec::new();
    for round in 0..o.rounds {
        for &layout in o.layouts {
            let mut cmd = if layout.processes == 1 {
                Command::new(&exe)
            } else {
                let mut cmd = Command::new(&mpirun);
                cmd.arg("-n").arg(layout.processes.to_string()).arg(&exe);
                // As `kiln train --world-size` starts its ranks: root allowed (containers), more
                // ranks than cores if asked, and no pinning (each rank has its own thread pool).
                cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                    .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
                    .env("OMPI_MCA_hwloc_base_binding_policy", "none");
                cmd
            };
            cmd.args(["--json", "--device", "cpu", "--workload", o.workload])
                .args(["--reps", &o.reps.to_string(), "--warmup", &o.warmup.to_string()])
                .args(["--threads", &layout.threads.to_string()]);
            for r in json_lines(&mut cmd, &format!("kiln-bench {}", layout.name()))? {
                records.push(keep(r, &[("layout", json!(layout.name()))], &revision, &machine, round, o.history)?);
            }
        }
    }
    let header = format!(
        "{} ({} cores), kiln flex, {} round(s) × {} reps, git {revision}, {}",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        o.rounds,
        o.reps,
        utc_now()
    );
    print!("{}", render(&records, o.layouts, &header, o.markdown));
    Ok(())
}

/// Per workload and layout: the job's items/s (median over rounds, min–max), ms per step,
/// exchange ms per step, and the ratio to the first layout in each round.
fn render(records: &[Value], layouts: &[Layout], header: &str, markdown: bool) -> String {
    let mut out = format!("{header}\n");
    let workloads: Vec<&str> = {
        let mut seen = Vec::new();
        for r in records {
            let w = r["workload"].as_str().unwrap_or("?");
            if !seen.contains(&w) {
                seen.push(w);
            }
        }
        seen
    };
    let fmt3 = |s: Option<[f64; 3]>, prec: usize| {
        s.map_or("—".to_string(), |[m, lo, hi]| format!("{m:.prec$} ({lo:.prec$}–{hi:.prec$})"))
    };
    for workload in workloads {
        // rate[layout][round]
        let mut rates: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
        let mut step_ms: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut exchange: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut unit = "item";
        for r in records.iter().filter(|r| r["workload"] == workload) {
            let layout = r["layout"].as_str().unwrap_or("?").to_string();
            unit = r["unit"].as_str().unwrap_or(unit);
            let round = r["round"].as_u64().unwrap_or(0);
            rates.entry(layout.clone()).or_default().insert(round, r["items_per_s"].as_f64().unwrap_or(f64::NAN));
            step_ms.entry(layout.clone()).or_default().push(r["median_ms"].as_f64().unwrap_or(f64::NAN));
            if let Some(e) = r["exchange_ms"].as_f64() {
                exchange.entry(layout).or_default().push(e);
            }
        }
        let first = layouts[0].name();
        let cols = [
            "layout (processes × threads)".to_string(),
            format!("{unit}/s, whole job"),
            "ms per step".into(),
            "exchange ms per step".into(),
            format!("× {first}, per round"),
        ];
        if markdown {
            out += &format!("\n**{workload}**\n\n| {} |\n|{}\n", cols.join(" | "), "---|".repeat(cols.len()));
        } else {
            out += &format!(
                "\n{workload}\n{:<30} {:>24} {:>24} {:>24} {:>20}\n",
                cols[0], cols[1], cols[2], cols[3], cols[4]
            );
        }
        for layout in layouts.iter().map(|l| l.name()) {
            let Some(by_round) = rates.get(&layout) else { continue };
            let values: Vec<f64> = by_round.values().copied().collect();
            let ratios: Vec<f64> =
                by_round.iter().filter_map(|(round, v)| Some(v / rates.get(&first)?.get(round)?)).collect();
            let cells = [
                layout.clone(),
                fmt3(spread(&values), 1),
                fmt3(step_ms.get(&layout).and_then(|v| spread(v)), 1),
                fmt3(exchange.get(&layout).and_then(|v| spread(v)), 2),
                fmt3(spread(&ratios), 2),
            ];
            if markdown {
                out += &format!("| {} |\n", cells.join(" | "));
            } else {
                out +=
                    &format!("{:<30} {:>24} {:>24} {:>24} {:>20}\n", cells[0], cells[1], cells[2], cells[3], cells[4]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_parse_and_bad_ones_are_named() {
        let layouts = parse_layouts("1x1, 2X1,1x2").unwrap();
        assert_eq!(
            layouts,
            [
                Layout { processes: 1, threads: 1 },
                Layout { processes: 2, threads: 1 },
                Layout { processes: 1, threads: 2 }
            ]
        );
        for bad in ["2", "0x1", "2x0", "axb", ""] {
            let err = parse_layouts(bad).unwrap_err().to_string();
            assert!(err.contains("--dist"), "{bad}: {err}");
        }
    }

    #[test]
    fn ratios_are_against_the_first_layout_of_the_same_round() {
        let record = |layout: &str, round: u64, rate: f64, exchange: Option<f64>| {
            json!({"workload": "w1-dcgan64", "unit": "img", "layout": layout, "round": round,
                   "items_per_s": rate, "median_ms": 1000.0, "exchange_ms": exchange})
        };
        let records = [
            record("1x1", 0, 10.0, None),
            record("2x1", 0, 18.0, Some(3.0)),
            record("1x1", 1, 20.0, None),
            record("2x1", 1, 30.0, Some(5.0)),
        ];
        let layouts = parse_layouts("1x1,2x1").unwrap();
        let table = render(&records, &layouts, "h", false);
        // Round 0: 1.8, round 1: 1.5 — the median of two is their mean.
        let row = table.lines().find(|l| l.starts_with("2x1")).unwrap();
        assert!(row.contains("1.65 (1.50–1.80)"), "{table}");
        assert!(row.contains("4.00 (3.00–5.00)"), "{table}");
        assert!(table.lines().find(|l| l.starts_with("1x1")).unwrap().contains("—"), "{table}");
    }
}
