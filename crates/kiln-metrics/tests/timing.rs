//! Timings at Inception's feature dimension (D = 2048). Ignored by default; run with
//! `cargo test --release -p kiln-metrics --test timing -- --ignored --nocapture --test-threads 1`.

use std::time::Instant;

use kiln_metrics::{FeatureStats, KidConfig, Rows, frechet_distance, kid, precision_recall};

const DIM: usize = 2048;

/// Roughly normal noise (sum of four uniforms) from xorshift64*, plus a per-column trend so the
/// two sets differ.
fn features(seed: u64, rows: usize, trend: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..rows * DIM).map(|t| ((0..4).map(|_| uniform()).sum::<f64>() - 2.0) as f32 + (t % DIM) as f32 * trend).collect()
}

#[test]
#[ignore = "timing: FD at D = 2048"]
fn time_fd() {
    for (rows, label) in [(4096, "full rank, 4096 rows per set"), (1000, "rank-deficient, 1000 rows per set")] {
        let t = Instant::now();
        let (mut a, mut b) = (FeatureStats::new(DIM), FeatureStats::new(DIM));
        for (batch, start) in (0..rows).step_by(500).enumerate() {
            let n = 500.min(rows - start);
            a.push(&features(2 * batch as u64 + 1, n, 1e-3), n, DIM).unwrap();
            b.push(&features(2 * batch as u64 + 2, n, 0.0), n, DIM).unwrap();
        }
        let stats_time = t.elapsed();
        let (ma, mb) = (a.moments().unwrap(), b.moments().unwrap());
        let t = Instant::now();
        let fd = frechet_distance(&ma, &mb).unwrap();
        let fd_time = t.elapsed();
        println!("FD, D = {DIM}, {label}: {fd:.6} in {fd_time:.2?} (streaming stats of both sets: {stats_time:.2?})");
        assert!(fd.is_finite() && fd > 0.0);
    }
}

#[test]
#[ignore = "timing: KID subsets at the default size, D = 2048"]
fn time_kid() {
    let n = 1500;
    let (x, y) = (features(1, n, 0.0), features(2, n, 1e-4));
    let (real, fake) = (Rows::new(&x, n, DIM).unwrap(), Rows::new(&y, n, DIM).unwrap());
    let config = KidConfig { subsets: 5, ..KidConfig::default() };
    let t = Instant::now();
    let k = kid(real, fake, &config).unwrap();
    let elapsed = t.elapsed();
    println!(
        "KID, D = {DIM}, {} subsets of {}: {:.6} ± {:.6} in {elapsed:.2?} ({:.2?} per subset)",
        config.subsets,
        config.subset_size,
        k.mean,
        k.std,
        elapsed / config.subsets as u32
    );
}

#[test]
#[ignore = "timing: precision/recall, 2000 rows per set, D = 2048"]
fn time_precision_recall() {
    let n = 2000;
    let (x, y) = (features(3, n, 0.0), features(4, n, 0.0));
    let (real, fake) = (Rows::new(&x, n, DIM).unwrap(), Rows::new(&y, n, DIM).unwrap());
    let t = Instant::now();
    let pr = precision_recall(real, fake, 3).unwrap();
    println!("precision/recall, D = {DIM}, {n} rows per set: {pr:?} in {:.2?}", t.elapsed());
}
