//! The alerter (crate `alerter/`): two replicas on different nodes, one
//! leading through a Lease, a ServiceAccount allowed exactly what it reads
//! and writes, the `NodeIncident` CRD, its configuration (a ConfigMap), its
//! webhook signing secret (a Secret made once per cluster), the webhook's
//! URL (a Secret that follows `vigil up --alert-webhook`: its path or query
//! is often a token) and the password Alertmanager's proxy asks for. No
//! secret is in a manifest, the ConfigMap, an annotation or a command line.

use std::collections::BTreeMap;

use alerter_api::{
    config::{BasicAuthConfig, Config, DeliveryConfig, SinkConfig, SinkKind},
    crd::{GROUP, NodeIncident},
};
use base64::Engine as _;
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            Affinity, ConfigMap, Container, ContainerPort, KeyToPath, PodAffinityTerm, PodAntiAffinity,
            PodSpec, PodTemplateSpec, Probe, Secret, SecretVolumeSource, Toleration, Volume, VolumeMount,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{CustomResourceExt, api::ObjectMeta};

use super::{
    Addon, Input, Manifests, ROLLOUT, Rollout, alertmanager, cluster_identity, config_and_secret_checksum,
    config_volume, field_env, http_get_probe, locked_down, namespaced_identity,
    node_exporter::{self, monitoring_labels, monitoring_meta, monitoring_selector},
    non_root_pod, prometheus, resources, rule, upstream, victorialogs,
};
use crate::apply::Object;
use vigil_model::cluster::{ClusterSpec, Failover};

pub const NAME: &str = "vigil-alerter";
/// The workspace crate (and image).
const CRATE: &str = "alerter";
pub const ADMIN_PORT: u16 = 9102;
pub const REPLICAS: i32 = 2;
/// The leader-election Lease, in the monitoring namespace.
pub const LEASE: &str = "vigil-alerter";
/// The leader's Lease at most (renewed every quarter of it).
const LEADER_LEASE_SECONDS: u32 = 8;
/// It runs with the rest of the monitoring.
pub const NAMESPACE: &str = node_exporter::NAMESPACE;
const CONFIG_DIR: &str = "/etc/alerter";
const SECRETS_DIR: &str = "/etc/alerter/secrets";
/// The Secret's key holding the webhook signing secret.
pub const WEBHOOK_SECRET_KEY: &str = "webhook-secret";
/// The Secret holding the sinks' URLs, applied by every `vigil up` from its
/// flags (not kept when they change, unlike the signing secret).
pub const SINKS_SECRET: &str = "vigil-alerter-sinks";
/// Its key holding `vigil up --alert-webhook`'s URL.
pub const WEBHOOK_URL_KEY: &str = "webhook-url";
const SINKS_DIR: &str = "/etc/alerter/sinks";
/// The credentials the proxy in front of Alertmanager asks for (in the
/// monitoring namespace; made by `vigil up`): the user, and the Secret and
/// key of the password. Only the password is mounted.
pub use super::credentials::{
    API_SECRET as API_CREDENTIALS_SECRET, API_USER as API_USERNAME, PASSWORD_KEY as API_PASSWORD_KEY,
};
const API_CREDENTIALS_DIR: &str = "/etc/alerter/api-credentials";
const USER: i64 = 65532;
/// A replica on a dead node is evicted after this at the latest (sooner when
/// the cluster's default toleration is shorter), so that it is replaced on a
/// live one (the standby leads meanwhile).
const EVICT_AFTER_SECONDS: i64 = 30;

pub const ADDON: Addon = Addon {
    name: CRATE,
    title: "alerter: two replicas, one leading; the NodeIncident CRD",
    crates: &[CRATE],
    images: &[],
    needs: &[],
    installed_after: &[],
    namespace: Some(node_exporter::namespace),
    secrets: Some(secrets),
    objects: addon_objects,
    after_rollout: None,
    rollout: &[Rollout::Deployment { namespace: NAMESPACE, name: NAME, replicas: REPLICAS }],
    address: None,
    manifests: Manifests::Generated { dir: CRATE },
    timeout: ROLLOUT,
};

