//! `vigil drill` on the shared cluster (issue 10), with the alerter's
//! notices going to the test's own receiver and through the real
//! Alertmanager to its receiver:
//! - a killed worker that does not hold Prometheus's volume: its `web` pods
//!   come back 3/3 on the survivors and `rescheduled` is delivered, while
//!   the receiver refuses the first notices (500) and then recovers: every
//!   notice arrives, signed, under one idempotency key each;
//! - the worker holding Prometheus's `local-path` volume: `not-rescheduled`,
//!   naming the volume as the reason, while `web` is rescheduled.

use std::time::Duration;

use alerter::{crd::NodeIncident, model::Verdict};
use anyhow::{Context as _, Result, ensure};
use kube::Api;
use vigil::{
    addons::{node_exporter::NAMESPACE, prometheus},
    drill::{self, DrillFault, Report},
    monitoring::{dashboards, render},
    poll::until_some,
    progress::Progress,
};
use vigil_e2e::{Cluster, node_running, respread_web, web_pods_by_node};

use crate::alerting::{alertmanager_states, deduplicated, notices, receivers, webhook_key};

/// Long enough for the tuned timings' verdicts (under a minute) with room
/// for a slow machine.
pub const DRILL_TIMEOUT: Duration = Duration::from_secs(240);

/// The node running Prometheus (and so holding its `local-path` volume).
pub async fn prometheus_node(c: &Cluster) -> Result<String> {
    node_running(&c.client, NAMESPACE, prometheus::NAME).await
}

/// Spreads `web` again until `wanted` picks a worker (some placements leave
/// the wanted one without a `web` pod, and the drill breaks only nodes
/// holding one).
pub async fn victim(c: &Cluster, wanted: impl Fn(&str) -> bool) -> Result<String> {
    let workers: Vec<String> = (0..c.spec.workers).map(|i| c.spec.worker_name(i)).collect();
    let mut placed = Default::default();
    for _ in 0..3 {
        respread_web(&c.client).await?;
        placed = web_pods_by_node(&c.client).await?;
        if let Some(node) = workers.iter().find(|w| wanted(w) && placed.contains_key(*w)) {
            return Ok(node.clone());
        }
    }
    anyhow::bail!("no worker fit for this drill holds a web pod after three restarts of web: {placed:?}")
}

/// The drill's report, and the directory its files are in (removed when dropped).
async fn run_drill(c: &Cluster, node: &str) -> Result<(Report, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let options = drill::Options {
        fault: DrillFault::Kill,
        node: Some(node.to_owned()),
        rate: 20,
        timeout: DRILL_TIMEOUT,
        report_dir: dir.path().to_owned(),
    };
    let report = drill::run(
        c.provider.clone(),
        &c.spec,
        c.client.clone(),
        c.web_url()?.to_owned(),
        options,
        &Progress::default(),
    )
    .await?;
    eprintln!("{}", drill::summary(&report));
    ensure!(
        report.milestone(drill::RESOLVED).is_some(),
        "{node} was restored but no resolved notice was delivered: {report:?}"
    );
    Ok((report, dir))
}

