//! The one way vigil puts objects into a cluster: server-side apply, forced
//! (vigil owns these fields), in the order given. Typed objects know their
//! resource; upstream manifests and custom resources are resolved through
//! one aggregated discovery run per [`Applier`], run again only when a kind
//! is missing (a CRD applied a moment ago).

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    discovery::{Discovery, Scope},
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::RwLock;

/// The field manager vigil's applies are recorded under.
pub const FIELD_MANAGER: &str = "vigil";

/// An object that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused the object, or could not be reached.
    #[error("applying {object}")]
    Apply {
        object: String,
        #[source]
        source: kube::Error,
    },
    /// Discovery itself failed.
    #[error("discovering the API server's resources")]
    Discovery(#[source] kube::Error),
    /// The API server serves no such kind (yet: a CRD may not be established).
    #[error(
        "applying {object}: the API server serves no {api_version} {kind} (is its CustomResourceDefinition installed?)"
    )]
    UnknownKind { object: String, api_version: String, kind: String },
}

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
    Secret(k8s_openapi::api::core::v1::Secret),
    Role(k8s_openapi::api::rbac::v1::Role),
    RoleBinding(k8s_openapi::api::rbac::v1::RoleBinding),
    PodDisruptionBudget(k8s_openapi::api::policy::v1::PodDisruptionBudget),
    ResourceQuota(k8s_openapi::api::core::v1::ResourceQuota),
    PriorityClass(k8s_openapi::api::scheduling::v1::PriorityClass),
    CustomResourceDefinition(
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ),
    /// Upstream manifests and custom resources, resolved through discovery.
    Dynamic(DynamicObject),
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
            Object::Secret(o) => ("Secret", &o.metadata),
            Object::Role(o) => ("Role", &o.metadata),
            Object::RoleBinding(o) => ("RoleBinding", &o.metadata),
            Object::PodDisruptionBudget(o) => ("PodDisruptionBudget", &o.metadata),
            Object::ResourceQuota(o) => ("ResourceQuota", &o.metadata),
            Object::PriorityClass(o) => ("PriorityClass", &o.metadata),
            Object::CustomResourceDefinition(o) => ("CustomResourceDefinition", &o.metadata),
            Object::Dynamic(o) => (o.types.as_ref().map_or("object", |t| t.kind.as_str()), &o.metadata),
        };
        match &meta.namespace {
            Some(ns) => format!("{kind} {ns}/{}", meta.name.as_deref().unwrap_or_default()),
            None => format!("{kind} {}", meta.name.as_deref().unwrap_or_default()),
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
            Object::Secret(o) => serde_yaml::to_string(o),
            Object::Role(o) => serde_yaml::to_string(o),
            Object::RoleBinding(o) => serde_yaml::to_string(o),
            Object::PodDisruptionBudget(o) => serde_yaml::to_string(o),
            Object::ResourceQuota(o) => serde_yaml::to_string(o),
            Object::PriorityClass(o) => serde_yaml::to_string(o),
            Object::CustomResourceDefinition(o) => serde_yaml::to_string(o),
            Object::Dynamic(o) => serde_yaml::to_string(o),
        }
        .expect("Kubernetes objects serialize")
    }
}

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn apply_namespaced<K>(client: &Client, obj: &K) -> kube::Result<()>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let meta = obj.meta();
    let api: Api<K> = Api::namespaced(client.clone(), meta.namespace.as_deref().unwrap_or("default"));
    api.patch(meta.name.as_deref().unwrap_or_default(), &params(), &Patch::Apply(obj)).await.map(|_| ())
}

async fn apply_cluster<K>(client: &Client, obj: &K) -> kube::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    api.patch(obj.meta().name.as_deref().unwrap_or_default(), &params(), &Patch::Apply(obj)).await.map(|_| ())
}

type Resolved = (kube::discovery::ApiResource, kube::discovery::ApiCapabilities);

/// Applies objects to one cluster, sharing one discovery between them.
pub struct Applier {
    client: Client,
    discovery: RwLock<Option<Discovery>>,
}

impl Applier {
    pub fn new(client: Client) -> Self {
        Applier { client, discovery: RwLock::new(None) }
    }

