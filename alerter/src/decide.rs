//! The alerter's decisions, as pure functions of what the cluster holds:
//! is a node ready, is its Lease stale, who owns a pod, is an owner back,
//! and if not, why. No I/O: the tracker calls these on reflector snapshots,
//! the unit tests on recorded objects.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        coordination::v1::Lease,
        core::v1::{Node, Pod},
    },
    jiff::Timestamp,
};

use crate::model::{Owner, OwnerKind, OwnerVerdict, Placement, Verdict};

/// A node's Ready condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady,
    /// The node controller stopped hearing from the kubelet.
    Unknown,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "Ready",
            Readiness::NotReady => "NotReady",
            Readiness::Unknown => "Unknown",
        }
    }
}

/// The node's Ready condition and when it last changed; a node without one
/// (just registered) counts as Ready with no time: nothing has gone wrong yet.
pub fn readiness(node: &Node) -> (Readiness, Option<Timestamp>) {
    let condition = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match condition {
        None => (Readiness::Ready, None),
        Some(c) => {
            let since = c.last_transition_time.as_ref().map(|t| t.0);
            match c.status.as_str() {
                "True" => (Readiness::Ready, since),
                "False" => (Readiness::NotReady, since),
                _ => (Readiness::Unknown, since),
            }
        }
    }
}

/// A Lease's renewTime: compared only with its own earlier values, never
/// with a clock (the kubelet's clock is not the alerter's).
pub fn renew_time(lease: &Lease) -> Option<Timestamp> {
    Some(lease.spec.as_ref()?.renew_time.as_ref()?.0)
}

/// The kubelet renews its Lease every quarter of the Lease's duration
/// (`nodeLeaseRenewIntervalFraction`).
pub fn renewal_interval(lease: &Lease) -> Duration {
    let seconds = lease.spec.as_ref().and_then(|s| s.lease_duration_seconds).unwrap_or(40).max(1);
    Duration::from_secs(seconds as u64) / 4
}

/// What the alerter saw of one Lease, on its own clock (client-go's
/// "observed time"): the last renewTime value, when it first saw that
/// value, and when it last saw the value change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSeen {
    pub renew_time: Timestamp,
    pub observed_at: Timestamp,
    /// None while the value is the first one seen: seeing a Lease is not seeing it renewed.
    pub changed_at: Option<Timestamp>,
    pub interval: Duration,
}

impl LeaseSeen {
    /// `previous` brought up to date with `lease` as seen at `now`.
    pub fn observe(previous: Option<LeaseSeen>, lease: &Lease, now: Timestamp) -> Option<LeaseSeen> {
        let renew_time = renew_time(lease)?;
        let interval = renewal_interval(lease);
        Some(match previous {
            Some(seen) if seen.renew_time == renew_time => LeaseSeen { interval, ..seen },
            Some(_) => LeaseSeen { renew_time, observed_at: now, changed_at: Some(now), interval },
            None => LeaseSeen { renew_time, observed_at: now, changed_at: None, interval },
        })
    }
}

/// Whether a Lease is stale: the alerter has watched it, with the feed
/// live, for longer than `renewals` renewal intervals without seeing its
/// value change, while it did see another Lease renewed within the last
/// interval. The last condition tells a silent node from a silent feed: if
/// no Lease changes, the watch or the control plane is what stopped.
pub fn lease_stale(
    seen: &LeaseSeen,
    now: Timestamp,
    live_since: Timestamp,
    other_renewed_at: Option<Timestamp>,
    renewals: u32,
) -> bool {
    let watched_since = seen.observed_at.max(live_since);
    let allowed = seen.interval * renewals;
    let unchanged_for = now.duration_since(watched_since);
    let feed_carries_renewals =
        other_renewed_at.is_some_and(|t| now.duration_since(t).as_secs_f64() <= seen.interval.as_secs_f64());
    unchanged_for.as_secs_f64() > allowed.as_secs_f64() && feed_carries_renewals
}

/// Whether a node this alerter has not seen Ready is plausibly down rather
/// than joining: its Ready condition is Unknown (the node controller stopped
/// hearing from a kubelet that had reported), or it is NotReady since a
/// change more than `joining_grace` after the node registered (a joining
/// node's condition is NotReady from registration on; a later change means
/// it had been Ready). Cluster-visible times only, compared with each other,
/// so every replica decides alike.
pub fn plausibly_not_joining(node: &Node, joining_grace: Duration) -> bool {
    match readiness(node) {
        (Readiness::Ready, _) => false,
        (Readiness::Unknown, _) => true,
        (Readiness::NotReady, since) => {
            let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
            match (created, since) {
                (Some(created), Some(since)) => {
                    since.duration_since(created).as_secs_f64() > joining_grace.as_secs_f64()
                }
                _ => false,
            }
        }
    }
}

