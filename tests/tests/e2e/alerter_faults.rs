//! The alerter under faults (issue 24), on the shared cluster:
//! - the API server frozen for 15 s (SIGSTOP, then SIGCONT) is one
//!   `control-plane-unreachable` incident, opened and resolved, and no node
//!   is suspect or down: a silent control plane is not three dead nodes,
//!   nor are the Unknowns the node controller marks after it;
//! - Alertmanager restarted while a node is held down shows the alert
//!   firing again afterwards: the alerter re-sends firing alerts, as
//!   Prometheus does, rather than posting them once.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams},
};
use serde_json::Value;
use vigil::{
    addons::{alertmanager, node_exporter::NAMESPACE},
    conditions::{deployment_rolled_out, node_ready},
    poll::{until, until_some},
};
use vigil_e2e::{Cluster, Received, node_running};

use crate::alerting::{hold_not_ready, kubelet, notices, receivers, webhook_key};

/// How long the API server is frozen: longer than the alerter's leader
/// Lease and its control-plane threshold, shorter than anything that would
/// make the node controller act on its own.
const FREEZE: Duration = Duration::from_secs(15);

/// The notices of a kind at the receiver, as (incident, node) pairs.
fn of_kind(received: &[Received], kind: &str) -> Vec<(String, String)> {
    received
        .iter()
        .filter(|r| r.body["type"] == kind)
        .map(|r| {
            (
                r.body["incident"].as_str().unwrap_or_default().to_owned(),
                r.body["node"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Sends `signal` to the control plane's kube-apiserver.
async fn signal_api_server(c: &Cluster, signal: &str) -> Result<()> {
    let control_plane = c.provider.node(&c.spec.control_plane_name());
    control_plane
        .run(&["pkill", signal, "-x", "kube-apiserver"], None)
        .await
        .with_context(|| format!("pkill {signal} kube-apiserver on the control plane"))?;
    Ok(())
}

pub async fn a_frozen_api_server_is_one_control_plane_incident(c: &Cluster) -> Result<()> {
    let (alerter, _) = receivers().await?;
    let key = webhook_key(c).await?;
    let already = alerter.received().len();
    signal_api_server(c, "-STOP").await?;
    tokio::time::sleep(FREEZE).await;
    // Whatever happened above, the API server runs again.
    signal_api_server(c, "-CONT").await?;

    let incident = until_some(
        "a control-plane-unreachable incident, then its resolved notice",
        Duration::from_secs(120),
        || async {
            let received = alerter.received();
            let received = &received[already..];
            let opened = of_kind(received, "control-plane-unreachable");
            let Some((incident, _)) = opened.first().cloned() else { return Ok::<_, anyhow::Error>(None) };
            let resolved = of_kind(received, "resolved").into_iter().any(|(i, _)| i == incident);
            Ok(resolved.then_some(incident))
        },
    )
    .await?;
    // The cluster settles (the controller manager and the scheduler may
    // have restarted, having lost their own Leases), and a late page about
    // a node would have come by then.
    let nodes: Api<Node> = Api::all(c.client.clone());
    until_some("every node Ready after the freeze", Duration::from_secs(90), || async {
        let list = nodes.list(&ListParams::default()).await?;
        Ok::<_, kube::Error>(list.items.iter().all(node_ready).then_some(()))
    })
    .await?;
    // Past the alerter's `stableFor` (20 s): a node held as newly down
    // after the outage and still down would be paged by then.
    tokio::time::sleep(Duration::from_secs(25)).await;

    let received = alerter.received();
    let received = &received[already..];
    let opened: Vec<String> =
        of_kind(received, "control-plane-unreachable").into_iter().map(|(i, _)| i).collect();
    let mut distinct = opened.clone();
    distinct.dedup();
    ensure!(distinct == [incident.clone()], "one control-plane incident expected, got {opened:?}");
    let suspects = of_kind(received, "suspect");
    ensure!(suspects.is_empty(), "the freeze made nodes suspect: {suspects:?}");
    // With `tuned` timings (an 8 s grace) the node controller may mark
    // nodes Unknown once the API server is back, for the kubelets' updates
    // it missed; that is the same outage, not a node's.
    let down = of_kind(received, "node-down");
    ensure!(down.is_empty(), "the freeze paged nodes down: {down:?}");
    // Every request about it is signed as the others are.
    for node in c.nodes().iter().map(|n| n.name.clone()) {
        notices(received, &node, &key)?;
    }
    Ok(())
}

/// The alerts Alertmanager holds now (its API, through its proxy).
async fn alertmanager_alerts(c: &Cluster) -> Result<Vec<Value>> {
    let url = format!("{}api/v2/alerts", c.url(alertmanager::NAME)?);
    Ok(c.http()?.get(&url).send().await?.error_for_status()?.json().await?)
}

fn firing_node_down(alerts: &[Value], node: &str) -> bool {
    alerts.iter().any(|a| {
        a["labels"]["alertname"] == "VigilNodeDown"
            && a["labels"]["node"] == node
            && a["status"]["state"] == "active"
    })
}

pub async fn alertmanager_restarted_keeps_a_held_down_node_firing(c: &Cluster) -> Result<()> {
    let (alerter, _) = receivers().await?;
    let key = webhook_key(c).await?;
    // Not Alertmanager's node, which would take Alertmanager down with it.
    let alertmanager_node = node_running(&c.client, NAMESPACE, alertmanager::NAME).await?;
    let victim = (0..c.spec.workers)
        .map(|i| c.spec.worker_name(i))
        .find(|w| *w != alertmanager_node)
        .context("no worker without Alertmanager")?;
    let already = alerter.received().len();
    let held = async {
        hold_not_ready(c, &victim).await?;
        until_some(format!("node-down about {victim}"), Duration::from_secs(60), || async {
            let seen = notices(&alerter.received()[already..], &victim, &key)?;
            Ok::<_, anyhow::Error>(seen.iter().any(|s| s.kind == "node-down" && s.accepted).then_some(()))
        })
        .await?;
        until_some("VigilNodeDown firing in Alertmanager", Duration::from_secs(60), || async {
            Ok::<_, anyhow::Error>(firing_node_down(&alertmanager_alerts(c).await?, &victim).then_some(()))
        })
        .await?;
        // `vigil alerts` shows it, as Alertmanager's old UI would have.
        let listed = vigil::alerts::text(&vigil::alerts::fetch(&c.client).await?);
        ensure!(
            listed.lines().any(|l| l.starts_with("active ")
                && l.contains(" VigilNodeDown ")
                && l.contains(&format!("node={victim}"))),
            "`vigil alerts` does not show VigilNodeDown about {victim}: {listed}"
        );
        // Alertmanager keeps alerts in memory only: a new pod starts empty.
        let pods: Api<Pod> = Api::namespaced(c.client.clone(), NAMESPACE);
        let selector = format!("app.kubernetes.io/name={}", alertmanager::NAME);
        pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector)).await?;
        let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), NAMESPACE);
        // What the property needs is a new pod, however long it takes to
        // start on a node busy with the held-down one's pods; the bound
        // only ends a hung run, and its message says what each pod was doing.
        until("a new Alertmanager pod Ready", Duration::from_secs(240), Duration::from_secs(1), || async {
            let rolled = deployment_rolled_out(
                deployments.get_opt(alertmanager::NAME).await.map_err(|e| e.to_string())?.as_ref(),
                1,
            );
            let list =
                pods.list(&ListParams::default().labels(&selector)).await.map_err(|e| e.to_string())?;
            let fresh = list.items.iter().all(|p| p.metadata.deletion_timestamp.is_none());
            if rolled.is_ok() && fresh {
                return Ok(());
            }
            let states: Vec<String> = list.items.iter().map(pod_state).collect();
            Err(format!("rolled out: {rolled:?}; pods: {}", states.join("; ")))
        })
        .await?;
        // Re-sent within the alerter's resend interval (vigil sets 30 s).
        until_some("VigilNodeDown firing again after the restart", Duration::from_secs(90), || async {
            Ok::<_, anyhow::Error>(firing_node_down(&alertmanager_alerts(c).await?, &victim).then_some(()))
        })
        .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    kubelet(c, &victim, "start").await?;
    held?;
    until_some(format!("resolved about {victim}"), Duration::from_secs(120), || async {
        let seen = notices(&alerter.received()[already..], &victim, &key)?;
        Ok::<_, anyhow::Error>(seen.iter().any(|s| s.kind == "resolved" && s.accepted).then_some(()))
    })
    .await?;
    Ok(())
}

/// A pod as a person reads it in a timeout: name, node, phase, Ready,
/// terminating, and each container waiting or not ready, with why.
fn pod_state(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let ready =
        status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
    let containers: Vec<String> = status
        .container_statuses
        .unwrap_or_default()
        .iter()
        .filter(|c| !c.ready)
        .map(|c| {
            let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.clone());
            format!("{} not ready ({})", c.name, waiting.unwrap_or_else(|| "running".into()))
        })
        .collect();
    format!(
        "{} on {} {} ready={ready}{}{}",
        pod.metadata.name.as_deref().unwrap_or("?"),
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("no node"),
        status.phase.as_deref().unwrap_or("?"),
        if pod.metadata.deletion_timestamp.is_some() { " terminating" } else { "" },
        if containers.is_empty() { String::new() } else { format!(" [{}]", containers.join(", ")) }
    )
}
