//! Property tests of the public API: invariants that hold whatever the data.
//! Golden values against scipy/numpy are in `tests/golden.rs`.

use crate::rng::SplitMix64;
use crate::*;

/// `count × dim` features: standard normal (Box–Muller) scaled per column and shifted.
fn features(seed: u64, count: usize, dim: usize, shift: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..count * dim)
        .map(|t| {
            let u1 = rng.next_f64().max(1e-300);
            let u2 = rng.next_f64();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (z * (1.0 + (t % dim) as f64 * 0.1)) as f32 + shift
        })
        .collect()
}

fn rows(data: &[f32], dim: usize) -> Rows<'_> {
    Rows::new(data, data.len() / dim, dim).unwrap()
}

#[test]
fn fd_of_a_set_with_itself_is_zero() {
    for (count, dim) in [(300, 16), (40, 64)] {
        // The second case has fewer rows than dimensions: a rank-deficient covariance.
        let x = features(1, count, dim, 0.5);
        let s = FeatureStats::from_rows(&x, count, dim).unwrap();
        let d = fid(&s, &s).unwrap();
        let scale: f64 = s.covariance().unwrap().iter().step_by(dim + 1).sum();
        assert!(d.abs() < 1e-10 * scale, "{count}×{dim}: FD(x, x) = {d}");
    }
}

#[test]
fn fd_is_symmetric_and_positive() {
    let dim = 24;
    let a = FeatureStats::from_rows(&features(2, 200, dim, 0.0), 200, dim).unwrap();
    let b = FeatureStats::from_rows(&features(3, 150, dim, 0.3), 150, dim).unwrap();
    let ab = fid(&a, &b).unwrap();
    let ba = fid(&b, &a).unwrap();
    assert!(ab > 0.0);
    assert!((ab - ba).abs() < 1e-11 * ab, "{ab} vs {ba}");
}

#[test]
fn fd_of_a_shifted_copy_is_the_squared_shift() {
    let dim = 10;
    let x = features(4, 100, dim, 0.0);
    let y: Vec<f32> = x.iter().enumerate().map(|(t, v)| v + if t % dim == 3 { 2.0 } else { 0.0 }).collect();
    let a = FeatureStats::from_rows(&x, 100, dim).unwrap();
    let b = FeatureStats::from_rows(&y, 100, dim).unwrap();
    let d = fid(&a, &b).unwrap();
    // The f32 additions round, so the covariances differ by ~1e-7 relative.
    assert!((d - 4.0).abs() < 1e-5, "{d}");
}

#[test]
fn fd_of_diagonal_gaussians_has_a_closed_form() {
    // For commuting covariances FD = |Δμ|² + Σ (√aᵢ − √bᵢ)².
    let a = [4.0, 1.0, 0.25, 9.0, 0.0];
    let b = [1.0, 1.0, 1.0, 16.0, 2.0];
    let n = a.len();
    let diag = |v: &[f64]| {
        let mut m = vec![0.0; n * n];
        (0..n).for_each(|i| m[i * n + i] = v[i]);
        m
    };
    let m1 = Moments::new(vec![0.0, 1.0, 0.0, 0.0, 0.0], diag(&a)).unwrap();
    let m2 = Moments::new(vec![0.0, 0.0, 0.0, 2.0, 0.0], diag(&b)).unwrap();
    let want = 1.0 + 4.0 + (1.0 + 0.0 + 0.25 + 1.0 + 2.0);
    let got = frechet_distance(&m1, &m2).unwrap();
    assert!((got - want).abs() < 1e-13, "{got} vs {want}");
}

