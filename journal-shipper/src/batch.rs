//! One batch: the entries read after a position, those of the units asked
//! for in the body, up to the limits.

/// How much one batch may hold, and how much of the journal it may read.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries in the body.
    pub entries: usize,
    /// Bytes of body. An entry that would cross it waits for the next
    /// batch (one entry alone is bounded by `export::MAX_ENTRY`).
    pub bytes: usize,
    /// Entries read, shipped or not: bounds the work of one turn in a
    /// journal where the units asked for are rare (the node's kernel lines).
    pub examined: usize,
}

impl Limits {
    /// About a second of a busy kubelet, well under the route's 4 MiB.
    pub const DEFAULT: Limits = Limits { entries: 1000, bytes: 1 << 20, examined: 20_000 };
}

/// What one read of the journal gave.
#[derive(Debug, Default)]
pub struct Batch {
    /// The export-format body of the entries shipped.
    pub body: Vec<u8>,
    /// How many entries the body holds.
    pub entries: usize,
    /// How many entries were read (shipped, of other units, or unreadable).
    pub examined: usize,
    /// Entries the reader could not read, passed over.
    pub unreadable: usize,
    /// Values cut or left out to keep an entry within its bound.
    pub cut: usize,
    /// Whether a limit ended the read (more may follow at once).
    pub full: bool,
}

/// What became of an entry offered to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Taken; `full` once a limit is reached.
    Taken { full: bool },
    /// Not taken: it would cross the byte limit. The read stops before it.
    NoRoom,
}

impl Batch {
    fn reached(&self, limits: &Limits) -> bool {
        self.entries >= limits.entries || self.body.len() >= limits.bytes || self.examined >= limits.examined
    }

    /// The next entry read: `shipped` is its export-format bytes and the
    /// values cut from it, None for an entry of another unit.
    pub fn push(&mut self, shipped: Option<(Vec<u8>, usize)>, limits: &Limits) -> Push {
        if let Some((bytes, cut)) = shipped {
            if self.entries > 0 && self.body.len() + bytes.len() > limits.bytes {
                self.full = true;
                return Push::NoRoom;
            }
            self.body.extend_from_slice(&bytes);
            self.entries += 1;
            self.cut += cut;
        }
        self.examined += 1;
        self.full = self.reached(limits);
        Push::Taken { full: self.full }
    }

    /// An entry the reader could not read: passed over, counted.
    pub fn pass_over(&mut self, limits: &Limits) -> bool {
        self.examined += 1;
        self.unreadable += 1;
        self.full = self.reached(limits);
        self.full
    }
}

/// Whether an entry is about one of `units`: written by it (`_SYSTEMD_UNIT`,
/// set by journald), or by systemd about it (`UNIT`: started, stopped, its
/// main process exited), as `journalctl -u` shows both.
pub fn of_units(written_by: Option<&[u8]>, about: Option<&[u8]>, units: &[String]) -> bool {
    let named =
        |unit: Option<&[u8]>| unit.is_some_and(|unit| units.iter().any(|wanted| wanted.as_bytes() == unit));
    named(written_by) || named(about)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> Option<(Vec<u8>, usize)> {
        Some((text.as_bytes().to_vec(), 0))
    }

    #[test]
    fn a_batch_ends_at_the_first_limit_reached() {
        let limits = Limits { entries: 2, bytes: 1 << 20, examined: 100 };
        let mut batch = Batch::default();
        assert_eq!(batch.push(entry("a"), &limits), Push::Taken { full: false });
        assert_eq!(batch.push(None, &limits), Push::Taken { full: false });
        assert_eq!(batch.push(entry("b"), &limits), Push::Taken { full: true });
        assert_eq!((batch.entries, batch.examined, batch.body.as_slice()), (2, 3, b"ab".as_slice()));

        let limits = Limits { entries: 100, bytes: 1 << 20, examined: 2 };
        let mut batch = Batch::default();
        assert!(!batch.pass_over(&limits));
        assert_eq!(batch.push(None, &limits), Push::Taken { full: true });
        assert!(batch.body.is_empty());
        assert_eq!(batch.unreadable, 1);
    }

    #[test]
    fn an_entry_that_would_cross_the_byte_limit_waits_unless_it_is_alone() {
        let limits = Limits { entries: 100, bytes: 10, examined: 100 };
        let mut batch = Batch::default();
        assert_eq!(batch.push(entry("123456"), &limits), Push::Taken { full: false });
        assert_eq!(batch.push(entry("123456"), &limits), Push::NoRoom);
        assert_eq!((batch.entries, batch.examined, batch.full), (1, 1, true));
        // Alone, it goes: a batch never stalls on one entry.
        let mut batch = Batch::default();
        assert_eq!(batch.push(entry("a line longer than ten bytes"), &limits), Push::Taken { full: true });
    }

    #[test]
    fn entries_by_or_about_the_units_asked_for_are_shipped() {
        let units = ["kubelet.service".to_owned(), "containerd.service".to_owned()];
        assert!(of_units(Some(b"kubelet.service"), None, &units));
        assert!(
            of_units(Some(b"init.scope"), Some(b"containerd.service"), &units),
            "systemd about containerd"
        );
        assert!(!of_units(Some(b"kubelet.service.d"), None, &units));
        assert!(!of_units(None, None, &units), "the kernel's lines name no unit");
    }
}
