//! Monitoring (issue 5): node-exporter's live output passes `promtool check
//! metrics`; Prometheus scrapes web, probe-server and node-exporter, found
//! by pod discovery, and has `container_cpu_usage_seconds_total` for every
//! `web` pod within 60 s; a deleted pod's series leave the exporter's
//! output; Prometheus's data, on a PersistentVolumeClaim that
//! local-path-provisioner bound, survives its pod being deleted.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};
use serde_json::Value;
use vigil::{
    addons::{kube_state_metrics, local_path, node_exporter, prometheus, prometheus::ANNOTATED_PODS_JOB},
    poll::until_some,
};
use vigil_e2e::Cluster;

use crate::workload::{name, web_pods};

fn node_of(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

fn running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Running web pods, by name, with their nodes.
async fn running_web_pods(client: &Client) -> Result<BTreeMap<String, String>> {
    let pods = web_pods(client).await?;
    Ok(pods.iter().filter(|p| running(p)).map(|p| (name(p), node_of(p))).collect())
}

/// The node-exporter pod on each node.
async fn exporters(client: &Client) -> Result<BTreeMap<String, String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), node_exporter::NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={}", node_exporter::NAME)))
        .await?;
    Ok(list.items.iter().filter(|p| running(p)).map(|p| (node_of(p), name(p))).collect())
}

/// One scrape of an exporter pod, through the API server's pod proxy.
async fn scrape(client: &Client, exporter_pod: &str) -> Result<String> {
    let path = format!(
        "/api/v1/namespaces/{}/pods/{exporter_pod}:{}/proxy/metrics",
        node_exporter::NAMESPACE,
        node_exporter::METRICS_PORT
    );
    let request = http::Request::get(&path).body(vec![])?;
    client.request_text(request).await.with_context(|| format!("GET {path}"))
}

/// `promtool check metrics` (from the Prometheus image vigil built) on a
/// scrape; its complaints, if any.
fn promtool_check(text: &str) -> Result<String> {
    let image = vigil::addons::prometheus::IMAGE.reference(&vigil_e2e::images().repository);
    let mut child = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "--entrypoint",
            vigil::addons::prometheus::PROMTOOL,
            &image,
            "check",
            "metrics",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("docker run promtool")?;
    child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(
        out.status.success() || !said.trim().is_empty(),
        "promtool failed without a word: {}",
        out.status
    );
    Ok(if out.status.success() { String::new() } else { said })
}

/// Pods named in a scrape's `container_cpu_usage_seconds_total` series of `namespace`.
fn pods_in_scrape(text: &str, namespace: &str) -> BTreeSet<String> {
    let in_namespace = format!("namespace=\"{namespace}\"");
    text.lines()
        .filter(|l| l.starts_with("container_cpu_usage_seconds_total{") && l.contains(&in_namespace))
        .filter_map(|l| l.split("pod=\"").nth(1).and_then(|rest| rest.split('"').next()))
        .map(str::to_owned)
        .collect()
}

pub async fn exporter_output_is_clean(c: &Cluster) -> Result<()> {
    let client = &c.client;
    let exporters = exporters(client).await?;
    ensure!(exporters.len() == 3, "expected a node-exporter pod on each of the 3 nodes, found {exporters:?}");
    for (node, pod) in &exporters {
        let text = scrape(client, pod).await?;
        ensure!(
            text.contains("container_memory_working_set_bytes{"),
            "{pod} on {node} exports no working set:\n{text}"
        );
        ensure!(
            text.contains("vigil_node_exporter_scrape_success{collector=\"kubelet\"} 1"),
            "{pod} on {node}: the kubelet collection failed:\n{}",
            text.lines().filter(|l| l.starts_with("vigil_")).collect::<Vec<_>>().join("\n")
        );
        let complaints = promtool_check(&text)?;
        ensure!(complaints.is_empty(), "promtool check metrics on {pod} ({node}):\n{complaints}");
    }
    Ok(())
}

/// Prometheus's client: with vigil's credentials (`Cluster::http`).
pub(crate) fn prometheus_http(c: &Cluster) -> Result<reqwest::Client> {
    c.http()
}