/// The node a pod is bound to.
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

pub fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// A pod's owner: its controller, a ReplicaSet's Deployment (the ReplicaSet
/// is named after it plus the pod template hash), or the pod itself.
pub fn owner_of(pod: &Pod) -> Owner {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let controller =
        pod.metadata.owner_references.as_ref().and_then(|o| o.iter().find(|o| o.controller == Some(true)));
    let Some(controller) = controller else {
        return Owner { kind: OwnerKind::Bare, namespace, name: name_of(pod) };
    };
    let kind = match controller.kind.as_str() {
        "ReplicaSet" => {
            let hash = pod.metadata.labels.as_ref().and_then(|l| l.get("pod-template-hash"));
            if let Some(deployment) = hash.and_then(|h| controller.name.strip_suffix(&format!("-{h}"))) {
                return Owner { kind: OwnerKind::Deployment, namespace, name: deployment.into() };
            }
            OwnerKind::ReplicaSet
        }
        "StatefulSet" => OwnerKind::StatefulSet,
        "DaemonSet" => OwnerKind::DaemonSet,
        "Job" => OwnerKind::Job,
        _ => OwnerKind::Other,
    };
    Owner { kind, namespace, name: controller.name.clone() }
}

/// The pods bound to `node`, by owner (in a stable order).
pub fn affected(pods: &[&Pod], node: &str) -> BTreeMap<Owner, Vec<String>> {
    let mut owners: BTreeMap<Owner, Vec<String>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| node_of(p) == Some(node)) {
        owners.entry(owner_of(pod)).or_default().push(name_of(pod));
    }
    owners.values_mut().for_each(|pods| pods.sort());
    owners
}

pub use alerter_api::pod_ready;

/// How many replicas an owner wants, from the objects the alerter watches.
pub fn desired(owner: &Owner, deployments: &[&Deployment], stateful_sets: &[&StatefulSet]) -> Option<i32> {
    let same = |namespace: Option<&String>, name: Option<&String>| {
        namespace.map(String::as_str) == Some(owner.namespace.as_str())
            && name.map(String::as_str) == Some(owner.name.as_str())
    };
    match owner.kind {
        OwnerKind::Deployment => deployments
            .iter()
            .find(|d| same(d.metadata.namespace.as_ref(), d.metadata.name.as_ref()))
            .map(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
        OwnerKind::StatefulSet => stateful_sets
            .iter()
            .find(|s| same(s.metadata.namespace.as_ref(), s.metadata.name.as_ref()))
            .map(|s| s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
        _ => None,
    }
}

/// When a pod is evicted from a not-ready or unreachable node: after its
/// toleration's seconds; at once without a toleration; never (None) when it
/// tolerates the taint without a limit, as DaemonSet pods do.
pub fn eviction_after(pod: &Pod) -> Option<Duration> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    let matching: Vec<Option<i64>> = tolerations
        .into_iter()
        .flatten()
        .filter(|t| {
            let key_matches = match t.key.as_deref() {
                Some(key) => matches!(key, "node.kubernetes.io/not-ready" | "node.kubernetes.io/unreachable"),
                // An empty key with Exists tolerates every taint.
                None => t.operator.as_deref() == Some("Exists"),
            };
            key_matches && t.effect.as_deref().is_none_or(|e| e == "NoExecute")
        })
        .map(|t| t.toleration_seconds)
        .collect();
    if matching.is_empty() {
        return Some(Duration::ZERO);
    }
    if matching.iter().any(Option::is_none) {
        return None;
    }
    matching.into_iter().flatten().max().map(|s| Duration::from_secs(s.max(0) as u64))
}

/// Where an owner stands: its Ready pods on other nodes against what it
/// wants, and, once the deadline has passed, why it is short.
pub fn verdict(
    owner: &Owner,
    on_node: &[String],
    desired: Option<i32>,
    pods: &[&Pod],
    dead_node: &str,
    past_deadline: bool,
) -> OwnerVerdict {
    // The namespace first: owner_of allocates, and this runs on every wake.
    let mine: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| p.metadata.namespace.as_deref().unwrap_or_default() == owner.namespace)
        .filter(|p| owner_of(p) == *owner)
        .collect();
    let ready_elsewhere: Vec<&Pod> =
        mine.iter().copied().filter(|p| node_of(p).is_some_and(|n| n != dead_node) && pod_ready(p)).collect();
    let placements = ready_elsewhere
        .iter()
        .map(|p| Placement { pod: name_of(p), node: node_of(p).unwrap_or_default().into() })
        .collect();
    let base = OwnerVerdict {
        owner: owner.clone(),
        pods: on_node.to_vec(),
        desired,
        ready_elsewhere: ready_elsewhere.len() as i32,
        verdict: Verdict::Pending,
        reason: None,
        placements,
    };
    if !owner.kind.reschedules() {
        let reason = match owner.kind {
            OwnerKind::DaemonSet => "a DaemonSet runs one pod per node: it comes back with the node",
            OwnerKind::Bare => "a pod without a controller: nothing recreates it",
            _ => "its controller is not one the alerter follows",
        };
        return OwnerVerdict { verdict: Verdict::NotApplicable, reason: Some(reason.into()), ..base };
    }
    let Some(want) = desired else {
        return OwnerVerdict {
            verdict: Verdict::NotApplicable,
            reason: Some("its controller is gone".into()),
            ..base
        };
    };
    if base.ready_elsewhere >= want {
        return OwnerVerdict { verdict: Verdict::Rescheduled, ..base };
    }
    if !past_deadline {
        return base;
    }
    let reason = why_not(owner, &mine, dead_node);
    OwnerVerdict { verdict: Verdict::NotRescheduled, reason: Some(reason), ..base }
}

