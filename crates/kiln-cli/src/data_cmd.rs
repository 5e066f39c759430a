//! `kiln data fetch NAME` and `kiln data ls`: the data sets of `datasets/*.toml`, downloaded,
//! verified and cached under the data directory (`--data-dir`, `$KILN_DATA`, or the user cache).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln_data::{CacheState, FetchOptions, Manifest, cache_state, data_dir, fetch_dataset};

/// `kiln data …`
#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Download a data set, verify every file's sha256, and unpack its archives. Nothing is
    /// downloaded again once present, so this also works offline.
    Fetch {
        /// A data set name (see `kiln data ls`), or a manifest file (.toml).
        name: String,
        /// Data directory (default: $KILN_DATA, else the user cache directory's kiln/).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Further attempts after a failed download.
        #[arg(long, default_value_t = 3)]
        retries: u32,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// List the known data sets and what of them is cached.
    Ls {
        /// Data directory (default: $KILN_DATA, else the user cache directory's kiln/).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs a `kiln data` command.
pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch { name, data_dir: dir, retries, quiet } => {
            let manifest =
                if name.ends_with(".toml") { Manifest::load(name.as_ref())? } else { Manifest::find(&name)? };
            let root = data_dir(dir.as_deref());
            let options = FetchOptions { retries, progress: !quiet, ..FetchOptions::default() };
            let dir = fetch_dataset(&manifest, &root, &options)
                .with_context(|| format!("fetching {} into {}", manifest.name, root.display()))?;
            println!("{}", dir.display());
            if !quiet {
                eprintln!("licence: {}\ncite: {}", manifest.licence, manifest.citation.replace('\n', " "));
            }
            Ok(())
        }
        DataCommand::Ls { data_dir: dir } => {
            let root = data_dir(dir.as_deref());
            // writeln! rather than println!, so `kiln data ls | head` ends quietly.
            let mut out = std::io::stdout().lock();
            writeln!(out, "data directory: {}", root.display())?;
            for manifest in Manifest::builtin() {
                let states = cache_state(&manifest, &root);
                let present = states.iter().filter(|(_, s)| matches!(s, CacheState::Present(_))).count();
                let size: u64 = manifest.files.iter().filter_map(|f| f.size).sum();
                let status = match present {
                    0 if states.iter().any(|(_, s)| matches!(s, CacheState::Partial(_))) => "partial".to_string(),
                    0 => "not fetched".to_string(),
                    n if n == states.len() => "cached".to_string(),
                    n => format!("{n}/{} files", states.len()),
                };
                writeln!(
                    out,
                    "{:<14} {:<12} {:>8.1} MB  {} [{}]",
                    manifest.name,
                    status,
                    size as f64 / 1e6,
                    manifest.description,
                    manifest.licence
                )?;
            }
            writeln!(out, "bundled (in the repository): datasets/mnist-sample, datasets/emoji-32")?;
            Ok(())
        }
    }
}
