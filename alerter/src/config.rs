//! The alerter's configuration: a JSON file (a mounted ConfigMap) naming
//! the sinks and the tracker's thresholds. Secrets (the webhook signing
//! key, a Slack webhook URL) are read from files, mounted from Secrets,
//! never from the configuration or the command line. A bad configuration
//! is refused at start naming the field.

use std::{path::PathBuf, time::Duration};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A configuration that cannot work, by field.
#[derive(Debug, thiserror::Error)]
#[error("configuration field {field}: {message}")]
pub struct Error {
    pub field: String,
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error { field: field.into(), message: message.into() }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The cluster's name, in every notice.
    pub cluster: String,
    /// Missed kubelet Lease renewals before a node is suspect.
    #[serde(default = "default_renewals")]
    pub suspect_after_renewals: u32,
    /// Added to the pods' eviction time for the rescheduling deadline.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub verify_grace: Duration,
    /// A fixed rescheduling deadline from detection instead.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub verify_deadline: Option<Duration>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    pub sinks: Vec<SinkConfig>,
    /// Where notices link to (Alertmanager's `generatorURL`), e.g. Prometheus's UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

fn default_renewals() -> u32 {
    3
}

fn default_grace() -> Duration {
    Duration::from_secs(30)
}

/// How notices are delivered: retried with capped exponential backoff and
/// jitter until delivered or expired.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryConfig {
    /// One attempt's limit.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// A notice not delivered by then is given up on, with a log line and a metric.
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            expire_after: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique: it names the sink in metrics and in a `NodeIncident`'s deliveries.
    pub name: String,
    #[serde(flatten)]
    pub kind: SinkKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum SinkKind {
    /// JSON, signed per the Standard Webhooks spec.
    Webhook {
        url: String,
        /// The signing secret (`whsec_<base64>`), from a mounted Secret.
        secret_file: PathBuf,
    },
    /// Slack's incoming-webhook format; the webhook URL is itself the secret.
    Slack { url_file: PathBuf },
    /// Alertmanager's `POST /api/v2/alerts`.
    Alertmanager { url: String },
}

/// A sink ready to send: its secrets read, its URLs checked.
#[derive(Debug, Clone)]
pub struct Sink {
    pub name: String,
    pub target: Target,
}

#[derive(Debug, Clone)]
pub enum Target {
    Webhook { url: reqwest::Url, key: Vec<u8> },
    Slack { url: reqwest::Url },
    Alertmanager { alerts_url: reqwest::Url },
}

fn http_url(field: &str, text: &str) -> Result<reqwest::Url, Error> {
    let url =
        reqwest::Url::parse(text.trim()).map_err(|e| error(field, format!("{text:?} is not a URL: {e}")))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(error(field, format!("{text:?} is not an http(s) URL with a host"))),
    }
}

fn read_secret(field: &str, path: &PathBuf) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(field, format!("cannot read {}: {e} (mount the Secret there)", path.display())))?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(error(field, format!("{} is empty", path.display())));
    }
    Ok(text)
}

/// A Standard Webhooks secret: `whsec_` and the key in base64.
pub fn signing_key(field: &str, secret: &str) -> Result<Vec<u8>, Error> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| error(field, "a signing secret starts with whsec_ (Standard Webhooks)"))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| error(field, format!("the key after whsec_ is not base64: {e}")))?;
    if key.len() < 24 {
        return Err(error(field, format!("the key is {} bytes; use at least 24", key.len())));
    }
    Ok(key)
}

impl Config {
    pub fn from_json(text: &str, source: &str) -> Result<Self, Error> {
        let config: Config = serde_json::from_str(text)
            .map_err(|e| error(source, format!("not a valid configuration: {e}")))?;
        config.check()?;
        Ok(config)
    }

