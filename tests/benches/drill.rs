//! Issue 10's measurement: `vigil drill` is the benchmark. In one run on one
//! machine, the same drill on a cluster with upstream's failover timings
//! (the anchor) and on one with vigil's tuned timings (`vigil up --failover`).
//! The alerter's notices go to a webhook receiver run here on the host, at
//! the node network's gateway. Before each drill `web` is restarted so its
//! pods are spread again, and the node broken is MetalLB's announcing node
//! when it holds a `web` pod (the worst case for requests through the
//! LoadBalancer).
//!
//! Also reported, per timing:
//! - what it costs the API server while idle: writes per second to Leases
//!   and Nodes, all requests per second, and the API server's CPU, over 60 s;
//! - on the tuned cluster, a busy machine: `stress-ng` (CPU, memory and disk
//!   workers, twice as many CPU workers as cores) and a steady load through
//!   the LoadBalancer for `--busy-minutes`. Every Ready transition of every
//!   node and every NodeIncident opened meanwhile is a false alarm.
//!
//! The goals, for the tuned cluster: first notification <= 15 s after the
//! fault, 3/3 Ready elsewhere <= 30 s, NotReady seen to webhook delivered
//! p50 <= 1 s, last failed request <= 10 s after the fault, no false
//! NotReady while busy.
//!
//! `cargo bench -p vigil-e2e --bench drill [-- --runs N] [--upstream-runs N]
//! [--busy-minutes M] [--no-upstream] [--keep]` (defaults: 3 tuned drills, 1
//! upstream drill, 10 busy minutes). Needs stress-ng (`./vigil.sh bench
//! drill` installs it). The cluster `vigil-drill-bench` is removed at the end
//! unless `--keep`.

use std::{
    collections::BTreeMap,
    process::Stdio,
    time::{Duration, Instant},
};

use alerter::crd::NodeIncident;
use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use k8s_openapi::{api::core::v1::Node, jiff::Timestamp};
use kube::{
    Api, Client,
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};
use vigil::{
    addons::web,
    cluster::{Alerting, ClusterSpec, Failover},
    conditions::ready_condition,
    drill::{self, DrillFault, Report},
    progress::Progress,
};
use vigil_e2e::{Receiver, client, down, median, provider, respread_web, up, web_pods_by_node};

const CLUSTER: &str = "vigil-drill-bench";
const SUBNET: &str = "172.29.248.0/24";
const RECEIVER_PORT: u16 = 18797;
const RATE: u32 = 20;
const IDLE_WINDOW: Duration = Duration::from_secs(60);
/// Requests per second through the LoadBalancer while the machine is busy.
const BUSY_RATE: u32 = 50;

fn spec(failover: Failover) -> ClusterSpec {
    let node_subnet: ipnet::Ipv4Net = SUBNET.parse().expect("valid");
    let gateway = node_subnet.hosts().next().expect("a gateway address");
    ClusterSpec {
        name: CLUSTER.into(),
        node_subnet,
        failover,
        alerting: Alerting {
            webhook: Some(format!("http://{gateway}:{RECEIVER_PORT}/drill-bench")),
            alertmanager_webhook: None,
        },
        ..ClusterSpec::default()
    }
}

fn name(failover: Failover) -> &'static str {
    match failover {
        Failover::Upstream => "upstream",
        Failover::Tuned => "tuned",
    }
}

/// What the API server did over a window: `apiserver_request_total` and
/// `process_cpu_seconds_total` from its own `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct ApiLoad {
    lease_writes_per_second: f64,
    node_writes_per_second: f64,
    requests_per_second: f64,
    cpu_percent: f64,
}

/// (writes to leases, writes to nodes, all requests, CPU seconds), cumulative.
fn api_counters(metrics: &str) -> (f64, f64, f64, f64) {
    let (mut leases, mut nodes, mut all, mut cpu) = (0.0, 0.0, 0.0, 0.0);
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        if series.starts_with("process_cpu_seconds_total") {
            cpu = value;
        }
        if !series.starts_with("apiserver_request_total{") {
            continue;
        }
        all += value;
        let label = |name: &str| {
            series.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("")
        };
        let write = matches!(label("verb"), "PUT" | "PATCH" | "POST" | "APPLY" | "DELETE");
        match label("resource") {
            "leases" if write => leases += value,
            "nodes" if write => nodes += value,
            _ => {}
        }
    }
    (leases, nodes, all, cpu)
}

