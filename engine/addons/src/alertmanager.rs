//! Alertmanager, built from its Go module with its new (Mantine) UI, so
//! the alerter's alerts are routed, grouped and silenced the way users
//! expect. One replica (no gossip cluster), its state on an emptyDir, its UI
//! and API at their own LoadBalancer address behind the authenticating proxy
//! (see [`super::auth_proxy`]): nobody silences alerts or posts them without
//! credentials, and no page of another origin writes through a browser that
//! holds them. The route sends everything to
//! one webhook receiver when `vigil up --alertmanager-webhook` names one
//! (its URL read from a Secret, never written in the ConfigMap);
//! otherwise the alerts stay in Alertmanager's UI.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{
        ConfigMap, Container, EmptyDirVolumeSource, PodSpec, Probe, Secret, SecretVolumeSource, Volume,
        VolumeMount,
    },
};
use kube::api::ObjectMeta;
use serde::Serialize;

use super::{
    Addon, Address, Check, ImageFrom, ImageRun, Input, Manifests, ROLLOUT, Rollout, UpstreamImage,
    auth_proxy, config_and_secret_checksum, config_volume, http_get_probe, locked_down, metallb,
    node_exporter::{self, NAMESPACE, monitoring_deployment, monitoring_meta, monitoring_selector},
    non_root_pod, resources, upstream,
};
use vigil_model::versions;

use crate::apply::Object;
use vigil_model::cluster::ClusterSpec;

pub const NAME: &str = "alertmanager";
pub const PORT: u16 = 9093;
/// Its Service takes the third address of the LoadBalancer range.
pub const LOAD_BALANCER_INDEX: u32 = 2;
const CONFIG_DIR: &str = "/etc/alertmanager";
const DATA_DIR: &str = "/alertmanager";
/// `nobody`, as upstream's image runs it.
const USER: i64 = 65534;

/// The binary alone, as `nobody`.
pub const IMAGE: UpstreamImage = UpstreamImage {
    name: NAME,
    version: versions::ALERTMANAGER,
    replaces: None,
    from: ImageFrom::PodBase,
    binary: "alertmanager",
    path: "/bin/alertmanager",
    run: ImageRun::AsUser("65534:65534"),
    extra: &[],
};

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "Alertmanager: routes the alerter's alerts",
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
        url: |ip| format!("http://{ip}:{PORT}/"),
        check: Check::Gated("api/v2/status"),
        hint: "Alertmanager (the alerter's alerts: VigilNodeDown, ...)",
        load_balancer_index: LOAD_BALANCER_INDEX,
    }),
    manifests: Manifests::Generated { dir: NAMESPACE },
    timeout: ROLLOUT,
};

/// The in-cluster address the alerter posts to.
pub fn service_url() -> String {
    format!("http://{NAME}.{NAMESPACE}.svc:{PORT}/")
}

#[derive(Serialize)]
struct Config {
    route: Route,
    receivers: Vec<Receiver>,
}

#[derive(Serialize)]
struct Route {
    receiver: &'static str,
    group_by: Vec<&'static str>,
    group_wait: &'static str,
    group_interval: &'static str,
    repeat_interval: &'static str,
}

#[derive(Serialize)]
struct Receiver {
    name: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    webhook_configs: Vec<WebhookConfig>,
}

#[derive(Serialize)]
struct WebhookConfig {
    /// The URL is a credential (hook services put their token in it): it
    /// is read from the mounted Secret, never written in the ConfigMap.
    url_file: String,
    send_resolved: bool,
}

/// The Secret holding `vigil up --alertmanager-webhook`'s URL.
pub const WEBHOOK_SECRET: &str = "alertmanager-webhook";
/// Its key, and the file name the URL is read from.
pub const WEBHOOK_URL_KEY: &str = "url";
const WEBHOOK_DIR: &str = "/etc/alertmanager/webhook";

/// `alertmanager.yml`: one route, by alert and node, to the webhook if any.
/// A short group wait: a node alert is worth little late.
pub fn config_yaml(spec: &ClusterSpec) -> String {
    let webhook_configs = spec
        .alerting
        .alertmanager_webhook
        .iter()
        .map(|_| WebhookConfig { url_file: format!("{WEBHOOK_DIR}/{WEBHOOK_URL_KEY}"), send_resolved: true })
        .collect();
    let config = Config {
        route: Route {
            receiver: "default",
            group_by: vec!["alertname", "node"],
            group_wait: "2s",
            group_interval: "30s",
            repeat_interval: "4h",
        },
        receivers: vec![Receiver { name: "default", webhook_configs }],
    };
    serde_yaml::to_string(&config).expect("serializes")
}

/// The webhook's URL, applied at every `up` so that it follows the flag;
/// `data` rather than `stringData`, so that an `up` without the flag
/// removes the old URL. Never under `manifests/` (no Secret is).
pub fn webhook_secret(spec: &ClusterSpec) -> Secret {
    let urls: BTreeMap<String, ByteString> = spec
        .alerting
        .alertmanager_webhook
        .iter()
        .map(|url| (WEBHOOK_URL_KEY.to_owned(), ByteString(url.clone().into_bytes())))
        .collect();
    Secret { metadata: meta(WEBHOOK_SECRET), data: (!urls.is_empty()).then_some(urls), ..Default::default() }
}

fn meta(name: &str) -> ObjectMeta {
    monitoring_meta(NAME, name, true)
}

fn probe(path: &str) -> Probe {
    Probe { period_seconds: Some(5), ..http_get_probe(PORT, path) }
}

fn addon_objects(input: &Input) -> Result<Vec<Object>, upstream::Error> {
    Ok(objects(input.spec, &input.image(auth_proxy::CRATE)))
}

