//! The alerter's loop. Reflectors (kube-runtime watchers) keep Nodes, the
//! kubelets' Leases, Pods, Deployments and StatefulSets in memory; whenever
//! one changes, and once a second for Leases that stop changing, the leader
//! runs the tracker over a snapshot and acts on what changed: the incident's
//! `NodeIncident` status, an Event on the Node, the notice queued for every
//! sink. A replica that becomes leader first rebuilds its state from the
//! `NodeIncident`s, so nothing decided or owed is lost with the old leader.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        coordination::v1::Lease,
        core::v1::{Node, ObjectReference, Pod},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{
        WatchStreamExt,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument as _;
use vigil_telemetry::admin::Heartbeat;

use crate::{
    crd::{Delivery, DeliveryState, NodeIncident, NodeIncidentSpec, NodeIncidentStatus},
    delivery::{Outbox, Record},
    leader::{Leadership, Standing},
    metrics::{KindLabels, Metrics},
    model::{Notice, NoticeKind},
    tracker::{Change, Settings, Tracker, View},
};

/// The field manager of the alerter's writes.
const MANAGER: &str = "vigil-alerter";
/// Where kubelets keep their Leases.
const NODE_LEASES: &str = "kube-node-lease";
/// How often Leases are looked at when nothing changes (a stale Lease is the absence of events).
const TICK: Duration = Duration::from_secs(1);
/// The longest Event note the API takes is 1 kB; kept under it.
const NOTE_BYTES: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API: {what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "a watch stopped before its first list (is the API server reachable, and may the alerter list {0}?)"
    )]
    Watch(&'static str),
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<Metrics>,
    pub leadership: Leadership,
    /// Beaten once per turn of the loop; `/live` fails when it stops.
    pub heartbeat: Heartbeat,
    /// Who publishes the Events (the pod's name).
    pub reporter: Reporter,
}

/// The reflectors' stores.
struct Stores {
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
}

/// Starts a reflector for `api`; `changed` is notified on every event.
fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer).touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watch error; the watcher backs off and resumes");
            }
            changed.notify_one();
        }
    });
    store
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

pub async fn run(mut ctx: Context, mut records: mpsc::UnboundedReceiver<Record>) -> Result<(), Error> {
    let client = ctx.client.clone();
    let changed = Arc::new(Notify::new());
    let stores = Stores {
        nodes: reflect(Api::all(client.clone()), changed.clone()),
        leases: reflect(Api::namespaced(client.clone(), NODE_LEASES), changed.clone()),
        pods: reflect(Api::all(client.clone()), changed.clone()),
        deployments: reflect(Api::all(client.clone()), changed.clone()),
        stateful_sets: reflect(Api::all(client.clone()), changed.clone()),
    };
    for (store_ready, what) in [
        (stores.nodes.wait_until_ready().await.is_ok(), "nodes"),
        (stores.leases.wait_until_ready().await.is_ok(), "leases in kube-node-lease"),
        (stores.pods.wait_until_ready().await.is_ok(), "pods"),
        (stores.deployments.wait_until_ready().await.is_ok(), "deployments"),
        (stores.stateful_sets.wait_until_ready().await.is_ok(), "statefulsets"),
    ] {
        if !store_ready {
            return Err(Error::Watch(what));
        }
    }
    tracing::info!("reflectors ready");
    let incidents: Api<NodeIncident> = Api::all(client.clone());
    let recorder = Recorder::new(client.clone(), ctx.reporter.clone());
    let mut state: Option<Leader> = None;
    let mut tick = tokio::time::interval(TICK);
    loop {
        ctx.heartbeat.beat();
        tokio::select! {
            () = changed.notified() => {}
            _ = tick.tick() => {}
            () = ctx.leadership.changed() => {}
            Some(record) = records.recv() => {
                if let Some(leader) = state.as_mut() {
                    leader.record(&incidents, record).await;
                }
                continue;
            }
        }
        let standing = ctx.leadership.standing();
        let leading = standing == Standing::Leading;
        ctx.metrics.leader.set(leading as i64);
        if !leading {
            // Paused (the API unreachable, nobody else seen holding it) keeps the state.
            if matches!(standing, Standing::Following(_)) && state.take().is_some() {
                ctx.outbox.clear();
            }
            continue;
        }
        if state.is_none() {
            match Leader::restore(&ctx, &incidents).await {
                Ok(leader) => state = Some(leader),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the NodeIncidents yet; retrying");
                    continue;
                }
            }
        }
        let leader = state.as_mut().expect("restored above");
        let (nodes, leases, pods) = (stores.nodes.state(), stores.leases.state(), stores.pods.state());
        let (deployments, stateful_sets) = (stores.deployments.state(), stores.stateful_sets.state());
        let view = View {
            nodes: nodes.iter().map(Arc::as_ref).collect(),
            leases: leases.iter().map(Arc::as_ref).collect(),
            pods: pods.iter().map(Arc::as_ref).collect(),
            deployments: deployments.iter().map(Arc::as_ref).collect(),
            stateful_sets: stateful_sets.iter().map(Arc::as_ref).collect(),
        };
        let changes = leader.tracker.observe(Timestamp::now(), &view);
        for change in changes {
            leader.apply(&ctx, &incidents, &recorder, change).await;
        }
        ctx.metrics.open_incidents.set(leader.tracker.open().count() as i64);
    }
}