#[test]
fn streaming_stats_equal_one_shot_stats() {
    let dim = 7;
    let count = 203;
    let x = features(5, count, dim, 1000.0);
    let once = FeatureStats::from_rows(&x, count, dim).unwrap();
    let mut streamed = FeatureStats::new(dim);
    let mut start = 0;
    for (b, size) in [1usize, 2, 50, 0, 17, 1, 64, 68].into_iter().enumerate() {
        streamed.push(&x[start * dim..(start + size) * dim], size, dim).unwrap_or_else(|e| panic!("batch {b}: {e}"));
        start += size;
    }
    assert_eq!(start, count);
    // Merging shards is the same update.
    let mut merged = FeatureStats::from_rows(&x[..90 * dim], 90, dim).unwrap();
    merged.merge(&FeatureStats::from_rows(&x[90 * dim..], count - 90, dim).unwrap()).unwrap();
    let (c0, m0) = (once.covariance().unwrap(), once.mean().to_vec());
    for other in [&streamed, &merged] {
        assert_eq!(other.count(), count);
        for (a, b) in other.mean().iter().zip(&m0) {
            assert!((a - b).abs() < 1e-12 * b.abs(), "{a} vs {b}");
        }
        for (a, b) in other.covariance().unwrap().iter().zip(&c0) {
            assert!((a - b).abs() < 1e-11, "{a} vs {b}");
        }
    }
    // The covariance is symmetric and agrees with a direct two-pass computation.
    for i in 0..dim {
        for j in 0..dim {
            let direct: f64 = (0..count)
                .map(|r| (f64::from(x[r * dim + i]) - m0[i]) * (f64::from(x[r * dim + j]) - m0[j]))
                .sum::<f64>()
                / (count - 1) as f64;
            assert!((c0[i * dim + j] - direct).abs() < 1e-11, "({i}, {j}): {} vs {direct}", c0[i * dim + j]);
        }
    }
}

#[test]
fn inception_score_of_confident_uniform_predictions_is_the_class_count() {
    let k = 8;
    let n = 80;
    // One-hot rows cycling through the classes: every split of 16 rows uses each class twice.
    let p: Vec<f32> = (0..n * k).map(|t| if t % k == (t / k) % k { 1.0 } else { 0.0 }).collect();
    let score = inception_score(rows(&p, k), 5).unwrap();
    assert!((score.mean - k as f64).abs() < 1e-12 && score.std < 1e-12, "{score:?}");
}

#[test]
fn inception_score_of_identical_rows_is_one() {
    let row = [0.1f32, 0.6, 0.3];
    let p: Vec<f32> = row.iter().copied().cycle().take(3 * 30).collect();
    let score = inception_score(rows(&p, 3), DEFAULT_SPLITS).unwrap();
    assert!((score.mean - 1.0).abs() < 1e-12 && score.std < 1e-12, "{score:?}");
}

#[test]
fn precision_recall_of_identical_sets_is_one() {
    let dim = 5;
    let x = features(6, 120, dim, 0.0);
    let pr = precision_recall(rows(&x, dim), rows(&x, dim), DEFAULT_K).unwrap();
    assert_eq!(pr, PrecisionRecall { precision: 1.0, recall: 1.0 });
}

#[test]
fn precision_recall_of_far_apart_sets_is_zero() {
    let dim = 3;
    let x = features(7, 50, dim, 0.0);
    let y = features(8, 60, dim, 100.0);
    let pr = precision_recall(rows(&x, dim), rows(&y, dim), DEFAULT_K).unwrap();
    assert_eq!(pr, PrecisionRecall { precision: 0.0, recall: 0.0 });
}

#[test]
fn knn_radii_match_brute_force_across_block_boundaries() {
    // More rows than one distance chunk, so the per-chunk merging is exercised.
    let dim = 3;
    let n = 1100;
    let x = features(9, n, dim, 0.0);
    let got = knn_radii(rows(&x, dim), 2).unwrap();
    for i in [0, 63, 64, 1023, 1024, 1099] {
        let mut d: Vec<f64> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (0..dim).map(|t| (f64::from(x[i * dim + t]) - f64::from(x[j * dim + t])).powi(2)).sum())
            .collect();
        d.sort_by(f64::total_cmp);
        assert!((got[i] - d[1].sqrt()).abs() < 1e-6 * d[1].sqrt(), "row {i}: {} vs {}", got[i], d[1].sqrt());
    }
}

#[test]
fn kid_over_one_full_subset_is_the_whole_set_mmd() {
    let dim = 6;
    let x = features(10, 30, dim, 0.0);
    let y = features(11, 30, dim, 0.4);
    let whole = mmd2_unbiased(rows(&x, dim), rows(&y, dim)).unwrap();
    let config = KidConfig { subset_size: 30, subsets: 1, seed: 3 };
    let k = kid(rows(&x, dim), rows(&y, dim), &config).unwrap();
    assert!((k.mean - whole).abs() < 1e-12 * whole.abs(), "{} vs {whole}", k.mean);
    assert_eq!(k.std, 0.0);
}

