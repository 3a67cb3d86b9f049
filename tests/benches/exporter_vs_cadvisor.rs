//! Issue 5's measurement, side by side on one node in one run: vigil's
//! node-exporter against standalone cAdvisor (built from its Go modules,
//! run with its defaults), both as processes in the same node container,
//! with 10 and then 100 extra containers on the node (pods of 10 pause
//! containers, pinned to it). Reported per exporter: resident memory, CPU
//! seconds per scrape (process CPU over a window of back-to-back scrapes,
//! background work included) and scrape latency from the host; plus the
//! kubelet's CPU over node-exporter's window, since node-exporter's numbers
//! come from the kubelet's own cAdvisor, and the kubelet's own
//! `/stats/summary` latency, the floor under any exporter that reads it at
//! scrape time. Goals: memory <= 1/5 of cAdvisor's,
//! CPU per scrape <= 1/3, scrape under 50 ms at 100 containers.
//!
//! `cargo bench -p vigil-e2e --bench exporter_vs_cadvisor [-- --keep]`
//! creates (or reuses) the cluster `vigil-bench` and removes it afterwards
//! unless `--keep`. node-exporter runs with `--cache 0s` here, so every
//! scrape is a real collection.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Container, Pod, PodSpec, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};
use vigil::{
    addons::node_exporter,
    build::{go, workload},
    cluster::ClusterSpec,
    images::ImageNames,
    poll::until_some as wait_for,
    progress::Progress,
};
use vigil_e2e::{
    cache_dir, client, cpu_seconds, docker, down, host_pid, median, proc_status_kib, provider, up,
};

const DIR: &str = "/opt/vigil-bench";
const SCRAPES: usize = 20;
const ROUNDS: usize = 3;
const CADVISOR_PORT: u16 = 8080;
const EXPORTER_PORT: u16 = 9200;
const PODS_LABEL: &str = "vigil-bench";
const CONTAINERS_PER_POD: usize = 10;

fn bench_spec() -> ClusterSpec {
    ClusterSpec {
        name: "vigil-bench".into(),
        node_subnet: "172.29.251.0/24".parse().expect("valid"),
        ..ClusterSpec::default()
    }
}

struct Exporter {
    name: &'static str,
    url: String,
    pid: u32,
}

#[derive(Default, Clone)]
struct Measured {
    rss_kib: u64,
    cpu_per_scrape: f64,
    p50_ms: f64,
    max_ms: f64,
    bytes: usize,
    kubelet_cpu_per_scrape: f64,
}

/// `SCRAPES` back-to-back scrapes of one exporter from the host.
async fn measure(http: &reqwest::Client, e: &Exporter, kubelet: u32) -> Result<Measured> {
    for _ in 0..2 {
        http.get(&e.url).send().await?.error_for_status()?.bytes().await?;
    }
    let (cpu0, kubelet0) = (cpu_seconds(e.pid)?, cpu_seconds(kubelet)?);
    let mut latencies = vec![];
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let body = http.get(&e.url).send().await?.error_for_status()?.bytes().await?;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        bytes = body.len();
    }
    let (cpu1, kubelet1) = (cpu_seconds(e.pid)?, cpu_seconds(kubelet)?);
    Ok(Measured {
        rss_kib: proc_status_kib(e.pid, "VmRSS:"),
        cpu_per_scrape: (cpu1 - cpu0) / SCRAPES as f64,
        max_ms: latencies.iter().copied().fold(0.0, f64::max),
        p50_ms: median(latencies),
        bytes,
        kubelet_cpu_per_scrape: (kubelet1 - kubelet0) / SCRAPES as f64,
    })
}

