//! The alerter (issue 10), on the shared cluster: two replicas on two
//! nodes with one leader; a node whose Ready condition is set to False
//! through the API gives a signed `node-down` webhook, an Event, a
//! `NodeIncident`, and Alertmanager's VigilNodeDown alert at its own
//! receiver; when the kubelet sets it back, `resolved` follows, each notice
//! under one idempotency key (delivered at least once). And the HA case:
//! the leader's node killed.

use std::{collections::BTreeMap, time::Duration};

use alerter::{
    config::signing_key,
    crd::{DeliveryState, NodeIncident},
    sinks::sign,
};
use anyhow::{Context as _, Result, ensure};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Node, Pod, Secret},
        events::v1::Event,
    },
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use tokio::sync::OnceCell;
use vigil::{
    addons::{
        alerter::{LEASE, NAME, WEBHOOK_SECRET_KEY},
        alertmanager,
        node_exporter::NAMESPACE,
    },
    conditions::{deployment_rolled_out, pod_ready},
    poll::until_some,
    provider::{Fault, Power, fault},
};
use vigil_e2e::{
    ALERTER_RECEIVER_PORT, ALERTMANAGER_RECEIVER_PORT, Cluster, Received, Receiver, node_running,
};

/// The receivers, started once and kept for the rest of the run.
static RECEIVERS: OnceCell<(Receiver, Receiver)> = OnceCell::const_new();

pub(crate) async fn receivers() -> Result<&'static (Receiver, Receiver)> {
    RECEIVERS
        .get_or_try_init(|| async {
            Ok::<_, anyhow::Error>((
                Receiver::start(ALERTER_RECEIVER_PORT).await?,
                Receiver::start(ALERTMANAGER_RECEIVER_PORT).await?,
            ))
        })
        .await
}

pub async fn two_replicas_on_two_nodes_one_leading(c: &Cluster) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), NAMESPACE);
    ensure!(
        deployment_rolled_out(deployments.get_opt(NAME).await?.as_ref(), 2).is_ok(),
        "the alerter is not rolled out with 2 replicas"
    );
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NAMESPACE);
    let list = pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/name={NAME}"))).await?;
    let placed: BTreeMap<String, String> = list
        .items
        .iter()
        .filter(|p| pod_ready(p))
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
            )
        })
        .collect();
    let nodes: std::collections::BTreeSet<&String> = placed.values().collect();
    ensure!(placed.len() == 2 && nodes.len() == 2, "expected 2 Ready replicas on 2 nodes: {placed:?}");
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), NAMESPACE);
    let holder = until_some("a leader holding the alerter's Lease", Duration::from_secs(30), || async {
        let lease = leases.get_opt(LEASE).await?;
        Ok::<_, kube::Error>(lease.and_then(|l| l.spec?.holder_identity))
    })
    .await?;
    ensure!(placed.contains_key(&holder), "the Lease is held by {holder:?}, not one of {placed:?}");
    Ok(())
}

/// One request of the alerter's about a node, its signature verified.
pub(crate) struct Seen {
    pub kind: String,
    /// The webhook-id: one per notice, the same on every attempt.
    pub id: String,
    /// Answered 2xx: delivered, as far as the alerter knows.
    pub accepted: bool,
}

/// The key the alerter signs webhooks with, from its Secret.
pub(crate) async fn webhook_key(c: &Cluster) -> Result<Vec<u8>> {
    let secret = Api::<Secret>::namespaced(c.client.clone(), NAMESPACE).get(NAME).await?;
    let value = secret.data.and_then(|d| d.get(WEBHOOK_SECRET_KEY).cloned()).context("no signing secret")?;
    Ok(signing_key("secret", std::str::from_utf8(&value.0)?)?)
}

/// The alerter's requests about `node` at the receiver, with valid signatures.
pub(crate) fn notices(received: &[Received], node: &str, key: &[u8]) -> Result<Vec<Seen>> {
    let mut out = vec![];
    for r in received.iter().filter(|r| r.body["node"] == node) {
        let id = r.header("webhook-id").context("no webhook-id")?.to_owned();
        let timestamp: i64 = r.header("webhook-timestamp").context("no webhook-timestamp")?.parse()?;
        let expected = sign(key, &id, timestamp, &r.raw);
        ensure!(
            r.header("webhook-signature") == Some(expected.as_str()),
            "{id}: the signature does not verify ({:?} vs {expected})",
            r.header("webhook-signature")
        );
        out.push(Seen {
            kind: r.body["type"].as_str().unwrap_or_default().to_owned(),
            id,
            accepted: r.accepted(),
        });
    }
    Ok(out)
}

