//! The alerter's configuration: a JSON file (a mounted ConfigMap) naming
//! the sinks and the tracker's thresholds. Secrets (the webhook's URL and
//! signing key, a Slack webhook URL, Alertmanager's password) are read
//! from files, mounted from Secrets, once at start: never from the
//! configuration or the command line, and never echoed in an error. A bad
//! configuration is refused at start naming the field.

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
    /// How long the API server may not answer (or the kubelets' Lease
    /// watch stay broken) before that is an incident of its own,
    /// `control-plane-unreachable`; meanwhile nothing is decided about nodes.
    #[serde(default = "default_control_plane_after", with = "humantime_serde")]
    pub control_plane_after: Duration,
    /// How long a node that was down must stay Ready, its Lease renewed,
    /// before its incident is resolved: a node that flaps within it stays
    /// one incident, with a flap count. Also how long a node newly down
    /// just after the view became whole (a control-plane outage ending,
    /// the alerter starting) is held before it is paged: the node
    /// controller marks nodes Unknown for the outage's own silence.
    #[serde(default = "default_stable_for", with = "humantime_serde")]
    pub stable_for: Duration,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// How long closed NodeIncidents are kept, and how many at most.
    #[serde(default)]
    pub retention: Retention,
    pub sinks: Vec<SinkConfig>,
    /// Where notices link to (Alertmanager's `generatorURL`), e.g. Prometheus's UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
    /// The log store's web UI (VictoriaLogs', as `vigil up` prints it):
    /// each notice about a node links to the lines of its pods and of the
    /// workloads it held over the incident's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_url: Option<String>,
}

fn default_renewals() -> u32 {
    3
}

fn default_grace() -> Duration {
    Duration::from_secs(30)
}

fn default_control_plane_after() -> Duration {
    Duration::from_secs(10)
}

fn default_stable_for() -> Duration {
    Duration::from_secs(20)
}

/// How notices are delivered: retried with capped exponential backoff and
/// jitter (or after the receiver's `Retry-After`) until delivered, refused
/// for good or expired (the alerter's `delivery`). A field left out takes its
/// default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// One attempt's limit: 15 s, the low end of what the Standard
    /// Webhooks spec recommends (15 to 30 s), so a slow receiver is not
    /// counted as down.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// A notice not delivered by then is given up on, with a log line and a metric.
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
    /// How often Alertmanager is told again of the alerts still firing, as
    /// Prometheus does (its `--rules.alert.resend-delay`, 1 m); each post's
    /// `endsAt` is four of these ahead, so an alert outlives three lost
    /// re-sends and resolves by itself only if the alerter is gone.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(15),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            expire_after: Duration::from_secs(3600),
            resend_interval: Duration::from_secs(60),
        }
    }
}

impl DeliveryConfig {
    /// How long a firing alert posted now stays firing in Alertmanager
    /// without another post.
    pub fn firing_for(&self) -> Duration {
        self.resend_interval.saturating_mul(4)
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
        /// The receiver's URL, from a mounted Secret: its path or query
        /// often holds a token.
        url_file: PathBuf,
        /// The signing secret (`whsec_<base64>`), from a mounted Secret.
        secret_file: PathBuf,
    },
    /// Slack's incoming-webhook format; the webhook URL is itself the secret.
    Slack { url_file: PathBuf },
    /// Alertmanager's `POST /api/v2/alerts`.
    Alertmanager {
        /// Its base URL (a Service in the cluster: no secret).
        url: String,
        /// Credentials for a proxy in front of it that asks for them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        basic_auth: Option<BasicAuthConfig>,
    },
}

/// HTTP Basic authentication: the user in the configuration, the password
/// in a file mounted from a Secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    pub password_file: PathBuf,
}

/// Fields a configuration may no longer have, with what replaced them: an
/// old ConfigMap is refused naming the field rather than half understood.
const REMOVED_FIELDS: &[(&str, &str, &str)] = &[(
    "webhook",
    "url",
    "the webhook's URL is a secret (its path or query often holds a token), so it no longer sits in \
     the configuration: put it in a file mounted from a Secret and name that file in urlFile",
)];

