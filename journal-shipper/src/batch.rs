//! One batch: the entries read after a position, those of the units asked
//! for in the body, up to the limits, and the position to resume after
//! once the body is delivered.

use crate::export;

/// How much one batch may hold, and how much of the journal it may read.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries in the body.
    pub entries: usize,
    /// Bytes of body; the entry that crosses it is the last.
    pub bytes: usize,
    /// Entries read, kept or not: bounds the work of one turn in a journal
    /// where the units asked for are rare (the node's kernel lines).
    pub examined: usize,
}

impl Limits {
    /// About a second of a busy kubelet, well under the route's 4 MiB.
    pub const DEFAULT: Limits = Limits { entries: 1000, bytes: 1 << 20, examined: 20_000 };
}

/// What one read of the journal gave.
#[derive(Debug, Default)]
pub struct Batch {
    /// The export-format body of the entries kept.
    pub body: Vec<u8>,
    /// How many entries the body holds.
    pub entries: usize,
    /// How many entries were read.
    pub examined: usize,
    /// Whether a limit ended the read (more may follow at once).
    pub full: bool,
}

impl Batch {
    /// Takes the next entry read: into the body when `kept` (its time and
    /// fields). Returns true once a limit is reached.
    pub fn push<'a>(
        &mut self,
        kept: Option<(u64, impl IntoIterator<Item = (&'a str, &'a [u8])>)>,
        limits: &Limits,
    ) -> bool {
        self.examined += 1;
        if let Some((realtime_usec, fields)) = kept {
            export::append_entry(&mut self.body, realtime_usec, fields);
            self.entries += 1;
        }
        self.full = self.entries >= limits.entries
            || self.body.len() >= limits.bytes
            || self.examined >= limits.examined;
        self.full
    }
}

/// Whether an entry's `_SYSTEMD_UNIT` is one of `units`.
pub fn of_units(unit: Option<&[u8]>, units: &[String]) -> bool {
    unit.is_some_and(|unit| units.iter().any(|wanted| wanted.as_bytes() == unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry read: its time and fields, when kept.
    type Read<'a> = Option<(u64, Vec<(&'a str, &'a [u8])>)>;

    fn entry(message: &str) -> Read<'_> {
        Some((1, vec![("MESSAGE", message.as_bytes())]))
    }

    #[test]
    fn a_batch_ends_at_the_first_limit_reached() {
        let limits = Limits { entries: 2, bytes: 1 << 20, examined: 100 };
        let mut batch = Batch::default();
        assert!(!batch.push(entry("a"), &limits));
        assert!(!batch.push(Read::None, &limits));
        assert!(batch.push(entry("b"), &limits));
        assert_eq!((batch.entries, batch.examined, batch.full), (2, 3, true));

        let limits = Limits { entries: 100, bytes: 1 << 20, examined: 2 };
        let mut batch = Batch::default();
        assert!(!batch.push(Read::None, &limits));
        assert!(batch.push(Read::None, &limits));
        assert!(batch.body.is_empty());

        let limits = Limits { entries: 100, bytes: 40, examined: 100 };
        let mut batch = Batch::default();
        assert!(!batch.push(entry("short"), &limits));
        assert!(batch.push(entry("a line long enough to cross the limit"), &limits));
        assert_eq!(batch.entries, 2, "the entry that crosses the limit is kept whole");
    }

    #[test]
    fn only_the_units_asked_for_are_kept() {
        let units = ["kubelet.service".to_owned(), "containerd.service".to_owned()];
        assert!(of_units(Some(b"kubelet.service"), &units));
        assert!(!of_units(Some(b"kubelet.service.d"), &units));
        assert!(!of_units(None, &units), "the kernel's lines name no unit");
    }
}
