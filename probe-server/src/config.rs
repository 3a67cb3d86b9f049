use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

/// A configuration that cannot be used; names the field and what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file is not valid YAML or has unknown or mistyped fields.
    #[error("configuration file {path}: {message}")]
    Parse { path: String, message: String },
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {message}")]
    Read { path: String, message: String },
    /// A field has a value that cannot work.
    #[error("configuration field {field}: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), problem: problem.into() }
}

/// What to check and how often to call it failed or recovered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub name: String,
    /// `http://host:port/path`: healthy on any 2xx or 3xx answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `host:port`: healthy when a TCP connection opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// A DNS name: healthy when it resolves to at least one address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes that make a failing check healthy again.
    #[serde(default = "one")]
    pub success_threshold: u32,
    /// Consecutive failures that make a healthy check fail.
    #[serde(default = "three")]
    pub failure_threshold: u32,
}

/// The kind of check, resolved from the one of `http`, `tcp`, `dns` that is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Http(String),
    Tcp(String),
    Dns(String),
}

impl CheckConfig {
    /// A check with the default timeout and thresholds.
    pub fn new(name: &str, target: Target) -> Self {
        let (http, tcp, dns) = match target {
            Target::Http(url) => (Some(url), None, None),
            Target::Tcp(addr) => (None, Some(addr), None),
            Target::Dns(name) => (None, None, Some(name)),
        };
        CheckConfig {
            name: name.into(),
            http,
            tcp,
            dns,
            timeout: default_timeout(),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }

    pub fn target(&self) -> Target {
        match (&self.http, &self.tcp, &self.dns) {
            (Some(url), _, _) => Target::Http(url.clone()),
            (_, Some(addr), _) => Target::Tcp(addr.clone()),
            (_, _, Some(name)) => Target::Dns(name.clone()),
            _ => unreachable!("validated: exactly one target"),
        }
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(invalid(format!("{field}.name"), "must not be empty"));
        }
        let set =
            [self.http.is_some(), self.tcp.is_some(), self.dns.is_some()].iter().filter(|s| **s).count();
        if set != 1 {
            return Err(invalid(field, format!("set exactly one of http, tcp, dns (found {set})")));
        }
        if let Some(url) = &self.http {
            let rest = url
                .strip_prefix("http://")
                .ok_or_else(|| invalid(format!("{field}.http"), format!("{url:?} is not an http:// URL")))?;
            if rest.is_empty() || rest.starts_with('/') {
                return Err(invalid(format!("{field}.http"), format!("{url:?} has no host")));
            }
        }
        if let Some(addr) = &self.tcp {
            let port = addr.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if port.and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0).is_none() {
                return Err(invalid(format!("{field}.tcp"), format!("{addr:?} is not host:port")));
            }
        }
        if let Some(name) = &self.dns
            && (name.is_empty() || name.contains(['/', ':', ' ']))
        {
            return Err(invalid(format!("{field}.dns"), format!("{name:?} is not a DNS name")));
        }
        if self.timeout.is_zero() {
            return Err(invalid(format!("{field}.timeout"), "must be greater than 0"));
        }
        if self.success_threshold == 0 {
            return Err(invalid(format!("{field}.success_threshold"), "must be at least 1"));
        }
        if self.failure_threshold == 0 {
            return Err(invalid(format!("{field}.failure_threshold"), "must be at least 1"));
        }
        Ok(())
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
/// Where the kubelet's probes arrive by default.
pub const DEFAULT_PROBE_PORT: u16 = 8081;
/// Where /metrics and probe-server's own health are served by default.
pub const DEFAULT_ADMIN_PORT: u16 = 9091;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PROBE_PORT))
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_ADMIN_PORT))
}
fn default_period() -> Duration {
    Duration::from_secs(1)
}
fn default_drain() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the kubelet's probes arrive.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// /metrics, /live, /ready and /log-level, apart from the probe answers.
    #[serde(default = "default_admin")]
    pub admin_listen: SocketAddr,
    /// How often every check runs.
    #[serde(default = "default_period", with = "humantime_serde")]
    pub period: Duration,
    /// After SIGTERM: how long to keep answering (not ready) before exiting,
    /// so endpoint controllers see the pod leave first.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain: Duration,
    /// The container this sidecar watches. Liveness depends on it alone.
    pub workload: CheckConfig,
    /// What the workload needs to serve. Readiness only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<CheckConfig>,
}

/// Values from flags or the environment, which win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub workload_http: Option<String>,
    pub period: Option<Duration>,
    pub drain: Option<Duration>,
}

impl Config {
    /// Defaults for everything but the checks.
    pub fn new(workload: CheckConfig, dependencies: Vec<CheckConfig>) -> Self {
        Config {
            listen: default_listen(),
            admin_listen: default_admin(),
            period: default_period(),
            drain: default_drain(),
            workload,
            dependencies,
        }
    }

    /// The file format is JSON: a ConfigMap holds it as well as YAML, and a
    /// JSON parser is a fraction of the code a YAML one is in every pod.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }

    pub fn from_json(text: &str, path: &str) -> Result<Config, ConfigError> {
        serde_json::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
    }