/// A sink ready to send: its secrets read, its URLs checked.
#[derive(Debug, Clone)]
pub struct Sink {
    pub name: String,
    pub target: Target,
}

/// Where a sink sends. Its Debug form shows no secret: the webhook's and
/// Slack's URLs, the signing key and the password are left out.
#[derive(Clone)]
pub enum Target {
    Webhook { url: url::Url, key: Vec<u8> },
    Slack { url: url::Url },
    Alertmanager { alerts_url: url::Url, auth: Option<BasicAuth> },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Webhook { .. } => f.write_str("Webhook { url: <secret>, key: <secret> }"),
            Target::Slack { .. } => f.write_str("Slack { url: <secret> }"),
            Target::Alertmanager { alerts_url, auth } => f
                .debug_struct("Alertmanager")
                .field("alerts_url", &alerts_url.as_str())
                .field("auth", auth)
                .finish(),
        }
    }
}

/// A user and password for HTTP Basic authentication.
#[derive(Clone)]
pub struct BasicAuth {
    pub username: String,
    password: String,
}

impl BasicAuth {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        BasicAuth { username: username.into(), password: password.into() }
    }

    /// The password, for the request's `Authorization` header only.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth").field("username", &self.username).field("password", &"<secret>").finish()
    }
}

/// An http(s) URL with a host; `text` (not a secret) is quoted in the error.
fn http_url(field: &str, text: &str) -> Result<url::Url, Error> {
    let url =
        url::Url::parse(text.trim()).map_err(|e| error(field, format!("{text:?} is not a URL: {e}")))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(error(field, format!("{text:?} is not an http(s) URL with a host"))),
    }
}