    pub fn load(path: &str) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| error(path, format!("cannot read it: {e}")))?;
        Self::from_json(&text, path)
    }

    fn check(&self) -> Result<(), Error> {
        if self.cluster.trim().is_empty() {
            return Err(error("cluster", "empty"));
        }
        if self.suspect_after_renewals == 0 {
            return Err(error("suspectAfterRenewals", "0 would make every node suspect; use 1 or more"));
        }
        let d = &self.delivery;
        if d.initial_backoff.is_zero() || d.initial_backoff > d.max_backoff {
            return Err(error(
                "delivery.initialBackoff",
                format!(
                    "{:?} must be above zero and at most delivery.maxBackoff ({:?})",
                    d.initial_backoff, d.max_backoff
                ),
            ));
        }
        if d.timeout.is_zero() || d.expire_after < d.timeout {
            return Err(error("delivery.expireAfter", "must be at least one attempt's timeout"));
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            if sink.name.is_empty() || self.sinks[..i].iter().any(|s| s.name == sink.name) {
                return Err(error(
                    format!("sinks[{i}].name"),
                    format!("{:?} is empty or used twice", sink.name),
                ));
            }
            match &sink.kind {
                SinkKind::Webhook { url, .. } => {
                    http_url(&format!("sinks[{i}].webhook.url"), url)?;
                }
                SinkKind::Alertmanager { url } => {
                    http_url(&format!("sinks[{i}].alertmanager.url"), url)?;
                }
                SinkKind::Slack { .. } => {}
            }
        }
        if let Some(url) = &self.generator_url {
            http_url("generatorUrl", url)?;
        }
        Ok(())
    }

    /// The sinks with their secrets read from their files.
    pub fn sinks(&self) -> Result<Vec<Sink>, Error> {
        self.sinks
            .iter()
            .enumerate()
            .map(|(i, sink)| {
                let target = match &sink.kind {
                    SinkKind::Webhook { url, secret_file } => {
                        let field = format!("sinks[{i}].webhook.secretFile");
                        let key = signing_key(&field, &read_secret(&field, secret_file)?)?;
                        Target::Webhook { url: http_url(&format!("sinks[{i}].webhook.url"), url)?, key }
                    }
                    SinkKind::Slack { url_file } => {
                        let field = format!("sinks[{i}].slack.urlFile");
                        Target::Slack { url: http_url(&field, &read_secret(&field, url_file)?)? }
                    }
                    SinkKind::Alertmanager { url } => {
                        let base = http_url(&format!("sinks[{i}].alertmanager.url"), url)?;
                        let alerts_url = base
                            .join("api/v2/alerts")
                            .map_err(|e| error(format!("sinks[{i}].alertmanager.url"), e.to_string()))?;
                        Target::Alertmanager { alerts_url }
                    }
                };
                Ok(Sink { name: sink.name.clone(), target })
            })
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the configuration serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sinks: &str) -> Result<Config, Error> {
        Config::from_json(&format!(r#"{{"cluster": "vigil", "sinks": {sinks}}}"#), "test")
    }

    #[test]
    fn a_bad_sink_is_refused_naming_the_field() {
        let err =
            config(r#"[{"name": "ops", "webhook": {"url": "ftp://x", "secretFile": "/s"}}]"#).unwrap_err();
        assert_eq!(err.field, "sinks[0].webhook.url");
        let err = config(r#"[{"name": "a", "alertmanager": {"url": "http://am:9093"}}, {"name": "a", "alertmanager": {"url": "http://am:9093"}}]"#)
            .unwrap_err();
        assert_eq!(err.field, "sinks[1].name");
        let err = Config::from_json(r#"{"cluster": "vigil", "sinks": [], "surprise": 1}"#, "cm").unwrap_err();
        assert!(err.to_string().contains("unknown field `surprise`"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "not-a-secret\n").unwrap();
        let text = format!(
            r#"{{"cluster": "vigil", "sinks": [{{"name": "ops", "webhook": {{"url": "http://127.0.0.1:1/hook", "secretFile": "{}"}}}}]}}"#,
            secret.display()
        );
        let config = Config::from_json(&text, "test").unwrap();
        let err = config.sinks().unwrap_err();
        assert_eq!(err.field, "sinks[0].webhook.secretFile");
        assert!(err.message.contains("whsec_"), "{err}");
        std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let sinks = config.sinks().unwrap();
        assert!(matches!(&sinks[0].target, Target::Webhook { key, .. } if key.len() == 24));
        let missing = Config::from_json(
            r#"{"cluster": "vigil", "sinks": [{"name": "s", "slack": {"urlFile": "/nonexistent/url"}}]}"#,
            "test",
        )
        .unwrap()
        .sinks()
        .unwrap_err();
        assert!(missing.message.contains("mount the Secret there"), "{missing}");
    }
}
