//! The alerter's loop. Reflectors (kube-runtime watchers) keep Nodes, the
//! kubelets' Leases, Pods, Deployments and StatefulSets in memory, each
//! trimmed to what the decisions read ([`crate::trim`]); whenever one
//! changes, and once a second for Leases that stop changing, the leader
//! runs the tracker over a snapshot and acts on what changed: the
//! incident's `NodeIncident` status, an Event on the Node, the notice
//! queued for every sink.
//!
//! Fenced: every status write and every send is preceded by a check that
//! this replica still leads ([`Leadership::leading`]). While the API server
//! does not answer (Paused), the leader keeps its state and acts on nothing
//! but the control-plane incident, which only the replica that led when
//! contact was lost may report; the writes it owes wait in `dirty`. Only
//! when another replica is seen holding the Lease (deposed) is the state
//! dropped. A replica that becomes leader rebuilds its state from the
//! `NodeIncident`s, so nothing decided or owed is lost with the old leader.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        coordination::v1::Lease,
        core::v1::{Node, ObjectReference, Pod},
    },
    jiff::{SignedDuration, Timestamp},
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
    retention,
    takeover::{self, Owed, Takeover},
    tracker::{Change, Feed, Settings, Tracker, View},
    trim,
};

/// The field manager of the alerter's writes.
const MANAGER: &str = "vigil-alerter";
/// Where kubelets keep their Leases.
const NODE_LEASES: &str = "kube-node-lease";
/// How often Leases are looked at when nothing changes (a stale Lease is the absence of events).
const TICK: Duration = Duration::from_secs(1);
/// The longest Event note the API takes is 1 kB; kept under it.
const NOTE_BYTES: usize = 1000;
/// How often closed incidents past their retention are deleted.
const COLLECT_EVERY: Duration = Duration::from_secs(600);
/// The longest the loop waits on one request of its own (a status write,
/// an Event, the list that rebuilds its state): a hung API server must not
/// stop it from turning, or it could neither notice the outage nor stay live.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the reflectors may take to list everything at start. Past it
/// the process ends (and the kubelet restarts it): its elector could
/// otherwise hold the Lease for a controller that never acts.
const FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API: {what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the watch of {0} did not complete its first list within 2 minutes (is the API server reachable, and may the alerter list and watch {0}?)"
    )]
    Watch(&'static str),
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<Metrics>,
    pub leadership: Leadership,
    /// Who publishes the Events (the pod's name).
    pub reporter: Reporter,
    /// Beaten once per turn of the loop: `/live` fails when it stops.
    pub heartbeat: Heartbeat,
    /// The API server counts as unreachable when no Lease request of the
    /// elector's got an answer for this long.
    pub contact_window: Duration,
    /// How long closed incidents are kept, and how many at most.
    pub retention: retention::Retention,
}

/// The reflectors' stores.
struct Stores {
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
}

/// Whether the kubelets' Lease watch delivers: listed once, and no error
/// since its last event. (Its Leases change every renewal, so a healthy
/// watch is never quiet for long; the other watches' objects may not change
/// for minutes, so their events say nothing of their health.)
#[derive(Default)]
struct LeaseWatch {
    listed: bool,
    broken: bool,
}

/// Starts a reflector for `api`, its objects trimmed by `trim`; `changed`
/// is notified on every event, and `health` (if given) follows its errors.
fn reflect<K>(
    api: Api<K>,
    trim: fn(&mut K),
    changed: Arc<Notify>,
    health: Option<Arc<Mutex<LeaseWatch>>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, trim::watch_config()).modify(trim).default_backoff().reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let healthy = match &event {
                Err(e) => {
                    tracing::warn!(error = %e, "watch error; the watcher backs off and resumes");
                    Some(false)
                }
                Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                    Some(true)
                }
                Ok(_) => None,
            };
            if let (Some(health), Some(healthy)) = (&health, healthy) {
                let mut health = health.lock().expect("not poisoned");
                health.listed |= healthy;
                health.broken = !healthy;
            }
            changed.notify_one();
        }
    });
    store
}

