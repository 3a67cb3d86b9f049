//! What the proxy fronts and who may use it: a JSON file (a mounted
//! ConfigMap) that `vigil` writes from these very types. It names users and
//! the files holding their passwords (mounted Secret keys), never a
//! password.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::proxy::clean_path;

/// A configuration that cannot be used: the field and what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {message}")]
    Read { path: String, message: String },
    #[error("configuration file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("configuration field {field}: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), problem: problem.into() }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The realm of every `WWW-Authenticate: Basic` challenge.
    pub realm: String,
    /// Each user and the file holding its password.
    pub users: BTreeMap<String, PathBuf>,
    pub routes: Vec<Route>,
    #[serde(default)]
    pub limits: Limits,
}

/// One listener in front of one upstream in the same pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The `route` label of the proxy's metrics and log lines.
    pub name: String,
    /// Listens on the bind address (`--bind-address`, the pod's IP) and this port.
    pub port: u16,
    /// The upstream, on loopback: the pod's server listens there only.
    pub upstream: SocketAddr,
    /// The largest request body forwarded, in bytes (413 beyond).
    pub body_limit: u64,
    /// How long the upstream may take to start its answer (504 beyond).
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// Exact paths anyone may GET or HEAD (the kubelet's probes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public: Vec<String>,
    /// Where an authenticated GET or HEAD of `/` is sent (303 See Other):
    /// the path of the upstream's UI, when it is not at the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Who may do what here; a user without a grant is refused.
    pub grants: Vec<Grant>,
}

/// What one user may do on a route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub user: String,
    /// Methods it may use (upper case); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Paths it may use: exact, or a prefix when it ends in `/`; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

impl Grant {
    /// Everything, for `user`.
    pub fn all(user: &str) -> Self {
        Grant { user: user.into(), methods: vec![], paths: vec![] }
    }

    pub fn allows(&self, method: &str, path: &str) -> bool {
        let method_ok = self.methods.is_empty() || self.methods.iter().any(|m| m == method);
        let path_ok = self.paths.is_empty()
            || self.paths.iter().any(|p| if p.ends_with('/') { path.starts_with(p) } else { path == p });
        method_ok && path_ok
    }
}

/// What bounds hostile clients, for every listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// A connection that has not sent a whole request head within this is
    /// closed: slow clients, and idle kept-alive connections.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Connections served at once per listener; more wait in the backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_read_timeout: Duration::from_secs(10), max_connections: 256 }
    }
}

/// Methods a grant may name: HTTP's own (RFC 9110) and PATCH.
pub const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"];

impl Config {
    pub fn from_json(text: &str, path: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_json::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.into(), message: e.to_string() })?;
        Self::from_json(&text, path)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serializes")
    }

    /// Everything that can be checked without touching the password files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.realm.is_empty() || self.realm.contains(['"', '\\']) || !self.realm.is_ascii() {
            return Err(invalid("realm", "must be non-empty ASCII without quotes or backslashes"));
        }
        if self.users.is_empty() {
            return Err(invalid("users", "no user: name at least one, with its password file"));
        }
        for (user, file) in &self.users {
            if user.is_empty() || user.contains(':') || !user.is_ascii() {
                return Err(invalid(format!("users.{user}"), "a user name is ASCII, non-empty, without ':'"));
            }
            if !file.is_absolute() {
                return Err(invalid(
                    format!("users.{user}"),
                    format!("{} is not an absolute path", file.display()),
                ));
            }
        }
        if self.routes.is_empty() {
            return Err(invalid("routes", "no route: name at least one listener and its upstream"));
        }
        let (mut names, mut ports) = (BTreeSet::new(), BTreeSet::new());
        for (i, route) in self.routes.iter().enumerate() {
            let field = |name: &str| format!("routes[{i}].{name}");
            if route.name.is_empty() || !names.insert(&route.name) {
                return Err(invalid(field("name"), format!("{:?} is empty or used twice", route.name)));
            }
            if route.port == 0 || !ports.insert(route.port) {
                return Err(invalid(field("port"), format!("{} is 0 or used twice", route.port)));
            }
            if !route.upstream.ip().is_loopback() {
                return Err(invalid(
                    field("upstream"),
                    format!(
                        "{} is not a loopback address: the upstream listens inside the pod only",
                        route.upstream
                    ),
                ));
            }
            if route.body_limit == 0 {
                return Err(invalid(field("body_limit"), "must be at least 1 byte"));
            }
            if route.upstream_timeout.is_zero() {
                return Err(invalid(field("upstream_timeout"), "must be longer than 0"));
            }
            if let Some(p) = route.public.iter().find(|p| !p.starts_with('/')) {
                return Err(invalid(field("public"), format!("{p:?} does not start with /")));
            }
            if let Some(root) = &route.root
                && (!root.starts_with('/') || root.starts_with("//") || root == "/" || !clean_path(root))
            {
                // `//host` would send browsers to another site.
                return Err(invalid(
                    field("root"),
                    format!("{root:?} is not a path of this address other than /"),
                ));
            }
            if route.grants.is_empty() {
                return Err(invalid(field("grants"), "nobody may use this route: grant at least one user"));
            }
            for (j, grant) in route.grants.iter().enumerate() {
                let field = |name: &str| format!("routes[{i}].grants[{j}].{name}");
                if !self.users.contains_key(&grant.user) {
                    return Err(invalid(field("user"), format!("{:?} is not one of users", grant.user)));
                }
                if let Some(m) = grant.methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
                    return Err(invalid(field("methods"), format!("{m:?} is not one of {METHODS:?}")));
                }
                if let Some(p) = grant.paths.iter().find(|p| !p.starts_with('/')) {
                    return Err(invalid(field("paths"), format!("{p:?} does not start with /")));
                }
            }
        }
        if self.limits.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if self.limits.header_read_timeout.is_zero() {
            return Err(invalid("limits.header_read_timeout", "must be longer than 0"));
        }
        Ok(())
    }
}