    pub fn load(path: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.into(), message: e.to_string() })?;
        let mut config = Config::from_json(&text, path)?;
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(v) = o.listen {
            self.listen = v;
        }
        if let Some(v) = o.admin_listen {
            self.admin_listen = v;
        }
        if let Some(v) = &o.workload_http {
            self.workload.http = Some(v.clone());
            self.workload.tcp = None;
            self.workload.dns = None;
        }
        if let Some(v) = o.period {
            self.period = v;
        }
        if let Some(v) = o.drain {
            self.drain = v;
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.period.is_zero() {
            return Err(invalid("period", "must be greater than 0"));
        }
        if self.listen == self.admin_listen {
            return Err(invalid("admin_listen", format!("must differ from listen ({})", self.listen)));
        }
        self.workload.validate("workload")?;
        let mut names = vec![self.workload.name.as_str()];
        for (i, dep) in self.dependencies.iter().enumerate() {
            let field = format!("dependencies[{i}]");
            dep.validate(&field)?;
            if names.contains(&dep.name.as_str()) {
                return Err(invalid(format!("{field}.name"), format!("{:?} is used twice", dep.name)));
            }
            names.push(&dep.name);
        }
        for (i, check) in std::iter::once(&self.workload).chain(&self.dependencies).enumerate() {
            if check.timeout > self.period {
                let field = if i == 0 {
                    "workload.timeout".to_owned()
                } else {
                    format!("dependencies[{}].timeout", i - 1)
                };
                return Err(invalid(
                    field,
                    format!(
                        "{} is longer than period {}: checks would overlap",
                        humantime::format_duration(check.timeout),
                        humantime::format_duration(self.period)
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
  "period": "1s",
  "workload": {
    "name": "web",
    "http": "http://127.0.0.1:8000/",
    "timeout": "500ms",
    "failure_threshold": 2
  },
  "dependencies": [
    { "name": "cluster-dns", "dns": "kubernetes.default.svc.cluster.local" },
    { "name": "api-server", "tcp": "kubernetes.default.svc.cluster.local:443", "timeout": "800ms" }
  ]
}"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let c = Config::from_json(text, "probe.json")?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.workload.timeout, Duration::from_millis(500));
        assert_eq!(c.workload.failure_threshold, 2);
        assert_eq!(c.dependencies[0].failure_threshold, 3);
        assert_eq!(c.dependencies[0].target(), Target::Dns("kubernetes.default.svc.cluster.local".into()));
        assert_eq!(
            c.dependencies[1].target(),
            Target::Tcp("kubernetes.default.svc.cluster.local:443".into())
        );
    }

    fn field_of(text: &str) -> String {
        match parse(text).unwrap_err() {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("expected a field error, got {other}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(&GOOD.replace(r#""timeout": "500ms""#, r#""timeout": "0s""#)),
            "workload.timeout"
        );
        assert_eq!(field_of(&GOOD.replace("http://127.0.0.1:8000/", "ftp://x/")), "workload.http");
        assert_eq!(field_of(&GOOD.replace(":443", ":http")), "dependencies[1].tcp");
        assert_eq!(
            field_of(&GOOD.replace(r#""timeout": "800ms""#, r#""timeout": "2s""#)),
            "dependencies[1].timeout"
        );
        assert_eq!(
            field_of(&GOOD.replace(r#""name": "api-server""#, r#""name": "cluster-dns""#)),
            "dependencies[1].name"
        );
        assert_eq!(
            field_of(&GOOD.replace(r#""failure_threshold": 2"#, r#""failure_threshold": 0"#)),
            "workload.failure_threshold"
        );
        assert_eq!(
            field_of(
                &GOOD.replace(
                    r#"{ "name": "cluster-dns","#,
                    r#"{ "name": "cluster-dns", "http": "http://a/","#
                )
            ),
            "dependencies[0]"
        );
        assert_eq!(field_of(&GOOD.replacen("{", r#"{ "admin_listen": "0.0.0.0:8081","#, 1)), "admin_listen");
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_refused_by_name() {
        let err = parse(&GOOD.replace("failure_threshold", "failure_treshold")).unwrap_err().to_string();
        assert!(err.contains("unknown field `failure_treshold`") && err.contains("probe.json"), "{err}");
        let err =
            parse(&GOOD.replace(r#""timeout": "500ms""#, r#""timeout": "soon""#)).unwrap_err().to_string();
        assert!(err.contains("line 6"), "the error points at the line: {err}");
        assert!(matches!(parse(r#"{"workload": {"name": "w"}}"#), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn a_written_config_reads_back_the_same() {
        let c = parse(GOOD).unwrap();
        assert_eq!(parse(&c.to_json()).unwrap(), c);
        assert!(c.to_json().contains(r#""timeout": "500ms""#), "{}", c.to_json());
    }

    #[test]
    fn overrides_win_over_the_file() {
        let mut c = Config::from_json(GOOD, "probe.json").unwrap();
        c.apply(&Overrides {
            workload_http: Some("http://127.0.0.1:9000/healthz".into()),
            drain: Some(Duration::from_secs(9)),
            ..Default::default()
        });
        c.validate().unwrap();
        assert_eq!(c.workload.target(), Target::Http("http://127.0.0.1:9000/healthz".into()));
        assert_eq!(c.drain, Duration::from_secs(9));
    }
}