/// An instant query; the result vector.
pub(crate) async fn query(
    http: &reqwest::Client,
    base: &str,
    promql: &str,
    at: Option<f64>,
) -> Result<Vec<Value>> {
    let mut params = vec![("query", promql.to_owned())];
    if let Some(at) = at {
        params.push(("time", format!("{at:.3}")));
    }
    let url = format!("{base}api/v1/query");
    let body = http.get(&url).query(&params).send().await?.error_for_status()?.text().await?;
    let answer: Value = serde_json::from_str(&body).with_context(|| format!("{url}: {body}"))?;
    ensure!(answer["status"] == "success", "{url} {promql}: {answer}");
    Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
}

pub async fn prometheus_sees_every_web_pod(c: &Cluster) -> Result<()> {
    let (client, prometheus_url) = (&c.client, c.prometheus_url()?);
    let http = prometheus_http(c)?;
    let started = Instant::now();
    let promql = r#"container_cpu_usage_seconds_total{namespace="default",container="web"}"#;
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        let want = running_web_pods(client).await?;
        let series = query(&http, prometheus_url, promql, None).await.unwrap_or_else(|e| {
            last = e.to_string();
            vec![]
        });
        let seen: BTreeMap<String, String> = series
            .iter()
            .filter_map(|s| {
                Some((s["metric"]["pod"].as_str()?.to_owned(), s["metric"]["node"].as_str()?.to_owned()))
            })
            .collect();
        let nodes: BTreeSet<&String> = want.values().collect();
        if want.len() == 3 && want.iter().all(|(pod, node)| seen.get(pod) == Some(node)) {
            println!(
                "Prometheus has container_cpu_usage_seconds_total for all 3 web pods on {nodes:?} after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        last = format!("web pods {want:?}, Prometheus has {seen:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    bail!("within 60 s Prometheus did not return container_cpu_usage_seconds_total for every web pod: {last}")
}

pub async fn a_deleted_pods_series_leave_the_exporter(c: &Cluster) -> Result<()> {
    let client = &c.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (victim, node) = running_web_pods(client).await?.into_iter().next().context("no web pod")?;
    let exporter =
        exporters(client).await?.remove(&node).with_context(|| format!("no exporter on {node}"))?;
    let before = pods_in_scrape(&scrape(client, &exporter).await?, "default");
    ensure!(before.contains(&victim), "{exporter} does not export {victim} before the deletion: {before:?}");
    pods.delete(&victim, &DeleteParams::default()).await?;
    until_some(format!("pod {victim} gone from the API"), Duration::from_secs(60), || async {
        Ok::<_, kube::Error>(pods.get_opt(&victim).await?.is_none().then_some(()))
    })
    .await?;
    // The exporter's cache lasts 2 s: wait it out, then one scrape must not name the pod.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = pods_in_scrape(&scrape(client, &exporter).await?, "default");
    ensure!(!after.contains(&victim), "{exporter} still exports {victim} after it was deleted: {after:?}");
    Ok(())
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

pub async fn prometheus_data_survives_a_restart(c: &Cluster) -> Result<()> {
    let client = &c.client;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), node_exporter::NAMESPACE);
    let claim = claims.get(prometheus::CLAIM).await?;
    let volume = claim.spec.and_then(|s| s.volume_name).context("the claim names no volume")?;
    let pv = Api::<PersistentVolume>::all(client.clone()).get(&volume).await?;
    let class = pv.spec.as_ref().and_then(|s| s.storage_class_name.clone());
    ensure!(class.as_deref() == Some(local_path::STORAGE_CLASS), "volume {volume} has class {class:?}");
    let provisioned_by =
        pv.metadata.annotations.unwrap_or_default().get("pv.kubernetes.io/provisioned-by").cloned();
    ensure!(provisioned_by.is_some(), "volume {volume} was not dynamically provisioned");

    let http = prometheus_http(c)?;
    let base = c.prometheus_url()?;
    // A moment Prometheus has a sample of itself for; asked again after the restart.
    let promql = r#"up{job="prometheus"}"#;
    let moment = until_some("a sample of Prometheus's own `up`", Duration::from_secs(60), || async {
        let at = now();
        Ok::<_, anyhow::Error>((!query(&http, base, promql, Some(at)).await?.is_empty()).then_some(at))
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), node_exporter::NAMESPACE);
    let selector = format!("app.kubernetes.io/name={}", prometheus::NAME);
    let old: Vec<String> =
        pods.list(&ListParams::default().labels(&selector)).await?.items.iter().map(name).collect();
    for pod in &old {
        pods.delete(pod, &DeleteParams::default()).await?;
    }
    until_some("a new Prometheus pod answering", Duration::from_secs(120), || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        let fresh = list.items.iter().any(|p| running(p) && !old.contains(&name(p)));
        if !fresh {
            return Ok::<_, anyhow::Error>(None);
        }
        Ok(query(&http, base, "vector(1)", None).await.ok().map(|_| ()))
    })
    .await?;
    let kept = query(&http, base, promql, Some(moment)).await?;
    ensure!(
        !kept.is_empty(),
        "after its pod {old:?} was replaced, Prometheus has no sample at {moment:.0} any more: its data was lost"
    );
    Ok(())
}

/// node-exporter's Docker collector against the host's own dockerd, whose
/// containers are this cluster's nodes.
pub async fn docker_collector_reads_the_node_containers(c: &Cluster) -> Result<()> {
    use ::node_exporter::collector::{Collector as _, docker::DockerCollector};
    let docker = DockerCollector::connect("/var/run/docker.sock")?.negotiate().await?;
    let samples = docker.collect().await?;
    for node in c.nodes() {
        let (_, usage) = samples
            .containers
            .iter()
            .find(|(id, _)| id.container == node.name && id.pod.is_empty())
            .with_context(|| format!("the Docker collector does not report node container {}", node.name))?;
        ensure!(usage.cpu_seconds.is_some_and(|s| s > 0.0), "{}: no CPU time: {usage:?}", node.name);
        ensure!(
            usage.memory_working_set_bytes.is_some_and(|b| b > 0),
            "{}: no working set: {usage:?}",
            node.name
        );
        ensure!(
            samples.interfaces.iter().any(|i| i.container == node.name && i.rx_bytes > 0),
            "{}: no network counters",
            node.name
        );
    }
    Ok(())
}

/// Pod discovery finds every component that serves metrics, and each target is up.
pub async fn prometheus_scrapes_every_component(c: &Cluster) -> Result<()> {
    let http = prometheus_http(c)?;
    let prometheus_url = c.prometheus_url()?;
    // The UI a user opens at the printed address.
    let graph = format!("{prometheus_url}graph");
    let page = http.get(&graph).send().await?.error_for_status()?.text().await?;
    ensure!(
        page.contains("<title>Prometheus"),
        "{graph} is not Prometheus's UI: {}",
        &page[..page.len().min(200)]
    );
    let spec = vigil_e2e::test_spec();
    let cadvisor_job = spec.cadvisor_labels.job().to_owned();
    let nodes = spec.workers + 1;
    // Every container the add-on table's pods ask to be scraped for, with
    // its replica count, and the two components with jobs of their own.
    let mut wanted: Vec<(String, String, usize)> = vigil_e2e::addon_containers()
        .into_iter()
        .filter(|c| c.scraped_by_annotation)
        .map(|c| (ANNOTATED_PODS_JOB.to_owned(), c.name, c.replicas.on(nodes)))
        .collect();
    ensure!(!wanted.is_empty(), "no container of the add-on table is scraped by annotation");
    wanted.push((cadvisor_job, node_exporter::NAME.to_owned(), nodes));
    wanted.push((kube_state_metrics::NAME.to_owned(), kube_state_metrics::NAME.to_owned(), 1));
    until_some(
        &format!("Prometheus targets up: {wanted:?} (job, container, count)"),
        Duration::from_secs(60),
        || async {
            let up = query(&http, prometheus_url, "up == 1", None).await?;
            let mut by_job: BTreeMap<(String, String), usize> = BTreeMap::new();
            for series in &up {
                let job = series["metric"]["job"].as_str().unwrap_or_default();
                let container = series["metric"]["kubernetes_container"].as_str().unwrap_or_default();
                *by_job.entry((job.to_owned(), container.to_owned())).or_default() += 1;
            }
            let all = wanted.iter().all(|(job, c, n)| by_job.get(&(job.clone(), c.clone())) >= Some(n));
            if !all {
                println!("targets up so far: {by_job:?}");
            }
            Ok::<_, anyhow::Error>(all.then_some(()))
        },
    )
    .await?;
    Ok(())
}
