//! Test objects, built the way the cluster shows them (kube-rs/controller-rs's
//! `fixtures.rs`): `node("w1").ready("False").since("...")`, `pod(ns, name).on("w1")...`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{
            ContainerState, ContainerStateWaiting, ContainerStatus, Node, NodeCondition, NodeStatus, Pod,
            PodCondition, PodSpec, PodStatus,
        },
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time},
};

pub struct NodeBuilder {
    name: String,
    created: Option<String>,
    ready: Option<(String, String)>,
}

pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder { name: name.into(), created: None, ready: None }
}

impl NodeBuilder {
    /// When the node registered (its creationTimestamp).
    pub fn created(mut self, at: &str) -> Self {
        self.created = Some(at.into());
        self
    }

    pub fn ready(mut self, status: &str) -> Self {
        self.ready = Some((status.into(), "2026-01-01T00:00:00Z".into()));
        self
    }

    pub fn since(mut self, at: &str) -> Self {
        if let Some(ready) = self.ready.as_mut() {
            ready.1 = at.into();
        }
        self
    }

    pub fn build(self) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(self.name),
                creation_timestamp: self.created.map(|at| Time(at.parse().unwrap())),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: self.ready.map(|(status, at)| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status,
                        last_transition_time: Some(Time(at.parse().unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

pub fn lease(node: &str, renewed: &str, duration_seconds: i32) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.into()),
            namespace: Some("kube-node-lease".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.into()),
            lease_duration_seconds: Some(duration_seconds),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            ..Default::default()
        }),
    }
}

pub fn deployment(namespace: &str, name: &str, replicas: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec { replicas: Some(replicas), ..Default::default() }),
        ..Default::default()
    }
}

pub struct PodBuilder {
    pod: Pod,
}

pub fn pod(namespace: &str, name: &str) -> PodBuilder {
    PodBuilder {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus::default()),
        },
    }
}

impl PodBuilder {
    pub fn owned(mut self, kind: &str, name: &str) -> Self {
        self.pod.metadata.owner_references = Some(vec![OwnerReference {
            kind: kind.into(),
            name: name.into(),
            controller: Some(true),
            api_version: "apps/v1".into(),
            uid: format!("uid-{name}"),
            ..Default::default()
        }]);
        self
    }

    pub fn hash(mut self, hash: &str) -> Self {
        self.pod.metadata.labels = Some(BTreeMap::from([("pod-template-hash".to_owned(), hash.to_owned())]));
        self
    }

    pub fn on(mut self, node: &str) -> Self {
        self.pod.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
        self
    }

    pub fn ready(mut self) -> Self {
        self.pod.status.get_or_insert_with(Default::default).conditions =
            Some(vec![PodCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() }]);
        self
    }

    pub fn terminating(mut self) -> Self {
        self.pod.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        self
    }

    pub fn unschedulable(mut self, message: &str) -> Self {
        self.pod.status.get_or_insert_with(Default::default).conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(message.into()),
            ..Default::default()
        }]);
        self
    }

    pub fn waiting(mut self, reason: &str) -> Self {
        self.pod.status.get_or_insert_with(Default::default).container_statuses =
            Some(vec![ContainerStatus {
                name: "main".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: None }),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
        self
    }

    pub fn build(self) -> Pod {
        self.pod
    }
}
