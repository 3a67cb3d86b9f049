//! Issue 24's memory measurement: the alerter's memory against the number
//! of pods in the cluster. Its reflectors hold every pod, so its memory
//! grows with them; its container's limit must hold the largest cluster it
//! is meant for.
//!
//! On the e2e cluster (`vigil-e2e`, reused when it answers, else created
//! with `vigil up`; `--up` applies `vigil up` in any case, to measure the
//! alerter just built), pods are created in the namespace
//! `vigil-alerter-memory-bench`, 1 000, then up to 5 000, then up to
//! 10 000: Pending forever (a nodeSelector no node matches, an image never
//! pulled), each shaped like a typical Deployment's pod (two containers with
//! env and resources, labels, an annotation). Before the first and after
//! each step, once the alerter had `--settle` seconds to take the pods in,
//! both replicas' memory is sampled every 10 s over that window:
//! - the container's working set (`container_memory_working_set_bytes`, the
//!   kubelet's `/metrics/resource` through the API server's node proxy): what
//!   the memory limit is enforced on;
//! - the process's resident memory (`VmRSS` of the `alerter` process, read
//!   here on the host: node containers share its kernel), when visible.
//!
//! A table follows: pods, the leader's working set (last sample and peak),
//! its ratio to the 0-pod anchor of the same run, the standby's, the
//! leader's RSS, and the containers' restarts and OOM kills (an alerter over
//! its limit is killed: the bench carries on and says so). Nothing is
//! asserted: the figures set the limit.
//!
//! The namespace, and so every pod, is removed at the end, on error and on
//! Ctrl-C too. Creation is bounded: `--concurrency` requests at a time
//! (default 8), each retried at most 3 times.
//!
//! `cargo bench -p vigil-e2e --bench alerter_memory [-- --steps 1000,5000,10000]
//! [--concurrency 8] [--settle 60] [--up]`

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Container, EnvVar, Namespace, Pod, PodSpec, ResourceRequirements, ServiceAccount},
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};
use vigil::{addons::alerter, poll::until_some};
use vigil_e2e::{client, proc_status_kib, test_spec, up};

const NAMESPACE: &str = "vigil-alerter-memory-bench";
/// The label no node has: the pods stay Pending, never pulled nor run.
const NOWHERE: (&str, &str) = ("vigil.dev/alerter-memory-bench", "no-such-node");
const CONTAINER: &str = "alerter";
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const ATTEMPTS: u32 = 3;
const MIB: f64 = 1024.0 * 1024.0;

struct Args {
    /// Total pods after each step, rising.
    steps: Vec<usize>,
    concurrency: usize,
    settle: Duration,
    up: bool,
}

fn args() -> Result<Args> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let number = |flag: &str, default: usize| -> Result<usize> {
        match value(flag) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow!("{flag} {v:?}: a whole number is expected, e.g. {flag} {default}")),
        }
    };
    let steps = match value("--steps") {
        None => vec![1000, 5000, 10000],
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| anyhow!("--steps {list:?}: pod counts separated by commas are expected, e.g. --steps 1000,5000,10000"))?,
    };
    if steps.is_empty() || steps.windows(2).any(|w| w[0] >= w[1]) || steps[0] == 0 {
        bail!("--steps {steps:?}: rising pod counts above 0 are expected, e.g. --steps 1000,5000,10000");
    }
    let concurrency = number("--concurrency", 8)?;
    if !(1..=64).contains(&concurrency) {
        bail!("--concurrency {concurrency}: between 1 and 64 requests at a time");
    }
    let settle = Duration::from_secs(number("--settle", 60)? as u64);
    if settle < SAMPLE_EVERY {
        bail!(
            "--settle {}: at least {} seconds, to take more than one sample",
            settle.as_secs(),
            SAMPLE_EVERY.as_secs()
        );
    }
    Ok(Args { steps, concurrency, settle, up: args.iter().any(|a| a == "--up") })
}

/// A Pending pod shaped like a typical Deployment's.
fn fake_pod(i: usize) -> Pod {
    let container = |name: &str| Container {
        name: name.into(),
        image: Some("vigil.invalid/never-pulled:1".into()),
        env: Some(
            (0..8)
                .map(|e| EnvVar {
                    name: format!("SETTING_{e}"),
                    value: Some(format!("value of setting {e}")),
                    ..Default::default()
                })
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("10m".into())),
                ("memory".into(), Quantity("16Mi".into())),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("fake-{i:05}")),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".into(), "alerter-memory-bench".into()),
                ("app.kubernetes.io/part-of".into(), "vigil-bench".into()),
                ("pod-template-hash".into(), "5d8f7".into()),
            ])),
            annotations: Some(BTreeMap::from([("vigil.dev/bench".into(), "alerter memory".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_selector: Some(BTreeMap::from([(NOWHERE.0.into(), NOWHERE.1.into())])),
            containers: vec![container("main"), container("sidecar")],
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(0),
            ..Default::default()
        }),
        status: None,
    }
}

