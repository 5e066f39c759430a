//! End-to-end tests of the `kiln` binary: a real (tiny) training run on the bundled digits, every
//! command on its checkpoint, and every kind of bad input a user can give — each must fail with one
//! clear line on stderr and a non-zero exit code, never a panic.
//!
//! Built as an integration test of `kiln-cli` (see its Cargo.toml) so cargo passes the binary's path.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(root())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run kiln")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const TINY: &str = r#"
name = "tiny"
seed = 7
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "vae"
widths = [8, 16]
hidden = 64
latent = 4
[train]
steps = 40
batch_size = 32
lr = 3e-3
log_every = 10
preview_every = 20
"#;

/// One tiny training run shared by the tests that need a checkpoint.
fn trained() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("train");
        let exp = dir.join("tiny.toml");
        std::fs::write(&exp, TINY).unwrap();
        let out = dir.join("run");
        let o = kiln(&["train", s(&exp), "--out", s(&out), "--quiet"]);
        assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
        out
    })
}

/// Asserts a clean failure: non-zero exit, one `error:` line naming `needle`, no panic.
fn fails_with(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "error should mention {needle:?}: {err}");
}

#[test]
fn train_writes_a_complete_run_directory_and_the_loss_falls() {
    let run = trained();
    for file in [
        "metrics.jsonl",
        "samples.png",
        "reconstructions.png",
        "samples/samples-000020.png",
        "vae.json",
        "vae.safetensors",
        "experiment.toml",
        "run.json",
        "summary.json",
        "eval.json",
    ] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> =
        log.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap()).collect();
    assert_eq!(losses.len(), 4);
    assert!(losses[3] < 0.75 * losses[0], "loss did not fall: {losses:?}");
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    assert!(eval["neg_elbo_nats"].as_f64().unwrap() < losses[0]);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["seed"], 7);
}

