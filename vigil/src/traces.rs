//! A trace from Jaeger's query API, drawn as a waterfall: text for a
//! terminal (`vigil traces show ID`) and SVG (the drill's
//! `incident-trace.svg`). Jaeger's own UI is not there to draw it: the
//! Jaeger module vigil builds carries no UI assets, and upstream builds
//! them from a separate repository the module proxy does not serve.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::addons::{credentials, jaeger};
use crate::terminal::escaped;

/// One trace as `GET /api/traces/{id}` returns it (`data[0]`), the fields
/// the waterfall needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub spans: Vec<Span>,
    #[serde(default)]
    pub processes: BTreeMap<String, Process>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    #[serde(rename = "spanID")]
    pub span_id: String,
    pub operation_name: String,
    #[serde(default)]
    pub references: Vec<Reference>,
    /// Microseconds since the epoch.
    pub start_time: u64,
    /// Microseconds.
    pub duration: u64,
    #[serde(rename = "processID", default)]
    pub process_id: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    pub ref_type: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tag {
    pub key: String,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub service_name: String,
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    data: Vec<Trace>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{0:?} is not a trace id: 1 to 32 hexadecimal digits (as the drill report or a traceparent gives it)"
    )]
    BadId(String),
    #[error("the jaeger Service has no LoadBalancer address: run `vigil up` (without --cluster-only)")]
    NoAddress,
    #[error("Jaeger holds no trace {0}: it keeps traces in memory, so a restart of its pod forgets them")]
    NotFound(String),
    #[error("reading vigil's credentials for Jaeger: {0}")]
    Credentials(#[from] credentials::Error),
    #[error("asking Jaeger ({url}): {source}")]
    Http { url: String, source: reqwest::Error },
}

/// The id as Jaeger's API takes it, or why not: it goes into a URL path.
fn checked_id(id: &str) -> Result<String, Error> {
    let id = id.trim();
    if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::BadId(escaped(id)));
    }
    Ok(id.to_ascii_lowercase())
}

/// Asks the cluster's Jaeger for trace `id`.
pub async fn fetch(client: &kube::Client, id: &str) -> Result<Trace, Error> {
    let id = checked_id(id)?;
    let base = crate::status::addon_url(client, jaeger::NAME).await.ok_or(Error::NoAddress)?;
    let credentials = credentials::read_api(client).await?;
    let url = format!("{base}api/traces/{id}");
    let http = crate::monitoring::render::client(&credentials)
        .map_err(|source| Error::Http { url: url.clone(), source })?;
    let answer = http.get(&url).send().await.map_err(|source| Error::Http { url: url.clone(), source })?;
    if answer.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(Error::NotFound(id));
    }
    let answer: Answer = answer
        .error_for_status()
        .map_err(|source| Error::Http { url: url.clone(), source })?
        .json()
        .await
        .map_err(|source| Error::Http { url, source })?;
    answer.data.into_iter().next().ok_or(Error::NotFound(id))
}

/// One line of the waterfall: a span under its parent, in start order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub depth: usize,
    pub service: String,
    pub operation: String,
    /// Microseconds from the trace's first span.
    pub offset: u64,
    pub duration: u64,
    pub error: bool,
}

impl Trace {
    fn parent_of(span: &Span) -> Option<&str> {
        span.references.iter().find(|r| r.ref_type == "CHILD_OF").map(|r| r.span_id.as_str())
    }

    /// Every span once, each after its parent and before its later
    /// siblings; a span whose parent is not in the trace (not exported yet,
    /// or from another service's trace) starts a tree of its own.
    pub fn rows(&self) -> Vec<Row> {
        let ids: BTreeSet<&str> = self.spans.iter().map(|s| s.span_id.as_str()).collect();
        let mut children: BTreeMap<Option<&str>, Vec<&Span>> = BTreeMap::new();
        for span in &self.spans {
            let parent = Self::parent_of(span).filter(|p| ids.contains(p) && *p != span.span_id);
            children.entry(parent).or_default().push(span);
        }
        for siblings in children.values_mut() {
            siblings.sort_by_key(|s| (s.start_time, s.span_id.as_str()));
        }
        let first = self.spans.iter().map(|s| s.start_time).min().unwrap_or(0);
        let mut rows = Vec::with_capacity(self.spans.len());
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(&Span, usize)> =
            children.get(&None).into_iter().flatten().rev().map(|s| (*s, 0)).collect();
        while let Some((span, depth)) = stack.pop() {
            if !seen.insert(span.span_id.as_str()) {
                continue;
            }
            rows.push(self.row(span, depth, first));
            let below = children.get(&Some(span.span_id.as_str())).into_iter().flatten().rev();
            stack.extend(below.map(|s| (*s, depth + 1)));
        }
        // Spans in a parent cycle are reached from no root: listed flat.
        for span in &self.spans {
            if seen.insert(span.span_id.as_str()) {
                rows.push(self.row(span, 0, first));
            }
        }
        rows
    }

