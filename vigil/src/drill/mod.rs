//! `vigil drill`: with the cluster, `web` and the alerter running, and a
//! bounded load going through the LoadBalancer from the host, break a worker
//! that holds `web` pods and record what happens, in seconds from the
//! fault: the Lease going stale, the node NotReady, the first notification
//! delivered, the pods evicted, their replacements scheduled, 3/3 Ready
//! elsewhere, `rescheduled` delivered; the requests that failed and when the
//! last one did. Then the node is restored and the drill waits for
//! `resolved`. Everything is watched (kube-runtime watchers) but MetalLB's
//! announcer, which only its speakers' metrics tell (asked every second);
//! what the watches see becomes the report in [`timeline`], a pure function.

pub mod load;
pub(crate) mod report;
pub mod timeline;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use alerter_api::crd::NodeIncident;
use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        coordination::v1::Lease,
        core::v1::{Node, Pod},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};
pub use load::Requests;
use serde::Serialize;
pub use timeline::{
    ADDRESS_MOVED, ALL_READY, EVICTED, FIRST_NOTIFICATION, LEASE_STALE, Milestone, NODE_DOWN, NOT_READY,
    NOT_RESCHEDULED, RESCHEDULED, RESOLVED, SCHEDULED, Verdict,
};
use timeline::{Seen, Timeline};

use crate::{
    addons::{alerter as alerter_addon, metallb, victorialogs, web},
    cluster::ClusterSpec,
    conditions::{daemon_set_rolled_out, node_ready, ready_pods_by_node},
    poll::until,
    progress::Progress,
    provider::{self, Fault, NodeProvider, Power},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API: {what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Provider(#[from] provider::Error),
    /// Nothing to break: no worker holds a Ready `web` pod.
    #[error(
        "no worker holds a Ready web pod: is `vigil up` done? (`vigil status`, `kubectl get pods -l app=web -o wide`)"
    )]
    NoVictim,
    #[error("node {0} holds no Ready web pod: pick one that does (`kubectl get pods -l app=web -o wide`)")]
    NotAVictim(String),
    /// A drill on a cluster still recovering measures the recovery, not the failover.
    #[error(
        "the cluster has not settled since the last fault: {0} (wait, or look at `kubectl get nodes,daemonsets -A`)"
    )]
    NotSettled(String),
    #[error("writing the report in {}", dir.display())]
    Report {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// How the drill breaks the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrillFault {
    /// SIGKILL of the node: a crash.
    Kill,
    /// An orderly power-off.
    Stop,
    /// Cut off the network, still running.
    Isolate,
}

impl DrillFault {
    fn fault(self) -> Fault {
        match self {
            DrillFault::Kill => Fault::Power(Power::Kill),
            DrillFault::Stop => Fault::Power(Power::Stop),
            DrillFault::Isolate => Fault::Isolate,
        }
    }

    fn restore(self) -> Fault {
        match self {
            DrillFault::Kill | DrillFault::Stop => Fault::Power(Power::Start),
            DrillFault::Isolate => Fault::Reconnect,
        }
    }
}

pub struct Options {
    pub fault: DrillFault,
    /// The worker to break; by default the one holding the most `web` pods.
    pub node: Option<String>,
    /// Requests per second through the LoadBalancer.
    pub rate: u32,
    /// How long to wait for the verdict (and then for `resolved`).
    pub timeout: Duration,
    /// Where the report goes (a dated folder is made in it).
    pub report_dir: PathBuf,
}

