//! Upstream manifests vendored unmodified under `manifests/` (MetalLB,
//! local-path-provisioner), parsed into objects. The only change vigil makes
//! is the one kustomize's `images:` makes: each upstream image reference
//! becomes the image built here.

use kube::{api::DynamicObject, core::GroupVersionKind};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("the vendored manifest {manifest} does not parse: {message}")]
pub struct Error {
    pub manifest: &'static str,
    pub message: String,
}

/// An upstream image name (without tag) and the full reference built here.
pub struct ImageMapping<'a> {
    pub upstream: &'a str,
    pub built: String,
}

/// Every document of `text` as an object, in order, images rewritten.
pub fn parse(
    manifest: &'static str,
    text: &str,
    images: &[ImageMapping<'_>],
) -> Result<Vec<DynamicObject>, Error> {
    let err = |e: &dyn std::fmt::Display| Error { manifest, message: e.to_string() };
    let mut objects = vec![];
    for document in serde_yaml::Deserializer::from_str(text) {
        let mut value = serde_json::Value::deserialize(document).map_err(|e| err(&e))?;
        if value.is_null() {
            continue;
        }
        rewrite_images(&mut value, images);
        objects.push(serde_json::from_value(value).map_err(|e| err(&e))?);
    }
    Ok(objects)
}

/// Whether `image` names `upstream` (with or without a tag).
pub fn names(image: &str, upstream: &str) -> bool {
    image == upstream || image.strip_prefix(upstream).is_some_and(|rest| rest.starts_with(':'))
}

/// `containers[].image` of every pod template.
fn rewrite_images(value: &mut serde_json::Value, images: &[ImageMapping<'_>]) {
    let Some(containers) = value.pointer_mut("/spec/template/spec/containers").and_then(|c| c.as_array_mut())
    else {
        return;
    };
    for container in containers {
        let Some(image) = container.get("image").and_then(|i| i.as_str()).map(str::to_owned) else {
            continue;
        };
        if let Some(m) = images.iter().find(|m| names(&image, m.upstream)) {
            container["image"] = serde_json::Value::String(m.built.clone());
        }
    }
}

/// The kind of a dynamic object, for discovery.
pub fn gvk(object: &DynamicObject) -> Option<GroupVersionKind> {
    let types = object.types.as_ref()?;
    let (group, version) = types.api_version.rsplit_once('/').unwrap_or(("", &types.api_version));
    Some(GroupVersionKind::gvk(group, version, &types.kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_match_with_or_without_tags_only() {
        assert!(names("busybox", "busybox"));
        assert!(names("quay.io/metallb/speaker:v0.15.2", "quay.io/metallb/speaker"));
        assert!(!names("quay.io/metallb/speaker-extra:v1", "quay.io/metallb/speaker"));
    }
}
