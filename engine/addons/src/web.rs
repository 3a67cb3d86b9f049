//! The seed's workload, done properly: Deployment `web` (3 replicas, spread
//! across nodes) with the probe-server sidecar its probes call, Service `web`
//! of type LoadBalancer (port 80 to the pods' 8000), one ServiceAccount
//! without API access, and the probe-server configuration.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            ConfigMap, Container, ContainerPort, EnvVar, HTTPGetAction, Lifecycle, LifecycleHandler, PodSpec,
            PodTemplateSpec, Probe, Service, ServiceAccount, ServicePort, ServiceSpec, SleepAction,
            TopologySpreadConstraint,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::api::ObjectMeta;
use probe_server::config::{
    CheckConfig, Config as ProbeConfig, DEFAULT_ADMIN_PORT, DEFAULT_PROBE_PORT, Target,
};

use super::{
    Addon, Address, Check, Input, Manifests, ROLLOUT, Rollout, config_volume, http_get_probe, locked_down,
    metallb, non_root_pod, quantity, resources, upstream,
};
use crate::apply::Object;

pub const NAME: &str = "web";
pub const NAMESPACE: &str = "default";
/// The seed's port (its PORT variable).
pub const WEB_PORT: u16 = 8000;
/// What the load balancer serves on.
pub const SERVICE_PORT: u16 = 80;
const PROBE_CONFIG_DIR: &str = "/etc/probe-server";
/// The user the workload images are built to run as.
const USER: i64 = 65532;
pub const REPLICAS: i32 = 3;
/// Its Service takes the first address of the LoadBalancer range.
pub const LOAD_BALANCER_INDEX: u32 = 0;

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "web: 3 replicas + probe-server sidecar, Service type LoadBalancer",
    crates: &["web", "probe-server"],
    images: &[],
    needs: &[metallb::NAME],
    installed_after: &[],
    // `default`, labelled to enforce the restricted Pod Security profile.
    namespace: Some(super::pod_security::default_namespace),
    secrets: None,
    objects: addon_objects,
    after_rollout: None,
    rollout: &[Rollout::Deployment { namespace: NAMESPACE, name: NAME, replicas: REPLICAS }],
    address: Some(Address {
        key: NAME,
        namespace: NAMESPACE,
        service: NAME,
        url,
        check: Check::BodyStartsWith("I'm "),
        hint: "the web service behind the load balancer (or open it in a browser)",
        load_balancer_index: LOAD_BALANCER_INDEX,
    }),
    manifests: Manifests::Generated { dir: "web" },
    timeout: ROLLOUT,
};

fn url(ip: &str) -> String {
    format!("http://{ip}/")
}

fn addon_objects(input: &Input) -> Result<Vec<Object>, upstream::Error> {
    let images = Images { web: input.image("web"), probe_server: input.image("probe-server") };
    Ok(objects(&images, &input.spec.load_balancer_ip(LOAD_BALANCER_INDEX).to_string()))
}

/// The images the Deployment runs.
pub struct Images {
    pub web: String,
    pub probe_server: String,
}

/// The one label map the selector, the pods and the Service share: a
/// selector cannot drift from the labels it selects (the seed's bug).
fn selector_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".into(), NAME.into()), ("app.kubernetes.io/name".into(), NAME.into())])
}

