//! End-to-end tests of the `kiln` binary: a real (tiny) training run on the bundled digits, every
//! command on its checkpoint, and every kind of bad input a user can give — each must fail with one
//! clear line on stderr and a non-zero exit code, never a panic.
//!
//! Built as an integration test of `kiln-cli` (see its Cargo.toml) so cargo passes the binary's path.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kiln_optim::TensorFile;

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
log_every = 10
preview_every = 20
[train.optim]
lr = 3e-3
"#;

/// Height of the caption band ("samples  step 40") over the preview grids a run writes for tiles
/// under 64 pixels (`kiln sample`'s grids have none).
const CAPTION: u32 = 15;

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
        "losses.png",
        "samples.png",
        "reconstructions.png",
        "samples/samples-000020.png",
        "kiln.json",
        "vae.json",
        "vae.safetensors",
        "experiment.toml",
        "resolved.json",
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
    assert_eq!((&info["seed"], &info["family"]), (&serde_json::json!(7), &serde_json::json!("vae")));
    // The directory says what it is, and so does every checkpoint in it.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("kiln.json")).unwrap()).unwrap();
    assert_eq!((&manifest["family"], &manifest["format"]), (&serde_json::json!("vae"), &serde_json::json!(1)));
    let checkpoints: Vec<_> = std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!checkpoints.is_empty() && checkpoints.iter().all(|c| c.join("kiln.json").is_file()), "{checkpoints:?}");
    // Reconstructions carry "input"/"reconstruction" row labels in a column left of the tiles.
    let (samples, recon) =
        (image::open(run.join("samples.png")).unwrap(), image::open(run.join("reconstructions.png")).unwrap());
    assert_eq!(samples.width(), 8 * 30 + 2);
    assert!(recon.width() > samples.width() + 40, "no label column: {} vs {}", recon.width(), samples.width());
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
        "not a kiln model directory (no kiln.json, nor the vae.json or gan.json or features.json of a run written before it)",
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
    // A TOML error keeps toml's own layout: the line, and a caret under the bad value.
    let path = dir.join("wrongtype.toml");
    std::fs::write(&path, TINY.replace("steps = 40", "steps = \"forty\"")).unwrap();
    let o = kiln(&["train", s(&path), "--out", s(&dir.join("never")), "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.starts_with(&format!("error: {}:\nTOML parse error at line 13", path.display())), "{err}");
    assert!(
        err.contains("13 | steps = \"forty\"\n") && err.contains("^^^^^^^") && err.contains("invalid type"),
        "{err}"
    );
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
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("kiln: wrote {}", small.display())));
    // An output kiln cannot write is refused, not made into a directory (issue 21, bug 6).
    let jpg = out.join("x.jpg");
    fails_with(&kiln(&["resize", s(&input), "--out", s(&jpg), "--scale", "0.5"]), "not .jpg");
    fails_with(&kiln(&["sample", "--checkpoint", s(run), "--n", "2", "--out", s(&jpg)]), "not .jpg");
    assert!(!jpg.exists());
    let npy = out.join("x.npy");
    let o = kiln(&["sample", "--checkpoint", s(run), "--n", "2", "--out", s(&npy)]);
    assert!(o.status.success() && npy.is_file(), "{}", String::from_utf8_lossy(&o.stderr));
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

/// The run the resume tests compare against: 48 steps with a checkpoint every 4, uninterrupted.
const RESUMABLE: &str = r#"
name = "resumable"
seed = 3
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "vae"
widths = [8, 16]
hidden = 32
latent = 4
[train]
steps = 48
batch_size = 16
log_every = 4
checkpoint_every = 4
keep_checkpoints = 2
ema_decay = 0.9
[train.optim]
lr = 2e-3
clip_norm = 50.0
"#;

fn resumable_experiment(dir: &Path) -> PathBuf {
    let exp = dir.join("resumable.toml");
    std::fs::write(&exp, RESUMABLE).unwrap();
    exp
}

fn uninterrupted() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("whole");
        let out = dir.join("run");
        let o = kiln(&["train", s(&resumable_experiment(&dir)), "--out", s(&out), "--quiet"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    })
}

/// The final model, live weights, EMA and optimizer of two runs hold the same tensors, bit for bit,
/// and their metrics logs agree on every window that does not straddle `stopped_at` (a run stopped
/// mid-window logs the part-window it did).
fn assert_same_final_state(a: &Path, b: &Path, stopped_at: u64) {
    let same = |x: PathBuf, y: PathBuf| {
        let (x, y) = (TensorFile::read(&x).unwrap(), TensorFile::read(&y).unwrap());
        // Name the first tensor that differs rather than printing megabytes of floats.
        let names: Vec<&str> = x.names().collect();
        assert_eq!(names, y.names().collect::<Vec<_>>());
        for name in names {
            let (tx, ty) = (x.values(name).unwrap(), y.values(name).unwrap());
            let diff = tx.iter().zip(ty).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            assert!(tx.iter().zip(ty).all(|(p, q)| p.to_bits() == q.to_bits()), "{name} differs (max |Δ| {diff:e})");
        }
        assert!(x == y, "metadata differs");
    };
    same(a.join("vae.safetensors"), b.join("vae.safetensors"));
    let last = a.join("checkpoints/step-00000048");
    let other = b.join("checkpoints/step-00000048");
    for f in ["live.safetensors", "ema.safetensors", "optim.safetensors"] {
        same(last.join(f), other.join(f));
    }
    let log = |p: &Path| std::fs::read_to_string(p.join("metrics.jsonl")).unwrap();
    let losses = |text: String| -> Vec<(u64, f64)> {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
            .filter(|&(step, _)| step % 4 == 0 && !(step - 4 < stopped_at && stopped_at < step))
            .collect()
    };
    assert_eq!(losses(log(a)), losses(log(b)), "the metrics log reads as one run");
}

/// Spawns `kiln train`, waits until it has written a checkpoint at step ≥ `after`, then signals it.
fn train_and_interrupt(exp: &Path, out: &Path, after: usize, signal: &str) -> std::process::ExitStatus {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["train", s(exp), "--out", s(out), "--quiet"])
        .current_dir(root())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let newest = kiln_train::latest_checkpoint(out).map(|(step, _)| step).unwrap_or(0);
        if newest >= after || Instant::now() > deadline {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // A moment that is not a checkpoint boundary, varying from run to run.
    std::thread::sleep(Duration::from_millis(u64::from(std::process::id() % 40)));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    child.wait().unwrap()
}

