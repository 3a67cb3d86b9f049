//! `vigil alerts`: what Alertmanager holds, its alerts and its silences,
//! read from its API with vigil's credentials. Alertmanager's new UI does
//! not show them yet (its Alerts and Silences pages are placeholders in
//! v0.35), and its old one cannot be built here (see docs/operate.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::addons::{alertmanager, credentials};
use crate::terminal::escaped as shown;

/// Everything Alertmanager holds now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Held {
    pub alertmanager: String,
    pub alerts: Vec<Alert>,
    pub silences: Vec<Silence>,
}

/// An alert as Alertmanager's `GET /api/v2/alerts` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    pub status: AlertStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertStatus {
    /// `active`, `suppressed` or `unprocessed`.
    pub state: String,
    #[serde(default)]
    pub silenced_by: Vec<String>,
    #[serde(default)]
    pub inhibited_by: Vec<String>,
}

/// A silence as `GET /api/v2/silences` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
    pub status: SilenceStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SilenceStatus {
    /// `active`, `pending` or `expired`.
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    #[serde(default = "equal")]
    pub is_equal: bool,
}

fn equal() -> bool {
    true
}

impl Matcher {
    fn operator(&self) -> &'static str {
        match (self.is_regex, self.is_equal) {
            (false, true) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (true, false) => "!~",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the alertmanager Service has no LoadBalancer address: run `vigil up` (without --cluster-only)")]
    NoAddress,
    #[error("reading vigil's credentials for Alertmanager: {0}")]
    Credentials(#[from] credentials::Error),
    #[error("asking Alertmanager ({url}): {source}")]
    Http { url: String, source: reqwest::Error },
}

/// Asks the cluster's Alertmanager for its alerts (silenced and inhibited
/// ones too) and its silences.
pub async fn fetch(client: &kube::Client) -> Result<Held, Error> {
    let base = crate::status::addon_url(client, alertmanager::NAME).await.ok_or(Error::NoAddress)?;
    let credentials = credentials::read_api(client).await?;
    let http = crate::monitoring::render::client(&credentials)
        .map_err(|source| Error::Http { url: base.clone(), source })?;
    let (alerts, silences) = tokio::try_join!(
        get_json(&http, &base, "api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true"),
        get_json(&http, &base, "api/v2/silences"),
    )?;
    Ok(Held { alertmanager: base, alerts, silences })
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    base: &str,
    path: &str,
) -> Result<T, Error> {
    let url = format!("{base}{path}");
    let answer = http.get(&url).send().await.and_then(reqwest::Response::error_for_status);
    match answer {
        Ok(answer) => answer.json().await.map_err(|source| Error::Http { url, source }),
        Err(source) => Err(Error::Http { url, source }),
    }
}

/// The alerts, then the silences that have not expired, one line each, for
/// a terminal: label values and comments are anyone's who may post to
/// Alertmanager, so control characters are shown escaped.
pub fn text(held: &Held) -> String {
    let mut alerts: Vec<&Alert> = held.alerts.iter().collect();
    alerts.sort_by(|a, b| (&a.status.state, &a.starts_at).cmp(&(&b.status.state, &b.starts_at)));
    let mut out = format!("Alertmanager {}\n\n", held.alertmanager);
    let _ = writeln!(out, "ALERTS ({})", alerts.len());
    if !alerts.is_empty() {
        let _ = writeln!(out, "{:<11} {:<20} {:<26} LABELS, SUMMARY", "STATE", "SINCE", "ALERT");
    }
    for alert in alerts {
        let name = alert.labels.get("alertname").map(String::as_str).unwrap_or("");
        let labels: Vec<String> = alert
            .labels
            .iter()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| format!("{}={}", shown(k), shown(v)))
            .collect();
        let mut line = format!(
            "{:<11} {:<20} {:<26} {}",
            shown(&alert.status.state),
            since(&alert.starts_at),
            shown(name),
            labels.join(",")
        );
        if let Some(summary) = alert.annotations.get("summary") {
            let _ = write!(line, ": {}", shown(summary));
        }
        if !alert.status.silenced_by.is_empty() {
            let _ = write!(line, " (silenced by {})", alert.status.silenced_by.join(", "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let silences: Vec<&Silence> = held.silences.iter().filter(|s| s.status.state != "expired").collect();
    let _ = writeln!(out, "\nSILENCES ({}, expired ones left out)", silences.len());
    if !silences.is_empty() {
        let _ = writeln!(out, "{:<36} {:<8} {:<20} MATCHERS, BY: COMMENT", "ID", "STATE", "ENDS");
    }
    for silence in silences {
        let matchers: Vec<String> = silence
            .matchers
            .iter()
            .map(|m| format!("{}{}{:?}", shown(&m.name), m.operator(), m.value))
            .collect();
        let _ = writeln!(
            out,
            "{:<36} {:<8} {:<20} {{{}}}, {}: {}",
            shown(&silence.id),
            shown(&silence.status.state),
            since(&silence.ends_at),
            matchers.join(","),
            shown(&silence.created_by),
            shown(&silence.comment)
        );
    }
    out
}

/// A timestamp to the second (Alertmanager's carry nanoseconds).
fn since(timestamp: &str) -> String {
    match timestamp.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(t) => {
            t.round(k8s_openapi::jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_else(|_| t.to_string())
        }
        Err(_) => shown(timestamp),
    }
}

/// `value` with control characters escaped, so that it cannot move the
/// cursor or rewrite the terminal's title.
#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> Held {
        serde_json::from_value(serde_json::json!({
            "alertmanager": "http://172.29.0.130:9093/",
            "alerts": [{
                "labels": {"alertname": "VigilNodeDown", "node": "vigil-worker2", "severity": "critical"},
                "annotations": {"summary": "node vigil-worker2 is down\u{1b}[2J"},
                "startsAt": "2026-12-06T14:32:10.123456789Z",
                "endsAt": "2026-12-06T14:34:10Z",
                "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
            }],
            "silences": [
                {"id": "5c1a", "matchers": [{"name": "node", "value": "vigil-worker2", "isRegex": false, "isEqual": true}],
                 "startsAt": "2026-12-06T14:30:00Z", "endsAt": "2026-12-06T15:30:00Z",
                 "createdBy": "ops", "comment": "kernel upgrade", "status": {"state": "active"}},
                {"id": "0ld", "matchers": [{"name": "job", "value": "web.*", "isRegex": true}],
                 "startsAt": "2026-12-06T10:00:00Z", "endsAt": "2026-12-06T11:00:00Z",
                 "createdBy": "ops", "comment": "gone", "status": {"state": "expired"}},
            ],
        }))
        .unwrap()
    }

    #[test]
    fn the_text_lists_each_alert_and_each_live_silence_on_a_line() {
        let text = text(&held());
        assert!(text.contains("ALERTS (1)\n"), "{text}");
        let alert = text.lines().find(|l| l.contains("VigilNodeDown")).unwrap();
        assert!(alert.starts_with("active "), "{alert}");
        assert!(alert.contains("2026-12-06T14:32:10Z"), "{alert}");
        assert!(
            alert.contains("node=vigil-worker2,severity=critical: node vigil-worker2 is down"),
            "{alert}"
        );
        assert!(text.contains("SILENCES (1, expired ones left out)\n"), "{text}");
        let silence = text.lines().find(|l| l.starts_with("5c1a")).unwrap();
        assert!(silence.contains("{node=\"vigil-worker2\"}, ops: kernel upgrade"), "{silence}");
        assert!(!text.contains("gone"), "an expired silence is listed: {text}");
    }

    #[test]
    fn control_characters_from_alertmanager_reach_the_terminal_escaped() {
        let text = text(&held());
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("is down\\u{1b}[2J"), "{text}");
    }

    #[test]
    fn a_matcher_says_its_operator() {
        let m = |is_regex, is_equal| {
            Matcher { name: "a".into(), value: "b".into(), is_regex, is_equal }.operator()
        };
        assert_eq!([m(false, true), m(false, false), m(true, true), m(true, false)], ["=", "!=", "=~", "!~"]);
    }
}
