//! What a replica that becomes leader takes over from the `NodeIncident`s,
//! decided apart from the API so that a takeover mid-delivery is tested
//! over recorded objects: open incidents continue, closed ones keep their
//! names taken, every notice not yet delivered (nor given up on) is owed
//! again under the same idempotency key with its attempts so far and what
//! is left of its expiry, and what fires is told to Alertmanager again.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::jiff::Timestamp;

use crate::{
    crd::{DeliveryState, NodeIncident, NodeIncidentStatus},
    model::Notice,
    tracker::Incident,
};

/// One delivery the new leader owes.
#[derive(Debug, Clone, PartialEq)]
pub struct Owed {
    pub sink: String,
    pub notice: Notice,
    /// Attempts the previous leader made (the backoff continues from them).
    pub attempts: u32,
    /// What is left of the notice's expiry, counted from when it was decided.
    pub expires_in: Duration,
}

#[derive(Debug, Default)]
pub struct Takeover {
    /// Every stored incident, for [`crate::tracker::Tracker::new`].
    pub known: Vec<Incident>,
    /// Each `NodeIncident`'s node and status, by name.
    pub statuses: BTreeMap<String, (String, NodeIncidentStatus)>,
    /// Each `NodeIncident`'s resourceVersion, the precondition of the next write.
    pub versions: BTreeMap<String, String>,
    /// Each open incident's latest notice: what Alertmanager is told again.
    pub firing: Vec<(String, Notice)>,
    /// Incident by incident, notice by notice, sink by sink.
    pub owed: Vec<Owed>,
}