/// `request`, or an error once it has not answered within `limit`.
async fn bounded<T>(
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or_else(|_| Err(kube::Error::Service(format!("no answer within {limit:?}").into())))
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// What the alerter's view of the cluster is worth right now: [`Feed`],
/// kept across turns so that `since` says when it last changed.
struct FeedClock {
    feed: Feed,
}

impl FeedClock {
    /// `healthy`: the API server answers and the Lease watch delivers.
    /// `last_contact`: when the API server last answered.
    fn update(&mut self, healthy: bool, now: Timestamp, last_contact: Timestamp) -> Feed {
        self.feed = match (self.feed, healthy) {
            (Feed::Lost { .. }, true) => Feed::Live { since: now },
            // Lost since the last answer: the silence began then.
            (Feed::Live { .. }, false) => Feed::Lost { since: last_contact.min(now) },
            (feed, _) => feed,
        };
        self.feed
    }
}

/// Whether a reflector's first list completed by `deadline`.
async fn listed<E>(deadline: tokio::time::Instant, ready: impl Future<Output = Result<(), E>>) -> bool {
    matches!(tokio::time::timeout_at(deadline, ready).await, Ok(Ok(())))
}

/// `instant` as a wall-clock time (for the tracker, which reasons in Timestamps).
fn wall(instant: tokio::time::Instant, now: Timestamp) -> Timestamp {
    let ago = SignedDuration::try_from(instant.elapsed()).unwrap_or(SignedDuration::ZERO);
    now.checked_sub(ago).unwrap_or(now)
}

pub async fn run(mut ctx: Context, mut records: mpsc::UnboundedReceiver<Record>) -> Result<(), Error> {
    let client = ctx.client.clone();
    let changed = Arc::new(Notify::new());
    let lease_watch = Arc::new(Mutex::new(LeaseWatch::default()));
    let stores = Stores {
        nodes: reflect(Api::all(client.clone()), trim::node, changed.clone(), None),
        leases: reflect(
            Api::namespaced(client.clone(), NODE_LEASES),
            trim::lease,
            changed.clone(),
            Some(lease_watch.clone()),
        ),
        pods: reflect(Api::all(client.clone()), trim::pod, changed.clone(), None),
        deployments: reflect(Api::all(client.clone()), trim::deployment, changed.clone(), None),
        stateful_sets: reflect(Api::all(client.clone()), trim::stateful_set, changed.clone(), None),
    };
    let deadline = tokio::time::Instant::now() + FIRST_LIST_TIMEOUT;
    for (store_ready, what) in [
        (listed(deadline, stores.nodes.wait_until_ready()).await, "nodes"),
        (listed(deadline, stores.leases.wait_until_ready()).await, "leases in kube-node-lease"),
        (listed(deadline, stores.pods.wait_until_ready()).await, "pods"),
        (listed(deadline, stores.deployments.wait_until_ready()).await, "deployments"),
        (listed(deadline, stores.stateful_sets.wait_until_ready()).await, "statefulsets"),
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
    // Lost until the first turn finds the API server answering and the Lease watch delivering.
    let mut feed_clock = FeedClock { feed: Feed::Lost { since: Timestamp::now() } };
    let mut collected = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = changed.notified() => {}
            _ = tick.tick() => {}
            () = ctx.leadership.changed() => {}
            Some(record) = records.recv() => {
                if let Some(leader) = state.as_mut() {
                    leader.record(record);
                }
            }
        }
        ctx.heartbeat.beat();
        let now = Timestamp::now();
        // Followed on every turn, leading or not, so that a replica taking
        // over knows since when its view has been whole.
        let contact = ctx.leadership.api_contact();
        let answering = contact.is_some_and(|c| c.elapsed() < ctx.contact_window);
        let watching = {
            let watch = lease_watch.lock().expect("not poisoned");
            watch.listed && !watch.broken
        };
        let last_contact = contact.map(|c| wall(c, now)).unwrap_or(now);
        let feed = feed_clock.update(answering && watching, now, last_contact);
        let standing = ctx.leadership.standing();
        ctx.metrics.leader.set(ctx.leadership.leading() as i64);
        match standing {
            Standing::Following(holder) => {
                if let Some(mut leader) = state.take() {
                    tracing::info!(holder = ?holder, "deposed: another replica holds the Lease; its queue is dropped (it rebuilds it from the NodeIncidents)");
                    ctx.outbox.clear();
                    // A control-plane incident paged while cut off is known
                    // to no other replica: this one closes it (the gate lets
                    // that resolved out).
                    if let Some(notice) = leader.tracker.close_outage(now).and_then(|c| c.notice) {
                        tracing::info!(incident = %notice.incident, "the API server answers again: the control-plane incident paged while cut off is resolved");
                        ctx.outbox.enqueue(None, &notice, 0, ctx.outbox.expiry());
                    }
                }
                continue;
            }
            // Cut off before it ever led: nothing to keep, nothing to do.
            Standing::Paused if state.is_none() => continue,
            Standing::Paused | Standing::Leading => {}
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
            feed,
        };
        let changes = leader.tracker.observe(now, &view);
        for change in changes {
            leader.apply(&ctx, &recorder, change).await;
        }
        ctx.metrics.open_incidents.set(leader.tracker.open().count() as i64);
        leader.flush(&ctx, &incidents).await;
        if collected.elapsed() >= COLLECT_EVERY && ctx.leadership.leading() {
            collected = tokio::time::Instant::now();
            collect(&ctx, &incidents, leader, now).await;
        }
    }
}

