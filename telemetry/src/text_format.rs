//! Reading the Prometheus text exposition format: the kubelet's
//! `/metrics/cadvisor` (node-exporter) and MetalLB's speakers (`vigil drill`).
//! Only the families asked for are parsed; a line of another family is
//! skipped before its labels are.

/// A line that is not a sample line of the format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {number}: {message}: {text}")]
pub struct ParseError {
    pub number: usize,
    pub message: String,
    pub text: String,
}

/// One sample line of the text exposition format.
#[derive(Debug, PartialEq)]
pub struct Line<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Line<'_> {
    pub fn label(&self, key: &str) -> &str {
        self.labels.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| v.as_str())
    }
}

/// The sample lines of `text` whose metric name is one of `families`.
pub fn parse<'a>(text: &'a str, families: &[&str]) -> Result<Vec<Line<'a>>, ParseError> {
    let mut lines = vec![];
    for (number, raw) in text.lines().enumerate() {
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let name_end = raw.find(['{', ' ']).unwrap_or(raw.len());
        let name = &raw[..name_end];
        if !families.contains(&name) {
            continue;
        }
        let line = parse_line(name, &raw[name_end..]).map_err(|message| ParseError {
            number: number + 1,
            message,
            text: raw.to_owned(),
        })?;
        lines.push(line);
    }
    Ok(lines)
}

/// `rest` is what follows the metric name: `{labels} value [timestamp]`.
fn parse_line<'a>(name: &'a str, rest: &'a str) -> Result<Line<'a>, String> {
    let mut labels = vec![];
    let mut rest = rest;
    if let Some(body) = rest.strip_prefix('{') {
        rest = body;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label without '='")?;
            let key = rest[..eq].trim();
            let quoted = rest[eq + 1..].strip_prefix('"').ok_or("a label value without quotes")?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("an unterminated escape".into()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value".into()),
                }
            };
            labels.push((key, value));
            rest = &quoted[end + 1..];
        }
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().map_err(|e| format!("value {v}: {e}"))?,
    };
    Ok(Line { name, labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_families_asked_for_with_escaped_labels() {
        let text =
            "# HELP x\nother{a=\"\n1\nwanted{node=\"w\\\"1\",ip=\"10.0.0.1\"} 1 1700000000\nwanted 2.5\n";
        let lines = parse(text, &["wanted"]).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].label("node"), lines[0].label("ip"), lines[0].value), ("w\"1", "10.0.0.1", 1.0));
        assert_eq!((lines[1].label("node"), lines[1].value), ("", 2.5));
    }

    #[test]
    fn a_broken_line_is_named() {
        let err = parse("wanted{node=\"w 1\n", &["wanted"]).unwrap_err();
        assert_eq!((err.number, err.message.as_str()), (1, "an unterminated label value"));
    }
}