pub async fn a_killed_worker_comes_back_elsewhere_and_every_notice_arrives(c: &Cluster) -> Result<()> {
    let (alerter, alertmanager) = receivers().await?;
    let key = webhook_key(c).await?;
    let keep = prometheus_node(c).await?;
    let node = victim(c, |w| w != keep).await?;
    // The receiver refuses the first three requests, then recovers.
    let already = alerter.received().len();
    alerter.script.lock().expect("not poisoned").extend([500, 500, 500]);

    let (report, _files) = run_drill(c, &node).await?;
    ensure!(
        report.verdict == Some(drill::Verdict::Rescheduled),
        "the verdict is not rescheduled: {report:?}"
    );
    ensure!(report.milestone(drill::ALL_READY).is_some(), "3/3 web pods never Ready elsewhere: {report:?}");
    // MetalLB's speakers named the announcer; if it was the broken node, the address moved.
    let announcer = report.announcing_node.as_deref().context("no announcer before the fault")?;
    ensure!(
        (announcer == node) == report.milestone(drill::ADDRESS_MOVED).is_some(),
        "announced from {announcer}, broke {node}, address moved: {:?}",
        report.milestone(drill::ADDRESS_MOVED)
    );
    // The report embeds the failover dashboard over the drill's window.
    let folder = std::path::PathBuf::from(report.report.clone().context("no report folder")?);
    let drawn = dashboards::failover().panels.iter().filter(|p| p.kind == "timeseries").count();
    ensure!(
        report.panels.len() == drawn,
        "{} of {drawn} failover panels drawn: {:?}",
        report.panels.len(),
        report.panels_missing
    );
    let markdown = std::fs::read_to_string(folder.join("report.md"))?;
    for panel in &report.panels {
        let svg = std::fs::read_to_string(folder.join(panel))
            .with_context(|| format!("{panel} in {}", folder.display()))?;
        ensure!(svg.starts_with("<svg"), "{panel} is not an SVG");
        ensure!(!svg.contains(render::NO_DATA), "{panel} has no data over the drill's window");
        ensure!(markdown.contains(&format!("]({panel})")), "report.md does not embed {panel}");
    }
    let placed = web_pods_by_node(&c.client).await?;
    ensure!(
        placed.values().sum::<usize>() == 3 && !placed.contains_key(&node),
        "web is not 3/3 Ready on the survivors: {placed:?}"
    );

    let seen = notices(&alerter.received()[already..], &node, &key)?;
    let refused = seen.iter().filter(|s| !s.accepted).count();
    ensure!(refused == 3, "the receiver refused {refused} notices about {node}, not 3");
    let kinds = deduplicated(&seen)?;
    for kind in ["node-down", "rescheduled", "resolved"] {
        ensure!(kinds.iter().any(|k| k == kind), "no {kind} delivered about {node}: {kinds:?}");
    }
    incident_is_one_trace(c, &report, &alerter.received()[already..]).await?;
    the_resolved_notice_links_the_incidents_logs(c, &alerter.received()[already..], &node).await?;
    // The cluster's logs as the drill left them, next to its report.
    let logs = report.logs.clone().context("the drill exported no logs")?;
    let index = std::fs::read_to_string(folder.join(&logs).join("index.md"))?;
    ensure!(
        index.contains(&format!("nodes/{node}/kubelet.log")),
        "the drill's logs lack {node}'s kubelet journal"
    );
    ensure!(markdown.contains(&format!("]({logs}/index.md)")), "report.md does not link the logs");
    dead_nodes_last_lines_are_in_the_log_store(c, &report, &markdown).await?;

    // Through Alertmanager too (it may have run on the killed node itself,
    // so its notification waits for its replacement).
    until_some("Alertmanager's VigilNodeDown for the killed worker", Duration::from_secs(120), || async {
        let states = alertmanager_states(alertmanager, &node);
        Ok::<_, anyhow::Error>(states.iter().any(|s| s == "firing").then_some(()))
    })
    .await?;
    Ok(())
}

/// The broken node's `web` pods' lines up to the fault are in VictoriaLogs,
/// found by node and by the minute before the fault, and the report links
/// the log store's UI.
async fn dead_nodes_last_lines_are_in_the_log_store(
    c: &Cluster,
    report: &Report,
    markdown: &str,
) -> Result<()> {
    let fault: k8s_openapi::jiff::Timestamp = report.fault_at.parse().context("the report's fault time")?;
    let start = fault - k8s_openapi::jiff::SignedDuration::from_secs(60);
    let query = format!(
        "kubernetes.pod_node_name:{:?} AND kubernetes.container_name:{:?} AND _time:[{start}, {fault}]",
        report.node,
        vigil::addons::web::NAME
    );
    let lines = c.logs(&query, 10).await?;
    ensure!(!lines.is_empty(), "no line of web on {} in the minute before the fault: {query}", report.node);
    let link = report.logs_url.as_deref().context("the report has no link to the log store")?;
    ensure!(markdown.contains(link), "report.md does not link the log store");
    Ok(())
}

/// The `resolved` notice about `node` links the log store's UI, and its
/// query over its window finds lines from the dead node and from `web`'s
/// pods on the survivors.
async fn the_resolved_notice_links_the_incidents_logs(
    c: &Cluster,
    received: &[vigil_e2e::Received],
    node: &str,
) -> Result<()> {
    let resolved = received
        .iter()
        .find(|r| r.body["node"] == node && r.body["type"] == "resolved")
        .context("no resolved notice about the node")?;
    let link = resolved.body["logsUrl"].as_str().context("the resolved notice has no logsUrl")?;
    let ui = c.url(vigil::addons::victorialogs::NAME)?;
    ensure!(link.starts_with(ui), "the notice links {link}, not the log store's UI {ui}");
    let (query, end, range) = alerter::logs::parse_link(link).context("a link the UI cannot read")?;
    let end: k8s_openapi::jiff::Timestamp = end.parse()?;
    let start = end - k8s_openapi::jiff::SignedDuration::from_secs(range as i64);
    let counted = format!(
        "({query}) AND _time:[{start}, {end}] | stats by (kubernetes.pod_node_name, kubernetes.container_name) count() lines"
    );
    let rows = c.logs(&counted, 100).await?;
    let field = |row: &serde_json::Value, name: &str| row[name].as_str().unwrap_or_default().to_owned();
    ensure!(
        rows.iter().any(|r| field(r, "kubernetes.pod_node_name") == node),
        "the notice's link finds no line from {node}: {counted} gave {rows:?}"
    );
    ensure!(
        rows.iter().any(|r| field(r, "kubernetes.pod_node_name") != node
            && field(r, "kubernetes.container_name") == vigil::addons::web::NAME),
        "the notice's link finds no line of web on the survivors: {counted} gave {rows:?}"
    );
    Ok(())
}

