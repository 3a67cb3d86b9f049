//! What `vigil up` installs on the cluster, as typed Kubernetes objects:
//! the pod network (flannel, part of the cluster itself) and the add-ons of
//! [`ADDONS`], the one table that says, for each, which of the workspace's
//! crates it runs, what it needs, when it is up and where it is reached.
//! Adding a deployable is its crate, its file here and one entry there.
#![forbid(unsafe_code)]

pub mod alerter;
pub mod alertmanager;
pub mod auth_proxy;
pub mod credentials;
pub mod flannel;
pub mod jaeger;
pub mod kube_state_metrics;
pub mod local_path;
pub mod metallb;
pub mod node_exporter;
pub mod pod_security;
pub mod prometheus;
pub mod upstream;
pub mod victorialogs;
pub mod vlagent;
pub mod web;

/// Server-side apply, with one discovery per cluster.
pub mod apply;
/// The kustomize layout under `manifests/`, generated from the typed objects.
pub mod manifests;
/// Prometheus rules and Grafana dashboards, generated (`dashboards/`).
pub mod monitoring;
/// The add-ons' pods as their objects describe them (what the end-to-end checks expect).
pub mod workloads;

use std::{collections::BTreeMap, time::Duration};

pub use crate::apply::Object;
use vigil_model::cluster::ClusterSpec;
use vigil_model::images::ImageNames;

/// What an add-on's objects are made from.
pub struct Input<'a> {
    pub spec: &'a ClusterSpec,
    /// The image of each workspace crate: content-keyed tags for `up`,
    /// version tags for the committed manifests.
    pub images: &'a BTreeMap<&'static str, String>,
    /// Where the control plane's API server listens, for host-network pods
    /// that must reach it before kube-proxy serves the `kubernetes`
    /// Service; none for the committed manifests (any cluster).
    pub api_server: Option<(std::net::Ipv4Addr, u16)>,
}

impl Input<'_> {
    /// The image built from workspace crate `name`.
    pub fn image(&self, name: &str) -> String {
        self.images
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no image for crate {name}: list it in its add-on's `crates`"))
    }

    pub fn names(&self) -> ImageNames {
        ImageNames { repository: self.spec.image_repository.clone() }
    }
}

/// Something an add-on is not up without.
pub enum Rollout {
    Deployment {
        namespace: &'static str,
        name: &'static str,
        replicas: i32,
    },
    DaemonSet {
        namespace: &'static str,
        name: &'static str,
    },
    /// A PersistentVolumeClaim bound to a volume.
    Claim {
        namespace: &'static str,
        name: &'static str,
    },
}

/// How an add-on is reached from the host: a Service on a pinned
/// LoadBalancer address, its URL, and what proves it answers.
pub struct Address {
    /// Its key in `vigil status --json`'s `addresses` and `up --json`.
    pub key: &'static str,
    pub namespace: &'static str,
    pub service: &'static str,
    /// The URL for a LoadBalancer address.
    pub url: fn(&str) -> String,
    /// What the host asks, given the URL: a path and what the answer must hold.
    pub check: Check,
    /// What `up` prints next to the URL.
    pub hint: &'static str,
    /// Its place in the LoadBalancer pool ([`ClusterSpec::load_balancer_ip`]),
    /// where MetalLB pins its Service: each add-on's own, which a test checks.
    pub load_balancer_index: u32,
}

impl Address {
    /// The URL `vigil up` prints for it in `spec`'s cluster.
    pub fn url_in(&self, spec: &ClusterSpec) -> String {
        (self.url)(&spec.load_balancer_ip(self.load_balancer_index).to_string())
    }
}