/// The kinds of the notices delivered, in order, as a receiver that
/// deduplicates by `webhook-id` keeps them. Delivery is at-least-once (a
/// takeover may send again what the old leader sent): a second delivery is
/// allowed, but only under the same id, which names the incident and the
/// kind, and every refused notice must have been delivered later.
pub(crate) fn deduplicated(seen: &[Seen]) -> Result<Vec<String>> {
    let mut kinds = vec![];
    let mut ids: Vec<&str> = vec![];
    for s in seen.iter().filter(|s| s.accepted) {
        ensure!(
            s.id.ends_with(&format!("/{}", s.kind)),
            "the webhook-id {} does not name its incident and kind {}",
            s.id,
            s.kind
        );
        if !ids.contains(&s.id.as_str()) {
            ids.push(&s.id);
            kinds.push(s.kind.clone());
        }
    }
    for refused in seen.iter().filter(|s| !s.accepted) {
        ensure!(
            ids.contains(&refused.id.as_str()),
            "{} ({}) was refused and never delivered afterwards",
            refused.kind,
            refused.id
        );
    }
    Ok(kinds)
}

/// Alertmanager's notifications about `node`'s VigilNodeDown: their statuses.
pub(crate) fn alertmanager_states(alertmanager: &Receiver, node: &str) -> Vec<String> {
    alertmanager
        .received()
        .iter()
        .flat_map(|r| r.body["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["labels"]["alertname"] == "VigilNodeDown" && a["labels"]["node"] == node)
        .map(|a| a["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub(crate) async fn kubelet(c: &Cluster, node: &str, action: &str) -> Result<()> {
    c.provider.node(node).run(&["systemctl", action, "kubelet"], None).await?;
    Ok(())
}

/// Stops `node`'s kubelet, so that nothing posts Ready meanwhile, and sets
/// its Ready condition to False through the API. The caller starts the
/// kubelet again, whatever this returns.
pub(crate) async fn hold_not_ready(c: &Cluster, node: &str) -> Result<()> {
    kubelet(c, node, "stop").await?;
    let now = Timestamp::now().to_string();
    let patch = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "False", "reason": "VigilE2E",
        "message": "set by the end-to-end test", "lastTransitionTime": now, "lastHeartbeatTime": now,
    }]}});
    let nodes: Api<Node> = Api::all(c.client.clone());
    nodes.patch_status(node, &PatchParams::default(), &Patch::Strategic(&patch)).await?;
    Ok(())
}

pub async fn a_node_set_not_ready_is_down_then_resolved(c: &Cluster) -> Result<()> {
    let (alerter, alertmanager) = receivers().await?;
    let key = webhook_key(c).await?;
    // Not Alertmanager's node: held NotReady past the tuned 5 s toleration,
    // that node loses its pods, and an Alertmanager started elsewhere
    // knows nothing of the firing alert it would have to resolve.
    let alertmanager_node = node_running(&c.client, NAMESPACE, alertmanager::NAME).await?;
    let victim = (0..c.spec.workers)
        .map(|i| c.spec.worker_name(i))
        .find(|w| *w != alertmanager_node)
        .context("no worker without Alertmanager")?;
    // The kubelet is paused while the node is held NotReady (it would post
    // Ready again at its next status update), longer than Alertmanager's
    // group wait, so that Alertmanager's first notification has it firing.
    let held = hold_not_ready(c, &victim).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    kubelet(c, &victim, "start").await?;
    held?;

    // node-down, signed, then resolved once the kubelet posts Ready again.
    let seen =
        until_some(format!("node-down then resolved for {victim}"), Duration::from_secs(90), || async {
            let seen = notices(&alerter.received(), &victim, &key)?;
            Ok::<_, anyhow::Error>(seen.iter().any(|s| s.kind == "resolved" && s.accepted).then_some(seen))
        })
        .await?;
    let order = deduplicated(&seen)?;
    ensure!(
        order.first().map(String::as_str) == Some("node-down"),
        "the first notice about {victim} is not node-down: {order:?}"
    );
    let node_down = seen.iter().find(|s| s.kind == "node-down").map(|s| s.id.clone()).unwrap_or_default();

    // The incident, in the cluster: resolved, every delivery delivered.
    let incidents: Api<NodeIncident> = Api::all(c.client.clone());
    let incident =
        until_some("the NodeIncident resolved with its deliveries", Duration::from_secs(30), || async {
            let list = incidents.list(&ListParams::default()).await?;
            Ok::<_, kube::Error>(list.items.into_iter().find(|i| {
                i.spec.node == victim
                    && i.status.as_ref().is_some_and(|s| {
                        s.incident.as_ref().is_some_and(|i| i.resolved_at.is_some())
                            && !s.deliveries.is_empty()
                            && s.deliveries.iter().all(|d| d.state == DeliveryState::Delivered)
                    })
            }))
        })
        .await?;
    let status = incident.status.context("no status")?;
    ensure!(
        status.notices.iter().any(|n| n.id == node_down),
        "the incident does not hold the node-down notice"
    );

    // An Event on the Node.
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let list = events.list(&ListParams::default()).await?;
    ensure!(
        list.items.iter().any(|e| e.reason.as_deref() == Some("NodeDown")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(victim.as_str())),
        "no NodeDown Event on {victim}"
    );

    // Alertmanager routed VigilNodeDown to its receiver, firing then resolved.
    until_some("Alertmanager's VigilNodeDown, firing and resolved", Duration::from_secs(90), || async {
        let states = alertmanager_states(alertmanager, &victim);
        Ok::<_, anyhow::Error>(
            (states.contains(&"firing".to_owned()) && states.contains(&"resolved".to_owned())).then_some(()),
        )
    })
    .await?;
    Ok(())
}