    fn row(&self, span: &Span, depth: usize, first: u64) -> Row {
        Row {
            depth,
            service: self.processes.get(&span.process_id).map(|p| p.service_name.clone()).unwrap_or_default(),
            operation: span.operation_name.clone(),
            offset: span.start_time.saturating_sub(first),
            duration: span.duration,
            error: span.tags.iter().any(|t| t.key == "error" && t.value == serde_json::Value::Bool(true)),
        }
    }

    /// Microseconds from the first span's start to the last span's end.
    pub fn length(&self) -> u64 {
        let first = self.spans.iter().map(|s| s.start_time).min().unwrap_or(0);
        let last = self.spans.iter().map(|s| s.start_time + s.duration).max().unwrap_or(0);
        last.saturating_sub(first)
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Bar width in the terminal.
const BAR: usize = 32;

/// The waterfall for a terminal: each span's start and duration, its
/// service and operation indented under its parent, and a bar on the
/// trace's time axis. Names are anyone's who may send spans, so control
/// characters are shown escaped.
pub fn text(trace: &Trace) -> String {
    let length = trace.length().max(1);
    let rows = trace.rows();
    let services: BTreeSet<&str> = trace.processes.values().map(|p| p.service_name.as_str()).collect();
    let mut out = format!(
        "trace {}: {} spans over {:.1} ms, services {}\n\n",
        escaped(&trace.trace_id),
        rows.len(),
        ms(trace.length()),
        services.into_iter().map(escaped).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(out, "{:>10} {:>10}  {:<BAR$}  SPAN", "START ms", "TOOK ms", "");
    for row in rows {
        let from = (row.offset as f64 / length as f64 * BAR as f64).floor() as usize;
        let width = ((row.duration as f64 / length as f64 * BAR as f64).round() as usize).max(1);
        let from = from.min(BAR - 1);
        let width = width.min(BAR - from);
        let bar = format!("{}{}{}", " ".repeat(from), "█".repeat(width), " ".repeat(BAR - from - width));
        let _ = writeln!(
            out,
            "{:>10.1} {:>10.1}  {bar}  {}{}: {}{}",
            ms(row.offset),
            ms(row.duration),
            "  ".repeat(row.depth),
            escaped(&row.service),
            escaped(&row.operation),
            if row.error { "  (error)" } else { "" }
        );
    }
    out
}

const WIDTH: f64 = 960.0;
const LABELS: f64 = 420.0;
const ROW: f64 = 22.0;
const TOP: f64 = 56.0;

/// The waterfall as SVG: one row per span, its label (indented under its
/// parent) on the left and its bar on the trace's time axis on the right;
/// failed spans red.
pub fn svg(trace: &Trace, title: &str) -> String {
    use crate::drill::report::escape;
    let rows = trace.rows();
    let length = trace.length().max(1) as f64;
    let plot = WIDTH - LABELS - 20.0;
    let height = TOP + ROW * rows.len() as f64 + 30.0;
    let x = |micros: f64| LABELS + plot * micros / length;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="10" y="22" font-size="15">{}</text>"#, escape(title));
    let _ = writeln!(
        out,
        r##"<text x="10" y="42" fill="#555">trace {}: {} spans over {:.1} ms</text>"##,
        escape(&trace.trace_id),
        rows.len(),
        ms(trace.length())
    );
    for (i, row) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let label = format!("{}: {}", row.service, row.operation);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            10.0 + 14.0 * row.depth as f64,
            y + 14.0,
            escape(&label)
        );
        let (x0, x1) = (x(row.offset as f64), x((row.offset + row.duration) as f64));
        let fill = if row.error { "#d33" } else { "#36c" };
        let _ = writeln!(
            out,
            r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}"><title>{}</title></rect>"#,
            y + 3.0,
            (x1 - x0).max(1.0),
            ROW - 6.0,
            escape(&format!("{label}: {:.1} ms at {:.1} ms", ms(row.duration), ms(row.offset)))
        );
    }
    let axis = TOP + ROW * rows.len() as f64 + 4.0;
    let _ = writeln!(
        out,
        r#"<line x1="{LABELS}" y1="{axis}" x2="{}" y2="{axis}" stroke="black"/>"#,
        LABELS + plot
    );
    for quarter in 0..=4 {
        let micros = length * quarter as f64 / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0} ms</text>"#,
            x(micros),
            axis + 16.0,
            micros / 1000.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace() -> Trace {
        let span = |id: &str, parent: Option<&str>, op: &str, start: u64, duration: u64| {
            serde_json::json!({
                "traceID": "0af7651916cd43dd8448eb211c80319c",
                "spanID": id,
                "operationName": op,
                "references": parent.map(|p| vec![serde_json::json!({"refType": "CHILD_OF", "traceID": "0af7651916cd43dd8448eb211c80319c", "spanID": p})]).unwrap_or_default(),
                "startTime": 1_700_000_000_000_000u64 + start,
                "duration": duration,
                "processID": "p1",
                "tags": if op.contains("fail") { vec![serde_json::json!({"key": "error", "type": "bool", "value": true})] } else { vec![] },
            })
        };
        serde_json::from_value(serde_json::json!({
            "traceID": "0af7651916cd43dd8448eb211c80319c",
            "spans": [
                span("c", Some("a"), "deliver node-down to webhook", 2_000, 1_000),
                span("a", None, "incident: node vigil-worker", 0, 10_000),
                span("b", Some("a"), "verify rescheduling", 1_000, 8_000),
                span("d", Some("b"), "list pods", 1_500, 500),
                span("e", Some("gone"), "orphan \u{1b}[31m fail", 9_000, 500),
            ],
            "processes": {"p1": {"serviceName": "alerter", "tags": []}},
        }))
        .unwrap()
    }

