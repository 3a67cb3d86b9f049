//! local-path-provisioner v0.0.30: upstream's `local-path-storage.yaml`
//! (vendored unmodified in `manifests/local-path/`) with the provisioner's
//! image built here, its helper pod on the pod base image (it needs only a
//! shell, mkdir and rm), and volumes under the node's `/var`, which is the
//! node container's volume and so survives the node being stopped.

use kube::api::DynamicObject;

use super::{Addon, ImageFrom, ImageRun, Manifests, ROLLOUT, Rollout, UpstreamImage, pod_security, upstream};
use vigil_model::images::ImageNames;

use crate::{
    apply::Object,
    manifests::{Patch, documents, kustomization},
};
use vigil_model::cluster::ClusterSpec;
use vigil_model::versions;

pub const NAME: &str = "local-path";
pub const NAMESPACE: &str = "local-path-storage";
pub const STORAGE_CLASS: &str = "local-path";
pub const MANIFEST: &str = include_str!("../../../manifests/local-path/local-path-storage.yaml");
const MANIFEST_NAME: &str = "local-path-storage.yaml";
/// Where volumes live on each node.
pub const DATA_DIR: &str = "/var/local-path-provisioner";

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "local-path-provisioner: PersistentVolumes in each node's /var",
    crates: &[],
    images: &[IMAGE],
    needs: &[],
    installed_after: &[],
    namespace: None,
    secrets: None,
    objects: |input| {
        Ok(objects(&input.spec.image_repository, &input.names().base())?
            .into_iter()
            .map(Object::dynamic)
            .collect())
    },
    after_rollout: None,
    rollout: &[Rollout::Deployment { namespace: NAMESPACE, name: "local-path-provisioner", replicas: 1 }],
    address: None,
    manifests: Manifests::Vendored { dir: NAME, files: manifest_files },
    timeout: ROLLOUT,
};

/// Why the namespace enforces only `privileged`.
const POD_SECURITY_REASON: &str = "the provisioner's helper pods mount each node's volume directory (a hostPath, which baseline forbids too), and upstream's provisioner sets no security context";

/// `local-path/`: upstream's manifest with kustomize's image override, and
/// as patches the ConfigMap as vigil changes it (helper image, data path)
/// and the namespace's Pod Security labels.
fn manifest_files(repository: &str, _: &ClusterSpec) -> Vec<(String, String)> {
    let helper = ImageNames { repository: repository.into() }.base();
    let changed = objects(repository, &helper).expect("the vendored manifest parses");
    let of_kind = |kind: &str| -> Vec<Object> {
        changed
            .iter()
            .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
            .cloned()
            .map(Object::dynamic)
            .collect()
    };
    let config = of_kind("ConfigMap");
    let namespace = of_kind("Namespace");
    vec![
        (
            "local-path/kustomization.yaml".into(),
            kustomization(
                &[MANIFEST_NAME],
                UpstreamImage::overrides(&[IMAGE], repository),
                vec![Patch { path: "config.yaml" }, Patch { path: "namespace.yaml" }],
            ),
        ),
        ("local-path/config.yaml".into(), documents(&config)),
        ("local-path/namespace.yaml".into(), documents(&namespace)),
    ]
}

/// Upstream's Deployment runs `local-path-provisioner` by name.
pub const IMAGE: UpstreamImage = UpstreamImage {
    name: "local-path-provisioner",
    version: versions::LOCAL_PATH,
    replaces: Some("rancher/local-path-provisioner"),
    from: ImageFrom::Scratch,
    binary: "local-path-provisioner",
    path: "/usr/bin/local-path-provisioner",
    run: ImageRun::ByName("/usr/bin"),
    extra: &[],
};

pub fn image(repository: &str) -> String {
    IMAGE.reference(repository)
}

fn error(message: String) -> upstream::Error {
    upstream::Error { manifest: MANIFEST_NAME, message }
}

