use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::crd::{NodeIncidentSpec, NodeIncidentStatus};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn now() -> Timestamp {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

fn ago(days: f64) -> Timestamp {
    now() - k8s_openapi::jiff::SignedDuration::from_secs_f64(days * DAY.as_secs_f64())
}

/// An incident created a day before `resolved` (or, open, `days` ago), as the
/// tracker stores it (optional fields left to their defaults).
fn incident(name: &str, phase: &str, days: f64) -> NodeIncident {
    let mut object = NodeIncident::new(name, NodeIncidentSpec { node: "w1".into() });
    object.metadata.creation_timestamp = Some(Time(ago(days + 1.0)));
    let mut stored = serde_json::json!({
        "name": name, "node": "w1", "phase": phase, "startedAt": ago(days + 1.0).to_string(),
    });
    if phase == "Resolved" {
        stored["resolvedAt"] = ago(days).to_string().into();
    }
    object.status = Some(NodeIncidentStatus {
        incident: Some(serde_json::from_value(stored).unwrap()),
        ..Default::default()
    });
    object
}

#[test]
fn closed_incidents_go_after_the_retention() {
    let incidents = [
        incident("w1-old", "Resolved", 8.0),
        incident("w1-recent", "Resolved", 6.0),
        incident("w1-older", "Resolved", 30.0),
    ];
    assert_eq!(to_delete(&incidents, now(), 7 * DAY, 500), ["w1-older", "w1-old"]);
    // Exactly at the retention: kept (strictly older goes).
    assert!(to_delete(&[incident("w1-edge", "Resolved", 7.0)], now(), 7 * DAY, 500).is_empty());
}

#[test]
fn open_incidents_never_go() {
    let incidents: Vec<NodeIncident> = ["Suspect", "Down", "Rescheduled", "NotRescheduled"]
        .iter()
        .enumerate()
        .map(|(i, phase)| incident(&format!("w1-open-{i}"), phase, 365.0))
        .collect();
    assert!(to_delete(&incidents, now(), DAY, 0).is_empty());
}

#[test]
fn beyond_the_cap_the_oldest_closed_go() {
    let mut incidents: Vec<NodeIncident> =
        (0..5).map(|i| incident(&format!("w1-{i}"), "Resolved", 1.0 + i as f64 / 10.0)).collect();
    // Open ones neither go nor count towards the cap.
    incidents.push(incident("w2-open", "Down", 3.0));
    incidents.push(incident("w3-open", "Suspect", 0.5));
    assert_eq!(to_delete(&incidents, now(), 7 * DAY, 2), ["w1-4", "w1-3", "w1-2"]);
    assert!(to_delete(&incidents, now(), 7 * DAY, 5).is_empty());
    // Expired ones go first, and leave room under the cap.
    incidents.push(incident("w1-ancient", "Resolved", 40.0));
    assert_eq!(to_delete(&incidents, now(), 7 * DAY, 5), ["w1-ancient"]);
    assert_eq!(to_delete(&incidents, now(), 7 * DAY, 4), ["w1-ancient", "w1-4"]);
}

#[test]
fn an_incident_never_written_goes_by_age_only() {
    let empty = |name: &str, days: f64| {
        let mut object = NodeIncident::new(name, NodeIncidentSpec { node: "w1".into() });
        object.metadata.creation_timestamp = Some(Time(ago(days)));
        object
    };
    // Just created, its status not written yet: not even a cap of 0 takes it.
    assert!(to_delete(&[empty("w1-new", 0.0)], now(), 7 * DAY, 0).is_empty());
    assert_eq!(to_delete(&[empty("w1-stale", 9.0)], now(), 7 * DAY, 500), ["w1-stale"]);
}

#[test]
fn a_resolution_in_the_future_is_kept() {
    // The leader's clock ran ahead: a resolution "tomorrow" is recent, not expired.
    assert!(to_delete(&[incident("w1-ahead", "Resolved", -1.0)], now(), 7 * DAY, 500).is_empty());
}

#[test]
fn the_defaults_are_a_week_and_500() {
    assert_eq!(Retention::default(), Retention { keep_for: 7 * DAY, keep_at_most: 500 });
    let parsed: Retention = serde_json::from_str(r#"{"keepFor": "3d", "keepAtMost": 20}"#).unwrap();
    assert_eq!(parsed, Retention { keep_for: 3 * DAY, keep_at_most: 20 });
    let unknown = serde_json::from_str::<Retention>(r#"{"keepFor": "3d", "keepAtMost": 20, "max": 1}"#);
    assert!(unknown.unwrap_err().to_string().contains("unknown field `max`"));
}