async fn api_load(client: &Client) -> Result<ApiLoad> {
    let scrape = || async {
        let request = http::Request::get("/metrics").body(vec![]).expect("a plain GET");
        client.request_text(request).await.context("the API server's /metrics")
    };
    let before = api_counters(&scrape().await?);
    let started = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let after = api_counters(&scrape().await?);
    let seconds = started.elapsed().as_secs_f64();
    Ok(ApiLoad {
        lease_writes_per_second: (after.0 - before.0) / seconds,
        node_writes_per_second: (after.1 - before.1) / seconds,
        requests_per_second: (after.2 - before.2) / seconds,
        cpu_percent: 100.0 * (after.3 - before.3) / seconds,
    })
}

/// MetalLB's announcing node, if it holds a Ready `web` pod.
async fn announcer_with_web(client: &Client) -> Option<String> {
    let announcer = drill::announcing_node(client).await?;
    web_pods_by_node(client).await.ok()?.contains_key(&announcer).then_some(announcer)
}

/// One drill and what the receiver saw during it.
struct Run {
    report: Report,
    /// Notices the receiver got (2xx answered), and webhook-ids it got more than once.
    notices: usize,
    duplicates: usize,
}

async fn one_drill(
    spec: &ClusterSpec,
    client: &Client,
    web_url: &str,
    receiver: &Receiver,
    progress: &Progress,
) -> Result<Run> {
    respread_web(client).await?;
    let node = announcer_with_web(client).await;
    let already = receiver.received().len();
    let options = drill::Options {
        fault: DrillFault::Kill,
        node,
        rate: RATE,
        timeout: Duration::from_secs(600),
        report_dir: vigil_e2e::cache_dir().join("drills"),
    };
    let report =
        drill::run(provider().await?, spec, client.clone(), web_url.to_owned(), options, progress).await?;
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    let received = receiver.received();
    for r in &received[already..] {
        if let Some(id) = r.header("webhook-id").filter(|_| r.accepted()) {
            *ids.entry(id.to_owned()).or_default() += 1;
        }
    }
    Ok(Run { report, notices: ids.len(), duplicates: ids.values().filter(|n| **n > 1).count() })
}

/// What a busy machine did to the tuned cluster.
struct Busy {
    minutes: u64,
    load: String,
    /// (node, Ready status, when) for every Ready transition away from True.
    not_ready: Vec<(String, String, String)>,
    incidents: Vec<String>,
    requests: drill::Requests,
    load_average_max: f64,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_default()
}

async fn busy(client: &Client, web_url: &str, minutes: u64) -> Result<Busy> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let scratch = tempfile::tempdir()?;
    let seconds = minutes * 60;
    let args: Vec<String> = [
        "--cpu",
        &(2 * cores).to_string(),
        "--vm",
        "2",
        "--vm-bytes",
        "1G",
        "--hdd",
        "1",
        "--hdd-bytes",
        "512M",
        "--timeout",
        &format!("{seconds}s"),
        "--temp-path",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([scratch.path().display().to_string()])
    .collect();
    let load = format!("stress-ng {} and {BUSY_RATE} requests/s through the LoadBalancer", args.join(" "));
    let mut stress = tokio::process::Command::new("stress-ng")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting stress-ng (apt-get install stress-ng, or `./vigil.sh bench drill`)")?;
    let started = Timestamp::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limit = (BUSY_RATE as u64 * (seconds + 10)) as usize;
    let requests = tokio::spawn(drill::load::run(web_url.to_owned(), BUSY_RATE, limit, stop_rx));

    let nodes: Api<Node> = Api::all(client.clone());
    let mut events =
        std::pin::pin!(watcher(nodes, watcher::Config::default()).default_backoff().applied_objects());
    let mut not_ready = vec![];
    let mut load_average_max: f64 = 0.0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut sample = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            _ = sample.tick() => load_average_max = load_average_max.max(load_average()),
            Some(Ok(node)) = events.next() => {
                if let Some(c) = ready_condition(&node).filter(|c| c.status != "True")
                    && let Some(t) = c.last_transition_time.as_ref().map(|t| t.0).filter(|t| *t >= started)
                {
                    let entry = (node.metadata.name.clone().unwrap_or_default(), c.status.clone(), t.to_string());
                    if !not_ready.contains(&entry) {
                        eprintln!("busy: {} Ready {} at {}", entry.0, entry.1, entry.2);
                        not_ready.push(entry);
                    }
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = stress.wait().await;
    let samples = requests.await.unwrap_or_default();
    let incidents: Api<NodeIncident> = Api::all(client.clone());
    let incidents = incidents
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|i| {
            i.status
                .as_ref()
                .and_then(|s| s.incident.as_ref())
                .and_then(|i| i.started_at.parse::<Timestamp>().ok())
                .is_some_and(|t| t >= started)
        })
        .filter_map(|i| i.metadata.name)
        .collect();
    Ok(Busy {
        minutes,
        load,
        not_ready,
        incidents,
        requests: drill::load::summarize(&samples, Duration::ZERO),
        load_average_max,
    })
}

struct Variant {
    failover: Failover,
    idle: ApiLoad,
    runs: Vec<Run>,
    busy: Option<Busy>,
}

fn seconds(value: Option<f64>) -> String {
    value.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "-".into())
}

