//! The drill's report, in a dated folder: `report.json` (what `--json`
//! prints), `report.md` for people, `timeline.svg`: the milestones on a time
//! axis over the load's answered and failed requests, second by second.
//! (`drill::run` adds the failover panels and `incident-trace.svg`, the
//! incident's trace as a waterfall, drawn by `crate::traces`.)

use std::{fmt::Write as _, path::Path};

use super::{Error, Report, Verdict};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 40.0;
const PLOT: f64 = WIDTH - 2.0 * LEFT;
const BARS_TOP: f64 = 60.0;
const BARS_HEIGHT: f64 = 120.0;
const LABELS_TOP: f64 = 210.0;

/// Text for SVG: the characters that would end a text node or an attribute, escaped.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The timeline as SVG: one bar per second of load (grey answered, red
/// failed), one labelled line per milestone.
pub fn svg(report: &Report) -> String {
    let last = report
        .milestones
        .iter()
        .filter_map(|m| m.seconds)
        .chain([report.requests.per_second.len() as f64])
        .fold(10.0_f64, f64::max)
        .ceil();
    let x = |seconds: f64| LEFT + PLOT * (seconds.max(0.0) / last);
    let height = LABELS_TOP + 22.0 * report.milestones.len() as f64 + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "vigil drill: {} {} (cluster {}), verdict {}",
        report.fault,
        report.node,
        report.cluster,
        report.verdict.map_or("none", Verdict::as_str)
    );
    let _ = writeln!(out, r#"<text x="{LEFT}" y="24" font-size="15">{}</text>"#, escape(&title));
    let peak =
        report.requests.per_second.iter().map(|(ok, failed)| ok + failed).max().unwrap_or(1).max(1) as f64;
    let bar = PLOT / last;
    for (second, (ok, failed)) in report.requests.per_second.iter().enumerate() {
        let x0 = x(second as f64);
        let h_ok = BARS_HEIGHT * *ok as f64 / peak;
        let h_failed = BARS_HEIGHT * *failed as f64 / peak;
        let base = BARS_TOP + BARS_HEIGHT;
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{h_ok:.1}" fill="#bbb"/>"##,
            base - h_ok,
            bar * 0.9
        );
        if *failed > 0 {
            let _ = writeln!(
                out,
                r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{h_failed:.1}" fill="#d33"/>"##,
                base - h_ok - h_failed,
                bar * 0.9
            );
        }
    }
    let axis = BARS_TOP + BARS_HEIGHT;
    let _ =
        writeln!(out, r#"<line x1="{LEFT}" y1="{axis}" x2="{}" y2="{axis}" stroke="black"/>"#, LEFT + PLOT);
    let step =
        [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0].into_iter().find(|s| last / s <= 12.0).unwrap_or(300.0);
    let mut tick = 0.0;
    while tick <= last {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{tick:.0} s</text>"#,
            x(tick),
            axis + 16.0
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{}" fill="#555">requests per second through the LoadBalancer: answered (grey), failed (red)</text>"##,
        BARS_TOP - 8.0
    );
    for (i, m) in report.milestones.iter().enumerate() {
        let Some(seconds) = m.seconds else { continue };
        let y = LABELS_TOP + 22.0 * i as f64;
        let mx = x(seconds);
        let _ = writeln!(
            out,
            r##"<line x1="{mx:.1}" y1="{BARS_TOP}" x2="{mx:.1}" y2="{y:.1}" stroke="#36c" stroke-dasharray="3,3"/>"##
        );
        let _ = writeln!(out, r##"<circle cx="{mx:.1}" cy="{y:.1}" r="3" fill="#36c"/>"##);
        let label = format!("{seconds:.1} s  {}", m.name);
        let anchor = if mx > LEFT + PLOT * 0.7 { "end" } else { "start" };
        let dx = if anchor == "end" { -6.0 } else { 6.0 };
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
            mx + dx,
            y + 4.0,
            escape(&label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The report for people.
pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "# vigil drill: {} {}\n\nCluster `{}`, fault at {}. Verdict: **{}**{}.\n\n![timeline](timeline.svg)\n\n| seconds after the fault | what | detail |\n|---|---|---|\n",
        report.fault,
        report.node,
        report.cluster,
        report.fault_at,
        report.verdict.map_or("none before the timeout", Verdict::as_str),
        report
            .incident
            .as_deref()
            .map(|i| format!(" (`kubectl get nodeincident {i} -o yaml`)"))
            .unwrap_or_default()
    );
    for m in &report.milestones {
        let at = m.seconds.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "| {at} | {} | {} |", m.name, m.detail.replace('|', "\\|"));
    }
    let r = &report.requests;
    let _ = write!(
        out,
        "\nRequests through the LoadBalancer: {} sent, {} failed{}{}.\n",
        r.total,
        r.failed,
        r.failure_kinds(),
        r.last_failure_seconds.map(|s| format!(", the last {s:.1} s after the fault")).unwrap_or_default()
    );
    if report.alerter_leader_node.as_deref() == Some(report.node.as_str()) {
        let _ = writeln!(
            out,
            "The alerter's leader ran on the broken node: its standby took the Lease over (the notices wait for that)."
        );
    }
    if let Some(seconds) = report.detection_seconds {
        let _ = writeln!(out, "From NotReady seen by the drill to `node-down` delivered: {seconds:.2} s.");
    }
    if let Some(announcer) = &report.announcing_node {
        let _ = writeln!(
            out,
            "MetalLB announced the address from {announcer}{}.",
            if *announcer == report.node {
                ", the node that was broken: the address moved to another node"
            } else {
                ", not the broken node"
            }
        );
    }
    if let Some(trace) = &report.incident_trace_id {
        let url =
            report.traces_url.as_deref().map(|u| format!(": {u}api/traces/{trace}")).unwrap_or_default();
        let _ = writeln!(out, "\nThe incident's trace: `{trace}`{url}.");
        match (&report.incident_trace, &report.incident_trace_missing) {
            (Some(file), _) => {
                let _ = writeln!(out, "\n![the incident's trace, as a waterfall]({file})\n");
            }
            (None, Some(why)) => {
                let _ = writeln!(out, "Its waterfall was not drawn: {why}.");
            }
            (None, None) => {}
        }
    }
    if let Some(trace) = &report.trace_id {
        let _ = writeln!(out, "This drill's own trace: `{trace}`.");
    }
    if let Some(url) = &report.logs_url {
        let _ = writeln!(
            out,
            "\nThe broken node's pods and every `web` pod in the log store, over the drill: <{url}>."
        );
    }
    if let Some(logs) = &report.logs {
        let _ = writeln!(out, "\nThe cluster's logs after the drill: [{logs}/index.md]({logs}/index.md).");
    }
    if let Some(why) = &report.panels_missing {
        let _ = writeln!(out, "\nThe failover dashboard's panels were not drawn: {why}.");
    }
    // Last: everything after the heading belongs to it.
    if !report.panels.is_empty() {
        let _ = writeln!(out, "\n## The failover dashboard over the drill\n");
        for panel in &report.panels {
            let _ = writeln!(out, "![{panel}]({panel})\n");
        }
    }
    out
}

/// Writes the three files in a dated folder under `dir`; the report, with where.
pub fn write(mut report: Report, dir: &Path) -> Result<Report, Error> {
    let stamp = report.fault_at.replace([':', '.'], "-");
    let folder = dir.join(format!("{}-{stamp}", report.cluster));
    let err = |source| Error::Report { dir: folder.clone(), source };
    std::fs::create_dir_all(&folder).map_err(err)?;
    report.report = Some(folder.display().to_string());
    std::fs::write(folder.join("timeline.svg"), svg(&report)).map_err(err)?;
    std::fs::write(folder.join("report.md"), markdown(&report)).map_err(err)?;
    let json = serde_json::to_string_pretty(&report).expect("reports serialize");
    std::fs::write(folder.join("report.json"), json).map_err(err)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::{Milestone, Requests};

    fn report() -> Report {
        let m = |name, seconds: Option<f64>| Milestone { name, seconds, detail: "d".into() };
        Report {
            cluster: "vigil".into(),
            node: "vigil-worker".into(),
            fault: "kill".into(),
            fault_at: "2026-01-01T00:00:00Z".into(),
            milestones: vec![m(super::super::NOT_READY, Some(11.0)), m(super::super::NOT_RESCHEDULED, None)],
            verdict: Some(Verdict::Rescheduled),
            incident: Some("vigil-worker-1".into()),
            requests: Requests {
                total: 100,
                failed: 3,
                failures: [(crate::drill::load::Outcome::NoConnection, 3)].into(),
                last_failure_seconds: Some(4.5),
                per_second: vec![(10, 0), (7, 3)],
            },
            detection_seconds: Some(0.25),
            announcing_node: Some("vigil-worker".into()),
            alerter_leader_node: Some("vigil-worker".into()),
            report: None,
            panels: vec!["vigil-failover--nodes-ready.svg".into()],
            panels_missing: None,
            incident_trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
            incident_trace: Some("incident-trace.svg".into()),
            incident_trace_missing: None,
            trace_id: None,
            traces_url: Some("http://10.50.0.19:16686/".into()),
            logs_url: Some("http://10.50.0.20:9428/select/vmui/#/?query=x".into()),
            logs: Some("vigil-logs-20260101T000000Z".into()),
        }
    }

    #[test]
    fn the_timeline_draws_each_second_and_each_milestone() {
        let svg = svg(&report());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(r##"fill="#d33""##).count(), 1, "one second had failures");
        assert!(svg.contains("11.0 s  NotReady"));
        assert!(!svg.contains("not-rescheduled delivered"), "a milestone that did not happen is not drawn");
    }

    #[test]
    fn the_markdown_says_what_failed_and_who_announced() {
        let text = markdown(&report());
        assert!(text.contains("| 11.0 | NotReady | d |"));
        assert!(text.contains("100 sent, 3 failed (3 no-connection), the last 4.5 s after the fault"));
        assert!(text.contains("the node that was broken"));
        assert!(text.contains("`node-down` delivered: 0.25 s"));
        assert!(text.contains("standby took the Lease over"));
        assert!(
            text.contains(
                "in the log store, over the drill: <http://10.50.0.20:9428/select/vmui/#/?query=x>"
            )
        );
        assert!(text.contains("![vigil-failover--nodes-ready.svg](vigil-failover--nodes-ready.svg)"));
        let missing = Report { panels: vec![], panels_missing: Some("no Prometheus".into()), ..report() };
        assert!(markdown(&missing).contains("panels were not drawn: no Prometheus."));
        assert!(text.contains("![the incident's trace, as a waterfall](incident-trace.svg)"));
        let untraced = Report {
            incident_trace: None,
            incident_trace_missing: Some("Jaeger holds no trace 0af7".into()),
            ..report()
        };
        assert!(markdown(&untraced).contains("Its waterfall was not drawn: Jaeger holds no trace 0af7."));
        let dir = tempfile::tempdir().unwrap();
        let written = write(report(), dir.path()).unwrap();
        let folder = std::path::PathBuf::from(written.report.unwrap());
        for file in ["report.json", "report.md", "timeline.svg"] {
            assert!(folder.join(file).exists(), "{file}");
        }
    }
}