/// What the leader holds: the tracker and each incident's status as last written.
struct Leader {
    tracker: Tracker,
    statuses: BTreeMap<String, NodeIncidentStatus>,
}

fn params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

impl Leader {
    /// Rebuilds the state from the `NodeIncident`s: open incidents continue,
    /// and every notice not yet delivered (nor given up on) is queued again
    /// with its attempts so far, under the same idempotency key.
    async fn restore(ctx: &Context, incidents: &Api<NodeIncident>) -> Result<Self, Error> {
        let list = incidents.list(&ListParams::default()).await.map_err(kube_err("list nodeincidents"))?;
        let mut statuses = BTreeMap::new();
        let mut open = vec![];
        let sinks = ctx.outbox.sink_names();
        let now = Timestamp::now();
        for item in list.items {
            let name = item.metadata.name.clone().unwrap_or_default();
            let status = item.status.unwrap_or_default();
            // Tracker::new leaves the resolved ones out.
            if let Some(incident) = status.incident.clone() {
                open.push(incident);
            }
            for notice in &status.notices {
                for sink in &sinks {
                    let record = status.deliveries.iter().find(|d| d.sink == *sink && d.key == notice.id);
                    if record.is_some_and(|d| d.state != DeliveryState::Pending) {
                        continue;
                    }
                    let sent: Timestamp = notice.time.parse().unwrap_or(now);
                    let left = ctx.outbox.expiry().saturating_sub(now.duration_since(sent).unsigned_abs());
                    let attempts = record.map(|d| d.attempts).unwrap_or(0);
                    tracing::info!(incident = %name, sink = %sink, key = %notice.id, attempts, "taking over an undelivered notice");
                    ctx.outbox.enqueue(Some(sink), notice, attempts, left);
                }
            }
            statuses.insert(name, status);
        }
        tracing::info!(open = open.len(), "leading: state rebuilt from the NodeIncidents");
        Ok(Leader { tracker: Tracker::new(ctx.settings.clone(), open), statuses })
    }

    /// Writes the change, publishes its Event, queues its notice.
    async fn apply(
        &mut self,
        ctx: &Context,
        incidents: &Api<NodeIncident>,
        recorder: &Recorder,
        change: Change,
    ) {
        let Change { incident, notice } = change;
        let name = incident.name.clone();
        let status = self.statuses.entry(name.clone()).or_default();
        let created = status.incident.is_none();
        status.incident = Some(incident.clone());
        if let Some(notice) = &notice {
            status.notices.push(notice.clone());
            for sink in ctx.outbox.sink_names() {
                status.deliveries.push(Delivery {
                    sink,
                    notice: notice.kind,
                    key: notice.id.clone(),
                    state: DeliveryState::Pending,
                    attempts: 0,
                    last_error: None,
                    delivered_at: None,
                });
            }
        }
        if created {
            let object = NodeIncident::new(&name, NodeIncidentSpec { node: incident.node.clone() });
            if let Err(e) = incidents.create(&PostParams::default(), &object).await
                && !matches!(&e, kube::Error::Api(s) if s.code == 409)
            {
                tracing::error!(incident = %name, error = %e, "cannot create the NodeIncident");
            }
        }
        write_status(incidents, &name, status).await;
        let Some(notice) = notice else { return };
        ctx.metrics.transitions.get_or_create(&KindLabels { kind: notice.kind.as_str() }).inc();
        if let Some(seconds) = notice.seconds_to_rescheduled {
            ctx.metrics.time_to_rescheduled.observe(seconds);
        }
        match notice.kind {
            NoticeKind::NodeDown => crate::trace::detected(&incident),
            NoticeKind::Rescheduled | NoticeKind::NotRescheduled => {
                crate::trace::verified(&incident, &notice)
            }
            _ => {}
        }
        let span = crate::trace::notice(&notice);
        async {
            tracing::info!(incident = %name, node = %incident.node, kind = notice.kind.as_str(), summary = %notice.summary, "notice");
            // Queued first: the Event is for people, the notice is what is owed.
            ctx.outbox.enqueue(None, &notice, 0, ctx.outbox.expiry());
            publish(recorder, &notice).await;
        }
        .instrument(span)
        .await;
    }