    #[test]
    fn rows_put_each_span_under_its_parent_in_start_order() {
        let rows: Vec<(usize, String)> = trace().rows().into_iter().map(|r| (r.depth, r.operation)).collect();
        let want = [
            (0, "incident: node vigil-worker"),
            (1, "verify rescheduling"),
            (2, "list pods"),
            (1, "deliver node-down to webhook"),
            (0, "orphan \u{1b}[31m fail"),
        ];
        assert_eq!(rows, want.map(|(d, o)| (d, o.to_owned())));
    }

    #[test]
    fn a_parent_cycle_still_lists_every_span_once() {
        let mut t = trace();
        // a's parent is d, d's is b, b's is a: no root among them.
        t.spans[1].references = vec![Reference { ref_type: "CHILD_OF".into(), span_id: "d".into() }];
        let rows = t.rows();
        assert_eq!(rows.len(), t.spans.len());
        let ops: BTreeSet<String> = rows.into_iter().map(|r| r.operation).collect();
        assert_eq!(ops.len(), t.spans.len());
    }

    #[test]
    fn the_text_escapes_control_characters_and_marks_errors() {
        let text = text(&trace());
        assert!(
            text.starts_with(
                "trace 0af7651916cd43dd8448eb211c80319c: 5 spans over 10.0 ms, services alerter"
            )
        );
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains(r"orphan \u{1b}[31m fail  (error)"), "{text}");
        assert!(text.contains("      2.0        1.0  "), "{text}");
        assert!(text.contains("    alerter: list pods"), "{text}");
    }

    #[test]
    fn the_svg_has_a_bar_per_span_and_escapes_names() {
        let svg = svg(&trace(), "incident <x>");
        assert_eq!(svg.matches("<rect x=").count(), 5);
        assert!(svg.contains("incident &lt;x&gt;"));
        assert_eq!(svg.matches(r##"fill="#d33""##).count(), 1);
        assert!(svg.contains("10 ms"));
    }

    #[test]
    fn an_id_that_is_not_hex_is_refused_before_any_request() {
        assert!(matches!(checked_id("../../api/services"), Err(Error::BadId(_))));
        assert!(matches!(checked_id(&"a".repeat(33)), Err(Error::BadId(_))));
        assert_eq!(checked_id(" 0AF7 ").unwrap(), "0af7");
    }
}
