//! The authenticating proxy (crate `auth-proxy`) as a sidecar: the pod's
//! server (Prometheus, Alertmanager, Jaeger) listens on loopback only, and
//! the proxy listens on the pod's IP on the same ports, so every request
//! from outside the pod (the LoadBalancer, other pods, the kubelet's probes)
//! passes it, while the server's own `localhost` URLs (Prometheus scraping
//! itself) keep working. Its configuration is generated from the crate's
//! own types; the passwords are the Secrets of [`super::credentials`],
//! mounted as files.

use std::{collections::BTreeMap, time::Duration};

use ::auth_proxy::config::{Config, Grant, Limits, Route};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, KeyToPath, ProjectedVolumeSource, SecretProjection, Volume,
    VolumeMount, VolumeProjection,
};
use kube::api::ObjectMeta;

use super::{config_volume, credentials, field_env, http_get_probe, locked_down, resources};

pub const CRATE: &str = "auth-proxy";
/// Its admin port (`/live`, `/ready`, `/metrics`), named `proxy-admin`.
pub const ADMIN_PORT: u16 = 9095;
const CONFIG_DIR: &str = "/etc/auth-proxy";
/// Where the proxy finds each user's password, one file per user.
const USERS_DIR: &str = "/etc/auth-proxy/users";
/// The volume of the users' password files, which the server's own
/// container may mount too (Prometheus, to reach Alertmanager).
pub const CREDENTIALS_VOLUME: &str = "credentials";
/// The file vigil's password is in, in that volume.
pub const API_PASSWORD_FILE: &str = credentials::API_USER;

/// The largest request body for the query APIs and UIs: Grafana POSTs its
/// PromQL as a form, Prometheus POSTs batches of at most 64 alerts to
/// Alertmanager (a few KiB each); 1 MiB is far above either.
pub const API_BODY_LIMIT: u64 = 1 << 20;
/// The largest OTLP request: the components export batches of at most 512
/// spans (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`), a few hundred bytes each in
/// protobuf; 4 MiB leaves room for large attributes while keeping what
/// Jaeger (which holds a whole body in memory, under a 256 MiB limit) can
/// be sent at once far below its own 20 MiB default.
pub const OTLP_BODY_LIMIT: u64 = 4 << 20;

/// One port the proxy listens on, in front of the same port on loopback.
pub struct Listener {
    /// The container port's name (which the Service targets) and the route's.
    pub name: &'static str,
    pub port: u16,
    pub body_limit: u64,
    /// Prometheus's own query timeout is 2 minutes.
    pub upstream_timeout: Duration,
    /// Paths anyone may GET: the kubelet's probes.
    pub public: &'static [&'static str],
    /// Where `/` leads a user: the UI's path when the upstream's root is
    /// not its UI.
    pub root: Option<&'static str>,
    /// A user who may only write here, besides vigil's.
    pub writer: Option<Writer>,
}

/// A user who may only `POST` to some exact paths of one listener: the
/// span senders on Jaeger's OTLP port, vlagent on VictoriaLogs' insert path.
#[derive(Debug, Clone, Copy)]
pub struct Writer {
    pub user: &'static str,
    /// Its Secret in the monitoring namespace (the password file's source).
    pub secret: &'static str,
    pub paths: &'static [&'static str],
}

/// The span senders: `POST /v1/traces` on Jaeger's OTLP port.
pub const OTLP_WRITER: Writer =
    Writer { user: credentials::OTLP_USER, secret: credentials::OTLP_SECRET, paths: &["/v1/traces"] };

fn writers(listeners: &[Listener]) -> Vec<Writer> {
    let mut writers: Vec<Writer> = vec![];
    for writer in listeners.iter().filter_map(|l| l.writer) {
        if !writers.iter().any(|w| w.user == writer.user) {
            writers.push(writer);
        }
    }
    writers
}

/// The proxy's configuration for `listeners`.
pub fn config(listeners: &[Listener]) -> Config {
    let mut users = BTreeMap::from([(
        credentials::API_USER.to_owned(),
        format!("{USERS_DIR}/{API_PASSWORD_FILE}").into(),
    )]);
    for writer in writers(listeners) {
        users.insert(writer.user.into(), format!("{USERS_DIR}/{}", writer.user).into());
    }
    let routes = listeners
        .iter()
        .map(|l| {
            let mut grants = vec![Grant::all(credentials::API_USER)];
            if let Some(writer) = l.writer {
                grants.push(Grant {
                    user: writer.user.into(),
                    methods: vec!["POST".into()],
                    paths: writer.paths.iter().map(|p| (*p).to_owned()).collect(),
                });
            }
            Route {
                name: l.name.into(),
                port: l.port,
                upstream: std::net::SocketAddr::from(([127, 0, 0, 1], l.port)),
                body_limit: l.body_limit,
                upstream_timeout: l.upstream_timeout,
                public: l.public.iter().map(|p| (*p).to_owned()).collect(),
                root: l.root.map(str::to_owned),
                grants,
            }
        })
        .collect();
    Config { realm: "vigil".into(), users, routes, limits: Limits::default() }
}

/// What a pod adds to run the proxy: its ConfigMap (which rolls the pod
/// when it changes), its container, and its volumes.
pub struct Sidecar {
    pub config: ConfigMap,
    pub container: Container,
    pub volumes: Vec<Volume>,
}