    /// Keeps a delivery's outcome in its incident's status.
    async fn record(&mut self, incidents: &Api<NodeIncident>, record: Record) {
        let Some(status) = self.statuses.get_mut(&record.incident) else { return };
        let d = record.delivery;
        match status.deliveries.iter_mut().find(|x| x.sink == d.sink && x.key == d.key) {
            Some(existing) => *existing = d,
            None => status.deliveries.push(d),
        }
        write_status(incidents, &record.incident, status).await;
    }
}

async fn write_status(incidents: &Api<NodeIncident>, name: &str, status: &NodeIncidentStatus) {
    #[derive(Debug, Serialize)]
    #[serde(rename_all = "camelCase")]
    struct StatusPatch<'a> {
        api_version: String,
        kind: &'static str,
        status: &'a NodeIncidentStatus,
    }
    let patch = StatusPatch {
        api_version: NodeIncident::api_version(&()).into_owned(),
        kind: "NodeIncident",
        status,
    };
    if let Err(e) = incidents.patch_status(name, &params(), &Patch::Apply(&patch)).await {
        tracing::error!(incident = %name, error = %e, "cannot write the NodeIncident's status");
    }
}

/// An Event on the Node, as `kubectl describe node` shows it.
async fn publish(recorder: &Recorder, notice: &Notice) {
    let (type_, reason) = match notice.kind {
        NoticeKind::Suspect => (EventType::Warning, "NodeSuspect"),
        NoticeKind::NodeDown => (EventType::Warning, "NodeDown"),
        NoticeKind::NotRescheduled => (EventType::Warning, "PodsNotRescheduled"),
        NoticeKind::Rescheduled => (EventType::Normal, "PodsRescheduled"),
        NoticeKind::Resolved => (EventType::Normal, "NodeRecovered"),
    };
    let node = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(notice.node.clone()),
        // Events of cluster-scoped objects live in `default`.
        namespace: None,
        ..Default::default()
    };
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(event_note(notice)),
        action: "Alert".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &node).await {
        tracing::warn!(node = %notice.node, error = %e, "cannot publish the Event");
    }
}

/// The Event's note: the summary, cut to what the API takes.
fn event_note(notice: &Notice) -> String {
    cut_at_char(&notice.summary, NOTE_BYTES).to_owned()
}

/// `text`'s longest prefix of at most `max_bytes` bytes that ends on a
/// character boundary (`String::truncate` panics inside a character).
pub fn cut_at_char(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let end = (0..=max_bytes).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_cut_on_a_character_boundary() {
        // 999 ASCII bytes, then 2-byte characters: byte 1000 falls inside one.
        let notice = Notice {
            kind: NoticeKind::NodeDown,
            id: Notice::key("w2-1", NoticeKind::NodeDown),
            incident: "w2-1".into(),
            cluster: "vigil".into(),
            node: "w2".into(),
            summary: format!("{}{}", "n".repeat(999), "é".repeat(10)),
            time: "2026-01-01T00:00:00Z".into(),
            lease_renewed_at: None,
            not_ready_since: None,
            detected_at: None,
            seconds_to_rescheduled: None,
            owners: vec![],
            trace_id: String::new(),
        };
        assert_eq!(event_note(&notice), "n".repeat(999));
        // 4-byte characters throughout: 1000 is a boundary, 1001..1003 are not.
        let emoji = "🔥".repeat(300);
        assert_eq!(cut_at_char(&emoji, NOTE_BYTES).len(), 1000);
        assert_eq!(cut_at_char(&emoji, 1003).len(), 1000);
        assert_eq!(cut_at_char("short", NOTE_BYTES), "short");
        assert_eq!(cut_at_char("é", 1), "");
    }
}
