//! The `.part` name a file is written under before it is complete.
//!
//! Downloads ([`crate::fetch_file`]) and archive extraction ([`crate::extract`]) both write a file
//! under this name beside its final place and rename it only once it is whole, so the final name
//! never holds a half-written file. The helper lives in its own module so that neither of those
//! two needs to import the other for it.

use std::path::{Path, PathBuf};

/// `path` with `.part` appended: where a file is written before it is complete.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_to_the_file_name() {
        assert_eq!(part_path(Path::new("cache/mnist/train.gz")), Path::new("cache/mnist/train.gz.part"));
    }
}