async fn create_one(pods: &Api<Pod>, i: usize) -> Result<()> {
    let pod = fake_pod(i);
    for attempt in 1..=ATTEMPTS {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => return Ok(()),
            // An earlier attempt got through before its answer was lost.
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
            Err(e) if attempt < ATTEMPTS => {
                eprintln!("creating fake-{i:05} (attempt {attempt}): {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("creating pod fake-{i:05} in {NAMESPACE}")),
        }
    }
    unreachable!("the last attempt returns")
}

/// Pods `from..to`, `concurrency` requests at a time; the first failure stops it.
async fn create_pods(pods: &Api<Pod>, from: usize, to: usize, concurrency: usize) -> Result<()> {
    let started = std::time::Instant::now();
    futures::stream::iter(from..to)
        .map(Ok)
        .try_for_each_concurrent(concurrency, |i| create_one(pods, i))
        .await?;
    eprintln!("created pods {from}..{to} in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn remove_namespace(client: &Client) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.delete(NAMESPACE, &DeleteParams::background()).await {
        Ok(_) => eprintln!("removing the namespace {NAMESPACE} and its pods"),
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e).context(format!("deleting the namespace {NAMESPACE}")),
    }
    until_some(format!("the namespace {NAMESPACE} gone"), Duration::from_secs(600), || async {
        Ok::<_, kube::Error>(namespaces.get_opt(NAMESPACE).await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

async fn create_namespace(client: &Client) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some(NAMESPACE.into()), ..Default::default() },
        ..Default::default()
    };
    namespaces.create(&PostParams::default(), &namespace).await.context("creating the bench's namespace")?;
    // Pods are refused until the namespace's `default` ServiceAccount exists.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
    until_some("the namespace's default ServiceAccount", Duration::from_secs(60), || async {
        Ok::<_, kube::Error>(accounts.get_opt("default").await?.map(|_| ()))
    })
    .await?;
    Ok(())
}

/// One alerter replica's memory at one moment.
#[derive(Debug, Clone)]
struct Replica {
    pod: String,
    leader: bool,
    working_set: Option<u64>,
    rss: Option<u64>,
    restarts: i32,
    oom_killed: bool,
    /// The container's memory limit, as the pod spec says it.
    limit: Option<String>,
}

/// `container_memory_working_set_bytes` of `(pod, container)` pairs in one
/// kubelet's `/metrics/resource` text.
fn working_sets(metrics: &str, namespace: &str) -> BTreeMap<(String, String), u64> {
    let label = |series: &str, name: &str| -> Option<String> {
        series.split(&format!("{name}=\"")).nth(1)?.split('"').next().map(str::to_owned)
    };
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("container_memory_working_set_bytes{")?;
            let (labels, values) = rest.split_once('}')?;
            if label(labels, "namespace")?.as_str() != namespace {
                return None;
            }
            let value: f64 = values.split_whitespace().next()?.parse().ok()?;
            Some(((label(labels, "pod")?, label(labels, "container")?), value as u64))
        })
        .collect()
}

/// The resident memory of the `alerter` process of the pod `uid`, found on
/// the host by its cgroup (which names the pod's uid); None when this
/// machine's `/proc` does not show it (the cluster runs elsewhere).
fn host_rss_bytes(uid: &str) -> Option<u64> {
    let spellings = [uid.to_owned(), uid.replace('-', "_")];
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        if comm.trim() != CONTAINER {
            return None;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        spellings.iter().any(|s| cgroup.contains(s.as_str())).then(|| proc_status_kib(pid, "VmRSS:") * 1024)
    })
}

async fn replicas(client: &Client) -> Result<Vec<Replica>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), alerter::NAMESPACE);
    let selector = format!("app.kubernetes.io/name={}", alerter::NAME);
    let listed =
        pods.list(&ListParams::default().labels(&selector)).await.context("listing the alerter's pods")?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), alerter::NAMESPACE);
    let holder = leases
        .get_opt(alerter::LEASE)
        .await
        .context("reading the alerter's leader Lease")?
        .and_then(|l| l.spec?.holder_identity);
    let mut by_node: BTreeMap<String, BTreeMap<(String, String), u64>> = BTreeMap::new();
    let mut found = vec![];
    for pod in listed.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        if !by_node.contains_key(&node) {
            let request = http::Request::get(format!("/api/v1/nodes/{node}/proxy/metrics/resource"))
                .body(vec![])
                .expect("a plain GET");
            let metrics = client
                .request_text(request)
                .await
                .with_context(|| format!("the kubelet's /metrics/resource on {node}"))?;
            by_node.insert(node.clone(), working_sets(&metrics, alerter::NAMESPACE));
        }
        let status = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
        let container = status.into_iter().flatten().find(|c| c.name == CONTAINER);
        found.push(Replica {
            leader: holder.as_deref() == Some(name.as_str()),
            working_set: by_node[&node].get(&(name.clone(), CONTAINER.to_owned())).copied(),
            rss: pod.metadata.uid.as_deref().and_then(host_rss_bytes),
            restarts: container.map(|c| c.restart_count).unwrap_or_default(),
            oom_killed: container
                .and_then(|c| c.last_state.as_ref()?.terminated.as_ref()?.reason.clone())
                .is_some_and(|r| r == "OOMKilled"),
            limit: pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == CONTAINER))
                .and_then(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory"))
                .map(|q| q.0.clone()),
            pod: name,
        });
    }
    if found.is_empty() {
        bail!("no alerter pod in {} (is the alerter add-on deployed? `vigil up`)", alerter::NAMESPACE);
    }
    Ok(found)
}

