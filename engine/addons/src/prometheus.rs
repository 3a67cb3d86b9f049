//! Prometheus 3.16, built here from its Go module with its web UI (image
//! `<repo>/prometheus:v3.16.0`, which carries promtool of the same
//! release), scraping by Kubernetes pod discovery, its TSDB on a PersistentVolumeClaim
//! that local-path-provisioner binds, and its UI behind a LoadBalancer
//! address on the node network. The configuration is generated from typed
//! values: a job per kind of target (node-exporter's cAdvisor series under
//! the labels the user's dashboards select, kube-state-metrics, annotated
//! pods), the rule files of [`crate::monitoring::rules`], and the in-cluster
//! Alertmanager as where alerts go. Its port is the authenticating proxy's
//! (see [`super::auth_proxy`]): Prometheus itself listens on loopback.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Probe, VolumeMount};
use kube::api::ObjectMeta;
use serde::Serialize;

use super::{
    Addon, Address, Check, ImageFrom, ImageRun, Manifests, ROLLOUT, Rollout, UpstreamImage, alertmanager,
    auth_proxy, cluster_identity, config_volume, core_rule, credentials, http_get_probe, kube_state_metrics,
    local_path, locked_down, metallb,
    node_exporter::{self, NAMESPACE, monitoring_deployment, monitoring_meta, monitoring_selector},
    non_root_pod, resources, roll_on_change,
};
use crate::{apply::Object, monitoring::rules};
use vigil_model::cluster::ScrapeLabels;
use vigil_model::versions;

pub const NAME: &str = "prometheus";
pub const PORT: u16 = 9090;
/// The PersistentVolumeClaim holding the TSDB.
pub const CLAIM: &str = "prometheus-data";
const CONFIG_DIR: &str = "/etc/prometheus";
const RULES_DIR: &str = "/etc/prometheus/rules";
const DATA_DIR: &str = "/prometheus";
/// The claim's size. local-path-provisioner does not enforce it (the volume
/// is a directory on the node's disk, which etcd shares): the TSDB's
/// retention size is what keeps Prometheus inside it.
pub const CLAIM_SIZE: &str = "1Gi";
/// How long samples are kept, unless [`RETENTION_SIZE`] is reached first.
pub const RETENTION_TIME: &str = "7d";
/// The most the TSDB may hold (Prometheus's units are powers of two: 700
/// MiB), 324 MiB under the 1 GiB claim. Prometheus counts the WAL and the
/// head's memory-mapped chunks toward this limit but deletes only whole
/// persisted blocks to honour it, so the WAL's peak (it is checkpointed
/// every two hours, after about three hours of samples) must fit beside
/// it; and compaction writes its new block before it removes the blocks
/// it merged. At vigil's few thousand series the WAL peaks at a few tens of
/// MiB, so the headroom is several times what it needs.
/// `VigilPrometheusStorageNearRetentionLimit` fires well before the limit.
pub const RETENTION_SIZE: &str = "700MB";
/// vigil's password, to send alerts to Alertmanager through its proxy.
const CREDENTIALS_DIR: &str = "/etc/prometheus/credentials";
/// `nobody`, who owns nothing in the image.
const USER: i64 = 65534;

/// Its Service takes the second address of the LoadBalancer range.
pub const LOAD_BALANCER_INDEX: u32 = 1;

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "Prometheus: pod discovery, its TSDB on a PersistentVolumeClaim",
    crates: &[auth_proxy::CRATE],
    images: &[IMAGE],
    needs: &[local_path::NAME, metallb::NAME],
    installed_after: &[],
    namespace: Some(node_exporter::namespace),
    secrets: None,
    objects: |input| {
        let image = IMAGE.reference(&input.spec.image_repository);
        Ok(objects(
            &Images { prometheus: image, auth_proxy: input.image(auth_proxy::CRATE) },
            &input.spec.load_balancer_ip(LOAD_BALANCER_INDEX).to_string(),
            &input.spec.cadvisor_labels,
        ))
    },
    after_rollout: None,
    rollout: &[
        Rollout::Claim { namespace: NAMESPACE, name: CLAIM },
        Rollout::Deployment { namespace: NAMESPACE, name: NAME, replicas: 1 },
    ],
    address: Some(Address {
        key: NAME,
        namespace: NAMESPACE,
        service: NAME,
        url: |ip| format!("http://{ip}:{PORT}/"),
        check: Check::Gated("api/v1/status/buildinfo"),
        hint: "Prometheus (container_cpu_usage_seconds_total, ...)",
        load_balancer_index: LOAD_BALANCER_INDEX,
    }),
    manifests: Manifests::Generated { dir: NAMESPACE },
    timeout: ROLLOUT,
};