/// The password files of vigil's user and of `writers`, read-only to the pod's group.
fn credentials_volume(writers: &[Writer]) -> Volume {
    let item = |secret: &str, file: &str| VolumeProjection {
        secret: Some(SecretProjection {
            name: secret.into(),
            items: Some(vec![KeyToPath {
                key: credentials::PASSWORD_KEY.into(),
                path: file.into(),
                ..Default::default()
            }]),
            optional: Some(false),
        }),
        ..Default::default()
    };
    let mut sources = vec![item(credentials::API_SECRET, API_PASSWORD_FILE)];
    sources.extend(writers.iter().map(|w| item(w.secret, w.user)));
    Volume {
        name: CREDENTIALS_VOLUME.into(),
        projected: Some(ProjectedVolumeSource { sources: Some(sources), default_mode: Some(0o440) }),
        ..Default::default()
    }
}

/// The credentials volume mounted read-only at `path`.
pub fn credentials_mount(path: &str) -> VolumeMount {
    VolumeMount {
        name: CREDENTIALS_VOLUME.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// The sidecar of the monitoring component `app` (whose object metadata is
/// `meta`), running `image`, in front of `listeners`. The pod must give its
/// group (`fsGroup`) read access to the password files.
pub fn sidecar(meta: impl Fn(&str) -> ObjectMeta, image: &str, listeners: &[Listener]) -> Sidecar {
    let config_name = meta("auth-proxy").name.unwrap_or_default();
    let config = ConfigMap {
        data: Some(BTreeMap::from([("config.json".into(), config(listeners).to_json())])),
        ..ConfigMap { metadata: meta("auth-proxy"), ..Default::default() }
    };
    let (config_volume, config_mount) = config_volume("auth-proxy-config", &config_name, CONFIG_DIR);
    let mut ports: Vec<ContainerPort> = listeners
        .iter()
        .map(|l| ContainerPort {
            name: Some(l.name.into()),
            container_port: l.port.into(),
            ..Default::default()
        })
        .collect();
    ports.push(ContainerPort {
        name: Some("proxy-admin".into()),
        container_port: ADMIN_PORT.into(),
        ..Default::default()
    });
    let probe = |path: &str| k8s_openapi::api::core::v1::Probe {
        period_seconds: Some(10),
        ..http_get_probe(ADMIN_PORT, path)
    };
    let container = Container {
        name: CRATE.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec!["--config".into(), format!("{CONFIG_DIR}/config.json")]),
        // The pod's own address: the server keeps the same ports on loopback.
        env: Some(vec![field_env("AUTH_PROXY_BIND_ADDRESS", "status.podIP")]),
        ports: Some(ports),
        liveness_probe: Some(probe("/live")),
        readiness_probe: Some(probe("/ready")),
        volume_mounts: Some(vec![config_mount, credentials_mount(USERS_DIR)]),
        resources: Some(resources(&[("cpu", "10m"), ("memory", "8Mi")], &[("memory", "32Mi")])),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    let volumes = vec![config_volume, credentials_volume(&writers(listeners))];
    Sidecar { config, container, volumes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners() -> [Listener; 2] {
        [
            Listener {
                name: "query",
                port: 16686,
                body_limit: API_BODY_LIMIT,
                upstream_timeout: Duration::from_secs(60),
                public: &[],
                root: None,
                writer: None,
            },
            Listener {
                name: "otlp-http",
                port: 4318,
                body_limit: OTLP_BODY_LIMIT,
                upstream_timeout: Duration::from_secs(30),
                public: &[],
                root: None,
                writer: Some(OTLP_WRITER),
            },
        ]
    }

    #[test]
    fn the_span_senders_may_only_post_spans_to_the_otlp_port() {
        let config = config(&listeners());
        config.validate().unwrap();
        let query = &config.routes[0];
        assert_eq!(query.upstream.to_string(), "127.0.0.1:16686");
        assert_eq!(query.grants, [Grant::all("vigil")]);
        let otlp = &config.routes[1];
        assert!(otlp.grants.iter().any(|g| g.user == "otlp" && g.allows("POST", "/v1/traces")));
        assert!(!otlp.grants.iter().any(|g| g.user == "otlp" && g.allows("GET", "/v1/traces")));
        assert_eq!(config.users["otlp"].to_string_lossy(), "/etc/auth-proxy/users/otlp");
    }

    #[test]
    fn no_password_is_in_the_configuration_or_the_pod_spec() {
        let sidecar = sidecar(
            |name| ObjectMeta { name: Some(format!("jaeger-{name}")), ..Default::default() },
            "img",
            &listeners(),
        );
        let text = serde_json::to_string(&sidecar.container).unwrap()
            + &serde_json::to_string(&sidecar.config).unwrap()
            + &serde_json::to_string(&sidecar.volumes).unwrap();
        assert!(!text.contains("Basic ") && !text.contains("stringData"), "{text}");
        let projected = sidecar.volumes[1].projected.as_ref().unwrap();
        let secrets: Vec<_> = projected
            .sources
            .iter()
            .flatten()
            .filter_map(|s| s.secret.as_ref().map(|s| s.name.clone()))
            .collect();
        assert_eq!(secrets, ["vigil-api-credentials", "vigil-otlp-credentials"]);
        assert_eq!(projected.default_mode, Some(0o440));
        assert_eq!(sidecar.config.metadata.name.as_deref(), Some("jaeger-auth-proxy"));
    }
}
