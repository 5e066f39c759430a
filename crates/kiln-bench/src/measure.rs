//! Timing, peak memory and the report: one [`Record`] per workload, printed as a table or as one
//! JSON object per line (the format `xtask/bench/pytorch_bench.py` prints too, so `cargo xtask
//! bench` reads both alike).

use std::time::Instant;

use serde_json::{Value, json};

/// What a workload is and how much work one repetition does.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Stable name, e.g. `"w1-dcgan64"`; the same in the PyTorch script.
    pub name: String,
    /// What `items` counts: `"img"`, `"tok"`, `"seq"`, `"vec"`.
    pub unit: &'static str,
    /// Items one repetition processes (the batch).
    pub items: usize,
    /// FLOPs of one repetition by [`crate::flops`]' rules, if the workload has a meaningful count.
    pub flops: Option<u64>,
    /// How `flops` was counted, for the JSON record.
    pub flops_note: &'static str,
}

/// The measured figures of one workload.
#[derive(Debug, Clone)]
pub struct Record {
    /// The workload.
    pub spec: Spec,
    /// Wall time of each timed repetition, in ms.
    pub times_ms: Vec<f64>,
    /// Processes training together (data-parallel under mpirun; 1 otherwise): each runs the
    /// workload's batch, so the job processes `world × items` per repetition.
    pub world: usize,
    /// Of each timed repetition, the ms spent exchanging gradients with the other ranks (waiting
    /// for the slowest included), when the step ran data-parallel.
    pub exchange_ms: Option<Vec<f64>>,
    /// Peak resident memory while the workload was built and run, in MiB (`VmHWM`).
    pub peak_rss_mib: Option<f64>,
    /// 1-minute load average when the workload finished.
    pub load1: Option<f64>,
}

/// The timed repetitions of one workload.
#[derive(Debug, Clone, Default)]
pub struct Timing {
    /// Wall time of each, in ms.
    pub times_ms: Vec<f64>,
    /// Of each, the ms the optimizers spent exchanging gradients with other ranks, when a
    /// [`kiln_optim::GradSync`] is installed on this thread (a data-parallel run).
    pub exchange_ms: Option<Vec<f64>>,
}

/// Runs `step` `warmup` times untimed, then `reps` times timed. `step` must finish its work
/// before returning (read a value back or sync the device), or the time is only the launch.
/// Under data parallelism the exchange clock is read around each timed repetition, so the
/// warm-up's one-off broadcast of the initial weights is not counted as a step's communication.
pub fn time_reps(warmup: usize, reps: usize, mut step: impl FnMut()) -> Timing {
    for _ in 0..warmup {
        step();
    }
    let engine = kiln_optim::sync::installed();
    let exchanged = || engine.as_ref().and_then(|e| e.exchange_time()).map_or(0.0, |(_, seconds)| seconds);
    let mut timing = Timing { exchange_ms: engine.as_ref().map(|_| Vec::new()), ..Timing::default() };
    for _ in 0..reps {
        let (t0, e0) = (Instant::now(), exchanged());
        step();
        timing.times_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        if let Some(ms) = &mut timing.exchange_ms {
            ms.push((exchanged() - e0) * 1e3);
        }
    }
    timing
}

/// Resets the kernel's peak-RSS counter of this process (`echo 5 > /proc/self/clear_refs`,
/// Linux ≥ 4.0), so that each workload's `VmHWM` is its own, not the largest so far. Harmless
/// where it is not supported: the figure is then the process's peak so far.
pub fn reset_peak_rss() {
    // Best effort by design: a kernel without this file still gives a (cumulative) peak.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` of this process, in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The 1-, 5- and 15-minute load averages (what `uptime` prints).
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    Some([it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?])
}

/// Median, minimum and maximum.
pub fn stats(times: &[f64]) -> [f64; 3] {
    if times.is_empty() {
        return [f64::NAN; 3];
    }
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) };
    [median, sorted[0], sorted[n - 1]]
}

impl Record {
    /// Items per second at the median time, over every rank of a data-parallel job.
    pub fn items_per_s(&self) -> f64 {
        (self.world * self.spec.items) as f64 / (stats(&self.times_ms)[0] / 1e3)
    }

    /// GFLOP/s at the median time, over every rank.
    pub fn gflops(&self) -> Option<f64> {
        self.spec.flops.map(|f| (self.world as u64 * f) as f64 / 1e9 / (stats(&self.times_ms)[0] / 1e3))
    }

    /// The JSON line; `context` adds the run's fields (implementation, backend, threads, …).
    pub fn to_json(&self, context: &serde_json::Map<String, Value>) -> Value {
        let [median, min, max] = stats(&self.times_ms);
        let mut obj = context.clone();
        let fields = json!({
            "workload": self.spec.name,
            "unit": self.spec.unit,
            "batch": self.spec.items,
            "reps": self.times_ms.len(),
            "times_ms": self.times_ms,
            "median_ms": median,
            "min_ms": min,
            "max_ms": max,
            "items_per_s": self.items_per_s(),
            "gflop_per_rep": self.spec.flops.map(|f| f as f64 / 1e9),
            "gflops": self.gflops(),
            "flops_note": self.spec.flops_note,
            "peak_rss_mib": self.peak_rss_mib,
            "load1": self.load1,
            "world_size": self.world,
            "exchange_ms": self.exchange_ms.as_deref().map(|ms| stats(ms)[0]),
        });
        if let Value::Object(map) = fields {
            obj.extend(map);
        }
        Value::Object(obj)
    }
}

/// The table header.
pub fn table_header() -> String {
    format!(
        "{:<28} {:>14} {:>10} {:>10} {:>10} {:>9} {:>9} {:>6}",
        "workload", "items/s", "median ms", "min ms", "max ms", "GFLOP/s", "peak MiB", "load1"
    )
}

/// One table row.
pub fn table_row(r: &Record) -> String {
    let [median, min, max] = stats(&r.times_ms);
    let opt = |v: Option<f64>, prec: usize| v.map_or_else(|| "—".to_string(), |v| format!("{v:.prec$}"));
    format!(
        "{:<28} {:>10.1} {:<3} {:>10.1} {:>10.1} {:>10.1} {:>9} {:>9} {:>6}",
        r.spec.name,
        r.items_per_s(),
        r.spec.unit,
        median,
        min,
        max,
        opt(r.gflops(), 1),
        opt(r.peak_rss_mib, 0),
        opt(r.load1, 2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_and_even_counts() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), [2.0, 1.0, 3.0]);
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), [2.5, 1.0, 4.0]);
    }
}
