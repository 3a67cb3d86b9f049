//! The drill's timeline as a pure function of what its watches saw: each
//! object in, with when the drill saw it (seconds from the fault); the
//! milestones and a typed verdict out. `run` only breaks the node, feeds
//! the watches here and stops when [`Timeline::failover_done`], then
//! [`Timeline::resolved`]. Condition, notice and delivery times come from the
//! objects themselves; the drill's own clock only where they carry none.

use std::collections::{BTreeMap, BTreeSet};

use alerter_api::{
    crd::{DeliveryState, NodeIncident},
    model::NoticeKind,
};
use k8s_openapi::{
    api::core::v1::{Node, Pod},
    jiff::Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::conditions::{pod_ready, ready_condition};

/// The milestones, in the order they are expected.
pub const LEASE_STALE: &str = "Lease stale";
pub const ADDRESS_MOVED: &str = "LoadBalancer address moved";
pub const NOT_READY: &str = "NotReady";
pub const FIRST_NOTIFICATION: &str = "first notification delivered";
pub const NODE_DOWN: &str = "node-down delivered";
pub const EVICTED: &str = "pods evicted";
pub const SCHEDULED: &str = "replacements scheduled";
pub const ALL_READY: &str = "3/3 Ready elsewhere";
pub const RESCHEDULED: &str = "rescheduled delivered";
pub const NOT_RESCHEDULED: &str = "not-rescheduled delivered";
pub const RESOLVED: &str = "resolved delivered";

pub const ORDER: [&str; 11] = [
    LEASE_STALE,
    ADDRESS_MOVED,
    NOT_READY,
    FIRST_NOTIFICATION,
    NODE_DOWN,
    EVICTED,
    SCHEDULED,
    ALL_READY,
    RESCHEDULED,
    NOT_RESCHEDULED,
    RESOLVED,
];

/// What the alerter decided about the broken node's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Rescheduled,
    NotRescheduled,
}