/// An owner's verdict brought up to date: as [`verdict`], except that an
/// owner that existed when the node went down and is gone now was deleted
/// during the incident; nothing is owed for it.
pub fn reverdict(
    previous: &OwnerVerdict,
    deployments: &[&Deployment],
    stateful_sets: &[&StatefulSet],
    pods: &[&Pod],
    dead_node: &str,
    past_deadline: bool,
) -> OwnerVerdict {
    let owner = &previous.owner;
    let now = desired(owner, deployments, stateful_sets);
    if owner.kind.reschedules() && previous.desired.is_some() && now.is_none() {
        let ready_elsewhere = verdict(owner, &previous.pods, None, pods, dead_node, false);
        return OwnerVerdict {
            desired: previous.desired,
            verdict: Verdict::NotApplicable,
            reason: Some(format!("its {:?} was deleted during the incident", owner.kind)),
            ..ready_elsewhere
        };
    }
    verdict(owner, &previous.pods, now, pods, dead_node, past_deadline)
}

/// What keeps an owner short of its replicas, as found in its pods.
pub fn why_not(owner: &Owner, pods: &[&Pod], dead_node: &str) -> String {
    let on_dead: Vec<&&Pod> = pods.iter().filter(|p| node_of(p) == Some(dead_node)).collect();
    if owner.kind == OwnerKind::StatefulSet
        && let Some(stuck) = on_dead.iter().find(|p| p.metadata.deletion_timestamp.is_some())
    {
        return format!(
            "pod {} is stuck terminating on {dead_node}: a StatefulSet's pod is not replaced until the node confirms it stopped. Once you have confirmed the node is down, run `kubectl taint nodes {dead_node} node.kubernetes.io/out-of-service=nodeshutdown:NoExecute` (the alerter never does)",
            name_of(stuck)
        );
    }
    for pod in pods.iter().filter(|p| node_of(p) != Some(dead_node) && !pod_ready(p)) {
        let status = pod.status.as_ref();
        let unschedulable = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False"));
        if let Some(condition) = unschedulable {
            let message = condition.message.clone().unwrap_or_default();
            // The scheduler's words for a local volume on another node (1.34, and older).
            if message.contains("didn't match PersistentVolume's node affinity")
                || message.contains("volume node affinity conflict")
            {
                return format!(
                    "pod {} is Pending: its volume is bound to {dead_node} (a local volume), so no other node can run it ({message})",
                    name_of(pod)
                );
            }
            return format!("pod {} is Pending and unschedulable: {message}", name_of(pod));
        }
        let waiting = status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref());
        for state in waiting {
            match state.reason.as_deref() {
                Some("ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull") => {
                    return format!(
                        "pod {} cannot start: its image is missing on {} ({})",
                        name_of(pod),
                        node_of(pod).unwrap_or("its node"),
                        state.message.clone().unwrap_or_default()
                    );
                }
                Some("CrashLoopBackOff") => {
                    return format!(
                        "pod {} is crash looping on {}",
                        name_of(pod),
                        node_of(pod).unwrap_or("its node")
                    );
                }
                _ => {}
            }
        }
    }
    if !on_dead.is_empty() && on_dead.iter().all(|p| p.metadata.deletion_timestamp.is_none()) {
        let after = on_dead.iter().filter_map(|p| eviction_after(p)).max().unwrap_or_default();
        return format!(
            "its pods are still bound to {dead_node}: they are evicted only when their not-ready/unreachable toleration ends ({} s)",
            after.as_secs()
        );
    }
    "its replacement pods are not Ready yet".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{node, pod};

    #[test]
    fn readiness_follows_the_ready_condition() {
        assert_eq!(readiness(&node("n1").ready("True").build()).0, Readiness::Ready);
        assert_eq!(readiness(&node("n1").ready("False").build()).0, Readiness::NotReady);
        assert_eq!(readiness(&node("n1").ready("Unknown").build()).0, Readiness::Unknown);
    }

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    #[test]
    fn a_lease_is_stale_after_the_missed_renewals_on_the_alerters_clock() {
        let lease = |renewed: &str| crate::fixtures::lease("n1", renewed, 40);
        let live = at("2026-01-01T00:00:00Z");
        // First seen at 00:00:30 (its value says 1999: the kubelet's clock is not ours).
        let seen =
            LeaseSeen::observe(None, &lease("1999-01-01T00:00:00Z"), at("2026-01-01T00:00:30Z")).unwrap();
        assert_eq!(seen.changed_at, None);
        let other = Some(at("2026-01-01T00:00:49Z"));
        // 40 s leases are renewed every 10 s: two missed renewals is 20 s of watching.
        assert!(!lease_stale(&seen, at("2026-01-01T00:00:50Z"), live, other, 2));
        assert!(lease_stale(&seen, at("2026-01-01T00:00:51Z"), live, other, 2));
        // Not when no other Lease was renewed in the last interval: the feed is silent.
        assert!(!lease_stale(&seen, at("2026-01-01T00:01:00Z"), live, other, 2));
        assert!(!lease_stale(&seen, at("2026-01-01T00:00:51Z"), live, None, 2));
        // Not until 20 s after the feed came back.
        assert!(!lease_stale(&seen, at("2026-01-01T00:00:51Z"), at("2026-01-01T00:00:40Z"), other, 2));
        // A new value, whatever it says, is a renewal seen now.
        let renewed =
            LeaseSeen::observe(Some(seen), &lease("1999-01-01T00:00:10Z"), at("2026-01-01T00:00:52Z"));
        assert_eq!(renewed.unwrap().changed_at, Some(at("2026-01-01T00:00:52Z")));
        assert_eq!(
            LeaseSeen::observe(renewed, &lease("1999-01-01T00:00:10Z"), at("2026-01-01T00:01:00Z")),
            renewed
        );
    }

    #[test]
    fn a_node_notready_long_after_it_registered_is_not_joining() {
        let grace = Duration::from_secs(30);
        let joining = node("n1").created("2026-01-01T00:00:00Z").ready("False").since("2026-01-01T00:00:02Z");
        assert!(!plausibly_not_joining(&joining.build(), grace));
        let fell = node("n1").created("2026-01-01T00:00:00Z").ready("False").since("2026-01-01T01:00:00Z");
        assert!(plausibly_not_joining(&fell.build(), grace));
        assert!(plausibly_not_joining(&node("n1").ready("Unknown").build(), grace));
        assert!(!plausibly_not_joining(&node("n1").ready("False").build(), grace), "no creation time");
    }

    #[test]
    fn an_owner_deleted_during_the_incident_is_owed_nothing() {
        let owner = Owner { kind: OwnerKind::Deployment, namespace: "default".into(), name: "web".into() };
        let before = verdict(&owner, &["web-abc-1".into()], Some(2), &[], "w2", false);
        let after = reverdict(&before, &[], &[], &[], "w2", true);
        assert_eq!(after.verdict, Verdict::NotApplicable);
        assert_eq!(after.reason.as_deref(), Some("its Deployment was deleted during the incident"));
        let web = crate::fixtures::deployment("default", "web", 2);
        assert_eq!(reverdict(&before, &[&web], &[], &[], "w2", true).verdict, Verdict::NotRescheduled);
    }

    #[test]
    fn eviction_follows_the_tolerations() {
        use k8s_openapi::api::core::v1::Toleration;
        let with = |tolerations: Vec<Toleration>| {
            let mut p = pod("default", "p").build();
            p.spec.as_mut().unwrap().tolerations = Some(tolerations);
            p
        };
        let t = |key: Option<&str>, seconds: Option<i64>| Toleration {
            key: key.map(Into::into),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            ..Default::default()
        };
        let defaulted = with(vec![
            t(Some("node.kubernetes.io/not-ready"), Some(5)),
            t(Some("node.kubernetes.io/unreachable"), Some(5)),
        ]);
        assert_eq!(eviction_after(&defaulted), Some(Duration::from_secs(5)));
        assert_eq!(eviction_after(&with(vec![t(None, None)])), None, "a DaemonSet's pod stays");
        assert_eq!(eviction_after(&with(vec![])), Some(Duration::ZERO));
    }

    #[test]
    fn owners_come_from_controllers() {
        let web = pod("default", "web-abc-1").owned("ReplicaSet", "web-abc").hash("abc").build();
        assert_eq!(
            owner_of(&web),
            Owner { kind: OwnerKind::Deployment, namespace: "default".into(), name: "web".into() }
        );
        let proxy = pod("kube-system", "kube-proxy-x").owned("DaemonSet", "kube-proxy").build();
        assert_eq!(owner_of(&proxy).kind, OwnerKind::DaemonSet);
        let alone = pod("default", "alone").build();
        assert_eq!(
            owner_of(&alone),
            Owner { kind: OwnerKind::Bare, namespace: "default".into(), name: "alone".into() }
        );
    }

    #[test]
    fn a_local_volume_on_the_dead_node_is_named() {
        let owner =
            Owner { kind: OwnerKind::Deployment, namespace: "monitoring".into(), name: "prometheus".into() };
        let stuck = pod("monitoring", "prometheus-x-2")
            .owned("ReplicaSet", "prometheus-x")
            .hash("x")
            .unschedulable("0/3 nodes are available: 1 node(s) didn't match PersistentVolume's node affinity, 2 node(s) had untolerated taint(s).")
            .build();
        let v = verdict(&owner, &["prometheus-x-1".into()], Some(1), &[&stuck], "w2", true);
        assert_eq!(v.verdict, Verdict::NotRescheduled);
        assert!(v.reason.as_deref().unwrap().contains("volume is bound to w2"), "{:?}", v.reason);
    }

    #[test]
    fn a_replacement_that_cannot_start_says_why() {
        let owner = Owner { kind: OwnerKind::Deployment, namespace: "default".into(), name: "web".into() };
        let pulling = pod("default", "web-abc-9")
            .owned("ReplicaSet", "web-abc")
            .hash("abc")
            .on("w1")
            .waiting("ErrImageNeverPull")
            .build();
        let v = verdict(&owner, &["web-abc-1".into()], Some(3), &[&pulling], "w2", true);
        assert!(v.reason.unwrap().contains("its image is missing on w1"));
        let crashing = pod("default", "web-abc-9")
            .owned("ReplicaSet", "web-abc")
            .hash("abc")
            .on("w1")
            .waiting("CrashLoopBackOff")
            .build();
        let v = verdict(&owner, &["web-abc-1".into()], Some(3), &[&crashing], "w2", true);
        assert_eq!(v.reason.as_deref(), Some("pod web-abc-9 is crash looping on w1"));
        // Before the deadline there is no reason yet, only a pending verdict.
        let v = verdict(&owner, &["web-abc-1".into()], Some(3), &[&crashing], "w2", false);
        assert_eq!((v.verdict, v.reason), (Verdict::Pending, None));
    }

    #[test]
    fn a_stuck_stateful_pod_gets_the_taint_command_never_applied() {
        let owner = Owner { kind: OwnerKind::StatefulSet, namespace: "db".into(), name: "pg".into() };
        let terminating = pod("db", "pg-0").owned("StatefulSet", "pg").on("w2").terminating().build();
        let v = verdict(&owner, &["pg-0".into()], Some(1), &[&terminating], "w2", true);
        assert!(
            v.reason
                .unwrap()
                .contains("kubectl taint nodes w2 node.kubernetes.io/out-of-service=nodeshutdown:NoExecute")
        );
    }
}
