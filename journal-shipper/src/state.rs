//! The position shipped up to: the cursor of the last entry whose batch the
//! store took, in a file on the node (a hostPath), so that a replaced pod
//! resumes right after it: no entry sent twice, none skipped.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the saved position {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot save the position in {path}: {source} (the state directory must be writable)")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The saved cursor, None when nothing was saved yet.
pub fn load(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|c| !c.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { path: path.to_owned(), source }),
    }
}

/// Saves `cursor` whole or not at all: written aside, synced, then renamed
/// over the old one.
pub fn save(path: &Path, cursor: &str) -> Result<(), Error> {
    let fail = |source| Error::Write { path: path.to_owned(), source };
    let tmp = path.with_extension("partial");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&tmp).map_err(fail)?;
        file.write_all(cursor.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_cursor_reads_back_and_none_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, "SJ1:abc").unwrap();
        save(&path, "SJ1:def").unwrap();
        assert_eq!(load(&path).unwrap().as_deref(), Some("SJ1:def"));
        assert!(!path.with_extension("partial").exists());
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let err = save(Path::new("/proc/no-such-dir/cursor"), "x").unwrap_err();
        assert!(err.to_string().contains("/proc/no-such-dir/cursor"), "{err}");
    }
}
