//! One incident per node, driven by what the reflectors hold: suspect when
//! the kubelet stops renewing its Lease (as the alerter watched it), down
//! when the Ready condition turns False or Unknown (or the node is
//! deleted), then rescheduled or not by the deadline, resolved once the node
//! has stayed Ready for a while (going down again meanwhile is a flap of the
//! same incident), closed when a deleted node's verdict is in. While the
//! alerter cannot see the cluster, nothing is decided about nodes; a long
//! enough blackout is an incident of its own (`control-plane-unreachable`).
//! [`Tracker::observe`] is a pure function of its state, the time and a
//! [`View`] of the cluster, and returns what changed: the unit tests drive
//! it over recorded sequences, the controller over reflector snapshots.

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

use crate::{
    decide::{self, LeaseSeen, Readiness},
    model::{Notice, NoticeKind, OwnerVerdict, Verdict},
};

/// How the tracker decides.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The cluster's name, in every notice.
    pub cluster: String,
    /// Missed Lease renewals (of a quarter of the Lease's duration each,
    /// watched on the alerter's clock) before a node is suspect.
    pub suspect_after_renewals: u32,
    /// Added to the pods' eviction time (their not-ready toleration) to make
    /// the deadline for the rescheduling verdict.
    pub verify_grace: Duration,
    /// A fixed deadline instead, counted from detection.
    pub verify_deadline: Option<Duration>,
    /// How long the feed may be lost before that is an incident of its own.
    pub control_plane_after: Duration,
    /// How long a node that came back must stay Ready, with its Lease
    /// renewed, before its incident is resolved; going down again within it
    /// is a flap of the same incident. Also how long after the view
    /// became whole a node newly down is held before it is paged.
    pub stable_for: Duration,
    /// A NotReady node this alerter never saw Ready counts as down when its
    /// Ready condition changed more than this after it registered
    /// ([`decide::plausibly_not_joining`]).
    pub joining_grace: Duration,
    /// The log store's UI, which notices about a node link to.
    pub logs_ui: Option<String>,
}

impl Settings {
    /// The defaults: 3 missed renewals, 30 s of grace, no fixed deadline,
    /// 10 s of blackout before a control-plane incident, 20 s of stability
    /// (two kubelet Lease renewals and two node-status updates at their
    /// 10 s defaults) before resolved, 30 s of joining grace.
    pub fn defaults(cluster: impl Into<String>) -> Self {
        Settings {
            cluster: cluster.into(),
            suspect_after_renewals: 3,
            verify_grace: Duration::from_secs(30),
            verify_deadline: None,
            control_plane_after: Duration::from_secs(10),
            stable_for: Duration::from_secs(20),
            joining_grace: Duration::from_secs(30),
            logs_ui: None,
        }
    }
}

pub use alerter_api::incident::{Incident, IncidentKind, Phase};

/// Whether the alerter sees the cluster, as the controller knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Every watch synced and the API server answering, continuously since `since`.
    Live { since: Timestamp },
    /// Not so since `since`: what the reflectors hold may be old.
    Lost { since: Timestamp },
}

/// What the cluster holds, as the reflectors see it.
pub struct View<'a> {
    pub feed: Feed,
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
    /// Open node incidents, by node.
    incidents: BTreeMap<String, Incident>,
    /// The open control-plane incident.
    outage: Option<Incident>,
    /// Nodes seen Ready: those can go down (a joining node is NotReady
    /// until its network is up, and that is no incident).
    seen_ready: BTreeSet<String>,
    /// What was seen of each node's Lease, by node, on the alerter's clock.
    leases: BTreeMap<String, LeaseSeen>,
    /// The Unix millisecond each node's latest incident is named after:
    /// a later incident of the node is named after a later one.
    named: BTreeMap<String, i64>,
}

fn rfc3339(t: Timestamp) -> String {
    t.to_string()
}

fn parse(t: &Option<String>) -> Option<Timestamp> {
    t.as_deref().and_then(|t| t.parse().ok())
}

fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

/// The millisecond an incident's name ends in (older names end in a second: smaller, harmless).
fn named_after(incident: &Incident) -> Option<i64> {
    incident.name.strip_prefix(&incident.node)?.strip_prefix('-')?.parse().ok()
}

