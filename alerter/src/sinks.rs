//! What each kind of sink receives for a notice, as a request to send:
//! - webhook: the notice as JSON, signed per the Standard Webhooks spec
//!   (`webhook-id` is the notice's idempotency key, `webhook-timestamp` the
//!   attempt's second, `webhook-signature` `v1,` and the base64 HMAC-SHA256 of
//!   `id.timestamp.body` under the secret's key);
//! - Slack: an incoming-webhook message;
//! - Alertmanager: `POST /api/v2/alerts` with one alert per condition, firing
//!   (`endsAt` a day ahead, so it stays firing without re-sends) or resolved
//!   (`endsAt` now), so routing, grouping and silences work as usual.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use k8s_openapi::jiff::{Timestamp, ToSpan};
use serde::Serialize;
use sha2::Sha256;

use crate::{
    config::{BasicAuth, Sink, Target},
    model::{Notice, NoticeKind, Verdict},
};

/// One HTTP request to make. No Debug: its URL may be a secret.
#[derive(Clone)]
pub struct Request {
    pub url: reqwest::Url,
    pub headers: Vec<(&'static str, String)>,
    /// HTTP Basic credentials, sent as a sensitive `Authorization` header.
    pub basic_auth: Option<BasicAuth>,
    pub body: Vec<u8>,
}

/// `webhook-signature` for a body: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body")).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// One Alertmanager alert (its API's `postableAlert`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "String::is_empty")]
    pub generator_url: String,
}

/// The conditions a notice starts (firing) and ends (resolved), by alert name.
fn alert_changes(kind: NoticeKind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        NoticeKind::Suspect => (&["VigilNodeSuspect"], &[]),
        NoticeKind::NodeDown => (&["VigilNodeDown"], &["VigilNodeSuspect"]),
        NoticeKind::NotRescheduled => (&["VigilPodsNotRescheduled"], &[]),
        NoticeKind::Rescheduled => (&[], &["VigilPodsNotRescheduled"]),
        NoticeKind::Resolved => (
            &[],
            &["VigilNodeSuspect", "VigilNodeDown", "VigilPodsNotRescheduled", "VigilControlPlaneUnreachable"],
        ),
        NoticeKind::NodeDeleted => (&[], &["VigilNodeSuspect", "VigilNodeDown", "VigilPodsNotRescheduled"]),
        NoticeKind::ControlPlaneUnreachable => (&["VigilControlPlaneUnreachable"], &[]),
    }
}