/// The binary alone (and promtool, which the tests run from it), as `nobody`.
pub const IMAGE: UpstreamImage = UpstreamImage {
    name: NAME,
    version: versions::PROMETHEUS,
    replaces: None,
    from: ImageFrom::Scratch,
    binary: "prometheus",
    path: "/bin/prometheus",
    run: ImageRun::AsUser("65534:65534"),
    extra: &[("promtool", PROMTOOL)],
};

/// Where the Prometheus image holds promtool.
pub const PROMTOOL: &str = "/bin/promtool";

/// Prometheus's job for its own metrics.
pub const PROMETHEUS_JOB: &str = "prometheus";

/// Container ports whose name says they serve `/metrics`.
pub const METRICS_PORT_NAMES: &str = "metrics|http|probe-admin|journal-admin";

#[derive(Serialize)]
struct Config {
    global: Global,
    rule_files: Vec<String>,
    alerting: Alerting,
    scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Serialize)]
struct Alerting {
    alertmanagers: Vec<AlertmanagerConfig>,
}

#[derive(Serialize)]
struct AlertmanagerConfig {
    basic_auth: BasicAuth,
    static_configs: Vec<StaticConfig>,
}

#[derive(Serialize)]
struct BasicAuth {
    username: &'static str,
    password_file: String,
}

#[derive(Serialize)]
struct Global {
    scrape_interval: &'static str,
    evaluation_interval: &'static str,
}

#[derive(Serialize)]
struct ScrapeConfig {
    job_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scrape_interval: Option<&'static str>,
    /// What one scrape of one target may hold: past any of these the whole
    /// scrape fails (`up` is 0 and the target page says which limit), so a
    /// target can never add series without bound.
    #[serde(flatten)]
    limits: Limits,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kubernetes_sd_configs: Vec<SdConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    static_configs: Vec<StaticConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    relabel_configs: Vec<Relabel>,
}

/// Prometheus's per-scrape limits. Label counts include `__name__` and the
/// target's own labels (`job`, `instance`, `kubernetes_*`), which are
/// added before the limits are checked.
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub sample_limit: u32,
    pub label_limit: u32,
    pub label_name_length_limit: u32,
    pub label_value_length_limit: u32,
}

/// Prometheus's own metrics: five hundred to a thousand series (a histogram
/// per HTTP handler it has served, the TSDB's gauges), short labels.
const PROMETHEUS_LIMITS: Limits = Limits {
    sample_limit: 5_000,
    label_limit: 16,
    label_name_length_limit: 64,
    label_value_length_limit: 256,
};

/// node-exporter: per container ten families, per pod sandbox eight network
/// families, per container and device four block I/O families, plus the
/// node's filesystems and its own metrics: about 2,000 samples at 100
/// containers on a node, so 5,000 leaves room for a busy node without
/// letting a runaway one through. Its labels are cAdvisor's (`namespace`,
/// `pod`, `container`, `node`, `image`, `id`, `name`, and `interface` or
/// `device`) plus seven target labels and those of `--cadvisor-labels`; `id`
/// is a cgroup path (about 200 characters under the systemd driver) and
/// `image` a full reference, hence the longer values.
const NODE_EXPORTER_LIMITS: Limits = Limits {
    sample_limit: 5_000,
    label_limit: 32,
    label_name_length_limit: 64,
    label_value_length_limit: 512,
};

