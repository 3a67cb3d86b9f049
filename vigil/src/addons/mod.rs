//! Cluster add-ons vigil installs, as typed Kubernetes objects, and the
//! server-side apply that installs them.

pub mod flannel;
pub mod local_path;
pub mod metallb;
pub mod node_exporter;
pub mod prometheus;
pub mod upstream;
pub mod web;

use k8s_openapi::{NamespaceResourceScope, Resource};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    discovery::Scope,
};
use serde::{Serialize, de::DeserializeOwned};

/// A rule over core-group resources.
pub fn core_rule(resources: &[&str], verbs: &[&str]) -> k8s_openapi::api::rbac::v1::PolicyRule {
    k8s_openapi::api::rbac::v1::PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(resources.iter().map(|s| (*s).into()).collect()),
        verbs: verbs.iter().map(|s| (*s).into()).collect(),
        ..Default::default()
    }
}

/// A component's identity: its ServiceAccount (`account`, namespaced) and a
/// ClusterRole of exactly `rules` (`role`), bound to it under the role's name.
pub fn cluster_identity(
    account: kube::api::ObjectMeta,
    role: kube::api::ObjectMeta,
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
) -> [Object; 3] {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
    let binding = ClusterRoleBinding {
        metadata: role.clone(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.name.clone().unwrap_or_default(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.name.clone().unwrap_or_default(),
            namespace: account.namespace.clone(),
            ..Default::default()
        }]),
    };
    [
        Object::ServiceAccount(k8s_openapi::api::core::v1::ServiceAccount {
            metadata: account,
            ..Default::default()
        }),
        Object::ClusterRole(ClusterRole { metadata: role, rules: Some(rules), ..Default::default() }),
        Object::ClusterRoleBinding(binding),
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

/// Resource quantities, for requests and limits.
pub fn quantity(
    pairs: &[(&str, &str)],
) -> Option<std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>> {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect())
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

/// The field manager vigil's applies are recorded under.
pub const FIELD_MANAGER: &str = "vigil";

/// An object vigil can apply: typed, named, namespaced or not.
pub enum Object {
    Namespace(k8s_openapi::api::core::v1::Namespace),
    ServiceAccount(k8s_openapi::api::core::v1::ServiceAccount),
    ClusterRole(k8s_openapi::api::rbac::v1::ClusterRole),
    ClusterRoleBinding(k8s_openapi::api::rbac::v1::ClusterRoleBinding),
    ConfigMap(k8s_openapi::api::core::v1::ConfigMap),
    DaemonSet(k8s_openapi::api::apps::v1::DaemonSet),
    Deployment(k8s_openapi::api::apps::v1::Deployment),
    Service(k8s_openapi::api::core::v1::Service),
    PersistentVolumeClaim(k8s_openapi::api::core::v1::PersistentVolumeClaim),
    /// Upstream manifests and custom resources, applied through discovery.
    Dynamic(DynamicObject),
}

async fn apply_namespaced<K>(client: &Client, obj: &K) -> kube::Result<()>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Resource
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let meta = obj.meta();
    let api: Api<K> = Api::namespaced(client.clone(), meta.namespace.as_deref().unwrap_or("default"));
    api.patch(
        meta.name.as_deref().unwrap_or_default(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
}

async fn apply_cluster<K>(client: &Client, obj: &K) -> kube::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    api.patch(
        obj.meta().name.as_deref().unwrap_or_default(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
}

/// Applies an object whose type is known only at runtime (CRDs, custom
/// resources, upstream manifests), finding its resource through discovery.
async fn apply_dynamic(client: &Client, obj: &DynamicObject) -> kube::Result<()> {
    let gvk = upstream::gvk(obj).ok_or_else(|| {
        kube::Error::Discovery(kube::error::DiscoveryError::MissingResource(format!(
            "object {:?} has no apiVersion/kind",
            obj.metadata.name
        )))
    })?;
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            obj.metadata.namespace.as_deref().unwrap_or("default"),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        obj.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
}

impl Object {
    pub fn describe(&self) -> String {
        let (kind, meta) = match self {
            Object::Namespace(o) => ("Namespace", &o.metadata),
            Object::ServiceAccount(o) => ("ServiceAccount", &o.metadata),
            Object::ClusterRole(o) => ("ClusterRole", &o.metadata),
            Object::ClusterRoleBinding(o) => ("ClusterRoleBinding", &o.metadata),
            Object::ConfigMap(o) => ("ConfigMap", &o.metadata),
            Object::DaemonSet(o) => ("DaemonSet", &o.metadata),
            Object::Deployment(o) => ("Deployment", &o.metadata),
            Object::Service(o) => ("Service", &o.metadata),
            Object::PersistentVolumeClaim(o) => ("PersistentVolumeClaim", &o.metadata),
            Object::Dynamic(o) => (o.types.as_ref().map_or("object", |t| t.kind.as_str()), &o.metadata),
        };
        match &meta.namespace {
            Some(ns) => format!("{kind} {ns}/{}", meta.name.as_deref().unwrap_or_default()),
            None => format!("{kind} {}", meta.name.as_deref().unwrap_or_default()),
        }
    }

    /// Server-side apply, forced: vigil owns these objects' fields.
    pub async fn apply(&self, client: &Client) -> kube::Result<()> {
        match self {
            Object::Namespace(o) => apply_cluster(client, o).await,
            Object::ClusterRole(o) => apply_cluster(client, o).await,
            Object::ClusterRoleBinding(o) => apply_cluster(client, o).await,
            Object::ServiceAccount(o) => apply_namespaced(client, o).await,
            Object::ConfigMap(o) => apply_namespaced(client, o).await,
            Object::DaemonSet(o) => apply_namespaced(client, o).await,
            Object::Deployment(o) => apply_namespaced(client, o).await,
            Object::Service(o) => apply_namespaced(client, o).await,
            Object::PersistentVolumeClaim(o) => apply_namespaced(client, o).await,
            Object::Dynamic(o) => apply_dynamic(client, o).await,
        }
    }

    /// The object as a YAML document, as `kubectl apply -f` would take it.
    pub fn to_yaml(&self) -> String {
        match self {
            Object::Namespace(o) => serde_yaml::to_string(o),
            Object::ServiceAccount(o) => serde_yaml::to_string(o),
            Object::ClusterRole(o) => serde_yaml::to_string(o),
            Object::ClusterRoleBinding(o) => serde_yaml::to_string(o),
            Object::ConfigMap(o) => serde_yaml::to_string(o),
            Object::DaemonSet(o) => serde_yaml::to_string(o),
            Object::Deployment(o) => serde_yaml::to_string(o),
            Object::Service(o) => serde_yaml::to_string(o),
            Object::PersistentVolumeClaim(o) => serde_yaml::to_string(o),
            Object::Dynamic(o) => serde_yaml::to_string(o),
        }
        .expect("Kubernetes objects serialize")
    }
}