#[test]
fn sample_writes_grid_directory_and_npy_reproducibly() {
    let run = trained();
    let out = scratch("sample");
    let grid = out.join("grid.png");
    assert!(kiln(&["sample", "--checkpoint", s(run), "--n", "16", "--out", s(&grid)]).status.success());
    let img = image::open(&grid).unwrap();
    assert_eq!(img.width(), 8 * 30 + 2);
    let again = out.join("again.png");
    assert!(kiln(&["sample", "--checkpoint", s(run), "--n", "16", "--out", s(&again)]).status.success());
    assert_eq!(std::fs::read(&grid).unwrap(), std::fs::read(&again).unwrap(), "same seed, same samples");

    let dir = out.join("each");
    assert!(kiln(&["sample", "--checkpoint", s(run), "--n", "3", "--out", s(&dir)]).status.success());
    assert_eq!(image::open(dir.join("sample-00002.png")).unwrap().width(), 28);

    let npy = out.join("x.npy");
    let o = kiln(&["sample", "--checkpoint", s(run), "--n", "5", "--out", s(&npy), "--format", "npy"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&npy).unwrap();
    let header = String::from_utf8_lossy(&bytes[10..128]);
    assert!(header.contains("'shape': (5, 1, 28, 28, )"), "{header}");
    assert_eq!(bytes.len() % 64, (5 * 784 * 4) % 64);
}

#[test]
fn reconstruct_and_interpolate_write_pngs() {
    let run = trained();
    let out = scratch("recon");
    let recon = out.join("recon.png");
    let o = kiln(&["reconstruct", "--checkpoint", s(run), "--n", "16", "--out", s(&recon)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(image::open(&recon).unwrap().height(), 4 * 30 + 2);
    for path in ["lerp", "slerp"] {
        let strip = out.join(format!("{path}.png"));
        let o = kiln(&[
            "interpolate",
            "--checkpoint",
            s(run),
            "--steps",
            "6",
            "--rows",
            "2",
            "--path",
            path,
            "--out",
            s(&strip),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(image::open(&strip).unwrap().width(), 6 * 30 + 2);
    }
}

#[test]
fn checkpoint_errors_are_one_clear_line() {
    let run = trained();
    let out = scratch("badckpt");
    let png = out.join("x.png");
    fails_with(
        &kiln(&["sample", "--checkpoint", "/no/such/run", "--out", s(&png)]),
        "/no/such/run: no such checkpoint directory",
    );
    fails_with(
        &kiln(&["sample", "--checkpoint", s(&out), "--out", s(&png)]),
        "not a kiln checkpoint (no vae.json here)",
    );

    // Truncated weights.
    let cut = out.join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::copy(run.join("vae.json"), cut.join("vae.json")).unwrap();
    let w = std::fs::read(run.join("vae.safetensors")).unwrap();
    std::fs::write(cut.join("vae.safetensors"), &w[..w.len() / 3]).unwrap();
    fails_with(&kiln(&["sample", "--checkpoint", s(&cut), "--out", s(&png)]), "vae.safetensors");

    // The weights of another model (the bundled default preset's shapes differ from the tiny run's).
    let other = out.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(run.join("vae.safetensors"), other.join("vae.safetensors")).unwrap();
    std::fs::write(other.join("vae.json"), r#"{"channels":1,"image_size":28,"widths":[32,64],"hidden":256,"latent":16,"likelihood":"Bernoulli","beta":1.0}"#).unwrap();
    fails_with(&kiln(&["sample", "--checkpoint", s(&other), "--out", s(&png)]), "not a checkpoint of this VAE");
    assert!(!png.exists(), "nothing is written on failure");
}

#[test]
fn bad_device_and_bad_experiment_files_are_one_clear_line() {
    let run = trained();
    let dir = scratch("badexp");
    let png = dir.join("x.png");
    fails_with(
        &kiln(&["sample", "--checkpoint", s(run), "--out", s(&png), "--device", "tpu:0"]),
        "unknown --device \"tpu:0\"",
    );
    if !cfg!(feature = "cuda") {
        fails_with(
            &kiln(&["sample", "--checkpoint", s(run), "--out", s(&png), "--device", "cuda:0"]),
            "built without the `cuda` feature",
        );
    }

    let cases = [
        ("unknown.toml", TINY.replace("latent = 4", "latent = 4\nlatnet = 5"), "unknown field `latnet`"),
        ("wrongtype.toml", TINY.replace("steps = 40", "steps = \"forty\""), "invalid type"),
        (
            "nodata.toml",
            TINY.replace("datasets/mnist-sample", "datasets/no-such-set"),
            "datasets/no-such-set: no such directory",
        ),
        ("badsize.toml", TINY.replace("widths = [8, 16]", "widths = [8, 16, 32]"), "image_size = 28"),
    ];
    for (name, text, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let o = kiln(&["train", s(&path), "--out", s(&dir.join("never")), "--quiet"]);
        fails_with(&o, needle);
        fails_with(&o, name);
    }
    fails_with(&kiln(&["train", "experiments/nope.toml"]), "experiments/nope.toml: cannot read experiment file");
    assert!(!dir.join("never").exists());
}

#[test]
fn resize_shrinks_a_png_and_names_a_bad_file() {
    let run = trained();
    let out = scratch("resize");
    let small = out.join("small.png");
    let input = run.join("samples.png");
    let o = kiln(&["resize", s(&input), "--out", s(&small), "--size", "61x61", "--filter", "bicubic", "--antialias"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(image::open(&small).unwrap().width(), 61);
    let bogus = out.join("bogus.png");
    std::fs::write(&bogus, b"not a png").unwrap();
    fails_with(&kiln(&["resize", s(&bogus), "--out", s(&out.join("b.png")), "--scale", "0.5"]), "bogus.png");
}

#[test]
fn data_ls_lists_the_known_sets_and_fetch_rejects_an_unknown_one() {
    let dir = scratch("data");
    let o = kiln(&["data", "ls", "--data-dir", s(&dir)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in ["mnist", "fashion-mnist", "cifar-10"] {
        assert!(out.contains(name), "{out}");
    }
    fails_with(&kiln(&["data", "fetch", "no-such-set", "--data-dir", s(&dir)]), "no-such-set");
}
