//! Jaeger v2 (an OpenTelemetry Collector distribution), built from its Go
//! module: the trace store every vigil component exports to over OTLP/HTTP.
//! Spans are kept in memory (a bounded number of traces, lost when the pod
//! restarts: a drill's traces are read within minutes of it). Its query API
//! and its OTLP receiver are at their own LoadBalancer address, so the host
//! can read traces and `vigil` itself can send its own, both behind the
//! authenticating proxy (see [`super::auth_proxy`]): the span senders'
//! user may only `POST /v1/traces`. Its health check and its own metrics
//! stay on the pod's address, unauthenticated, for the kubelet and Prometheus.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, ContainerPort, EnvVar, PodSpec, Probe};
use kube::api::ObjectMeta;
use serde::Serialize;

use super::{
    Addon, Address, Check, ImageFrom, ImageRun, Input, Manifests, ROLLOUT, Rollout, UpstreamImage,
    auth_proxy, config_volume, credentials, http_get_probe, locked_down, metallb,
    node_exporter::{self, NAMESPACE, monitoring_deployment, monitoring_meta, monitoring_selector},
    non_root_pod, on_control_plane, resources, roll_on_change, upstream,
};
use crate::apply::Object;
use vigil_model::cluster::ClusterSpec;
use vigil_model::versions;

pub const NAME: &str = "jaeger";
/// The query API (`/api/traces/<id>`, `/api/services`).
pub const QUERY_PORT: u16 = 16686;
/// OTLP over HTTP (`/v1/traces`).
pub const OTLP_PORT: u16 = 4318;
/// The collector's health check (`/status`).
const HEALTH_PORT: u16 = 13133;
/// Its own metrics.
const METRICS_PORT: u16 = 8888;
/// The query service's gRPC port. Jaeger listens on it on every interface
/// unless told otherwise, which would let any pod read every trace around
/// the proxy; nothing here uses it, so it stays on loopback.
const QUERY_GRPC_PORT: u16 = 16685;
/// Its Service takes the fourth address of the LoadBalancer range.
pub const LOAD_BALANCER_INDEX: u32 = 3;
const CONFIG_DIR: &str = "/etc/jaeger";
/// Upstream's image runs as 10001.
const USER: i64 = 10001;
/// Traces kept in memory; older ones are evicted first. About 60 MiB with
/// vigil's traces (a few dozen spans each), well inside the memory limit.
pub const MAX_TRACES: u32 = 20_000;

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "Jaeger: the trace store the components export to",
    crates: &[auth_proxy::CRATE],
    images: &[IMAGE],
    needs: &[metallb::NAME],
    installed_after: &[],
    namespace: Some(node_exporter::namespace),
    secrets: None,
    objects: addon_objects,
    after_rollout: None,
    rollout: &[Rollout::Deployment { namespace: NAMESPACE, name: NAME, replicas: 1 }],
    address: Some(Address {
        key: NAME,
        namespace: NAMESPACE,
        service: NAME,
        url: |ip| format!("http://{ip}:{QUERY_PORT}/"),
        check: Check::Gated("api/services"),
        hint: "Jaeger query API (traces: /api/traces/<id>); OTLP/HTTP on port 4318",
        load_balancer_index: LOAD_BALANCER_INDEX,
    }),
    manifests: Manifests::Generated { dir: NAMESPACE },
    timeout: ROLLOUT,
};

/// Upstream's image runs as 10001.
pub const IMAGE: UpstreamImage = UpstreamImage {
    name: NAME,
    version: versions::JAEGER,
    replaces: None,
    from: ImageFrom::Scratch,
    binary: "jaeger",
    path: "/cmd/jaeger/jaeger-linux",
    run: ImageRun::AsUser("10001:10001"),
    extra: &[],
};

pub fn image(repository: &str) -> String {
    IMAGE.reference(repository)
}