/// The state to lead from, out of the stored `items`, for `sinks` (a sink
/// added since is owed every notice), with notices expiring `expiry` after
/// they were decided.
pub fn take_over(items: Vec<NodeIncident>, sinks: &[String], expiry: Duration, now: Timestamp) -> Takeover {
    let mut takeover = Takeover::default();
    for item in items {
        let name = item.metadata.name.clone().unwrap_or_default();
        if let Some(version) = item.metadata.resource_version.clone() {
            takeover.versions.insert(name.clone(), version);
        }
        let status = item.status.unwrap_or_default();
        if let Some(incident) = status.incident.clone() {
            if !incident.phase.closed()
                && let Some(latest) = status.notices.last()
            {
                takeover.firing.push((name.clone(), latest.clone()));
            }
            takeover.known.push(incident);
        }
        for notice in &status.notices {
            for sink in sinks {
                let record = status.deliveries.iter().find(|d| d.sink == *sink && d.key == notice.id);
                if record.is_some_and(|d| d.state != DeliveryState::Pending) {
                    continue;
                }
                // A notice whose time cannot be read (never written so) gets
                // its whole expiry: rather sent late than lost.
                let age = notice
                    .time
                    .parse::<Timestamp>()
                    .map_or(Duration::ZERO, |decided| now.duration_since(decided).unsigned_abs());
                takeover.owed.push(Owed {
                    sink: sink.clone(),
                    notice: notice.clone(),
                    attempts: record.map_or(0, |d| d.attempts),
                    expires_in: expiry.saturating_sub(age),
                });
            }
        }
        takeover.statuses.insert(name, (item.spec.node.clone(), status));
    }
    takeover
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::SignedDuration;

    use super::*;
    use crate::{
        crd::{Delivery, NodeIncidentSpec},
        fixtures::node,
        model::NoticeKind,
        tracker::{Change, Feed, Settings, Tracker, View},
    };

    const EXPIRY: Duration = Duration::from_secs(3600);

    fn at(seconds: f64) -> Timestamp {
        "2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_secs_f64(seconds)
    }

    /// What the old leader decided about w2, Ready, then Unknown at 10 s: node-down.
    fn decided() -> Vec<Change> {
        let mut tracker = Tracker::new(Settings::defaults("vigil"), vec![]);
        let feed = Feed::Live { since: at(-60.0) };
        let observe = |tracker: &mut Tracker, t: f64, nodes: &[k8s_openapi::api::core::v1::Node]| {
            let view = View {
                feed,
                nodes: nodes.iter().collect(),
                leases: vec![],
                pods: vec![],
                deployments: vec![],
                stateful_sets: vec![],
            };
            tracker.observe(at(t), &view)
        };
        let w2_down = node("w2").ready("Unknown").since("2026-01-01T00:00:09Z").build();
        let mut changes = observe(&mut tracker, 0.0, &[node("w2").ready("True").build()]);
        changes.extend(observe(&mut tracker, 10.0, &[w2_down]));
        changes
    }

    /// The NodeIncident as the old leader last wrote it.
    fn stored(changes: &[Change], deliveries: Vec<Delivery>) -> NodeIncident {
        let last = changes.last().unwrap();
        let mut item =
            NodeIncident::new(&last.incident.name, NodeIncidentSpec { node: last.incident.node.clone() });
        item.metadata.resource_version = Some("42".into());
        item.status = Some(NodeIncidentStatus {
            incident: Some(last.incident.clone()),
            notices: changes.iter().filter_map(|c| c.notice.clone()).collect(),
            deliveries,
        });
        item
    }

    fn delivery(sink: &str, notice: &Notice, state: DeliveryState, attempts: u32) -> Delivery {
        Delivery {
            sink: sink.into(),
            notice: notice.kind,
            key: notice.id.clone(),
            state,
            attempts,
            last_error: None,
            delivered_at: None,
        }
    }

    #[test]
    fn a_takeover_mid_delivery_owes_what_was_not_delivered_with_its_attempts() {
        let changes = decided();
        let down = changes.iter().find_map(|c| c.notice.clone()).unwrap();
        assert_eq!(down.kind, NoticeKind::NodeDown);
        // The webhook got it; Alertmanager's third attempt was on its way when the leader died.
        let item = stored(
            &changes,
            vec![
                delivery("ops", &down, DeliveryState::Delivered, 1),
                delivery("am", &down, DeliveryState::Pending, 2),
            ],
        );
        let sinks = ["ops".to_owned(), "am".to_owned(), "slack".to_owned()];
        let takeover = take_over(vec![item], &sinks, EXPIRY, at(70.0));
        let owed: Vec<(&str, &str, u32, Duration)> = takeover
            .owed
            .iter()
            .map(|o| (o.sink.as_str(), o.notice.id.as_str(), o.attempts, o.expires_in))
            .collect();
        let left = EXPIRY - Duration::from_secs(60);
        assert_eq!(owed, [("am", down.id.as_str(), 2, left), ("slack", down.id.as_str(), 0, left)]);
        assert_eq!(takeover.firing, [(down.incident.clone(), down.clone())]);
        assert_eq!(takeover.known.len(), 1);
        assert_eq!(takeover.versions[&down.incident], "42");
        assert_eq!(takeover.statuses[&down.incident].0, "w2");

        // The tracker continues it: nothing decided twice.
        let mut tracker = Tracker::new(Settings::defaults("vigil"), takeover.known);
        let open: Vec<&str> = tracker.open().map(|i| i.name.as_str()).collect();
        assert_eq!(open, [down.incident.as_str()]);
        let w2_down = node("w2").ready("Unknown").since("2026-01-01T00:00:09Z").build();
        let view = View {
            feed: Feed::Live { since: at(-60.0) },
            nodes: vec![&w2_down],
            leases: vec![],
            pods: vec![],
            deployments: vec![],
            stateful_sets: vec![],
        };
        let again = tracker.observe(at(71.0), &view);
        assert!(
            again.iter().all(|c| c.notice.as_ref().is_none_or(|n| n.kind != NoticeKind::NodeDown)),
            "{again:?}"
        );
    }

    #[test]
    fn given_up_or_expired_is_not_owed_and_a_closed_incident_does_not_fire() {
        let mut changes = decided();
        let down = changes.iter().find_map(|c| c.notice.clone()).unwrap();
        let last = changes.last_mut().unwrap();
        last.incident.phase = crate::tracker::Phase::Resolved;
        let item = stored(
            &changes,
            vec![
                delivery("ops", &down, DeliveryState::Rejected, 1),
                delivery("am", &down, DeliveryState::Expired, 9),
            ],
        );
        let sinks = ["ops".to_owned(), "am".to_owned()];
        let takeover = take_over(vec![item], &sinks, EXPIRY, at(70.0));
        assert!(takeover.owed.is_empty(), "{:?}", takeover.owed);
        assert!(takeover.firing.is_empty());
        assert_eq!(takeover.known.len(), 1, "its name stays taken");
    }

    #[test]
    fn a_notice_past_its_expiry_is_owed_with_none_left() {
        let changes = decided();
        let item = stored(&changes, vec![]);
        let takeover = take_over(vec![item], &["ops".to_owned()], EXPIRY, at(10.0 + 7200.0));
        assert_eq!(takeover.owed.len(), 1);
        assert_eq!(takeover.owed[0].expires_in, Duration::ZERO, "the outbox records it expired at once");
    }
}