/// A check from the host, the way a user would try it.
pub enum Check {
    /// `GET url`: the body starts with this.
    BodyStartsWith(&'static str),
    /// `GET url + path` behind the authenticating proxy: 401 without
    /// credentials, any 2xx with vigil's.
    Gated(&'static str),
}

/// How an add-on appears under `manifests/`.
pub enum Manifests {
    /// Its objects go to `<dir>/<dir>.yaml` (with those of other add-ons of
    /// the same dir, in table order) under a plain kustomization.
    Generated { dir: &'static str },
    /// An upstream manifest vendored under `<dir>/`: the add-on writes its
    /// own files (kustomization with image overrides, patches).
    Vendored { dir: &'static str, files: fn(&str, &ClusterSpec) -> Vec<(String, String)> },
}

impl Manifests {
    pub fn dir(&self) -> &'static str {
        match self {
            Manifests::Generated { dir } | Manifests::Vendored { dir, .. } => dir,
        }
    }
}

/// An image built here from one binary of an upstream Go module (the
/// build compiles the binary and makes the image; the add-on's objects
/// name it).
pub struct UpstreamImage {
    /// Its name in the image repository, and in `vigil images`.
    pub name: &'static str,
    /// The upstream release, its tag.
    pub version: &'static str,
    /// The image upstream's vendored manifest names, which this one replaces.
    pub replaces: Option<&'static str>,
    pub from: ImageFrom,
    /// The binary the build compiles for it.
    pub binary: &'static str,
    /// Where the image holds the binary.
    pub path: &'static str,
    pub run: ImageRun,
    /// Other binaries it carries (name, path): tools of the same release.
    pub extra: &'static [(&'static str, &'static str)],
}

impl UpstreamImage {
    /// Its reference in `repository`.
    pub fn reference(&self, repository: &str) -> String {
        ImageNames::new(repository).upstream(self.name, self.version)
    }

    /// For each of `images` that replaces an upstream one: the mapping that
    /// rewrites upstream's objects to name the image built here.
    pub fn mappings(images: &[UpstreamImage], repository: &str) -> Vec<upstream::ImageMapping<'static>> {
        images
            .iter()
            .filter_map(|image| {
                Some(upstream::ImageMapping { upstream: image.replaces?, built: image.reference(repository) })
            })
            .collect()
    }

    /// The same as kustomize's `images:` entries, for the committed manifests.
    pub fn overrides(images: &[UpstreamImage], repository: &str) -> Vec<manifests::ImageOverride> {
        images
            .iter()
            .filter_map(|image| {
                Some(manifests::ImageOverride {
                    name: image.replaces?.into(),
                    new_name: format!("{repository}/{}", image.name),
                    new_tag: image.version.into(),
                })
            })
            .collect()
    }
}

/// What a one-binary image is made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFrom {
    /// Nothing: the binary alone.
    Scratch,
    /// The pod base (Debian with its CA certificates): for a binary that
    /// calls out over TLS to an address the user names.
    PodBase,
}

/// How a one-binary image runs its binary (as upstream's image does).
#[derive(Debug, Clone, Copy)]
pub enum ImageRun {
    Entrypoint,
    /// Found on this PATH (upstream's manifest names the command).
    ByName(&'static str),
    /// As this user, as the entrypoint.
    AsUser(&'static str),
}

/// One add-on `vigil up` installs after `kubeadm init`.
pub struct Addon {
    /// Its name: the steps `install <name>` and `<name> ready`.
    pub name: &'static str,
    /// What `up`'s progress line says it is.
    pub title: &'static str,
    /// The workspace crates built into images it runs (loaded into every node first).
    pub crates: &'static [&'static str],
    /// The upstream images it runs, built here (preloaded in the node image).
    pub images: &'static [UpstreamImage],
    /// Add-ons that must be ready before this one can be (MetalLB for a LoadBalancer address).
    pub needs: &'static [&'static str],
    /// Add-ons that must be ready before this one is even installed.
    pub installed_after: &'static [&'static str],
    /// A namespace it creates, applied before its objects.
    pub namespace: Option<fn() -> Object>,
    /// Secrets it generates: created when missing, never replaced, never
    /// written under `manifests/`.
    pub secrets: Option<fn(&Input) -> Vec<k8s_openapi::api::core::v1::Secret>>,
    pub objects: fn(&Input) -> Result<Vec<Object>, upstream::Error>,
    /// Objects applied once it has rolled out, retried until the API takes
    /// them (custom resources its own admission webhook validates).
    pub after_rollout: Option<fn(&ClusterSpec) -> Vec<Object>>,
    pub rollout: &'static [Rollout],
    pub address: Option<Address>,
    pub manifests: Manifests,
    /// How long its rollout may take.
    pub timeout: Duration,
}

const ROLLOUT: Duration = Duration::from_secs(180);

/// Every add-on, in the order `manifests/` lists them.
pub static ADDONS: &[Addon] = &[
    metallb::ADDON,
    web::ADDON,
    local_path::ADDON,
    jaeger::ADDON,
    victorialogs::ADDON,
    vlagent::ADDON,
    node_exporter::ADDON,
    kube_state_metrics::ADDON,
    prometheus::ADDON,
    alertmanager::ADDON,
    alerter::ADDON,
];

/// The upstream images of every add-on, in table order.
pub fn upstream_images() -> impl Iterator<Item = &'static UpstreamImage> {
    ADDONS.iter().flat_map(|a| a.images)
}

/// The workspace crates that are built into images, in table order.
pub fn crates() -> Vec<&'static str> {
    let mut crates: Vec<&'static str> = vec![];
    for name in ADDONS.iter().flat_map(|a| a.crates) {
        if !crates.contains(name) {
            crates.push(name);
        }
    }
    crates
}

