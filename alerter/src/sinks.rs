//! What each kind of sink receives for a notice, as a request to send:
//! - webhook: the notice as JSON, signed per the Standard Webhooks spec
//!   (`webhook-id` is the notice's idempotency key, `webhook-timestamp` the
//!   attempt's second, `webhook-signature` `v1,` and the base64 HMAC-SHA256 of
//!   `id.timestamp.body` under the secret's key);
//! - Slack: an incoming-webhook message, within Slack's limits (sections of
//!   at most 3,000 characters, at most 50 blocks, the `text` bounded);
//! - Alertmanager: `POST /api/v2/alerts` with one alert per condition, firing
//!   or resolved (`endsAt` now), so routing, grouping and silences work as
//!   usual. As Prometheus does, what is firing is posted again every
//!   `delivery.resendInterval` ([`resend`]) with `endsAt` four intervals
//!   ahead: an Alertmanager that restarted (and lost its alerts) has them
//!   back within an interval, and an alert whose sender is gone resolves by
//!   itself after four. Alertmanager replicas do not share alerts they are
//!   sent (their gossip shares silences and notification logs), so each
//!   replica is a sink of its own, as Prometheus sends to every one.

use std::{collections::BTreeMap, time::Duration};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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

/// The conditions still firing once `kind` is the incident's latest notice:
/// what is re-sent to Alertmanager until the next notice. Not only what the
/// notice itself starts: after `not-rescheduled` the node is still down.
pub fn still_firing(kind: NoticeKind) -> &'static [&'static str] {
    match kind {
        NoticeKind::Suspect => &["VigilNodeSuspect"],
        NoticeKind::NodeDown | NoticeKind::Rescheduled => &["VigilNodeDown"],
        NoticeKind::NotRescheduled => &["VigilNodeDown", "VigilPodsNotRescheduled"],
        NoticeKind::Resolved | NoticeKind::NodeDeleted => &[],
        NoticeKind::ControlPlaneUnreachable => &["VigilControlPlaneUnreachable"],
    }
}

/// One alert of `notice`'s incident, ending at `ends_at`.
fn alert(notice: &Notice, name: &str, ends_at: String, generator_url: &str) -> Alert {
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
    Alert {
        labels: BTreeMap::from([
            ("alertname".into(), name.into()),
            ("cluster".into(), notice.cluster.clone()),
            ("node".into(), notice.node.clone()),
            ("incident".into(), notice.incident.clone()),
            ("severity".into(), if name == "VigilNodeSuspect" { "warning" } else { "critical" }.into()),
        ]),
        annotations: [
            ("summary", Some(&notice.summary)),
            ("description", Some(&description)),
            ("logs", notice.logs_url.as_ref()),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?.clone())))
        .collect(),
        starts_at: notice.detected_at.clone().unwrap_or_else(|| notice.time.clone()),
        ends_at,
        generator_url: generator_url.into(),
    }
}

/// `now + firing_for`, as Alertmanager's `endsAt`.
fn ends_at(now: Timestamp, firing_for: Duration) -> String {
    let firing_for = SignedDuration::try_from(firing_for).unwrap_or(SignedDuration::MAX);
    now.checked_add(firing_for).unwrap_or(now).to_string()
}

/// The alerts a notice posts to Alertmanager: those it starts, firing for
/// `firing_for` (four re-send intervals: the re-sends keep them firing),
/// and those it ends, resolved now.
pub fn alerts(notice: &Notice, now: Timestamp, generator_url: &str, firing_for: Duration) -> Vec<Alert> {
    let (firing, resolved) = alert_changes(notice.kind);
    let until = ends_at(now, firing_for);
    firing
        .iter()
        .map(|name| alert(notice, name, until.clone(), generator_url))
        .chain(resolved.iter().map(|name| alert(notice, name, now.to_string(), generator_url)))
        .collect()
}

/// The alerts re-sent while `latest` is its incident's latest notice: every
/// condition [`still_firing`], firing for another `firing_for`.
pub fn firing_alerts(
    latest: &Notice,
    now: Timestamp,
    generator_url: &str,
    firing_for: Duration,
) -> Vec<Alert> {
    let until = ends_at(now, firing_for);
    still_firing(latest.kind).iter().map(|name| alert(latest, name, until.clone(), generator_url)).collect()
}

/// Slack's limits (its Block Kit reference): a section's text holds at most
/// 3,000 characters and a message at most 50 blocks, or Slack answers 400;
/// the top-level `text` (what notifications show) is cut by Slack at 40,000
/// characters and best kept under 4,000.
pub const SLACK_SECTION_CHARS: usize = 3000;
pub const SLACK_MAX_BLOCKS: usize = 50;
pub const SLACK_TEXT_CHARS: usize = 4000;

