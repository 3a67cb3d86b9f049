//! flannel, upstream's kube-flannel.yml for v0.27 as typed objects, with two
//! changes. The flannel CNI plugin is baked into the node image, so the
//! `install-cni-plugin` init container that copies it from an image is gone.
//! And the CNI configuration is installed once flanneld has written its
//! subnet, not before it starts: upstream's init container makes the node
//! Ready while the plugin still fails ("subnet.env: no such file"), and each
//! pod scheduled in that window (CoreDNS, first of all) waits out the
//! kubelet's ten-second retry. flanneld also talks to the API server at the
//! control plane's address rather than through the `kubernetes` Service:
//! that Service is kube-proxy's rule, which may not exist yet when the pod
//! network starts (kube-proxy's own kubeconfig does the same).

use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EnvVar, HostPathVolumeSource,
            Namespace, PodSpec, PodTemplateSpec, ResourceRequirements, SecurityContext, Toleration, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelector},
};
use kube::api::ObjectMeta;
use serde_json::json;

use super::{Object, api_server_env, cluster_identity, core_rule, field_env, pod_security};
use vigil_model::cluster::ClusterSpec;

pub const NAMESPACE: &str = "kube-flannel";
const NAME: &str = "flannel";
/// Waits for flanneld's subnet, installs the CNI configuration (renamed into
/// place, so the runtime never reads half a file), then idles until stopped.
const INSTALL_CNI: &str = "set -e
until [ -s /run/flannel/subnet.env ]; do sleep 0.1; done
cp -f /etc/kube-flannel/cni-conf.json /etc/cni/net.d/.10-flannel.conflist.new
mv -f /etc/cni/net.d/.10-flannel.conflist.new /etc/cni/net.d/10-flannel.conflist
trap 'exit 0' TERM
while :; do sleep 3600 & wait $!; done
";

fn meta(name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespaced.then(|| NAMESPACE.into()),
        labels: Some(BTreeMap::from([
            ("k8s-app".into(), "flannel".into()),
            ("app.kubernetes.io/managed-by".into(), "vigil".into()),
        ])),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), ..Default::default() }
}

fn host_path(name: &str, path: &str, kind: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource { path: path.into(), type_: kind.map(Into::into) }),
        ..Default::default()
    }
}

/// flannel's CNI configuration: its plugin delegating to bridge, plus portmap.
pub fn cni_conf() -> serde_json::Value {
    json!({
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true } },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
}

/// The overlay: the cluster's pod network, VXLAN (present in this kernel).
pub fn net_conf(spec: &ClusterSpec) -> serde_json::Value {
    json!({ "Network": spec.pod_subnet.to_string(), "EnableNFTables": false, "Backend": { "Type": "vxlan" } })
}

/// `api_server`: where the control plane's API server listens (host, port).
pub fn objects(spec: &ClusterSpec, image: &str, api_server: (Ipv4Addr, u16)) -> Vec<Object> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            labels: Some(
                [("k8s-app".to_owned(), "flannel".to_owned())]
                    .into_iter()
                    .chain(pod_security::labels(pod_security::Level::Privileged))
                    .collect(),
            ),
            annotations: Some(pod_security::reason(
                "flanneld runs in the host's network namespace with NET_ADMIN and NET_RAW, and writes the CNI configuration and its subnet lease through host paths",
            )),
            ..meta(NAMESPACE, false)
        },
        ..Default::default()
    };
    let identity = cluster_identity(
        meta(NAME, true),
        meta(NAME, false),
        vec![
            core_rule(&["pods"], &["get"]),
            core_rule(&["nodes"], &["get", "list", "watch"]),
            core_rule(&["nodes/status"], &["patch"]),
        ],
    );
    let config = ConfigMap {
        metadata: meta("kube-flannel-cfg", true),
        data: Some(BTreeMap::from([
            ("cni-conf.json".into(), serde_json::to_string_pretty(&cni_conf()).expect("json")),
            ("net-conf.json".into(), serde_json::to_string_pretty(&net_conf(spec)).expect("json")),
        ])),
        ..Default::default()
    };
    let labels =
        BTreeMap::from([("app".to_owned(), "flannel".to_owned()), ("tier".to_owned(), "node".to_owned())]);
    let install_cni = Container {
        name: "install-cni".into(),
        image: Some(image.into()),
        image_pull_policy: Some("Never".into()),
        command: Some(vec!["sh".into(), "-c".into(), INSTALL_CNI.into()]),
        volume_mounts: Some(vec![
            mount("run", "/run/flannel"),
            mount("cni", "/etc/cni/net.d"),
            mount("flannel-cfg", "/etc/kube-flannel/"),
        ]),
        ..Default::default()
    };
    let flanneld = Container {
        name: "kube-flannel".into(),
        image: Some(image.into()),
        image_pull_policy: Some("Never".into()),
        command: Some(vec!["/opt/bin/flanneld".into()]),
        args: Some(vec!["--ip-masq".into(), "--kube-subnet-mgr".into()]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("100m".into())),
                ("memory".into(), Quantity("50Mi".into())),
            ])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: None,
            }),
            ..Default::default()
        }),
        env: Some(
            vec![
                field_env("POD_NAME", "metadata.name"),
                field_env("POD_NAMESPACE", "metadata.namespace"),
                EnvVar { name: "EVENT_QUEUE_DEPTH".into(), value: Some("5000".into()), ..Default::default() },
                EnvVar {
                    name: "CONT_WHEN_CACHE_NOT_READY".into(),
                    value: Some("false".into()),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain(api_server_env(api_server))
            .collect(),
        ),
        volume_mounts: Some(vec![
            mount("run", "/run/flannel"),
            mount("flannel-cfg", "/etc/kube-flannel/"),
            mount("xtables-lock", "/run/xtables.lock"),
        ]),
        ..Default::default()
    };
    let daemon_set = DaemonSet {
        metadata: meta("kube-flannel-ds", true),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(labels.clone()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    host_network: Some(true),
                    priority_class_name: Some("system-node-critical".into()),
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        effect: Some("NoSchedule".into()),
                        ..Default::default()
                    }]),
                    service_account_name: Some(NAME.into()),
                    containers: vec![flanneld, install_cni],
                    volumes: Some(vec![
                        host_path("run", "/run/flannel", None),
                        host_path("cni", "/etc/cni/net.d", None),
                        Volume {
                            name: "flannel-cfg".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: "kube-flannel-cfg".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        host_path("xtables-lock", "/run/xtables.lock", Some("FileOrCreate")),
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut objects = vec![Object::typed(namespace)];
    objects.extend(identity);
    objects.extend([Object::typed(config), Object::typed(daemon_set)]);
    objects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_match_golden_file() {
        let api_server = ("172.29.0.2".parse().unwrap(), 6443);
        let yaml: Vec<String> = objects(&ClusterSpec::default(), "vigil.local/flannel:v0.27.4", api_server)
            .iter()
            .map(Object::to_yaml)
            .collect();
        vigil_host::assert_golden(env!("CARGO_MANIFEST_DIR"), "flannel.yaml", &yaml.join("---\n"));
    }

    #[test]
    fn net_conf_follows_the_pod_subnet() {
        let spec = ClusterSpec { pod_subnet: "10.200.0.0/16".parse().unwrap(), ..Default::default() };
        assert_eq!(net_conf(&spec)["Network"], "10.200.0.0/16");
        assert_eq!(cni_conf()["plugins"][0]["type"], "flannel");
    }
}
