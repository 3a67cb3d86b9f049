//! Typed kubeadm configuration: InitConfiguration, ClusterConfiguration,
//! KubeletConfiguration and KubeProxyConfiguration for `kubeadm init`, and
//! JoinConfiguration for `kubeadm join`, rendered as multi-document YAML.
//! Only the fields vigil sets are modelled; kubeadm defaults the rest.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::{
    cluster::ClusterSpec,
    provider::{NodeSpec, ProviderInfo},
    token::BootstrapToken,
};

/// The API server's secure port inside each node.
pub const API_SERVER_PORT: u16 = 6443;
/// containerd's CRI socket inside the node image.
pub const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";
/// The phases vigil skips on machines that share the host's kernel:
/// preflight checks kernel modules and system verification that do not
/// apply inside a node container (this host has no /lib/modules and a
/// cgroup v1 hierarchy kubeadm would warn about).
fn skipped_phases(info: &ProviderInfo) -> Vec<&'static str> {
    if info.shares_host_kernel { vec!["preflight"] } else { vec![] }
}

/// The directory on the control plane that holds [`patches`].
pub const PATCHES_DIR: &str = "/etc/vigil/kubeadm-patches";

/// kubeadm's patches (strategic merge patches of what it generates), by
/// file name. They change how often some probes ask, nothing else:
/// - CoreDNS's readiness every second instead of every ten: nothing in the
///   cluster resolves a name until CoreDNS is Ready, and a probe a moment
///   too early cost ten seconds of every `up`;
/// - the control plane's startup probes every second from the first second,
///   instead of every ten after ten: the component is reported Ready as soon
///   as it is healthy. The budget stays kubeadm's four minutes (240 tries).
pub fn patches() -> Vec<(String, String)> {
    use k8s_openapi::api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{Container, Pod, PodSpec, PodTemplateSpec, Probe},
    };
    let json = |value: serde_json::Result<String>| value.expect("patches serialize");
    let coredns = Deployment {
        spec: Some(DeploymentSpec {
            template: PodTemplateSpec {
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "coredns".into(),
                        readiness_probe: Some(Probe { period_seconds: Some(1), ..Default::default() }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut patches =
        vec![("corednsdeployment+strategic.json".to_owned(), json(serde_json::to_string_pretty(&coredns)))];
    for component in ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: component.into(),
                    startup_probe: Some(Probe {
                        initial_delay_seconds: Some(1),
                        period_seconds: Some(1),
                        failure_threshold: Some(240),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        patches.push((format!("{component}+strategic.json"), json(serde_json::to_string_pretty(&pod))));
    }
    patches
}

/// Where the controller-manager and the scheduler serve: kubeadm's own default.
const LOOPBACK: &str = "127.0.0.1";

/// The kubeadm config API for a Kubernetes minor, chosen in one place.
pub fn kubeadm_api_version(minor: u32) -> &'static str {
    match minor {
        0..=14 => "kubeadm.k8s.io/v1beta1",
        15..=21 => "kubeadm.k8s.io/v1beta2",
        22..=30 => "kubeadm.k8s.io/v1beta3",
        _ => "kubeadm.k8s.io/v1beta4",
    }
}

/// The Kubernetes minor of a `v1.N.P` version string.
pub fn minor_of(version: &str) -> Option<u32> {
    version.trim_start_matches('v').split('.').nth(1)?.parse().ok()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    api_version: &'static str,
    kind: &'static str,
}

/// `{name, value}` pairs: v1beta4's form of extra arguments.
#[derive(Debug, Serialize, Clone)]
pub struct Arg {
    pub name: String,
    pub value: String,
}

fn args(pairs: &[(&str, String)]) -> Vec<Arg> {
    pairs.iter().map(|(name, value)| Arg { name: (*name).into(), value: value.clone() }).collect()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRegistration {
    name: String,
    cri_socket: &'static str,
    kubelet_extra_args: Vec<Arg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_pull_policy: Option<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapTokenSpec {
    token: String,
    ttl: String,
    usages: Vec<&'static str>,
    groups: Vec<&'static str>,
    description: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiEndpoint {
    advertise_address: Ipv4Addr,
    bind_port: u16,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InitConfiguration {
    #[serde(flatten)]
    type_meta: TypeMeta,
    bootstrap_tokens: Vec<BootstrapTokenSpec>,
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: ApiEndpoint,
    node_registration: NodeRegistration,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skip_phases: Vec<&'static str>,
    patches: Patches,
}

/// Where kubeadm finds patches for what it generates (`<target>+<type>.json`).
#[derive(Debug, Serialize)]
struct Patches {
    directory: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Networking {
    pod_subnet: String,
    service_subnet: String,
    dns_domain: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ControlPlaneComponent {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    extra_args: Vec<Arg>,
    #[serde(rename = "certSANs", skip_serializing_if = "Vec::is_empty")]
    cert_sans: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterConfiguration {
    #[serde(flatten)]
    type_meta: TypeMeta,
    cluster_name: String,
    kubernetes_version: String,
    image_repository: String,
    control_plane_endpoint: String,
    networking: Networking,
    api_server: ControlPlaneComponent,
    controller_manager: ControlPlaneComponent,
    scheduler: ControlPlaneComponent,
}

/// The kubelet's settings: kind's node-container adaptations where the
/// provider's machines share the host, and why.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration {
    #[serde(flatten)]
    type_meta: TypeMeta,
    /// Must match containerd's `SystemdCgroup = true`.
    cgroup_driver: &'static str,
    /// A cgroup of its own, created by the node entrypoint, so pods do not
    /// land next to the node's systemd services.
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_root: Option<String>,
    /// Swap on the host is visible in every node container; the kubelet
    /// must not refuse it there. A real host's swap is its own (refused).
    fail_swap_on: bool,
    /// 1.34 still runs on cgroup v1 when told so; say it explicitly.
    fail_cgroup_v1: bool,
    /// Image GC off (it starts past this share of the disk in use): the
    /// preloaded images cannot be pulled again (there is no registry), and
    /// the kubelet measures the host's disk, which the developer's own files
    /// fill. kind sets 100 for the same reasons.
    #[serde(rename = "imageGCHighThresholdPercent")]
    image_gc_high_threshold_percent: u8,
    /// Disk-pressure eviction at [`EVICTION_HARD`]'s absolute amounts on a
    /// shared host; the kubelet's own thresholds on a machine of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    eviction_hard: Option<std::collections::BTreeMap<&'static str, &'static str>>,
    /// How often the kubelet computes its node's status (and posts it when it changed).
    node_status_update_frequency: String,
    /// How often it posts its status when nothing changed. Set, because
    /// setting only the update frequency makes the kubelet post at that
    /// rate too (for compatibility): the heartbeat is the Lease.
    node_status_report_frequency: &'static str,
    /// The heartbeat: the Lease is renewed every quarter of this.
    node_lease_duration_seconds: u32,
    /// Serving certificates signed by the cluster CA (approved by vigil), so
    /// clients of port 10250 can verify the kubelet instead of skipping TLS checks.
    #[serde(rename = "serverTLSBootstrap")]
    server_tls_bootstrap: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Conntrack {
    /// 0 leaves nf_conntrack_max alone: it is a host-wide sysctl a node
    /// container cannot set.
    max_per_core: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeProxyConfiguration {
    #[serde(flatten)]
    type_meta: TypeMeta,
    /// This kernel has no IPVS; iptables mode works with its nf_tables backend.
    mode: &'static str,
    /// Only on a shared host: kube-proxy's own sizing elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    conntrack: Option<Conntrack>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapTokenDiscovery {
    api_server_endpoint: String,
    token: String,
    ca_cert_hashes: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Discovery {
    bootstrap_token: BootstrapTokenDiscovery,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinConfiguration {
    #[serde(flatten)]
    type_meta: TypeMeta,
    discovery: Discovery,
    node_registration: NodeRegistration,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skip_phases: Vec<&'static str>,
}

/// Derived once from the spec: the values init and join share.
struct Derived {
    api_version: &'static str,
    endpoint: String,
}

fn derive(spec: &ClusterSpec, control_plane: &NodeSpec) -> Derived {
    let minor = minor_of(&spec.kubernetes_version).unwrap_or(u32::MAX);
    Derived {
        api_version: kubeadm_api_version(minor),
        endpoint: format!("{}:{}", control_plane.ip, API_SERVER_PORT),
    }
}

fn node_registration(name: &str, ip: Ipv4Addr) -> NodeRegistration {
    NodeRegistration {
        name: name.into(),
        cri_socket: CRI_SOCKET,
        kubelet_extra_args: args(&[("node-ip", ip.to_string())]),
        // Nothing can be pulled; every image is preloaded.
        image_pull_policy: Some("Never"),
    }
}

fn to_yaml_documents(docs: &[serde_yaml::Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml::to_string(d).expect("kubeadm config serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn value<T: Serialize>(v: &T) -> serde_yaml::Value {
    serde_yaml::to_value(v).expect("kubeadm config serializes")
}

/// When the kubelet evicts pods (and, first, deletes unused images) to
/// free the disk. kind turns this off (0%) because a node container's
/// kubelet measures the host's filesystem, which it shares with everything
/// else on the host: the kubelet's percentages (10% for nodefs, 15% for
/// imagefs) would evict every pod on a developer's disk that is merely
/// 90% full, for space no pod took. Off, nothing stops a pod (or a
/// runaway TSDB) from filling the disk that etcd writes to. So: on, at
/// absolute amounts that mean "the host is about to be full" on any disk.
/// The reclaim deletes unused images, which cannot be pulled again; it
/// happens only then (image GC stays off), when the alternative is etcd
/// failing its writes, and `vigil up` loads the deployables' images again.
/// The alerts of `VigilNodeFilesystem*` fire long before (10% and 5% left).
/// Signals not listed are off (`memory.available` too, as in kind: the
/// kubelet would read the host's memory, shared by every node).
pub const EVICTION_HARD: [(&str, &str); 4] = [
    ("nodefs.available", "1Gi"),
    ("imagefs.available", "1Gi"),
    // The kubelet's own defaults: inodes run out at a rate no pod controls alone.
    ("nodefs.inodesFree", "5%"),
    ("imagefs.inodesFree", "5%"),
];

/// The kubelet's own default: an unchanged status is posted every 5 minutes.
const NODE_STATUS_REPORT_FREQUENCY: &str = "5m";

/// The config for `kubeadm init --config` on the control plane.
pub fn init_config(
    spec: &ClusterSpec,
    info: &ProviderInfo,
    control_plane: &NodeSpec,
    token: &BootstrapToken,
    token_ttl: std::time::Duration,
) -> String {
    let derived = derive(spec, control_plane);
    let timings = spec.failover.timings();
    let init = InitConfiguration {
        type_meta: TypeMeta { api_version: derived.api_version, kind: "InitConfiguration" },
        bootstrap_tokens: vec![BootstrapTokenSpec {
            token: token.to_string(),
            ttl: format!("{}s", token_ttl.as_secs()),
            usages: vec!["signing", "authentication"],
            groups: vec!["system:bootstrappers:kubeadm:default-node-token"],
            description: "vigil: joins this cluster's workers; deleted once they have joined",
        }],
        local_api_endpoint: ApiEndpoint { advertise_address: control_plane.ip, bind_port: API_SERVER_PORT },
        node_registration: node_registration(&control_plane.name, control_plane.ip),
        skip_phases: skipped_phases(info),
        patches: Patches { directory: PATCHES_DIR },
    };
    let cluster = ClusterConfiguration {
        type_meta: TypeMeta { api_version: derived.api_version, kind: "ClusterConfiguration" },
        cluster_name: spec.name.clone(),
        kubernetes_version: spec.kubernetes_version.clone(),
        image_repository: spec.image_repository.clone(),
        control_plane_endpoint: derived.endpoint,
        networking: Networking {
            pod_subnet: spec.pod_subnet.to_string(),
            service_subnet: spec.service_subnet.to_string(),
            dns_domain: "cluster.local",
        },
        // Pods without their own not-ready/unreachable tolerations get these.
        api_server: ControlPlaneComponent {
            extra_args: args(&[
                ("default-not-ready-toleration-seconds", timings.toleration_seconds.to_string()),
                ("default-unreachable-toleration-seconds", timings.toleration_seconds.to_string()),
            ]),
            cert_sans: vec!["localhost".into(), "127.0.0.1".into(), control_plane.ip.to_string()],
        },
        // Their secure ports (metrics, health) on loopback only: nothing
        // scrapes them (Prometheus's jobs are pod discovery of vigil's own
        // components), and kubeadm's probes ask 127.0.0.1. One control
        // plane: there is no other instance to elect a leader against, and
        // waiting for the lease (retried every 2 s while RBAC is still being
        // set up) only delays the controllers.
        controller_manager: ControlPlaneComponent {
            extra_args: args(&[
                ("bind-address", LOOPBACK.into()),
                ("leader-elect", "false".into()),
                ("node-monitor-period", format!("{}s", timings.node_monitor_period_seconds)),
                ("node-monitor-grace-period", format!("{}s", timings.node_monitor_grace_seconds)),
            ]),
            cert_sans: vec![],
        },
        scheduler: ControlPlaneComponent {
            extra_args: args(&[("bind-address", LOOPBACK.into()), ("leader-elect", "false".into())]),
            cert_sans: vec![],
        },
    };
    let kubelet = KubeletConfiguration {
        type_meta: TypeMeta { api_version: "kubelet.config.k8s.io/v1beta1", kind: "KubeletConfiguration" },
        cgroup_driver: "systemd",
        cgroup_root: info.kubelet_cgroup_root.clone(),
        fail_swap_on: !info.shares_host_kernel,
        fail_cgroup_v1: false,
        image_gc_high_threshold_percent: 100,
        eviction_hard: info.shares_host_kernel.then(|| EVICTION_HARD.into_iter().collect()),
        server_tls_bootstrap: true,
        node_status_update_frequency: format!("{}s", timings.node_status_update_seconds),
        node_status_report_frequency: NODE_STATUS_REPORT_FREQUENCY,
        node_lease_duration_seconds: timings.node_lease_seconds,
    };
    let proxy = KubeProxyConfiguration {
        type_meta: TypeMeta {
            api_version: "kubeproxy.config.k8s.io/v1alpha1",
            kind: "KubeProxyConfiguration",
        },
        mode: "iptables",
        conntrack: info.shares_host_kernel.then_some(Conntrack { max_per_core: 0 }),
    };
    to_yaml_documents(&[value(&init), value(&cluster), value(&kubelet), value(&proxy)])
}

/// The config for `kubeadm join --config` on one worker: token discovery
/// pinned to the cluster CA's public key hash.
pub fn join_config(
    spec: &ClusterSpec,
    info: &ProviderInfo,
    control_plane: &NodeSpec,
    worker: &NodeSpec,
    token: &BootstrapToken,
    ca_cert_hash: &str,
) -> String {
    let derived = derive(spec, control_plane);
    let join = JoinConfiguration {
        type_meta: TypeMeta { api_version: derived.api_version, kind: "JoinConfiguration" },
        discovery: Discovery {
            bootstrap_token: BootstrapTokenDiscovery {
                api_server_endpoint: derived.endpoint,
                token: token.to_string(),
                ca_cert_hashes: vec![ca_cert_hash.into()],
            },
        },
        node_registration: node_registration(&worker.name, worker.ip),
        skip_phases: skipped_phases(info),
    };
    to_yaml_documents(&[value(&join)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_of_their_own_keep_kubeadms_and_the_kubelets_defaults() {
        let (spec, nodes) = plan();
        let host = ProviderInfo { shares_host_kernel: false, kubelet_cgroup_root: None };
        let init = init_config(&spec, &host, &nodes[0], &token(), std::time::Duration::from_secs(60));
        let docs: Vec<serde_yaml::Value> =
            init.split("---\n").map(|d| serde_yaml::from_str(d).unwrap()).collect();
        assert!(docs[0].get("skipPhases").is_none(), "preflight runs on a real host");
        assert!(docs[2].get("cgroupRoot").is_none() && docs[2].get("evictionHard").is_none());
        assert_eq!(docs[2]["failSwapOn"], serde_yaml::Value::Bool(true));
        assert!(docs[3].get("conntrack").is_none(), "kube-proxy sizes conntrack itself");
        let join = join_config(&spec, &host, &nodes[0], &nodes[1], &token(), "sha256:00");
        assert!(!join.contains("skipPhases"), "{join}");
        // The node containers' config says each adaptation.
        let shared = init_config(
            &spec,
            &ProviderInfo::node_containers(),
            &nodes[0],
            &token(),
            std::time::Duration::from_secs(60),
        );
        for part in [
            "- preflight",
            "cgroupRoot: /kubelet",
            "failSwapOn: false",
            "maxPerCore: 0",
            "nodefs.available: 1Gi",
        ] {
            assert!(shared.contains(part), "{part} not in {shared}");
        }
    }

    fn token() -> BootstrapToken {
        "abcdef.0123456789abcdef".parse().unwrap()
    }

    #[test]
    fn api_version_follows_the_minor() {
        assert_eq!(kubeadm_api_version(34), "kubeadm.k8s.io/v1beta4");
        assert_eq!(kubeadm_api_version(30), "kubeadm.k8s.io/v1beta3");
        assert_eq!(minor_of("v1.34.12"), Some(34));
        assert_eq!(minor_of("nonsense"), None);
    }

    fn plan() -> (ClusterSpec, Vec<NodeSpec>) {
        let spec = ClusterSpec::default();
        let nodes = crate::provider::numbered_plan(&spec);
        (spec, nodes)
    }

    /// The init configuration of `spec`'s control plane in a node container.
    fn init_for(spec: &ClusterSpec, token_ttl: std::time::Duration) -> String {
        let nodes = crate::provider::numbered_plan(spec);
        init_config(spec, &ProviderInfo::node_containers(), &nodes[0], &token(), token_ttl)
    }

    fn documents(rendered: &str) -> Vec<serde_yaml::Value> {
        serde_yaml::Deserializer::from_str(rendered)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect()
    }

    #[test]
    fn init_config_matches_golden_file() {
        let rendered = init_for(&ClusterSpec::default(), std::time::Duration::from_secs(900));
        vigil_host::assert_golden(env!("CARGO_MANIFEST_DIR"), "kubeadm-init.yaml", &rendered);
    }

    #[test]
    fn failover_sets_heartbeat_grace_and_tolerations_together() {
        // (failover, grace, unreachable toleration, Lease seconds, status update)
        let cases = [
            (crate::cluster::Failover::Tuned, "8s", "5", 4, "2s"),
            (crate::cluster::Failover::Upstream, "50s", "300", 40, "10s"),
        ];
        for (failover, grace, toleration, lease, update) in cases {
            let spec = ClusterSpec { failover, ..ClusterSpec::default() };
            let docs = documents(&init_for(&spec, std::time::Duration::from_secs(60)));
            let arg = |component: &str, name: &str| {
                docs[1][component]["extraArgs"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|a| a["name"] == name)
                    .map(|a| a["value"].as_str().unwrap().to_owned())
            };
            assert_eq!(arg("controllerManager", "node-monitor-grace-period").as_deref(), Some(grace));
            assert_eq!(
                arg("apiServer", "default-unreachable-toleration-seconds").as_deref(),
                Some(toleration)
            );
            assert_eq!(docs[2]["nodeLeaseDurationSeconds"], lease);
            assert_eq!(docs[2]["nodeStatusUpdateFrequency"], update);
            // Explicit, so that the update frequency does not set it too.
            assert_eq!(docs[2]["nodeStatusReportFrequency"], "5m");
        }
    }

    fn init_documents() -> Vec<serde_yaml::Value> {
        documents(&init_for(&ClusterSpec::default(), std::time::Duration::from_secs(60)))
    }

    #[test]
    fn disk_pressure_evicts_at_absolute_amounts_and_image_gc_stays_off() {
        let docs = init_documents();
        let kubelet = &docs[2];
        assert_eq!(kubelet["kind"], "KubeletConfiguration");
        let eviction = kubelet["evictionHard"].as_mapping().unwrap();
        for signal in ["nodefs.available", "imagefs.available", "nodefs.inodesFree", "imagefs.inodesFree"] {
            let value = eviction[signal].as_str().unwrap_or_else(|| panic!("no threshold for {signal}"));
            assert!(value != "0%" && value != "0", "{signal} is off: {value}");
        }
        // Space in bytes, not a share of a host disk of any size.
        for signal in ["nodefs.available", "imagefs.available"] {
            assert!(!eviction[signal].as_str().unwrap().ends_with('%'), "{signal}");
        }
        assert_eq!(kubelet["imageGCHighThresholdPercent"], 100);
    }

    #[test]
    fn controller_manager_and_scheduler_serve_on_loopback_only() {
        let docs = init_documents();
        for component in ["controllerManager", "scheduler"] {
            let bind = docs[1][component]["extraArgs"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|a| a["name"] == "bind-address")
                .map(|a| a["value"].as_str().unwrap().to_owned());
            assert_eq!(bind.as_deref(), Some("127.0.0.1"), "{component}");
        }
    }

    #[test]
    fn the_patches_change_only_probe_timings() {
        let patches: std::collections::BTreeMap<String, serde_json::Value> =
            patches().into_iter().map(|(name, text)| (name, serde_json::from_str(&text).unwrap())).collect();
        let coredns = &patches["corednsdeployment+strategic.json"]["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            coredns,
            &serde_json::json!([{"name": "coredns", "readinessProbe": {"periodSeconds": 1}}])
        );
        let scheduler = &patches["kube-scheduler+strategic.json"]["spec"]["containers"];
        assert_eq!(
            scheduler,
            &serde_json::json!([{"name": "kube-scheduler", "startupProbe": {"initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 240}}])
        );
        assert_eq!(patches.len(), 5, "{:?}", patches.keys());
    }

    #[test]
    fn join_config_matches_golden_file() {
        let (spec, nodes) = plan();
        let hash = "sha256:0d8e0f1f4a1b5e6f2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293";
        let rendered =
            join_config(&spec, &ProviderInfo::node_containers(), &nodes[0], &nodes[1], &token(), hash);
        vigil_host::assert_golden(env!("CARGO_MANIFEST_DIR"), "kubeadm-join.yaml", &rendered);
    }

    #[test]
    fn every_document_is_typed() {
        let kinds: Vec<String> = init_documents()
            .iter()
            .map(|v| {
                assert!(v["apiVersion"].as_str().is_some());
                v["kind"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            ["InitConfiguration", "ClusterConfiguration", "KubeletConfiguration", "KubeProxyConfiguration"]
        );
    }

    use serde::Deserialize;
}
