//! Data set manifests (`datasets/*.toml`): where each file comes from, its sha256, the licence
//! and the citation. The manifests in the repository are compiled in, so `kiln data fetch` works
//! from any directory. Besides data sets, a manifest can pin a network's weights that kiln
//! downloads the same way (`datasets/pt-inception.toml`, format `pytorch-weights`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DataError;

/// How the fetched files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// MNIST-style IDX files: load with [`crate::Mnist`].
    Idx,
    /// CIFAR-10 binary batches: load with [`crate::Cifar10`].
    Cifar10,
    /// Not images but a network's weights as PyTorch saved them (a `torch.save`d state dict,
    /// `.pth`), one file per manifest: e.g. `pt-inception`, pytorch-fid's InceptionV3, which
    /// `kiln eval --extractor inception` fetches and `kiln_inception::FidInception::load` reads.
    PytorchWeights,
}

/// One downloadable file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// File name under the data set's folder.
    pub name: String,
    /// Canonical download address.
    pub url: String,
    /// Lower-case hex sha256 of the file as downloaded.
    pub sha256: String,
    /// Size in bytes, if known (shown by `kiln data ls`; the checksum is what is trusted).
    #[serde(default)]
    pub size: Option<u64>,
    /// Unpack this archive into the data set's folder after verifying it.
    #[serde(default)]
    pub extract: bool,
}

/// A data set's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short name, also the folder name under the data directory.
    pub name: String,
    /// One line on what it is.
    pub description: String,
    /// Home page.
    pub homepage: String,
    /// Licence of the data.
    pub licence: String,
    /// How to cite it.
    pub citation: String,
    /// How to read the files.
    pub format: DataFormat,
    /// The files.
    pub files: Vec<ManifestFile>,
}

const BUILTIN: [(&str, &str); 4] = [
    ("datasets/mnist.toml", include_str!("../../../datasets/mnist.toml")),
    ("datasets/fashion-mnist.toml", include_str!("../../../datasets/fashion-mnist.toml")),
    ("datasets/cifar-10.toml", include_str!("../../../datasets/cifar-10.toml")),
    ("datasets/pt-inception.toml", include_str!("../../../datasets/pt-inception.toml")),
];

impl Manifest {
    /// Parses a manifest; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, DataError> {
        let m: Manifest = toml::from_str(text).map_err(|e| DataError::format(path, e.to_string()))?;
        if m.format == DataFormat::PytorchWeights && m.files.len() != 1 {
            return Err(DataError::format(
                path,
                format!("format \"pytorch-weights\" takes exactly one file; this manifest lists {}", m.files.len()),
            ));
        }
        plain_name(&m.name, "name").map_err(|e| DataError::format(path, e))?;
        for f in &m.files {
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(DataError::format(path, format!("{}: sha256 must be 64 lower-case hex digits", f.name)));
            }
            plain_name(&f.name, "file name").map_err(|e| DataError::format(path, e))?;
        }
        Ok(m)
    }

    /// The folder this data set lives in under `data_dir`: `data_dir/NAME`. The one place a
    /// manifest's words become a path: the name is a plain file name (checked again here, for a
    /// manifest built in code), and the folder may not be a symbolic link, which could point
    /// anywhere.
    pub fn dir_in(&self, data_dir: &Path) -> Result<PathBuf, DataError> {
        plain_name(&self.name, "name").map_err(|e| DataError::format(data_dir, format!("manifest {e}")))?;
        let dir = data_dir.join(&self.name);
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(DataError::format(
                &dir,
                "is a symbolic link; kiln writes a data set only into a real folder under the data directory",
            ));
        }
        Ok(dir)
    }

    /// Reads a manifest file.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(path).map_err(DataError::io(path))?;
        Self::parse(&text, path)
    }

    /// The manifests shipped in `datasets/`, compiled in.
    pub fn builtin() -> Vec<Self> {
        BUILTIN
            .iter()
            .map(|(path, text)| {
                Self::parse(text, Path::new(path)).unwrap_or_else(|e| panic!("built-in manifest is invalid: {e}"))
            })
            .collect()
    }

    /// The built-in manifest called `name`.
    pub fn find(name: &str) -> Result<Self, DataError> {
        let all = Self::builtin();
        let known: Vec<String> = all.iter().map(|m| m.name.clone()).collect();
        all.into_iter().find(|m| m.name == name).ok_or_else(|| DataError::Missing {
            path: "datasets".into(),
            message: format!("no data set called {name:?}; known: {}", known.join(", ")),
        })
    }
}

