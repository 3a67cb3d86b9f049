//! MetalLB in L2 mode: upstream's own `metallb-native.yaml` for v0.15.2
//! (vendored unmodified in `manifests/metallb/`), parsed into objects with
//! the two image references changed to the images built here, plus an
//! address pool on the node network so LoadBalancer addresses are reachable
//! from the host. `vigil up` also points the speakers at the API server's
//! own address ([`speaker_talks_to`]); the committed manifests, for any
//! cluster, leave upstream's Service address.

use std::net::Ipv4Addr;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{DynamicObject, ObjectMeta};
use serde::Serialize;

use super::{
    Addon, ImageFrom, ImageRun, Manifests, ROLLOUT, Rollout, UpstreamImage, api_server_env, upstream,
};
use crate::{
    apply::Object,
    manifests::{documents, kustomization},
};
use vigil_model::cluster::ClusterSpec;

pub const NAME: &str = "metallb";
pub const NAMESPACE: &str = "metallb-system";
pub const VERSION: &str = vigil_model::versions::METALLB;
pub const NATIVE_MANIFEST: &str = include_str!("../../../manifests/metallb/metallb-native.yaml");
/// The controller and the speaker, as upstream's images run them.
pub const IMAGES: [UpstreamImage; 2] = [
    UpstreamImage {
        name: "metallb-controller",
        version: VERSION,
        replaces: Some("quay.io/metallb/controller"),
        from: ImageFrom::Scratch,
        binary: "controller",
        path: "/controller",
        run: ImageRun::Entrypoint,
        extra: &[],
    },
    UpstreamImage {
        name: "metallb-speaker",
        version: VERSION,
        replaces: Some("quay.io/metallb/speaker"),
        from: ImageFrom::Scratch,
        binary: "speaker",
        path: "/speaker",
        run: ImageRun::Entrypoint,
        extra: &[],
    },
];
const POOL: &str = "vigil-node-network";
/// Upstream's speaker DaemonSet and its container.
const SPEAKER: &str = "speaker";
const MANIFEST_NAME: &str = "metallb-native.yaml";

/// The speakers' metrics port (upstream's `--port=7472`).
pub const SPEAKER_METRICS_PORT: u16 = 7472;
/// The speaker pods' labels in upstream's manifest.
pub const SPEAKER_SELECTOR: &str = "app=metallb,component=speaker";
/// The family in which a speaker says which addresses it announces.
const ANNOUNCED: &str = "metallb_speaker_announced";

/// The nodes a speaker's metrics say announce `service` (`namespace/name`)
/// in L2 mode. Read from the speakers rather than from MetalLB's
/// ServiceL2Status, which v0.15.2 can leave missing after an address
/// moves (the new announcer's speaker patches the old node's object,
/// whose node is immutable, and the old one's deletes it), or from its
/// `nodeAssigned` Events, whose text is not an interface and whose old
/// and new announcer can carry the same second.
pub fn announced_from(
    metrics: &str,
    service: &str,
) -> Result<Vec<String>, vigil_telemetry::text_format::ParseError> {
    Ok(vigil_telemetry::text_format::parse(metrics, &[ANNOUNCED])?
        .iter()
        .filter(|l| l.label("service") == service && l.label("protocol") == "layer2" && l.value == 1.0)
        .map(|l| l.label("node").to_owned())
        .collect())
}

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "MetalLB (L2), with an address pool on the node network",
    crates: &[],
    images: &IMAGES,
    needs: &[],
    installed_after: &[],
    namespace: None,
    secrets: None,
    objects: |input| {
        let mut objects = native_objects(&input.spec.image_repository)?;
        if let Some(api_server) = input.api_server {
            speaker_talks_to(&mut objects, api_server)?;
        }
        Ok(objects.into_iter().map(Object::dynamic).collect())
    },
    // The controller's admission webhook validates pools: it must answer first.
    after_rollout: Some(|spec| pool_objects(spec).into_iter().map(Object::dynamic).collect()),
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
    let overrides = UpstreamImage::overrides(&IMAGES, repository);
    let pool: Vec<Object> = pool_objects(spec).into_iter().map(Object::dynamic).collect();
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