/// An http(s) URL with a host, read from the secret file `path`: the error
/// names the file, never what it holds.
fn secret_url(field: &str, path: &PathBuf) -> Result<url::Url, Error> {
    let text = read_secret(field, path)?;
    let url = url::Url::parse(&text)
        .map_err(|e| error(field, format!("{} does not hold a URL: {e}", path.display())))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(error(field, format!("{} does not hold an http(s) URL with a host", path.display()))),
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
        let invalid = |e: serde_json::Error| error(source, format!("not a valid configuration: {e}"));
        let value: serde_json::Value = serde_json::from_str(text).map_err(invalid)?;
        refuse_removed_fields(&value)?;
        let config: Config = serde_json::from_value(value).map_err(invalid)?;
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
        if d.resend_interval.is_zero() {
            return Err(error(
                "delivery.resendInterval",
                "0 would post to Alertmanager without pause; use e.g. 1m (Prometheus's resend delay)",
            ));
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            if sink.name.is_empty() || self.sinks[..i].iter().any(|s| s.name == sink.name) {
                return Err(error(
                    format!("sinks[{i}].name"),
                    format!("{:?} is empty or used twice", sink.name),
                ));
            }
            match &sink.kind {
                SinkKind::Alertmanager { url, basic_auth } => {
                    http_url(&format!("sinks[{i}].alertmanager.url"), url)?;
                    if let Some(auth) = basic_auth
                        && (auth.username.is_empty() || auth.username.contains(':'))
                    {
                        return Err(error(
                            format!("sinks[{i}].alertmanager.basicAuth.username"),
                            format!(
                                "{:?} is empty or holds a colon (HTTP Basic cannot carry it)",
                                auth.username
                            ),
                        ));
                    }
                }
                SinkKind::Webhook { .. } | SinkKind::Slack { .. } => {}
            }
        }
        if let Some(url) = &self.generator_url {
            http_url("generatorUrl", url)?;
        }
        if let Some(url) = &self.logs_url {
            http_url("logsUrl", url)?;
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
                    SinkKind::Webhook { url_file, secret_file } => {
                        let field = format!("sinks[{i}].webhook.secretFile");
                        let key = signing_key(&field, &read_secret(&field, secret_file)?)?;
                        Target::Webhook {
                            url: secret_url(&format!("sinks[{i}].webhook.urlFile"), url_file)?,
                            key,
                        }
                    }
                    SinkKind::Slack { url_file } => {
                        Target::Slack { url: secret_url(&format!("sinks[{i}].slack.urlFile"), url_file)? }
                    }
                    SinkKind::Alertmanager { url, basic_auth } => {
                        let base = http_url(&format!("sinks[{i}].alertmanager.url"), url)?;
                        let alerts_url = base
                            .join("api/v2/alerts")
                            .map_err(|e| error(format!("sinks[{i}].alertmanager.url"), e.to_string()))?;
                        let auth = match basic_auth {
                            Some(auth) => {
                                let field = format!("sinks[{i}].alertmanager.basicAuth.passwordFile");
                                let password = read_secret(&field, &auth.password_file)?;
                                Some(BasicAuth::new(auth.username.clone(), password))
                            }
                            None => None,
                        };
                        Target::Alertmanager { alerts_url, auth }
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

/// Refuses a configuration that still has a field [`REMOVED_FIELDS`] names.
fn refuse_removed_fields(value: &serde_json::Value) -> Result<(), Error> {
    let sinks = value.get("sinks").and_then(|s| s.as_array()).map(Vec::as_slice).unwrap_or_default();
    for (i, sink) in sinks.iter().enumerate() {
        for (kind, field, why) in REMOVED_FIELDS {
            if sink.get(kind).and_then(|k| k.get(field)).is_some() {
                return Err(error(format!("sinks[{i}].{kind}.{field}"), *why));
            }
        }
    }
    Ok(())
}

/// The retention the alerter applies unless configured otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// A closed incident is deleted once resolved this long ago. A week: the
    /// span of an on-call rotation, long enough for the review of last
    /// week's pages.
    #[serde(with = "humantime_serde")]
    pub keep_for: Duration,
    /// At most this many closed incidents are kept (the oldest go first):
    /// 500 stay well under a megabyte or two of status, even for a cluster
    /// whose nodes flap all week.
    pub keep_at_most: usize,
}

pub const DEFAULT_KEEP_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_KEEP_AT_MOST: usize = 500;

impl Default for Retention {
    fn default() -> Self {
        Retention { keep_for: DEFAULT_KEEP_FOR, keep_at_most: DEFAULT_KEEP_AT_MOST }
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
        let err = config(r#"[{"name": "am", "alertmanager": {"url": "ftp://x"}}]"#).unwrap_err();
        assert_eq!(err.field, "sinks[0].alertmanager.url");
        let err = config(r#"[{"name": "a", "alertmanager": {"url": "http://am:9093"}}, {"name": "a", "alertmanager": {"url": "http://am:9093"}}]"#)
            .unwrap_err();
        assert_eq!(err.field, "sinks[1].name");
        let err = Config::from_json(r#"{"cluster": "vigil", "sinks": [], "surprise": 1}"#, "cm").unwrap_err();
        assert!(err.to_string().contains("unknown field `surprise`"), "{err}");
        let err = config(
            r#"[{"name": "am", "alertmanager": {"url": "http://am:9093", "basicAuth": {"username": "a:b", "passwordFile": "/p"}}}]"#,
        )
        .unwrap_err();
        assert_eq!(err.field, "sinks[0].alertmanager.basicAuth.username");
        let err =
            Config::from_json(r#"{"cluster": "vigil", "sinks": [], "logsUrl": "vmui/"}"#, "cm").unwrap_err();
        assert_eq!(err.field, "logsUrl");
        let linked = Config::from_json(
            r#"{"cluster": "vigil", "sinks": [], "logsUrl": "http://10.0.0.5:9428/select/vmui/"}"#,
            "cm",
        )
        .unwrap();
        assert_eq!(linked.logs_url.as_deref(), Some("http://10.0.0.5:9428/select/vmui/"));
    }

    #[test]
    fn a_delivery_section_may_give_some_fields_and_a_zero_resend_interval_is_refused() {
        let text = r#"{"cluster": "vigil", "sinks": [], "delivery": {"expireAfter": "2h"}}"#;
        let config = Config::from_json(text, "cm").unwrap();
        assert_eq!(config.delivery.expire_after, Duration::from_secs(7200));
        assert_eq!(config.delivery.timeout, Duration::from_secs(15));
        assert_eq!(config.delivery.resend_interval, Duration::from_secs(60));
        assert_eq!(config.delivery.firing_for(), Duration::from_secs(240));
        let text = r#"{"cluster": "vigil", "sinks": [], "delivery": {"resendInterval": "0s"}}"#;
        let err = Config::from_json(text, "cm").unwrap_err();
        assert_eq!(err.field, "delivery.resendInterval");
    }

    #[test]
    fn a_webhook_url_in_the_configuration_is_refused_naming_what_replaced_it() {
        let err = config(
            r#"[{"name": "ops", "webhook": {"url": "http://127.0.0.1:1/hooks/SECRET123", "secretFile": "/s"}}]"#,
        )
        .unwrap_err();
        assert_eq!(err.field, "sinks[0].webhook.url");
        assert!(err.message.contains("urlFile") && err.message.contains("Secret"), "{err}");
        assert!(!err.to_string().contains("SECRET123"), "{err}");
    }

    fn webhook_config(url_file: &std::path::Path, secret_file: &std::path::Path) -> Config {
        let text = serde_json::json!({
            "cluster": "vigil",
            "sinks": [{"name": "ops", "webhook": {"urlFile": url_file, "secretFile": secret_file}}],
        });
        Config::from_json(&text.to_string(), "test").unwrap()
    }

    #[test]
    fn secrets_come_from_files_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, url) = (dir.path().join("secret"), dir.path().join("url"));
        std::fs::write(&secret, "not-a-secret\n").unwrap();
        std::fs::write(&url, "http://127.0.0.1:1/hook\n").unwrap();
        let config = webhook_config(&url, &secret);
        let err = config.sinks().unwrap_err();
        assert_eq!(err.field, "sinks[0].webhook.secretFile");
        assert!(err.message.contains("whsec_"), "{err}");
        std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let sinks = config.sinks().unwrap();
        assert!(
            matches!(&sinks[0].target, Target::Webhook { key, url } if key.len() == 24 && url.path() == "/hook")
        );
        let missing = Config::from_json(
            r#"{"cluster": "vigil", "sinks": [{"name": "s", "slack": {"urlFile": "/nonexistent/url"}}]}"#,
            "test",
        )
        .unwrap()
        .sinks()
        .unwrap_err();
        assert!(missing.message.contains("mount the Secret there"), "{missing}");
    }

    #[test]
    fn a_url_file_that_holds_no_url_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, url) = (dir.path().join("secret"), dir.path().join("url"));
        std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        for text in ["hooks.example/SECRET123", "ftp://host/SECRET123"] {
            std::fs::write(&url, text).unwrap();
            let err = webhook_config(&url, &secret).sinks().unwrap_err();
            assert_eq!(err.field, "sinks[0].webhook.urlFile");
            assert!(err.message.contains(&url.display().to_string()), "{err}");
            assert!(!err.to_string().contains("SECRET123"), "{err}");
        }
    }

    #[test]
    fn alertmanager_credentials_are_read_from_their_file_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "hunter2-SECRET\n").unwrap();
        let text = serde_json::json!({
            "cluster": "vigil",
            "sinks": [{"name": "am", "alertmanager": {
                "url": "http://am:9093/",
                "basicAuth": {"username": "vigil", "passwordFile": password},
            }}],
        });
        let config = Config::from_json(&text.to_string(), "test").unwrap();
        assert_eq!(Config::from_json(&config.to_json(), "again").unwrap(), config);
        let sinks = config.sinks().unwrap();
        let Target::Alertmanager { alerts_url, auth: Some(auth) } = &sinks[0].target else {
            panic!("{sinks:?}")
        };
        assert_eq!(alerts_url.as_str(), "http://am:9093/api/v2/alerts");
        assert_eq!((auth.username.as_str(), auth.password()), ("vigil", "hunter2-SECRET"));
        let shown = format!("{sinks:?}");
        assert!(shown.contains("vigil") && !shown.contains("hunter2"), "{shown}");
        std::fs::remove_file(&password).unwrap();
        let err = config.sinks().unwrap_err();
        assert_eq!(err.field, "sinks[0].alertmanager.basicAuth.passwordFile");
    }
}