/// What the drill found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cluster: String,
    pub node: String,
    pub fault: String,
    /// When the fault happened (RFC 3339).
    pub fault_at: String,
    pub milestones: Vec<Milestone>,
    /// As the alerter decided; none before the timeout.
    pub verdict: Option<Verdict>,
    pub incident: Option<String>,
    pub requests: Requests,
    /// From the moment the drill's watch saw the node NotReady to the
    /// `node-down` notice delivered (condition times have whole seconds only).
    pub detection_seconds: Option<f64>,
    /// The node MetalLB announced the web address from, before the fault.
    pub announcing_node: Option<String>,
    /// The node the alerter's leader ran on, before the fault.
    pub alerter_leader_node: Option<String>,
    /// Where the report files are.
    pub report: Option<String>,
    /// The failover dashboard's panels over the drill's window (SVG files
    /// in the report's folder).
    pub panels: Vec<String>,
    /// Why they were not drawn, if they were not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panels_missing: Option<String>,
    /// The incident's trace (derived from its name, whichever replica wrote it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_trace_id: Option<String>,
    /// The incident's trace drawn as a waterfall (an SVG file in the
    /// report's folder), or why it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_trace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_trace_missing: Option<String>,
    /// This drill's own trace, when `vigil` exports spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The trace store's query API, where both traces are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces_url: Option<String>,
    /// The log store's UI showing the broken node's pods and every `web`
    /// pod from a minute before the fault to the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_url: Option<String>,
    /// The `vigil export logs` folder taken after the drill, in the report's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
}

impl Report {
    pub fn milestone(&self, name: &str) -> Option<f64> {
        self.milestones.iter().find(|m| m.name == name).and_then(|m| m.seconds)
    }
}

/// The incident's trace from Jaeger, drawn into the report's folder; the
/// file's name, or why not.
async fn incident_trace(client: &Client, id: &str, incident: &str, folder: &Path) -> Result<String, String> {
    const FILE: &str = "incident-trace.svg";
    let trace = crate::traces::fetch(client, id).await.map_err(|e| e.to_string())?;
    let svg =
        crate::traces::svg(&trace, &format!("vigil drill: incident {incident}, as the alerter traced it"));
    std::fs::write(folder.join(FILE), svg)
        .map_err(|e| format!("writing {FILE} in {}: {e}", folder.display()))?;
    Ok(FILE.to_owned())
}

/// Seconds from `fault` to now.
fn since(fault: Timestamp) -> f64 {
    Timestamp::now().duration_since(fault).as_secs_f64()
}

/// The worker holding the most Ready web pods (or `wanted`, if it holds any).
fn victim(pods: &[Pod], wanted: Option<&str>) -> Result<String, Error> {
    let counts = ready_pods_by_node(pods);
    match wanted {
        Some(node) if counts.contains_key(node) => Ok(node.to_owned()),
        Some(node) => Err(Error::NotAVictim(node.to_owned())),
        None => counts.into_iter().max_by_key(|(_, n)| *n).map(|(n, _)| n).ok_or(Error::NoVictim),
    }
}

/// How often the drill asks MetalLB's speakers who announces `web`, and
/// how long one may take to answer.
const ANNOUNCER_POLL: Duration = Duration::from_secs(1);

/// The nodes MetalLB's speakers say announce the `web` address (one, once
/// settled), read through the API server's pod proxy. A speaker that does
/// not answer within [`ANNOUNCER_POLL`] (on a dead node) says nothing.
pub async fn announcers(client: &Client) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), metallb::NAMESPACE);
    let Ok(speakers) = pods.list(&ListParams::default().labels(metallb::SPEAKER_SELECTOR)).await else {
        return vec![];
    };
    let service = format!("{}/{}", web::NAMESPACE, web::NAME);
    let asks = speakers.items.into_iter().filter_map(|p| p.metadata.name).map(|speaker| {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{speaker}:{}/proxy/metrics",
            metallb::NAMESPACE,
            metallb::SPEAKER_METRICS_PORT
        );
        let service = &service;
        async move {
            let request = http::Request::get(path).body(vec![]).ok()?;
            let text = tokio::time::timeout(ANNOUNCER_POLL, client.request_text(request)).await.ok()?.ok()?;
            metallb::announced_from(&text, service).ok()
        }
    });
    let mut nodes: Vec<String> =
        futures::future::join_all(asks).await.into_iter().flatten().flatten().collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// The node MetalLB announces the `web` address from.
