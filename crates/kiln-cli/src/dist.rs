//! `kiln train --world-size N`: data-parallel runs. Which role this process plays, and the
//! launcher that starts the ranks on this machine through mpirun.
//!
//! The arithmetic (sharded batches, averaged gradients, rank 0 writing the run) is kiln-train's,
//! kiln-optim's and kiln-data's; the engine is kiln-mpi's. This file turns a flag, or the
//! variables an MPI launcher sets, into a rank — and a failed rank into one clear error.

use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use kiln_optim::GradSync;

use crate::train::TrainArgs;

/// What this `kiln train` process is.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    /// An ordinary run.
    Alone,
    /// Start `world` ranks on this machine (with mpirun) and wait for them.
    Launch { world: usize },
    /// One rank of an MPI job (started by mpirun, mpiexec or srun).
    Rank,
}

/// The role `args`, the `--device` list and the environment ask for: a list of `n` devices
/// launches `n` ranks as `--world-size n` does.
pub fn mode(args: &TrainArgs, devices: &[String]) -> Result<Mode> {
    ensure!(
        args.dist_timeout.is_finite() && args.dist_timeout > 0.0,
        "--dist-timeout {}: must be a positive number of seconds",
        args.dist_timeout
    );
    if launched_by_mpi() {
        return Ok(Mode::Rank);
    }
    let listed = devices.len();
    let world = match args.world_size {
        Some(0) => bail!("--world-size 0: must be at least 1"),
        Some(world) if listed > 1 && world != listed => bail!(
            "--world-size {world}, but --device lists {listed} devices ({}): one rank trains on each; give one \
             of the two, or the same number",
            devices.join(",")
        ),
        Some(world) => world,
        None => listed,
    };
    Ok(if world == 1 { Mode::Alone } else { Mode::Launch { world } })
}

/// `--device` as a list: one entry, or one per rank of this host (`cuda:0,cuda:1`). Every entry
/// must be a device this binary knows, and all on one backend: the ranks exchange gradients of
/// one model, and a CPU rank beside a GPU rank would set every step's pace.
pub fn device_list(device: &str) -> Result<Vec<String>> {
    if !device.contains(',') {
        return Ok(vec![device.to_string()]);
    }
    let list: Vec<String> = device.split(',').map(|d| d.trim().to_ascii_lowercase()).collect();
    let mut backend = None;
    for entry in &list {
        let spec = kiln_device::DeviceSpec::parse(entry).map_err(|e| anyhow::anyhow!("--device {device:?}: {e}"))?;
        ensure!(entry != "auto", "--device {device:?}: name each rank's device (auto is for one device)");
        let same = *backend.get_or_insert(spec.backend()) == spec.backend();
        ensure!(same, "--device {device:?}: every rank must run the same backend");
    }
    if let Some(twice) = list.iter().enumerate().find_map(|(i, d)| list[..i].contains(d).then_some(d))
        && twice.starts_with("cuda")
    {
        bail!("--device {device:?}: {twice} twice; each rank needs a GPU of its own");
    }
    Ok(list)
}

/// The device this rank trains on: its entry of the `--device` list by its local rank (the
/// ranks of each host take the host's list in order), or — for a bare `cuda` — the GPU of its
/// local rank.
pub fn rank_device(devices: &[String], local_rank: usize) -> Result<String> {
    match devices {
        [one] if one == "cuda" => Ok(format!("cuda:{local_rank}")),
        [one] => Ok(one.clone()),
        list => list.get(local_rank).cloned().with_context(|| {
            format!(
                "this host runs more ranks than --device {} lists: local rank {local_rank} has no device",
                list.join(",")
            )
        }),
    }
}

#[cfg(feature = "mpi")]
fn launched_by_mpi() -> bool {
    kiln_mpi::launched_by_mpi()
}

/// Without MPI compiled in, no launcher's variables make this process a rank.
#[cfg(not(feature = "mpi"))]
fn launched_by_mpi() -> bool {
    false
}

/// Joins the MPI job this process was started in, checking `--world-size` (if given) matches it.
#[cfg(feature = "mpi")]
pub fn join(args: &TrainArgs) -> Result<Arc<dyn GradSync>> {
    let sync = kiln_mpi::MpiSync::init(std::time::Duration::from_secs_f64(args.dist_timeout))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(world) = args.world_size {
        ensure!(
            world == sync.world_size(),
            "--world-size {world}, but the MPI job has {} ranks; give the same number to both (or leave \
             --world-size out under mpirun)",
            sync.world_size()
        );
    }
    Ok(Arc::new(sync))
}

#[cfg(not(feature = "mpi"))]
pub fn join(_args: &TrainArgs) -> Result<Arc<dyn GradSync>> {
    bail!("this kiln was built without MPI; build it with `--features mpi`")
}

/// This rank's index among the ranks of its host, as MPI launchers and Slurm set it (0 if none
/// says).
pub fn local_rank() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// An FNV-1a digest of `parts`, for the ranks to check they train the same experiment.
pub fn digest(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    h
}