impl Verdict {
    /// As in the report's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Rescheduled => "rescheduled",
            Verdict::NotRescheduled => "not-rescheduled",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One moment of the timeline, in seconds from the fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Milestone {
    pub name: &'static str,
    pub seconds: Option<f64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One object a watch delivered.
#[derive(Debug, Clone)]
pub enum Seen {
    /// The broken node.
    Node(Box<Node>),
    /// A `web` pod.
    Pod(Box<Pod>),
    NodeIncident(Box<NodeIncident>),
    /// The nodes MetalLB's speakers say announce the `web` address now.
    Announcers(Vec<String>),
}

/// The drill's record, built from what it saw.
#[derive(Debug, Clone)]
pub struct Timeline {
    node: String,
    fault_at: Timestamp,
    replicas: usize,
    /// `web` pods before the fault; a replacement is any other.
    before: BTreeSet<String>,
    /// The pods the node ran at the fault: their deletion is the eviction.
    held: BTreeSet<String>,
    announcer_before: Option<String>,
    web_pods: BTreeMap<String, Pod>,
    marks: BTreeMap<&'static str, (f64, String)>,
    verdict: Option<Verdict>,
    incident: Option<String>,
    /// When the drill saw the node NotReady (the condition's time has whole seconds only).
    not_ready_seen: Option<f64>,
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

fn parse(t: &str) -> Option<Timestamp> {
    t.parse().ok()
}

/// When the kubelet last renewed its Lease, against the fault.
fn renewal_detail(seconds: f64) -> String {
    if seconds < 0.0 {
        format!("last renewed {:.1} s before the fault", -seconds)
    } else {
        format!("last renewed {seconds:.1} s after the fault")
    }
}

impl Timeline {
    /// `web_pods` as listed before the fault; `announcer`: MetalLB's node then.
    pub fn new(
        node: &str,
        fault_at: Timestamp,
        web_pods: &[Pod],
        replicas: usize,
        announcer: Option<String>,
    ) -> Self {
        let names = |pods: &mut dyn Iterator<Item = &Pod>| -> BTreeSet<String> {
            pods.filter_map(|p| p.metadata.name.clone()).collect()
        };
        Timeline {
            node: node.into(),
            fault_at,
            replicas,
            before: names(&mut web_pods.iter()),
            // Not those already on their way out.
            held: names(
                &mut web_pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none() && node_of(p) == Some(node)),
            ),
            announcer_before: announcer,
            web_pods: BTreeMap::new(),
            marks: BTreeMap::new(),
            verdict: None,
            incident: None,
            not_ready_seen: None,
        }
    }

    fn since_fault(&self, t: Timestamp) -> f64 {
        t.duration_since(self.fault_at).as_secs_f64()
    }

    /// The first time only: a milestone never moves once reached.
    fn mark(&mut self, name: &'static str, at: f64, detail: String) {
        if !self.marks.contains_key(name) {
            tracing::info!(milestone = name, seconds = at, %detail, "drill");
            self.marks.insert(name, (at, detail));
        }
    }

    /// Takes in one object, seen `now` seconds after the fault.
    pub fn observe(&mut self, now: f64, seen: Seen) {
        match seen {
            Seen::Node(node) => self.node_seen(now, &node),
            Seen::Pod(pod) => self.pod_seen(now, *pod),
            Seen::NodeIncident(incident) => self.incident_seen(&incident),
            Seen::Announcers(nodes) => {
                let moved_to = nodes.iter().find(|n| **n != self.node);
                if let Some(to) = moved_to.filter(|_| self.announcer_before.as_ref() == Some(&self.node)) {
                    self.mark(ADDRESS_MOVED, now, format!("to {to}"));
                }
            }
        }
    }

    fn node_seen(&mut self, now: f64, node: &Node) {
        if node.metadata.name.as_deref() != Some(self.node.as_str()) {
            return;
        }
        let Some(condition) = ready_condition(node).filter(|c| c.status != "True") else { return };
        // An old NotReady (before the fault) is not this drill's.
        let Some(t) = condition.last_transition_time.as_ref().map(|t| t.0).filter(|t| *t >= self.fault_at)
        else {
            return;
        };
        self.not_ready_seen.get_or_insert(now);
        self.mark(NOT_READY, self.since_fault(t), format!("Ready {}", condition.status));
    }

    fn pod_seen(&mut self, now: f64, pod: Pod) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if self.held.contains(&name) && pod.metadata.deletion_timestamp.is_some() {
            self.mark(EVICTED, now, name.clone());
        }
        if !self.before.contains(&name)
            && let Some(other) = node_of(&pod).filter(|n| *n != self.node)
        {
            self.mark(SCHEDULED, now, format!("{name} on {other}"));
        }
        self.web_pods.insert(name, pod);
        let ready_elsewhere: Vec<String> = self
            .web_pods
            .values()
            .filter(|p| pod_ready(p) && node_of(p) != Some(self.node.as_str()))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        // Only after the eviction: before it, the survivors' pods plus one
        // not yet known to be gone could count.
        if ready_elsewhere.len() >= self.replicas && self.marks.contains_key(EVICTED) {
            self.mark(ALL_READY, now, ready_elsewhere.join(", "));
        }
    }

    fn incident_seen(&mut self, object: &NodeIncident) {
        if object.spec.node != self.node {
            return;
        }
        let Some(status) = object.status.as_ref() else { return };
        let Some(incident) = status.incident.as_ref() else { return };
        // An earlier incident of the same node is not this drill's.
        if parse(&incident.started_at).is_none_or(|t| t < self.fault_at) {
            return;
        }
        if self.incident.is_none() {
            self.incident = object.metadata.name.clone();
        }
        if self.incident != object.metadata.name {
            return;
        }
        if let Some(renewed) = incident.lease_renewed_at.as_deref().and_then(parse) {
            let suspect = status.notices.iter().find(|n| n.kind == NoticeKind::Suspect);
            if let Some(t) = suspect.and_then(|n| parse(&n.time)) {
                let detail = renewal_detail(self.since_fault(renewed));
                self.mark(LEASE_STALE, self.since_fault(t), detail);
            }
        }
        let first_delivered = |kind: Option<NoticeKind>| {
            status
                .deliveries
                .iter()
                .filter(|d| d.state == DeliveryState::Delivered && kind.is_none_or(|k| d.notice == k))
                .filter_map(|d| Some((d.delivered_at.as_deref().and_then(parse)?, d.notice, d.sink.clone())))
                .min_by_key(|(t, _, _)| *t)
        };
        if let Some((t, kind, sink)) = first_delivered(None) {
            self.mark(FIRST_NOTIFICATION, self.since_fault(t), format!("{} to {sink}", kind.as_str()));
        }
        if let Some((t, _, sink)) = first_delivered(Some(NoticeKind::NodeDown)) {
            self.mark(NODE_DOWN, self.since_fault(t), format!("to {sink}"));
        }
        if let Some((t, _, sink)) = first_delivered(Some(NoticeKind::Rescheduled)) {
            self.verdict = Some(Verdict::Rescheduled);
            self.mark(RESCHEDULED, self.since_fault(t), format!("to {sink}"));
        }
        if let Some((t, _, sink)) = first_delivered(Some(NoticeKind::NotRescheduled)) {
            self.verdict = Some(Verdict::NotRescheduled);
            let reasons: Vec<String> = incident
                .owners
                .iter()
                .filter(|o| o.verdict == alerter_api::model::Verdict::NotRescheduled)
                .filter_map(|o| Some(format!("{}: {}", o.owner, o.reason.as_ref()?)))
                .collect();
            self.mark(NOT_RESCHEDULED, self.since_fault(t), format!("to {sink}: {}", reasons.join("; ")));
        }
        if let Some((t, _, _)) = first_delivered(Some(NoticeKind::Resolved)) {
            self.mark(RESOLVED, self.since_fault(t), String::new());
        }
    }

    /// The failover is over: `web` is whole elsewhere and the alerter said
    /// so, or the alerter said it could not be.
    pub fn failover_done(&self) -> bool {
        (self.marks.contains_key(ALL_READY) && self.marks.contains_key(RESCHEDULED))
            || self.marks.contains_key(NOT_RESCHEDULED)
    }

    /// Whether waiting for `resolved` makes sense: without an incident
    /// there is nothing that could be resolved.
    pub fn awaits_resolved(&self) -> bool {
        self.incident.is_some() && !self.marks.contains_key(RESOLVED)
    }

    pub fn resolved(&self) -> bool {
        self.marks.contains_key(RESOLVED)
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    pub fn incident(&self) -> Option<&str> {
        self.incident.as_deref()
    }

    /// From the drill seeing the node NotReady to `node-down` delivered.
    pub fn detection_seconds(&self) -> Option<f64> {
        Some(self.marks.get(NODE_DOWN)?.0 - self.not_ready_seen?)
    }

    /// Every milestone of [`ORDER`], reached or not.
    pub fn milestones(&self) -> Vec<Milestone> {
        ORDER
            .iter()
            .map(|name| {
                let found = self.marks.get(name);
                Milestone {
                    name,
                    seconds: found.map(|(s, _)| *s),
                    detail: found.map(|(_, d)| d.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FAULT: &str = "2026-01-01T00:00:00Z";

    fn at(seconds: u32) -> String {
        format!("2026-01-01T00:00:{seconds:02}Z")
    }

    fn pod(name: &str, node: &str, ready: bool, deleted: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "deletionTimestamp": if deleted { Some(at(20)) } else { None },
            },
            "spec": {"nodeName": node, "containers": []},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn node(status: &str, since: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "w1"},
            "status": {"conditions": [{"type": "Ready", "status": status, "lastTransitionTime": since}]},
        }))
        .unwrap()
    }

    /// The incident `name` about w1, started at `started`, with these deliveries (kind, second).
    fn incident(
        name: &str,
        started: &str,
        delivered: &[(&str, u32)],
        owners: serde_json::Value,
    ) -> NodeIncident {
        let deliveries: Vec<_> = delivered
            .iter()
            .map(|(kind, s)| {
                json!({"sink": "webhook", "notice": kind, "key": format!("{name}-{kind}"),
                       "state": "Delivered", "attempts": 1, "deliveredAt": at(*s)})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "vigil.local/v1", "kind": "NodeIncident",
            "metadata": {"name": name},
            "spec": {"node": "w1"},
            "status": {
                "incident": {"name": name, "kind": "node", "node": "w1", "phase": "Down", "startedAt": started,
                             "leaseRenewedAt": "2025-12-31T23:59:59Z", "owners": owners},
                "notices": [{"type": "suspect", "id": "n1", "incident": name, "cluster": "c", "node": "w1",
                             "summary": "s", "time": at(5)}],
                "deliveries": deliveries,
            },
        }))
        .unwrap()
    }

    fn before() -> Vec<Pod> {
        vec![pod("a", "w1", true, false), pod("b", "w1", true, false), pod("c", "w2", true, false)]
    }

    fn timeline() -> Timeline {
        Timeline::new("w1", FAULT.parse().unwrap(), &before(), 3, Some("w1".into()))
    }

    fn feed(t: &mut Timeline, events: Vec<(f64, Seen)>) {
        for (now, seen) in events {
            t.observe(now, seen);
        }
    }

    fn seconds(t: &Timeline, name: &str) -> Option<f64> {
        t.milestones().into_iter().find(|m| m.name == name).and_then(|m| m.seconds)
    }

    #[test]
    fn a_killed_worker_recorded_from_fault_to_resolved() {
        let mut t = timeline();
        let open = |delivered: &[(&str, u32)]| {
            Seen::NodeIncident(Box::new(incident("w1-1", &at(4), delivered, json!([]))))
        };
        feed(
            &mut t,
            vec![
                // Still its own until its speaker stops answering.
                (1.0, Seen::Announcers(vec!["w1".into()])),
                (2.0, Seen::Announcers(vec![])),
                (6.2, Seen::Announcers(vec!["w2".into()])),
                (9.3, Seen::Node(Box::new(node("Unknown", &at(9))))),
                (9.6, open(&[("node-down", 10)])),
                (14.0, Seen::Pod(Box::new(pod("a", "w1", true, true)))),
                (14.1, Seen::Pod(Box::new(pod("b", "w1", true, true)))),
                (14.5, Seen::Pod(Box::new(pod("d", "w2", false, false)))),
                (15.0, Seen::Pod(Box::new(pod("c", "w2", true, false)))),
                (16.0, Seen::Pod(Box::new(pod("d", "w2", true, false)))),
            ],
        );
        assert!(seconds(&t, ALL_READY).is_none(), "two of three Ready elsewhere");
        assert!(!t.failover_done());
        feed(
            &mut t,
            vec![
                (17.0, Seen::Pod(Box::new(pod("e", "w3", true, false)))),
                (18.0, open(&[("node-down", 10), ("rescheduled", 18)])),
            ],
        );
        assert!(t.failover_done());
        assert_eq!(t.verdict(), Some(Verdict::Rescheduled));
        assert!(t.awaits_resolved());
        t.observe(60.0, open(&[("node-down", 10), ("rescheduled", 18), ("resolved", 59)]));
        assert!(t.resolved() && !t.awaits_resolved());

        let reached: Vec<(&str, f64)> =
            t.milestones().iter().filter_map(|m| Some((m.name, m.seconds?))).collect();
        assert_eq!(
            reached,
            [
                (LEASE_STALE, 5.0),
                (ADDRESS_MOVED, 6.2),
                (NOT_READY, 9.0),
                (FIRST_NOTIFICATION, 10.0),
                (NODE_DOWN, 10.0),
                (EVICTED, 14.0),
                (SCHEDULED, 14.5),
                (ALL_READY, 17.0),
                (RESCHEDULED, 18.0),
                (RESOLVED, 59.0),
            ]
        );
        let detail = |name| t.milestones().into_iter().find(|m| m.name == name).unwrap().detail;
        assert_eq!(detail(LEASE_STALE), "last renewed 1.0 s before the fault");
        assert_eq!(detail(SCHEDULED), "d on w2");
        assert_eq!(detail(ALL_READY), "c, d, e");
        assert_eq!(t.detection_seconds(), Some(10.0 - 9.3));
        assert_eq!(t.incident(), Some("w1-1"));
    }

    #[test]
    fn what_came_before_the_fault_or_from_elsewhere_is_not_the_drills() {
        let mut t = timeline();
        feed(
            &mut t,
            vec![
                // The node's NotReady of an earlier drill, an earlier incident, another node's.
                (1.0, Seen::Node(Box::new(node("False", "2025-12-31T23:00:00Z")))),
                (
                    1.0,
                    Seen::NodeIncident(Box::new(incident(
                        "w1-0",
                        "2025-12-31T23:00:00Z",
                        &[("node-down", 1)],
                        json!([]),
                    ))),
                ),
                (1.0, Seen::Pod(Box::new(pod("c", "w2", true, true)))),
                // The pods it held are not yet known gone: Ready elsewhere is not whole.
                (2.0, Seen::Pod(Box::new(pod("x", "w2", true, false)))),
                (2.0, Seen::Pod(Box::new(pod("y", "w3", true, false)))),
            ],
        );
        let mut other = incident("w2-1", &at(3), &[("node-down", 4)], json!([]));
        other.spec.node = "w2".into();
        t.observe(3.0, Seen::NodeIncident(Box::new(other)));
        let reached: Vec<&str> =
            t.milestones().iter().filter(|m| m.seconds.is_some()).map(|m| m.name).collect();
        assert_eq!(reached, [SCHEDULED], "only the replacements count");
        assert_eq!(t.incident(), None);
        assert!(!t.awaits_resolved(), "no incident, nothing to resolve");
        // The announcer was elsewhere: the address does not move.
        let mut elsewhere = Timeline::new("w2", FAULT.parse().unwrap(), &before(), 3, Some("w1".into()));
        elsewhere.observe(5.0, Seen::Announcers(vec!["w3".into()]));
        assert_eq!(seconds(&elsewhere, ADDRESS_MOVED), None);
    }

    #[test]
    fn a_volume_that_cannot_move_is_not_rescheduled_with_its_reason() {
        let mut t = timeline();
        let owners = json!([
            {"owner": {"kind": "Deployment", "namespace": "web", "name": "web"}, "pods": ["a"],
             "readyElsewhere": 3, "verdict": "rescheduled"},
            {"owner": {"kind": "Deployment", "namespace": "monitoring", "name": "prometheus"}, "pods": ["p"],
             "readyElsewhere": 0, "verdict": "not-rescheduled", "reason": "its volume is on w1"},
        ]);
        t.observe(
            40.0,
            Seen::NodeIncident(Box::new(incident("w1-2", &at(4), &[("not-rescheduled", 40)], owners))),
        );
        assert!(t.failover_done(), "a not-rescheduled verdict ends the wait");
        assert_eq!(t.verdict(), Some(Verdict::NotRescheduled));
        let m = t.milestones().into_iter().find(|m| m.name == NOT_RESCHEDULED).unwrap();
        assert_eq!(m.detail, "to webhook: Deployment monitoring/prometheus: its volume is on w1");
        assert_eq!(serde_json::to_value(t.verdict()).unwrap(), "not-rescheduled");
    }
}