/// The helper pod spec (a YAML document inside the ConfigMap), typed.
fn helper_pod(yaml: &str, helper_image: &str) -> Result<String, upstream::Error> {
    let mut pod: k8s_openapi::api::core::v1::Pod =
        serde_yaml::from_str(yaml).map_err(|e| error(e.to_string()))?;
    let spec = pod.spec.as_mut().ok_or_else(|| error("helperPod.yaml has no spec".into()))?;
    for container in &mut spec.containers {
        container.image = Some(helper_image.into());
        container.image_pull_policy = Some("IfNotPresent".into());
    }
    serde_yaml::to_string(&pod).map_err(|e| error(e.to_string()))
}

/// The provisioner's config (JSON inside the ConfigMap): every node's path.
fn config(json: &str) -> Result<String, upstream::Error> {
    let mut config: serde_json::Value = serde_json::from_str(json).map_err(|e| error(e.to_string()))?;
    let map =
        config["nodePathMap"].as_array_mut().ok_or_else(|| error("config.json has no nodePathMap".into()))?;
    for node in map {
        node["paths"] = serde_json::json!([DATA_DIR]);
    }
    serde_json::to_string_pretty(&config).map_err(|e| error(e.to_string()))
}

pub fn objects(repository: &str, helper_image: &str) -> Result<Vec<DynamicObject>, upstream::Error> {
    let images = UpstreamImage::mappings(&[IMAGE], repository);
    let mut objects = upstream::parse(MANIFEST_NAME, MANIFEST, &images)?;
    for object in &mut objects {
        if object.types.as_ref().is_some_and(|t| t.kind == "Namespace") {
            let meta = &mut object.metadata;
            meta.labels.get_or_insert_default().extend(pod_security::labels(pod_security::Level::Privileged));
            meta.annotations.get_or_insert_default().extend(pod_security::reason(POD_SECURITY_REASON));
            continue;
        }
        let is_config = object.types.as_ref().is_some_and(|t| t.kind == "ConfigMap")
            && object.metadata.name.as_deref() == Some("local-path-config");
        if !is_config {
            continue;
        }
        let data = &mut object.data["data"];
        let helper =
            data["helperPod.yaml"].as_str().ok_or_else(|| error("no helperPod.yaml".into()))?.to_owned();
        data["helperPod.yaml"] = serde_json::Value::String(helper_pod(&helper, helper_image)?);
        let json = data["config.json"].as_str().ok_or_else(|| error("no config.json".into()))?.to_owned();
        data["config.json"] = serde_json::Value::String(config(&json)?);
    }
    Ok(objects)
}

/// A ReadWriteOnce claim of `size` on a local-path volume (bound on the
/// node its pod lands on), and the pod volume `name` that mounts it.
pub fn claim(
    metadata: kube::api::ObjectMeta,
    size: &str,
    name: &str,
) -> (k8s_openapi::api::core::v1::PersistentVolumeClaim, k8s_openapi::api::core::v1::Volume) {
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Volume,
        VolumeResourceRequirements,
    };
    let volume = Volume {
        name: name.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: metadata.name.clone().unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let claim = PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(STORAGE_CLASS.into()),
            resources: Some(VolumeResourceRequirements {
                requests: super::quantity(&[("storage", size)]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    (claim, volume)
}

/// One writer for a volume: the old pod goes before the new one starts.
pub fn one_writer(deployment: &mut k8s_openapi::api::apps::v1::Deployment) {
    use k8s_openapi::api::apps::v1::DeploymentStrategy;
    if let Some(spec) = deployment.spec.as_mut() {
        spec.strategy = Some(DeploymentStrategy { type_: Some("Recreate".into()), ..Default::default() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_paths_and_helper_are_ours() {
        let objects = objects("vigil.local", "vigil.local/base:bookworm").unwrap();
        let text = serde_json::to_string(&objects).unwrap();
        assert!(text.contains("vigil.local/local-path-provisioner:v0.0.30"));
        assert!(!text.contains("rancher/local-path-provisioner:"));
        assert!(!text.contains("busybox"), "the helper pod image is replaced");
        assert!(text.contains(DATA_DIR) && !text.contains("/opt/local-path-provisioner"));
        let kinds: Vec<_> = objects.iter().map(|o| o.types.as_ref().unwrap().kind.clone()).collect();
        assert!(kinds.contains(&"StorageClass".to_owned()) && kinds.contains(&"Deployment".to_owned()));
    }
}
