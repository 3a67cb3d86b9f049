//! The alerter (issue 10), on the shared cluster: two replicas on two
//! nodes with one leader; a node whose Ready condition is set to False
//! through the API gives a signed `node-down` webhook, an Event, a
//! `NodeIncident`, and Alertmanager's VigilNodeDown alert at its own
//! receiver; when the kubelet sets it back, `resolved` follows, each notice
//! once per idempotency key.

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
    api::{ListParams, Patch, PatchParams},
};
use tokio::sync::OnceCell;
use vigil::{
    addons::{
        alerter::{LEASE, NAME, WEBHOOK_SECRET_KEY},
        node_exporter::NAMESPACE,
    },
    conditions::{deployment_rolled_out, pod_ready},
    poll::until_some,
};
use vigil_e2e::{ALERTER_RECEIVER_PORT, ALERTMANAGER_RECEIVER_PORT, Cluster, Received, Receiver};

/// The receivers, started once and kept for the rest of the run.
static RECEIVERS: OnceCell<(Receiver, Receiver)> = OnceCell::const_new();

async fn receivers() -> Result<&'static (Receiver, Receiver)> {
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

/// The alerter's notices about `node` at the receiver, with valid signatures.
fn notices(received: &[Received], node: &str, key: &[u8]) -> Result<Vec<(String, String)>> {
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
        out.push((r.body["type"].as_str().unwrap_or_default().to_owned(), id));
    }
    Ok(out)
}

pub async fn a_node_set_not_ready_is_down_then_resolved(c: &Cluster) -> Result<()> {
    let (alerter, alertmanager) = receivers().await?;
    let secret = Api::<Secret>::namespaced(c.client.clone(), NAMESPACE).get(NAME).await?;
    let value = secret.data.and_then(|d| d.get(WEBHOOK_SECRET_KEY).cloned()).context("no signing secret")?;
    let key = signing_key("secret", std::str::from_utf8(&value.0)?)?;
    let victim = c.spec.worker_name(1);
    let nodes: Api<Node> = Api::all(c.client.clone());
    // The kubelet is paused while the node is held NotReady (it would post
    // Ready again at its next status update), longer than Alertmanager's
    // group wait, so that Alertmanager's first notification has it firing.
    let machine = c.provider.node(&victim);
    machine.run(&["systemctl", "stop", "kubelet"], None).await?;
    let now = Timestamp::now().to_string();
    let patch = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "False", "reason": "VigilE2E",
        "message": "set by the end-to-end test", "lastTransitionTime": now, "lastHeartbeatTime": now,
    }]}});
    let patched = nodes.patch_status(&victim, &PatchParams::default(), &Patch::Strategic(&patch)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    machine.run(&["systemctl", "start", "kubelet"], None).await?;
    patched?;

    // node-down, signed, then resolved once the kubelet posts Ready again.
    let kinds =
        until_some(format!("node-down then resolved for {victim}"), Duration::from_secs(90), || async {
            let seen = notices(&alerter.received(), &victim, &key)?;
            let kinds: Vec<String> = seen.iter().map(|(kind, _)| kind.clone()).collect();
            Ok::<_, anyhow::Error>(kinds.contains(&"resolved".to_owned()).then_some(seen))
        })
        .await?;
    let order: Vec<&str> = kinds.iter().map(|(kind, _)| kind.as_str()).collect();
    ensure!(
        order.first() == Some(&"node-down"),
        "the first notice about {victim} is not node-down: {order:?}"
    );
    let mut keys: Vec<&str> = kinds.iter().map(|(_, id)| id.as_str()).collect();
    let all = keys.len();
    keys.dedup();
    ensure!(keys.len() == all, "a notice arrived twice: {kinds:?}");

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
        status.notices.iter().any(|n| n.id == kinds[0].1),
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
        let states: Vec<String> = alertmanager
            .received()
            .iter()
            .flat_map(|r| r.body["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["labels"]["alertname"] == "VigilNodeDown" && a["labels"]["node"] == victim)
            .map(|a| a["status"].as_str().unwrap_or_default().to_owned())
            .collect();
        Ok::<_, anyhow::Error>(
            (states.contains(&"firing".to_owned()) && states.contains(&"resolved".to_owned())).then_some(()),
        )
    })
    .await?;
    Ok(())
}