/// kube-state-metrics: one target for the whole cluster, about 40 series per
/// pod (phase, conditions, each container's status, requests and limits)
/// and 30 per node; 20,000 covers several hundred pods. `kube_pod_info` and
/// the container series carry the most labels (about 12, plus six target
/// labels); image digests and container ids are around 100 characters.
const KUBE_STATE_METRICS_LIMITS: Limits = Limits {
    sample_limit: 20_000,
    label_limit: 32,
    label_name_length_limit: 128,
    label_value_length_limit: 512,
};

/// Annotated pods are anyone's, so they get the least: vigil's own (web,
/// probe-server, the alerter) export a few hundred series with at most
/// four labels of their own (`method`, `route`, `status`, `le`), besides six
/// target labels. Values up to 256 characters, because the target label
/// `kubernetes_pod` is a pod name, which may be 253.
const ANNOTATED_POD_LIMITS: Limits = Limits {
    sample_limit: 1_000,
    label_limit: 16,
    label_name_length_limit: 64,
    label_value_length_limit: 256,
};

#[derive(Serialize)]
struct SdConfig {
    role: &'static str,
}

#[derive(Serialize)]
struct StaticConfig {
    targets: Vec<String>,
}

#[derive(Serialize, Default)]
struct Relabel {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    source_labels: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replacement: Option<String>,
}

fn keep(label: &'static str, regex: &str) -> Relabel {
    Relabel {
        source_labels: vec![label],
        action: Some("keep"),
        regex: Some(regex.into()),
        ..Default::default()
    }
}

fn copy(label: &'static str, target: &'static str) -> Relabel {
    Relabel { source_labels: vec![label], target_label: Some(target.into()), ..Default::default() }
}

/// A fixed label on every target of the job.
fn set(label: &str, value: &str) -> Relabel {
    Relabel { target_label: Some(label.into()), replacement: Some(value.into()), ..Default::default() }
}

/// The scraped pod, as `kubernetes_*` labels.
fn pod_labels() -> Vec<Relabel> {
    vec![
        copy("__meta_kubernetes_namespace", "kubernetes_namespace"),
        copy("__meta_kubernetes_pod_name", "kubernetes_pod"),
        copy("__meta_kubernetes_pod_container_name", "kubernetes_container"),
        copy("__meta_kubernetes_pod_node_name", "kubernetes_node"),
    ]
}

/// Pods of the monitoring component `app`, on their container port `port`:
/// only in the monitoring namespace, whose pods only the cluster's admins create.
fn component_job(
    job: &str,
    app: &str,
    port: &'static str,
    limits: Limits,
    extra: Vec<Relabel>,
) -> ScrapeConfig {
    let mut relabel_configs = vec![
        keep("__meta_kubernetes_namespace", NAMESPACE),
        keep("__meta_kubernetes_pod_label_app_kubernetes_io_name", app),
        keep("__meta_kubernetes_pod_phase", "Running"),
        keep("__meta_kubernetes_pod_container_port_name", port),
    ];
    relabel_configs.extend(pod_labels());
    relabel_configs.extend(extra);
    ScrapeConfig {
        job_name: job.into(),
        scrape_interval: None,
        limits,
        kubernetes_sd_configs: vec![SdConfig { role: "pod" }],
        static_configs: vec![],
        relabel_configs,
    }
}

/// The job of every other pod that asks to be scraped, vigil's web,
/// probe-server and alerter among them.
pub const ANNOTATED_PODS_JOB: &str = "kubernetes-pods";