/// How long the leader's renewal counts. When the leader's node dies, the
/// standby takes over after this: no longer than it takes the cluster to
/// notice a dead node, so that the notices about it are not held back.
fn leader_lease_seconds(spec: &ClusterSpec) -> u32 {
    LEADER_LEASE_SECONDS.min(spec.failover.timings().node_lease_seconds)
}

/// Missed kubelet renewals before a node is suspect: about 60 % of the
/// node controller's grace, so that the warning comes before the NotReady
/// without a busy second making one (tuned: 5 of the 1 s renewals, against
/// a grace of 8 s; upstream: 3 of the 10 s renewals, against 50 s).
fn suspect_after_renewals(failover: Failover) -> u32 {
    let timings = failover.timings();
    let renewal = (timings.node_lease_seconds / 4).max(1);
    (timings.node_monitor_grace_seconds * 6).div_ceil(10 * renewal).max(1)
}

fn meta(name: &str, namespaced: bool) -> ObjectMeta {
    monitoring_meta(NAME, name, namespaced)
}

/// The signing secret: `whsec_` and 32 random bytes in base64 (Standard Webhooks).
fn secrets(_: &Input) -> Vec<Secret> {
    let key: [u8; 32] = rand::random();
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
    vec![Secret {
        metadata: meta(NAME, true),
        string_data: Some(BTreeMap::from([(WEBHOOK_SECRET_KEY.into(), secret)])),
        ..Default::default()
    }]
}

/// The URLs of the sinks `vigil up`'s flags name, by key: applied with the
/// other objects each time (so a URL follows the flag, and goes with it),
/// never written under `manifests/`.
pub fn sinks_secret(spec: &ClusterSpec) -> Secret {
    let urls: BTreeMap<String, ByteString> = spec
        .alerting
        .webhook
        .iter()
        .map(|url| (WEBHOOK_URL_KEY.to_owned(), ByteString(url.clone().into_bytes())))
        .collect();
    Secret {
        metadata: meta(SINKS_SECRET, true),
        // `data`, not `stringData`: server-side apply then removes a key that
        // is no longer given.
        data: (!urls.is_empty()).then_some(urls),
        ..Default::default()
    }
}

/// The alerter's configuration: Alertmanager in the cluster always (through
/// its authenticating proxy), and the webhook `vigil up --alert-webhook`
/// names, its URL in [`SINKS_SECRET`].
pub fn config(spec: &ClusterSpec) -> Config {
    let mut sinks = vec![SinkConfig {
        name: "alertmanager".into(),
        kind: SinkKind::Alertmanager {
            url: alertmanager::service_url(),
            basic_auth: Some(BasicAuthConfig {
                username: API_USERNAME.into(),
                password_file: format!("{API_CREDENTIALS_DIR}/{API_PASSWORD_KEY}").into(),
            }),
        },
    }];
    if spec.alerting.webhook.is_some() {
        sinks.push(SinkConfig {
            name: "webhook".into(),
            kind: SinkKind::Webhook {
                url_file: format!("{SINKS_DIR}/{WEBHOOK_URL_KEY}").into(),
                secret_file: format!("{SECRETS_DIR}/{WEBHOOK_SECRET_KEY}").into(),
            },
        });
    }
    Config {
        cluster: spec.name.clone(),
        suspect_after_renewals: suspect_after_renewals(spec.failover),
        verify_grace: std::time::Duration::from_secs(30),
        verify_deadline: None,
        control_plane_after: std::time::Duration::from_secs(10),
        stable_for: std::time::Duration::from_secs(20),
        // Half of Prometheus's default: an Alertmanager restarted (every
        // configuration change restarts it) has the alerts back within 30 s.
        delivery: DeliveryConfig {
            resend_interval: std::time::Duration::from_secs(30),
            ..DeliveryConfig::default()
        },
        retention: Default::default(),
        sinks,
        generator_url: prometheus::ADDON.address.as_ref().map(|a| a.url_in(spec)),
        logs_url: victorialogs::ADDON.address.as_ref().map(|a| a.url_in(spec)),
    }
}

fn addon_objects(input: &Input) -> Result<Vec<Object>, upstream::Error> {
    Ok(objects(input.spec, &input.image(CRATE)))
}

