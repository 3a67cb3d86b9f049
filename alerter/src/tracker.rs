//! One incident per node, driven by what the reflectors hold: suspect when
//! the kubelet stops renewing its Lease, down when the Ready condition turns
//! False or Unknown (or the node is deleted), then rescheduled or not by the
//! deadline, resolved when the node is Ready again. [`Tracker::observe`] is a
//! pure function of its state, the time and a [`View`] of the cluster, and
//! returns what changed: the unit tests drive it over recorded sequences,
//! the controller over reflector snapshots.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        coordination::v1::Lease,
        core::v1::{Node, Pod},
    },
    jiff::Timestamp,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    decide::{self, Readiness},
    model::{Notice, NoticeKind, OwnerVerdict, Verdict},
};

/// How the tracker decides.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The cluster's name, in every notice.
    pub cluster: String,
    /// Missed Lease renewals before a node is suspect.
    pub suspect_after_renewals: u32,
    /// Added to the pods' eviction time (their not-ready toleration) to make
    /// the deadline for the rescheduling verdict.
    pub verify_grace: Duration,
    /// A fixed deadline instead, counted from detection.
    pub verify_deadline: Option<Duration>,
}

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    Suspect,
    Down,
    Rescheduled,
    NotRescheduled,
    Resolved,
}

/// One incident, as the tracker keeps it and a `NodeIncident` stores it
/// (times as RFC 3339).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// The `NodeIncident`'s name: the node and when the incident began.
    pub name: String,
    pub node: String,
    pub phase: Phase,
    pub started_at: String,
    /// NotReady, Unknown or Deleted, once down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_renewed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<String>,
    /// When the rescheduling verdict is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescheduled_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    #[serde(default)]
    pub owners: Vec<OwnerVerdict>,
    /// The notices decided so far, so none is decided twice (after a restart too).
    #[serde(default)]
    pub notices: Vec<NoticeKind>,
}

/// What the cluster holds, as the reflectors see it.
#[derive(Default)]
pub struct View<'a> {
    pub nodes: Vec<&'a Node>,
    pub leases: Vec<&'a Lease>,
    pub pods: Vec<&'a Pod>,
    pub deployments: Vec<&'a Deployment>,
    pub stateful_sets: Vec<&'a StatefulSet>,
}

/// One incident that changed, and the notice it calls for, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub incident: Incident,
    pub notice: Option<Notice>,
}

pub struct Tracker {
    settings: Settings,
    /// Open incidents, by node.
    incidents: BTreeMap<String, Incident>,
    /// Nodes seen Ready: only those can go down (a joining node is NotReady
    /// until its network is up, and that is no incident).
    seen_ready: BTreeSet<String>,
}

fn rfc3339(t: Timestamp) -> String {
    t.to_string()
}

fn parse(t: &Option<String>) -> Option<Timestamp> {
    t.as_deref().and_then(|t| t.parse().ok())
}

