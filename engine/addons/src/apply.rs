//! The one way vigil puts objects into a cluster: server-side apply, forced
//! (vigil owns these fields), in the order given. Typed objects know their
//! resource; upstream manifests and custom resources are resolved through
//! one aggregated discovery run per [`Applier`], run again only when a kind
//! is missing (a CRD applied a moment ago).

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    discovery::{self, Discovery},
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

/// Whether a typed kind lives in a namespace, from its k8s-openapi scope.
pub trait Scope {
    const NAMESPACED: bool;
}

impl Scope for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl Scope for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// An object vigil can apply: any typed Kubernetes object (its resource
/// known from its type, so a new kind needs no edit here), or an upstream
/// manifest's or a custom resource's object, resolved through discovery.
#[derive(Clone, Debug)]
pub struct Object {
    object: DynamicObject,
    /// The resource and whether it is namespaced, for typed objects.
    resource: Option<(ApiResource, bool)>,
}

impl Object {
    /// A typed object, kept as the JSON it serializes to.
    pub fn typed<K>(object: K) -> Self
    where
        K: kube::Resource<DynamicType = ()> + Serialize,
        K::Scope: Scope,
    {
        let value = serde_json::to_value(&object).expect("Kubernetes objects serialize");
        Object {
            object: serde_json::from_value(value).expect("a typed object is an object"),
            resource: Some((ApiResource::erase::<K>(&()), K::Scope::NAMESPACED)),
        }
    }

    /// An object whose kind the API server's discovery resolves.
    pub fn dynamic(object: DynamicObject) -> Self {
        Object { object, resource: None }
    }

    /// The object as `K`, if it is one (for tests and checks over an add-on's objects).
    pub fn to_typed<K>(&self) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let types = self.object.types.as_ref()?;
        (types.kind == K::kind(&()) && types.api_version == K::api_version(&()))
            .then(|| serde_json::to_value(&self.object).ok().and_then(|v| serde_json::from_value(v).ok()))?
    }

    /// The object as JSON, whatever its kind.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.object).expect("Kubernetes objects serialize")
    }

    pub fn kind(&self) -> &str {
        self.object.types.as_ref().map_or("object", |t| t.kind.as_str())
    }

    pub fn describe(&self) -> String {
        let meta = &self.object.metadata;
        match &meta.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind(), meta.name.as_deref().unwrap_or_default()),
            None => format!("{} {}", self.kind(), meta.name.as_deref().unwrap_or_default()),
        }
    }

    /// The object as a YAML document, as `kubectl apply -f` would take it.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.object).expect("Kubernetes objects serialize")
    }
}

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
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
            let object = Object::typed(secret.clone());
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
        let describe = object.describe();
        let obj = &object.object;
        let (resource, namespaced) = match &object.resource {
            Some(known) => known.clone(),
            None => {
                let types = obj.types.clone().unwrap_or_default();
                let unknown = || Error::UnknownKind {
                    object: describe.clone(),
                    api_version: types.api_version.clone(),
                    kind: types.kind.clone(),
                };
                let (resource, capabilities) = match self.resolve(obj, false).await? {
                    (Some(found), _) => found,
                    (None, true) => return Err(unknown()),
                    (None, false) => self.resolve(obj, true).await?.0.ok_or_else(unknown)?,
                };
                (resource, capabilities.scope == discovery::Scope::Namespaced)
            }
        };
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(
                self.client.clone(),
                obj.metadata.namespace.as_deref().unwrap_or("default"),
                &resource,
            )
        } else {
            Api::all_with(self.client.clone(), &resource)
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