/// The jobs:
/// - node-exporter, under the labels `cadvisor` gives (by default
///   kube-prometheus's `job="kubelet", metrics_path="/metrics/cadvisor"`),
///   so dashboards written for cAdvisor select its series;
/// - kube-state-metrics as `job="kube-state-metrics"`;
/// - every other pod that asks to be scraped (`prometheus.io/scrape:
///   "true"`), one target per container port named like a metrics port.
///
/// No job honours the labels a target exports (`honor_labels` is false):
/// where a scraped series names a `job`, `instance` or `kubernetes_*` label
/// of its own, Prometheus keeps the target's and renames the series' to
/// `exported_*`. So a pod anyone can annotate cannot pass its series off as
/// kube-state-metrics' or the alerter's, and the rules of
/// [`crate::monitoring::rules`] select each series by the job (and, for
/// annotated pods, the namespace and container) it really comes from. The
/// series' own `namespace`/`pod`/`container` labels (cAdvisor's, kube-state-
/// metrics') do not clash: the scraped pod is recorded as `kubernetes_*`.
pub fn config_yaml(cadvisor: &ScrapeLabels) -> String {
    let cadvisor_extra: Vec<Relabel> =
        cadvisor.0.iter().filter(|(k, _)| *k != "job").map(|(k, v)| set(k, v)).collect();
    let mut pods = vec![
        keep("__meta_kubernetes_pod_annotation_prometheus_io_scrape", "true"),
        keep("__meta_kubernetes_pod_phase", "Running"),
        keep("__meta_kubernetes_pod_container_port_name", METRICS_PORT_NAMES),
    ];
    pods.extend(pod_labels());
    let config = Config {
        global: Global { scrape_interval: "15s", evaluation_interval: "15s" },
        rule_files: vec![format!("{RULES_DIR}/*.yml")],
        alerting: Alerting {
            alertmanagers: vec![AlertmanagerConfig {
                // Alertmanager's proxy lets no one in without credentials.
                basic_auth: BasicAuth {
                    username: credentials::API_USER,
                    password_file: format!("{CREDENTIALS_DIR}/{}", auth_proxy::API_PASSWORD_FILE),
                },
                static_configs: vec![StaticConfig {
                    targets: vec![format!("{}.{NAMESPACE}.svc:{}", alertmanager::NAME, alertmanager::PORT)],
                }],
            }],
        },
        scrape_configs: vec![
            ScrapeConfig {
                job_name: PROMETHEUS_JOB.into(),
                scrape_interval: None,
                limits: PROMETHEUS_LIMITS,
                kubernetes_sd_configs: vec![],
                static_configs: vec![StaticConfig { targets: vec![format!("localhost:{PORT}")] }],
                relabel_configs: vec![],
            },
            component_job(
                cadvisor.job(),
                node_exporter::NAME,
                "metrics",
                NODE_EXPORTER_LIMITS,
                cadvisor_extra,
            ),
            // Every 5 s: with tuned failover a killed node that comes back is
            // NotReady for about 10 s, which a 15 s scrape can miss.
            ScrapeConfig {
                scrape_interval: Some("5s"),
                ..component_job(
                    kube_state_metrics::NAME,
                    kube_state_metrics::NAME,
                    kube_state_metrics::METRICS_PORT_NAME,
                    KUBE_STATE_METRICS_LIMITS,
                    vec![],
                )
            },
            ScrapeConfig {
                job_name: ANNOTATED_PODS_JOB.into(),
                scrape_interval: None,
                limits: ANNOTATED_POD_LIMITS,
                kubernetes_sd_configs: vec![SdConfig { role: "pod" }],
                static_configs: vec![],
                relabel_configs: pods,
            },
        ],
    };
    serde_yaml::to_string(&config).expect("serializes")
}

fn selector() -> BTreeMap<String, String> {
    monitoring_selector(NAME)
}

fn meta(name: &str, namespaced: bool) -> ObjectMeta {
    monitoring_meta(NAME, name, namespaced)
}

fn http_probe(path: &str) -> Probe {
    Probe { period_seconds: Some(5), failure_threshold: Some(6), ..http_get_probe(PORT, path) }
}

/// The images its pod runs.
pub struct Images {
    pub prometheus: String,
    pub auth_proxy: String,
}