impl Tracker {
    /// A tracker that continues `open` incidents (restored from the cluster).
    pub fn new(settings: Settings, open: Vec<Incident>) -> Self {
        let incidents =
            open.into_iter().filter(|i| i.phase != Phase::Resolved).map(|i| (i.node.clone(), i)).collect();
        Tracker { settings, incidents, seen_ready: BTreeSet::new() }
    }

    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }

    pub fn observe(&mut self, now: Timestamp, view: &View) -> Vec<Change> {
        let nodes: BTreeMap<&str, &Node> =
            view.nodes.iter().filter_map(|n| Some((n.metadata.name.as_deref()?, *n))).collect();
        let leases: BTreeMap<&str, &Lease> =
            view.leases.iter().filter_map(|l| Some((l.metadata.name.as_deref()?, *l))).collect();
        let mut names: BTreeSet<String> = nodes.keys().map(|n| n.to_string()).collect();
        names.extend(self.incidents.keys().cloned());
        names.extend(self.seen_ready.iter().cloned());
        let mut changes = vec![];
        for name in names {
            let node = nodes.get(name.as_str()).copied();
            if let Some(change) =
                self.observe_node(now, &name, node, leases.get(name.as_str()).copied(), view)
            {
                changes.push(change);
            }
        }
        changes
    }

    fn observe_node(
        &mut self,
        now: Timestamp,
        name: &str,
        node: Option<&Node>,
        lease: Option<&Lease>,
        view: &View,
    ) -> Option<Change> {
        let (readiness, since) = match node {
            Some(node) => decide::readiness(node),
            None => (Readiness::Unknown, None),
        };
        let deleted = node.is_none();
        if readiness == Readiness::Ready && !deleted {
            self.seen_ready.insert(name.to_owned());
        }
        let stale = lease.and_then(|l| decide::lease_stale(l, now, self.settings.suspect_after_renewals));
        let down = deleted || readiness != Readiness::Ready;
        // A node never seen Ready is joining, unless the node controller
        // itself says it stopped hearing from it.
        let counts = self.seen_ready.contains(name) || (!deleted && readiness == Readiness::Unknown);
        let down_reason = if deleted { "Deleted" } else { readiness.as_str() };

        let Some(mut incident) = self.incidents.remove(name) else {
            if down && counts {
                let mut incident = self.new_incident(name, now);
                self.go_down(&mut incident, now, down_reason, since, view);
                return self.keep(incident, NoticeKind::NodeDown, now);
            }
            if let (Some(renewed), false, true) = (stale, down, counts) {
                let mut incident = self.new_incident(name, now);
                incident.lease_renewed_at = Some(rfc3339(renewed));
                return self.keep(incident, NoticeKind::Suspect, now);
            }
            return None;
        };
        if !down && (stale.is_none() || incident.phase != Phase::Suspect) {
            incident.phase = Phase::Resolved;
            incident.resolved_at = Some(rfc3339(now));
            let notice = self.notice(&incident, NoticeKind::Resolved, now);
            incident.notices.push(NoticeKind::Resolved);
            return Some(Change { incident, notice: Some(notice) });
        }
        match incident.phase {
            Phase::Suspect if down => {
                self.go_down(&mut incident, now, down_reason, since, view);
                self.keep(incident, NoticeKind::NodeDown, now)
            }
            // Once rescheduled, later pod churn is not this incident's:
            // it waits for the node to come back.
            Phase::Suspect | Phase::Rescheduled => {
                self.incidents.insert(name.to_owned(), incident);
                None
            }
            Phase::Down | Phase::NotRescheduled => self.judge(incident, now, view),
            Phase::Resolved => None,
        }
    }

    fn new_incident(&self, node: &str, now: Timestamp) -> Incident {
        Incident {
            name: format!("{node}-{}", now.as_second()),
            node: node.into(),
            phase: Phase::Suspect,
            started_at: rfc3339(now),
            down_reason: None,
            lease_renewed_at: None,
            not_ready_since: None,
            detected_at: None,
            deadline: None,
            rescheduled_at: None,
            resolved_at: None,
            owners: vec![],
            notices: vec![],
        }
    }

    /// The node is down: what it held, by owner, and when the verdict is due.
    fn go_down(
        &self,
        incident: &mut Incident,
        now: Timestamp,
        reason: &str,
        since: Option<Timestamp>,
        view: &View,
    ) {
        incident.phase = Phase::Down;
        incident.down_reason = Some(reason.into());
        incident.not_ready_since = since.map(rfc3339);
        incident.detected_at = Some(rfc3339(now));
        // The verdict is due when the last pod that should move has been
        // evicted (pods that never are, DaemonSets', do not count), plus the grace.
        let eviction = view
            .pods
            .iter()
            .filter(|p| decide::node_of(p) == Some(incident.node.as_str()))
            .filter(|p| decide::owner_of(p).kind.reschedules())
            .filter_map(|p| decide::eviction_after(p))
            .max()
            .unwrap_or_default();
        let wait = self.settings.verify_deadline.unwrap_or(eviction + self.settings.verify_grace);
        incident.deadline = now.checked_add(wait).ok().map(rfc3339);
        incident.owners = decide::affected(&view.pods, &incident.node)
            .into_iter()
            .map(|(owner, pods)| {
                let desired = decide::desired(&owner, &view.deployments, &view.stateful_sets);
                decide::verdict(&owner, &pods, desired, &view.pods, &incident.node, false)
            })
            .collect();
    }

    /// Keeps `incident` open and decides `kind` for it, unless decided before.
    fn keep(&mut self, mut incident: Incident, kind: NoticeKind, now: Timestamp) -> Option<Change> {
        let notice = (!incident.notices.contains(&kind)).then(|| self.notice(&incident, kind, now));
        if notice.is_some() {
            incident.notices.push(kind);
        }
        self.incidents.insert(incident.node.clone(), incident.clone());
        Some(Change { incident, notice })
    }

    /// Brings the owners' verdicts up to date; rescheduled when all are
    /// back, not rescheduled once the deadline passes first.
    fn judge(&mut self, mut incident: Incident, now: Timestamp, view: &View) -> Option<Change> {
        let past_deadline = parse(&incident.deadline).is_some_and(|d| now >= d);
        let before = incident.clone();
        incident.owners = incident
            .owners
            .iter()
            .map(|o| {
                let desired = decide::desired(&o.owner, &view.deployments, &view.stateful_sets).or(o.desired);
                decide::verdict(&o.owner, &o.pods, desired, &view.pods, &incident.node, past_deadline)
            })
            .collect();
        let all_back = incident
            .owners
            .iter()
            .all(|o| matches!(o.verdict, Verdict::Rescheduled | Verdict::NotApplicable));
        let decided = match (incident.phase, all_back, past_deadline) {
            (Phase::Down | Phase::NotRescheduled, true, _) => {
                incident.phase = Phase::Rescheduled;
                incident.rescheduled_at = Some(rfc3339(now));
                Some(NoticeKind::Rescheduled)
            }
            (Phase::Down, false, true) => {
                incident.phase = Phase::NotRescheduled;
                Some(NoticeKind::NotRescheduled)
            }
            _ => None,
        };
        match decided {
            Some(kind) => self.keep(incident, kind, now),
            None => {
                let changed = incident != before;
                self.incidents.insert(incident.node.clone(), incident.clone());
                changed.then_some(Change { incident, notice: None })
            }
        }
    }

    fn notice(&self, incident: &Incident, kind: NoticeKind, now: Timestamp) -> Notice {
        let node = &incident.node;
        let pods: usize = incident.owners.iter().map(|o| o.pods.len()).sum();
        let seconds_to_rescheduled = match kind {
            NoticeKind::Rescheduled => {
                parse(&incident.detected_at).map(|d| now.duration_since(d).as_secs_f64())
            }
            _ => None,
        };
        let summary = match kind {
            NoticeKind::Suspect => format!(
                "node {node} has not renewed its Lease since {} ({} renewals missed); not marked NotReady yet",
                incident.lease_renewed_at.as_deref().unwrap_or("?"),
                self.settings.suspect_after_renewals
            ),
            NoticeKind::NodeDown => format!(
                "node {node} is {} (since {}): it held {pods} pods of {} owners",
                incident.down_reason.as_deref().unwrap_or("down"),
                incident.not_ready_since.as_deref().unwrap_or("?"),
                incident.owners.len()
            ),
            NoticeKind::Rescheduled if !incident.owners.iter().any(|o| o.owner.kind.reschedules()) => {
                format!("node {node} held no pods that other nodes take over: nothing to reschedule")
            }
            NoticeKind::Rescheduled => format!(
                "the pods node {node} held are back on other nodes, {:.1} s after it was seen down",
                seconds_to_rescheduled.unwrap_or_default()
            ),
            NoticeKind::NotRescheduled => {
                let short: Vec<String> = incident
                    .owners
                    .iter()
                    .filter(|o| o.verdict == Verdict::NotRescheduled)
                    .map(|o| format!("{}: {}", o.owner, o.reason.as_deref().unwrap_or("?")))
                    .collect();
                format!("the pods node {node} held are not all back by the deadline: {}", short.join("; "))
            }
            NoticeKind::Resolved => format!("node {node} is Ready again"),
        };
        Notice {
            kind,
            id: Notice::key(&incident.name, kind),
            trace_id: crate::model::incident_trace_id(&incident.name),
            incident: incident.name.clone(),
            cluster: self.settings.cluster.clone(),
            node: node.clone(),
            summary,
            time: rfc3339(now),
            lease_renewed_at: incident.lease_renewed_at.clone(),
            not_ready_since: incident.not_ready_since.clone(),
            detected_at: incident.detected_at.clone(),
            seconds_to_rescheduled,
            owners: incident.owners.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    use crate::fixtures::{deployment, lease, node, pod};

    fn settings() -> Settings {
        Settings {
            cluster: "vigil".into(),
            suspect_after_renewals: 2,
            verify_grace: Duration::from_secs(30),
            verify_deadline: None,
        }
    }

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    fn kinds(changes: &[Change]) -> Vec<NoticeKind> {
        changes.iter().filter_map(|c| c.notice.as_ref().map(|n| n.kind)).collect()
    }

    /// A worker holding two web pods and a DaemonSet pod, recorded as it dies:
    /// the Lease stops, the node controller marks it Unknown, the pods are
    /// evicted and come back Ready on the other worker, the node returns.
    #[test]
    fn a_dead_worker_goes_suspect_down_rescheduled_resolved() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let web = |name: &str, node: &str, ready: bool| {
            let p = pod("default", name).owned("ReplicaSet", "web-abc").hash("abc").on(node);
            if ready { p.ready().build() } else { p.build() }
        };
        let proxy = pod("kube-system", "proxy-w2").owned("DaemonSet", "kube-proxy").on("w2").ready().build();
        let web_deployment = deployment("default", "web", 3);
        let (w1_ready, w2_ready) = (node("w1").ready("True").build(), node("w2").ready("True").build());
        let pods = [
            web("web-abc-1", "w1", true),
            web("web-abc-2", "w2", true),
            web("web-abc-3", "w2", true),
            proxy.clone(),
        ];
        let fresh = [lease("w1", "2026-01-01T00:00:59Z", 600), lease("w2", "2026-01-01T00:00:59Z", 40)];
        fn view<'a>(
            nodes: Vec<&'a Node>,
            leases: Vec<&'a Lease>,
            pods: Vec<&'a Pod>,
            web: &'a Deployment,
        ) -> View<'a> {
            View { nodes, leases, pods, deployments: vec![web], stateful_sets: vec![] }
        }
        let view = |nodes, leases, pods| view(nodes, leases, pods, &web_deployment);

        // All well.
        let changes = tracker.observe(
            at("2026-01-01T00:01:00Z"),
            &view(vec![&w1_ready, &w2_ready], fresh.iter().collect(), pods.iter().collect()),
        );
        assert!(changes.is_empty());

        // (w1's Lease lasts 10 minutes: it never goes stale here.)
        // w2's kubelet stops renewing; 25 s later (two 10 s renewals missed) it is suspect.
        let stale = [lease("w1", "2026-01-01T00:01:24Z", 600), lease("w2", "2026-01-01T00:01:00Z", 40)];
        let changes = tracker.observe(
            at("2026-01-01T00:01:25Z"),
            &view(vec![&w1_ready, &w2_ready], stale.iter().collect(), pods.iter().collect()),
        );
        assert_eq!(kinds(&changes), [NoticeKind::Suspect]);
        assert!(
            changes[0]
                .notice
                .as_ref()
                .unwrap()
                .summary
                .contains("has not renewed its Lease since 2026-01-01T00:01:00Z")
        );

        // The node controller marks it Unknown: down, with what it held.
        let w2_unknown = node("w2").ready("Unknown").since("2026-01-01T00:01:40Z").build();
        let changes = tracker.observe(
            at("2026-01-01T00:01:41Z"),
            &view(vec![&w1_ready, &w2_unknown], stale.iter().collect(), pods.iter().collect()),
        );
        assert_eq!(kinds(&changes), [NoticeKind::NodeDown]);
        let down = changes[0].notice.clone().unwrap();
        assert_eq!(down.id, format!("{}/node-down", changes[0].incident.name));
        assert_eq!(down.not_ready_since.as_deref(), Some("2026-01-01T00:01:40Z"));
        let owners: Vec<(String, Vec<String>, Verdict)> =
            down.owners.iter().map(|o| (o.owner.to_string(), o.pods.clone(), o.verdict)).collect();
        assert_eq!(
            owners,
            [
                (
                    "Deployment default/web".to_owned(),
                    vec!["web-abc-2".to_owned(), "web-abc-3".to_owned()],
                    Verdict::Pending
                ),
                (
                    "DaemonSet kube-system/kube-proxy".to_owned(),
                    vec!["proxy-w2".to_owned()],
                    Verdict::NotApplicable
                ),
            ]
        );

        // Evicted and replaced on w1, not Ready yet: nothing to say.
        let replacing = [
            web("web-abc-1", "w1", true),
            web("web-abc-4", "w1", false),
            web("web-abc-5", "w1", true),
            proxy.clone(),
        ];
        let changes = tracker.observe(
            at("2026-01-01T00:01:50Z"),
            &view(vec![&w1_ready, &w2_unknown], stale.iter().collect(), replacing.iter().collect()),
        );
        assert_eq!(kinds(&changes), []);

        // 3/3 Ready on w1: rescheduled, where each pod went, and how long it took.
        let back =
            [web("web-abc-1", "w1", true), web("web-abc-4", "w1", true), web("web-abc-5", "w1", true), proxy];
        let changes = tracker.observe(
            at("2026-01-01T00:01:53Z"),
            &view(vec![&w1_ready, &w2_unknown], stale.iter().collect(), back.iter().collect()),
        );
        assert_eq!(kinds(&changes), [NoticeKind::Rescheduled]);
        let rescheduled = changes[0].notice.clone().unwrap();
        assert_eq!(rescheduled.seconds_to_rescheduled, Some(12.0));
        let web_owner = &rescheduled.owners[0];
        assert_eq!((web_owner.verdict, web_owner.ready_elsewhere), (Verdict::Rescheduled, 3));
        assert!(web_owner.placements.iter().all(|p| p.node == "w1"));

        // Nothing new while it stays down (w1 renewing as it should); resolved when it is Ready again.
        let later = [lease("w1", "2026-01-01T00:02:05Z", 600), lease("w2", "2026-01-01T00:01:00Z", 40)];
        let changes = tracker.observe(
            at("2026-01-01T00:02:10Z"),
            &view(vec![&w1_ready, &w2_unknown], later.iter().collect(), back.iter().collect()),
        );
        assert_eq!(kinds(&changes), []);
        let renewed = [lease("w1", "2026-01-01T00:02:25Z", 600), lease("w2", "2026-01-01T00:02:29Z", 40)];
        let changes = tracker.observe(
            at("2026-01-01T00:02:30Z"),
            &view(vec![&w1_ready, &w2_ready], renewed.iter().collect(), back.iter().collect()),
        );
        assert_eq!(kinds(&changes), [NoticeKind::Resolved]);
        assert_eq!(changes[0].incident.phase, Phase::Resolved);
        assert_eq!(tracker.open().count(), 0);
    }

    #[test]
    fn a_verdict_past_the_deadline_says_why() {
        let mut settings = settings();
        settings.verify_deadline = Some(Duration::from_secs(30));
        let mut tracker = Tracker::new(settings, vec![]);
        let prom = |node: &str| {
            pod("monitoring", "prometheus-x-1")
                .owned("ReplicaSet", "prometheus-x")
                .hash("x")
                .on(node)
                .ready()
                .build()
        };
        let deployment = deployment("monitoring", "prometheus", 1);
        let up = [node("w1").ready("True").build(), node("w2").ready("True").build()];
        let on_w2 = [prom("w2")];
        fn view<'a>(nodes: &'a [Node], pods: &'a [Pod], deployment: &'a Deployment) -> View<'a> {
            View {
                nodes: nodes.iter().collect(),
                pods: pods.iter().collect(),
                deployments: vec![deployment],
                ..View::default()
            }
        }
        let v = |nodes, pods| view(nodes, pods, &deployment);
        assert!(tracker.observe(at("2026-01-01T00:00:00Z"), &v(&up, &on_w2)).is_empty());
        let down = [node("w1").ready("True").build(), node("w2").ready("False").build()];
        assert_eq!(
            kinds(&tracker.observe(at("2026-01-01T00:00:10Z"), &v(&down, &on_w2))),
            [NoticeKind::NodeDown]
        );
        let pending = [pod("monitoring", "prometheus-x-2")
            .owned("ReplicaSet", "prometheus-x")
            .hash("x")
            .unschedulable("0/3 nodes are available: 1 node(s) had volume node affinity conflict")
            .build()];
        assert_eq!(kinds(&tracker.observe(at("2026-01-01T00:00:30Z"), &v(&down, &pending))), []);
        let changes = tracker.observe(at("2026-01-01T00:00:41Z"), &v(&down, &pending));
        assert_eq!(kinds(&changes), [NoticeKind::NotRescheduled]);
        let summary = &changes[0].notice.as_ref().unwrap().summary;
        assert!(
            summary.contains(
                "Deployment monitoring/prometheus: pod prometheus-x-2 is Pending: its volume is bound to w2"
            ),
            "{summary}"
        );
    }

    #[test]
    fn a_joining_node_is_no_incident_and_a_restart_decides_nothing_twice() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let joining = [node("w3").ready("False").build()];
        let view = View { nodes: joining.iter().collect(), ..View::default() };
        assert!(tracker.observe(at("2026-01-01T00:00:00Z"), &view).is_empty());

        // A new leader continues an incident whose node-down was decided.
        let ready = [node("w3").ready("True").build()];
        let mut seen = Tracker::new(settings(), vec![]);
        seen.observe(at("2026-01-01T00:00:00Z"), &View { nodes: ready.iter().collect(), ..View::default() });
        let unknown = [node("w3").ready("Unknown").build()];
        let first = seen.observe(
            at("2026-01-01T00:00:20Z"),
            &View { nodes: unknown.iter().collect(), ..View::default() },
        );
        let incident = first[0].incident.clone();
        let mut next = Tracker::new(settings(), vec![incident]);
        let again = next.observe(
            at("2026-01-01T00:00:21Z"),
            &View { nodes: unknown.iter().collect(), ..View::default() },
        );
        assert!(kinds(&again).iter().all(|k| *k != NoticeKind::NodeDown), "{again:?}");
        // Nothing rescheduled away (no pods): that is decided at once.
        assert_eq!(kinds(&again), [NoticeKind::Rescheduled]);
    }
}