/// The add-on named `name`.
pub fn addon(name: &str) -> Option<&'static Addon> {
    ADDONS.iter().find(|a| a.name == name)
}

/// A rule over core-group resources.
pub fn core_rule(resources: &[&str], verbs: &[&str]) -> k8s_openapi::api::rbac::v1::PolicyRule {
    rule("", resources, verbs, &[])
}

/// A rule over `resources` of `api_group`, narrowed to `names` when given.
pub fn rule(
    api_group: &str,
    resources: &[&str],
    verbs: &[&str],
    names: &[&str],
) -> k8s_openapi::api::rbac::v1::PolicyRule {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    k8s_openapi::api::rbac::v1::PolicyRule {
        api_groups: Some(vec![api_group.into()]),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        resource_names: (!names.is_empty()).then(|| strings(names)),
        ..Default::default()
    }
}

/// What a binding of the role `role` (a `kind`) to the ServiceAccount `account` says.
fn binding_of(
    kind: &str,
    role: &kube::api::ObjectMeta,
    account: &kube::api::ObjectMeta,
) -> (k8s_openapi::api::rbac::v1::RoleRef, Option<Vec<k8s_openapi::api::rbac::v1::Subject>>) {
    use k8s_openapi::api::rbac::v1::{RoleRef, Subject};
    let role_ref = RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: role.name.clone().unwrap_or_default(),
    };
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: account.name.clone().unwrap_or_default(),
        namespace: account.namespace.clone(),
        ..Default::default()
    };
    (role_ref, Some(vec![subject]))
}

/// A Role of exactly `rules` in `role`'s namespace, bound to the
/// ServiceAccount `account` under the role's name.
pub fn namespaced_identity(
    account: &kube::api::ObjectMeta,
    role: kube::api::ObjectMeta,
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
) -> [Object; 2] {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let (role_ref, subjects) = binding_of("Role", &role, account);
    let binding = RoleBinding { metadata: role.clone(), role_ref, subjects };
    [Object::typed(Role { metadata: role, rules: Some(rules) }), Object::typed(binding)]
}

/// A component's identity: its ServiceAccount (`account`, namespaced) and a
/// ClusterRole of exactly `rules` (`role`), bound to it under the role's name.
pub fn cluster_identity(
    account: kube::api::ObjectMeta,
    role: kube::api::ObjectMeta,
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
) -> [Object; 3] {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let (role_ref, subjects) = binding_of("ClusterRole", &role, &account);
    let binding = ClusterRoleBinding { metadata: role.clone(), role_ref, subjects };
    [
        Object::typed(k8s_openapi::api::core::v1::ServiceAccount { metadata: account, ..Default::default() }),
        Object::typed(ClusterRole { metadata: role, rules: Some(rules), ..Default::default() }),
        Object::typed(binding),
    ]
}

/// A probe that GETs `path` on `port`; callers set its timing.
pub fn http_get_probe(port: u16, path: &str) -> k8s_openapi::api::core::v1::Probe {
    use k8s_openapi::{
        api::core::v1::{HTTPGetAction, Probe},
        apimachinery::pkg::util::intstr::IntOrString,
    };
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The label and taint kubeadm gives the control plane.
const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";

/// The node selector and toleration that put a pod on the control plane,
/// which `vigil drill` never breaks: for what records an incident (traces,
/// logs) and would lose it with the node it watched die.
pub fn on_control_plane() -> (BTreeMap<String, String>, Vec<k8s_openapi::api::core::v1::Toleration>) {
    let toleration = k8s_openapi::api::core::v1::Toleration {
        key: Some(CONTROL_PLANE.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    };
    (BTreeMap::from([(CONTROL_PLANE.into(), String::new())]), vec![toleration])
}

/// Resource quantities, for requests and limits.
pub fn quantity(
    pairs: &[(&str, &str)],
) -> Option<std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>> {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect())
}

/// A container's requests and limits.
pub fn resources(
    requests: &[(&str, &str)],
    limits: &[(&str, &str)],
) -> k8s_openapi::api::core::v1::ResourceRequirements {
    k8s_openapi::api::core::v1::ResourceRequirements {
        requests: quantity(requests),
        limits: quantity(limits),
        ..Default::default()
    }
}

/// Non-root, read-only root filesystem, no capabilities, no privilege escalation.
pub fn locked_down() -> k8s_openapi::api::core::v1::SecurityContext {
    use k8s_openapi::api::core::v1::{Capabilities, SecurityContext};
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        ..Default::default()
    }
}

