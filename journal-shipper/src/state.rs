//! The position shipped up to: the last entry whose batch the store took,
//! in a file on the node (a hostPath), so that a replaced pod resumes right
//! after it: no entry sent twice, none skipped.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the saved position {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot save the position in {path}: {source} (the state directory must be writable)")]
    Write { path: PathBuf, source: std::io::Error },
}

/// An entry's place: its cursor, and its time (microseconds since the
/// epoch), with which a read seeks there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub cursor: String,
    pub realtime_usec: u64,
}

/// The saved position, None when nothing was saved yet. The file holds the
/// cursor on its first line and the time on its second; a file without a
/// readable time seeks from the journal's start.
pub fn load(path: &Path) -> Result<Option<Position>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Read { path: path.to_owned(), source }),
    };
    let mut lines = text.lines().map(str::trim);
    let cursor = lines.next().unwrap_or_default();
    let realtime_usec = lines.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    Ok((!cursor.is_empty()).then(|| Position { cursor: cursor.to_owned(), realtime_usec }))
}

/// Saves `position` whole or not at all: written aside, synced, renamed
/// over the old one, and the rename synced.
pub fn save(path: &Path, position: &Position) -> Result<(), Error> {
    use std::io::Write as _;
    let fail = |source| Error::Write { path: path.to_owned(), source };
    let tmp = path.with_extension("partial");
    let mut file = std::fs::File::create(&tmp).map_err(fail)?;
    file.write_all(format!("{}\n{}\n", position.cursor, position.realtime_usec).as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_position_reads_back_and_none_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &Position { cursor: "SJ1:abc".into(), realtime_usec: 1 }).unwrap();
        let second = Position { cursor: "SJ1:def".into(), realtime_usec: 1_700_000_000_000_000 };
        save(&path, &second).unwrap();
        assert_eq!(load(&path).unwrap(), Some(second));
        assert!(!path.with_extension("partial").exists());
        // A cursor without its time (or a garbled one) seeks from the start.
        std::fs::write(&path, "SJ1:abc\nnot a time\n").unwrap();
        assert_eq!(load(&path).unwrap(), Some(Position { cursor: "SJ1:abc".into(), realtime_usec: 0 }));
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let position = Position { cursor: "x".into(), realtime_usec: 0 };
        let err = save(Path::new("/proc/no-such-dir/cursor"), &position).unwrap_err();
        assert!(err.to_string().contains("/proc/no-such-dir/cursor"), "{err}");
    }
}