impl Tracker {
    /// A tracker that continues the open ones of `known` incidents (every
    /// `NodeIncident`'s, closed ones too: their names are not reused).
    pub fn new(settings: Settings, known: Vec<Incident>) -> Self {
        let mut tracker = Tracker {
            settings,
            incidents: BTreeMap::new(),
            outage: None,
            seen_ready: BTreeSet::new(),
            leases: BTreeMap::new(),
            named: BTreeMap::new(),
        };
        let mut known = known;
        known.sort_by_key(|i| (named_after(i), i.name.clone()));
        for incident in known {
            match incident.kind {
                IncidentKind::ControlPlaneUnreachable => {
                    if !incident.phase.closed() {
                        tracker.outage = Some(incident);
                    }
                }
                IncidentKind::Node => {
                    if let Some(ms) = named_after(&incident) {
                        let last = tracker.named.entry(incident.node.clone()).or_insert(ms);
                        *last = (*last).max(ms);
                    }
                    if !incident.phase.closed() {
                        tracker.incidents.insert(incident.node.clone(), incident);
                    }
                }
            }
        }
        tracker
    }

    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values().chain(self.outage.iter())
    }

    pub fn observe(&mut self, now: Timestamp, view: &View) -> Vec<Change> {
        self.watch_leases(now, view);
        let mut changes = vec![];
        let live_since = match view.feed {
            Feed::Lost { since } => {
                self.control_plane_lost(now, since, &mut changes);
                return changes;
            }
            Feed::Live { since } => since,
        };
        self.control_plane_back(now, live_since, &mut changes);
        let nodes: BTreeMap<&str, &Node> =
            view.nodes.iter().filter_map(|n| Some((n.metadata.name.as_deref()?, *n))).collect();
        // The two latest renewals seen: the latest by a Lease other than a node's own.
        let mut renewals: Vec<(Timestamp, &str)> =
            self.leases.iter().filter_map(|(name, seen)| Some((seen.changed_at?, name.as_str()))).collect();
        renewals.sort_unstable_by(|a, b| b.cmp(a));
        renewals.truncate(2);
        let renewals: Vec<(Timestamp, String)> =
            renewals.into_iter().map(|(t, n)| (t, n.to_owned())).collect();
        let mut names: BTreeSet<String> = nodes.keys().map(|n| n.to_string()).collect();
        names.extend(self.incidents.keys().cloned());
        names.extend(self.seen_ready.iter().cloned());
        for name in names {
            let other_renewed_at = renewals.iter().find(|(_, n)| *n != name).map(|(t, _)| *t);
            let node = nodes.get(name.as_str()).copied();
            self.observe_node(now, &name, node, live_since, other_renewed_at, view, &mut changes);
        }
        changes
    }

    /// Keeps what was seen of each Lease; a Lease gone from a live view is forgotten.
    fn watch_leases(&mut self, now: Timestamp, view: &View) {
        let mut present = BTreeSet::new();
        for lease in &view.leases {
            let Some(name) = lease.metadata.name.as_deref() else { continue };
            present.insert(name);
            match LeaseSeen::observe(self.leases.get(name).copied(), lease, now) {
                Some(seen) => self.leases.insert(name.to_owned(), seen),
                None => self.leases.remove(name),
            };
        }
        if matches!(view.feed, Feed::Live { .. }) {
            self.leases.retain(|name, _| present.contains(name.as_str()));
        }
    }

    fn control_plane_lost(&mut self, now: Timestamp, since: Timestamp, changes: &mut Vec<Change>) {
        if self.outage.is_some() || seconds(since, now) < self.settings.control_plane_after.as_secs_f64() {
            return;
        }
        let mut incident = Incident {
            name: format!("control-plane-{}", since.as_millisecond()),
            kind: IncidentKind::ControlPlaneUnreachable,
            node: String::new(),
            phase: Phase::Unreachable,
            started_at: rfc3339(since),
            detected_at: Some(rfc3339(now)),
            ..self.blank()
        };
        self.say(&mut incident, NoticeKind::ControlPlaneUnreachable, now, changes);
        self.outage = Some(incident);
    }

    fn control_plane_back(&mut self, now: Timestamp, live_since: Timestamp, changes: &mut Vec<Change>) {
        let Some(mut incident) = self.outage.take() else { return };
        incident.phase = Phase::Resolved;
        incident.resolved_at = Some(rfc3339(live_since));
        self.say(&mut incident, NoticeKind::Resolved, now, changes);
    }

    /// Closes the open control-plane incident, if one was paged: for a
    /// replica deposed after paging it while cut off (only its own view
    /// was cut off: another replica led meanwhile and knows nothing of it).
    pub fn close_outage(&mut self, now: Timestamp) -> Option<Change> {
        let mut incident = self.outage.take()?;
        let mut changes = vec![];
        if incident.notices.contains(&NoticeKind::ControlPlaneUnreachable) {
            incident.phase = Phase::Resolved;
            incident.resolved_at = Some(rfc3339(now));
            self.say(&mut incident, NoticeKind::Resolved, now, &mut changes);
        }
        changes.pop()
    }

    #[allow(clippy::too_many_arguments)]
    fn observe_node(
        &mut self,
        now: Timestamp,
        name: &str,
        node: Option<&Node>,
        live_since: Timestamp,
        other_renewed_at: Option<Timestamp>,
        view: &View,
        changes: &mut Vec<Change>,
    ) {
        let (readiness, since) = match node {
            Some(node) => decide::readiness(node),
            None => (Readiness::Unknown, None),
        };
        let deleted = node.is_none();
        if readiness == Readiness::Ready && !deleted {
            self.seen_ready.insert(name.to_owned());
        }
        let seen = self.leases.get(name).copied();
        let renewals = self.settings.suspect_after_renewals;
        let stale = seen.filter(|s| decide::lease_stale(s, now, live_since, other_renewed_at, renewals));
        let down = deleted || readiness != Readiness::Ready;
        let counts = self.seen_ready.contains(name)
            || node.is_some_and(|n| decide::plausibly_not_joining(n, self.settings.joining_grace));
        let down_reason = if deleted { "Deleted" } else { readiness.as_str() };

        let Some(mut incident) = self.incidents.remove(name) else {
            // Just after the view became whole again, a node newly down is
            // most likely the silence's doing: its kubelet could not reach
            // the API server either, and the node controller marks it
            // Unknown once the API server is back, Ready again at the
            // kubelet's next status update. Like the node controller's own
            // full-disruption mode, that is the control plane's incident;
            // a node still down after `stable_for` is reported then, named
            // as it would have been at once.
            let settling = seconds(live_since, now) < self.settings.stable_for.as_secs_f64();
            if down && counts && !deleted && settling {
                return;
            }
            if down && counts {
                // A deleted node leaves no condition to name the outage after.
                let evidence = since.or(seen.map(|s| s.renew_time)).unwrap_or(now);
                let mut incident = self.new_incident(name, evidence, now);
                self.go_down(&mut incident, now, down_reason, since, view);
                self.say(&mut incident, NoticeKind::NodeDown, now, changes);
                if deleted {
                    incident.deleted_at = Some(rfc3339(now));
                    if !self.close_deleted(&mut incident, now, changes) {
                        self.judge(&mut incident, now, view, changes);
                        self.close_deleted(&mut incident, now, changes);
                    }
                }
                self.settle(incident, changes);
                return;
            }
            if let (Some(seen), false, true) = (stale, down, counts) {
                let mut incident = self.new_incident(name, seen.renew_time, now);
                incident.lease_renewed_at = Some(rfc3339(seen.renew_time));
                self.say(&mut incident, NoticeKind::Suspect, now, changes);
                self.settle(incident, changes);
                return;
            }
            if deleted {
                self.seen_ready.remove(name);
            }
            return;
        };
        let before = incident.clone();
        let said = changes.len();
        // A Lease judged stale must be seen renewed before the node counts as back.
        let renewed = match (parse(&incident.lease_renewed_at), seen) {
            (Some(stale_at), Some(seen)) => seen.renew_time != stale_at,
            _ => true,
        };
        let healthy = !down && stale.is_none() && renewed;
        if deleted {
            incident.deleted_at.get_or_insert_with(|| rfc3339(now));
            incident.healthy_since = None;
            if incident.phase == Phase::Suspect {
                self.go_down(&mut incident, now, down_reason, since, view);
                self.say(&mut incident, NoticeKind::NodeDown, now, changes);
            }
            if !self.close_deleted(&mut incident, now, changes) {
                if matches!(incident.phase, Phase::Down | Phase::NotRescheduled) {
                    self.judge(&mut incident, now, view, changes);
                }
                self.close_deleted(&mut incident, now, changes);
            }
        } else if healthy {
            // Nothing is judged while the node is up: its pods may go back to it.
            let healthy_since = incident.healthy_since.get_or_insert_with(|| rfc3339(now)).parse();
            let steady_from = healthy_since.unwrap_or(now).max(live_since);
            if seconds(steady_from, now) >= self.settings.stable_for.as_secs_f64() {
                incident.phase = Phase::Resolved;
                incident.resolved_at = Some(rfc3339(now));
                self.say(&mut incident, NoticeKind::Resolved, now, changes);
            }
        } else {
            if incident.healthy_since.take().is_some() {
                incident.flaps += 1;
            }
            if let Some(seen) = stale {
                incident.lease_renewed_at = Some(rfc3339(seen.renew_time));
            }
            match incident.phase {
                Phase::Suspect if down => {
                    self.go_down(&mut incident, now, down_reason, since, view);
                    self.say(&mut incident, NoticeKind::NodeDown, now, changes);
                }
                Phase::Down | Phase::NotRescheduled => self.judge(&mut incident, now, view, changes),
                // Once rescheduled, later pod churn is not this incident's:
                // it waits for the node to come back.
                _ => {}
            }
        }
        let last = changes[said..].last().map(|c| &c.incident).unwrap_or(&before);
        if incident != *last {
            changes.push(Change { incident: incident.clone(), notice: None });
        }
        self.keep(incident);
    }

    /// Keeps an open incident; forgets a closed one (and a deleted node).
    fn keep(&mut self, incident: Incident) {
        if incident.phase == Phase::Deleted {
            self.seen_ready.remove(&incident.node);
            self.leases.remove(&incident.node);
        }
        if !incident.phase.closed() {
            self.incidents.insert(incident.node.clone(), incident);
        }
    }

    /// Keeps a new incident, with a change for it if nothing was said of it this time.
    fn settle(&mut self, incident: Incident, changes: &mut Vec<Change>) {
        if changes.last().is_none_or(|c| c.incident != incident) {
            changes.push(Change { incident: incident.clone(), notice: None });
        }
        self.keep(incident);
    }

    /// Closes a deleted node's incident once its verdict is in, or at once
    /// if it held nothing that other nodes take over.
    fn close_deleted(&self, incident: &mut Incident, now: Timestamp, changes: &mut Vec<Change>) -> bool {
        let verdict_in = matches!(incident.phase, Phase::Rescheduled | Phase::NotRescheduled);
        let held_nothing = !incident.owners.iter().any(|o| o.owner.kind.reschedules());
        if !(verdict_in || held_nothing) {
            return false;
        }
        incident.phase = Phase::Deleted;
        incident.resolved_at = Some(rfc3339(now));
        self.say(incident, NoticeKind::NodeDeleted, now, changes);
        true
    }

    fn blank(&self) -> Incident {
        Incident {
            name: String::new(),
            kind: IncidentKind::Node,
            node: String::new(),
            phase: Phase::Suspect,
            started_at: String::new(),
            down_reason: None,
            lease_renewed_at: None,
            not_ready_since: None,
            detected_at: None,
            deadline: None,
            rescheduled_at: None,
            resolved_at: None,
            healthy_since: None,
            flaps: 0,
            deleted_at: None,
            owners: vec![],
            notices: vec![],
        }
    }

    /// A new incident of `node`, named after `evidence` (see [`Incident::name`]).
    fn new_incident(&mut self, node: &str, evidence: Timestamp, now: Timestamp) -> Incident {
        let mut ms = evidence.as_millisecond();
        if let Some(last) = self.named.get(node) {
            ms = ms.max(last + 1);
        }
        self.named.insert(node.to_owned(), ms);
        Incident { name: format!("{node}-{ms}"), node: node.into(), started_at: rfc3339(now), ..self.blank() }
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

    /// Decides `kind` for `incident`, unless decided before.
    fn say(&self, incident: &mut Incident, kind: NoticeKind, now: Timestamp, changes: &mut Vec<Change>) {
        if incident.notices.contains(&kind) {
            return;
        }
        incident.notices.push(kind);
        let notice = self.notice(incident, kind, now);
        changes.push(Change { incident: incident.clone(), notice: Some(notice) });
    }

    /// Brings the owners' verdicts up to date; rescheduled when all are
    /// back, not rescheduled once the deadline passes first.
    fn judge(&self, incident: &mut Incident, now: Timestamp, view: &View, changes: &mut Vec<Change>) {
        let past_deadline = parse(&incident.deadline).is_some_and(|d| now >= d);
        incident.owners = incident
            .owners
            .iter()
            .map(|o| {
                decide::reverdict(
                    o,
                    &view.deployments,
                    &view.stateful_sets,
                    &view.pods,
                    &incident.node,
                    past_deadline,
                )
            })
            .collect();
        let all_back = incident
            .owners
            .iter()
            .all(|o| matches!(o.verdict, Verdict::Rescheduled | Verdict::NotApplicable));
        match (incident.phase, all_back, past_deadline) {
            (Phase::Down | Phase::NotRescheduled, true, _) => {
                incident.phase = Phase::Rescheduled;
                incident.rescheduled_at = Some(rfc3339(now));
                self.say(incident, NoticeKind::Rescheduled, now, changes);
            }
            (Phase::Down, false, true) => {
                incident.phase = Phase::NotRescheduled;
                self.say(incident, NoticeKind::NotRescheduled, now, changes);
            }
            _ => {}
        }
    }

    fn notice(&self, incident: &Incident, kind: NoticeKind, now: Timestamp) -> Notice {
        let node = &incident.node;
        let pods: usize = incident.owners.iter().map(|o| o.pods.len()).sum();
        let seconds_to_rescheduled = match kind {
            NoticeKind::Rescheduled => parse(&incident.detected_at).map(|d| seconds(d, now)),
            _ => None,
        };
        let started = parse(&Some(incident.started_at.clone()));
        let lasted = started.map(|s| seconds(s, now)).unwrap_or_default();
        let flapped = match incident.flaps {
            0 => String::new(),
            1 => "; it went down again once after coming back".into(),
            n => format!("; it went down again {n} times after coming back"),
        };
        let summary = match (incident.kind, kind) {
            (IncidentKind::ControlPlaneUnreachable, NoticeKind::Resolved) => {
                let back = parse(&incident.resolved_at).unwrap_or(now);
                format!(
                    "the API server answers and every watch is synced again, after {:.1} s unreachable (since {}); node decisions resume",
                    started.map(|s| seconds(s, back)).unwrap_or_default(),
                    incident.started_at
                )
            }
            (_, NoticeKind::ControlPlaneUnreachable) => format!(
                "the alerter has not reached the API server (or synced its watches) since {}, {:.1} s: nothing is decided about nodes until it does",
                incident.started_at, lasted
            ),
            (_, NoticeKind::Suspect) => format!(
                "node {node} has not renewed its Lease since {} (the kubelet's clock): {} renewals missed as the alerter watched it; not marked NotReady yet",
                incident.lease_renewed_at.as_deref().unwrap_or("?"),
                self.settings.suspect_after_renewals
            ),
            (_, NoticeKind::NodeDown) => format!(
                "node {node} is {} (since {}): it held {pods} pods of {} owners",
                incident.down_reason.as_deref().unwrap_or("down"),
                incident.not_ready_since.as_deref().unwrap_or("?"),
                incident.owners.len()
            ),
            (_, NoticeKind::Rescheduled) if !incident.owners.iter().any(|o| o.owner.kind.reschedules()) => {
                format!("node {node} held no pods that other nodes take over: nothing to reschedule")
            }
            (_, NoticeKind::Rescheduled) => format!(
                "the pods node {node} held are back on other nodes, {:.1} s after it was seen down",
                seconds_to_rescheduled.unwrap_or_default()
            ),
            (_, NoticeKind::NotRescheduled) => {
                let short: Vec<String> = incident
                    .owners
                    .iter()
                    .filter(|o| o.verdict == Verdict::NotRescheduled)
                    .map(|o| format!("{}: {}", o.owner, o.reason.as_deref().unwrap_or("?")))
                    .collect();
                format!("the pods node {node} held are not all back by the deadline: {}", short.join("; "))
            }
            (_, NoticeKind::Resolved) => format!(
                "node {node} is Ready again and stayed so for {} s; the incident lasted {lasted:.1} s{flapped}",
                self.settings.stable_for.as_secs()
            ),
            (_, NoticeKind::NodeDeleted) => {
                let moving: Vec<&OwnerVerdict> =
                    incident.owners.iter().filter(|o| o.owner.kind.reschedules()).collect();
                let verdict = if moving.is_empty() {
                    "it held nothing that other nodes take over"
                } else if moving
                    .iter()
                    .all(|o| matches!(o.verdict, Verdict::Rescheduled | Verdict::NotApplicable))
                {
                    "its pods are back on other nodes"
                } else {
                    "its pods are not all back on other nodes"
                };
                format!("node {node} was deleted: {verdict}; the incident is closed{flapped}")
            }
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
            flaps: incident.flaps,
            logs_url: self.logs_link(incident, kind, now),
        }
    }

    /// The link to the incident's lines in the log store: the node's pods'
    /// and the rescheduling owners' (their pods' new homes included), from
    /// a minute before the node's last Lease renewal; to now once the
    /// incident is over, else ten minutes on, for the replacements' lines.
    fn logs_link(&self, incident: &Incident, kind: NoticeKind, now: Timestamp) -> Option<String> {
        let ui = self.settings.logs_ui.as_deref()?;
        if incident.node.is_empty() {
            return None;
        }
        let workloads = incident
            .owners
            .iter()
            .filter(|o| o.owner.kind.reschedules())
            .map(|o| (o.owner.namespace.as_str(), o.owner.name.as_str()));
        let query = crate::logs::incident_query(&incident.node, workloads);
        let first_sign = parse(&incident.lease_renewed_at)
            .into_iter()
            .chain(parse(&Some(incident.started_at.clone())))
            .min()
            .unwrap_or(now);
        let start = first_sign.checked_sub(crate::logs::BEFORE).unwrap_or(first_sign);
        let end = match kind {
            NoticeKind::Resolved | NoticeKind::NodeDeleted => now,
            _ => now.checked_add(crate::logs::AFTER_OPEN).unwrap_or(now),
        };
        let range = end.duration_since(start).as_secs().max(1) as u64;
        Some(crate::logs::ui_link(ui, &query, &rfc3339(end), range))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{api::apps::v1::Deployment, jiff::SignedDuration};

    use crate::fixtures::{deployment, lease, node, pod};

    fn settings() -> Settings {
        Settings { suspect_after_renewals: 2, ..Settings::defaults("vigil") }
    }

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    /// The recordings' origin: `after(s)` is `s` seconds later.
    fn after(seconds: f64) -> Timestamp {
        at("2026-01-01T00:00:00Z") + SignedDuration::from_secs_f64(seconds)
    }

    /// Live since a minute before the sequences start: past the settling after it became so.
    fn live() -> Feed {
        Feed::Live { since: after(-60.0) }
    }

    fn kinds(changes: &[Change]) -> Vec<NoticeKind> {
        changes.iter().filter_map(|c| c.notice.as_ref().map(|n| n.kind)).collect()
    }

    fn notices(changes: &[Change]) -> Vec<Notice> {
        changes.iter().filter_map(|c| c.notice.clone()).collect()
    }

    fn view<'a>(
        feed: Feed,
        nodes: &'a [Node],
        leases: &'a [Lease],
        pods: &'a [Pod],
        deployments: &'a [Deployment],
    ) -> View<'a> {
        View {
            feed,
            nodes: nodes.iter().collect(),
            leases: leases.iter().collect(),
            pods: pods.iter().collect(),
            deployments: deployments.iter().collect(),
            stateful_sets: vec![],
        }
    }

    /// A kubelet's Lease (40 s, renewed every 10 s) as the API server holds
    /// it at `t`: its latest renewal by then of `renewals` (seconds after the
    /// origin), stamped by a kubelet clock `lag` seconds behind.
    fn lease_at(node: &str, renewals: &[f64], lag: f64, t: f64) -> Lease {
        let last = renewals.iter().copied().filter(|r| *r <= t).fold(f64::NAN, f64::max);
        let last = if last.is_nan() { -1.0 } else { last };
        lease(node, &after(last - lag).to_string(), 40)
    }

    /// Renewals every `step` seconds from `from` up to `until`.
    fn every(from: f64, step: f64, until: f64) -> Vec<f64> {
        (0..).map(|i| from + step * i as f64).take_while(|t| *t <= until).collect()
    }

    fn ready(name: &str) -> Node {
        node(name).ready("True").build()
    }

    /// A worker holding two web pods and a DaemonSet pod, recorded as it dies:
    /// the Lease stops, the node controller marks it Unknown, the pods are
    /// evicted and come back Ready on the other worker, the node returns and
    /// stays up.
    #[test]
    fn a_dead_worker_goes_suspect_down_rescheduled_resolved() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let web = |name: &str, node: &str, ready: bool| {
            let p = pod("default", name).owned("ReplicaSet", "web-abc").hash("abc").on(node);
            if ready { p.ready().build() } else { p.build() }
        };
        let proxy = pod("kube-system", "proxy-w2").owned("DaemonSet", "kube-proxy").on("w2").ready().build();
        let web_deployment = [deployment("default", "web", 3)];
        let (w1_ready, w2_ready) = (ready("w1"), ready("w2"));
        let up = [w1_ready.clone(), w2_ready.clone()];
        let pods = [
            web("web-abc-1", "w1", true),
            web("web-abc-2", "w2", true),
            web("web-abc-3", "w2", true),
            proxy.clone(),
        ];
        let v = |at: &str, nodes: &[Node], leases: &[Lease], pods: &[Pod], tracker: &mut Tracker| {
            tracker.observe(self::at(at), &view(live(), nodes, leases, pods, &web_deployment))
        };

        // All well (w1's Lease lasts 10 minutes: it never goes stale here).
        let fresh = [lease("w1", "2026-01-01T00:00:59Z", 600), lease("w2", "2026-01-01T00:00:59Z", 40)];
        assert!(v("2026-01-01T00:01:00Z", &up, &fresh, &pods, &mut tracker).is_empty());
        let renewed = [lease("w1", "2026-01-01T00:00:59Z", 600), lease("w2", "2026-01-01T00:01:00Z", 40)];
        assert!(v("2026-01-01T00:01:01Z", &up, &renewed, &pods, &mut tracker).is_empty());

        // w2's kubelet stops renewing; 24 s of watching later (two 10 s
        // renewals missed, while w1's renewals keep arriving) it is suspect.
        let stale = [lease("w1", "2026-01-01T00:01:24Z", 600), lease("w2", "2026-01-01T00:01:00Z", 40)];
        let changes = v("2026-01-01T00:01:25Z", &up, &stale, &pods, &mut tracker);
        assert_eq!(kinds(&changes), [NoticeKind::Suspect]);
        assert!(
            changes[0]
                .notice
                .as_ref()
                .unwrap()
                .summary
                .contains("has not renewed its Lease since 2026-01-01T00:01:00Z")
        );
        // Named after the renewTime it stopped at, in milliseconds.
        assert_eq!(changes[0].incident.name, "w2-1767225660000");

        // The node controller marks it Unknown: down, with what it held.
        let w2_unknown = node("w2").ready("Unknown").since("2026-01-01T00:01:40Z").build();
        let w2_down = [w1_ready.clone(), w2_unknown];
        let changes = v("2026-01-01T00:01:41Z", &w2_down, &stale, &pods, &mut tracker);
        assert_eq!(kinds(&changes), [NoticeKind::NodeDown]);
        let down = changes[0].notice.clone().unwrap();
        assert_eq!(down.id, "w2-1767225660000/node-down");
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
        assert_eq!(kinds(&v("2026-01-01T00:01:50Z", &w2_down, &stale, &replacing, &mut tracker)), []);

        // 3/3 Ready on w1: rescheduled, where each pod went, and how long it took.
        let back =
            [web("web-abc-1", "w1", true), web("web-abc-4", "w1", true), web("web-abc-5", "w1", true), proxy];
        let changes = v("2026-01-01T00:01:53Z", &w2_down, &stale, &back, &mut tracker);
        assert_eq!(kinds(&changes), [NoticeKind::Rescheduled]);
        let rescheduled = changes[0].notice.clone().unwrap();
        assert_eq!(rescheduled.seconds_to_rescheduled, Some(12.0));
        let web_owner = &rescheduled.owners[0];
        assert_eq!((web_owner.verdict, web_owner.ready_elsewhere), (Verdict::Rescheduled, 3));
        assert!(web_owner.placements.iter().all(|p| p.node == "w1"));

        // Nothing new while it stays down; Ready again with its Lease
        // renewed, it is resolved once that has lasted 20 s.
        let later = [lease("w1", "2026-01-01T00:02:05Z", 600), lease("w2", "2026-01-01T00:01:00Z", 40)];
        assert_eq!(kinds(&v("2026-01-01T00:02:10Z", &w2_down, &later, &back, &mut tracker)), []);
        for (now, renewed) in [
            ("2026-01-01T00:02:30Z", "2026-01-01T00:02:29Z"),
            ("2026-01-01T00:02:40Z", "2026-01-01T00:02:39Z"),
        ] {
            let leases = [lease("w1", "2026-01-01T00:02:05Z", 600), lease("w2", renewed, 40)];
            assert_eq!(kinds(&v(now, &up, &leases, &back, &mut tracker)), [], "{now}");
        }
        let leases = [lease("w1", "2026-01-01T00:02:05Z", 600), lease("w2", "2026-01-01T00:02:49Z", 40)];
        let changes = v("2026-01-01T00:02:50Z", &up, &leases, &back, &mut tracker);
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
        let deployments = [deployment("monitoring", "prometheus", 1)];
        let up = [ready("w1"), ready("w2")];
        let on_w2 = [prom("w2")];
        let v = |nodes, pods| view(live(), nodes, &[], pods, &deployments);
        assert!(tracker.observe(at("2026-01-01T00:00:00Z"), &v(&up, &on_w2)).is_empty());
        let down = [ready("w1"), node("w2").ready("False").build()];
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
        let joining =
            [node("w3").created("2026-01-01T00:00:00Z").ready("False").since("2026-01-01T00:00:01Z").build()];
        let observe = |tracker: &mut Tracker, t: &str, nodes: &[Node]| {
            tracker.observe(at(t), &view(live(), nodes, &[], &[], &[]))
        };
        assert!(observe(&mut tracker, "2026-01-01T00:00:10Z", &joining).is_empty());

        // A new leader continues an incident whose node-down was decided.
        let mut seen = Tracker::new(settings(), vec![]);
        observe(&mut seen, "2026-01-01T00:00:00Z", &[ready("w3")]);
        let unknown = [node("w3").ready("Unknown").build()];
        let first = observe(&mut seen, "2026-01-01T00:00:20Z", &unknown);
        let incident = first[0].incident.clone();
        let mut next = Tracker::new(settings(), vec![incident]);
        let again = observe(&mut next, "2026-01-01T00:00:21Z", &unknown);
        assert!(kinds(&again).iter().all(|k| *k != NoticeKind::NodeDown), "{again:?}");
        // Nothing rescheduled away (no pods): that is decided at once.
        assert_eq!(kinds(&again), [NoticeKind::Rescheduled]);
    }

    /// The API server frozen for 15 s under three healthy nodes: the
    /// reflectors keep their last Leases, then resume (the Lease watch a
    /// few seconds after the others, one renewal at a time).
    #[test]
    fn a_watch_gap_pages_no_node_and_is_one_control_plane_incident() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let nodes = [ready("cp"), ready("w1"), ready("w2")];
        let kubelets = [
            ("cp", every(0.0, 10.0, 200.0)),
            ("w1", every(3.0, 10.0, 200.0)),
            ("w2", every(6.0, 10.0, 200.0)),
        ];
        let (frozen, thawed, leases_resume) = (60.0, 75.0, 80.0);
        let mut all = vec![];
        for tick in 0..120 {
            let t = tick as f64 + 0.5;
            let feed = if (frozen..thawed).contains(&t) {
                Feed::Lost { since: after(frozen) }
            } else if t >= thawed {
                Feed::Live { since: after(thawed) }
            } else {
                live()
            };
            // The Lease watch resumes with each kubelet's next renewal (the
            // renewals made while it was down never arrive).
            let leases: Vec<Lease> = kubelets
                .iter()
                .map(|(n, r)| {
                    let seen: Vec<f64> =
                        r.iter().copied().filter(|r| *r <= frozen || *r >= leases_resume).collect();
                    lease_at(n, &seen, 0.0, t)
                })
                .collect();
            all.extend(tracker.observe(after(t), &view(feed, &nodes, &leases, &[], &[])));
        }
        let said = notices(&all);
        let said: Vec<(NoticeKind, &str, &str)> =
            said.iter().map(|n| (n.kind, n.incident.as_str(), n.time.as_str())).collect();
        assert_eq!(
            said,
            [
                (
                    NoticeKind::ControlPlaneUnreachable,
                    "control-plane-1767225660000",
                    "2026-01-01T00:01:10.5Z"
                ),
                (NoticeKind::Resolved, "control-plane-1767225660000", "2026-01-01T00:01:15.5Z"),
            ]
        );
        let resolved = all.iter().rev().find_map(|c| c.notice.as_ref()).unwrap();
        assert!(resolved.summary.contains("after 15.0 s unreachable"), "{}", resolved.summary);
        assert_eq!(all.last().unwrap().incident.kind, IncidentKind::ControlPlaneUnreachable);
        assert_eq!(tracker.open().count(), 0);
    }

    /// Only the leader's own view was cut off: another replica took the
    /// Lease. The deposed one closes the incident it paged.
    #[test]
    fn a_deposed_replica_closes_the_outage_it_paged() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let nodes = [ready("w1")];
        let lost = Feed::Lost { since: after(1.0) };
        tracker.observe(after(0.0), &view(live(), &nodes, &[], &[], &[]));
        assert_eq!(
            kinds(&tracker.observe(after(12.0), &view(lost, &nodes, &[], &[], &[]))),
            [NoticeKind::ControlPlaneUnreachable]
        );
        let closed = tracker.close_outage(after(30.0)).unwrap();
        assert_eq!(
            closed.notice.map(|n| (n.kind, n.incident)),
            Some((NoticeKind::Resolved, "control-plane-1767225601000".to_owned()))
        );
        assert_eq!(tracker.open().count(), 0);
        assert!(tracker.close_outage(after(31.0)).is_none());
    }

    /// A Lease watch that stops delivering without an error (the feed
    /// still says live): every Lease stops at once, which no node does.
    #[test]
    fn a_silent_lease_watch_makes_no_suspect() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let nodes = [ready("cp"), ready("w1"), ready("w2")];
        let kubelets = [
            ("cp", every(0.0, 10.0, 200.0)),
            ("w1", every(3.0, 10.0, 200.0)),
            ("w2", every(6.0, 10.0, 200.0)),
        ];
        for tick in 0..120 {
            let t = tick as f64 + 0.5;
            let leases: Vec<Lease> = kubelets.iter().map(|(n, r)| lease_at(n, r, 0.0, t.min(40.0))).collect();
            let changes = tracker.observe(after(t), &view(live(), &nodes, &leases, &[], &[]));
            assert!(changes.is_empty(), "at {t} s: {changes:?}");
        }
    }

    #[test]
    fn nothing_is_decided_about_nodes_while_the_feed_is_lost() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let observe = |tracker: &mut Tracker, t: f64, feed: Feed, nodes: &[Node]| {
            kinds(&tracker.observe(after(t), &view(feed, nodes, &[], &[], &[])))
        };
        assert_eq!(observe(&mut tracker, 0.0, live(), &[ready("w1")]), []);
        let lost = Feed::Lost { since: after(1.0) };
        let unknown = [node("w1").ready("Unknown").since("2026-01-01T00:00:02Z").build()];
        assert_eq!(observe(&mut tracker, 2.0, lost, &unknown), []);
        assert_eq!(observe(&mut tracker, 5.0, lost, &unknown), []);
        let back = Feed::Live { since: after(6.0) };
        // Held while the view settles; still down after `stable_for`, reported.
        assert_eq!(observe(&mut tracker, 6.0, back, &unknown), []);
        assert_eq!(observe(&mut tracker, 25.5, back, &unknown), []);
        let said = tracker.observe(after(26.0), &view(back, &unknown, &[], &[], &[]));
        let said: Vec<(NoticeKind, String)> =
            notices(&said).into_iter().map(|n| (n.kind, n.incident)).collect();
        assert_eq!(said, [(NoticeKind::NodeDown, "w1-1767225602000".to_owned())]);
    }

    /// After a 15 s freeze with an 8 s node-monitor grace, the node
    /// controller marks every node Unknown once the API server is back;
    /// each kubelet's next status update makes it Ready again.
    #[test]
    fn the_node_controllers_unknowns_after_a_silence_page_no_node() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let names = ["cp", "w1", "w2"];
        let all_ready: Vec<Node> = names.iter().map(|n| ready(n)).collect();
        let unknown: Vec<Node> =
            names.iter().map(|n| node(n).ready("Unknown").since("2026-01-01T00:00:33Z").build()).collect();
        let mut said = vec![];
        for tick in 0..90 {
            let t = tick as f64 + 0.5;
            let feed = match t {
                t if t < 10.0 => live(),
                t if t < 25.0 => Feed::Lost { since: after(10.0) },
                _ => Feed::Live { since: after(25.0) },
            };
            let nodes = if (33.0..36.0).contains(&t) { &unknown } else { &all_ready };
            said.extend(kinds(&tracker.observe(after(t), &view(feed, nodes, &[], &[], &[]))));
        }
        assert_eq!(said, [NoticeKind::ControlPlaneUnreachable, NoticeKind::Resolved]);
        assert_eq!(tracker.open().count(), 0);
    }

    /// A kubelet whose clock is 10 s behind the alerter's, renewing every
    /// 10 s, one renewal a second late (a busy machine): its renewTimes look
    /// 21 s old to a clock, and are renewals all the same.
    #[test]
    fn a_kubelet_clock_behind_is_never_suspect() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let nodes = [ready("cp"), ready("w1"), ready("w2")];
        let mut w2 = every(6.0, 10.0, 56.0);
        w2.extend(every(67.0, 10.0, 200.0));
        let kubelets =
            [("cp", every(0.0, 10.0, 200.0), 0.0), ("w1", every(3.0, 10.0, 200.0), 0.0), ("w2", w2, 10.0)];
        for tick in 0..240 {
            let t = tick as f64 * 0.5;
            let leases: Vec<Lease> = kubelets.iter().map(|(n, r, lag)| lease_at(n, r, *lag, t)).collect();
            let changes = tracker.observe(after(t), &view(live(), &nodes, &leases, &[], &[]));
            assert!(changes.is_empty(), "at {t} s: {changes:?}");
        }
    }

    /// Down, back, down again within `stable_for`, back for good: one
    /// incident, one node-down, resolved 20 s after the last return.
    #[test]
    fn a_flapping_node_is_one_incident() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let w2 = |t: u32| match t {
            10..20 => node("w2").ready("False").since("2026-01-01T00:00:09Z").build(),
            20..30 => node("w2").ready("True").since("2026-01-01T00:00:19Z").build(),
            30..40 => node("w2").ready("False").since("2026-01-01T00:00:29Z").build(),
            _ => node("w2").ready("True").since("2026-01-01T00:00:39Z").build(),
        };
        let mut all = vec![];
        for t in 0..80 {
            let nodes = [ready("w1"), w2(t)];
            all.extend(tracker.observe(after(t as f64), &view(live(), &nodes, &[], &[], &[])));
        }
        let said = notices(&all);
        let said: Vec<(NoticeKind, &str, &str, u32)> =
            said.iter().map(|n| (n.kind, n.incident.as_str(), n.time.as_str(), n.flaps)).collect();
        assert_eq!(
            said,
            [
                (NoticeKind::NodeDown, "w2-1767225609000", "2026-01-01T00:00:10Z", 0),
                (NoticeKind::Rescheduled, "w2-1767225609000", "2026-01-01T00:00:11Z", 0),
                (NoticeKind::Resolved, "w2-1767225609000", "2026-01-01T00:01:00Z", 1),
            ]
        );
        let resolved = all.iter().rev().find_map(|c| c.notice.as_ref()).unwrap();
        assert!(resolved.summary.contains("went down again once"), "{}", resolved.summary);
        assert_eq!(all.last().unwrap().incident.flaps, 1);
        assert_eq!(tracker.open().count(), 0);
    }

    #[test]
    fn a_deleted_node_closes_its_incident_once_the_verdict_is_in() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let web = |name: &str, node: &str, ready: bool| {
            let p = pod("default", name).owned("ReplicaSet", "web-abc").hash("abc").on(node);
            if ready { p.ready().build() } else { p.build() }
        };
        let deployments = [deployment("default", "web", 2)];
        let all_up = [ready("w1"), ready("w2"), ready("w3")];
        let before = [web("web-abc-1", "w1", true), web("web-abc-2", "w2", true)];
        let mut observe = |t: f64, nodes: &[Node], pods: &[Pod]| {
            tracker.observe(after(t), &view(live(), nodes, &[], pods, &deployments))
        };
        assert!(observe(0.0, &all_up, &before).is_empty());

        // w3 held nothing: down and closed at once. w2 held a web pod: down, open.
        let gone = [ready("w1")];
        let changes = observe(5.0, &gone, &before);
        let said: Vec<(NoticeKind, String)> =
            notices(&changes).into_iter().map(|n| (n.kind, n.node)).collect();
        assert_eq!(
            said,
            [
                (NoticeKind::NodeDown, "w2".to_owned()),
                (NoticeKind::NodeDown, "w3".to_owned()),
                (NoticeKind::NodeDeleted, "w3".to_owned())
            ]
        );
        let w3 = changes.iter().rev().find(|c| c.incident.node == "w3").unwrap();
        assert_eq!(
            (w3.incident.phase, w3.incident.down_reason.as_deref()),
            (Phase::Deleted, Some("Deleted"))
        );
        assert!(w3.notice.as_ref().unwrap().summary.contains("held nothing"));

        let replacing = [web("web-abc-1", "w1", true), web("web-abc-3", "w1", false)];
        assert_eq!(kinds(&observe(6.0, &gone, &replacing)), []);
        let back = [web("web-abc-1", "w1", true), web("web-abc-3", "w1", true)];
        let changes = observe(8.0, &gone, &back);
        assert_eq!(kinds(&changes), [NoticeKind::Rescheduled, NoticeKind::NodeDeleted]);
        let closed = &changes.last().unwrap().incident;
        assert_eq!(closed.phase, Phase::Deleted);
        assert!(changes[1].notice.as_ref().unwrap().summary.contains("its pods are back on other nodes"));
        assert!(observe(9.0, &gone, &back).is_empty());
        assert_eq!(tracker.open().count(), 0);
    }

    /// With no stability wait, a node down, up and down again within one
    /// second of its Ready condition (which has second precision).
    #[test]
    fn two_outages_in_one_second_have_two_names() {
        let settings = Settings { stable_for: Duration::ZERO, ..settings() };
        let mut tracker = Tracker::new(settings.clone(), vec![]);
        let w2 = |status: &str| [node("w2").ready(status).since("2026-01-01T00:00:10Z").build()];
        let observe = |tracker: &mut Tracker, t: f64, status: &str| {
            tracker.observe(after(t), &view(live(), &w2(status), &[], &[], &[]))
        };
        observe(&mut tracker, 0.0, "True");
        let first = observe(&mut tracker, 10.2, "False");
        assert_eq!(kinds(&observe(&mut tracker, 10.4, "True")), [NoticeKind::Resolved]);
        let second = observe(&mut tracker, 10.6, "False");
        let (first, second) = (notices(&first).remove(0), notices(&second).remove(0));
        assert_eq!((first.kind, second.kind), (NoticeKind::NodeDown, NoticeKind::NodeDown));
        assert_eq!(first.incident, "w2-1767225610000");
        assert_eq!(second.incident, "w2-1767225610001");
        assert_ne!(first.id, second.id);

        // Another replica that knows the first incident names the second alike.
        let closed = Incident { phase: Phase::Resolved, ..tracker_incident(&first) };
        let mut other = Tracker::new(settings, vec![closed]);
        observe(&mut other, 10.4, "True");
        let again = observe(&mut other, 10.6, "False");
        assert_eq!(notices(&again)[0].incident, "w2-1767225610001");
    }

    fn tracker_incident(notice: &Notice) -> Incident {
        Incident {
            name: notice.incident.clone(),
            node: notice.node.clone(),
            started_at: notice.time.clone(),
            notices: vec![notice.kind],
            ..Tracker::new(settings(), vec![]).blank()
        }
    }

    /// A Deployment `web` with its one pod on w2, which goes Unknown at 10 s:
    /// its pods, the Deployment, the nodes then, and what that changed.
    fn web_on_w2_goes_down(tracker: &mut Tracker) -> ([Pod; 1], [Deployment; 1], [Node; 2], Vec<Change>) {
        let web =
            pod("default", "web-abc-2").owned("ReplicaSet", "web-abc").hash("abc").on("w2").ready().build();
        let pods = [web];
        let web_deployment = [deployment("default", "web", 2)];
        let up = [ready("w1"), ready("w2")];
        let down = [ready("w1"), node("w2").ready("Unknown").since("2026-01-01T00:00:09Z").build()];
        assert!(tracker.observe(after(0.0), &view(live(), &up, &[], &pods, &web_deployment)).is_empty());
        let changes = tracker.observe(after(10.0), &view(live(), &down, &[], &pods, &web_deployment));
        (pods, web_deployment, down, changes)
    }

    #[test]
    fn a_deployment_deleted_during_the_incident_is_owed_nothing() {
        let settings = Settings { verify_deadline: Some(Duration::from_secs(30)), ..settings() };
        let mut tracker = Tracker::new(settings, vec![]);
        let (_, _, down, changes) = web_on_w2_goes_down(&mut tracker);
        assert_eq!(kinds(&changes), [NoticeKind::NodeDown]);
        // `kubectl delete deployment web`: its pods go with it.
        assert_eq!(
            kinds(&tracker.observe(after(20.0), &view(live(), &down, &[], &[], &[]))),
            [NoticeKind::Rescheduled]
        );
        let changes = tracker.observe(after(41.0), &view(live(), &down, &[], &[], &[]));
        assert_eq!(kinds(&changes), []);
        let incident = tracker.open().next().unwrap();
        assert_eq!(incident.phase, Phase::Rescheduled);
        assert_eq!(incident.owners[0].verdict, Verdict::NotApplicable);
        assert_eq!(
            incident.owners[0].reason.as_deref(),
            Some("its Deployment was deleted during the incident")
        );
    }

    #[test]
    fn notices_link_the_nodes_and_its_workloads_logs_over_the_incident() {
        let ui = "http://10.0.0.5:9428/select/vmui/";
        let mut tracker = Tracker::new(Settings { logs_ui: Some(ui.into()), ..settings() }, vec![]);
        let (pods, web_deployment, _, changes) = web_on_w2_goes_down(&mut tracker);
        let down_notice = notices(&changes).into_iter().next().expect("node-down");
        let link = down_notice.logs_url.expect("a link to the logs");
        assert!(link.starts_with(ui), "{link}");
        let (query, end, range) = crate::logs::parse_link(&link).unwrap();
        assert_eq!(query, crate::logs::incident_query("w2", [("default", "web")]));
        // Open: ten minutes on from the notice, from a minute before it started.
        assert_eq!(end, (after(10.0) + SignedDuration::from_secs(600)).to_string());
        assert_eq!(range, 660);
        let back = [ready("w1"), ready("w2")];
        let mut resolved = None;
        for t in [20.0, 60.0, 90.0] {
            let changes = tracker.observe(after(t), &view(live(), &back, &[], &pods, &web_deployment));
            resolved = resolved.or(notices(&changes).into_iter().find(|n| n.kind == NoticeKind::Resolved));
        }
        let resolved = resolved.expect("resolved");
        let (_, end, _) = crate::logs::parse_link(resolved.logs_url.as_deref().unwrap()).unwrap();
        // Over: up to the notice itself.
        assert_eq!(end, resolved.time);
        let plain = Tracker::new(settings(), vec![]);
        let incident = Incident { node: "w2".into(), ..plain.blank() };
        assert!(tracker.notice(&incident, NoticeKind::NodeDown, after(1.0)).logs_url.is_some());
        let plain = plain.notice(&incident, NoticeKind::NodeDown, after(1.0));
        assert_eq!(plain.logs_url, None, "no log store configured, no link");
    }

    #[test]
    fn a_node_already_notready_when_the_leader_starts_is_reported() {
        let mut tracker = Tracker::new(settings(), vec![]);
        let nodes = [
            ready("w1"),
            node("w2").created("2025-12-01T00:00:00Z").ready("False").since("2026-01-01T00:00:00Z").build(),
            // Joining: NotReady since it registered.
            node("w3").created("2026-01-01T00:00:30Z").ready("False").since("2026-01-01T00:00:31Z").build(),
        ];
        let changes = tracker.observe(after(40.0), &view(live(), &nodes, &[], &[], &[]));
        let said: Vec<(NoticeKind, String)> =
            notices(&changes).into_iter().map(|n| (n.kind, n.incident)).collect();
        assert_eq!(said, [(NoticeKind::NodeDown, "w2-1767225600000".to_owned())]);
    }

    /// The leader (a) decides suspect for w2; at 60 s the other replica
    /// takes over, either continuing the stored incident (b) or, had the
    /// store been lost, on its own observations (c). The node is marked
    /// Unknown at 90 s.
    #[test]
    fn a_takeover_names_the_outage_alike_and_decides_nothing_twice() {
        let nodes_at = |t: f64| {
            let w2 = if t >= 90.0 {
                node("w2").ready("Unknown").since("2026-01-01T00:01:30Z").build()
            } else {
                ready("w2")
            };
            [ready("cp"), ready("w1"), w2]
        };
        let kubelets = [
            ("cp", every(0.0, 10.0, 200.0)),
            ("w1", every(3.0, 10.0, 200.0)),
            ("w2", every(6.0, 10.0, 36.0)),
        ];
        let observe = |tracker: &mut Tracker, t: f64, feed: Feed| {
            let leases: Vec<Lease> = kubelets.iter().map(|(n, r)| lease_at(n, r, 0.0, t)).collect();
            notices(&tracker.observe(after(t), &view(feed, &nodes_at(t), &leases, &[], &[])))
        };
        let mut a = Tracker::new(settings(), vec![]);
        let mut a_said = vec![];
        for tick in 0..60 {
            a_said.extend(observe(&mut a, tick as f64 + 0.5, live()));
        }
        let suspect: Vec<(NoticeKind, String)> = a_said.iter().map(|n| (n.kind, n.id.clone())).collect();
        assert_eq!(suspect, [(NoticeKind::Suspect, "w2-1767225636000/suspect".to_owned())]);

        let taken_over = Feed::Live { since: after(60.0) };
        let mut b = Tracker::new(settings(), a.open().cloned().collect());
        let mut c = Tracker::new(settings(), vec![]);
        let (mut b_said, mut c_said) = (vec![], vec![]);
        for tick in 60..120 {
            let t = tick as f64 + 0.5;
            a_said.extend(observe(&mut a, t, live()));
            b_said.extend(observe(&mut b, t, taken_over));
            c_said.extend(observe(&mut c, t, taken_over));
        }
        let ids = |said: &[Notice]| said.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&a_said),
            ["w2-1767225636000/suspect", "w2-1767225636000/node-down", "w2-1767225636000/rescheduled"]
        );
        assert_eq!(ids(&b_said), ids(&a_said)[1..]);
        assert_eq!(ids(&c_said), ids(&a_said));
    }
}