/// `text` in at most `max` characters (not bytes: Slack counts
/// characters), cut on a character and ending with how much was left out.
pub fn cut_chars(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_owned();
    }
    let note = |left: usize| format!("… ({left} more characters left out)");
    // A note for fewer characters is never longer than this one.
    let keep = max.saturating_sub(note(total).chars().count());
    let mut cut: String = text.chars().take(keep).collect();
    cut += &note(total - keep);
    cut
}

/// The words of a notice's link to the logs in Slack.
const SLACK_LOGS_LINK: &str = "The node's and its workloads' logs over the incident";

/// `text` as Slack's mrkdwn reads it back: `&`, `<` and `>` are its control
/// characters (a `<` starts a link or a mention), so they are sent as
/// entities, which Slack decodes. Everything else is sent as it is.
fn mrkdwn_escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn section(text: &str) -> serde_json::Value {
    serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

/// A Slack message: the summary, and each owner's verdict, within Slack's
/// limits: owners packed into sections of at most 3,000 characters, a line
/// too long for one cut, and past the 50th block a line saying how many
/// owners are not shown (the `NodeIncident` has them all).
pub fn slack_message(notice: &Notice) -> serde_json::Value {
    let owners: Vec<String> = notice
        .owners
        .iter()
        .filter(|o| o.verdict != Verdict::NotApplicable || notice.kind == NoticeKind::NodeDown)
        .map(|o| {
            let line = mrkdwn_escaped(&format!(
                "• {} ({} pods): {:?}{}",
                o.owner,
                o.pods.len(),
                o.verdict,
                o.reason.as_deref().map(|r| format!(", {r}")).unwrap_or_default()
            ));
            cut_chars(&line, SLACK_SECTION_CHARS)
        })
        .collect();
    let text = mrkdwn_escaped(&format!("[{}] {}", notice.cluster, notice.kind.as_str()));
    let text = format!("*{text}*: {}", mrkdwn_escaped(&notice.summary));
    // Each chunk: its text, its length in characters, its owners.
    let mut chunks: Vec<(String, usize, usize)> = vec![];
    for line in &owners {
        let length = line.chars().count();
        match chunks.last_mut() {
            Some((chunk, chars, count)) if *chars + 1 + length <= SLACK_SECTION_CHARS => {
                chunk.push('\n');
                chunk.push_str(line);
                *chars += 1 + length;
                *count += 1;
            }
            _ => chunks.push((line.clone(), length, 1)),
        }
    }
    // A block for the summary and one for the logs' link; past the limit,
    // the last one says what is missing.
    let mut blocks = vec![section(&cut_chars(&text, SLACK_SECTION_CHARS))];
    if let Some(url) = &notice.logs_url {
        // Its own block, never cut: a cut link leads nowhere. The UI's
        // links are percent-encoded, so they hold no `<`, `|` or `>`; their
        // parameters' `&` is escaped like any other.
        let link = format!("<{}|{}>", mrkdwn_escaped(url), mrkdwn_escaped(SLACK_LOGS_LINK));
        if link.chars().count() <= SLACK_SECTION_CHARS {
            blocks.push(section(&link));
        }
    }
    let room = SLACK_MAX_BLOCKS - blocks.len();
    if chunks.len() > room {
        let shown: usize = chunks[..room - 1].iter().map(|c| c.2).sum();
        blocks.extend(chunks[..room - 1].iter().map(|c| section(&c.0)));
        blocks.push(section(&format!(
            "…and {} more owners, not shown (Slack takes {SLACK_MAX_BLOCKS} blocks): `kubectl get nodeincident {} -o yaml` has them all",
            owners.len() - shown,
            notice.incident
        )));
    } else {
        blocks.extend(chunks.iter().map(|c| section(&c.0)));
    }
    serde_json::json!({ "text": cut_chars(&text, SLACK_TEXT_CHARS), "blocks": blocks })
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("notices serialize")
}

/// The request that delivers `notice` to `sink` now; Alertmanager's firing
/// alerts stay firing for `firing_for`.
pub fn request(
    sink: &Sink,
    notice: &Notice,
    now: Timestamp,
    generator_url: &str,
    firing_for: Duration,
) -> Request {
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
            body: json(&alerts(notice, now, generator_url, firing_for)),
        },
    }
}

