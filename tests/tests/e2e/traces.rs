//! Traces and logs (issue 12) on the shared cluster:
//! - a request to `web` through the LoadBalancer with a known `traceparent`
//!   is in Jaeger under that trace id, as a server span of `web` that is a
//!   child of the caller's span, and `vigil traces show` draws it (text
//!   and SVG) and refuses an id that is not one;
//! - every component exports (Jaeger lists each as a service);
//! - `vigil export logs` holds every node's kubelet journal and the log of
//!   every `web` pod, with an index that names them.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use clap::Parser as _;
use vigil::progress::Progress;
use vigil::{app, cli::Cli};
use vigil_e2e::Cluster;

/// A trace id of this run's own (not a constant: Jaeger keeps earlier runs' traces
/// only in memory, but a rerun on the same cluster must not find an old one).
fn fresh_trace_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:032x}", nanos ^ (u128::from(std::process::id()) << 64))
}

pub async fn a_traceparent_through_the_load_balancer_is_in_jaeger(c: &Cluster) -> Result<()> {
    let trace = fresh_trace_id();
    let parent = "00f067aa0ba902b7";
    let answer = reqwest::Client::new()
        .get(c.web_url()?)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    ensure!(answer.status() == 200, "web answered {}", answer.status());
    let found = c
        .jaeger_trace(&trace, Duration::from_secs(60), |t| t.spans().iter().any(|s| s.service == "web"))
        .await?;
    let web: Vec<_> = found.spans().into_iter().filter(|s| s.service == "web").collect();
    ensure!(
        web.iter().any(|s| s.operation == "GET /" && s.parent.as_deref() == Some(parent)),
        "no `GET /` span of web whose parent is the caller's span {parent}: {web:?}"
    );

    // `vigil traces show` draws it: in the terminal, and as SVG.
    let waterfall = vigil::traces::text(&vigil::traces::fetch(&c.client, &trace).await?);
    ensure!(
        waterfall.starts_with(&format!("trace {trace}: ")) && waterfall.contains("web: GET /"),
        "`vigil traces show {trace}` does not show web's span:\n{waterfall}"
    );
    let dir = tempfile::tempdir()?;
    let svg = dir.path().join("trace.svg");
    let svg_arg = svg.display().to_string();
    let name = c.spec.name.as_str();
    app::run(Cli::try_parse_from(["vigil", "--name", name, "traces", "show", &trace, "--svg", &svg_arg])?)
        .await?;
    let drawn = std::fs::read_to_string(&svg)?;
    ensure!(drawn.starts_with("<svg") && drawn.contains("web: GET /"), "{svg_arg} has no bar for web's span");
    // An id that is not one is refused before anything is asked.
    let refused =
        app::run(Cli::try_parse_from(["vigil", "--name", name, "traces", "show", "../api/services"])?)
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
    ensure!(refused.contains("is not a trace id"), "`vigil traces show ../api/services`: {refused:?}");
    Ok(())
}

pub async fn every_component_exports_its_spans(c: &Cluster) -> Result<()> {
    let url = format!("{}api/services", c.jaeger_url()?);
    // Every container of the add-on table that exports spans under a service name.
    let mut wanted: Vec<String> =
        vigil_e2e::addon_containers().into_iter().filter_map(|c| c.traced_as).collect();
    wanted.sort_unstable();
    wanted.dedup();
    anyhow::ensure!(!wanted.is_empty(), "no container of the add-on table exports spans");
    let http = c.http()?;
    let mut services: Vec<String> = vec![];
    let mut last_error = None;
    // probe-server and node-exporter trace a share of their requests: minutes at most.
    for _ in 0..60 {
        // The checks before this one take nodes down: until Jaeger's pod is
        // Ready again MetalLB announces no address for it (no route to host).
        let answer: reqwest::Result<serde_json::Value> =
            async { http.get(&url).send().await?.error_for_status()?.json().await }.await;
        let body = match answer {
            Ok(body) => body,
            Err(e) => {
                last_error = Some(e);
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        services = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        if wanted.iter().all(|w| services.contains(w)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let last_error =
        last_error.map(|e| format!("; the last failed request to {url}: {e:#}")).unwrap_or_default();
    anyhow::bail!("Jaeger's services are {services:?}; wanted all of {wanted:?}{last_error}")
}

pub async fn export_logs_holds_every_kubelet_journal_and_web_log(c: &Cluster) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let export =
        vigil::app::export_logs(c.provider.as_ref(), &c.spec, dir.path(), &Progress::default()).await?;
    let index = std::fs::read_to_string(export.folder.join("index.md")).context("index.md")?;
    for node in c.nodes() {
        let path = format!("nodes/{}/kubelet.log", node.name);
        let journal = std::fs::read_to_string(export.folder.join(&path)).with_context(|| path.clone())?;
        ensure!(journal.contains("kubelet"), "{path} holds no kubelet line ({} bytes)", journal.len());
        ensure!(index.contains(&format!("]({path})")), "index.md does not list {path}");
        let inspect = format!("nodes/{}/inspect.json", node.name);
        ensure!(export.folder.join(&inspect).exists(), "no {inspect}");
    }
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(c.client.clone(), vigil::addons::web::NAMESPACE);
    let web = pods.list(&kube::api::ListParams::default().labels("app=web")).await?.items;
    ensure!(!web.is_empty(), "no web pods");
    for pod in web {
        let name = pod.metadata.name.unwrap_or_default();
        let path = format!("pods/{}/{name}/web.log", vigil::addons::web::NAMESPACE);
        let log = std::fs::read_to_string(export.folder.join(&path)).with_context(|| path.clone())?;
        ensure!(log.contains("listening"), "{path} does not hold web's start line: {log:.200}");
        ensure!(index.contains(&format!("]({path})")), "index.md does not list {path}");
    }
    ensure!(
        export.folder.join("cluster/events.txt").exists()
            && export.folder.join("cluster/describe-nodes.txt").exists()
    );
    ensure!(export.missing.is_empty(), "a healthy cluster, yet not collected: {:?}", export.missing);
    Ok(())
}