fn pause_pod(index: usize, node: &str, image: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{PODS_LABEL}-pause-{index}")),
            labels: Some([("app".to_owned(), PODS_LABEL.to_owned())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            termination_grace_period_seconds: Some(0),
            // `default` enforces the restricted Pod Security profile; pause runs as 65535.
            security_context: Some(vigil::addons::non_root_pod(65535, None)),
            containers: (0..CONTAINERS_PER_POD)
                .map(|c| Container {
                    name: format!("pause-{c}"),
                    image: Some(image.into()),
                    image_pull_policy: Some("IfNotPresent".into()),
                    security_context: Some(vigil::addons::locked_down()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Removes the bench's pause pods (a previous run's too) and waits until they are gone.
async fn remove_pause_pods(client: &Client) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let selector = ListParams::default().labels(&format!("app={PODS_LABEL}"));
    pods.delete_collection(&DeleteParams::default(), &selector).await?;
    wait_for("the bench's pause pods gone", Duration::from_secs(120), || async {
        Ok::<_, anyhow::Error>(pods.list(&selector).await?.items.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

/// Makes `containers` pause containers run on `node` (in pods of ten).
async fn scale_pause(client: &Client, node: &str, image: &str, containers: usize) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let want = containers / CONTAINERS_PER_POD;
    for index in 0..want {
        let pod = pause_pod(index, node, image);
        if pods.get_opt(pod.metadata.name.as_deref().unwrap_or_default()).await?.is_none() {
            pods.create(&PostParams::default(), &pod).await?;
        }
    }
    wait_for(format!("{want} pause pods running on {node}"), Duration::from_secs(300), || async {
        let list = pods.list(&ListParams::default().labels(&format!("app={PODS_LABEL}"))).await?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        Ok::<_, anyhow::Error>((running == want).then_some(()))
    })
    .await?;
    Ok(())
}

/// A label's value in one exposition line.
fn label<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let labels = line.split_once('{')?.1.rsplit_once('}')?.0;
    labels
        .split("\",")
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix("=\""))
        .map(|v| v.trim_end_matches('"'))
}

/// Bench containers an exporter reports CPU for, as (pod, container) pairs.
fn bench_containers(
    text: &str,
    pod_key: &str,
    container_key: &str,
) -> std::collections::BTreeSet<(String, String)> {
    text.lines()
        .filter(|l| l.starts_with("container_cpu_usage_seconds_total{"))
        .filter_map(|l| Some((label(l, pod_key)?.to_owned(), label(l, container_key)?.to_owned())))
        .filter(|(pod, container)| {
            pod.starts_with(&format!("{PODS_LABEL}-pause-")) && container.starts_with("pause-")
        })
        .collect()
}

/// Waits until both exporters report every bench container.
async fn wait_seen(http: &reqwest::Client, exporters: &[Exporter], containers: usize) -> Result<()> {
    for e in exporters {
        let (pod_key, container_key) = match e.name {
            "cAdvisor" => {
                ("container_label_io_kubernetes_pod_name", "container_label_io_kubernetes_container_name")
            }
            _ => ("pod", "container"),
        };
        wait_for(
            &format!("{} reporting {containers} bench containers", e.name),
            Duration::from_secs(120),
            || async {
                let text = http.get(&e.url).send().await?.text().await?;
                Ok::<_, anyhow::Error>(
                    (bench_containers(&text, pod_key, container_key).len() >= containers).then_some(()),
                )
            },
        )
        .await?;
    }
    Ok(())
}

async fn service_account_token(client: &Client) -> Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), node_exporter::NAMESPACE);
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() },
        ..Default::default()
    };
    let answer = accounts.create_token_request(node_exporter::NAME, &PostParams::default(), &request).await?;
    answer.status.map(|s| s.token).context("the TokenRequest returned no token")
}