/// A LoadBalancer Service on the pinned address `ip`, selecting `selector`;
/// each of `ports` goes to the container port of the same name. No
/// NodePorts: MetalLB's L2 mode answers for the address itself, and a node
/// port would open the same server on every node's address.
pub fn pinned_service(
    metadata: kube::api::ObjectMeta,
    ip: &str,
    selector: std::collections::BTreeMap<String, String>,
    ports: &[(&str, u16)],
) -> k8s_openapi::api::core::v1::Service {
    use k8s_openapi::{
        api::core::v1::{Service, ServicePort, ServiceSpec},
        apimachinery::pkg::util::intstr::IntOrString,
    };
    Service {
        metadata: kube::api::ObjectMeta { annotations: Some(pinned_address(ip)), ..metadata },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            allocate_load_balancer_node_ports: Some(false),
            selector: Some(selector),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some((*name).into()),
                        port: (*port).into(),
                        target_port: Some(IntOrString::String((*name).into())),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Upstream's objects with the images swapped, in upstream's order
/// (namespace and CRDs first).
pub fn native_objects(repository: &str) -> Result<Vec<DynamicObject>, upstream::Error> {
    let images = UpstreamImage::mappings(&IMAGES, repository);
    upstream::parse(MANIFEST_NAME, NATIVE_MANIFEST, &images)
}

/// Points the speakers' in-cluster configuration at the API server itself
/// (as flannel's is). A speaker on a restarted node starts before kube-proxy
/// has set up the `kubernetes` Service: its request to the Service address
/// then leaves the cluster, fails, and the speaker exits; its restarts back
/// off to minutes, during which that node cannot take over an address.
fn speaker_talks_to(
    objects: &mut [DynamicObject],
    api_server: (Ipv4Addr, u16),
) -> Result<(), upstream::Error> {
    let error = |message: String| upstream::Error { manifest: MANIFEST_NAME, message };
    let speaker = objects
        .iter_mut()
        .find(|o| {
            o.types.as_ref().is_some_and(|t| t.kind == "DaemonSet")
                && o.metadata.name.as_deref() == Some(SPEAKER)
        })
        .ok_or_else(|| error(format!("no DaemonSet {SPEAKER}")))?;
    let mut daemon_set: DaemonSet =
        serde_json::from_value(serde_json::to_value(&*speaker).map_err(|e| error(e.to_string()))?)
            .map_err(|e| error(e.to_string()))?;
    let containers =
        daemon_set.spec.as_mut().and_then(|s| s.template.spec.as_mut()).map(|s| &mut s.containers);
    let container = containers
        .and_then(|c| c.iter_mut().find(|c| c.name == SPEAKER))
        .ok_or_else(|| error(format!("the DaemonSet {SPEAKER} has no container {SPEAKER}")))?;
    let env = container.env.get_or_insert_with(Vec::new);
    let added = api_server_env(api_server);
    env.retain(|e| added.iter().all(|a| a.name != e.name));
    env.extend(added);
    *speaker = serde_json::from_value(serde_json::to_value(&daemon_set).map_err(|e| error(e.to_string()))?)
        .map_err(|e| error(e.to_string()))?;
    Ok(())
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
    fn speakers_reach_the_api_server_without_the_service() {
        let upstream = native_objects("vigil.local").unwrap();
        let mut objects = upstream.clone();
        speaker_talks_to(&mut objects, ("172.29.0.2".parse().unwrap(), 6443)).unwrap();
        let changed: Vec<_> = objects.iter().zip(&upstream).filter(|(a, b)| a != b).map(|(a, _)| a).collect();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].metadata.name.as_deref(), Some(SPEAKER));
        let daemon_set: DaemonSet =
            serde_json::from_value(serde_json::to_value(changed[0]).unwrap()).unwrap();
        let env = daemon_set.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
        let value = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
        assert_eq!(value("KUBERNETES_SERVICE_HOST").as_deref(), Some("172.29.0.2"));
        assert_eq!(value("KUBERNETES_SERVICE_PORT").as_deref(), Some("6443"));
        assert!(value("METALLB_NODE_NAME").is_none(), "upstream's field references stay as they are");
        assert!(env.iter().any(|e| e.name == "METALLB_NODE_NAME"));
    }

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

    #[test]
    fn the_announcer_is_the_speaker_that_says_so_for_that_service() {
        let metrics = "# TYPE metallb_speaker_announced gauge\n\
            metallb_speaker_announced{ip=\"172.29.0.128\",node=\"w1\",protocol=\"layer2\",service=\"default/web\"} 1\n\
            metallb_speaker_announced{ip=\"172.29.0.129\",node=\"w1\",protocol=\"layer2\",service=\"monitoring/prometheus\"} 1\n\
            metallb_speaker_announced{ip=\"172.29.0.130\",node=\"w1\",protocol=\"layer2\",service=\"default/old\"} 0\n";
        assert_eq!(announced_from(metrics, "default/web").unwrap(), ["w1"]);
        assert!(announced_from(metrics, "default/old").unwrap().is_empty(), "0: no longer announced");
        assert!(announced_from(metrics, "default/other").unwrap().is_empty());
    }
}