/// The re-send of what is still firing while `latest` is its incident's
/// latest notice: for an Alertmanager sink with something firing, else None.
pub fn resend(
    sink: &Sink,
    latest: &Notice,
    now: Timestamp,
    generator_url: &str,
    firing_for: Duration,
) -> Option<Request> {
    let Target::Alertmanager { alerts_url, auth } = &sink.target else { return None };
    let alerts = firing_alerts(latest, now, generator_url, firing_for);
    (!alerts.is_empty()).then(|| Request {
        url: alerts_url.clone(),
        headers: vec![("content-type", "application/json".into())],
        basic_auth: auth.clone(),
        body: json(&alerts),
    })
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
            logs_url: None,
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
        // The link to the logs is a block of its own, after the summary,
        // its parameters' `&` sent as Slack's entity.
        down.logs_url = Some("http://10.0.0.5:9428/select/vmui/#/?query=x&g0.range_input=60s".into());
        let message = slack_message(&down);
        assert_eq!(
            message["blocks"][1]["text"]["text"],
            format!("<http://10.0.0.5:9428/select/vmui/#/?query=x&amp;g0.range_input=60s|{SLACK_LOGS_LINK}>")
        );
        assert_eq!(message["blocks"][2]["text"]["text"], "• Deployment default/web (2 pods): Pending");
        // Text that Slack would read as a link or a mention is escaped.
        down.summary = "node <!channel> & w2".into();
        down.owners[0].reason = Some("a > b".into());
        let message = slack_message(&down);
        assert_eq!(message["text"], "*[vigil] node-down*: node &lt;!channel&gt; &amp; w2");
        assert_eq!(
            message["blocks"][2]["text"]["text"],
            "• Deployment default/web (2 pods): Pending, a &gt; b"
        );
        // One too long for a section is left out rather than cut.
        down.logs_url = Some(format!("http://x/{}", "a".repeat(SLACK_SECTION_CHARS)));
        assert_eq!(slack_message(&down)["blocks"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn alertmanager_gets_firing_then_resolved_alerts() {
        let now: Timestamp = "2026-01-01T00:02:00Z".parse().unwrap();
        let four_minutes = Duration::from_secs(240);
        let down = alerts(&notice(NoticeKind::NodeDown), now, "http://prometheus:9090/", four_minutes);
        let names: Vec<(&str, &str)> =
            down.iter().map(|a| (a.labels["alertname"].as_str(), a.ends_at.as_str())).collect();
        assert_eq!(
            names,
            [("VigilNodeDown", "2026-01-01T00:06:00Z"), ("VigilNodeSuspect", "2026-01-01T00:02:00Z")]
        );
        assert_eq!(down[0].labels["node"], "w2");
        assert_eq!(down[0].starts_at, "2026-01-01T00:01:41Z");
        assert!(!down[0].annotations.contains_key("logs"), "no log store, no link");
        let mut linked = notice(NoticeKind::NodeDown);
        linked.logs_url = Some("http://logs/#/?query=x".into());
        let down = alerts(&linked, now, "", four_minutes);
        assert!(down.iter().all(|a| a.annotations["logs"] == "http://logs/#/?query=x"));
        let resolved = alerts(&notice(NoticeKind::Resolved), now, "", four_minutes);
        assert!(resolved.iter().all(|a| a.ends_at == "2026-01-01T00:02:00Z"));
        assert!(resolved.iter().any(|a| a.labels["alertname"] == "VigilNodeDown"));
        let json = serde_json::to_value(&resolved[0]).unwrap();
        assert!(json.get("generatorURL").is_none() && json.get("startsAt").is_some());
    }

    #[test]
    fn what_is_still_firing_is_resent_and_nothing_once_resolved() {
        let now: Timestamp = "2026-01-01T00:02:00Z".parse().unwrap();
        let minute = Duration::from_secs(60);
        let firing = |kind| -> Vec<(String, String)> {
            firing_alerts(&notice(kind), now, "", minute)
                .into_iter()
                .map(|a| (a.labels["alertname"].clone(), a.ends_at))
                .collect()
        };
        let until = "2026-01-01T00:03:00Z".to_owned();
        assert_eq!(firing(NoticeKind::Suspect), [("VigilNodeSuspect".into(), until.clone())]);
        // After not-rescheduled the node is still down: both stay firing.
        assert_eq!(
            firing(NoticeKind::NotRescheduled),
            [("VigilNodeDown".into(), until.clone()), ("VigilPodsNotRescheduled".into(), until.clone())]
        );
        assert_eq!(firing(NoticeKind::Rescheduled), [("VigilNodeDown".into(), until)]);
        assert!(firing(NoticeKind::Resolved).is_empty());
        let am = Sink {
            name: "am".into(),
            target: Target::Alertmanager {
                alerts_url: "http://am:9093/api/v2/alerts".parse().unwrap(),
                auth: None,
            },
        };
        assert!(resend(&am, &notice(NoticeKind::Resolved), now, "", minute).is_none());
        let body = resend(&am, &notice(NoticeKind::NodeDown), now, "", minute).unwrap().body;
        let posted: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(posted[0]["labels"]["alertname"], "VigilNodeDown");
        let slack = Sink { name: "s".into(), target: Target::Slack { url: "http://s/".parse().unwrap() } };
        assert!(resend(&slack, &notice(NoticeKind::NodeDown), now, "", minute).is_none());
    }

    fn owner(name: String, reason: Option<String>) -> crate::model::OwnerVerdict {
        crate::model::OwnerVerdict {
            owner: crate::model::Owner {
                kind: crate::model::OwnerKind::Deployment,
                namespace: "default".into(),
                name,
            },
            pods: vec!["p".into()],
            desired: Some(1),
            ready_elsewhere: 0,
            verdict: Verdict::NotRescheduled,
            reason,
            placements: vec![],
        }
    }

    /// Every section's text and the `text` within Slack's limits, in characters.
    fn within_slack_limits(message: &serde_json::Value) -> Vec<String> {
        let blocks = message["blocks"].as_array().unwrap();
        assert!(blocks.len() <= SLACK_MAX_BLOCKS, "{} blocks", blocks.len());
        assert!(message["text"].as_str().unwrap().chars().count() <= SLACK_TEXT_CHARS);
        blocks
            .iter()
            .map(|b| {
                let text = b["text"]["text"].as_str().unwrap().to_owned();
                assert!(text.chars().count() <= SLACK_SECTION_CHARS, "{} characters", text.chars().count());
                text
            })
            .collect()
    }

    #[test]
    fn slack_messages_stay_within_slacks_limits() {
        // About 10,000 characters of owners, in 2-byte characters (Slack counts characters).
        let mut down = notice(NoticeKind::NotRescheduled);
        down.owners = (0..100).map(|i| owner(format!("{i:03}-{}", "é".repeat(80)), None)).collect();
        let texts = within_slack_limits(&slack_message(&down));
        let owners_text: usize = texts[1..].iter().map(|t| t.chars().count()).sum();
        assert!(owners_text > 9_000, "{owners_text}");
        assert!(texts.len() >= 5, "packed into several sections: {}", texts.len());
        for i in 0..100 {
            assert_eq!(texts.iter().filter(|t| t.contains(&format!("{i:03}-"))).count(), 1, "owner {i}");
        }

        // One owner whose reason alone is 10,000 characters, and a summary as long.
        let mut long = notice(NoticeKind::NotRescheduled);
        long.summary = "s".repeat(10_000);
        long.owners = vec![owner("web".into(), Some("r".repeat(10_000)))];
        let message = slack_message(&long);
        let texts = within_slack_limits(&message);
        assert!(
            texts[1].starts_with("• Deployment default/web (1 pods): NotRescheduled, rrr"),
            "{}",
            &texts[1][..80]
        );
        assert!(texts[1].ends_with("more characters left out)"), "{}", &texts[1][2900..]);
        let text = message["text"].as_str().unwrap();
        let (kept, note) = text.rsplit_once("… (").unwrap();
        let left: usize = note.split(' ').next().unwrap().parse().unwrap();
        let full = format!("*[vigil] not-rescheduled*: {}", long.summary).chars().count();
        assert_eq!(kept.chars().count() + left, full, "what is kept and what is left out make the whole");

        // More owners than 50 blocks hold, and the link to the logs: the
        // last block says how many owners are not shown.
        let mut many = notice(NoticeKind::NotRescheduled);
        many.owners = (0..2000).map(|i| owner(format!("{i:04}-{}", "x".repeat(200)), None)).collect();
        many.logs_url = Some("http://logs/".into());
        let texts = within_slack_limits(&slack_message(&many));
        assert_eq!(texts.len(), SLACK_MAX_BLOCKS);
        assert!(texts[1].starts_with("<http://logs/|"), "{}", texts[1]);
        let shown = texts[2..SLACK_MAX_BLOCKS - 1].iter().map(|t| t.lines().count()).sum::<usize>();
        let last = texts.last().unwrap();
        assert!(last.contains(&format!("…and {} more owners", 2000 - shown)), "{last}");
        assert!(last.contains("w2-100"), "{last}");
    }

    #[test]
    fn cutting_counts_characters_and_says_how_many_were_left_out() {
        assert_eq!(cut_chars("short", 10), "short");
        let cut = cut_chars(&"é".repeat(100), 40);
        assert!((38..=40).contains(&cut.chars().count()), "{cut}");
        let kept = cut.chars().take_while(|c| *c == 'é').count();
        assert!(cut.ends_with(&format!("… ({} more characters left out)", 100 - kept)), "{cut}");
    }
}
