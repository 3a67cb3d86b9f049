//! The log store (issue 20, item 4) on the shared cluster:
//! - every node's vlagent ships (kube-proxy's lines come from each node);
//! - a line `web` logs for a request through the LoadBalancer is in
//!   VictoriaLogs within 10 s, with the pod's namespace, name, container
//!   and node as fields (vlagent on that pod's node shipped it);
//! - the log shippers' user may insert but not read, anyone else nothing;
//! - a malformed LogsQL query gets VictoriaLogs' own error, naming it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use vigil::addons::{credentials, victorialogs, web};
use vigil_e2e::Cluster;

/// A path no earlier run has asked web for: `prefix` and the time in nanoseconds.
pub(crate) fn fresh_marker(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{prefix}-{nanos:x}")
}

/// What the issue asks of the pipeline: from `web`'s write to a query hit.
const DELIVERY: Duration = Duration::from_secs(10);

/// Every node's vlagent ships: kube-proxy, which runs on every node and
/// logs as it starts, has lines from each.
async fn every_node_ships(c: &Cluster) -> Result<()> {
    let wanted: Vec<String> = c.nodes().into_iter().map(|n| n.name).collect();
    let query = "kubernetes.container_name:kube-proxy | stats by (kubernetes.pod_node_name) count() lines";
    let mut shipping = vec![];
    for _ in 0..30 {
        shipping = c
            .logs(query, 100)
            .await?
            .iter()
            .filter_map(|row| row["kubernetes.pod_node_name"].as_str().map(str::to_owned))
            .collect();
        if wanted.iter().all(|n| shipping.contains(n)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    bail!("VictoriaLogs holds kube-proxy's lines from {shipping:?} only; every node's are wanted: {wanted:?}")
}

pub async fn a_line_web_logs_is_in_victorialogs_within_10_s(c: &Cluster) -> Result<()> {
    every_node_ships(c).await?;
    let marker = fresh_marker("vigil-e2e-log");
    let answer = reqwest::Client::new()
        .get(format!("{}{marker}", c.web_url()?))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let logged = Instant::now();
    // web logs every request it answers, a 404 too.
    ensure!(answer.status() == 404, "web answered {} for /{marker}", answer.status());
    let query = format!("{marker:?}");
    let line = loop {
        if let Some(line) = c.logs(&query, 5).await?.into_iter().next() {
            break line;
        }
        if logged.elapsed() > DELIVERY {
            bail!("web's line for /{marker} is not in VictoriaLogs {DELIVERY:?} after the request");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("web's line was found {:?} after the request", logged.elapsed());
    let field = |name: &str| line[name].as_str().unwrap_or_default().to_owned();
    ensure!(field("kubernetes.pod_namespace") == web::NAMESPACE, "{line}");
    ensure!(field("kubernetes.container_name") == web::NAME, "{line}");
    let pod = field("kubernetes.pod_name");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), web::NAMESPACE);
    let node = pods.get(&pod).await.with_context(|| format!("the line names pod {pod:?}: {line}"))?;
    let node = node.spec.and_then(|s| s.node_name).unwrap_or_default();
    ensure!(
        field("kubernetes.pod_node_name") == node,
        "{pod} runs on {node}, the line says otherwise: {line}"
    );
    ensure!(field("_msg").contains(&marker), "{line}");
    Ok(())
}

pub async fn only_vigil_reads_the_logs_and_the_shippers_only_insert(c: &Cluster) -> Result<()> {
    let base = c.logs_url()?;
    let search = format!("{base}select/logsql/query?query=*&limit=1");
    let anonymous = c.anonymous_http()?.get(&search).send().await?;
    ensure!(anonymous.status() == 401, "a search without credentials: {}", anonymous.status());
    let shippers = credentials::read(&c.client, credentials::LOGS_SECRET).await?;
    let http = c.anonymous_http()?;
    let as_shipper =
        http.get(&search).basic_auth(&shippers.username, Some(&shippers.password)).send().await?;
    ensure!(as_shipper.status() == 403, "a search as the log shippers: {}", as_shipper.status());
    let other_insert = http
        .post(format!("{base}insert/jsonline"))
        .basic_auth(&shippers.username, Some(&shippers.password))
        .header("Content-Type", "application/stream+json")
        .body(r#"{"_msg":"forged"}"#)
        .send()
        .await?;
    ensure!(other_insert.status() == 403, "the shippers' POST /insert/jsonline: {}", other_insert.status());
    // The UI itself, as `up` prints it, with vigil's credentials.
    let ui = c.http()?.get(c.url(victorialogs::NAME)?).send().await?;
    let (status, body) = (ui.status(), ui.text().await?);
    ensure!(
        status == 200 && body.contains("<html") && body.contains("VictoriaLogs"),
        "the UI: {status} {body:.300}"
    );
    Ok(())
}

pub async fn a_malformed_logsql_query_gets_victorialogs_own_error(c: &Cluster) -> Result<()> {
    let err = c.logs("web AND (", 1).await.expect_err("a malformed query is refused");
    let text = format!("{err:#}");
    ensure!(text.contains("400") && text.contains("cannot parse `query`"), "{text}");
    Ok(())
}