/// Starts `command` in the background in `node`, its output in `DIR/<log>.log`.
fn start(node: &str, log: &str, command: &str) -> Result<()> {
    docker(&["exec", node, "sh", "-c", &format!("nohup {command} >{DIR}/{log}.log 2>&1 &")])?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    let spec = bench_spec();
    let progress = Progress::default();
    up(&spec).await.context("vigil up for the benchmark cluster")?;
    let (client, _) = client(&spec).await?;
    let cadvisor = go::cadvisor().ensure(&cache_dir(), &progress).await?;
    let exporter = workload::build_binaries(&[node_exporter::NAME], &cache_dir(), &progress).await?
        [node_exporter::NAME]
        .clone();

    let node = spec.worker_name(1);
    let ip = provider().await?.plan(&spec).into_iter().find(|n| n.name == node).context("bench node")?.ip;
    docker(&["exec", &node, "sh", "-c", &format!("pkill -f ^{DIR}/ ; rm -rf {DIR}; mkdir -p {DIR}")])?;
    docker(&["cp", &cadvisor.display().to_string(), &format!("{node}:{DIR}/cadvisor")])?;
    docker(&["cp", &exporter.display().to_string(), &format!("{node}:{DIR}/node-exporter")])?;
    let token = service_account_token(&client).await?;
    let kubelet_http = {
        let ca = docker(&["exec", &node, "cat", "/etc/kubernetes/pki/ca.crt"])?;
        reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
            .timeout(Duration::from_secs(10))
            .build()?
    };
    let token_file = tempfile::NamedTempFile::new()?;
    std::fs::write(token_file.path(), &token)?;
    docker(&["cp", &token_file.path().display().to_string(), &format!("{node}:{DIR}/token")])?;

    // cAdvisor with its defaults (its containerd socket is the default path, named for clarity).
    start(
        &node,
        "cadvisor",
        &format!("{DIR}/cadvisor -port {CADVISOR_PORT} -containerd /run/containerd/containerd.sock"),
    )?;
    start(
        &node,
        "node-exporter",
        &format!(
            "{DIR}/node-exporter --node-name {node} --kubelet-address {ip} --kubelet-ca /etc/kubernetes/pki/ca.crt \
             --kubelet-token {DIR}/token --listen 0.0.0.0:{EXPORTER_PORT} --admin-listen 127.0.0.1:9201 --cache 0s --log warn"
        ),
    )?;
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;
    let exporters = [
        Exporter { name: "node-exporter", url: format!("http://{ip}:{EXPORTER_PORT}/metrics"), pid: 0 },
        Exporter { name: "cAdvisor", url: format!("http://{ip}:{CADVISOR_PORT}/metrics"), pid: 0 },
    ];
    for e in &exporters {
        wait_for(format!("{} answering", e.name), Duration::from_secs(60), || async {
            Ok::<_, anyhow::Error>(
                http.get(&e.url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()),
            )
        })
        .await?;
    }
    let exporters = exporters.map(|e| {
        let prefix = format!("{DIR}/{}", if e.name == "cAdvisor" { "cadvisor" } else { "node-exporter" });
        Exporter { pid: host_pid(&node, &prefix).expect("started above"), ..e }
    });
    let kubelet = host_pid(&node, "/usr/bin/kubelet")?;

    let pause = ImageNames::new(&spec.image_repository).pause();
    remove_pause_pods(&client).await?;
    let mut results: BTreeMap<usize, [Measured; 2]> = BTreeMap::new();
    let mut kubelet_latency: BTreeMap<usize, f64> = BTreeMap::new();
    for containers in [10, 100] {
        scale_pause(&client, &node, &pause, containers).await?;
        wait_seen(&http, &exporters, containers).await?;
        let mut rounds: [Vec<Measured>; 2] = Default::default();
        for _ in 0..ROUNDS {
            for (i, e) in exporters.iter().enumerate() {
                rounds[i].push(measure(&http, e, kubelet).await?);
            }
        }
        let pick = |v: &Vec<Measured>| Measured {
            rss_kib: v.iter().map(|m| m.rss_kib).max().unwrap_or(0),
            cpu_per_scrape: median(v.iter().map(|m| m.cpu_per_scrape).collect()),
            p50_ms: median(v.iter().map(|m| m.p50_ms).collect()),
            max_ms: v.iter().map(|m| m.max_ms).fold(0.0, f64::max),
            bytes: v.last().map_or(0, |m| m.bytes),
            kubelet_cpu_per_scrape: median(v.iter().map(|m| m.kubelet_cpu_per_scrape).collect()),
        };
        results.insert(containers, [pick(&rounds[0]), pick(&rounds[1])]);
        // The floor under any exporter that reads the kubelet at scrape time.
        let summary = format!("https://{ip}:10250/stats/summary");
        let mut latencies = vec![];
        for _ in 0..SCRAPES {
            let started = Instant::now();
            kubelet_http.get(&summary).bearer_auth(&token).send().await?.error_for_status()?.bytes().await?;
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }
        kubelet_latency.insert(containers, median(latencies));
    }

    println!(
        "\nnode-exporter vs cAdvisor {} on {node}, {SCRAPES} back-to-back scrapes x {ROUNDS} rounds (medians; RSS and latency max are the worst round)\n",
        vigil::versions::CADVISOR
    );
    println!("| extra containers | metric | cAdvisor | node-exporter | ratio | goal |");
    println!("|---|---|---|---|---|---|");
    let mut failed = vec![];
    for (containers, [ne, ca]) in &results {
        let memory = ne.rss_kib as f64 / ca.rss_kib as f64;
        let cpu = ne.cpu_per_scrape / ca.cpu_per_scrape;
        println!(
            "| {containers} | RSS | {} KiB | {} KiB | **{memory:.2}x** | <= 0.20 |",
            ca.rss_kib, ne.rss_kib
        );
        println!(
            "| {containers} | CPU per scrape | {:.2} ms | {:.2} ms | **{cpu:.2}x** | <= 0.33 |",
            ca.cpu_per_scrape * 1e3,
            ne.cpu_per_scrape * 1e3
        );
        println!(
            "| {containers} | scrape latency p50 (max) | {:.1} ms ({:.1}) | {:.1} ms ({:.1}) | {:.2}x | < 50 ms at 100 |",
            ca.p50_ms,
            ca.max_ms,
            ne.p50_ms,
            ne.max_ms,
            ne.p50_ms / ca.p50_ms
        );
        println!(
            "| {containers} | body | {} B | {} B | {:.2}x | |",
            ca.bytes,
            ne.bytes,
            ne.bytes as f64 / ca.bytes as f64
        );
        println!(
            "| {containers} | the kubelet's own /stats/summary, read directly: latency p50 | | {:.1} ms | | |",
            kubelet_latency[containers]
        );
        println!(
            "| {containers} | kubelet CPU per scrape (its cAdvisor does node-exporter's reading) | {:.2} ms | {:.2} ms | | |",
            ca.kubelet_cpu_per_scrape * 1e3,
            ne.kubelet_cpu_per_scrape * 1e3
        );
        if memory > 0.2 {
            failed.push(format!("{containers}: memory {memory:.2}x"));
        }
        if cpu > 1.0 / 3.0 {
            failed.push(format!("{containers}: CPU {cpu:.2}x"));
        }
        if *containers == 100 && ne.p50_ms >= 50.0 {
            failed.push(format!("{containers}: latency {:.1} ms", ne.p50_ms));
        }
    }
    println!(
        "\ngoals {}",
        if failed.is_empty() { "met".to_owned() } else { format!("missed: {}", failed.join(", ")) }
    );

    remove_pause_pods(&client).await?;
    docker(&["exec", &node, "sh", "-c", &format!("pkill -f ^{DIR}/ ; rm -rf {DIR}")])?;
    if !keep {
        down(&spec).await?;
    }
    if results.len() != 2 {
        bail!("measured {} of 2 container counts", results.len());
    }
    Ok(())
}
