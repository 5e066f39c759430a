//! `kiln.json`: what a saved model directory holds, so that a tool opening it asks for the right
//! family instead of guessing from which files are there, and checks that the files are the ones
//! that were written.
//!
//! Why checksums: safetensors has no checksum of its own, so a flipped bit in a weight or an
//! optimizer moment loads silently and surfaces, if ever, as a run that trains worse. Each model
//! directory records the SHA-256 of its files; loading and resuming check them first (one read of
//! each file, far less than loading it onto a device).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{LoadError, SaveError, atomic_write};

/// The file name, in every model directory (a run, each of its checkpoints, a saved model).
pub const MANIFEST_FILE: &str = "kiln.json";

/// The contents of `kiln.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// The model family, as experiment files spell it (`vae`, `gan`, …).
    pub family: String,
    /// The family's version of its directory layout; a family that changes its files bumps it,
    /// so an old reader can say "written by a newer kiln" instead of failing on a missing file.
    pub format: u32,
    /// The kiln version that wrote it.
    pub kiln_version: String,
    /// SHA-256 (lowercase hex) of each file of the model, by file name. Empty in directories
    /// written before kiln recorded it (those load unchecked).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

impl ModelManifest {
    /// A manifest for `family` at layout version `format`, written by this kiln.
    pub fn new(family: &str, format: u32) -> Self {
        Self { family: family.into(), format, kiln_version: env!("CARGO_PKG_VERSION").into(), files: BTreeMap::new() }
    }

    /// Records the checksums of `names`, files already written in `dir` (a model's config and
    /// weights: the files [`ModelManifest::verify`] then checks).
    pub fn describing(mut self, dir: &Path, names: &[&str]) -> Result<Self, SaveError> {
        for name in names {
            let path = dir.join(name);
            let sum = sha256_file(&path).map_err(|source| SaveError::Io { path, source })?;
            self.files.insert((*name).to_string(), sum);
        }
        Ok(self)
    }

    /// Rewrites `dir/kiln.json` to record every regular file in `dir` but itself: a checkpoint,
    /// whose files (model, optimizer, EMA, trainer state) are written by several hands. A
    /// directory without `kiln.json` is left as it is.
    pub fn seal(dir: &Path) -> Result<(), SaveError> {
        let as_save = |e: LoadError| SaveError::Encode { path: e.path, message: e.message };
        let Some(manifest) = Self::read(dir).map_err(as_save)? else {
            return Ok(());
        };
        let io = |source| SaveError::Io { path: dir.to_path_buf(), source };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.file_type().map_err(io)?.is_file()
                && let Ok(name) = entry.file_name().into_string()
                && name != MANIFEST_FILE
            {
                names.push(name);
            }
        }
        names.sort();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        manifest.describing(dir, &names)?.write(dir)
    }

    /// Checks that every file the manifest records is in `dir` with the recorded checksum.
    pub fn verify(&self, dir: &Path) -> Result<(), LoadError> {
        for (name, want) in &self.files {
            let path = dir.join(name);
            let got = sha256_file(&path).map_err(|e| LoadError {
                path: path.clone(),
                message: format!("listed in {MANIFEST_FILE} but cannot be read: {e}"),
            })?;
            if &got != want {
                return Err(LoadError {
                    path,
                    message: format!(
                        "checksum mismatch: {MANIFEST_FILE} records sha256 {}…, the file has {}… — it changed \
                         after kiln wrote it (disk or copy corruption, or an edit)",
                        &want[..want.len().min(12)],
                        &got[..12]
                    ),
                });
            }
        }
        Ok(())
    }

    /// [`ModelManifest::read`], then [`ModelManifest::verify`] — of `dir` and of each
    /// sub-directory that is a model of its own (a DALL·E's image tokenizer).
    pub fn read_verified(dir: &Path) -> Result<Option<Self>, LoadError> {
        let manifest = Self::read(dir)?;
        if let Some(m) = &manifest {
            m.verify(dir)?;
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let sub = entry.path();
                if sub.is_dir()
                    && let Some(inner) = Self::read(&sub)?
                {
                    inner.verify(&sub)?;
                }
            }
        }
        Ok(manifest)
    }

    /// Writes `dir/kiln.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), SaveError> {
        let path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| SaveError::Encode { path: path.clone(), message: e.to_string() })?;
        atomic_write(&path, json.as_bytes())
    }

    /// Reads `dir/kiln.json`; `Ok(None)` when the directory has none (written before kiln
    /// recorded it, or not a model directory).
    pub fn read(dir: &Path) -> Result<Option<Self>, LoadError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LoadError { path, message: e.to_string() }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LoadError { path, message: format!("not a kiln model manifest: {e}") })
    }
}

/// The SHA-256 of a file's contents, as lowercase hex (read in blocks, not whole).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_absent_and_corrupt() {
        let dir = std::env::temp_dir().join(format!("kiln-core-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(ModelManifest::read(&dir).unwrap(), None);
        let m = ModelManifest::new("vae", 1);
        m.write(&dir).unwrap();
        assert_eq!(ModelManifest::read(&dir).unwrap(), Some(m));
        std::fs::write(dir.join(MANIFEST_FILE), "{\"family\": 3}").unwrap();
        let err = ModelManifest::read(&dir).unwrap_err().to_string();
        assert!(err.contains("kiln.json: not a kiln model manifest"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sealed_directory_detects_a_flipped_bit_and_a_missing_file() {
        let dir = std::env::temp_dir().join(format!("kiln-core-seal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("weights.safetensors"), [1u8, 2, 3, 4]).unwrap();
        std::fs::write(dir.join("optim.safetensors"), [9u8; 100]).unwrap();
        ModelManifest::new("vae", 1).write(&dir).unwrap();
        ModelManifest::seal(&dir).unwrap();
        let sealed = ModelManifest::read_verified(&dir).unwrap().unwrap();
        assert_eq!(sealed.files.len(), 2, "{:?}", sealed.files);
        // sha256("\x01\x02\x03\x04"), from Python's hashlib.
        assert_eq!(
            sealed.files["weights.safetensors"],
            "9f64a747e1b97f131fabb6b447296c9b6f0201e79fb3c5356e6c77e89b6a806a"
        );
        std::fs::write(dir.join("weights.safetensors"), [1u8, 2, 3, 5]).unwrap();
        let err = ModelManifest::read_verified(&dir).unwrap_err().to_string();
        assert!(err.contains("weights.safetensors: checksum mismatch"), "{err}");
        std::fs::write(dir.join("weights.safetensors"), [1u8, 2, 3, 4]).unwrap();
        std::fs::remove_file(dir.join("optim.safetensors")).unwrap();
        let err = ModelManifest::read_verified(&dir).unwrap_err().to_string();
        assert!(err.contains("optim.safetensors: listed in kiln.json but cannot be read"), "{err}");
        // A manifest without checksums (written before kiln recorded them) still reads.
        std::fs::write(dir.join(MANIFEST_FILE), r#"{"family": "vae", "format": 1, "kiln_version": "0.1.0"}"#).unwrap();
        assert!(ModelManifest::read_verified(&dir).unwrap().unwrap().files.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