/// Starts `world` ranks of this same `kiln train` command on this machine with mpirun — the cores
/// divided between them, `--out` fixed so every rank names the same run, a `--device` list passed
/// on for each rank to take its entry — and waits. mpirun
/// stops the whole job when one rank fails or dies and says which; this adds how to continue.
pub fn launch(args: &TrainArgs, world: usize, threads: usize, threads_given: bool) -> Result<()> {
    ensure!(
        cfg!(feature = "mpi"),
        "--world-size {world}: this kiln was built without MPI. Build it with `--features mpi` (it needs a \
         system MPI: apt-get install libopenmpi-dev openmpi-bin libclang-dev)"
    );
    let mpirun = std::env::var_os("KILN_MPIRUN").unwrap_or_else(|| "mpirun".into());
    let out = match (&args.resume, &args.out) {
        (Some(run), _) => run.clone(),
        (None, Some(out)) => out.clone(),
        (None, None) => {
            let file = args.experiment.as_ref().context("give an experiment file or --resume RUN_DIR")?;
            let exp = crate::experiment::Experiment::load(file)?;
            let parent = std::path::PathBuf::from("runs").join(&exp.name);
            crate::train::unique_run_dir(&parent, &kiln_core::UtcTime::now().stamp())?
        }
    };
    let per_rank = if threads_given { threads } else { (threads / world).max(1) };
    let exe = std::env::current_exe().context("finding the kiln binary to start the ranks")?;
    // This process's arguments, less --world-size: under mpirun the job's size is the world.
    let mut rank_args: Vec<std::ffi::OsString> = Vec::new();
    let mut skip_value = false;
    for arg in std::env::args_os().skip(1) {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        if text == "--world-size" {
            skip_value = true;
        } else if !text.starts_with("--world-size=") {
            rank_args.push(arg);
        }
    }
    rank_args.extend(["--threads".into(), per_rank.to_string().into()]);
    if args.out.is_none() && args.resume.is_none() {
        rank_args.extend(["--out".into(), out.clone().into_os_string()]);
    }
    eprintln!("kiln: starting {world} ranks with mpirun ({per_rank} threads each) → {}", out.display());
    let status = std::process::Command::new(&mpirun)
        .arg("-n")
        .arg(world.to_string())
        .arg(&exe)
        .args(&rank_args)
        // Open MPI: run as root where that is who we are (containers), more ranks than cores if
        // asked, and no pinning of each rank to one core (each rank has its own thread pool).
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("OMPI_MCA_hwloc_base_binding_policy", "none")
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| {
            format!(
                "starting {}: is an MPI installed (apt-get install openmpi-bin)? KILN_MPIRUN names another launcher",
                mpirun.to_string_lossy()
            )
        })?;
    ensure!(
        status.success(),
        "the {world} ranks stopped ({status}; mpirun says above which rank and why). The newest checkpoint \
         continues the run: kiln train --resume {} --world-size {world}",
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn train_args(extra: &[&str]) -> TrainArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: TrainArgs,
        }
        let mut argv = vec!["kiln", "experiments/vae-mnist.toml"];
        argv.extend(extra);
        Cli::parse_from(argv).args
    }

    fn list(devices: &str) -> Vec<String> {
        device_list(devices).unwrap()
    }

    #[test]
    fn a_device_list_is_a_world_size() {
        assert_eq!(mode(&train_args(&[]), &list("cpu")).unwrap(), Mode::Alone);
        assert_eq!(mode(&train_args(&["--world-size", "3"]), &list("cpu")).unwrap(), Mode::Launch { world: 3 });
        assert_eq!(mode(&train_args(&[]), &list("cuda:0,cuda:1")).unwrap(), Mode::Launch { world: 2 });
        assert_eq!(
            mode(&train_args(&["--world-size", "2"]), &list("cuda:0, cuda:1")).unwrap(),
            Mode::Launch { world: 2 }
        );
        let err = mode(&train_args(&["--world-size", "4"]), &list("cuda:0,cuda:1")).unwrap_err().to_string();
        assert!(err.contains("--world-size 4") && err.contains("2 devices"), "{err}");
        assert!(mode(&train_args(&["--world-size", "0"]), &list("cpu")).is_err());
    }

    #[test]
    fn device_lists_are_checked_and_each_rank_takes_its_entry() {
        assert_eq!(list("cpu"), ["cpu"]);
        assert_eq!(list("CUDA:0,cuda:1"), ["cuda:0", "cuda:1"]);
        // CPU ranks share the processor; a GPU named twice is a mistake.
        assert_eq!(list("cpu,cpu"), ["cpu", "cpu"]);
        for (bad, says) in [
            ("cuda:0,cuda:0", "twice"),
            ("cpu,cuda:0", "same backend"),
            ("cuda:0,tpu", "unknown --device"),
            ("auto,auto", "auto"),
        ] {
            let err = device_list(bad).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains(bad), "{bad}: {err}");
        }
        assert_eq!(rank_device(&list("cuda:2,cuda:3"), 1).unwrap(), "cuda:3");
        assert_eq!(rank_device(&list("cuda"), 1).unwrap(), "cuda:1");
        assert_eq!(rank_device(&list("cpu"), 1).unwrap(), "cpu");
        let err = rank_device(&list("cuda:0,cuda:1"), 2).unwrap_err().to_string();
        assert!(err.contains("local rank 2"), "{err}");
    }
}