/// Checks that `value` is one plain path component: not empty, not absolute, no separator, no
/// `..`, not hidden (so it cannot reach outside the folder it is joined to).
fn plain_name(value: &str, what: &str) -> Result<(), String> {
    let p = Path::new(value);
    let plain = !value.is_empty()
        && !value.starts_with('.')
        && !value.contains(['/', '\\'])
        && p.components().count() == 1
        && matches!(p.components().next(), Some(std::path::Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(format!("{what} {value:?} must be a plain file name (no folders, no '..', not hidden)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_parse_and_bad_ones_are_named() {
        let names: Vec<String> = Manifest::builtin().into_iter().map(|m| m.name).collect();
        assert_eq!(names, vec!["mnist", "fashion-mnist", "cifar-10", "pt-inception"]);
        assert!(Manifest::find("cifar-10").unwrap().files[0].extract);
        let weights = Manifest::find("pt-inception").unwrap();
        assert_eq!(weights.format, DataFormat::PytorchWeights);
        assert_eq!(weights.files.len(), 1);
        // torch.hub's convention: the name carries the sha256's first 8 hex digits.
        assert!(weights.files[0].name.contains(&weights.files[0].sha256[..8]));
        let err = Manifest::find("imagenet").unwrap_err().to_string();
        assert_eq!(
            err,
            "datasets: no data set called \"imagenet\"; known: mnist, fashion-mnist, cifar-10, pt-inception"
        );

        let bad = BUILTIN[0].1.replacen("440fcabf", "440FCABF", 1);
        let err = Manifest::parse(&bad, Path::new("m.toml")).unwrap_err().to_string();
        assert_eq!(err, "m.toml: train-images-idx3-ubyte.gz: sha256 must be 64 lower-case hex digits");
        let bad = BUILTIN[0].1.replacen("name = \"train-images-idx3-ubyte.gz\"", "name = \"../x\"", 1);
        assert!(Manifest::parse(&bad, Path::new("m.toml")).unwrap_err().to_string().contains("plain file name"));
        let two = BUILTIN[0].1.replacen("format = \"idx\"", "format = \"pytorch-weights\"", 1);
        let err = Manifest::parse(&two, Path::new("w.toml")).unwrap_err().to_string();
        assert_eq!(err, "w.toml: format \"pytorch-weights\" takes exactly one file; this manifest lists 4");
    }

    #[test]
    fn a_manifest_name_cannot_reach_outside_the_data_directory() {
        // Each escaping form of the data set's own name (issue 21, bug 1: an absolute name once
        // overwrote a file outside the data directory, and `../../escape` escaped).
        for name in ["/tmp/escape", "../../escape", "a/b", "..", ".", ".hidden", "", "a\\b"] {
            let text = BUILTIN[0].1.replacen("name = \"mnist\"", &format!("name = {name:?}"), 1);
            assert_ne!(text, BUILTIN[0].1, "the test did not change the name");
            let err = Manifest::parse(&text, Path::new("m.toml")).unwrap_err().to_string();
            assert!(err.starts_with("m.toml: name ") && err.contains("plain file name"), "{name:?}: {err}");
        }
        // A manifest built in code is checked where it becomes a path, and a symlinked data-set
        // folder is refused.
        let root = std::env::temp_dir().join(format!("kiln-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        let mut m = Manifest::find("mnist").unwrap();
        assert_eq!(m.dir_in(&root).unwrap(), root.join("mnist"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("elsewhere"), root.join("mnist")).unwrap();
            let err = m.dir_in(&root).unwrap_err().to_string();
            assert!(err.contains("symbolic link"), "{err}");
        }
        m.name = "../up".into();
        assert!(m.dir_in(&root).unwrap_err().to_string().contains("plain file name"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