/// Deletes the closed incidents past their retention, and forgets them.
async fn collect(ctx: &Context, incidents: &Api<NodeIncident>, leader: &mut Leader, now: Timestamp) {
    match bounded(REQUEST_TIMEOUT * 6, retention::sweep(incidents, &ctx.retention, now)).await {
        Ok(deleted) => {
            for name in deleted {
                tracing::info!(incident = %name, "deleted: closed and past its retention");
                leader.statuses.remove(&name);
                leader.versions.remove(&name);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot collect the old NodeIncidents; trying again later"),
    }
}

/// What the leader holds: the tracker, each incident's status as it should
/// be, the resourceVersion of our last write, and the statuses still owed.
struct Leader {
    tracker: Tracker,
    statuses: BTreeMap<String, (String, NodeIncidentStatus)>,
    versions: BTreeMap<String, String>,
    dirty: BTreeSet<String>,
}

impl Leader {
    /// Rebuilds the state from the `NodeIncident`s: open incidents continue,
    /// every notice not yet delivered (nor given up on) is queued again with
    /// its attempts so far, under the same idempotency key, and what is
    /// firing is handed to the Alertmanager sinks to keep re-sending.
    async fn restore(ctx: &Context, incidents: &Api<NodeIncident>) -> Result<Self, Error> {
        let list = bounded(REQUEST_TIMEOUT, incidents.list(&ListParams::default()))
            .await
            .map_err(kube_err("list nodeincidents"))?;
        let Takeover { known, statuses, versions, firing, owed } =
            takeover::take_over(list.items, &ctx.outbox.sink_names(), ctx.outbox.expiry(), Timestamp::now());
        for (name, latest) in &firing {
            ctx.outbox.firing(name, Some(latest));
        }
        for Owed { sink, notice, attempts, expires_in } in &owed {
            tracing::info!(incident = %notice.incident, sink = %sink, key = %notice.id, attempts, "taking over an undelivered notice");
            ctx.outbox.enqueue(Some(sink), notice, *attempts, *expires_in);
        }
        let tracker = Tracker::new(ctx.settings.clone(), known);
        tracing::info!(open = tracker.open().count(), "leading: state rebuilt from the NodeIncidents");
        Ok(Leader { tracker, statuses, versions, dirty: BTreeSet::new() })
    }

    /// Keeps the change in the incident's status (written by [`Leader::flush`]),
    /// publishes its Event, queues its notice.
    async fn apply(&mut self, ctx: &Context, recorder: &Recorder, change: Change) {
        let Change { incident, notice } = change;
        let name = incident.name.clone();
        let (_, status) =
            self.statuses.entry(name.clone()).or_insert_with(|| (incident.node.clone(), Default::default()));
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
        self.dirty.insert(name.clone());
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
            ctx.outbox.firing(&name, Some(&notice));
            if ctx.leadership.leading()
                && tokio::time::timeout(REQUEST_TIMEOUT, publish(recorder, &notice)).await.is_err()
            {
                tracing::warn!(node = %notice.node, "the Event was not published: no answer in time");
            }
        }
        .instrument(span)
        .await;
    }

    /// Keeps a delivery's outcome in its incident's status.
    fn record(&mut self, record: Record) {
        let Some((_, status)) = self.statuses.get_mut(&record.incident) else { return };
        let d = record.delivery;
        match status.deliveries.iter_mut().find(|x| x.sink == d.sink && x.key == d.key) {
            Some(existing) => *existing = d,
            None => status.deliveries.push(d),
        }
        self.dirty.insert(record.incident);
    }

    /// Writes the statuses still owed, while this replica leads: each guarded
    /// by the resourceVersion of our last write, so a write based on an old
    /// read fails (409) rather than overwriting; it is then read again and
    /// retried on the next turn.
    async fn flush(&mut self, ctx: &Context, incidents: &Api<NodeIncident>) {
        for name in std::mem::take(&mut self.dirty) {
            if !ctx.leadership.leading() {
                self.dirty.insert(name);
                continue;
            }
            let Some((node, status)) = self.statuses.get(&name) else { continue };
            let written =
                bounded(REQUEST_TIMEOUT, write(incidents, &name, node, status, self.versions.get(&name)))
                    .await;
            match written {
                Ok(version) => {
                    self.versions.insert(name, version);
                }
                Err(e) => {
                    tracing::warn!(incident = %name, error = %e, "cannot write the NodeIncident yet; retrying");
                    if let kube::Error::Api(s) = &e
                        && s.code == 409
                        && let Ok(current) = bounded(REQUEST_TIMEOUT, incidents.get(&name)).await
                    {
                        self.versions
                            .insert(name.clone(), current.metadata.resource_version.unwrap_or_default());
                    }
                    self.dirty.insert(name);
                }
            }
        }
        // Resolved incidents need nothing more once written.
        let open: BTreeSet<&str> = self.tracker.open().map(|i| i.name.as_str()).collect();
        let dirty = &self.dirty;
        self.statuses.retain(|name, (_, status)| {
            open.contains(name.as_str())
                || dirty.contains(name)
                || status.deliveries.iter().any(|d| d.state == DeliveryState::Pending)
        });
        let statuses = &self.statuses;
        self.versions.retain(|name, _| statuses.contains_key(name));
    }
}

/// Creates the NodeIncident if it has no version yet, then applies its
/// status with the version as a precondition. The new resourceVersion.
async fn write(
    incidents: &Api<NodeIncident>,
    name: &str,
    node: &str,
    status: &NodeIncidentStatus,
    version: Option<&String>,
) -> Result<String, kube::Error> {
    let version = match version {
        Some(version) => version.clone(),
        None => {
            let object = NodeIncident::new(name, NodeIncidentSpec { node: node.to_owned() });
            // A 409 (it exists) goes back to the caller, which reads its
            // version and writes on a later turn, once leadership is checked again.
            incidents
                .create(&PostParams::default(), &object)
                .await?
                .metadata
                .resource_version
                .unwrap_or_default()
        }
    };
    #[derive(Debug, Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Metadata<'a> {
        name: &'a str,
        resource_version: String,
    }
    #[derive(Debug, Serialize)]
    #[serde(rename_all = "camelCase")]
    struct StatusPatch<'a> {
        api_version: String,
        kind: &'static str,
        metadata: Metadata<'a>,
        status: &'a NodeIncidentStatus,
    }
    let patch = StatusPatch {
        api_version: NodeIncident::api_version(&()).into_owned(),
        kind: "NodeIncident",
        metadata: Metadata { name, resource_version: version },
        status,
    };
    let written =
        incidents.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(written.metadata.resource_version.unwrap_or_default())
}

/// An Event on the Node, as `kubectl describe node` shows it.
async fn publish(recorder: &Recorder, notice: &Notice) {
    let (type_, reason) = match notice.kind {
        NoticeKind::Suspect => (EventType::Warning, "NodeSuspect"),
        NoticeKind::NodeDown => (EventType::Warning, "NodeDown"),
        NoticeKind::NotRescheduled => (EventType::Warning, "PodsNotRescheduled"),
        NoticeKind::Rescheduled => (EventType::Normal, "PodsRescheduled"),
        NoticeKind::Resolved => (EventType::Normal, "NodeRecovered"),
        NoticeKind::NodeDeleted => (EventType::Normal, "NodeIncidentClosed"),
        NoticeKind::ControlPlaneUnreachable => (EventType::Warning, "ControlPlaneUnreachable"),
    };
    // A control-plane incident concerns no Node: its NodeIncident tells it.
    if notice.node.is_empty() {
        return;
    }
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
            flaps: 0,
            trace_id: String::new(),
            logs_url: None,
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