/// The incident is one trace, found by the id derived from its name: its
/// root (the detection), the verification, and a span for every delivery
/// attempt its NodeIncident records; every request the receiver got about
/// it carried that trace in its `traceparent`.
async fn incident_is_one_trace(c: &Cluster, report: &Report, received: &[vigil_e2e::Received]) -> Result<()> {
    let name = report.incident.clone().context("the drill saw no NodeIncident")?;
    let trace_id = report.incident_trace_id.clone().context("the report has no incident trace id")?;
    ensure!(
        trace_id == alerter::model::incident_trace_id(&name),
        "the report's trace id is not the incident's"
    );
    let about: Vec<_> = received.iter().filter(|r| r.body["incident"] == name.as_str()).collect();
    ensure!(!about.is_empty(), "the receiver got nothing about incident {name}");
    for r in &about {
        let traceparent = r.header("traceparent").unwrap_or_default();
        ensure!(
            traceparent.split('-').nth(1) == Some(trace_id.as_str()),
            "a notice about {name} carried traceparent {traceparent:?}, not trace {trace_id}"
        );
    }
    let incidents: Api<NodeIncident> = Api::all(c.client.clone());
    let status = incidents.get(&name).await?.status.context("the NodeIncident has no status")?;
    let attempts: Vec<(String, usize)> = status
        .deliveries
        .iter()
        .filter(|d| d.attempts > 0)
        .map(|d| (format!("deliver {} to {}", d.notice.as_str(), d.sink), d.attempts as usize))
        .collect();
    ensure!(!attempts.is_empty(), "incident {name} records no delivery attempt");
    let count = |t: &vigil_e2e::Trace, op: &str| t.spans().iter().filter(|s| s.operation == op).count();
    let trace = c
        .jaeger_trace(&trace_id, Duration::from_secs(90), |t| {
            attempts.iter().all(|(op, n)| count(t, op) >= *n)
                && t.spans().iter().any(|s| s.operation.starts_with("incident: node"))
                && t.spans().iter().any(|s| s.operation == "verify rescheduling")
        })
        .await
        .with_context(|| format!("incident {name}: wanted these delivery spans: {attempts:?}"))?;
    let spans = trace.spans();
    let root = spans.iter().find(|s| s.operation.starts_with("incident: node")).expect("waited for above");
    ensure!(root.parent.is_none(), "the incident's root span has a parent: {root:?}");
    ensure!(
        spans
            .iter()
            .filter(|s| s.span_id != root.span_id)
            .all(|s| s.parent.as_deref() == Some(&root.span_id)),
        "a span of the incident is not a child of its root: {:?}",
        trace.summary()
    );
    ensure!(spans.iter().all(|s| s.service == "alerter"), "{:?}", trace.summary());
    // The report draws it as a waterfall, from what Jaeger held by then.
    let folder = std::path::PathBuf::from(report.report.clone().unwrap_or_default());
    let file = report
        .incident_trace
        .clone()
        .with_context(|| format!("the report drew no incident trace: {:?}", report.incident_trace_missing))?;
    let drawn = std::fs::read_to_string(folder.join(&file))?;
    ensure!(
        drawn.starts_with("<svg") && drawn.contains(&trace_id) && drawn.contains("alerter: "),
        "{file} in {} draws no span of the alerter's",
        folder.display()
    );
    Ok(())
}

pub async fn the_node_holding_prometheus_is_not_rescheduled_and_says_why(c: &Cluster) -> Result<()> {
    let (alerter, _) = receivers().await?;
    let key = webhook_key(c).await?;
    let holder = prometheus_node(c).await?;
    let node = victim(c, |w| w == holder).await?;
    let already = alerter.received().len();

    let (report, _files) = run_drill(c, &node).await?;
    ensure!(
        report.verdict == Some(drill::Verdict::NotRescheduled),
        "the verdict is not not-rescheduled: {report:?}"
    );
    let name = report.incident.clone().context("the drill saw no NodeIncident")?;
    let incident = Api::<NodeIncident>::all(c.client.clone()).get(&name).await?;
    let owners = incident.status.and_then(|s| s.incident).context("the NodeIncident has no status")?.owners;
    let verdict_of = |owner: &str| owners.iter().find(|o| o.owner.name == owner);
    let prometheus = verdict_of(prometheus::NAME).context("Prometheus is not among the owners")?;
    ensure!(
        prometheus.verdict == Verdict::NotRescheduled
            && prometheus.reason.as_deref().is_some_and(|r| r.contains("volume")),
        "Prometheus's verdict does not name its volume: {prometheus:?}"
    );
    let web = verdict_of(vigil::addons::web::NAME).context("web is not among the owners")?;
    ensure!(web.verdict == Verdict::Rescheduled, "web was not rescheduled: {web:?}");

    let seen = notices(&alerter.received()[already..], &node, &key)?;
    let kinds = deduplicated(&seen)?;
    ensure!(
        kinds.iter().any(|k| k == "not-rescheduled"),
        "no not-rescheduled delivered about {node}: {kinds:?}"
    );
    // The restored node has the volume again: Prometheus comes back there.
    let back = prometheus_node(c).await?;
    ensure!(back == node, "Prometheus came back on {back}, not on {node}, where its volume is");
    Ok(())
}
