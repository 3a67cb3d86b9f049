//! MetalLB in L2 mode: upstream's own `metallb-native.yaml` for v0.15.2
//! (vendored unmodified in `manifests/metallb/`), parsed into objects with
//! only the two image references changed to the images built here, plus an
//! address pool on the node network so LoadBalancer addresses are reachable
//! from the host.

use kube::api::{DynamicObject, ObjectMeta};
use serde::Serialize;

use super::{
    Addon, Manifests, ROLLOUT, Rollout,
    upstream::{self, ImageMapping},
};
use crate::{
    apply::Object,
    cluster::ClusterSpec,
    manifests::{ImageOverride, documents, kustomization},
};

pub const NAME: &str = "metallb";
pub const NAMESPACE: &str = "metallb-system";
pub const VERSION: &str = crate::versions::METALLB;
pub const NATIVE_MANIFEST: &str = include_str!("../../../manifests/metallb/metallb-native.yaml");
/// The images upstream's manifest names, and the component each one is.
pub const UPSTREAM_IMAGES: [(&str, &str); 2] =
    [("quay.io/metallb/controller", "metallb-controller"), ("quay.io/metallb/speaker", "metallb-speaker")];
const POOL: &str = "vigil-node-network";
const MANIFEST_NAME: &str = "metallb-native.yaml";

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "MetalLB (L2), with an address pool on the node network",
    crates: &[],
    needs: &[],
    namespace: None,
    secrets: None,
    objects: |input| {
        Ok(native_objects(&input.spec.image_repository)?.into_iter().map(Object::Dynamic).collect())
    },
    // The controller's admission webhook validates pools: it must answer first.
    after_rollout: Some(|spec| pool_objects(spec).into_iter().map(Object::Dynamic).collect()),
    // The controller assigns addresses and its webhook admits the pool. The
    // speakers announce them as soon as they run, while upstream's
    // readiness probe waits 10 s before its first look: the check from the
    // host that every address answers is what proves they announce.
    rollout: &[Rollout::Deployment { namespace: NAMESPACE, name: "controller", replicas: 1 }],
    address: None,
    manifests: Manifests::Vendored { dir: NAME, files: manifest_files },
    timeout: ROLLOUT,
};

/// `metallb/`: upstream's manifest with kustomize's image overrides, and the pool.
fn manifest_files(repository: &str, spec: &ClusterSpec) -> Vec<(String, String)> {
    let overrides = UPSTREAM_IMAGES
        .iter()
        .map(|(upstream, component)| ImageOverride {
            name: (*upstream).into(),
            new_name: format!("{repository}/{component}"),
            new_tag: VERSION.into(),
        })
        .collect();
    let pool: Vec<Object> = pool_objects(spec).into_iter().map(Object::Dynamic).collect();
    vec![
        (
            "metallb/kustomization.yaml".into(),
            kustomization(&[MANIFEST_NAME, "address-pool.yaml"], overrides, vec![]),
        ),
        ("metallb/address-pool.yaml".into(), documents(&pool)),
    ]
}

/// The annotations that ask MetalLB for one given address of its pool, for
/// Services whose address vigil prints (web, Prometheus).
pub fn pinned_address(ip: &str) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([("metallb.io/loadBalancerIPs".into(), ip.into())])
}

/// Where the image `component` of this MetalLB release is tagged here.
pub fn image(repository: &str, component: &str) -> String {
    format!("{repository}/{component}:{VERSION}")
}

/// Upstream's objects with the images swapped, in upstream's order
/// (namespace and CRDs first).
pub fn native_objects(repository: &str) -> Result<Vec<DynamicObject>, upstream::Error> {
    let images: Vec<_> = UPSTREAM_IMAGES
        .iter()
        .map(|(upstream, component)| ImageMapping { upstream, built: image(repository, component) })
        .collect();
    upstream::parse(MANIFEST_NAME, NATIVE_MANIFEST, &images)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IpAddressPool {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    spec: PoolSpec,
}

#[derive(Debug, Serialize)]
struct PoolSpec {
    addresses: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct L2Advertisement {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    spec: L2Spec,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct L2Spec {
    ip_address_pools: Vec<String>,
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta { name: Some(name.into()), namespace: Some(NAMESPACE.into()), ..Default::default() }
}

/// The pool (the upper half of the node network, which node addresses never
/// use) and its L2 advertisement: speakers answer ARP for these addresses on
/// the node network, which the host is attached to.
pub fn pool_objects(spec: &ClusterSpec) -> Vec<DynamicObject> {
    let (first, last) = spec.load_balancer_range();
    let pool = IpAddressPool {
        api_version: "metallb.io/v1beta1",
        kind: "IPAddressPool",
        metadata: meta(POOL),
        spec: PoolSpec { addresses: vec![format!("{first}-{last}")] },
    };
    let advertisement = L2Advertisement {
        api_version: "metallb.io/v1beta1",
        kind: "L2Advertisement",
        metadata: meta(POOL),
        spec: L2Spec { ip_address_pools: vec![POOL.into()] },
    };
    [serde_json::to_value(pool), serde_json::to_value(advertisement)]
        .into_iter()
        .map(|v| serde_json::from_value(v.expect("serializes")).expect("a DynamicObject"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_manifest_parses_and_only_images_change() {
        let objects = native_objects("vigil.local").unwrap();
        let kinds: Vec<&str> = objects.iter().map(|o| o.types.as_ref().unwrap().kind.as_str()).collect();
        assert_eq!(kinds[0], "Namespace");
        assert_eq!(kinds.iter().filter(|k| **k == "CustomResourceDefinition").count(), 8);
        assert!(kinds.contains(&"Deployment") && kinds.contains(&"DaemonSet"));
        let text = serde_json::to_string(&objects).unwrap();
        assert!(text.contains("vigil.local/metallb-controller:v0.15.2"));
        assert!(text.contains("vigil.local/metallb-speaker:v0.15.2"));
        assert!(!text.contains("quay.io"), "every upstream image reference is replaced");
        // One object per top-level document: nothing dropped.
        assert_eq!(objects.len(), NATIVE_MANIFEST.lines().filter(|l| l.starts_with("kind: ")).count());
    }

    #[test]
    fn the_pool_is_the_upper_half_of_the_node_network() {
        let objects = pool_objects(&ClusterSpec::default());
        let pool = serde_json::to_value(&objects[0]).unwrap();
        assert_eq!(pool["spec"]["addresses"][0], "172.29.0.128-172.29.0.254");
        assert_eq!(upstream::gvk(&objects[1]).unwrap().kind, "L2Advertisement");
        assert_eq!(upstream::gvk(&objects[1]).unwrap().group, "metallb.io");
    }
}