/// Sub-second figures (detection) need two decimals to mean anything.
fn fine_seconds(value: Option<f64>) -> String {
    value.map(|s| format!("{s:.2} s")).unwrap_or_else(|| "-".into())
}

/// The median of a milestone over the runs that reached it.
fn milestone(runs: &[Run], name: &str) -> Option<f64> {
    let values: Vec<f64> = runs.iter().filter_map(|r| r.report.milestone(name)).collect();
    (!values.is_empty()).then(|| median(values))
}

fn last_failure(runs: &[Run]) -> Option<f64> {
    let values: Vec<f64> = runs.iter().filter_map(|r| r.report.requests.last_failure_seconds).collect();
    (!values.is_empty()).then(|| median(values))
}

fn detection(runs: &[Run]) -> Option<f64> {
    let values: Vec<f64> = runs.iter().filter_map(|r| r.report.detection_seconds).collect();
    (!values.is_empty()).then(|| median(values))
}

async fn variant(
    failover: Failover,
    runs: usize,
    busy_minutes: u64,
    receiver: &Receiver,
    progress: &Progress,
) -> Result<Variant> {
    let spec = spec(failover);
    eprintln!("{}: vigil up --failover {}", name(failover), name(failover));
    down(&spec).await?;
    let report = up(&spec).await.context("vigil up")?;
    let web_url = report.address(web::NAME).context("up reported no web address")?.to_owned();
    let (client, _) = client(&spec).await?;
    respread_web(&client).await?;
    eprintln!("{}: the API server's load over {} s, idle", name(failover), IDLE_WINDOW.as_secs());
    let idle = api_load(&client).await?;
    let mut done = vec![];
    for run in 1..=runs {
        let drilled = one_drill(&spec, &client, &web_url, receiver, progress).await?;
        let r = &drilled.report;
        println!(
            "{} drill {run}: kill {}{} -> {}; {}; requests {} failed of {}{}, the last {}; NotReady seen to node-down delivered {}; webhook: {} notices, {} delivered twice",
            name(failover),
            r.node,
            if r.announcing_node.as_deref() == Some(&r.node) { " (MetalLB's announcer)" } else { "" },
            r.verdict.map_or("no verdict", drill::Verdict::as_str),
            r.milestones
                .iter()
                .filter_map(|m| Some(format!("{} {:.1} s", m.name, m.seconds?)))
                .collect::<Vec<_>>()
                .join(", "),
            r.requests.failed,
            r.requests.total,
            r.requests.failure_kinds(),
            seconds(r.requests.last_failure_seconds),
            fine_seconds(r.detection_seconds),
            drilled.notices,
            drilled.duplicates,
        );
        done.push(drilled);
    }
    let busy = if busy_minutes > 0 {
        respread_web(&client).await?;
        eprintln!("{}: {busy_minutes} busy minutes", name(failover));
        Some(busy(&client, &web_url, busy_minutes).await?)
    } else {
        None
    };
    Ok(Variant { failover, idle, runs: done, busy })
}