fn labels() -> BTreeMap<String, String> {
    let mut labels = selector_labels();
    labels.extend([
        ("app.kubernetes.io/instance".to_owned(), "vigil".to_owned()),
        ("app.kubernetes.io/component".to_owned(), "frontend".to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "vigil".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "vigil".to_owned()),
        ("app.kubernetes.io/version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ]);
    labels
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NAMESPACE.into()),
        labels: Some(labels()),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        period_seconds: Some(period),
        timeout_seconds: Some(1),
        failure_threshold: Some(failures),
        ..http_get_probe(DEFAULT_PROBE_PORT, path)
    }
}

/// probe-server's view of this pod: the web container on localhost is the
/// workload; the cluster's DNS is a dependency (readiness only).
pub fn probe_config() -> ProbeConfig {
    let mut workload = CheckConfig::new(NAME, Target::Http(format!("http://127.0.0.1:{WEB_PORT}/")));
    workload.timeout = std::time::Duration::from_millis(500);
    workload.failure_threshold = 2;
    let mut dns = CheckConfig::new("cluster-dns", Target::Dns("kubernetes.default.svc.cluster.local".into()));
    dns.timeout = std::time::Duration::from_millis(800);
    dns.failure_threshold = 2;
    ProbeConfig::new(workload, vec![dns])
}

/// The share of web's requests traced when the caller did not decide
/// (no sampled `traceparent`); a caller's decision is always followed.
pub const TRACE_RATIO: f64 = 0.001;
/// The kubelet's probes come every second or two from every pod and never
/// carry a trace: one in a hundred is enough to see what one costs.
pub const PROBE_TRACE_RATIO: f64 = 0.01;

/// `load_balancer_ip`: pinned, so the URL `up` prints stays the same.
pub fn objects(images: &Images, load_balancer_ip: &str) -> Vec<Object> {
    let service_account = ServiceAccount {
        metadata: meta(NAME),
        // Neither container talks to the API server.
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let config = ConfigMap {
        metadata: meta("web-probe-server"),
        data: Some(BTreeMap::from([("config.json".into(), probe_config().to_json())])),
        ..Default::default()
    };
    let web = Container {
        name: NAME.into(),
        image: Some(images.web.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(
            [EnvVar { name: "PORT".into(), value: Some(WEB_PORT.to_string()), ..Default::default() }]
                .into_iter()
                .chain(super::jaeger::otel_env(NAME, Some(TRACE_RATIO)))
                .collect(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: WEB_PORT.into(),
            ..Default::default()
        }]),
        // The kubelet asks probe-server (same pod, its probe port), which
        // checks this container; a failed liveness restarts this one.
        startup_probe: Some(http_probe("/startupz", 1, 30)),
        liveness_probe: Some(http_probe("/livez", 2, 3)),
        readiness_probe: Some(http_probe("/readyz", 1, 1)),
        // Keep serving while the endpoint controllers catch up with the termination.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 3 }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: Some(resources(
            &[("cpu", "50m"), ("memory", "16Mi")],
            &[("cpu", "500m"), ("memory", "64Mi")],
        )),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    let (probe_config_volume, probe_config_mount) =
        config_volume("probe-config", "web-probe-server", PROBE_CONFIG_DIR);
    let probe_server = Container {
        name: "probe-server".into(),
        image: Some(images.probe_server.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec!["--config".into(), format!("{PROBE_CONFIG_DIR}/config.json")]),
        env: Some(super::jaeger::otel_env("probe-server", Some(PROBE_TRACE_RATIO))),
        ports: Some(vec![
            ContainerPort {
                name: Some("probes".into()),
                container_port: DEFAULT_PROBE_PORT.into(),
                ..Default::default()
            },
            ContainerPort {
                name: Some("probe-admin".into()),
                container_port: DEFAULT_ADMIN_PORT.into(),
                ..Default::default()
            },
        ]),
        // Its own health, on its admin port: never the results it reports.
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/live".into()),
                port: IntOrString::String("probe-admin".into()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        volume_mounts: Some(vec![probe_config_mount]),
        resources: Some(resources(
            &[("cpu", "10m"), ("memory", "8Mi")],
            &[("cpu", "100m"), ("memory", "32Mi")],
        )),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(NAME),
        spec: Some(DeploymentSpec {
            replicas: Some(REPLICAS),
            selector: LabelSelector { match_labels: Some(selector_labels()), ..Default::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    // Prometheus scrapes its `http` (web) and `probe-admin` (probe-server) ports.
                    annotations: Some(BTreeMap::from([("prometheus.io/scrape".into(), "true".into())])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    priority_class_name: Some(PRIORITY_CLASS.into()),
                    automount_service_account_token: Some(false),
                    security_context: Some(non_root_pod(USER, None)),
                    // One per node where possible, but never refuse to run:
                    // after a node dies all replicas may share the survivors.
                    topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "kubernetes.io/hostname".into(),
                        when_unsatisfiable: "ScheduleAnyway".into(),
                        node_taints_policy: Some("Honor".into()),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    termination_grace_period_seconds: Some(15),
                    containers: vec![web, probe_server],
                    volumes: Some(vec![probe_config_volume]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        metadata: ObjectMeta { annotations: Some(metallb::pinned_address(load_balancer_ip)), ..meta(NAME) },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            selector: Some(selector_labels()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT.into(),
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            // Spread load over every pod, on whichever node the LB address lands.
            external_traffic_policy: Some("Cluster".into()),
            // MetalLB's L2 mode needs no node port (see `metallb::pinned_service`).
            allocate_load_balancer_node_ports: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let [class, quota] = workload_budget();
    vec![
        Object::typed(service_account),
        Object::typed(config),
        class,
        quota,
        Object::typed(deployment),
        Object::typed(service),
    ]
}

/// The PriorityClass web's pods run under: priority 0 (as pods without
/// one) and never preempting, so scheduling is unchanged; it exists so the
/// quota below can count web's pods and nobody else's.
pub const PRIORITY_CLASS: &str = "vigil-workload";

/// web's budget: a PriorityClass and a ResourceQuota on CPU and memory
/// (requests and limits) scoped to it, so one rollout cannot take the
/// cluster, and the dashboards' quota lines have a quota to draw. Scoped,
/// the quota asks nothing of the other pods in the namespace (an unscoped
/// quota on limits refuses every pod that states none).
fn workload_budget() -> [Object; 2] {
    use k8s_openapi::api::{
        core::v1::{ResourceQuota, ResourceQuotaSpec, ScopeSelector, ScopedResourceSelectorRequirement},
        scheduling::v1::PriorityClass,
    };
    let class = PriorityClass {
        metadata: ObjectMeta {
            name: Some(PRIORITY_CLASS.into()),
            labels: Some(labels()),
            ..Default::default()
        },
        value: 0,
        preemption_policy: Some("Never".into()),
        description: Some(
            "vigil's web workload: counted by its ResourceQuota, scheduled as priority 0".into(),
        ),
        global_default: Some(false),
    };
    let quota = ResourceQuota {
        metadata: ObjectMeta { name: Some("workload-budget".into()), ..meta(NAME) },
        spec: Some(ResourceQuotaSpec {
            hard: quantity(&[
                ("requests.cpu", "4"),
                ("limits.cpu", "8"),
                ("requests.memory", "4Gi"),
                ("limits.memory", "8Gi"),
            ]),
            scope_selector: Some(ScopeSelector {
                match_expressions: Some(vec![ScopedResourceSelectorRequirement {
                    scope_name: "PriorityClass".into(),
                    operator: "In".into(),
                    values: Some(vec![PRIORITY_CLASS.into()]),
                }]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    [Object::typed(class), Object::typed(quota)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_probe_config_is_valid() {
        let config = probe_config();
        config.validate().unwrap();
        let text = config.to_json();
        assert_eq!(ProbeConfig::from_json(&text, "configmap").unwrap(), config);
    }

    #[test]
    fn the_quota_counts_web_pods_only() {
        let objects = objects(&Images { web: "w".into(), probe_server: "p".into() }, "172.29.0.128");
        let quota =
            objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::core::v1::ResourceQuota>()).unwrap();
        let scope = &quota
            .spec
            .as_ref()
            .unwrap()
            .scope_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!((scope.scope_name.as_str(), scope.operator.as_str()), ("PriorityClass", "In"));
        let deployment =
            objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::apps::v1::Deployment>()).unwrap();
        let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(scope.values.as_deref(), Some(&[pod.priority_class_name.clone().unwrap()][..]));
        let class = objects
            .iter()
            .find_map(|o| o.to_typed::<k8s_openapi::api::scheduling::v1::PriorityClass>())
            .unwrap();
        assert_eq!((class.value, class.preemption_policy.as_deref()), (0, Some("Never")));
        let position = |kind: &str| objects.iter().position(|o| o.describe().starts_with(kind)).unwrap();
        assert!(
            position("PriorityClass") < position("Deployment"),
            "the class exists before the pods ask for it"
        );
        // Every container states CPU and memory limits: the quota counts them.
        for c in &pod.containers {
            let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
            assert!(limits.contains_key("cpu") && limits.contains_key("memory"), "{}", c.name);
        }
    }

    #[test]
    fn service_selects_exactly_the_pod_labels() {
        let objects = objects(&Images { web: "w".into(), probe_server: "p".into() }, "172.29.0.128");
        let deployment =
            objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::apps::v1::Deployment>()).unwrap();
        let service =
            objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::core::v1::Service>()).unwrap();
        let pod_labels =
            deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
        let selector = service.spec.as_ref().unwrap().selector.clone().unwrap();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        let spec = deployment.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.selector.match_labels.as_ref(), Some(&selector));
        let pod = spec.template.spec.as_ref().unwrap();
        for c in &pod.containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(
                (sc.read_only_root_filesystem, sc.run_as_non_root),
                (Some(true), Some(true)),
                "{}",
                c.name
            );
        }
    }
}
