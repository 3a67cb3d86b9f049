//! Reading the node's journal files (read-only, from the host's journal
//! directories) with a pure-Rust reader: no libsystemd, no journalctl in
//! the image.

use std::path::PathBuf;

use sdjournal::{Cursor, Journal, SdJournalError};

use crate::batch::{Batch, Limits, of_units};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the journal in {dirs}: {source}")]
    Read { dirs: String, source: SdJournalError },
    #[error("the saved position {cursor:?} is not a cursor: {source}")]
    BadCursor { cursor: String, source: SdJournalError },
}

/// Where a read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Right after this entry (its cursor, as saved).
    After(String),
    /// At the first entry written at or after this time (microseconds
    /// since the epoch): the first start on a node, with nothing saved.
    Since(u64),
}

/// The journal's directories and the units whose entries are shipped.
#[derive(Debug, Clone)]
pub struct Source {
    pub dirs: Vec<PathBuf>,
    pub units: Vec<String>,
}

/// One batch from `start`, and the cursor of the last entry read (None when
/// nothing was read: the position stays). Blocking: the files are read
/// synchronously. A directory with no journal file yet reads as nothing.
pub fn read(source: &Source, start: &Start, limits: &Limits) -> Result<(Batch, Option<String>), Error> {
    let error = |e| Error::Read {
        dirs: source.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
        source: e,
    };
    // Opened on every read: journald rotates files, and a snapshot would
    // not see the new ones.
    let journal = match Journal::open_dirs(&source.dirs) {
        Ok(journal) => journal,
        Err(SdJournalError::NotFound) => return Ok((Batch::default(), None)),
        Err(e) => return Err(error(e)),
    };
    let mut query = journal.query();
    match start {
        Start::After(cursor) => {
            let parsed = Cursor::parse(cursor)
                .map_err(|source| Error::BadCursor { cursor: cursor.clone(), source })?;
            query.after_cursor(parsed);
        }
        Start::Since(usec) => {
            query.since_realtime(*usec);
        }
    }
    let mut batch = Batch::default();
    let mut last = None;
    for entry in query.iter().map_err(error)? {
        let entry = entry.map_err(error)?;
        let kept = of_units(entry.get("_SYSTEMD_UNIT"), &source.units);
        let full = batch.push(kept.then(|| (entry.realtime_usec(), entry.iter_fields())), limits);
        last = Some(entry);
        if full {
            break;
        }
    }
    let cursor = last.map(|entry| entry.cursor().map(|c| c.to_string())).transpose().map_err(error)?;
    Ok((batch, cursor))
}