fn table(variants: &[Variant]) {
    let goals: [(&str, Option<f64>); 10] = [
        (drill::LEASE_STALE, None),
        (drill::ADDRESS_MOVED, None),
        (drill::NOT_READY, None),
        (drill::FIRST_NOTIFICATION, Some(15.0)),
        (drill::NODE_DOWN, None),
        (drill::EVICTED, None),
        (drill::ALL_READY, Some(30.0)),
        (drill::RESCHEDULED, None),
        (drill::NOT_RESCHEDULED, None),
        (drill::RESOLVED, None),
    ];
    let anchor = variants.iter().find(|v| v.failover == Failover::Upstream);
    let header: Vec<String> =
        variants.iter().map(|v| format!("{} ({} drills)", name(v.failover), v.runs.len())).collect();
    println!("\nmedian seconds after the fault | {} | tuned / upstream | goal (tuned)", header.join(" | "));
    let row = |label: &str, values: Vec<Option<f64>>, goal: Option<f64>| {
        let show = if goal.is_some_and(|g| g < 5.0) { fine_seconds } else { seconds };
        let cells: Vec<String> = values.iter().map(|v| show(*v)).collect();
        let ratio = match (anchor.and(values.first().copied().flatten()), values.last().copied().flatten()) {
            (Some(base), Some(now)) if variants.len() > 1 && base > 0.0 => format!("{:.2}x", now / base),
            _ => "-".into(),
        };
        let goal = match (goal, values.last().copied().flatten()) {
            (Some(goal), Some(now)) => format!("<= {goal:.0} s: {:.2}", now / goal),
            (Some(goal), None) => format!("<= {goal:.0} s: not reached"),
            _ => String::new(),
        };
        println!("{label} | {} | {ratio} | {goal}", cells.join(" | "));
    };
    for (name, goal) in goals {
        row(name, variants.iter().map(|v| milestone(&v.runs, name)).collect(), goal);
    }
    row("last failed request", variants.iter().map(|v| last_failure(&v.runs)).collect(), Some(10.0));
    row(
        "NotReady seen to node-down delivered (p50)",
        variants.iter().map(|v| detection(&v.runs)).collect(),
        Some(1.0),
    );
    for v in variants {
        let failed: usize = v.runs.iter().map(|r| r.report.requests.failed).sum();
        let total: usize = v.runs.iter().map(|r| r.report.requests.total).sum();
        let duplicates: usize = v.runs.iter().map(|r| r.duplicates).sum();
        println!(
            "{}: requests failed {failed} of {total}; notices delivered twice {duplicates}; idle API server: {:.2} Lease writes/s, {:.2} Node writes/s, {:.1} requests/s, {:.1}% CPU",
            name(v.failover),
            v.idle.lease_writes_per_second,
            v.idle.node_writes_per_second,
            v.idle.requests_per_second,
            v.idle.cpu_percent
        );
        if let Some(b) = &v.busy {
            println!(
                "{} busy for {} min ({}; load average up to {:.1} on {} cores): {} false NotReady {:?}, {} incidents opened {:?}, requests failed {} of {}",
                name(v.failover),
                b.minutes,
                b.load,
                b.load_average_max,
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                b.not_ready.len(),
                b.not_ready,
                b.incidents.len(),
                b.incidents,
                b.requests.failed,
                b.requests.total
            );
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(());
    }
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = value("--runs").and_then(|n| n.parse().ok()).unwrap_or(3);
    let upstream_runs: usize = value("--upstream-runs").and_then(|n| n.parse().ok()).unwrap_or(1);
    let busy_minutes: u64 = value("--busy-minutes").and_then(|n| n.parse().ok()).unwrap_or(10);
    let keep = args.iter().any(|a| a == "--keep");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        if busy_minutes > 0 && std::process::Command::new("stress-ng").arg("--version").output().is_err() {
            bail!("stress-ng is not installed: apt-get install stress-ng (or run `./vigil.sh bench drill`)");
        }
        let receiver = Receiver::start(RECEIVER_PORT).await?;
        let progress = Progress::default();
        let mut variants = vec![];
        if !args.iter().any(|a| a == "--no-upstream") {
            variants.push(variant(Failover::Upstream, upstream_runs, 0, &receiver, &progress).await?);
        }
        variants.push(variant(Failover::Tuned, runs, busy_minutes, &receiver, &progress).await?);
        table(&variants);
        if !keep {
            down(&spec(Failover::Tuned)).await?;
        }
        Ok(())
    })
}