/// `proxy_image`: the authenticating proxy's.
pub fn objects(spec: &ClusterSpec, proxy_image: &str) -> Vec<Object> {
    let image = IMAGE.reference(&spec.image_repository);
    let proxy = auth_proxy::sidecar(
        |name| meta(&format!("{NAME}-{name}")),
        proxy_image,
        &[auth_proxy::Listener {
            name: "web",
            port: PORT,
            body_limit: auth_proxy::API_BODY_LIMIT,
            upstream_timeout: std::time::Duration::from_secs(30),
            public: &["/-/ready", "/-/healthy"],
            // Upstream's root serves its old UI, which is not built (see the build's ui.rs).
            root: Some("/ui/"),
            writer: None,
        }],
    );
    let (config_volume, config_mount) = config_volume("config", "alertmanager-config", CONFIG_DIR);
    let config = ConfigMap {
        metadata: meta("alertmanager-config"),
        data: Some(BTreeMap::from([("alertmanager.yml".into(), config_yaml(spec))])),
        ..Default::default()
    };
    let container = Container {
        name: NAME.into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            format!("--config.file={CONFIG_DIR}/alertmanager.yml"),
            format!("--storage.path={DATA_DIR}"),
            // Loopback only: the proxy has this port on the pod's address
            // (and the kubelet's probes come through it).
            format!("--web.listen-address=127.0.0.1:{PORT}"),
            // One replica: no gossip peers to find.
            "--cluster.listen-address=".into(),
        ]),
        readiness_probe: Some(probe("/-/ready")),
        liveness_probe: Some(probe("/-/healthy")),
        volume_mounts: Some(vec![
            config_mount,
            VolumeMount { name: "data".into(), mount_path: DATA_DIR.into(), ..Default::default() },
            VolumeMount {
                name: "webhook".into(),
                mount_path: WEBHOOK_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        resources: Some(resources(&[("cpu", "20m"), ("memory", "32Mi")], &[("memory", "128Mi")])),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    let mut deployment = monitoring_deployment(
        NAME,
        PodSpec {
            automount_service_account_token: Some(false),
            security_context: Some(non_root_pod(USER, Some(USER))),
            containers: vec![container, proxy.container],
            volumes: Some(
                [
                    config_volume,
                    Volume {
                        name: "data".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    },
                    Volume {
                        name: "webhook".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(WEBHOOK_SECRET.into()),
                            // Empty (no key) when no webhook is named.
                            optional: Some(true),
                            default_mode: Some(0o440),
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
    let webhook = webhook_secret(spec);
    if let Some(template) = deployment.spec.as_mut().and_then(|s| s.template.metadata.as_mut()) {
        template.annotations = Some(config_and_secret_checksum(&[&config, &proxy.config], &[&webhook]));
    }
    let ip = spec.load_balancer_ip(LOAD_BALANCER_INDEX).to_string();
    let service = metallb::pinned_service(meta(NAME), &ip, monitoring_selector(NAME), &[("web", PORT)]);
    vec![
        Object::typed(webhook),
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
    fn the_route_sends_to_the_webhook_when_one_is_named() {
        let mut spec = ClusterSpec::default();
        assert!(!config_yaml(&spec).contains("webhook_configs"));
        spec.alerting.alertmanager_webhook = Some("http://172.29.0.1:18788/alertmanager".into());
        let yaml: serde_yaml::Value = serde_yaml::from_str(&config_yaml(&spec)).unwrap();
        assert_eq!(yaml["route"]["receiver"], "default");
        let url_file = yaml["receivers"][0]["webhook_configs"][0]["url_file"].as_str().unwrap();
        assert_eq!(url_file, "/etc/alertmanager/webhook/url");
        assert!(!config_yaml(&spec).contains("18788"), "the URL is not in the ConfigMap");
        assert_eq!(yaml["receivers"][0]["webhook_configs"][0]["send_resolved"], true);
    }

    #[test]
    fn the_webhook_url_is_only_in_its_secret_and_rolls_the_pod() {
        let mut spec = ClusterSpec::default();
        let url = "http://172.29.0.1:18788/hooks/SECRET123";
        spec.alerting.alertmanager_webhook = Some(url.into());
        let applied = objects(&spec, "proxy");
        let checksum = |objects: &[Object]| {
            objects
                .iter()
                .find_map(|o| o.to_typed::<k8s_openapi::api::apps::v1::Deployment>())
                .and_then(|d| d.spec?.template.metadata?.annotations)
                .unwrap()["vigil.local/config-checksum"]
                .clone()
        };
        let mut secrets = 0;
        for object in &applied {
            match object.to_typed::<k8s_openapi::api::core::v1::Secret>() {
                Some(secret) => {
                    secrets += 1;
                    assert_eq!(secret.data.as_ref().unwrap()[WEBHOOK_URL_KEY].0, url.as_bytes());
                }
                None => {
                    let text = object.to_yaml();
                    assert!(!text.contains("SECRET123"), "{text}");
                }
            }
        }
        assert_eq!(secrets, 1);
        spec.alerting.alertmanager_webhook = Some("http://172.29.0.1:18788/hooks/OTHER".into());
        assert_ne!(checksum(&applied), checksum(&objects(&spec, "proxy")), "a new URL rolls the pod");
        spec.alerting.alertmanager_webhook = None;
        let cleared = objects(&spec, "proxy");
        let secret = cleared.iter().find_map(|o| o.to_typed::<k8s_openapi::api::core::v1::Secret>()).unwrap();
        assert!(secret.data.is_none(), "an up without the flag removes the old URL");
    }
}