    /// Creates each Secret of `secrets` that does not exist yet and leaves
    /// existing ones alone: generated secrets are made once per cluster.
    pub async fn create_missing(&self, secrets: &[k8s_openapi::api::core::v1::Secret]) -> Result<(), Error> {
        for secret in secrets {
            let object = Object::Secret(secret.clone());
            let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(
                self.client.clone(),
                secret.metadata.namespace.as_deref().unwrap_or("default"),
            );
            match api.create(&kube::api::PostParams::default(), secret).await {
                Ok(_) => tracing::debug!(object = %object.describe(), "created"),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(source) => return Err(Error::Apply { object: object.describe(), source }),
            }
        }
        Ok(())
    }

    /// Applies `objects` in order; the first failure stops it.
    pub async fn apply(&self, objects: &[Object]) -> Result<(), Error> {
        for object in objects {
            self.apply_one(object).await?;
        }
        Ok(())
    }

    async fn apply_one(&self, object: &Object) -> Result<(), Error> {
        tracing::debug!(object = %object.describe(), "apply");
        let client = &self.client;
        let applied = match object {
            Object::Namespace(o) => apply_cluster(client, o).await,
            Object::ClusterRole(o) => apply_cluster(client, o).await,
            Object::ClusterRoleBinding(o) => apply_cluster(client, o).await,
            Object::ServiceAccount(o) => apply_namespaced(client, o).await,
            Object::ConfigMap(o) => apply_namespaced(client, o).await,
            Object::DaemonSet(o) => apply_namespaced(client, o).await,
            Object::Deployment(o) => apply_namespaced(client, o).await,
            Object::Service(o) => apply_namespaced(client, o).await,
            Object::PersistentVolumeClaim(o) => apply_namespaced(client, o).await,
            Object::Secret(o) => apply_namespaced(client, o).await,
            Object::Role(o) => apply_namespaced(client, o).await,
            Object::RoleBinding(o) => apply_namespaced(client, o).await,
            Object::PodDisruptionBudget(o) => apply_namespaced(client, o).await,
            Object::ResourceQuota(o) => apply_namespaced(client, o).await,
            Object::PriorityClass(o) => apply_cluster(client, o).await,
            Object::CustomResourceDefinition(o) => apply_cluster(client, o).await,
            Object::Dynamic(o) => return self.apply_dynamic(object.describe(), o).await,
        };
        applied.map_err(|source| Error::Apply { object: object.describe(), source })
    }

    async fn apply_dynamic(&self, describe: String, obj: &DynamicObject) -> Result<(), Error> {
        let types = obj.types.clone().unwrap_or_default();
        let unknown = || Error::UnknownKind {
            object: describe.clone(),
            api_version: types.api_version.clone(),
            kind: types.kind.clone(),
        };
        let resolved = match self.resolve(obj, false).await? {
            (Some(found), _) => found,
            (None, true) => return Err(unknown()),
            (None, false) => self.resolve(obj, true).await?.0.ok_or_else(unknown)?,
        };
        let (resource, capabilities) = resolved;
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(
                self.client.clone(),
                obj.metadata.namespace.as_deref().unwrap_or("default"),
                &resource,
            ),
            Scope::Cluster => Api::all_with(self.client.clone(), &resource),
        };
        api.patch(obj.metadata.name.as_deref().unwrap_or_default(), &params(), &Patch::Apply(obj))
            .await
            .map(|_| ())
            .map_err(|source| Error::Apply { object: describe, source })
    }

    /// The object's resource, from the cached discovery; `refresh` runs
    /// discovery again first (as does the first call). Also says whether
    /// the answer comes from a discovery run just now.
    async fn resolve(&self, obj: &DynamicObject, refresh: bool) -> Result<(Option<Resolved>, bool), Error> {
        if !refresh && let Some(discovery) = self.discovery.read().await.as_ref() {
            return Ok((discovery.resolve_object(obj), false));
        }
        let mut cached = self.discovery.write().await;
        tracing::debug!("discovering the API server's resources");
        let discovery =
            Discovery::new(self.client.clone()).run_aggregated().await.map_err(Error::Discovery)?;
        let found = discovery.resolve_object(obj);
        *cached = Some(discovery);
        Ok((found, true))
    }
}