/// Where the components in the cluster send their spans
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`).
pub fn otlp_url() -> String {
    format!("http://{NAME}.{NAMESPACE}.svc:{OTLP_PORT}")
}

/// The variables that turn a component's trace export on: the endpoint,
/// the span senders' credentials (from the Secret `vigil up` makes in each
/// namespace whose pods export; optional, so that a pod without it still
/// runs, its spans refused), its service name, the pod and node it runs on
/// as resource attributes, and its sampling: a caller's decision (a sampled `traceparent`) is always
/// followed; of the requests that come without one, `ratio` are traced
/// (None: all of them).
pub fn otel_env(service: &str, ratio: Option<f64>) -> Vec<EnvVar> {
    let var =
        |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), ..Default::default() };
    let mut env = vec![
        super::field_env("OTEL_K8S_POD_NAME", "metadata.name"),
        super::field_env("OTEL_K8S_NODE_NAME", "spec.nodeName"),
        var("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_url()),
        credentials::secret_env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            credentials::OTLP_SECRET,
            credentials::HEADERS_KEY,
            true,
        ),
        var("OTEL_SERVICE_NAME", service.into()),
        // `$(VAR)` is expanded by the kubelet from the variables above.
        var(
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.pod.name=$(OTEL_K8S_POD_NAME),k8s.node.name=$(OTEL_K8S_NODE_NAME)".into(),
        ),
    ];
    if let Some(ratio) = ratio {
        env.push(var("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".into()));
        env.push(var("OTEL_TRACES_SAMPLER_ARG", ratio.to_string()));
    }
    env
}

/// The collector configuration, as the all-in-one configuration upstream
/// embeds but with only the OTLP/HTTP receiver, memory storage of
/// [`MAX_TRACES`], the query API and the receiver on loopback (the proxy
/// has their ports on the pod's address), the health check and metrics on
/// the pod's address.
#[derive(Serialize)]
struct Config {
    service: ServiceConfig,
    extensions: Extensions,
    receivers: BTreeMap<&'static str, Otlp>,
    processors: BTreeMap<&'static str, BTreeMap<String, String>>,
    exporters: BTreeMap<&'static str, StorageExporter>,
}

#[derive(Serialize)]
struct ServiceConfig {
    extensions: Vec<&'static str>,
    pipelines: BTreeMap<&'static str, Pipeline>,
    telemetry: Telemetry,
}

#[derive(Serialize)]
struct Pipeline {
    receivers: Vec<&'static str>,
    processors: Vec<&'static str>,
    exporters: Vec<&'static str>,
}

#[derive(Serialize)]
struct Telemetry {
    resource: BTreeMap<&'static str, &'static str>,
    metrics: Metrics,
    logs: Logs,
}

#[derive(Serialize)]
struct Metrics {
    level: &'static str,
    readers: Vec<Reader>,
}

#[derive(Serialize)]
struct Reader {
    pull: Pull,
}

#[derive(Serialize)]
struct Pull {
    exporter: BTreeMap<&'static str, HostPort>,
}

#[derive(Serialize)]
struct HostPort {
    host: &'static str,
    port: u16,
}

#[derive(Serialize)]
struct Logs {
    level: &'static str,
}

#[derive(Serialize)]
struct Extensions {
    jaeger_query: Query,
    jaeger_storage: Storage,
    healthcheckv2: HealthCheck,
}

#[derive(Serialize)]
struct Query {
    storage: BTreeMap<&'static str, &'static str>,
    http: Endpoint,
    grpc: Endpoint,
}

#[derive(Serialize)]
struct Endpoint {
    endpoint: String,
}

fn endpoint(port: u16) -> Endpoint {
    Endpoint { endpoint: format!("0.0.0.0:{port}") }
}

fn loopback(port: u16) -> Endpoint {
    Endpoint { endpoint: format!("127.0.0.1:{port}") }
}

#[derive(Serialize)]
struct Storage {
    backends: BTreeMap<&'static str, Backend>,
}

#[derive(Serialize)]
struct Backend {
    memory: Memory,
}

#[derive(Serialize)]
struct Memory {
    max_traces: u32,
}

#[derive(Serialize)]
struct HealthCheck {
    use_v2: bool,
    http: Endpoint,
}

#[derive(Serialize)]
struct Otlp {
    protocols: BTreeMap<&'static str, Endpoint>,
}

#[derive(Serialize)]
struct StorageExporter {
    trace_storage: &'static str,
}

const STORE: &str = "memstore";

pub fn config_yaml() -> String {
    let config = Config {
        service: ServiceConfig {
            extensions: vec!["jaeger_storage", "jaeger_query", "healthcheckv2"],
            pipelines: BTreeMap::from([(
                "traces",
                Pipeline {
                    receivers: vec!["otlp"],
                    processors: vec!["batch"],
                    exporters: vec!["jaeger_storage_exporter"],
                },
            )]),
            telemetry: Telemetry {
                resource: BTreeMap::from([("service.name", NAME)]),
                metrics: Metrics {
                    level: "basic",
                    readers: vec![Reader {
                        pull: Pull {
                            exporter: BTreeMap::from([(
                                "prometheus",
                                HostPort { host: "0.0.0.0", port: METRICS_PORT },
                            )]),
                        },
                    }],
                },
                logs: Logs { level: "info" },
            },
        },
        extensions: Extensions {
            jaeger_query: Query {
                storage: BTreeMap::from([("traces", STORE)]),
                http: loopback(QUERY_PORT),
                grpc: loopback(QUERY_GRPC_PORT),
            },
            jaeger_storage: Storage {
                backends: BTreeMap::from([(STORE, Backend { memory: Memory { max_traces: MAX_TRACES } })]),
            },
            healthcheckv2: HealthCheck { use_v2: true, http: endpoint(HEALTH_PORT) },
        },
        receivers: BTreeMap::from([(
            "otlp",
            Otlp { protocols: BTreeMap::from([("http", loopback(OTLP_PORT))]) },
        )]),
        processors: BTreeMap::from([("batch", BTreeMap::new())]),
        exporters: BTreeMap::from([("jaeger_storage_exporter", StorageExporter { trace_storage: STORE })]),
    };
    serde_yaml::to_string(&config).expect("serializes")
}

fn meta(name: &str) -> ObjectMeta {
    monitoring_meta(NAME, name, true)
}

fn addon_objects(input: &Input) -> Result<Vec<Object>, upstream::Error> {
    Ok(objects(input.spec, &input.image(auth_proxy::CRATE)))
}

fn port(name: &str, port: u16) -> ContainerPort {
    ContainerPort { name: Some(name.into()), container_port: port.into(), ..Default::default() }
}

/// `proxy_image`: the authenticating proxy's.
pub fn objects(spec: &ClusterSpec, proxy_image: &str) -> Vec<Object> {
    let (config_volume, config_mount) = config_volume("config", "jaeger-config", CONFIG_DIR);
    let proxy = auth_proxy::sidecar(
        |name| meta(&format!("{NAME}-{name}")),
        proxy_image,
        &[
            auth_proxy::Listener {
                name: "query",
                port: QUERY_PORT,
                body_limit: auth_proxy::API_BODY_LIMIT,
                upstream_timeout: std::time::Duration::from_secs(60),
                public: &[],
                root: None,
                writer: None,
            },
            auth_proxy::Listener {
                name: "otlp-http",
                port: OTLP_PORT,
                body_limit: auth_proxy::OTLP_BODY_LIMIT,
                upstream_timeout: std::time::Duration::from_secs(30),
                public: &[],
                root: None,
                writer: Some(auth_proxy::OTLP_WRITER),
            },
        ],
    );
    let config = ConfigMap {
        metadata: meta("jaeger-config"),
        data: Some(BTreeMap::from([("config.yaml".into(), config_yaml())])),
        ..Default::default()
    };
    let probe = Probe { period_seconds: Some(5), ..http_get_probe(HEALTH_PORT, "/status") };
    let container = Container {
        name: NAME.into(),
        image: Some(image(&spec.image_repository)),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec!["--config".into(), format!("{CONFIG_DIR}/config.yaml")]),
        env: Some(vec![EnvVar {
            // The Go runtime collects before the container's limit is reached.
            name: "GOMEMLIMIT".into(),
            value: Some("200MiB".into()),
            ..Default::default()
        }]),
        // The query API and OTLP are the proxy's ports.
        ports: Some(vec![port("health", HEALTH_PORT), port("metrics", METRICS_PORT)]),
        readiness_probe: Some(probe.clone()),
        liveness_probe: Some(Probe { initial_delay_seconds: Some(5), ..probe }),
        volume_mounts: Some(vec![config_mount]),
        resources: Some(resources(&[("cpu", "20m"), ("memory", "64Mi")], &[("memory", "256Mi")])),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    let (node_selector, tolerations) = on_control_plane();
    let mut deployment = monitoring_deployment(
        NAME,
        PodSpec {
            // On the control plane, which `vigil drill` never breaks: its
            // traces are in memory, and a drill that killed its node would
            // lose the very incident it records.
            node_selector: Some(node_selector),
            tolerations: Some(tolerations),
            service_account_name: Some(NAME.into()),
            // It never talks to the API server.
            automount_service_account_token: Some(false),
            // Its group reads the proxy's password files.
            security_context: Some(non_root_pod(USER, Some(USER))),
            containers: vec![container, proxy.container],
            volumes: Some([config_volume].into_iter().chain(proxy.volumes).collect()),
            ..Default::default()
        },
    );
    roll_on_change(&mut deployment, &[&config, &proxy.config]);
    let ip = spec.load_balancer_ip(LOAD_BALANCER_INDEX).to_string();
    let ports = [("query", QUERY_PORT), ("otlp-http", OTLP_PORT)];
    let service = metallb::pinned_service(meta(NAME), &ip, monitoring_selector(NAME), &ports);
    // Its own identity, with no role and no token: nothing it could be granted by accident.
    let account = k8s_openapi::api::core::v1::ServiceAccount {
        metadata: meta(NAME),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    vec![
        Object::typed(account),
        Object::typed(config),
        Object::typed(proxy.config),
        Object::typed(deployment),
        Object::typed(service),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collector_receives_otlp_http_into_bounded_memory() {
        let yaml: serde_yaml::Value = serde_yaml::from_str(&config_yaml()).unwrap();
        assert_eq!(yaml["service"]["pipelines"]["traces"]["receivers"][0], "otlp");
        // On loopback: from outside the pod, only through the proxy.
        assert_eq!(yaml["receivers"]["otlp"]["protocols"]["http"]["endpoint"], "127.0.0.1:4318");
        assert_eq!(yaml["extensions"]["jaeger_query"]["http"]["endpoint"], "127.0.0.1:16686");
        // Its gRPC query port too, or any pod reads every trace around the proxy.
        assert_eq!(yaml["extensions"]["jaeger_query"]["grpc"]["endpoint"], "127.0.0.1:16685");
        assert_eq!(yaml["extensions"]["healthcheckv2"]["http"]["endpoint"], "0.0.0.0:13133");
        assert_eq!(
            yaml["extensions"]["jaeger_storage"]["backends"][STORE]["memory"]["max_traces"],
            MAX_TRACES
        );
        assert_eq!(yaml["extensions"]["jaeger_query"]["storage"]["traces"], STORE);
        assert_eq!(yaml["exporters"]["jaeger_storage_exporter"]["trace_storage"], STORE);
        // An empty processor is `batch: {}`, not `batch: null`.
        assert!(yaml["processors"]["batch"].is_mapping());
    }
}
