//! Safe extraction of `.tar.gz`, `.tar` and `.zip` archives.
//!
//! Every entry name is checked before anything is written: absolute paths and `..` components
//! are refused (zip-slip), links are never created (one that points out of the target is an
//! error, one that stays inside is skipped), and an entry larger than the limit is refused from
//! its header and again while it is copied (a header can lie). Files are written under a
//! temporary name and renamed, so an interrupted extraction leaves no half-written file under a
//! final name.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::DataError;
use crate::part::part_path;

/// Bounds on what an archive may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Largest single entry, in bytes (uncompressed).
    pub max_entry_bytes: u64,
    /// Largest total, in bytes (uncompressed).
    pub max_total_bytes: u64,
}

impl Default for ExtractLimits {
    /// 4 GiB per entry, 32 GiB in all: far above the standard data sets, far below a bomb.
    fn default() -> Self {
        Self { max_entry_bytes: 4 << 30, max_total_bytes: 32 << 30 }
    }
}

/// The archive kinds [`extract`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// A tar stream, optionally gzip-compressed (detected from the bytes).
    Tar,
    /// A zip file.
    Zip,
}

impl ArchiveKind {
    /// Detects the kind from the file's first bytes (gzip or `ustar` → tar, `PK\3\4` → zip).
    pub fn detect(path: &Path) -> Result<Self, DataError> {
        let mut head = [0u8; 512];
        let mut f = File::open(path).map_err(DataError::io(path))?;
        let n = read_up_to(&mut f, &mut head).map_err(DataError::io(path))?;
        let head = &head[..n];
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Ok(ArchiveKind::Zip)
        } else if head.starts_with(&[0x1f, 0x8b]) || (n >= 262 && &head[257..262] == b"ustar") {
            Ok(ArchiveKind::Tar)
        } else {
            Err(DataError::format(path, "not a tar, tar.gz or zip archive"))
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Extracts `archive` into `dest` (created if needed) and returns the files written, relative
/// to `dest`.
pub fn extract(archive: &Path, dest: &Path, limits: &ExtractLimits) -> Result<Vec<PathBuf>, DataError> {
    std::fs::create_dir_all(dest).map_err(DataError::io(dest))?;
    let mut x = Extractor { archive, dest, limits, total: 0, written: Vec::new() };
    match ArchiveKind::detect(archive)? {
        ArchiveKind::Tar => x.tar()?,
        ArchiveKind::Zip => x.zip()?,
    }
    Ok(x.written)
}

struct Extractor<'a> {
    archive: &'a Path,
    dest: &'a Path,
    limits: &'a ExtractLimits,
    total: u64,
    written: Vec<PathBuf>,
}

impl Extractor<'_> {
    fn refuse(&self, entry: &str, reason: impl Into<String>) -> DataError {
        DataError::UnsafeArchive {
            archive: self.archive.to_path_buf(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn corrupt(&self, e: impl std::fmt::Display) -> DataError {
        DataError::format(self.archive, format!("corrupt archive: {e}"))
    }

    /// The entry's path relative to `dest`, or why it is refused.
    fn relative(&self, name: &str) -> Result<PathBuf, DataError> {
        if name.starts_with('/') || name.starts_with('\\') || name.contains(":\\") || name.contains(":/") {
            return Err(self.refuse(name, "absolute path"));
        }
        let mut rel = PathBuf::new();
        for c in Path::new(name).components() {
            match c {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                Component::ParentDir => return Err(self.refuse(name, "path contains `..`")),
                Component::RootDir | Component::Prefix(_) => return Err(self.refuse(name, "absolute path")),
            }
        }
        if name.split(['/', '\\']).any(|p| p == "..") {
            return Err(self.refuse(name, "path contains `..`"));
        }
        Ok(rel)
    }

    /// Links are not created; one whose target leaves `dest` is an error.
    fn check_link(&self, name: &str, rel: &Path, target: &str) -> Result<(), DataError> {
        if target.starts_with('/') || Path::new(target).is_absolute() {
            return Err(self.refuse(name, format!("link to absolute path {target:?}")));
        }
        // Resolve lexically from the link's folder; going above the root means leaving dest.
        let mut depth = rel.parent().map_or(0, |p| p.components().count()) as i64;
        for part in target.split(['/', '\\']) {
            match part {
                "" | "." => {}
                ".." => depth -= 1,
                _ => depth += 1,
            }
            if depth < 0 {
                return Err(self.refuse(name, format!("link to {target:?} points out of the target directory")));
            }
        }
        Ok(())
    }

    fn check_size(&mut self, name: &str, declared: u64) -> Result<(), DataError> {
        if declared > self.limits.max_entry_bytes {
            return Err(self.refuse(
                name,
                format!("{declared} bytes exceeds the limit of {} bytes per entry", self.limits.max_entry_bytes),
            ));
        }
        Ok(())
    }

    fn write_file(&mut self, name: &str, rel: PathBuf, reader: &mut dyn Read) -> Result<(), DataError> {
        let path = self.dest.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(DataError::io(parent))?;
        }
        let tmp = part_path(&path);
        let mut out = File::create(&tmp).map_err(DataError::io(&tmp))?;
        let allowed = self.limits.max_entry_bytes.min(self.limits.max_total_bytes.saturating_sub(self.total));
        let copied = std::io::copy(&mut reader.take(allowed + 1), &mut out).map_err(|e| self.corrupt(e))?;
        if copied > allowed {
            drop(out);
            let _ = std::fs::remove_file(&tmp);
            return Err(if copied > self.limits.max_entry_bytes {
                self.refuse(name, format!("exceeds the limit of {} bytes per entry", self.limits.max_entry_bytes))
            } else {
                self.refuse(name, format!("archive exceeds the limit of {} bytes in all", self.limits.max_total_bytes))
            });
        }
        out.flush().map_err(DataError::io(&tmp))?;
        drop(out);
        std::fs::rename(&tmp, &path).map_err(DataError::io(&path))?;
        self.total += copied;
        self.written.push(rel);
        Ok(())
    }

    fn tar(&mut self) -> Result<(), DataError> {
        let file = File::open(self.archive).map_err(DataError::io(self.archive))?;
        let mut head = [0u8; 2];
        let gz = read_up_to(&mut File::open(self.archive).map_err(DataError::io(self.archive))?, &mut head)
            .map_err(DataError::io(self.archive))?
            == 2
            && head == [0x1f, 0x8b];
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(|e| self.corrupt(e))? {
            let mut entry = entry.map_err(|e| self.corrupt(e))?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let rel = self.relative(&name)?;
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let target =
                    entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
                if kind.is_hard_link() {
                    // Hard link targets are archive paths, relative to the root.
                    self.relative(&target).map_err(|_| self.refuse(&name, format!("hard link to {target:?}")))?;
                } else {
                    self.check_link(&name, &rel, &target)?;
                }
            } else if kind.is_dir() {
                let dir = self.dest.join(&rel);
                std::fs::create_dir_all(&dir).map_err(DataError::io(&dir))?;
            } else if kind.is_file() || kind == tar::EntryType::Continuous {
                if rel.as_os_str().is_empty() {
                    return Err(self.refuse(&name, "file entry without a name"));
                }
                let size = entry.header().size().map_err(|e| self.corrupt(e))?;
                self.check_size(&name, size)?;
                self.write_file(&name, rel, &mut entry)?;
            } else if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() || kind.is_gnu_longname() {
                // Metadata that the tar crate has already applied.
            } else {
                return Err(self.refuse(&name, format!("unsupported entry type {:?}", kind)));
            }
        }
        Ok(())
    }

    fn zip(&mut self) -> Result<(), DataError> {
        let file = File::open(self.archive).map_err(DataError::io(self.archive))?;
        let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| self.corrupt(e))?;
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(|e| self.corrupt(e))?;
            let name = entry.name().to_string();
            let rel = self.relative(&name)?;
            if entry.is_symlink() {
                let mut target = String::new();
                entry.by_ref().take(4096).read_to_string(&mut target).map_err(|e| self.corrupt(e))?;
                self.check_link(&name, &rel, &target)?;
            } else if entry.is_dir() {
                let dir = self.dest.join(&rel);
                std::fs::create_dir_all(&dir).map_err(DataError::io(&dir))?;
            } else {
                self.check_size(&name, entry.size())?;
                self.write_file(&name, rel, &mut entry)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::tests::tmp;

    /// A tar.gz whose entries are written with raw header names, bypassing the tar crate's own
    /// checks (it refuses to *build* `..` paths, so an attacker's archive is made by hand).
    /// `(name, kind, link target, data)` of one raw tar entry.
    type RawEntry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

    fn raw_tar_gz(entries: &[RawEntry]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for &(name, kind, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if !link.is_empty() {
                h.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            builder.append(&h, data).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    fn run(dir: &Path, bytes: &[u8], name: &str, limits: ExtractLimits) -> Result<Vec<PathBuf>, String> {
        let archive = dir.join(name);
        std::fs::write(&archive, bytes).unwrap();
        extract(&archive, &dir.join("out"), &limits).map_err(|e| e.to_string())
    }

    const FILE: tar::EntryType = tar::EntryType::Regular;

    #[test]
    fn tar_gz_extracts_good_entries() {
        let d = tmp("tar-ok");
        let bytes = raw_tar_gz(&[
            ("a/b.bin", FILE, "", b"hello"),
            ("./c.txt", FILE, "", b"x"),
            ("a/ln", tar::EntryType::Symlink, "b.bin", b""),
        ]);
        let files = run(&d, &bytes, "ok.tar.gz", ExtractLimits::default()).unwrap();
        assert_eq!(files, vec![PathBuf::from("a/b.bin"), PathBuf::from("c.txt")]);
        assert_eq!(std::fs::read(d.join("out/a/b.bin")).unwrap(), b"hello");
        assert!(!d.join("out/a/ln").exists(), "links are not created");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn tar_rejects_absolute_dotdot_symlink_out_and_large() {
        let d = tmp("tar-bad");
        let arc = d.join("x.tar.gz");
        let cases: [(&[RawEntry], String); 4] = [
            (
                &[("/etc/evil", FILE, "", b"x")],
                format!("{}: refusing entry \"/etc/evil\": absolute path", arc.display()),
            ),
            (
                &[("a/../../evil", FILE, "", b"x")],
                format!("{}: refusing entry \"a/../../evil\": path contains `..`", arc.display()),
            ),
            (
                &[("a/ln", tar::EntryType::Symlink, "../../etc/passwd", b"")],
                format!(
                    "{}: refusing entry \"a/ln\": link to \"../../etc/passwd\" points out of the target directory",
                    arc.display()
                ),
            ),
            (
                &[("big", FILE, "", &[0u8; 100])],
                format!("{}: refusing entry \"big\": 100 bytes exceeds the limit of 64 bytes per entry", arc.display()),
            ),
        ];
        for (entries, expected) in cases {
            let limits = ExtractLimits { max_entry_bytes: 64, max_total_bytes: 1000 };
            let err = run(&d, &raw_tar_gz(entries), "x.tar.gz", limits).unwrap_err();
            assert_eq!(err, expected);
        }
        assert!(!d.join("evil").exists() && !d.parent().unwrap().join("evil").exists());
        let err = run(
            &d,
            &raw_tar_gz(&[("ln", tar::EntryType::Symlink, "/etc/passwd", b"")]),
            "x.tar.gz",
            ExtractLimits::default(),
        )
        .unwrap_err();
        assert!(err.ends_with("link to absolute path \"/etc/passwd\""), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn zip_bytes(f: impl FnOnce(&mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>)) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        f(&mut w);
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn zip_extracts_and_rejects_slip_symlinks_and_large() {
        let d = tmp("zip");
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let ok = zip_bytes(|w| {
            w.start_file("dir/a.txt", opts).unwrap();
            w.write_all(b"zip!").unwrap();
        });
        assert_eq!(run(&d, &ok, "ok.zip", ExtractLimits::default()).unwrap(), vec![PathBuf::from("dir/a.txt")]);
        assert_eq!(std::fs::read(d.join("out/dir/a.txt")).unwrap(), b"zip!");

        let arc = d.join("bad.zip");
        let slip = zip_bytes(|w| {
            w.start_file("../evil.txt", opts).unwrap();
            w.write_all(b"x").unwrap();
        });
        let err = run(&d, &slip, "bad.zip", ExtractLimits::default()).unwrap_err();
        assert_eq!(err, format!("{}: refusing entry \"../evil.txt\": path contains `..`", arc.display()));

        let abs = zip_bytes(|w| {
            w.start_file("/tmp/evil.txt", opts).unwrap();
        });
        let err = run(&d, &abs, "bad.zip", ExtractLimits::default()).unwrap_err();
        assert_eq!(err, format!("{}: refusing entry \"/tmp/evil.txt\": absolute path", arc.display()));

        let link = zip_bytes(|w| {
            w.add_symlink("up", "../..", opts).unwrap();
        });
        let err = run(&d, &link, "bad.zip", ExtractLimits::default()).unwrap_err();
        assert!(err.ends_with("refusing entry \"up\": link to \"../..\" points out of the target directory"), "{err}");

        let big = zip_bytes(|w| {
            w.start_file("zeros", opts).unwrap();
            w.write_all(&[0u8; 10_000]).unwrap();
        });
        let limits = ExtractLimits { max_entry_bytes: 1000, max_total_bytes: 1 << 20 };
        let err = run(&d, &big, "bad.zip", limits).unwrap_err();
        assert!(
            err.ends_with("refusing entry \"zeros\": 10000 bytes exceeds the limit of 1000 bytes per entry"),
            "{err}"
        );
        let limits = ExtractLimits { max_entry_bytes: 1 << 20, max_total_bytes: 5000 };
        let err = run(&d, &big, "bad.zip", limits).unwrap_err();
        assert!(err.ends_with("archive exceeds the limit of 5000 bytes in all"), "{err}");
        assert!(!d.join("out/zeros").exists() && !d.join("out/zeros.part").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