#[test]
fn a_run_stopped_and_resumed_ends_bit_identical_to_an_uninterrupted_one() {
    let whole = uninterrupted();
    let dir = scratch("halves");
    let out = dir.join("run");
    let exp = resumable_experiment(&dir);
    let o = kiln(&["train", s(&exp), "--out", s(&out), "--steps", "20", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(kiln_train::latest_checkpoint(&out).unwrap().0, 20);
    let o = kiln(&["train", "--resume", s(&out), "--steps", "48", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming resumable"));
    assert_same_final_state(whole, &out, 20);
    let kept: Vec<usize> = kiln_train::list_checkpoints(&out).into_iter().map(|(s, _)| s).collect();
    assert_eq!(kept, vec![44, 48], "keep_checkpoints = 2");
}

#[test]
fn a_run_killed_with_sigkill_resumes_from_its_last_checkpoint_and_ends_identical() {
    let whole = uninterrupted();
    let dir = scratch("sigkill");
    let out = dir.join("run");
    let exp = resumable_experiment(&dir);
    let status = train_and_interrupt(&exp, &out, 12, "-KILL");
    assert!(!status.success(), "the process was killed before finishing (status {status})");
    // Whatever the moment, every checkpoint directory under its final name is complete.
    let kept = kiln_train::list_checkpoints(&out);
    assert!(!kept.is_empty());
    for (_, ckpt) in &kept {
        for f in
            ["trainer.json", "vae.json", "vae.safetensors", "live.safetensors", "ema.safetensors", "optim.safetensors"]
        {
            assert!(ckpt.join(f).is_file(), "{} lacks {f}", ckpt.display());
        }
    }
    let resumed_from = kiln_train::latest_checkpoint(&out).unwrap().0 as u64;
    let o = kiln(&["train", "--resume", s(&out), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_final_state(whole, &out, resumed_from);
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_zero() {
    let whole = uninterrupted();
    let dir = scratch("sigint");
    let out = dir.join("run");
    let exp = resumable_experiment(&dir);
    let status = train_and_interrupt(&exp, &out, 8, "-INT");
    assert!(status.success(), "Ctrl-C exits 0, got {status}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["stopped_by"], "signal");
    let stopped_at = summary["steps"].as_u64().unwrap();
    assert!((8..48).contains(&stopped_at), "stopped at {stopped_at}");
    assert_eq!(kiln_train::latest_checkpoint(&out).unwrap().0 as u64, stopped_at, "checkpoint at the stop");
    let o = kiln(&["train", "--resume", s(&out), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_final_state(whole, &out, stopped_at);
}

#[test]
fn resume_mistakes_are_one_clear_line() {
    let dir = scratch("badresume");
    fails_with(&kiln(&["train", "--resume", s(&dir.join("nothing"))]), "nothing/experiment.toml: cannot read");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("experiment.toml"), RESUMABLE).unwrap();
    fails_with(&kiln(&["train", "--resume", s(&empty)]), "no checkpoint to resume from");
    let out = dir.join("run");
    let exp = resumable_experiment(&dir);
    let o = kiln(&["train", s(&exp), "--out", s(&out), "--steps", "4", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fails_with(&kiln(&["train", s(&exp), "--out", s(&out), "--quiet"]), "already holds a checkpoint at step 4");
    // clap's own format for a bad flag value: an error line plus a hint to try --help.
    let o = kiln(&["train", s(&exp), "--time-budget", "ten minutes"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.starts_with("error: ") && err.contains("expected a duration such as 90s"),
        "{err}"
    );
    // Another experiment file on resume: refused before anything is written, naming the keys
    // (issue 21, bug 3: it used to overwrite the run's experiment.toml and continue at the new lr).
    let before = std::fs::read_to_string(out.join("experiment.toml")).unwrap();
    let other = dir.join("other.toml");
    std::fs::write(&other, RESUMABLE.replace("lr = 2e-3", "lr = 1e-2").replace("latent = 4", "latent = 6")).unwrap();
    fails_with(
        &kiln(&["train", s(&other), "--resume", s(&out), "--quiet"]),
        "in model.latent, train.optim.lr; a resumed run",
    );
    assert_eq!(std::fs::read_to_string(out.join("experiment.toml")).unwrap(), before);
    // A longer budget is fine, and resumes.jsonl says what changed.
    std::fs::write(&other, RESUMABLE.replace("steps = 48", "steps = 6")).unwrap();
    let o = kiln(&["train", s(&other), "--resume", s(&out), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resumes = std::fs::read_to_string(out.join("resumes.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(resumes.lines().last().unwrap()).unwrap();
    assert_eq!(last["changed"], serde_json::json!(["train.steps"]), "{last}");
    // A budget the run has already passed is refused, not reported as "step 6 of 5".
    fails_with(
        &kiln(&["train", "--resume", s(&out), "--steps", "5"]),
        "the run is at step 6, so 5 steps leave nothing",
    );
    // A crash while writing the only checkpoint leaves .tmp-step-*: said so, not "empty".
    let crashed = dir.join("crashed");
    std::fs::create_dir_all(crashed.join("checkpoints/.tmp-step-00000004-1")).unwrap();
    std::fs::write(crashed.join("experiment.toml"), RESUMABLE).unwrap();
    fails_with(&kiln(&["train", "--resume", s(&crashed)]), "holds only an unfinished one");
    std::fs::write(out.join("checkpoints/step-00000006/optim.safetensors"), b"garbage").unwrap();
    // Asked for exactly that checkpoint, the damage is the error (found once the checkpoint is
    // read, after the banner line).
    let o = kiln(&["train", "--resume", s(&out), "--resume-from", "6", "--steps", "8", "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains("optim.safetensors: checksum mismatch"), "{err}");
    // Otherwise the run continues from the newest checkpoint that verifies, saying why.
    let o = kiln(&["train", "--resume", s(&out), "--steps", "8", "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("skipping checkpoint") && err.contains("step-00000006/optim.safetensors: checksum mismatch"),
        "{err}"
    );
}

const TINY_CGAN: &str = r#"
name = "tiny-cgan"
seed = 3
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "gan"
preset = "cgan28"
ngf = 8
ndf = 8
[train]
steps = 30
batch_size = 32
log_every = 10
preview_every = 15
"#;

/// One tiny class-conditional GAN run shared by the GAN tests.
fn trained_gan() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("train-gan");
        let exp = dir.join("cgan.toml");
        std::fs::write(&exp, TINY_CGAN).unwrap();
        let out = dir.join("run");
        let o = kiln(&["train", s(&exp), "--out", s(&out), "--quiet"]);
        assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
        out
    })
}

#[test]
fn a_conditional_gan_trains_and_samples_the_classes_asked_for() {
    let run = trained_gan();
    for file in ["gan.json", "generator.safetensors", "discriminator.safetensors", "samples.png", "samples-ema.png"] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
    // The run records the whole recipe it trained with, the preset's learning rates and betas too.
    let resolved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("resolved.json")).unwrap()).unwrap();
    assert_eq!(resolved["family"], "gan");
    let train = &resolved["settings"]["train"];
    assert!(train["g_optim"]["lr"].is_number() && train["d_optim"]["beta1"].is_number(), "{resolved}");
    assert_eq!(resolved["settings"]["model"]["num_classes"], 10);
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    for metric in ["d_loss", "g_loss", "d_real_acc", "d_fake_acc", "diversity"] {
        assert!(first[metric].is_number(), "no {metric} in {first}");
    }
    // The preview grid has one row per digit class, under its caption band.
    assert_eq!(image::open(run.join("samples-ema.png")).unwrap().height(), CAPTION + 10 * 30 + 2);

    let out = scratch("gan-sample");
    let sevens = out.join("sevens.png");
    let o = kiln(&["sample", "--checkpoint", s(run), "--class", "7", "--n", "16", "--out", s(&sevens)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(image::open(&sevens).unwrap().height(), 2 * 30 + 2);
    // The class changes the images; the same class and seed give the same ones.
    let threes = out.join("threes.png");
    assert!(
        kiln(&["sample", "--checkpoint", s(run), "--class", "3", "--n", "16", "--out", s(&threes)]).status.success()
    );
    assert_ne!(std::fs::read(&sevens).unwrap(), std::fs::read(&threes).unwrap());
    let again = out.join("again.png");
    assert!(
        kiln(&["sample", "--checkpoint", s(run), "--class", "7", "--n", "16", "--out", s(&again)]).status.success()
    );
    assert_eq!(std::fs::read(&sevens).unwrap(), std::fs::read(&again).unwrap());
    let truncated = out.join("truncated.png");
    let o = kiln(&["sample", "--checkpoint", s(run), "--class", "7", "--truncation", "0.5", "--out", s(&truncated)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // As a .npy, each sample's class goes beside the samples, in their order: grid rows of 8
    // cycle through the classes asked for.
    let npy = out.join("mixed.npy");
    let o = kiln(&["sample", "--checkpoint", s(run), "--class", "2,5", "--n", "20", "--out", s(&npy)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let labels = std::fs::read(out.join("mixed.labels.npy")).unwrap();
    let header_len = usize::from(u16::from_le_bytes([labels[8], labels[9]]));
    let header = std::str::from_utf8(&labels[10..10 + header_len]).unwrap();
    assert!(header.contains("'<i8'") && header.contains("(20,"), "{header}");
    let classes: Vec<i64> =
        labels[10 + header_len..].chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    let expected: Vec<i64> = (0..20).map(|i| if (i / 8) % 2 == 0 { 2 } else { 5 }).collect();
    assert_eq!(classes, expected);

    let strips = out.join("strips.png");
    let o = kiln(&[
        "interpolate",
        "--checkpoint",
        s(run),
        "--steps",
        "5",
        "--rows",
        "3",
        "--class",
        "1,4",
        "--out",
        s(&strips),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(image::open(&strips).unwrap().width(), 5 * 30 + 2);

    fails_with(&kiln(&["sample", "--checkpoint", s(run), "--class", "10", "--out", s(&sevens)]), "--class 10");
    fails_with(&kiln(&["sample", "--checkpoint", s(run), "--truncation=-1", "--out", s(&sevens)]), "--truncation -1");
    fails_with(&kiln(&["reconstruct", "--checkpoint", s(run), "--out", s(&out.join("r.png"))]), "no encoder");
    // A VAE takes no class.
    fails_with(&kiln(&["sample", "--checkpoint", s(trained()), "--class", "1", "--out", s(&sevens)]), "--class");
}

#[test]
fn a_gan_trains_on_the_emoji_sheet_conditioned_on_its_categories() {
    let dir = scratch("gan-emoji");
    let exp = dir.join("emoji.toml");
    let text = r#"
name = "tiny-sagan"
[data]
format = "emoji"
path = "datasets/emoji-32"
[model]
family = "gan"
preset = "sagan32"
ngf = 4
ndf = 4
conditional = true
[train]
steps = 2
batch_size = 8
[train.gan]
d_optim = { lr = 1e-4 }
"#;
    std::fs::write(&exp, text).unwrap();
    let out = dir.join("run");
    let o = kiln(&["train", s(&exp), "--out", s(&out), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gan.json")).unwrap()).unwrap();
    // emoji-data's ten categories, Component and Flags included.
    let classes = config["num_classes"].as_u64().unwrap();
    assert_eq!(classes, 10, "{config}");
    assert_eq!(config["attention"], 16);
    let grid = image::open(out.join("samples-ema.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (8 * 34 + 2, CAPTION + classes as u32 * 34 + 2));
    // Scored with the emoji extractor; 1,911 images split into halves of 955 and 956.
    let o = kiln(&["eval", "--checkpoint", s(&out), "--n", "16"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval-emoji32.json")).unwrap()).unwrap();
    assert_eq!((&e["extractor"]["name"], &e["reference"]["images"]), (&"emoji32".into(), &955.into()));
}

/// A VQ-VAE is no generator: it trains on the emoji sheet, writes its code histogram and its
/// reconstruction figures, reconstructs the run's own (emoji) images, and refuses to sample with
/// the reason and the way out.
#[test]
fn a_vqvae_reconstructs_emoji_and_refuses_to_sample_without_a_prior() {
    let dir = scratch("vqvae-emoji");
    let exp = dir.join("vq.toml");
    let text = r#"
name = "tiny-vqvae"
[data]
format = "emoji"
path = "datasets/emoji-32"
[model]
family = "vqvae"
preset = "emoji32"
hidden = 8
res_hidden = 4
res_blocks = 1
codebook_size = 16
code_dim = 4
[train]
steps = 20
batch_size = 16
log_every = 10
[train.vqvae]
restart_threshold = 0.5
"#;
    std::fs::write(&exp, text).unwrap();
    let out = dir.join("run");
    let o = kiln(&["train", s(&exp), "--out", s(&out), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in ["reconstructions.png", "codes.png", "kiln.json", "vqvae.json", "vqvae.safetensors", "eval.json"] {
        assert!(out.join(file).is_file(), "missing {file}");
    }
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    assert_eq!(e["images"], 1911, "{e}");
    let (mse, nmse, var) =
        (e["recon_mse"].as_f64().unwrap(), e["nmse"].as_f64().unwrap(), e["data_variance"].as_f64().unwrap());
    assert!((nmse - mse / var).abs() < 1e-9 && e["perplexity"].as_f64().unwrap() >= 1.0, "{e}");
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    for key in ["loss", "recon_mse", "nmse", "psnr", "perplexity", "usage"] {
        assert!(first[key].is_f64(), "metrics.jsonl lacks {key}: {first}");
    }

    let recon = dir.join("recon.png");
    let o = kiln(&["reconstruct", "--checkpoint", s(&out), "--n", "8", "--out", s(&recon)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(image::open(&recon).unwrap().height(), 2 * 34 + 2);
    fails_with(&kiln(&["sample", "--checkpoint", s(&out), "--out", s(&dir.join("x.png"))]), "has no prior of its own");
    fails_with(
        &kiln(&["interpolate", "--checkpoint", s(&out), "--out", s(&dir.join("x.png"))]),
        "no continuous latent space",
    );
}

/// A float32 `.npy` of `values` shaped `shape`, as `kiln sample --out x.npy` and NumPy write it.
fn write_npy(path: &Path, shape: &[usize], values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy_bytes(path, "<f4", shape, &bytes);
}

fn write_npy_i64(path: &Path, values: &[i64]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy_bytes(path, "<i8", &[values.len()], &bytes);
}

fn write_npy_bytes(path: &Path, descr: &str, shape: &[usize], values: &[u8]) {
    let dims: String = shape.iter().map(|d| format!("{d}, ")).collect();
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    header.push_str(&" ".repeat((64 - (10 + header.len() + 1) % 64) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(values);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn eval_scores_a_sample_file_or_folder_against_a_data_set() {
    let out = scratch("eval-samples");
    let data = root().join("datasets/mnist-sample");
    let test = kiln_data::Mnist::load(&data, kiln_data::Split::Test).unwrap();
    let n = 300;
    // Held-out real digits, as another framework would hand over its samples.
    let real: Vec<f32> = test.pixels[..n * 784].iter().map(|&b| f32::from(b) / 255.0).collect();
    let noise: Vec<f32> = (0..n * 784).map(|i| (i.wrapping_mul(2_654_435_761) % 1000) as f32 / 999.0).collect();
    let (real_npy, noise_npy) = (out.join("real.npy"), out.join("noise.npy"));
    write_npy(&real_npy, &[n, 1, 28, 28], &real);
    write_npy(&noise_npy, &[n, 1, 28, 28], &noise);
    let score = |args: &[&str], json: &Path| -> serde_json::Value {
        let mut all = vec!["eval"];
        all.extend_from_slice(args);
        all.extend(["--out", s(json)]);
        let o = kiln(&all);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
    };
    let against_data = |file: &Path| {
        score(&["--samples", s(file), "--data", s(&data), "--real-n", "300"], &file.with_extension("json"))
    };
    let (r, z) = (against_data(&real_npy), against_data(&noise_npy));
    assert_eq!((&r["model"]["images"], &r["reference"]["images"]), (&300.into(), &300.into()), "{r}");
    assert_eq!(r["samples"], s(&real_npy));
    // Real digits score near the floor, noise far above it.
    let fid = |e: &serde_json::Value| e["model"]["fid"].as_f64().unwrap();
    assert!(fid(&r) * 5.0 < fid(&z), "real {} vs noise {}", fid(&r), fid(&z));
    // The class histogram: the held-out digits cover all ten classes; noise collapses onto few.
    let histogram = |e: &serde_json::Value| -> Vec<u64> {
        e["model"]["class_histogram"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect()
    };
    let h = histogram(&r);
    assert_eq!((h.len(), h.iter().sum::<u64>()), (10, 300), "{h:?}");
    assert!(h.iter().all(|&c| c >= 10), "{h:?}");
    assert!(histogram(&z).iter().filter(|&&c| c > 0).count() < 10, "{z}");
    // --labels: the class each sample was drawn for. The digits' own labels agree with the
    // classifier; labels shifted by one class do not.
    assert!(r["model"].get("class_accuracy").is_none(), "{r}");
    let with_labels = |labels: Vec<i64>, name: &str| {
        let path = out.join(format!("{name}.npy"));
        write_npy_i64(&path, &labels);
        let args = ["--samples", s(&real_npy), "--data", s(&data), "--real-n", "300", "--labels", s(&path)];
        score(&args, &out.join(format!("{name}.json")))["model"]["class_accuracy"].as_f64().unwrap()
    };
    let truth: Vec<i64> = test.labels[..n].iter().map(|&l| i64::from(l)).collect();
    let right = with_labels(truth.clone(), "labels");
    let wrong = with_labels(truth.iter().map(|l| (l + 1) % 10).collect(), "shifted");
    assert!(right > 0.9 && wrong < 0.2, "true labels {right}, shifted {wrong}");
    write_npy_i64(&out.join("short.npy"), &truth[..10]);
    fails_with(
        &kiln(&["eval", "--samples", s(&real_npy), "--data", s(&data), "--labels", s(&out.join("short.npy"))]),
        "short.npy: 10 labels for 300 scored samples",
    );

    // A folder of grey PNGs holding the same first 60 digits scores exactly as the .npy of them.
    let (few, folder) = (60, out.join("pngs"));
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..few {
        let pixels = test.pixels[i * 784..(i + 1) * 784].to_vec();
        image::GrayImage::from_raw(28, 28, pixels).unwrap().save(folder.join(format!("{i:03}.png"))).unwrap();
    }
    let few_npy = out.join("few.npy");
    write_npy(&few_npy, &[few, 1, 28, 28], &real[..few * 784]);
    let a = score(&["--samples", s(&folder), "--data", s(&data), "--real-n", "100"], &out.join("pngs.json"));
    let b = score(&["--samples", s(&few_npy), "--data", s(&data), "--real-n", "100"], &out.join("few.json"));
    assert_eq!(a["model"], b["model"]);
    // --n scores the first N; beside a run, its data is the reference.
    let c = score(&["--samples", s(&real_npy), "--checkpoint", s(trained()), "--n", "50"], &out.join("run.json"));
    assert_eq!((&c["model"]["images"], &c["reference"]["images"]), (&50.into(), &2250.into()), "{c}");

    fails_with(&kiln(&["eval", "--samples", s(&real_npy)]), "--checkpoint RUN or --data DIR");
    fails_with(
        &kiln(&["eval", "--samples", s(&real_npy), "--data", "datasets/emoji-32", "--data-format", "emoji"]),
        "1×28×28 images; the real images are 3×32×32",
    );
    fails_with(&kiln(&["eval", "--samples", s(&few_npy), "--data", s(&data), "--n", "61"]), "holds 60 images");
    let bad = out.join("bad.npy");
    write_npy(&bad, &[20, 1, 28, 28], &vec![1.5; 20 * 784]);
    fails_with(&kiln(&["eval", "--samples", s(&bad), "--data", s(&data)]), "bad.npy: value 1.5");
}

#[test]
fn eval_scores_a_model_next_to_the_real_data_floor() {
    let run = trained();
    let out = scratch("eval");
    let json = out.join("eval.json");
    // Too few samples for the Inception Score's ten splits: a clear error before any work.
    let o = kiln(&["eval", "--checkpoint", s(run), "--n", "5", "--out", s(&json)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--n 5: at least 10 samples"), "{err}");
    assert!(!json.exists());
    let o = kiln(&["eval", "--checkpoint", s(run), "--n", "300", "--out", s(&json)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(e["extractor"]["name"], "mnist");
    assert_eq!(e["model"]["images"], 300);
    assert_eq!(e["reference"]["images"], 2250);
    let (model, floor) = (&e["model"], &e["real_floor"]);
    // Real digits against real digits sit far below a 40-step VAE's blurry samples.
    assert!(floor["fid"].as_f64().unwrap() < model["fid"].as_f64().unwrap(), "{e}");
    assert!(floor["precision"].as_f64().unwrap() > 0.5 && floor["recall"].as_f64().unwrap() > 0.5, "{e}");
    // Real digits are confidently and evenly classified: IS near the 10 classes.
    assert!(floor["inception_score"].as_f64().unwrap() > 7.0, "{e}");
    // The same experiment trained again with the same seed, then scored, gives the same numbers.
    let exp = out.join("tiny.toml");
    std::fs::write(&exp, TINY).unwrap();
    let rerun = out.join("rerun");
    assert!(kiln(&["train", s(&exp), "--out", s(&rerun), "--quiet"]).status.success());
    let again = out.join("again.json");
    assert!(kiln(&["eval", "--checkpoint", s(&rerun), "--n", "300", "--out", s(&again)]).status.success());
    let a: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&again).unwrap()).unwrap();
    assert_eq!(a["model"], e["model"]);
    assert_eq!(a["real_floor"], e["real_floor"]);

    // A conditional GAN is also scored on whether it draws the classes it is asked for.
    let o = kiln(&["eval", "--checkpoint", s(trained_gan()), "--n", "100", "--out", s(&json)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!((0.0..=1.0).contains(&e["model"]["class_accuracy"].as_f64().unwrap()), "{e}");

    fails_with(&kiln(&["eval", "--checkpoint", s(run), "--extractor", "imagenet"]), "--extractor imagenet");
    fails_with(&kiln(&["eval", "--checkpoint", s(run), "--extractor", "emoji32"]), "3×32×32");
    fails_with(&kiln(&["eval", "--checkpoint", s(run), "--n", "1"]), "--n 1");
    fails_with(&kiln(&["eval", "--checkpoint", s(run), "--real-n", "1"]), "--real-n 1");
    fails_with(
        &kiln(&["eval", "--checkpoint", s(run), "--extractor", "inception=/no/such/pt_inception.pth"]),
        "/no/such/pt_inception.pth",
    );
    // --real-n caps both halves, so model and floor use the same smaller counts.
    let o = kiln(&["eval", "--checkpoint", s(run), "--real-n", "200", "--out", s(&json)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        (&e["reference"]["images"], &e["model"]["images"], &e["real_floor"]["images"]),
        (&200.into(), &200.into(), &200.into())
    );
}

/// A tiny HTTP/1.1 server on 127.0.0.1 for the weights tests: answers `GET /NAME` with `body`
/// (whole, ignoring any Range) and anything else with 404, one connection at a time, and logs
/// every path asked for. Returns its base URL and the log.
fn serve_file(name: &'static str, body: Vec<u8>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut reader = std::io::BufReader::new(&stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header != "\r\n" {
                header.clear();
            }
            let found = path == format!("/{name}");
            seen.lock().unwrap().push(path);
            let _ = if found {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body))
            } else {
                stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            };
            let _ = stream.flush();
        }
    });
    (base, log)
}

/// A `pytorch-weights` manifest for one file, as a mirror of `datasets/pt-inception.toml` would be.
fn weights_manifest(dir: &Path, name: &str, url: &str, sha256: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\ndescription = \"stand-in Inception weights\"\nhomepage = \"\"\nlicence = \"test\"\n\
         citation = \"none\"\nformat = \"pytorch-weights\"\n\n[[files]]\nname = \"weights.safetensors\"\n\
         url = \"{url}\"\nsha256 = \"{sha256}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `--extractor inception=MANIFEST` downloads the weights once through kiln-data's verified
/// fetcher, scores with the full InceptionV3 (deterministic stand-in weights, the size of the
/// real ones), and a second eval reads them from the data directory without touching the server.
#[test]
fn eval_inception_fetches_its_weights_once_then_works_offline() {
    let start = Instant::now();
    let run = trained();
    let dir = scratch("inception-fetch");
    let standin = dir.join("standin.safetensors");
    kiln_inception::standin::write_safetensors(&standin).unwrap();
    let sha256 = kiln_data::sha256_file(&standin).unwrap();
    let (base, log) = serve_file("w.safetensors", std::fs::read(&standin).unwrap());
    let manifest = weights_manifest(&dir, "inception-mirror", &format!("{base}/w.safetensors"), &sha256);
    let data = dir.join("data");
    let extractor = format!("inception={}", s(&manifest));
    // Ten images each: the fewest the Inception Score's ten splits take.
    let eval = |out: &Path| {
        let args = ["--extractor", &extractor, "--data-dir", s(&data), "--n", "10", "--real-n", "10"];
        let o = kiln(&[&["eval", "--checkpoint", s(run), "--out", s(out)][..], &args[..]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
        (e, String::from_utf8_lossy(&o.stderr).into_owned())
    };

    let (e, stderr) = eval(&dir.join("first.json"));
    let cached = data.join("inception-mirror/weights.safetensors");
    assert_eq!(*log.lock().unwrap(), ["/w.safetensors"]);
    assert!(stderr.contains(&format!("downloaded {} from {base}/w.safetensors", cached.display())), "{stderr}");
    assert_eq!(kiln_data::sha256_file(&cached).unwrap(), sha256);
    assert!(!kiln_data::part_path(&cached).exists());
    let x = &e["extractor"];
    assert_eq!(
        (&x["name"], &x["sha256"], &x["path"]),
        (&"inception".into(), &sha256.clone().into(), &s(&cached).into())
    );
    assert_eq!((&x["feature_dim"], &x["classes"]), (&2048.into(), &1008.into()));
    assert_eq!(
        (&e["reference"]["images"], &e["model"]["images"], &e["real_floor"]["images"]),
        (&10.into(), &10.into(), &10.into())
    );
    assert!(e["model"]["fid"].as_f64().unwrap().is_finite(), "{e}");

    // Cached and verified: the server is not asked again, and the scores are the same.
    let (again, stderr) = eval(&dir.join("second.json"));
    assert_eq!(log.lock().unwrap().len(), 1, "the second eval used the network: {:?}", log.lock().unwrap());
    assert!(!stderr.contains("downloaded"), "{stderr}");
    assert_eq!((&again["model"], &again["real_floor"]), (&e["model"], &e["real_floor"]));
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("inception fetch test: {:.1} s", start.elapsed().as_secs_f64());
}

/// What can go wrong fetching the weights gives one line naming the file, the address or the
/// manifest, and leaves nothing under the weights' final name.
#[test]
fn eval_inception_weights_that_do_not_verify_or_cannot_be_fetched_are_one_clear_line() {
    let run = trained();
    let dir = scratch("inception-bad");
    let body = b"these are not the weights".to_vec();
    std::fs::write(dir.join("body"), &body).unwrap();
    let found = kiln_data::sha256_file(&dir.join("body")).unwrap();
    let (base, log) = serve_file("w.safetensors", body);
    let data = dir.join("data");
    let eval = |manifest: &Path| {
        let extractor = format!("inception={}", s(manifest));
        kiln(&["eval", "--checkpoint", s(run), "--extractor", &extractor, "--data-dir", s(&data), "--n", "10"])
    };

    // The server sends other bytes than the manifest pins: both digests and the file are named.
    let pinned = "ab".repeat(32);
    let manifest = weights_manifest(&dir, "mirror", &format!("{base}/w.safetensors"), &pinned);
    let dest = data.join("mirror/weights.safetensors");
    let o = eval(&manifest);
    fails_with(&o, &format!("{}: sha256 is {found}, expected {pinned}", dest.display()));
    fails_with(&o, &format!("{base}/w.safetensors"));
    assert!(!dest.exists() && !kiln_data::part_path(&dest).exists());

    // Nothing cached and nothing to download: say what is needed, from where, and the ways out.
    let manifest = weights_manifest(&dir, "gone", &format!("{base}/missing.pth"), &pinned);
    let o = eval(&manifest);
    fails_with(&o, &format!("{base}/missing.pth: HTTP 404"));
    fails_with(&o, &format!("`kiln data fetch {}`", s(&manifest)));
    fails_with(&o, "--extractor inception=FILE");
    assert_eq!(log.lock().unwrap().len(), 2);

    // A data set's manifest is not a weights manifest; a missing one is named.
    fails_with(&eval(&root().join("datasets/mnist.toml")), "pytorch-weights");
    fails_with(&eval(&dir.join("no-such.toml")), "no-such.toml");
    // The built-in manifest is listed with the data sets, not fetched.
    let o = kiln(&["data", "ls", "--data-dir", s(&data)]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("pt-inception"), "{}", String::from_utf8_lossy(&o.stdout));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn families_lists_the_registry_and_a_classifier_directory_is_no_generator() {
    let o = kiln(&["families", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let families: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = families.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names[..3], ["vae", "gan", "classifier"]);
    let generator = |name: &str| families.iter().find(|f| f["name"] == name).unwrap()["generator"].as_bool().unwrap();
    assert_eq!(
        ["vae", "gan", "classifier", "vqvae", "draw", "dalle"].map(generator),
        [true, true, false, false, true, true]
    );
    // A model directory names its family; one this kiln does not know is a clear error.
    let dir = scratch("foreign");
    std::fs::write(dir.join("kiln.json"), r#"{"family": "hologram", "format": 1, "kiln_version": "9.0.0"}"#).unwrap();
    fails_with(&kiln(&["sample", "--checkpoint", s(&dir), "--out", s(&dir.join("x.png"))]), "family \"hologram\"");
    std::fs::write(dir.join("kiln.json"), r#"{"family": "vae", "format": 99, "kiln_version": "9.0.0"}"#).unwrap();
    fails_with(&kiln(&["sample", "--checkpoint", s(&dir), "--out", s(&dir.join("x.png"))]), "written by a newer kiln");
}

#[test]
fn threads_sizes_the_cpu_pool_and_zero_is_an_error() {
    let dir = scratch("threads");
    let exp = dir.join("tiny.toml");
    std::fs::write(&exp, TINY).unwrap();
    let out = dir.join("run");
    let o = kiln(&["train", s(&exp), "--out", s(&out), "--steps", "2", "--quiet", "--threads", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let device = info["device"].as_str().unwrap_or_default();
    assert!(device.starts_with("cpu (") && device.ends_with(", 1 thread)"), "{info}");
    // A global flag: accepted before the subcommand as well as after it.
    fails_with(&kiln(&["--threads", "0", "data", "ls"]), "--threads must be at least 1");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A DRAW run (each batch in two shards) samples its drawing sequence: beside the grid, `kiln
/// sample` writes the strip (samples by steps) and a looping GIF with one frame per drawing step.
#[test]
fn a_draw_model_samples_its_drawing_steps_as_a_strip_and_a_looping_gif() {
    let dir = scratch("draw");
    let exp = dir.join("draw.toml");
    let text = r#"
name = "tiny-draw"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "draw"
steps = 5
hidden = 16
latent = 4
write = 3
[train]
steps = 20
batch_size = 16
log_every = 10
[train.optim]
lr = 3e-3
clip_norm = 10.0
[train.draw]
shards = 2
"#;
    // More shards than examples in a batch: refused by name before anything runs.
    std::fs::write(&exp, text.replace("shards = 2", "shards = 17")).unwrap();
    let run = dir.join("run");
    fails_with(
        &kiln(&["train", s(&exp), "--out", s(&run), "--quiet"]),
        "train.draw.shards = 17: must be from 1 to the batch size (16)",
    );
    std::fs::write(&exp, text).unwrap();
    let o = kiln(&["train", s(&exp), "--out", s(&run), "--quiet"]);
    assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
    for f in ["samples.png", "steps.png", "eval.json", "kiln.json", "draw.json", "draw.safetensors"] {
        assert!(run.join(f).is_file(), "{f} missing from the run directory");
    }
    let eval: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap();
    let nelbo = eval["neg_elbo_nats"].as_f64().unwrap();
    assert!(nelbo.is_finite() && nelbo > 0.0, "{eval}");

    let png = dir.join("x.png");
    let o = kiln(&["sample", "--checkpoint", s(&run), "--n", "10", "--out", s(&png)]);
    assert!(o.status.success(), "sample failed: {}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("x-steps.png") && err.contains("x.gif"), "{err}");
    // The strip: up to 8 samples down, the 5 steps across (tiles 28 px plus 2 px gaps).
    let strip = image::open(dir.join("x-steps.png")).unwrap();
    assert_eq!((strip.width(), strip.height()), (5 * 30 + 2, 8 * 30 + 2));
    // The GIF: one frame per step, each the 10-sample grid (8 to a row), looping forever.
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    let mut decoder = options.read_info(std::fs::File::open(dir.join("x.gif")).unwrap()).unwrap();
    assert_eq!(decoder.repeat(), gif::Repeat::Infinite);
    assert_eq!((decoder.width(), decoder.height()), (8 * 30 + 2, 2 * 30 + 2));
    let mut frames = 0;
    while decoder.read_next_frame().unwrap().is_some() {
        frames += 1;
    }
    assert_eq!(frames, 5);
    // A DRAW model has no class to ask for.
    let o = kiln(&["sample", "--checkpoint", s(&run), "--class", "3", "--out", s(&png)]);
    fails_with(&o, "--class");
}

#[test]
fn a_dalle_trains_its_tokenizer_first_then_draws_prompts_and_a_prior_samples_its_codes() {
    let dir = scratch("dalle");
    let vq = dir.join("vq.toml");
    std::fs::write(
        &vq,
        r#"
name = "tiny-vq"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "vqvae"
hidden = 8
res_hidden = 4
codebook_size = 16
code_dim = 4
[train]
steps = 15
batch_size = 32
log_every = 5
"#,
    )
    .unwrap();
    let dalle = |extra: &str| {
        format!(
            r#"
name = "tiny-dalle"
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "dalle"
tokenizer = "{}"
width = 16
layers = 1
heads = 2
text_vocab = 300
{extra}
[train]
steps = 12
batch_size = 16
log_every = 4
[train.dalle]
label_captions = ["a zero", "a one", "a two", "a three", "a four", "a five", "a six", "a seven", "an eight", "a nine"]
preview = ["a seven", "a one"]
"#,
            s(&vq)
        )
    };
    let exp = dir.join("dalle.toml");
    std::fs::write(&exp, dalle("")).unwrap();
    let out = dir.join("run");
    let o = kiln(&["train", s(&exp), "--out", s(&out), "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("first stage"), "{err}");
    assert!(out.join("tokenizer/kiln.json").is_file() && out.join("tokenizer/checkpoints").is_dir());
    for file in
        ["samples.png", "kiln.json", "dalle.json", "dalle.safetensors", "bpe.json", "vqvae/kiln.json", "eval.json"]
    {
        assert!(out.join(file).is_file(), "missing {file}");
    }
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    assert!(e["image_ce"].as_f64().unwrap() > 0.0 && e["class_accuracy"].as_f64().is_some(), "{e}");
    // Two preview rows of eight 28×28 samples.
    assert_eq!(image::open(out.join("samples.png")).unwrap().height(), CAPTION + 2 * 30 + 2);

    // Prompts from the command line and from a file, one grid row each; same seed, same grid.
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, "a three\n\n  a nine  \n").unwrap();
    let grid = dir.join("g.png");
    let args = ["generate", "--checkpoint", s(&out), "a seven", "--prompts-file", s(&prompts), "--n", "4"];
    let run = |extra: &[&str], to: &Path| {
        let mut all = args.to_vec();
        all.extend_from_slice(extra);
        all.extend_from_slice(&["--out", s(to)]);
        let o = kiln(&all);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(to).unwrap()
    };
    let a = run(&["--guidance", "2", "--top-k", "8"], &grid);
    let g = image::open(&grid).unwrap();
    assert_eq!((g.width(), g.height()), (4 * 30 + 2, 3 * 30 + 2));
    assert_eq!(a, run(&["--guidance", "2", "--top-k", "8"], &dir.join("g2.png")));
    assert_ne!(a, run(&["--temperature", "0.5"], &dir.join("g3.png")));
    // Bad requests are one line naming the flag.
    fails_with(&kiln(&["generate", "--checkpoint", s(&out), "--n", "2", "--out", s(&grid)]), "no prompt");
    fails_with(&kiln(&[&args[..4], &["--top-p", "1.5", "--out", s(&grid)]].concat()), "--top-p 1.5");
    fails_with(&kiln(&["sample", "--checkpoint", s(&out), "--truncation", "0.5", "--out", s(&grid)]), "--truncation");

    // The same transformer with no text is a prior: the VQ-VAE becomes a generator. The first
    // stage is already trained in its own run, so it is named directly.
    let prior_exp = dir.join("prior.toml");
    let text = dalle("text_len = 0").replace(s(&vq), s(&out.join("tokenizer")));
    std::fs::write(&prior_exp, text).unwrap();
    let prior = dir.join("prior");
    let o = kiln(&["train", s(&prior_exp), "--out", s(&prior), "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("first stage"), "{err}");
    assert!(!prior.join("bpe.json").exists());
    let png = dir.join("prior.png");
    let o = kiln(&["sample", "--checkpoint", s(&prior), "--n", "8", "--top-p", "0.9", "--out", s(&png)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fails_with(&kiln(&["generate", "--checkpoint", s(&prior), "a one", "--out", s(&png)]), "takes no text prompt");
}

#[test]
fn a_dalle_trains_on_a_folder_of_captioned_pictures() {
    let dir = scratch("captioned");
    let data = dir.join("pics");
    std::fs::create_dir_all(&data).unwrap();
    // Eight 20×20 pictures in two colours, resized to 16×16 on loading.
    let mut lines = String::new();
    for i in 0..8u8 {
        let (name, rgb) = if i % 2 == 0 { ("a red square", [220, 20, 20]) } else { ("a blue square", [20, 20, 220]) };
        let img = image::RgbImage::from_pixel(20, 20, image::Rgb(rgb));
        img.save(data.join(format!("p{i}.png"))).unwrap();
        lines += &format!("{{\"file\": \"p{i}.png\", \"text\": \"{name}\"}}\n");
    }
    std::fs::write(data.join("captions.jsonl"), lines).unwrap();
    let vq = dir.join("vq.toml");
    let head = format!("[data]\nformat = \"captioned\"\npath = \"{}\"\nsize = 16\n", s(&data));
    std::fs::write(
        &vq,
        format!(
            "name = \"vq\"\n{head}[model]\nfamily = \"vqvae\"\npreset = \"emoji32\"\nhidden = 8\nres_hidden = 4\n\
             codebook_size = 8\ncode_dim = 4\n[train]\nsteps = 10\nbatch_size = 4\n"
        ),
    )
    .unwrap();
    let exp = dir.join("dalle.toml");
    std::fs::write(
        &exp,
        format!(
            "name = \"d\"\n{head}[model]\nfamily = \"dalle\"\ntokenizer = \"{}\"\nwidth = 16\nlayers = 1\nheads = 2\n\
             text_vocab = 260\n[train]\nsteps = 6\nbatch_size = 4\n",
            s(&vq)
        ),
    )
    .unwrap();
    let out = dir.join("run");
    let o = kiln(&["train", s(&exp), "--out", s(&out), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = dir.join("red.png");
    let o = kiln(&["generate", "--checkpoint", s(&out), "a red square", "--n", "2", "--out", s(&png)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(image::open(&png).unwrap().height(), 18 + 2);
    // `size` belongs to the captioned format only.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&exp).unwrap().replace("\"captioned\"", "\"emoji\"")).unwrap();
    fails_with(&kiln(&["train", s(&bad), "--out", s(&dir.join("x"))]), "data.size");
}

#[test]
fn a_second_train_in_a_locked_run_directory_fails_at_once_naming_the_holder() {
    let dir = scratch("lock");
    let exp = dir.join("long.toml");
    std::fs::write(&exp, TINY.replace("steps = 40", "steps = 100000")).unwrap();
    let out = dir.join("run");
    let mut first = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["train", s(&exp), "--out", s(&out), "--quiet"])
        .current_dir(root())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id().to_string();
    let lock = out.join(".lock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&lock).unwrap_or_default() != pid && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let second = kiln(&["train", s(&exp), "--out", s(&out), "--quiet"]);
    fails_with(&second, &format!("another `kiln train` (pid {pid}) is training in this run directory"));
    assert!(started.elapsed() < Duration::from_secs(20), "the second run did not fail at once");
    // A killed holder's lock dies with it: the directory is usable again (here: resumable or
    // fresh, whichever the first run left).
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    first.wait().unwrap();
    let resume = kiln_train::latest_checkpoint(&out).is_some();
    let args: Vec<&str> = if resume {
        vec!["train", "--resume", s(&out), "--steps", "1", "--quiet"]
    } else {
        vec!["train", s(&exp), "--out", s(&out), "--steps", "2", "--quiet"]
    };
    let o = kiln(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("another `kiln train`"), "{err}");
}

#[test]
fn an_empty_split_and_a_non_utf8_out_path_are_clear_errors_not_panics() {
    // MNIST files with the sample's training split and an empty test split (issue 21, bug 4).
    let dir = scratch("emptysplit");
    let data = dir.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    for f in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"] {
        std::fs::copy(root().join("datasets/mnist-sample").join(f), data.join(f)).unwrap();
    }
    std::fs::write(data.join("t10k-images-idx3-ubyte"), kiln_data::encode_idx(&[0, 28, 28], &[])).unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), kiln_data::encode_idx(&[0], &[])).unwrap();
    let exp = dir.join("e.toml");
    std::fs::write(&exp, TINY.replace("datasets/mnist-sample", s(&data))).unwrap();
    fails_with(&kiln(&["train", s(&exp), "--out", s(&dir.join("run")), "--quiet"]), "the test split holds no images");
    let png = dir.join("r.png");
    fails_with(
        &kiln(&["reconstruct", "--checkpoint", s(trained()), "--data", s(&data), "--out", s(&png)]),
        "the test split holds no images",
    );
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let odd = dir.join(std::ffi::OsStr::from_bytes(b"run-\xff"));
        let good = dir.join("good.toml");
        std::fs::write(&good, TINY).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("train")
            .arg(&good)
            .args(["--steps", "2"])
            .arg("--out")
            .arg(&odd)
            .arg("--quiet")
            .current_dir(root())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && odd.join("run.json").is_file(), "{err}");
    }
}

#[test]
fn train_prints_a_plain_progress_line_per_logged_step_when_stderr_is_not_a_terminal() {
    let dir = scratch("plainlog");
    let exp = dir.join("t.toml");
    std::fs::write(&exp, TINY).unwrap();
    let o = kiln(&["train", s(&exp), "--out", s(&dir.join("run")), "--steps", "20"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let steps: Vec<&str> =
        err.lines().filter(|l| l.starts_with("kiln: step 10/20") || l.starts_with("kiln: step 20/20")).collect();
    assert_eq!(steps.len(), 2, "{err}");
    assert!(steps[0].contains("img/s"), "{err}");
    // --quiet keeps it to the first and last lines.
    let o = kiln(&["train", s(&exp), "--out", s(&dir.join("quiet")), "--steps", "20", "--quiet"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("kiln: step 10/20"));
}

#[test]
fn train_reads_cifar10_from_the_data_directory_and_a_class_folder_with_augmentation() {
    let dir = scratch("anydata");
    // A fake CIFAR-10 in the layout `kiln data fetch cifar-10` leaves: 8 records a batch file.
    let cifar = dir.join("data/cifar-10/cifar-10-batches-bin");
    std::fs::create_dir_all(&cifar).unwrap();
    let batch = |seed: u8| -> Vec<u8> {
        (0..8u8)
            .flat_map(|i| {
                std::iter::once(i % 10).chain((0..3072u32).map(move |p| (p as u8).wrapping_mul(seed).wrapping_add(i)))
            })
            .collect()
    };
    for i in 1..=5u8 {
        std::fs::write(cifar.join(format!("data_batch_{i}.bin")), batch(i)).unwrap();
    }
    std::fs::write(cifar.join("test_batch.bin"), batch(9)).unwrap();
    let exp = dir.join("c.toml");
    let text = std::fs::read_to_string(root().join("experiments/vae-cifar10.toml"))
        .unwrap()
        .replace("steps = 6000", "steps = 3")
        .replace("batch_size = 128", "batch_size = 8")
        .replace("preset = \"rgb32\"", "preset = \"rgb32\"\nwidths = [8, 8, 8]\nhidden = 16\nlatent = 4");
    std::fs::write(&exp, text).unwrap();
    let run = |data: &Path| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["train", s(&exp), "--out", s(&dir.join("run")), "--quiet"])
            .current_dir(&dir)
            .env("KILN_DATA", data)
            .output()
            .unwrap()
    };
    // Not fetched yet: one clear line saying how to get it.
    let o = run(&dir.join("nowhere"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("kiln data fetch cifar-10"), "{err}");
    let o = run(&dir.join("data"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.join("run/samples.png").is_file());

    // A folder of class sub-folders, resized to 16×16 on loading, with flips and crops.
    let pics = dir.join("pics");
    for (class, rgb) in [("blue", [20, 20, 220]), ("red", [220, 20, 20])] {
        std::fs::create_dir_all(pics.join(class)).unwrap();
        for i in 0..4 {
            image::RgbImage::from_pixel(24, 20, image::Rgb(rgb))
                .save(pics.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let folder = dir.join("f.toml");
    std::fs::write(
        &folder,
        format!(
            "name = \"f\"\n[data]\nformat = \"folder\"\npath = \"{}\"\nsize = 16\n[data.augment]\nflip = true\n\
             crop_padding = 1\n[model]\nfamily = \"vqvae\"\npreset = \"emoji32\"\nhidden = 8\nres_hidden = 4\n\
             codebook_size = 8\ncode_dim = 4\n[train]\nsteps = 3\nbatch_size = 4\n",
            s(&pics)
        ),
    )
    .unwrap();
    let o = kiln(&["train", s(&folder), "--out", s(&dir.join("frun")), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("frun/eval.json")).unwrap()).unwrap();
    assert_eq!(e["images"], 8, "{e}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&folder).unwrap().replace("flip = true", "flip = true\nrotate = 5"))
        .unwrap();
    let o = kiln(&["train", s(&bad), "--out", s(&dir.join("x"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    // toml's own message, with its pointer at the line.
    assert!(!o.status.success() && err.starts_with("error: ") && !err.contains("panicked"), "{err}");
    assert!(err.contains("8 | rotate = 5") && err.contains("unknown field `rotate`"), "{err}");
}

/// The data section of a safetensors file: where its tensors' bytes start.
fn safetensors_data_start(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// Rewrites every f32 of a safetensors file's data with `f`, then re-records the model's
/// checksums — the file is then a consistent model whose weights are what `f` made them.
fn rewrite_weights(dir: &Path, f: impl Fn(f32) -> f32) {
    let path = dir.join("vae.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let start = safetensors_data_start(&bytes);
    for chunk in bytes[start..].chunks_exact_mut(4) {
        let v = f(f32::from_le_bytes(chunk.try_into().unwrap()));
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
    kiln_core::ModelManifest::new("vae", 1)
        .describing(dir, &["vae.json", "vae.safetensors"])
        .unwrap()
        .write(dir)
        .unwrap();
}

#[test]
fn checkpoints_check_their_sums_resume_skips_a_corrupt_one_and_broken_weights_are_refused() {
    let dir = scratch("sums");
    let exp = dir.join("tiny.toml");
    std::fs::write(&exp, TINY.replace("log_every = 10", "log_every = 10\ncheckpoint_every = 20")).unwrap();
    let run = dir.join("run");
    let o = kiln(&["train", s(&exp), "--out", s(&run), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoints/step-00000040/kiln.json")).unwrap())
            .unwrap();
    let files: Vec<&String> = manifest["files"].as_object().unwrap().keys().collect();
    assert!(
        ["optim.safetensors", "trainer.json", "vae.json", "vae.safetensors"]
            .iter()
            .all(|f| files.contains(&&f.to_string())),
        "{files:?}"
    );

    // One flipped bit in the final model: sampling refuses it, naming the file.
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    // The final model carries the latent mixture fitted after training.
    for f in ["kiln.json", "vae.json", "vae.safetensors", "prior.json"] {
        std::fs::copy(run.join(f), model.join(f)).unwrap();
    }
    let weights = model.join("vae.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&weights, &bytes).unwrap();
    let png = dir.join("x.png");
    fails_with(&kiln(&["sample", "--checkpoint", s(&model), "--out", s(&png)]), "vae.safetensors: checksum mismatch");
    // Weights that are NaN (checksums re-recorded, so only the values are wrong) are refused on load.
    rewrite_weights(&model, |_| f32::NAN);
    fails_with(&kiln(&["sample", "--checkpoint", s(&model), "--out", s(&png)]), "non-finite value");
    // Finite but absurd weights whose samples overflow: refused on the way out, nothing written.
    std::fs::copy(run.join("vae.safetensors"), &weights).unwrap();
    rewrite_weights(&model, |v| v * 1e30);
    fails_with(&kiln(&["sample", "--checkpoint", s(&model), "--out", s(&png)]), "produced a non-finite value");
    assert!(!png.exists());

    // A corrupt newest checkpoint: --resume says why it skips it and continues from the one before.
    let optim = run.join("checkpoints/step-00000040/optim.safetensors");
    let mut bytes = std::fs::read(&optim).unwrap();
    let start = safetensors_data_start(&bytes);
    bytes[start] ^= 0x40;
    std::fs::write(&optim, bytes).unwrap();
    let o = kiln(&["train", "--resume", s(&run), "--steps", "60", "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("skipping checkpoint") && err.contains("optim.safetensors: checksum mismatch"), "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary["start_step"].as_u64(), summary["steps"].as_u64()), (Some(20), Some(60)));
    assert!(run.join("checkpoints/set-aside/step-00000040/optim.safetensors").is_file(), "kept, out of the way");
    // --resume-from picks a step; a step without a checkpoint names the ones there.
    fails_with(
        &kiln(&["train", "--resume", s(&run), "--resume-from", "30", "--steps", "80", "--quiet"]),
        "has no checkpoint at that step (it has steps 20, 40, 60)",
    );
    let o = kiln(&["train", "--resume", s(&run), "--resume-from", "40", "--steps", "50", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary["start_step"].as_u64(), summary["steps"].as_u64()), (Some(40), Some(50)));
}

#[test]
fn a_moved_binary_reopens_a_run_from_another_directory_with_its_built_in_extractor() {
    let run = trained();
    let dir = scratch("moved");
    let bin = dir.join("bin").join("kiln");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &bin).unwrap();
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let moved = |args: &[&str]| {
        Command::new(&bin).args(args).current_dir(&elsewhere).env("RUST_BACKTRACE", "0").output().unwrap()
    };
    // The run recorded its data where it is, not relative to the directory it was trained from.
    let recorded = std::fs::read_to_string(run.join("experiment.toml")).unwrap();
    let data = root().join("datasets/mnist-sample");
    assert!(recorded.contains(&format!("path = \"{}\"", data.display())), "{recorded}");
    let o = moved(&["eval", "--checkpoint", s(run), "--n", "20", "--real-n", "20", "--out", "scores.json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(elsewhere.join("scores.json")).unwrap()).unwrap();
    // The feature network came from the binary, not from a source tree beside it.
    assert_eq!(e["extractor"]["path"], "built-in", "{e}");
    assert!(e["warnings"].is_array(), "{e}");
    let o = moved(&["reconstruct", "--checkpoint", s(run), "--n", "8", "--out", "r.png"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(elsewhere.join("r.png").is_file());
}

#[test]
fn outputs_are_checked_before_the_work_and_large_requests_stream_or_are_refused() {
    let run = trained();
    let dir = scratch("before");
    // An --out that cannot be written fails at once, naming it (not after scoring or sampling).
    let blocker = dir.join("file");
    std::fs::write(&blocker, "x").unwrap();
    let inside = blocker.join("scores.json");
    fails_with(&kiln(&["eval", "--checkpoint", s(run), "--out", s(&inside)]), "file is not a directory");
    fails_with(&kiln(&["sample", "--checkpoint", s(run), "--out", s(&blocker.join("g.png"))]), "is not a directory");
    fails_with(
        &kiln(&["reconstruct", "--checkpoint", s(run), "--out", s(&blocker.join("r.png"))]),
        "is not a directory",
    );
    // A grid has a size limit; a directory or .npy takes any number, drawn in batches.
    fails_with(
        &kiln(&["sample", "--checkpoint", s(run), "--n", "5000", "--out", s(&dir.join("huge.png"))]),
        "a grid holds at most 4096 images",
    );
    let npy = dir.join("many.npy");
    let o = kiln(&["sample", "--checkpoint", s(run), "--n", "300", "--out", s(&npy)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&npy).unwrap();
    let header = String::from_utf8_lossy(&bytes[10..128]);
    assert!(header.contains("'shape': (300, 1, 28, 28, )"), "{header}");
    let header_len = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!(bytes.len(), header_len + 300 * 784 * 4);
    // The first batch is what a single call with the same seed draws.
    let small = dir.join("small.npy");
    assert!(kiln(&["sample", "--checkpoint", s(run), "--n", "5", "--out", s(&small)]).status.success());
    let few = std::fs::read(&small).unwrap();
    assert_eq!(few[header_len..], bytes[header_len..header_len + 5 * 784 * 4]);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3, "no temporary files left");
    // resize refuses an absurd size before reading anything.
    fails_with(
        &kiln(&["resize", s(&dir.join("no-such.png")), "--size", "100000x100000", "--out", s(&dir.join("r.png"))]),
        "--size 100000x100000: a 100000x100000 output is 10000000000 pixels",
    );
    // Too few real images for the metrics is said as such, not blamed on a flag nobody passed.
    let err = String::from_utf8_lossy(&kiln(&["eval", "--checkpoint", s(run), "--n", "3"]).stderr).into_owned();
    assert!(err.contains("--n 3") && !err.contains("--real-n"), "{err}");
}

#[test]
fn help_has_examples_for_every_command() {
    for cmd in ["train", "sample", "generate", "reconstruct", "interpolate", "eval", "data", "resize", "families"] {
        let o = kiln(&[cmd, "--help"]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && text.contains("Example"), "kiln {cmd} --help: {text}");
        assert!(text.contains(&format!("kiln {cmd}")), "kiln {cmd} --help shows no command line: {text}");
    }
    let top = String::from_utf8_lossy(&kiln(&["--help"]).stdout).into_owned();
    assert!(top.contains("experiments/") && top.contains("README"), "{top}");
    assert!(String::from_utf8_lossy(&kiln(&["train", "--help"]).stdout).contains("--resume-from"));
}

/// A tiny classifier (no noise in its step, so ranks and accumulation see the same arithmetic).
#[cfg(feature = "mpi")]
const CLASSIFIER: &str = r#"
name = "dp"
seed = 3
[data]
format = "mnist"
path = "datasets/mnist-sample"
[model]
family = "classifier"
widths = [8, 16]
feature_dim = 16
[train]
steps = 12
batch_size = 16
log_every = 1
checkpoint_every = 0
[train.optim]
lr = 2e-3
"#;

#[cfg(feature = "mpi")]
fn weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let file = TensorFile::read(&run.join("features.safetensors")).unwrap();
    file.names().map(|n| (n.to_string(), file.values(n).unwrap().to_vec())).collect()
}

#[cfg(feature = "mpi")]
#[test]
fn data_parallel_ranks_train_like_one_process_accumulating_their_batches() {
    let dir = scratch("dp");
    for world in [2usize, 4] {
        // One process, `world` micro-batches per update, 12 micro-batches: 12 / world updates.
        let alone = dir.join(format!("alone-{world}.toml"));
        std::fs::write(&alone, CLASSIFIER.replace("lr = 2e-3", &format!("lr = 2e-3\naccumulate = {world}"))).unwrap();
        let a = dir.join(format!("alone-{world}"));
        let o = kiln(&["train", s(&alone), "--out", s(&a), "--quiet"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // `world` processes, each on its share of every step: 12 / world steps.
        let exp = dir.join("dp.toml");
        std::fs::write(&exp, CLASSIFIER).unwrap();
        let r = dir.join(format!("ranks-{world}"));
        let steps = (12 / world).to_string();
        // Two ranks started by a device list (one rank per entry), four by --world-size.
        let world_text = world.to_string();
        let ranks = if world == 2 { ["--device", "cpu,cpu"] } else { ["--world-size", world_text.as_str()] };
        let o = kiln(&["train", s(&exp), "--out", s(&r), "--steps", &steps, ranks[0], ranks[1], "--quiet"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(err.contains(&format!("× {world} ranks")), "{err}");
        let (wa, wr) = (weights(&a), weights(&r));
        assert_eq!(wa.len(), wr.len());
        let mut worst = 0.0f32;
        for ((na, va), (nr, vr)) in wa.iter().zip(&wr) {
            assert_eq!(na, nr);
            for (x, y) in va.iter().zip(vr) {
                worst = worst.max((x - y).abs());
            }
        }
        // The same examples, the same mean gradient; only the order of MPI's sum differs.
        eprintln!("{world} ranks vs one process accumulating {world}: largest weight difference {worst:e}");
        assert!(worst < 1e-5, "{world} ranks vs accumulating {world}: largest weight difference {worst}");
        // Rank 0 wrote the run alone: one metrics line per step, every rank's examples counted.
        let log = std::fs::read_to_string(r.join("metrics.jsonl")).unwrap();
        let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
        assert_eq!((log.lines().count(), last["examples"].as_u64()), (12 / world, Some(12 * 16)));
    }
}

/// The pid of rank `rank` of the MPI job training into `out` (from /proc: its command line names
/// the run, its environment the rank).
#[cfg(feature = "mpi")]
fn rank_pid(out: &Path, rank: usize) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains(s(out))
            && !cmdline.contains("mpirun")
            && String::from_utf8_lossy(&environ).split('\0').any(|v| v == format!("OMPI_COMM_WORLD_RANK={rank}"))
        {
            return Some(pid);
        }
    }
    None
}

#[cfg(feature = "mpi")]
#[test]
fn killing_a_rank_stops_the_run_with_a_clear_error_and_the_last_checkpoint_resumes() {
    let dir = scratch("dpkill");
    let exp = dir.join("dp.toml");
    std::fs::write(
        &exp,
        CLASSIFIER.replace("steps = 12", "steps = 1000000").replace("checkpoint_every = 0", "checkpoint_every = 20"),
    )
    .unwrap();
    let out = dir.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["train", s(&exp), "--out", s(&out), "--world-size", "2", "--quiet"])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out.join("checkpoints/step-00000020").is_dir() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint after two minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = rank_pid(&out, 1).expect("rank 1 is running");
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "the run did not stop within a minute of losing a rank");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("The newest checkpoint continues the run: kiln train --resume"), "{err}");
    assert!(rank_pid(&out, 0).is_none(), "rank 0 was stopped too");
    // The newest checkpoint resumes, with both ranks, to a few steps past it.
    let (at, _) = kiln_train::latest_checkpoint(&out).unwrap();
    let steps = (at + 4).to_string();
    let o = kiln(&["train", "--resume", s(&out), "--steps", &steps, "--world-size", "2", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary["start_step"].as_u64(), summary["steps"].as_u64()), (Some(at as u64), Some(at as u64 + 4)));
}