/// HA: the node holding the alerter's leader dies. The standby takes the
/// Lease over and delivers the notices about that very node, under one key each.
pub async fn losing_the_leaders_node_loses_no_notice(c: &Cluster) -> Result<()> {
    let (alerter, _) = receivers().await?;
    let key = webhook_key(c).await?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NAMESPACE);
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), NAMESPACE);
    let workers: Vec<String> = (0..c.spec.workers).map(|i| c.spec.worker_name(i)).collect();
    // The control plane is not broken here: a leader there is moved off it
    // by deleting its pod, so that the standby (on a worker) takes over.
    let (leader, node) =
        until_some("the alerter's leader on a worker, with a standby", Duration::from_secs(180), || async {
            let rolled_out = deployment_rolled_out(deployments.get_opt(NAME).await?.as_ref(), 2).is_ok();
            let holder = leases.get_opt(LEASE).await?.and_then(|l| l.spec?.holder_identity);
            let Some(holder) = holder.filter(|_| rolled_out) else { return Ok(None) };
            let node = pods.get_opt(&holder).await?.and_then(|p| p.spec?.node_name);
            match node {
                Some(node) if workers.contains(&node) => Ok(Some((holder, node))),
                Some(_) => {
                    pods.delete(&holder, &DeleteParams::default()).await?;
                    Ok(None)
                }
                None => Ok::<_, kube::Error>(None),
            }
        })
        .await?;
    let already = alerter.received().len();
    fault(c.provider.as_ref(), &c.spec, &node, Fault::Power(Power::Kill)).await?;
    let down = until_some(
        format!("node-down about {node}, the leader's node"),
        Duration::from_secs(120),
        || async {
            let seen = notices(&alerter.received()[already..], &node, &key)?;
            let holder = leases.get_opt(LEASE).await?.and_then(|l| l.spec?.holder_identity);
            Ok::<_, anyhow::Error>(seen.iter().any(|s| s.kind == "node-down" && s.accepted).then_some(holder))
        },
    )
    .await;
    fault(c.provider.as_ref(), &c.spec, &node, Fault::Power(Power::Start)).await?;
    let holder = down?;
    ensure!(
        holder.as_deref().is_some_and(|h| h != leader),
        "the Lease is still held by {leader}, on the dead node {node}"
    );
    let seen = until_some(format!("resolved about {node}"), Duration::from_secs(180), || async {
        let seen = notices(&alerter.received()[already..], &node, &key)?;
        Ok::<_, anyhow::Error>(seen.iter().any(|s| s.kind == "resolved" && s.accepted).then_some(seen))
    })
    .await?;
    deduplicated(&seen)?;
    // Back to two replicas for what follows.
    until_some("the alerter back to 2 replicas", Duration::from_secs(180), || async {
        Ok::<_, kube::Error>(deployment_rolled_out(deployments.get_opt(NAME).await?.as_ref(), 2).ok())
    })
    .await?;
    Ok(())
}

/// A node goes down while the API server restarts (killed; the kubelet
/// starts it again): the alerter's watches resume and rebuild their state,
/// and `node-down` and `resolved` still arrive, each under one key.
pub async fn an_api_server_restart_loses_no_transition(c: &Cluster) -> Result<()> {
    let (alerter, _) = receivers().await?;
    let key = webhook_key(c).await?;
    let victim = c.spec.worker_name(0);
    let already = alerter.received().len();
    // The kubelet stops renewing its Lease, the node is set NotReady, and
    // the API server is killed right after: the transition lands while the
    // alerter's watches are broken, or just before.
    let held = hold_not_ready(c, &victim).await;
    let control_plane = c.provider.node(&c.spec.control_plane_name());
    let killed = control_plane.run(&["pkill", "-x", "kube-apiserver"], None).await;
    let down = until_some(
        format!("node-down about {victim} across the restart"),
        Duration::from_secs(120),
        || async {
            let seen = notices(&alerter.received()[already..], &victim, &key)?;
            Ok::<_, anyhow::Error>(seen.iter().any(|s| s.kind == "node-down" && s.accepted).then_some(()))
        },
    )
    .await;
    kubelet(c, &victim, "start").await?;
    held?;
    killed.context("killing kube-apiserver on the control plane")?;
    down?;
    let seen = until_some(format!("resolved about {victim}"), Duration::from_secs(120), || async {
        let seen = notices(&alerter.received()[already..], &victim, &key)?;
        Ok::<_, anyhow::Error>(seen.iter().any(|s| s.kind == "resolved" && s.accepted).then_some(seen))
    })
    .await?;
    deduplicated(&seen)?;
    Ok(())
}