/// `load_balancer_ip`: the address MetalLB is asked to give the UI's Service;
/// `cadvisor`: the labels of node-exporter's series (its job and rules).
pub fn objects(images: &Images, load_balancer_ip: &str, cadvisor: &ScrapeLabels) -> Vec<Object> {
    // Pod discovery is all it needs from the API.
    let identity = cluster_identity(
        meta(NAME, true),
        meta("vigil:prometheus", false),
        vec![core_rule(&["pods"], &["list", "watch"])],
    );
    let config = ConfigMap {
        metadata: meta("prometheus-config", true),
        data: Some(BTreeMap::from([("prometheus.yml".into(), config_yaml(cadvisor))])),
        ..Default::default()
    };
    let rules = ConfigMap {
        metadata: meta("prometheus-rules", true),
        data: Some(rules::files(cadvisor).into_iter().map(|(name, yaml)| (name.to_owned(), yaml)).collect()),
        ..Default::default()
    };
    let (claim, data_volume) = local_path::claim(meta(CLAIM, true), CLAIM_SIZE, "data");
    let (rules_volume, rules_mount) = config_volume("rules", "prometheus-rules", RULES_DIR);
    let (config_volume, config_mount) = config_volume("config", "prometheus-config", CONFIG_DIR);
    let proxy = auth_proxy::sidecar(
        |name| meta(&format!("{NAME}-{name}"), true),
        &images.auth_proxy,
        &[auth_proxy::Listener {
            name: "web",
            port: PORT,
            body_limit: auth_proxy::API_BODY_LIMIT,
            // Prometheus's own query timeout (`--query.timeout`) is 2 minutes.
            upstream_timeout: std::time::Duration::from_secs(130),
            public: &["/-/ready", "/-/healthy"],
            root: None,
            writer: None,
        }],
    );
    // Its probes come through the proxy (the kubelet reaches the pod's IP).
    let container = Container {
        name: NAME.into(),
        image: Some(images.prometheus.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![IMAGE.path.into()]),
        args: Some(vec![
            format!("--config.file={CONFIG_DIR}/prometheus.yml"),
            format!("--storage.tsdb.path={DATA_DIR}"),
            format!("--storage.tsdb.retention.time={RETENTION_TIME}"),
            format!("--storage.tsdb.retention.size={RETENTION_SIZE}"),
            // Loopback only: the proxy has this port on the pod's address.
            format!("--web.listen-address=127.0.0.1:{PORT}"),
        ]),
        readiness_probe: Some(http_probe("/-/ready")),
        liveness_probe: Some(http_probe("/-/healthy")),
        volume_mounts: Some(vec![
            config_mount,
            rules_mount,
            auth_proxy::credentials_mount(CREDENTIALS_DIR),
            VolumeMount { name: "data".into(), mount_path: DATA_DIR.into(), ..Default::default() },
        ]),
        resources: Some(resources(&[("cpu", "100m"), ("memory", "128Mi")], &[("memory", "512Mi")])),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    let mut deployment = monitoring_deployment(
        NAME,
        PodSpec {
            service_account_name: Some(NAME.into()),
            security_context: Some(non_root_pod(USER, Some(USER))),
            termination_grace_period_seconds: Some(30),
            containers: vec![container, proxy.container],
            volumes: Some(
                [config_volume, rules_volume, data_volume].into_iter().chain(proxy.volumes).collect(),
            ),
            ..Default::default()
        },
    );
    local_path::one_writer(&mut deployment);
    roll_on_change(&mut deployment, &[&config, &rules, &proxy.config]);
    let service = metallb::pinned_service(meta(NAME, true), load_balancer_ip, selector(), &[("web", PORT)]);
    let mut objects: Vec<Object> = identity.into();
    objects.extend([
        Object::typed(config),
        Object::typed(rules),
        Object::typed(proxy.config),
        Object::typed(claim),
        Object::typed(deployment),
        Object::typed(service),
    ]);
    objects
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(objects: &[Object]) -> String {
        let deployment =
            objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::apps::v1::Deployment>()).unwrap();
        let template = deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
        template.annotations.as_ref().unwrap()["vigil.local/config-checksum"].clone()
    }

    #[test]
    fn a_new_configuration_or_rule_rolls_the_pod() {
        let images = |p: &str| Images { prometheus: p.into(), auth_proxy: "proxy".into() };
        let default = checksum(&objects(&images("img"), "172.29.0.129", &ScrapeLabels::default()));
        let mixin = checksum(&objects(&images("img"), "172.29.0.129", &"job=cadvisor".parse().unwrap()));
        assert_ne!(default, mixin);
        assert_eq!(default, checksum(&objects(&images("img2"), "172.29.0.129", &ScrapeLabels::default())));
    }

    #[test]
    fn the_jobs_refused_as_cadvisor_labels_are_the_other_jobs() {
        let config: serde_yaml::Value = serde_yaml::from_str(&config_yaml(&ScrapeLabels::default())).unwrap();
        let jobs: Vec<&str> = config["scrape_configs"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|j| j["job_name"].as_str())
            .collect();
        let mut others: Vec<&str> = jobs.into_iter().filter(|j| *j != "kubelet").collect();
        others.sort();
        let mut refused = vigil_model::cluster::OTHER_JOBS.to_vec();
        refused.sort();
        assert_eq!(others, refused);
        for job in vigil_model::cluster::OTHER_JOBS {
            let err = format!("job={job}").parse::<ScrapeLabels>().unwrap_err();
            assert!(err.contains("another of vigil's scrape jobs"), "{err}");
        }
        assert!("job=x,kubernetes_pod=y".parse::<ScrapeLabels>().unwrap_err().contains("kubernetes_"));
        assert!("metrics_path=/x".parse::<ScrapeLabels>().unwrap_err().contains("must include job"));
    }

    fn jobs() -> Vec<serde_yaml::Value> {
        let config: serde_yaml::Value = serde_yaml::from_str(&config_yaml(&ScrapeLabels::default())).unwrap();
        config["scrape_configs"].as_sequence().unwrap().clone()
    }

    #[test]
    fn every_job_bounds_its_samples_and_labels() {
        let jobs = jobs();
        assert_eq!(jobs.len(), 4);
        for job in &jobs {
            let name = job["job_name"].as_str().unwrap();
            for limit in
                ["sample_limit", "label_limit", "label_name_length_limit", "label_value_length_limit"]
            {
                let value = job[limit].as_u64().unwrap_or(0);
                assert!(value > 0, "job {name} has no {limit}");
            }
            // A pod name (the target label `kubernetes_pod`) is at most 253 characters.
            assert!(job["label_value_length_limit"].as_u64().unwrap() >= 253, "job {name}");
        }
        // Annotated pods are anyone's: they get the tightest limits.
        let limit = |name: &str, key: &str| {
            jobs.iter().find(|j| j["job_name"] == name).unwrap()[key].as_u64().unwrap()
        };
        for key in ["sample_limit", "label_limit", "label_name_length_limit", "label_value_length_limit"] {
            for other in ["prometheus", "kubelet", "kube-state-metrics"] {
                assert!(limit(ANNOTATED_PODS_JOB, key) <= limit(other, key), "{key}: {other}");
            }
        }
    }

    #[test]
    fn no_job_lets_a_target_choose_its_own_job_or_pod_labels() {
        for job in jobs() {
            assert!(
                job.get("honor_labels").is_none_or(|h| *h == false),
                "job {:?} honours its targets' labels",
                job["job_name"]
            );
        }
    }

    #[test]
    fn the_tsdb_is_bounded_by_size_under_its_claim() {
        let images = Images { prometheus: "img".into(), auth_proxy: "proxy".into() };
        let objects = objects(&images, "172.29.0.129", &ScrapeLabels::default());
        let deployment =
            objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::apps::v1::Deployment>()).unwrap();
        let args = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert!(args.contains(&"--storage.tsdb.retention.size=700MB".to_owned()), "{args:?}");
        assert!(args.contains(&"--storage.tsdb.retention.time=7d".to_owned()), "{args:?}");
        let claim = objects
            .iter()
            .find_map(|o| o.to_typed::<k8s_openapi::api::core::v1::PersistentVolumeClaim>())
            .unwrap();
        let requested =
            &claim.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0;
        // Both in powers of two: 700 MiB of the claim's 1024, the rest for the WAL's peak and compaction.
        let mib = |text: &str, unit: &str| text.strip_suffix(unit).unwrap().parse::<u64>().unwrap();
        let (retention, claim) = (mib(RETENTION_SIZE, "MB"), mib(requested, "Gi") * 1024);
        assert!(
            retention * 100 <= claim * 70,
            "{retention} MiB of a {claim} MiB claim leaves the WAL no room"
        );
    }

    #[test]
    fn config_matches_golden_file() {
        vigil_host::assert_golden(
            env!("CARGO_MANIFEST_DIR"),
            "prometheus.yml",
            &config_yaml(&ScrapeLabels::default()),
        );
    }
}
