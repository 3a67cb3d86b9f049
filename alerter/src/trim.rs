//! Objects cut down to what the alerter's decisions read, before a reflector
//! keeps them: `watcher(api, trim::watch_config()).modify(trim::pod)`.
//!
//! The reflectors hold every Pod, Node, Deployment, StatefulSet and node
//! Lease of the cluster for as long as the alerter runs. Whole, a pod is
//! mostly what the alerter never looks at (managedFields, annotations,
//! containers with their env, probes and images, volumes), and a few
//! thousand of them exhausted its container's memory. Each function here
//! rebuilds the object from the fields [`crate::decide`] and
//! [`crate::tracker`] read, so a field Kubernetes adds later is dropped too
//! rather than kept by default.
//!
//! Why not kube-runtime's `metadata_watcher` (PartialObjectMeta, no spec or
//! status)? It suffices for none of the five: a Pod's node (`spec.nodeName`),
//! tolerations (its eviction time), Ready and PodScheduled conditions and
//! containers' waiting reasons are spec and status; a Node's Ready condition
//! is status; a Deployment's or StatefulSet's replicas are spec; a Lease's
//! renewals are spec. A metadata watcher would need a second request per
//! object, which costs more than it saves.
//!
//! The watcher trims each object as it is decoded, so at most one list page
//! of whole objects exists at a time: [`watch_config`] makes pages small.
//!
//! What remains is the struct itself (a `Pod` is 2.2 kB inline, most of it
//! the empty `PodSpec`) and about 1 kB of strings, against 10 to 20 kB of
//! JSON for a whole pod: by that estimate, about 35 MB for 10 000 pods
//! (`./vigil.sh bench alerter-memory` measures it).

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec},
        coordination::v1::Lease,
        core::v1::{
            ContainerState, ContainerStateWaiting, ContainerStatus, Node, NodeStatus, Pod, PodSpec, PodStatus,
        },
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::runtime::watcher;

/// Objects per list page while a watcher (re)lists. Whole objects exist
/// only until trimmed, a page at a time: 100 pods of a few kB each instead
/// of kube-runtime's default 500.
pub const LIST_PAGE_SIZE: u32 = 100;

/// The pod label a ReplicaSet's pods carry, which names its Deployment.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The watcher configuration for trimmed reflectors: small list pages.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE_SIZE)
}

/// Identity and lifecycle only: name, namespace, uid, resourceVersion,
/// creation and deletion times. Labels, annotations, managedFields,
/// finalizers and owners go (callers keep the few they read).
fn identity(meta: &mut ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        creation_timestamp: meta.creation_timestamp.take(),
        deletion_timestamp: meta.deletion_timestamp.take(),
        ..Default::default()
    }
}

/// A Pod as [`crate::decide`] reads it: its controller (and the
/// `pod-template-hash` label that names a ReplicaSet's Deployment), whether
/// it is being deleted, its node, its tolerations (when it is evicted), its
/// phase, its Ready and PodScheduled conditions, and its containers'
/// waiting reasons and messages (why a replacement cannot start).
pub fn pod(pod: &mut Pod) {
    let mut metadata = identity(&mut pod.metadata);
    metadata.owner_references = pod
        .metadata
        .owner_references
        .take()
        .map(|owners| owners.into_iter().filter(|o| o.controller == Some(true)).collect());
    metadata.labels = pod
        .metadata
        .labels
        .take()
        .map(|labels| labels.into_iter().filter(|(k, _)| k == POD_TEMPLATE_HASH).collect());
    let spec = pod.spec.take().map(|mut spec| PodSpec {
        node_name: spec.node_name.take(),
        tolerations: spec.tolerations.take(),
        ..Default::default()
    });
    let status = pod.status.take().map(|mut status| PodStatus {
        phase: status.phase.take(),
        conditions: status.conditions.take().map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| matches!(c.type_.as_str(), "Ready" | "PodScheduled"))
                .map(|mut c| {
                    // Renewed by every probe: it would only make the pod look changed.
                    c.last_probe_time = None;
                    c
                })
                .collect()
        }),
        container_statuses: status
            .container_statuses
            .take()
            .map(|statuses| statuses.into_iter().map(container_status).collect()),
        ..Default::default()
    });
    *pod = Pod { metadata, spec, status };
}

/// A container's name and, while it waits, why.
fn container_status(mut status: ContainerStatus) -> ContainerStatus {
    let waiting = status
        .state
        .take()
        .and_then(|s| s.waiting)
        .map(|w| ContainerStateWaiting { reason: w.reason, message: w.message });
    ContainerStatus {
        name: std::mem::take(&mut status.name),
        ready: status.ready,
        restart_count: status.restart_count,
        state: waiting.map(|waiting| ContainerState { waiting: Some(waiting), ..Default::default() }),
        ..Default::default()
    }
}

/// A Node's Ready condition. Its images, addresses, capacity, system info,
/// labels and annotations (the bulk of a Node) go.
pub fn node(node: &mut Node) {
    let metadata = identity(&mut node.metadata);
    let status = node.status.take().map(|mut status| NodeStatus {
        conditions: status
            .conditions
            .take()
            .map(|conditions| conditions.into_iter().filter(|c| c.type_ == "Ready").collect()),
        ..Default::default()
    });
    *node = Node { metadata, spec: None, status };
}

/// A Deployment's replicas (its pod template, selector and status go).
pub fn deployment(deployment: &mut Deployment) {
    let metadata = identity(&mut deployment.metadata);
    let spec =
        deployment.spec.take().map(|spec| DeploymentSpec { replicas: spec.replicas, ..Default::default() });
    *deployment = Deployment { metadata, spec, status: None };
}

/// A StatefulSet's replicas (its pod and volume claim templates go).
pub fn stateful_set(stateful_set: &mut StatefulSet) {
    let metadata = identity(&mut stateful_set.metadata);
    let spec = stateful_set
        .spec
        .take()
        .map(|spec| StatefulSetSpec { replicas: spec.replicas, ..Default::default() });
    *stateful_set = StatefulSet { metadata, spec, status: None };
}

/// A Lease's spec (holder, duration, renewals, all small); its
/// managedFields, the bulk of a node Lease, go.
pub fn lease(lease: &mut Lease) {
    let metadata = identity(&mut lease.metadata);
    *lease = Lease { metadata, spec: lease.spec.take() };
}

#[cfg(test)]
mod tests;
