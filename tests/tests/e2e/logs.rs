//! The log store (issue 20, item 4) on the shared cluster:
//! - every node's vlagent ships (kube-proxy's lines come from each node);
//! - a line `web` logs for a request through the LoadBalancer is in
//!   VictoriaLogs within 10 s, with the pod's namespace, name, container
//!   and node as fields (vlagent on that pod's node shipped it);
//! - the log shippers' user may insert but not read, anyone else nothing;
//! - a vlagent pod replaced (deleted, as an eviction or a new image would)
//!   resumes where the old one stopped: no line is stored twice;
//! - a malformed LogsQL query gets VictoriaLogs' own error, naming it;
//! - a node's kubelet and containerd journal entries are in the store
//!   (the journal shipper beside vlagent): a pod that cannot start is in
//!   both, under the node's `_HOSTNAME` and each unit's `_SYSTEMD_UNIT`,
//!   and the shipper's metrics count deliveries and no failure.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};
use vigil::{
    addons::{self, credentials, victorialogs, vlagent, web},
    poll::until_some,
};
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

/// Asks `web` (through the LoadBalancer) for a fresh path, which it logs,
/// and returns the path and its line once VictoriaLogs has it (within
/// [`DELIVERY`]), with how long that took.
async fn web_logs_a_fresh_line(c: &Cluster) -> Result<(String, serde_json::Value, Duration)> {
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
    loop {
        if let Some(line) = c.logs(&query, 5).await?.into_iter().next() {
            return Ok((marker, line, logged.elapsed()));
        }
        if logged.elapsed() > DELIVERY {
            bail!("web's line for /{marker} is not in VictoriaLogs {DELIVERY:?} after the request");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn text_field(line: &serde_json::Value, name: &str) -> String {
    line[name].as_str().unwrap_or_default().to_owned()
}

pub async fn a_line_web_logs_is_in_victorialogs_within_10_s(c: &Cluster) -> Result<()> {
    every_node_ships(c).await?;
    let (marker, line, took) = web_logs_a_fresh_line(c).await?;
    println!("web's line was found {took:?} after the request");
    let field = |name: &str| text_field(&line, name);
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

pub async fn a_replaced_vlagent_sends_no_line_twice(c: &Cluster) -> Result<()> {
    let (first, line, _) = web_logs_a_fresh_line(c).await?;
    let node = text_field(&line, "kubernetes.pod_node_name");
    let agents: Api<Pod> = Api::namespaced(c.client.clone(), vlagent::NAMESPACE);
    let on_node = ListParams::default()
        .labels(&format!("app.kubernetes.io/name={}", vlagent::NAME))
        .fields(&format!("spec.nodeName={node}"));
    let old =
        agents.list(&on_node).await?.items.into_iter().next().context("no vlagent pod on the line's node")?;
    let old_uid = old.metadata.uid.clone().unwrap_or_default();
    agents.delete(&old.metadata.name.unwrap_or_default(), &DeleteParams::default()).await?;
    until_some(format!("a new Ready vlagent on {node}"), Duration::from_secs(120), || async {
        let pods = agents.list(&on_node).await?.items;
        Ok::<_, kube::Error>(
            pods.iter()
                .any(|p| {
                    p.metadata.uid.as_deref() != Some(old_uid.as_str()) && vigil::conditions::pod_ready(p)
                })
                .then_some(()),
        )
    })
    .await?;
    // The new vlagent has read the node's files once a line logged after
    // it started, on that node, is in (the LoadBalancer picks the pod:
    // a bounded number of tries).
    let mut caught_up = false;
    for _ in 0..30 {
        let (_, line, _) = web_logs_a_fresh_line(c).await?;
        if text_field(&line, "kubernetes.pod_node_name") == node {
            caught_up = true;
            break;
        }
    }
    ensure!(caught_up, "30 requests through the LoadBalancer and none reached web on {node}");
    let copies = c.logs(&format!("{first:?}"), 10).await?.len();
    ensure!(
        copies == 1,
        "web's line for /{first} is stored {copies} times after {node}'s vlagent was replaced"
    );
    Ok(())
}

/// How long the journal shipper may take: it reads every second, and the
/// kubelet logs a failed start after its first retry.
const JOURNAL_DELIVERY: Duration = Duration::from_secs(60);

/// A pod pinned to `node` whose container cannot start (its command does
/// not exist): containerd logs its sandbox by the pod's name, and the
/// kubelet logs the failed start naming the pod.
fn unstartable_pod(name: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            security_context: Some(addons::non_root_pod(65534, None)),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: "absent".into(),
                image: Some(vigil_e2e::images().base()),
                image_pull_policy: Some("Never".into()),
                command: Some(vec!["/no-such-command".into()]),
                security_context: Some(addons::locked_down()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn a_nodes_kubelet_and_containerd_journals_are_in_victorialogs(c: &Cluster) -> Result<()> {
    let node = c.spec.worker_name(0);
    let name = fresh_marker("vigil-e2e-journal");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), web::NAMESPACE);
    pods.create(&PostParams::default(), &unstartable_pod(&name, &node)).await?;
    let found = async {
        for unit in vlagent::JOURNAL_UNITS {
            let query = format!("_HOSTNAME:{node:?} AND _SYSTEMD_UNIT:{unit:?} AND {name:?}");
            until_some(
                format!("{unit} on {node} naming {name} in VictoriaLogs"),
                JOURNAL_DELIVERY,
                || async { Ok::<_, anyhow::Error>(c.logs(&query, 1).await?.into_iter().next()) },
            )
            .await
            .with_context(|| {
                format!("the journal shipper on {node} did not ship {unit}'s entries: {query}")
            })?;
        }
        anyhow::Ok(())
    }
    .await;
    let _ = pods.delete(&name, &DeleteParams::default()).await;
    found?;
    // Its own account: batches delivered, none refused.
    let query = format!(
        "sum by (outcome) (journal_shipper_deliveries_total{{kubernetes_node={node:?}, kubernetes_container={:?}}})",
        vlagent::JOURNAL_SHIPPER
    );
    let http = c.http()?;
    let outcomes =
        until_some("the journal shipper's metrics in Prometheus", Duration::from_secs(60), || async {
            let rows = super::monitoring::query(&http, c.prometheus_url()?, &query, None).await?;
            Ok::<_, anyhow::Error>((!rows.is_empty()).then_some(rows))
        })
        .await?;
    let count = |outcome: &str| {
        outcomes
            .iter()
            .filter(|row| row["metric"]["outcome"] == outcome)
            .filter_map(|row| row["value"][1].as_str()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    ensure!(count("delivered") >= 1.0, "no delivered batch counted on {node}: {outcomes:?}");
    ensure!(count("refused") == 0.0, "the store refused batches from {node}: {outcomes:?}");
    Ok(())
}
