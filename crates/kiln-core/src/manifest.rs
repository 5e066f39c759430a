//! `kiln.json`: what a saved model directory holds, so that a tool opening it asks for the right
//! family instead of guessing from which files are there.

use std::path::Path;

use serde::{Deserialize, Serialize};

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
}

impl ModelManifest {
    /// A manifest for `family` at layout version `format`, written by this kiln.
    pub fn new(family: &str, format: u32) -> Self {
        Self { family: family.into(), format, kiln_version: env!("CARGO_PKG_VERSION").into() }
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
}
