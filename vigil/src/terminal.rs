//! Text that others wrote (alert labels, silence comments, span names),
//! printed to a terminal: a control character in it could move the cursor
//! or rewrite what is shown, so each is printed escaped.

/// `value` with every control character escaped (`\u{1b}`, `\n`, ...).
pub fn escaped(value: &str) -> String {
    value.chars().flat_map(|c| if c.is_control() { c.escape_default().collect() } else { vec![c] }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(super::escaped("a\u{1b}[2Jb\nc é"), r"a\u{1b}[2Jb\nc é");
    }
}