pub async fn announcing_node(client: &Client) -> Option<String> {
    announcers(client).await.into_iter().next()
}

/// Asks the speakers every [`ANNOUNCER_POLL`] until `answers` is dropped.
async fn poll_announcers(client: Client, answers: tokio::sync::mpsc::Sender<Vec<String>>) {
    let mut tick = tokio::time::interval(ANNOUNCER_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if answers.send(announcers(&client).await).await.is_err() {
            return;
        }
    }
}

/// The node the alerter's leader runs on (the holder of its Lease is a pod).
async fn alerter_leader_node(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), alerter_addon::NAMESPACE);
    let holder = leases.get_opt(alerter_addon::LEASE).await.ok()??.spec?.holder_identity?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), alerter_addon::NAMESPACE);
    pods.get_opt(&holder).await.ok()??.spec?.node_name
}

/// Waits (two minutes at most) until every node is Ready and every
/// DaemonSet has a Ready pod on each of its nodes. A node restored by the
/// last drill is Ready before its MetalLB speaker is: breaking the other
/// worker then would leave no node to take the address over.
async fn settled(client: &Client, progress: &Progress) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let daemon_sets: Api<DaemonSet> = Api::all(client.clone());
    let line = progress.line("waiting until every node and DaemonSet is Ready");
    let waited =
        until("every node and DaemonSet Ready", Duration::from_secs(120), Duration::from_secs(1), || async {
            let mut waiting: Vec<String> = vec![];
            for node in nodes.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items {
                if !node_ready(&node) {
                    waiting.push(format!("node {} not Ready", node.metadata.name.unwrap_or_default()));
                }
            }
            for daemon_set in daemon_sets.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items
            {
                // One that no node runs has nothing to wait for.
                if daemon_set.status.as_ref().is_none_or(|s| s.desired_number_scheduled == 0) {
                    continue;
                }
                if let Err(why) = daemon_set_rolled_out(Some(&daemon_set)) {
                    let namespace = daemon_set.metadata.namespace.unwrap_or_default();
                    waiting.push(format!("{why} (in {namespace})"));
                }
            }
            if waiting.is_empty() { Ok(()) } else { Err(waiting.join("; ")) }
        })
        .await;
    match waited {
        Ok(()) => {
            line.done();
            Ok(())
        }
        Err(timeout) => {
            line.failed();
            Err(Error::NotSettled(timeout.last))
        }
    }
}