/// A pod that runs as `uid` (group too) under the runtime's default seccomp
/// profile; `fs_group` owns its volumes when set.
pub fn non_root_pod(uid: i64, fs_group: Option<i64>) -> k8s_openapi::api::core::v1::PodSecurityContext {
    use k8s_openapi::api::core::v1::{PodSecurityContext, SeccompProfile};
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group,
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// Pod template annotations that change when `configs` (the ConfigMaps its
/// pods read) change, so applying a new configuration rolls the pods: a
/// process that reads its files once at start (Prometheus, Alertmanager)
/// would otherwise keep the old one.
pub fn config_checksum(configs: &[&k8s_openapi::api::core::v1::ConfigMap]) -> BTreeMap<String, String> {
    config_and_secret_checksum(configs, &[])
}

/// [`config_checksum`] over ConfigMaps and Secrets the pods read at start:
/// a SHA-256 (cut short), so the annotation shows nothing of a Secret.
pub fn config_and_secret_checksum(
    configs: &[&k8s_openapi::api::core::v1::ConfigMap],
    secrets: &[&k8s_openapi::api::core::v1::Secret],
) -> BTreeMap<String, String> {
    let key = configs.iter().fold(vigil_model::key::KeyBuilder::new("config"), |key, config| {
        config.data.iter().flatten().fold(key, |key, (name, text)| key.part(name).part(text))
    });
    let key = secrets.iter().fold(key, |key, secret| {
        let data = secret.data.iter().flatten().map(|(name, value)| (name.as_str(), value.0.as_slice()));
        let text = secret.string_data.iter().flatten().map(|(name, value)| (name.as_str(), value.as_bytes()));
        data.chain(text).fold(key, |key, (name, bytes)| key.part(name).part(bytes))
    });
    BTreeMap::from([(
        "vigil.local/config-checksum".to_owned(),
        vigil_model::key::short(&key.finish()).to_owned(),
    )])
}

/// Annotates `deployment`'s pod template with [`config_checksum`] of `configs`.
pub fn roll_on_change(
    deployment: &mut k8s_openapi::api::apps::v1::Deployment,
    configs: &[&k8s_openapi::api::core::v1::ConfigMap],
) {
    if let Some(template) = deployment.spec.as_mut().and_then(|s| s.template.metadata.as_mut()) {
        template.annotations = Some(config_checksum(configs));
    }
}

/// A ConfigMap as the volume `name`, and its mount at `mount_path`, read-only.
pub fn config_volume(
    name: &str,
    source: &str,
    mount_path: &str,
) -> (k8s_openapi::api::core::v1::Volume, k8s_openapi::api::core::v1::VolumeMount) {
    use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, Volume, VolumeMount};
    let volume = Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource { name: source.into(), ..Default::default() }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: name.into(),
        mount_path: mount_path.into(),
        read_only: Some(true),
        ..Default::default()
    };
    (volume, mount)
}

/// client-go's in-cluster configuration, pointed at the API server itself
/// rather than the `kubernetes` Service (which the kubelet would put there),
/// for host-network pods that start before kube-proxy serves that Service.
pub fn api_server_env(api_server: (std::net::Ipv4Addr, u16)) -> [k8s_openapi::api::core::v1::EnvVar; 2] {
    use k8s_openapi::api::core::v1::EnvVar;
    let var =
        |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), ..Default::default() };
    [
        var("KUBERNETES_SERVICE_HOST", api_server.0.to_string()),
        var("KUBERNETES_SERVICE_PORT", api_server.1.to_string()),
    ]
}

/// An environment variable from the pod's own fields (downward API).
pub fn field_env(name: &str, path: &str) -> k8s_openapi::api::core::v1::EnvVar {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn every_load_balancer_address_is_its_own_and_in_the_pool() {
        let indices: Vec<(u32, &str)> =
            ADDONS.iter().filter_map(|a| Some((a.address.as_ref()?.load_balancer_index, a.name))).collect();
        assert!(indices.len() >= 4, "{indices:?}");
        let mut sorted = indices.clone();
        sorted.sort();
        sorted.dedup_by_key(|(i, _)| *i);
        assert_eq!(sorted.len(), indices.len(), "two add-ons share a LoadBalancer address: {indices:?}");
        let spec = ClusterSpec::default();
        let (_, last) = spec.load_balancer_range();
        for (index, name) in &indices {
            assert!(spec.load_balancer_ip(*index) <= last, "{name}'s address {index} is past the pool");
            assert!(
                *index < vigil_model::cluster::PINNED_LOAD_BALANCER_ADDRESSES,
                "{name}'s address {index}: a pool named apart is only checked to hold PINNED_LOAD_BALANCER_ADDRESSES"
            );
        }
    }
}