/// One step's figures.
struct Row {
    pods: usize,
    /// The leader's last working set in the window, and its peak.
    leader: Option<u64>,
    leader_peak: Option<u64>,
    leader_rss: Option<u64>,
    standby: Option<u64>,
    restarts: i32,
    oom_killed: bool,
    leaders: Vec<String>,
    limit: Option<String>,
}

/// Samples both replicas every 10 s over `window`.
async fn measure(client: &Client, pods: usize, window: Duration) -> Result<Row> {
    let mut row = Row {
        pods,
        leader: None,
        leader_peak: None,
        leader_rss: None,
        standby: None,
        restarts: 0,
        oom_killed: false,
        leaders: vec![],
        limit: None,
    };
    let samples = (window.as_secs() / SAMPLE_EVERY.as_secs()).max(1);
    for sample in 0..samples {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let replicas = replicas(client).await?;
        let leader = replicas.iter().find(|r| r.leader);
        if let Some(l) = leader {
            row.leader = l.working_set.or(row.leader);
            row.leader_peak = row.leader_peak.max(l.working_set);
            row.leader_rss = l.rss.or(row.leader_rss);
            if !row.leaders.contains(&l.pod) {
                row.leaders.push(l.pod.clone());
            }
        }
        row.standby = replicas.iter().find(|r| !r.leader).and_then(|r| r.working_set).or(row.standby);
        row.restarts = replicas.iter().map(|r| r.restarts).sum();
        row.oom_killed |= replicas.iter().any(|r| r.oom_killed);
        row.limit = replicas.iter().find_map(|r| r.limit.clone()).or(row.limit);
        eprintln!(
            "{pods} pods, sample {}/{samples}: {}",
            sample + 1,
            replicas
                .iter()
                .map(|r| format!(
                    "{}{} working set {} rss {}",
                    r.pod,
                    if r.leader { " (leader)" } else { "" },
                    mib(r.working_set),
                    mib(r.rss)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(row)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map(|b| format!("{:.1} MiB", b as f64 / MIB)).unwrap_or_else(|| "-".into())
}

fn print_row(row: &Row, anchor: Option<u64>) {
    let ratio = match (anchor, row.leader) {
        (Some(a), Some(now)) if a > 0 => format!("{:.2}x", now as f64 / a as f64),
        _ => "-".into(),
    };
    println!(
        "{} | {} | {} | {ratio} | {} | {} | {}{} | {}",
        row.pods,
        mib(row.leader),
        mib(row.leader_peak),
        mib(row.standby),
        mib(row.leader_rss),
        row.restarts,
        if row.oom_killed { " (OOMKilled)" } else { "" },
        row.leaders.join(", ")
    );
}

async fn steps(client: &Client, args: &Args) -> Result<Vec<Row>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    println!(
        "extra pods | leader working set | leader peak | / 0 pods | standby working set | leader RSS | restarts | leaders"
    );
    let anchor = measure(client, 0, args.settle).await?;
    print_row(&anchor, anchor.leader);
    let mut rows = vec![anchor];
    let mut created = 0;
    for &step in &args.steps {
        create_pods(&pods, created, step, args.concurrency).await?;
        created = step;
        let row = measure(client, step, args.settle).await?;
        print_row(&row, rows[0].leader);
        rows.push(row);
    }
    Ok(rows)
}

async fn cluster(args: &Args) -> Result<Client> {
    let spec = test_spec();
    if !args.up
        && let Ok((client, _)) = client(&spec).await
        && client.apiserver_version().await.is_ok()
    {
        eprintln!("using the running e2e cluster {}", spec.name);
        return Ok(client);
    }
    eprintln!("vigil up {}", spec.name);
    up(&spec).await.context("vigil up")?;
    Ok(client(&spec).await?.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let args = args()?;
    let client = cluster(&args).await?;
    // A namespace left by an interrupted run would count its pods in the anchor.
    remove_namespace(&client).await?;
    let outcome = tokio::select! {
        rows = async {
            create_namespace(&client).await?;
            steps(&client, &args).await
        } => rows,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let cleanup = remove_namespace(&client).await;
    let rows = outcome?;
    cleanup?;
    let anchor = rows[0].leader;
    let limit = rows.iter().rev().find_map(|r| r.limit.clone()).unwrap_or_else(|| "none".into());
    println!("\nalerter memory against extra pods (Pending, in {NAMESPACE}); its memory limit: {limit}");
    println!(
        "extra pods | leader working set | leader peak | / 0 pods | standby working set | leader RSS | restarts | leaders"
    );
    for row in &rows {
        print_row(row, anchor);
    }
    Ok(())
}