/// Breaks the node, watches, restores it, writes the report.
pub async fn run(
    provider: Arc<dyn NodeProvider>,
    spec: &ClusterSpec,
    client: Client,
    web_url: String,
    options: Options,
    progress: &Progress,
) -> Result<Report, Error> {
    // One span per phase; each closes when its phase ends (dropped).
    let phase = |name: &'static str| tracing::info_span!("phase", otel.name = name);
    let settle = phase("wait until settled");
    settled(&client, progress).await?;
    drop(settle);
    let pods: Api<Pod> = Api::namespaced(client.clone(), web::NAMESPACE);
    let selector = ListParams::default().labels(&format!("app={}", web::NAME));
    let before = pods.list(&selector).await.map_err(kube_err("list the web pods"))?.items;
    let node = victim(&before, options.node.as_deref())?;
    let announcing = announcing_node(&client).await;
    let alerter_leader = alerter_leader_node(&client).await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limit = (options.rate as u64 * (options.timeout.as_secs() + 10)) as usize;
    let load_started = Instant::now();
    let load = tokio::spawn(load::run(web_url.clone(), options.rate, limit, stop_rx));
    // A baseline before the fault.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let line = progress.line(
        format!("drill: {:?} {node} under {} requests/s to {web_url}", options.fault, options.rate)
            .to_lowercase(),
    );
    let fault_at = Timestamp::now();
    let fault_offset = load_started.elapsed();
    let mut timeline = Timeline::new(&node, fault_at, &before, web::REPLICAS as usize, announcing.clone());
    let inject = tracing::info_span!("phase", otel.name = "inject fault", k8s.node.name = %node, vigil.fault = ?options.fault);
    provider::fault(provider.as_ref(), spec, &node, options.fault.fault()).await?;
    drop(inject);
    tracing::info!(%node, fault = ?options.fault, "fault injected");
    let observe = phase("observe failover");

    let nodes: Api<Node> = Api::all(client.clone());
    let incidents: Api<NodeIncident> = Api::all(client.clone());
    let mut node_events = std::pin::pin!(
        watcher(nodes, watcher::Config::default().fields(&format!("metadata.name={node}")))
            .default_backoff()
            .applied_objects()
    );
    let mut pod_events = std::pin::pin!(
        watcher(pods.clone(), watcher::Config::default().labels(&format!("app={}", web::NAME)))
            .default_backoff()
            .applied_objects()
    );
    let mut incident_events =
        std::pin::pin!(watcher(incidents, watcher::Config::default()).default_backoff().applied_objects());
    // MetalLB says who announces only in its speakers' metrics: asked, not watched.
    let (announcer_tx, mut announcer_rx) = tokio::sync::mpsc::channel(1);
    let announcer_poll = tokio::spawn(poll_announcers(client.clone(), announcer_tx));
    // Whatever the watches deliver, until the failover is over or the time is up.
    let deadline = tokio::time::Instant::now() + options.timeout;
    while !timeline.failover_done() {
        let seen = tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            Some(Ok(n)) = node_events.next() => Seen::Node(Box::new(n)),
            Some(Ok(p)) = pod_events.next() => Seen::Pod(Box::new(p)),
            Some(Ok(i)) = incident_events.next() => Seen::NodeIncident(Box::new(i)),
            Some(nodes) = announcer_rx.recv() => Seen::Announcers(nodes),
        };
        timeline.observe(since(fault_at), seen);
    }
    drop(observe);
    announcer_poll.abort();
    let _ = stop_tx.send(true);
    let samples = load.await.unwrap_or_default();
    let requests = load::summarize(&samples, fault_offset);
    line.done_with(match timeline.verdict() {
        Some(verdict) => format!("verdict {verdict}"),
        None => "no verdict before the timeout".into(),
    });

    // Put the node back and wait for the alerter to say so.
    let line = progress.line(format!("restoring {node}, waiting for resolved"));
    let restore = phase("restore and wait for resolved");
    provider::fault(provider.as_ref(), spec, &node, options.fault.restore()).await?;
    let resolve_deadline = tokio::time::Instant::now() + options.timeout;
    while timeline.awaits_resolved() {
        tokio::select! {
            () = tokio::time::sleep_until(resolve_deadline) => break,
            Some(Ok(i)) = incident_events.next() => timeline.observe(since(fault_at), Seen::NodeIncident(Box::new(i))),
        }
    }
    drop(restore);
    if timeline.resolved() {
        line.done();
    } else {
        line.done_with("no resolved notice before the timeout");
    }
    let incident = timeline.incident().map(str::to_owned);
    let report = Report {
        cluster: spec.name.clone(),
        node: node.clone(),
        fault: format!("{:?}", options.fault).to_lowercase(),
        fault_at: fault_at.to_string(),
        milestones: timeline.milestones(),
        verdict: timeline.verdict(),
        incident_trace_id: incident.as_deref().map(alerter_api::model::incident_trace_id),
        incident_trace: None,
        incident_trace_missing: None,
        incident,
        requests,
        detection_seconds: timeline.detection_seconds(),
        announcing_node: announcing,
        alerter_leader_node: alerter_leader,
        report: None,
        panels: vec![],
        panels_missing: None,
        trace_id: {
            use vigil_telemetry::otel::OpenTelemetrySpanExt as _;
            vigil_telemetry::otel::trace_id_hex(&tracing::Span::current().context())
        },
        traces_url: crate::status::addon_url(&client, crate::addons::jaeger::NAME).await,
        logs_url: crate::status::addon_url(&client, victorialogs::NAME).await.map(|ui| {
            let query = alerter_api::logs::incident_query(&node, [(web::NAMESPACE, web::NAME)]);
            let window = since(fault_at).ceil() as u64 + alerter_api::logs::BEFORE.as_secs();
            alerter_api::logs::ui_link(&ui, &query, &Timestamp::now().to_string(), window)
        }),
        logs: None,
    };
    let mut report = report::write(report, &options.report_dir)?;
    let folder = PathBuf::from(report.report.clone().unwrap_or_default());
    let collect = phase("export logs");
    match crate::export::logs(provider.as_ref(), spec, Ok(client.clone()), &folder, progress).await {
        Ok(export) => {
            report.logs = export.folder.file_name().map(|f| f.to_string_lossy().into_owned());
        }
        Err(e) => progress.info(format!("the drill's logs were not exported: {e}")),
    }
    drop(collect);
    let _panels = phase("draw the failover panels");
    // A minute of baseline before the fault, and two scrapes (15 s apart)
    // after the end, so the panels show the node back.
    let start = fault_at.as_second() as f64 - 60.0;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let end = Timestamp::now().as_second() as f64;
    match failover_panels(&client, &folder, crate::monitoring::render::Window::between(start, end)).await {
        Ok(panels) => report.panels = panels,
        Err(why) => {
            progress.info(format!("the failover panels were not drawn: {why}"));
            report.panels_missing = Some(why);
        }
    }
    // After the wait above: the alerter exports its spans in batches.
    if let (Some(id), Some(incident)) = (report.incident_trace_id.clone(), report.incident.clone()) {
        match incident_trace(&client, &id, &incident, &folder).await {
            Ok(file) => report.incident_trace = Some(file),
            Err(why) => {
                progress.info(format!("the incident's trace was not drawn: {why}"));
                report.incident_trace_missing = Some(why);
            }
        }
    }
    report::write(report, &options.report_dir)
}

