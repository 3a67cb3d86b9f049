//! Journal entries in the journal export format
//! (<https://systemd.io/JOURNAL_EXPORT_FORMATS/>), the body
//! systemd-journal-upload sends and VictoriaLogs' `/insert/journald/upload`
//! reads: one `NAME=value` line per field, a value holding a newline or
//! other control bytes (or not UTF-8) as `NAME`, its length as 64-bit
//! little endian, the bytes and a newline; an empty line ends the entry.

/// The longest value sent: a longer one is cut to it. The kubelet's and
/// containerd's lines are far shorter; a runaway field must not make a
/// batch the store refuses.
pub const MAX_VALUE: usize = 64 << 10;
/// The most one entry may take: fields past it are left out. With
/// [`MAX_VALUE`], no entry can push a batch past the store's body limit.
pub const MAX_ENTRY: usize = 256 << 10;

/// A field name the format carries: uppercase ASCII letters, digits and
/// `_`, not starting with a digit, at most 64 bytes (journald's own rule).
/// Names starting with `__` are the entry's metadata, written here only
/// for the time.
fn sendable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with("__")
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// A value sent as text: UTF-8 with no control byte but tab.
fn text(value: &[u8]) -> Option<&str> {
    if value.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

/// One entry, written at `realtime_usec` (microseconds since the epoch:
/// the store's time field), with its `fields`, and how many of its values
/// were cut or left out ([`MAX_VALUE`], [`MAX_ENTRY`]).
pub fn entry<'a>(
    realtime_usec: u64,
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> (Vec<u8>, usize) {
    let mut out = format!("__REALTIME_TIMESTAMP={realtime_usec}\n").into_bytes();
    let mut cut = 0;
    for (name, value) in fields {
        if !sendable(name) {
            continue;
        }
        if out.len() + name.len() + value.len().min(MAX_VALUE) + 10 > MAX_ENTRY {
            cut += 1;
            continue;
        }
        if value.len() > MAX_VALUE {
            cut += 1;
        }
        let value = &value[..value.len().min(MAX_VALUE)];
        out.extend_from_slice(name.as_bytes());
        match text(value) {
            Some(text) => {
                out.push(b'=');
                out.extend_from_slice(text.as_bytes());
            }
            None => {
                out.push(b'\n');
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                out.extend_from_slice(value);
            }
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    (out, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_are_lines_and_others_are_sized() {
        let (out, cut) = entry(
            1_700_000_000_123_456,
            [
                ("MESSAGE", b"pulled \"web\"".as_slice()),
                ("_SYSTEMD_UNIT", b"kubelet.service".as_slice()),
                ("STACK", b"a\nb".as_slice()),
            ],
        );
        let mut expected = b"__REALTIME_TIMESTAMP=1700000000123456\nMESSAGE=pulled \"web\"\n_SYSTEMD_UNIT=kubelet.service\nSTACK\n".to_vec();
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(b"a\nb\n\n");
        assert_eq!(out, expected);
        assert_eq!(cut, 0);
    }

    #[test]
    fn names_the_format_cannot_carry_are_left_out_and_long_values_cut() {
        let long = vec![b'x'; MAX_VALUE + 10];
        let (out, cut) = entry(
            1,
            [
                ("lower", b"x".as_slice()),
                ("__CURSOR", b"s=1".as_slice()),
                ("9LIVES", b"x".as_slice()),
                ("A=B", b"x".as_slice()),
                ("MESSAGE", long.as_slice()),
            ],
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, format!("__REALTIME_TIMESTAMP=1\nMESSAGE={}\n\n", "x".repeat(MAX_VALUE)));
        assert_eq!(cut, 1);
    }

    #[test]
    fn an_entry_never_outgrows_its_bound() {
        let big = vec![b'y'; MAX_VALUE];
        let names: Vec<String> = (0..10).map(|i| format!("FIELD_{i}")).collect();
        let (out, cut) = entry(1, names.iter().map(|n| (n.as_str(), big.as_slice())));
        assert!(out.len() <= MAX_ENTRY, "{}", out.len());
        assert_eq!(cut, 10 - 3, "three 64 KiB values fit in 256 KiB");
        assert!(out.ends_with(b"\n\n"));
    }

    #[test]
    fn invalid_utf8_and_control_bytes_are_sent_sized() {
        for value in [b"\xff\xfe".as_slice(), b"bell\x07".as_slice()] {
            let (out, _) = entry(1, [("MESSAGE", value)]);
            let field = &out[b"__REALTIME_TIMESTAMP=1\n".len()..];
            assert!(field.starts_with(b"MESSAGE\n"), "{field:?}");
            assert_eq!(&field[8..16], (value.len() as u64).to_le_bytes());
        }
    }
}
