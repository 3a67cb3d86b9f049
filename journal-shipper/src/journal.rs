//! Reading the node's journal files (read-only, from the host's journal
//! directories) with a pure-Rust reader: no libsystemd, no journalctl in
//! the image.

use std::path::PathBuf;

use sdjournal::{Cursor, Journal, SdJournalError};

use crate::{
    batch::{Batch, Limits, Push, of_units},
    export,
    state::Position,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read the journal in {dirs}: {source} (the host's journal directories must be mounted read-only there, readable by root)"
    )]
    Read { dirs: String, source: SdJournalError },
    #[error("the saved position {cursor:?} is not a cursor: {source}")]
    BadCursor { cursor: String, source: SdJournalError },
}

/// Where a read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Right after this entry.
    After(Position),
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

/// One batch from `start`, and the position of the last entry taken (None
/// when none was: the position stays). Blocking: the files are read
/// synchronously. A directory with no journal file yet reads as nothing;
/// an entry the reader cannot read (corrupt, or past its limits) is passed
/// over and counted, so that one bad entry never stops the shipping.
pub fn read(source: &Source, start: &Start, limits: &Limits) -> Result<(Batch, Option<Position>), Error> {
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
        Start::After(position) => {
            let cursor = Cursor::parse(&position.cursor)
                .map_err(|source| Error::BadCursor { cursor: position.cursor.clone(), source })?;
            // The time lets each file seek to the position; the cursor alone
            // would be checked against every entry from the files' start.
            query.since_realtime(position.realtime_usec).after_cursor(cursor);
        }
        Start::Since(usec) => {
            query.since_realtime(*usec);
        }
    }
    let mut batch = Batch::default();
    let mut last = None;
    for item in query.iter().map_err(error)? {
        let entry = match item {
            Ok(entry) => entry,
            Err(e) => {
                tracing::debug!(error = %e, "an entry the reader cannot read is passed over");
                if batch.pass_over(limits) {
                    break;
                }
                continue;
            }
        };
        let shipped = of_units(entry.get("_SYSTEMD_UNIT"), entry.get("UNIT"), &source.units)
            .then(|| export::entry(entry.realtime_usec(), entry.iter_fields()));
        match batch.push(shipped, limits) {
            Push::NoRoom => break,
            Push::Taken { full } => {
                last = Some(entry);
                if full {
                    break;
                }
            }
        }
    }
    let position = last
        .map(|entry| {
            entry.cursor().map(|c| Position { cursor: c.to_string(), realtime_usec: entry.realtime_usec() })
        })
        .transpose()
        .map_err(error)?;
    Ok((batch, position))
}