/// The alerts a notice posts to Alertmanager.
pub fn alerts(notice: &Notice, now: Timestamp, generator_url: &str) -> Vec<Alert> {
    let (firing, resolved) = alert_changes(notice.kind);
    let starts_at = notice.detected_at.clone().unwrap_or_else(|| notice.time.clone());
    let description = notice
        .owners
        .iter()
        .map(|o| {
            let mut line = format!("{}: {:?}", o.owner, o.verdict);
            if let Some(reason) = &o.reason {
                line += &format!(" ({reason})");
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n");
    let alert = |name: &str, ends_at: String| Alert {
        labels: BTreeMap::from([
            ("alertname".into(), name.into()),
            ("cluster".into(), notice.cluster.clone()),
            ("node".into(), notice.node.clone()),
            ("incident".into(), notice.incident.clone()),
            ("severity".into(), if name == "VigilNodeSuspect" { "warning" } else { "critical" }.into()),
        ]),
        annotations: BTreeMap::from([
            ("summary".into(), notice.summary.clone()),
            ("description".into(), description.clone()),
        ]),
        starts_at: starts_at.clone(),
        ends_at,
        generator_url: generator_url.into(),
    };
    let day_ahead = now.checked_add(24.hours()).unwrap_or(now).to_string();
    firing
        .iter()
        .map(|name| alert(name, day_ahead.clone()))
        .chain(resolved.iter().map(|name| alert(name, now.to_string())))
        .collect()
}

/// A Slack message: the summary, and each owner's verdict.
pub fn slack_message(notice: &Notice) -> serde_json::Value {
    let owners: Vec<String> = notice
        .owners
        .iter()
        .filter(|o| o.verdict != Verdict::NotApplicable || notice.kind == NoticeKind::NodeDown)
        .map(|o| {
            format!(
                "• {} ({} pods): {:?}{}",
                o.owner,
                o.pods.len(),
                o.verdict,
                o.reason.as_deref().map(|r| format!(", {r}")).unwrap_or_default()
            )
        })
        .collect();
    let text = format!("*[{}] {}*: {}", notice.cluster, notice.kind.as_str(), notice.summary);
    let mut blocks = vec![serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})];
    if !owners.is_empty() {
        blocks.push(
            serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": owners.join("\n")}}),
        );
    }
    serde_json::json!({ "text": text, "blocks": blocks })
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("notices serialize")
}

/// The request that delivers `notice` to `sink` now.
pub fn request(sink: &Sink, notice: &Notice, now: Timestamp, generator_url: &str) -> Request {
    match &sink.target {
        Target::Webhook { url, key } => {
            let body = json(notice);
            let timestamp = now.as_second();
            Request {
                url: url.clone(),
                headers: vec![
                    ("content-type", "application/json".into()),
                    ("webhook-id", notice.id.clone()),
                    ("webhook-timestamp", timestamp.to_string()),
                    ("webhook-signature", sign(key, &notice.id, timestamp, &body)),
                ],
                basic_auth: None,
                body,
            }
        }
        Target::Slack { url } => Request {
            url: url.clone(),
            headers: vec![("content-type", "application/json".into())],
            basic_auth: None,
            body: json(&slack_message(notice)),
        },
        Target::Alertmanager { alerts_url, auth } => Request {
            url: alerts_url.clone(),
            headers: vec![("content-type", "application/json".into())],
            basic_auth: auth.clone(),
            body: json(&alerts(notice, now, generator_url)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::signing_key;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let key = signing_key("t", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    fn notice(kind: NoticeKind) -> Notice {
        Notice {
            kind,
            id: Notice::key("w2-100", kind),
            incident: "w2-100".into(),
            cluster: "vigil".into(),
            node: "w2".into(),
            summary: "node w2 is Unknown".into(),
            time: "2026-01-01T00:01:41Z".into(),
            lease_renewed_at: None,
            not_ready_since: None,
            detected_at: Some("2026-01-01T00:01:41Z".into()),
            seconds_to_rescheduled: None,
            owners: vec![],
            flaps: 0,
            trace_id: String::new(),
        }
    }

    #[test]
    fn slack_gets_the_summary_and_the_owners() {
        let mut down = notice(NoticeKind::NodeDown);
        down.owners = vec![crate::model::OwnerVerdict {
            owner: crate::model::Owner {
                kind: crate::model::OwnerKind::Deployment,
                namespace: "default".into(),
                name: "web".into(),
            },
            pods: vec!["web-1".into(), "web-2".into()],
            desired: Some(3),
            ready_elsewhere: 1,
            verdict: Verdict::Pending,
            reason: None,
            placements: vec![],
        }];
        let message = slack_message(&down);
        assert_eq!(message["text"], "*[vigil] node-down*: node w2 is Unknown");
        assert_eq!(message["blocks"][1]["text"]["text"], "• Deployment default/web (2 pods): Pending");
    }

    #[test]
    fn alertmanager_gets_firing_then_resolved_alerts() {
        let now: Timestamp = "2026-01-01T00:02:00Z".parse().unwrap();
        let down = alerts(&notice(NoticeKind::NodeDown), now, "http://prometheus:9090/");
        let names: Vec<(&str, &str)> =
            down.iter().map(|a| (a.labels["alertname"].as_str(), a.ends_at.as_str())).collect();
        assert_eq!(
            names,
            [("VigilNodeDown", "2026-01-02T00:02:00Z"), ("VigilNodeSuspect", "2026-01-01T00:02:00Z")]
        );
        assert_eq!(down[0].labels["node"], "w2");
        assert_eq!(down[0].starts_at, "2026-01-01T00:01:41Z");
        let resolved = alerts(&notice(NoticeKind::Resolved), now, "");
        assert!(resolved.iter().all(|a| a.ends_at == "2026-01-01T00:02:00Z"));
        assert!(resolved.iter().any(|a| a.labels["alertname"] == "VigilNodeDown"));
        let json = serde_json::to_value(&resolved[0]).unwrap();
        assert!(json.get("generatorURL").is_none() && json.get("startsAt").is_some());
    }
}