pub fn objects(spec: &ClusterSpec, image: &str) -> Vec<Object> {
    // What it watches and the incidents it keeps, cluster-wide.
    let identity = cluster_identity(
        meta(NAME, true),
        meta("vigil:alerter", false),
        vec![
            rule("", &["nodes", "pods"], &["list", "watch"], &[]),
            rule("apps", &["deployments", "statefulsets"], &["list", "watch"], &[]),
            rule(GROUP, &["nodeincidents"], &["list", "create", "delete"], &[]),
            rule(GROUP, &["nodeincidents/status"], &["patch"], &[]),
        ],
    );
    // The kubelets' Leases, read only; its own leader Lease, by name once it
    // exists; Events on Nodes (cluster-scoped objects' Events live in `default`).
    let node_leases = namespaced_identity(
        &meta(NAME, true),
        meta("vigil:alerter-node-leases", false).with_namespace("kube-node-lease"),
        vec![rule("coordination.k8s.io", &["leases"], &["list", "watch"], &[])],
    );
    let leader = namespaced_identity(
        &meta(NAME, true),
        meta("vigil:alerter-leader", true),
        vec![
            rule("coordination.k8s.io", &["leases"], &["create"], &[]),
            rule("coordination.k8s.io", &["leases"], &["get", "update"], &[LEASE]),
        ],
    );
    let events = namespaced_identity(
        &meta(NAME, true),
        meta("vigil:alerter-events", false).with_namespace("default"),
        vec![rule("events.k8s.io", &["events"], &["create", "patch"], &[])],
    );
    let config = ConfigMap {
        metadata: meta(NAME, true),
        data: Some(BTreeMap::from([("config.json".into(), config(spec).to_json())])),
        ..Default::default()
    };
    let sinks = sinks_secret(spec);
    let probe = |path: &str| Probe { period_seconds: Some(5), ..http_get_probe(ADMIN_PORT, path) };
    let read_only = |name: &str, mount_path: &str| VolumeMount {
        name: name.into(),
        mount_path: mount_path.into(),
        read_only: Some(true),
        ..Default::default()
    };
    let (config_volume, config_mount) = config_volume("config", NAME, CONFIG_DIR);
    let container = Container {
        name: CRATE.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(
            [field_env("POD_NAME", "metadata.name"), field_env("POD_NAMESPACE", "metadata.namespace")]
                .into_iter()
                // Incidents are rare, and each is one trace: all of them.
                .chain(super::jaeger::otel_env(CRATE, None))
                .collect(),
        ),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_DIR}/config.json"),
            "--lease".into(),
            LEASE.into(),
            "--lease-duration".into(),
            format!("{}s", leader_lease_seconds(spec)),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: ADMIN_PORT.into(),
            ..Default::default()
        }]),
        liveness_probe: Some(probe("/live")),
        readiness_probe: Some(probe("/ready")),
        volume_mounts: Some(vec![
            config_mount,
            read_only("secrets", SECRETS_DIR),
            read_only("sinks", SINKS_DIR),
            read_only("api-credentials", API_CREDENTIALS_DIR),
        ]),
        // From `./vigil.sh bench alerter-memory`: a 44 MiB working set (51 MiB
        // RSS) at 10 000 pods, 6.5 MiB at 1 000; a re-list holds the new list
        // beside the old store for a moment (about twice), hence 128 MiB.
        resources: Some(resources(&[("cpu", "20m"), ("memory", "24Mi")], &[("memory", "128Mi")])),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    let selector = monitoring_selector(NAME);
    let evict_after = EVICT_AFTER_SECONDS.min(i64::from(spec.failover.timings().toleration_seconds));
    let toleration = |key: &str, effect: &str, seconds: Option<i64>| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        toleration_seconds: seconds,
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(NAME, true),
        spec: Some(DeploymentSpec {
            replicas: Some(REPLICAS),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..Default::default() },
            // Two nodes at most for two replicas: a new one replaces an old one.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(monitoring_labels(NAME)),
                    // Scraped; rolled when its configuration or a sink's URL
                    // changes (it reads them once, at start).
                    annotations: Some(
                        [("prometheus.io/scrape".to_owned(), "true".to_owned())]
                            .into_iter()
                            .chain(config_and_secret_checksum(&[&config], &[&sinks]))
                            .collect(),
                    ),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    security_context: Some(non_root_pod(USER, None)),
                    affinity: Some(Affinity {
                        pod_anti_affinity: Some(PodAntiAffinity {
                            required_during_scheduling_ignored_during_execution: Some(vec![
                                PodAffinityTerm {
                                    topology_key: "kubernetes.io/hostname".into(),
                                    label_selector: Some(LabelSelector {
                                        match_labels: Some(selector.clone()),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                },
                            ]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    // The control plane is a third node to run on.
                    tolerations: Some(vec![
                        toleration("node-role.kubernetes.io/control-plane", "NoSchedule", None),
                        toleration("node.kubernetes.io/not-ready", "NoExecute", Some(evict_after)),
                        toleration("node.kubernetes.io/unreachable", "NoExecute", Some(evict_after)),
                    ]),
                    containers: vec![container],
                    volumes: Some(vec![
                        config_volume,
                        Volume {
                            name: "secrets".into(),
                            // Made by `vigil up`; with `kubectl apply -k`, create it yourself
                            // (docs/operate.md says how) before configuring a webhook.
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(NAME.into()),
                                optional: Some(true),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "sinks".into(),
                            // Applied by `vigil up`; with `kubectl apply -k`, made by you with a webhook.
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(SINKS_SECRET.into()),
                                optional: Some(true),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "api-credentials".into(),
                            // The password only; required: Alertmanager's proxy refuses the alerter without it.
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(API_CREDENTIALS_SECRET.into()),
                                items: Some(vec![KeyToPath {
                                    key: API_PASSWORD_KEY.into(),
                                    path: API_PASSWORD_KEY.into(),
                                    ..Default::default()
                                }]),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let budget = PodDisruptionBudget {
        metadata: meta(NAME, true),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut objects = vec![Object::typed(NodeIncident::crd())];
    objects.extend(identity);
    objects.extend(node_leases);
    objects.extend(leader);
    objects.extend(events);
    objects.extend([
        Object::typed(sinks),
        Object::typed(config),
        Object::typed(deployment),
        Object::typed(budget),
    ]);
    objects
}

trait WithNamespace {
    fn with_namespace(self, namespace: &str) -> Self;
}

impl WithNamespace for ObjectMeta {
    fn with_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_suspect_before_the_node_controller_acts() {
        assert_eq!(suspect_after_renewals(Failover::Tuned), 5);
        assert_eq!(suspect_after_renewals(Failover::Upstream), 3);
    }

    #[test]
    fn the_configuration_is_one_the_alerter_accepts() {
        let mut spec = ClusterSpec::default();
        spec.alerting.webhook = Some("http://172.29.0.1:18787/alerter".into());
        let config = config(&spec);
        let parsed = Config::from_json(&config.to_json(), "test").unwrap();
        assert_eq!(parsed, config);
        assert_eq!(parsed.sinks.len(), 2);
    }

    fn deployment(objects: &[Object]) -> Deployment {
        objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::apps::v1::Deployment>()).unwrap()
    }

    #[test]
    fn the_webhook_url_is_in_a_secret_and_rolls_the_pods_without_showing() {
        let url = "http://172.29.0.1:18787/hooks/SECRET123?token=SECRET456";
        let with_url = |webhook: Option<&str>| {
            let mut spec = ClusterSpec::default();
            spec.alerting.webhook = webhook.map(str::to_owned);
            objects(&spec, "img")
        };
        let applied = with_url(Some(url));
        let secret = applied.iter().find_map(|o| o.to_typed::<k8s_openapi::api::core::v1::Secret>()).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some(SINKS_SECRET));
        assert_eq!(secret.data.as_ref().unwrap()[WEBHOOK_URL_KEY].0, url.as_bytes());
        // Nothing else holds it: not the ConfigMap, the template, its annotations.
        for object in applied.iter().filter(|o| o.kind() != "Secret") {
            let yaml = object.to_yaml();
            assert!(!yaml.contains("SECRET123") && !yaml.contains("SECRET456"), "{}", object.describe());
        }
        let checksum = |objects: &[Object]| {
            let deployment = deployment(objects);
            let template = &deployment.spec.as_ref().unwrap().template;
            template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()["vigil.local/config-checksum"]
                .clone()
        };
        let other = with_url(Some("http://172.29.0.1:18787/hooks/OTHER"));
        assert_ne!(checksum(&applied), checksum(&other), "a new URL rolls the pods");
        // Without the flag, the Secret is applied empty: the old URL goes.
        let without = with_url(None);
        let secret = without.iter().find_map(|o| o.to_typed::<k8s_openapi::api::core::v1::Secret>()).unwrap();
        assert!(secret.data.is_none());
        let config = config(&ClusterSpec { alerting: Default::default(), ..ClusterSpec::default() });
        assert!(!config.to_json().contains("webhook"));
    }

    #[test]
    fn alertmanager_is_told_the_api_password_which_alone_is_mounted_read_only() {
        let config = config(&ClusterSpec::default());
        let SinkKind::Alertmanager { basic_auth: Some(auth), .. } = &config.sinks[0].kind else {
            panic!("{config:?}")
        };
        assert_eq!(auth.username, API_USERNAME);
        let objects = objects(&ClusterSpec::default(), "img");
        let deployment = deployment(&objects);
        let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let volume = pod.volumes.iter().flatten().find(|v| v.name == "api-credentials").unwrap();
        let source = volume.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some(API_CREDENTIALS_SECRET));
        let keys: Vec<&str> = source.items.iter().flatten().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, [API_PASSWORD_KEY]);
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        assert!(mounts.iter().all(|m| m.read_only == Some(true)), "{mounts:?}");
        let mount = mounts.iter().find(|m| m.name == "api-credentials").unwrap();
        assert_eq!(auth.password_file, std::path::Path::new(&mount.mount_path).join(API_PASSWORD_KEY));
    }

    #[test]
    fn the_roles_grant_only_what_it_uses() {
        let objects = objects(&ClusterSpec::default(), "img");
        let verbs: Vec<String> = objects
            .iter()
            .flat_map(|o| {
                let cluster_role =
                    o.to_typed::<k8s_openapi::api::rbac::v1::ClusterRole>().and_then(|r| r.rules);
                let role = o.to_typed::<k8s_openapi::api::rbac::v1::Role>().and_then(|r| r.rules);
                cluster_role.or(role).unwrap_or_default()
            })
            .flat_map(|r| {
                let names = r.resource_names.clone().unwrap_or_default().join(",");
                r.resources
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |res| format!("{res}[{names}]:{}", r.verbs.join(",")))
            })
            .collect();
        assert_eq!(
            verbs,
            [
                "nodes[]:list,watch",
                "pods[]:list,watch",
                "deployments[]:list,watch",
                "statefulsets[]:list,watch",
                "nodeincidents[]:list,create,delete",
                "nodeincidents/status[]:patch",
                "leases[]:list,watch",
                "leases[]:create",
                "leases[vigil-alerter]:get,update",
                "events[]:create,patch",
            ]
        );
        let deployment =
            objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::apps::v1::Deployment>()).unwrap();
        let container = &deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        assert!(
            !container.args.clone().unwrap().join(" ").contains("whsec_"),
            "no secret on the command line"
        );
    }

    #[test]
    fn a_replica_moves_and_a_standby_takes_over_as_fast_as_the_cluster_notices() {
        // (failover, the replicas' not-ready toleration, the leader's Lease)
        for (failover, toleration, lease) in [(Failover::Upstream, 30, "8s"), (Failover::Tuned, 5, "4s")] {
            let spec = ClusterSpec { failover, ..ClusterSpec::default() };
            let objects = objects(&spec, "img");
            let deployment =
                objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::apps::v1::Deployment>()).unwrap();
            let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let args = pod.containers[0].args.clone().unwrap();
            let at = args.iter().position(|a| a == "--lease-duration").unwrap();
            assert_eq!(args[at + 1], lease, "{failover:?}");
            let seconds: Vec<Option<i64>> = pod
                .tolerations
                .iter()
                .flatten()
                .filter(|t| t.effect.as_deref() == Some("NoExecute"))
                .map(|t| t.toleration_seconds)
                .collect();
            assert_eq!(seconds, [Some(toleration), Some(toleration)], "{failover:?}");
        }
    }
}
