//! Prometheus 2.53 as Debian 13 packages it (image `<repo>/monitoring:trixie`),
//! scraping by Kubernetes pod discovery, its TSDB on a PersistentVolumeClaim
//! that local-path-provisioner binds, and its UI behind a LoadBalancer
//! address on the node network. The configuration is generated from typed
//! values: a job per kind of target (node-exporter's cAdvisor series under
//! the labels the user's dashboards select, kube-state-metrics, annotated
//! pods), the rule files of [`crate::monitoring::rules`], and the in-cluster
//! Alertmanager as where alerts go. Its port is the authenticating proxy's
//! (see [`super::auth_proxy`]): Prometheus itself listens on loopback.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::DeploymentStrategy,
    core::v1::{
        ConfigMap, Container, PersistentVolumeClaim, PersistentVolumeClaimSpec,
        PersistentVolumeClaimVolumeSource, PodSpec, Probe, Volume, VolumeMount, VolumeResourceRequirements,
    },
};
use kube::api::ObjectMeta;
use serde::Serialize;

use super::{
    Addon, Address, Check, Manifests, ROLLOUT, Rollout, alertmanager, auth_proxy, cluster_identity,
    config_volume, core_rule, credentials, http_get_probe, kube_state_metrics, local_path, locked_down,
    metallb,
    node_exporter::{self, NAMESPACE, monitoring_deployment, monitoring_meta, monitoring_selector},
    non_root_pod, quantity, resources, roll_on_change,
};
use crate::{apply::Object, build::rootfs, cluster::ScrapeLabels, monitoring::rules};

pub const NAME: &str = "prometheus";
pub const PORT: u16 = 9090;
/// The PersistentVolumeClaim holding the TSDB.
pub const CLAIM: &str = "prometheus-data";
const CONFIG_DIR: &str = "/etc/prometheus";
const RULES_DIR: &str = "/etc/prometheus/rules";
const DATA_DIR: &str = "/prometheus";
/// vigil's password, to send alerts to Alertmanager through its proxy.
const CREDENTIALS_DIR: &str = "/etc/prometheus/credentials";
/// Debian's `nobody`, who owns nothing in the image.
const USER: i64 = 65534;

/// Its Service takes the second address of the LoadBalancer range.
pub const LOAD_BALANCER_INDEX: u32 = 1;

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "Prometheus: pod discovery, its TSDB on a PersistentVolumeClaim",
    crates: &[auth_proxy::CRATE],
    needs: &[local_path::NAME, metallb::NAME],
    namespace: Some(node_exporter::namespace),
    secrets: None,
    objects: |input| {
        let image = rootfs::monitoring(&input.spec.image_repository).image;
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
    }),
    manifests: Manifests::Generated { dir: NAMESPACE },
    timeout: ROLLOUT,
};

/// Container ports whose name says they serve `/metrics`.
pub const METRICS_PORT_NAMES: &str = "metrics|http|probe-admin";

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
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    honor_labels: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kubernetes_sd_configs: Vec<SdConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    static_configs: Vec<StaticConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    relabel_configs: Vec<Relabel>,
}

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

/// Pods of the monitoring component `app`, on their container port `port`.
fn component_job(job: &str, app: &str, port: &'static str, extra: Vec<Relabel>) -> ScrapeConfig {
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
        honor_labels: true,
        kubernetes_sd_configs: vec![SdConfig { role: "pod" }],
        static_configs: vec![],
        relabel_configs,
    }
}

/// The jobs:
/// - node-exporter, under the labels `cadvisor` gives (by default
///   kube-prometheus's `job="kubelet", metrics_path="/metrics/cadvisor"`),
///   so dashboards written for cAdvisor select its series;
/// - kube-state-metrics as `job="kube-state-metrics"`;
/// - every other pod that asks to be scraped (`prometheus.io/scrape:
///   "true"`), one target per container port named like a metrics port.
///
/// `honor_labels`: node-exporter's and kube-state-metrics' `namespace`/
/// `pod`/`container` labels describe what they measure and must not be
/// overwritten; the scraped pod is recorded as `kubernetes_*` instead.
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
                job_name: "prometheus".into(),
                scrape_interval: None,
                honor_labels: false,
                kubernetes_sd_configs: vec![],
                static_configs: vec![StaticConfig { targets: vec![format!("localhost:{PORT}")] }],
                relabel_configs: vec![],
            },
            component_job(cadvisor.job(), node_exporter::NAME, "metrics", cadvisor_extra),
            // Every 5 s: with tuned failover a killed node that comes back is
            // NotReady for about 10 s, which a 15 s scrape can miss.
            ScrapeConfig {
                scrape_interval: Some("5s"),
                ..component_job(
                    kube_state_metrics::NAME,
                    kube_state_metrics::NAME,
                    kube_state_metrics::METRICS_PORT_NAME,
                    vec![],
                )
            },
            ScrapeConfig {
                job_name: "kubernetes-pods".into(),
                scrape_interval: None,
                honor_labels: true,
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
    let claim = PersistentVolumeClaim {
        metadata: meta(CLAIM, true),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(local_path::STORAGE_CLASS.into()),
            resources: Some(VolumeResourceRequirements {
                requests: quantity(&[("storage", "1Gi")]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
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
            otlp: false,
        }],
    );
    // Its probes come through the proxy (the kubelet reaches the pod's IP).
    let container = Container {
        name: NAME.into(),
        image: Some(images.prometheus.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["/usr/bin/prometheus".into()]),
        args: Some(vec![
            format!("--config.file={CONFIG_DIR}/prometheus.yml"),
            format!("--storage.tsdb.path={DATA_DIR}"),
            "--storage.tsdb.retention.time=7d".into(),
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
                [
                    config_volume,
                    rules_volume,
                    Volume {
                        name: "data".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: CLAIM.into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]
                .into_iter()
                .chain(proxy.volumes)
                .collect(),
            ),
            ..Default::default()
        },
    );
    if let Some(spec) = deployment.spec.as_mut() {
        // One writer for the TSDB: the old pod goes before the new one starts.
        spec.strategy = Some(DeploymentStrategy { type_: Some("Recreate".into()), ..Default::default() });
    }
    roll_on_change(&mut deployment, &[&config, &rules, &proxy.config]);
    let service = metallb::pinned_service(meta(NAME, true), load_balancer_ip, selector(), &[("web", PORT)]);
    let mut objects: Vec<Object> = identity.into();
    objects.extend([
        Object::ConfigMap(config),
        Object::ConfigMap(rules),
        Object::ConfigMap(proxy.config),
        Object::PersistentVolumeClaim(claim),
        Object::Deployment(deployment),
        Object::Service(service),
    ]);
    objects
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(objects: &[Object]) -> String {
        let deployment =
            objects.iter().find_map(|o| if let Object::Deployment(d) = o { Some(d) } else { None }).unwrap();
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
        let mut refused = crate::cluster::OTHER_JOBS.to_vec();
        refused.sort();
        assert_eq!(others, refused);
        for job in crate::cluster::OTHER_JOBS {
            let err = format!("job={job}").parse::<ScrapeLabels>().unwrap_err();
            assert!(err.contains("another of vigil's scrape jobs"), "{err}");
        }
        assert!("job=x,kubernetes_pod=y".parse::<ScrapeLabels>().unwrap_err().contains("kubernetes_"));
        assert!("metrics_path=/x".parse::<ScrapeLabels>().unwrap_err().contains("must include job"));
    }

    #[test]
    fn config_matches_golden_file() {
        crate::golden::assert_golden("prometheus.yml", &config_yaml(&ScrapeLabels::default()));
    }
}