/// The failover dashboard's panels, drawn in `folder`; their file names.
async fn failover_panels(
    client: &Client,
    folder: &std::path::Path,
    window: crate::monitoring::render::Window,
) -> Result<Vec<String>, String> {
    let prometheus = crate::status::addon_url(client, crate::addons::prometheus::NAME)
        .await
        .ok_or("the prometheus Service has no LoadBalancer address")?;
    let credentials = crate::addons::credentials::read_api(client).await.map_err(|e| format!("{e:#}"))?;
    let http = crate::monitoring::render::client(&credentials).map_err(|e| e.to_string())?;
    let dashboard = crate::monitoring::dashboards::failover();
    let paths = crate::monitoring::render::dashboard(&http, &prometheus, &dashboard, window, folder)
        .await
        .map_err(|e| e.to_string())?;
    Ok(paths.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect())
}

/// The report in a few lines, for the terminal.
pub fn summary(report: &Report) -> String {
    let mut out = format!(
        "drill: {} {} -> {}\n",
        report.fault,
        report.node,
        report.verdict.map_or("no verdict before the timeout", Verdict::as_str)
    );
    for m in report.milestones.iter().filter(|m| m.seconds.is_some()) {
        out += &format!("  {:>7.1} s  {}  {}\n", m.seconds.unwrap_or_default(), m.name, m.detail);
    }
    let r = &report.requests;
    out += &format!(
        "  requests through the LoadBalancer: {} sent, {} failed{}{}\n",
        r.total,
        r.failed,
        r.failure_kinds(),
        r.last_failure_seconds.map(|s| format!(", the last {s:.1} s after the fault")).unwrap_or_default()
    );
    if report.alerter_leader_node.as_deref() == Some(report.node.as_str()) {
        out += "  the alerter's leader ran on the broken node: its standby took over\n";
    }
    if let Some(seconds) = report.detection_seconds {
        out += &format!("  NotReady seen to node-down delivered: {seconds:.2} s\n");
    }
    if let Some(dir) = &report.report {
        out += &format!("  report: {dir}/report.md\n");
    }
    out
}
