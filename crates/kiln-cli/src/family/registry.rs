//! The registry: the one list of families, and the only place the binary matches on their names.

use std::path::Path;

use anyhow::{Result, bail, ensure};
use burn::tensor::backend::Backend;
use kiln_core::{Generative, MANIFEST_FILE, ModelManifest};
use serde::Serialize;

use super::Family;
use crate::experiment::Experiment;

/// Something to do with a family chosen at run time: [`dispatch`] calls `visit::<F>()` with the
/// family's adapter type.
pub trait Visit {
    /// What the visit returns.
    type Output;
    /// Does it for family `F`.
    fn visit<F: Family>(self) -> Self::Output;
}

/// What `kiln families` prints about a family.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyInfo {
    /// Its name.
    pub name: &'static str,
    /// What it is.
    pub about: &'static str,
    /// Whether it generates images.
    pub generator: bool,
}

impl FamilyInfo {
    fn of<F: Family>() -> Self {
        Self { name: F::NAME, about: F::ABOUT, generator: F::GENERATOR }
    }
}

/// One line per family. The list, the name lookup and the pre-`kiln.json` detection all come
/// from it.
macro_rules! families {
    ($($family:ty),* $(,)?) => {
        /// Every family, in the order `kiln families` lists them.
        pub fn all() -> Vec<FamilyInfo> {
            vec![$(FamilyInfo::of::<$family>()),*]
        }

        /// Runs `visit` for the family called `name`; `None` for an unknown name.
        pub fn dispatch<V: Visit>(name: &str, visit: V) -> Option<V::Output> {
            $(if name == <$family>::NAME {
                return Some(visit.visit::<$family>());
            })*
            None
        }

        /// The family whose pre-`kiln.json` marker file `dir` holds.
        fn legacy_family(dir: &Path) -> Option<&'static str> {
            $(if <$family>::LEGACY_FILE.is_some_and(|f| dir.join(f).is_file()) {
                return Some(<$family>::NAME);
            })*
            None
        }

        /// The marker files of directories written before `kiln.json`.
        fn legacy_files() -> Vec<&'static str> {
            [$(<$family>::LEGACY_FILE),*].into_iter().flatten().collect()
        }
    };
}

families!(
    super::vae::Vae,
    super::gan::Gan,
    super::classifier::Classifier,
    super::vqvae::VqVae,
    super::draw::Draw,
    super::dalle::Dalle,
    super::diffusion::Diffusion,
);

/// The names of every family.
pub fn names() -> Vec<&'static str> {
    all().into_iter().map(|f| f.name).collect()
}

/// Runs `visit` for `name`, or says which families exist.
pub fn with_family<V: Visit>(name: &str, visit: V) -> Result<V::Output> {
    match dispatch(name, visit) {
        Some(out) => Ok(out),
        None => bail!("model.family = {name:?}: unknown model family (known: {})", names().join(", ")),
    }
}

/// The experiment `exp`'s family trains first, if any ([`Family::first_stage`]).
pub fn first_stage(exp: &Experiment) -> Result<Option<std::path::PathBuf>> {
    struct First<'a>(&'a Experiment);
    impl Visit for First<'_> {
        type Output = Result<Option<std::path::PathBuf>>;
        fn visit<F: Family>(self) -> Self::Output {
            F::first_stage(self.0)
        }
    }
    with_family(exp.family()?, First(exp))?
}

/// Checks the family tables of an experiment file (before its data is loaded).
pub fn check(exp: &Experiment) -> Result<()> {
    struct Check<'a>(&'a Experiment);
    impl Visit for Check<'_> {
        type Output = Result<()>;
        fn visit<F: Family>(self) -> Result<()> {
            F::resolve(self.0, None).map(drop)
        }
    }
    with_family(exp.family()?, Check(exp))?
}

/// Opens the model in `dir` (a run directory or one of its checkpoints) by the family its
/// `kiln.json` names; a directory written before `kiln.json` existed is recognised by its family's
/// config file.
pub fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<Box<dyn Generative<B>>> {
    ensure!(dir.is_dir(), "{}: no such checkpoint directory", dir.display());
    // The checksums first: a flipped bit in a weight file would otherwise load silently.
    let manifest = ModelManifest::read_verified(dir)?;
    let (family, format) = match &manifest {
        Some(m) => (m.family.as_str(), Some(m.format)),
        None => match legacy_family(dir) {
            Some(family) => (family, None),
            None => bail!(
                "{}: not a kiln model directory (no {MANIFEST_FILE}, nor the {} of a run written before it)",
                dir.display(),
                legacy_files().join(" or ")
            ),
        },
    };
    struct Open<'a, B: Backend> {
        dir: &'a Path,
        device: &'a B::Device,
        format: Option<u32>,
    }
    impl<B: Backend> Visit for Open<'_, B> {
        type Output = Result<Box<dyn Generative<B>>>;
        fn visit<F: Family>(self) -> Self::Output {
            if let Some(format) = self.format {
                ensure!(
                    format <= F::FORMAT,
                    "{}: written by a newer kiln ({} format {format}; this kiln reads up to {}): upgrade kiln",
                    self.dir.join(MANIFEST_FILE).display(),
                    F::NAME,
                    F::FORMAT
                );
            }
            F::open::<B>(self.dir, self.device)
        }
    }
    match dispatch(family, Open { dir, device, format }) {
        Some(model) => model,
        None => bail!(
            "{}: family {family:?} is not one this kiln knows ({}); it was written by another kiln",
            dir.join(MANIFEST_FILE).display(),
            names().join(", ")
        ),
    }
}