#[test]
fn kid_is_reproducible_from_its_seed() {
    let dim = 4;
    let x = features(12, 60, dim, 0.0);
    let y = features(13, 50, dim, 0.2);
    let config = KidConfig { subset_size: 20, subsets: 8, seed: 42 };
    let a = kid(rows(&x, dim), rows(&y, dim), &config).unwrap();
    let b = kid(rows(&x, dim), rows(&y, dim), &config).unwrap();
    let c = kid(rows(&x, dim), rows(&y, dim), &KidConfig { seed: 43, ..config.clone() }).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let subsets = kid_subsets(60, 50, &config).unwrap();
    assert_eq!(kid_on_subsets(rows(&x, dim), rows(&y, dim), &subsets).unwrap(), a);
    for s in &subsets {
        let mut r = s.real.clone();
        r.sort_unstable();
        r.dedup();
        assert_eq!(r.len(), 20, "indices within a subset are distinct");
    }
}

#[test]
fn reservoir_keeps_everything_until_full_and_ignores_batch_sizes() {
    let dim = 2;
    let x = features(14, 100, dim, 0.0);
    let mut all = FeatureSet::with_reservoir(dim, 1000, 1);
    all.push(&x, 100, dim).unwrap();
    assert_eq!(all.rows().as_slice(), &x[..]);
    let mut one_batch = FeatureSet::with_reservoir(dim, 10, 5);
    one_batch.push(&x, 100, dim).unwrap();
    let mut many = FeatureSet::with_reservoir(dim, 10, 5);
    for chunk in x.chunks(3 * dim) {
        many.push(chunk, chunk.len() / dim, dim).unwrap();
    }
    assert_eq!(one_batch.rows().as_slice(), many.rows().as_slice());
    assert_eq!((many.len(), many.seen()), (10, 100));
}

#[test]
fn reservoir_sample_is_uniform() {
    // Each of 20 rows should be kept with probability 5/20 over many seeds.
    let dim = 1;
    let x: Vec<f32> = (0..20).map(|i| i as f32).collect();
    let mut kept = [0usize; 20];
    for seed in 0..4000 {
        let mut set = FeatureSet::with_reservoir(dim, 5, seed);
        set.push(&x, 20, dim).unwrap();
        set.rows().as_slice().iter().for_each(|&v| kept[v as usize] += 1);
    }
    for (i, &c) in kept.iter().enumerate() {
        assert!((880..1120).contains(&c), "row {i} kept {c} times in 4000 draws of 5/20");
    }
}

#[test]
fn errors_name_what_went_wrong() {
    let x = features(15, 10, 4, 0.0);
    let y = features(16, 10, 3, 0.0);
    let err = precision_recall(rows(&x, 4), rows(&y, 3), 3).unwrap_err();
    assert_eq!(err.to_string(), "dimension mismatch: real features has dimension 4 but fake features has dimension 3");

    let mut stats = FeatureStats::new(4);
    stats.push(&x[..4], 1, 4).unwrap();
    let err = stats.covariance().unwrap_err();
    assert!(matches!(err, MetricsError::TooFewSamples { have: 1, need: 2, .. }), "{err}");
    let err = fid(&stats, &stats).unwrap_err();
    assert!(err.to_string().starts_with("real features has 1 rows but at least 2 are needed"), "{err}");

    let mut bad = x.clone();
    bad[2 * 4 + 1] = f32::NAN;
    let err = stats.push(&bad, 10, 4).unwrap_err();
    // One row was pushed before, so the bad row is row 1 + 2 of the stream.
    assert_eq!(err.to_string(), "pushed features: row 3, column 1 holds NaN, not a finite number");
    assert_eq!(stats.count(), 1, "a failed push adds nothing");

    let err = kid(rows(&x, 4), rows(&x, 4), &KidConfig { subset_size: 11, subsets: 2, seed: 0 }).unwrap_err();
    assert!(matches!(err, MetricsError::TooFewSamples { have: 10, need: 11, .. }), "{err}");

    let err = precision_recall(rows(&x, 4), rows(&x[..12], 4), 3).unwrap_err();
    assert!(matches!(err, MetricsError::TooFewSamples { what: "fake features", have: 3, need: 4, .. }), "{err}");

    let err = Rows::new(&x, 7, 4).unwrap_err();
    assert!(matches!(err, MetricsError::BadShape { len: 40, rows: 7, dim: 4, .. }), "{err}");

    let p = [0.5f32, 0.5, 0.2, 0.3];
    let err = inception_score(rows(&p, 2), 1).unwrap_err();
    assert!(matches!(err, MetricsError::NotAProbability { row: 1, .. }), "{err}");
}