/// Where a route listens: the bind address and its port.
pub fn listen_address(bind: std::net::IpAddr, route: &Route) -> SocketAddr {
    SocketAddr::new(bind, route.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn example() -> Config {
        Config {
            realm: "vigil".into(),
            users: BTreeMap::from([
                ("vigil".into(), PathBuf::from("/etc/auth-proxy/users/vigil")),
                ("otlp".into(), PathBuf::from("/etc/auth-proxy/users/otlp")),
            ]),
            routes: vec![Route {
                name: "otlp".into(),
                port: 4318,
                upstream: "127.0.0.1:4318".parse().unwrap(),
                body_limit: 4 << 20,
                upstream_timeout: Duration::from_secs(30),
                public: vec![],
                root: None,
                grants: vec![
                    Grant::all("vigil"),
                    Grant {
                        user: "otlp".into(),
                        methods: vec!["POST".into()],
                        paths: vec!["/v1/traces".into()],
                    },
                ],
            }],
            limits: Limits::default(),
        }
    }

    #[test]
    fn a_written_configuration_reads_back() {
        let config = example();
        assert_eq!(Config::from_json(&config.to_json(), "x").unwrap(), config);
    }

    type Mistake = (fn(&mut Config), &'static str);

    #[test]
    fn each_mistake_names_its_field() {
        let cases: Vec<Mistake> = vec![
            (|c| c.routes[0].upstream = "10.0.0.1:80".parse().unwrap(), "routes[0].upstream"),
            (|c| c.routes[0].grants[1].user = "nobody".into(), "routes[0].grants[1].user"),
            (|c| c.routes[0].grants[1].methods = vec!["post".into()], "routes[0].grants[1].methods"),
            (|c| c.routes[0].grants[1].paths = vec!["v1".into()], "routes[0].grants[1].paths"),
            (|c| c.routes[0].body_limit = 0, "routes[0].body_limit"),
            (|c| c.routes[0].grants.clear(), "routes[0].grants"),
            (|c| c.routes[0].public = vec!["-/ready".into()], "routes[0].public"),
            (|c| c.routes[0].root = Some("//evil.example/".into()), "routes[0].root"),
            (|c| c.routes[0].root = Some("/".into()), "routes[0].root"),
            (|c| c.users.clear(), "users"),
            (|c| c.realm = "a\"b".into(), "realm"),
            (|c| c.limits.max_connections = 0, "limits.max_connections"),
            (
                |c| {
                    let again = c.routes[0].clone();
                    c.routes.push(Route { name: "other".into(), ..again });
                },
                "routes[1].port",
            ),
        ];
        for (break_it, field) in cases {
            let mut config = example();
            break_it(&mut config);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.starts_with(&format!("configuration field {field}:")), "{field}: {err}");
        }
        let err =
            Config::from_json("{\"realm\": \"v\", \"user\": {}}", "/etc/x.json").unwrap_err().to_string();
        assert!(err.contains("/etc/x.json") && err.contains("unknown field `user`"), "{err}");
    }

    #[test]
    fn a_grant_matches_exact_paths_and_prefixes_ending_in_a_slash() {
        let otlp =
            Grant { user: "otlp".into(), methods: vec!["POST".into()], paths: vec!["/v1/traces".into()] };
        assert!(otlp.allows("POST", "/v1/traces"));
        assert!(!otlp.allows("GET", "/v1/traces"));
        assert!(!otlp.allows("POST", "/v1/traces/x"));
        assert!(!otlp.allows("POST", "/v1/tracesx"));
        let api = Grant { user: "u".into(), methods: vec![], paths: vec!["/api/".into()] };
        assert!(api.allows("DELETE", "/api/v2/silence/1") && !api.allows("GET", "/apix"));
        assert!(Grant::all("vigil").allows("PATCH", "/anything"));
    }
}
