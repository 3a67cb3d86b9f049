//! Trimmed objects decide exactly as whole ones, at a fraction of the size.
//! The whole objects are built as the API server returns them for a
//! typical workload: several containers with env, probes, resources and
//! mounts, volumes, annotations, many labels and managedFields.

use std::{collections::BTreeMap, time::Duration};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec},
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{
            ConfigMapVolumeSource, Container, ContainerPort, ContainerState, ContainerStateRunning,
            ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, EnvVar, HTTPGetAction, Node,
            NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Pod, PodCondition, PodIP,
            PodSpec, PodStatus, PodTemplateSpec, Probe, ResourceRequirements, Taint, Toleration, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{FieldsV1, ManagedFieldsEntry, MicroTime, ObjectMeta, OwnerReference, Time},
        util::intstr::IntOrString,
    },
};
use kube::runtime::{WatchStreamExt as _, watcher};

use super::*;
use crate::{
    decide,
    model::{Owner, OwnerKind},
};

const AT: &str = "2026-01-01T00:00:00Z";

fn time() -> Time {
    Time(AT.parse().unwrap())
}

/// What a whole object's metadata carries: many labels, long annotations
/// (a last-applied configuration among them), managedFields of three managers.
fn whole_meta(namespace: Option<&str>, name: &str, extra_labels: &[(&str, &str)]) -> ObjectMeta {
    let mut labels: BTreeMap<String, String> = (0..8)
        .map(|i| (format!("app.kubernetes.io/part-{i}"), format!("value-of-label-{i}-for-{name}")))
        .collect();
    labels.extend(extra_labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let fields = serde_json::json!({
        "f:metadata": {"f:labels": labels.keys().map(|k| (format!("f:{k}"), serde_json::json!({})))
            .collect::<serde_json::Map<_, _>>()},
        "f:spec": {"f:containers": (0..4).map(|i| (format!("k:{{\"name\":\"c{i}\"}}"), serde_json::json!({
            ".": {}, "f:env": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:livenessProbe": {},
            "f:ports": {}, "f:readinessProbe": {}, "f:resources": {}, "f:volumeMounts": {}
        }))).collect::<serde_json::Map<_, _>>()},
    });
    let managed = ["kube-controller-manager", "kube-scheduler", "kubelet"]
        .into_iter()
        .map(|manager| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields.clone())),
            time: Some(time()),
            ..Default::default()
        })
        .collect();
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        uid: Some(format!("0b7c6a3e-uid-{name}")),
        resource_version: Some("123456".into()),
        creation_timestamp: Some(time()),
        generate_name: Some(format!("{name}-")),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([
            ("kubectl.kubernetes.io/last-applied-configuration".into(), "{\"apiVersion\":\"v1\"}".repeat(40)),
            ("prometheus.io/scrape".into(), "true".into()),
            ("vigil.dev/restarted-at".into(), AT.into()),
        ])),
        managed_fields: Some(managed),
        finalizers: Some(vec!["example.com/cleanup".into()]),
        ..Default::default()
    }
}

fn whole_container(i: usize) -> Container {
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(8080),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    };
    Container {
        name: format!("c{i}"),
        image: Some(format!("registry.example/team/service-{i}:v1.2.3@sha256:{}", "ab".repeat(32))),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec!["--config".into(), "/etc/service/config.yaml".into(), "--verbose".into()]),
        env: Some(
            (0..12)
                .map(|e| EnvVar {
                    name: format!("SERVICE_SETTING_{e}"),
                    value: Some(format!("a value of setting {e} for container {i}")),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(vec![ContainerPort {
            container_port: 8080,
            name: Some("http".into()),
            ..Default::default()
        }]),
        liveness_probe: Some(probe("/live")),
        readiness_probe: Some(probe("/ready")),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("100m".into())),
                ("memory".into(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("256Mi".into()))])),
            ..Default::default()
        }),
        volume_mounts: Some(
            (0..3)
                .map(|v| VolumeMount {
                    name: format!("volume-{v}"),
                    mount_path: format!("/etc/service/volume-{v}"),
                    read_only: Some(true),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// How a whole pod stands, one per decision `why_not` makes.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Ready,
    Unschedulable,
    ImagePull,
    CrashLoop,
    Terminating,
    BoundToDeadNode,
}

/// A Deployment's pod (`web`, ReplicaSet `web-5d8f7`), or a StatefulSet's
/// (`pg`) when terminating, in `shape`.
fn whole_pod(name: &str, shape: Shape) -> Pod {
    let stateful = matches!(shape, Shape::Terminating);
    let (owner_kind, owner_name) = if stateful { ("StatefulSet", "pg") } else { ("ReplicaSet", "web-5d8f7") };
    let mut metadata = whole_meta(Some("shop"), name, &[("pod-template-hash", "5d8f7")]);
    metadata.owner_references = Some(vec![
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: owner_kind.into(),
            name: owner_name.into(),
            uid: "uid-owner".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        OwnerReference {
            api_version: "example.com/v1".into(),
            kind: "Tracker".into(),
            name: "not-a-controller".into(),
            uid: "uid-tracker".into(),
            controller: None,
            block_owner_deletion: None,
        },
    ]);
    if stateful {
        metadata.deletion_timestamp = Some(time());
    }
    let node = match shape {
        Shape::Unschedulable => None,
        Shape::Terminating | Shape::BoundToDeadNode => Some("w2"),
        _ => Some("w1"),
    };
    let toleration = |key: &str, seconds: i64| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: Some(seconds),
        ..Default::default()
    };
    let spec = PodSpec {
        node_name: node.map(Into::into),
        containers: (0..4).map(whole_container).collect(),
        init_containers: Some(vec![whole_container(9)]),
        volumes: Some(
            (0..3)
                .map(|v| Volume {
                    name: format!("volume-{v}"),
                    config_map: Some(ConfigMapVolumeSource {
                        name: format!("config-{v}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        tolerations: Some(vec![
            toleration("node.kubernetes.io/not-ready", 30),
            toleration("node.kubernetes.io/unreachable", 45),
            Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("shop".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            },
        ]),
        service_account_name: Some("shop".into()),
        scheduler_name: Some("default-scheduler".into()),
        dns_policy: Some("ClusterFirst".into()),
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(30),
        priority: Some(0),
        ..Default::default()
    };
    let condition = |type_: &str, status: &str, message: Option<&str>| PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: message.map(|_| "Unschedulable".into()),
        message: message.map(Into::into),
        last_transition_time: Some(time()),
        last_probe_time: Some(time()),
        ..Default::default()
    };
    let ready = matches!(shape, Shape::Ready | Shape::BoundToDeadNode);
    let unschedulable = "0/3 nodes are available: 1 node(s) didn't match PersistentVolume's node affinity, 2 node(s) had untolerated taint(s). preemption: 0/3 nodes are available.";
    let conditions = vec![
        condition("PodReadyToStartContainers", "True", None),
        condition("Initialized", "True", None),
        condition("Ready", if ready { "True" } else { "False" }, None),
        condition("ContainersReady", if ready { "True" } else { "False" }, None),
        match shape {
            Shape::Unschedulable => condition("PodScheduled", "False", Some(unschedulable)),
            _ => condition("PodScheduled", "True", None),
        },
    ];
    let state = |i: usize| match (shape, i) {
        (Shape::ImagePull, 2) => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                message: Some("Back-off pulling image \"registry.example/team/service-2:v1.2.3\"".into()),
            }),
            ..Default::default()
        },
        (Shape::CrashLoop, 1) => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: Some("back-off 5m0s restarting failed container".into()),
            }),
            ..Default::default()
        },
        _ => ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(time()) }),
            ..Default::default()
        },
    };
    let container_statuses = (0..4)
        .map(|i| ContainerStatus {
            name: format!("c{i}"),
            image: format!("registry.example/team/service-{i}:v1.2.3"),
            image_id: format!("registry.example/team/service-{i}@sha256:{}", "cd".repeat(32)),
            container_id: Some(format!("containerd://{}", "ef".repeat(32))),
            ready,
            restart_count: 3,
            started: Some(ready),
            state: Some(state(i)),
            last_state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    reason: Some("OOMKilled".into()),
                    started_at: Some(time()),
                    finished_at: Some(time()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let status = PodStatus {
        phase: Some(if node.is_some() { "Running" } else { "Pending" }.into()),
        conditions: Some(conditions),
        container_statuses: Some(container_statuses),
        host_ip: Some("172.29.250.3".into()),
        pod_ip: Some("10.244.1.17".into()),
        pod_ips: Some(vec![PodIP { ip: "10.244.1.17".into() }]),
        qos_class: Some("Burstable".into()),
        start_time: Some(time()),
        ..Default::default()
    };
    Pod { metadata, spec: Some(spec), status: Some(status) }
}

const SHAPES: [Shape; 6] = [
    Shape::Ready,
    Shape::Unschedulable,
    Shape::ImagePull,
    Shape::CrashLoop,
    Shape::Terminating,
    Shape::BoundToDeadNode,
];

fn trimmed(whole: &Pod) -> Pod {
    let mut p = whole.clone();
    pod(&mut p);
    p
}

fn json_len<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).unwrap().len()
}

#[test]
fn a_trimmed_pod_decides_as_the_whole_one() {
    let wholes: Vec<Pod> =
        SHAPES.iter().enumerate().map(|(i, s)| whole_pod(&format!("web-5d8f7-{i}"), *s)).collect();
    let trims: Vec<Pod> = wholes.iter().map(trimmed).collect();
    for (whole, trim) in wholes.iter().zip(&trims) {
        let shape = whole.metadata.name.clone();
        assert_eq!(decide::owner_of(whole), decide::owner_of(trim), "{shape:?}");
        assert_eq!(decide::node_of(whole), decide::node_of(trim), "{shape:?}");
        assert_eq!(decide::pod_ready(whole), decide::pod_ready(trim), "{shape:?}");
        assert_eq!(decide::eviction_after(whole), decide::eviction_after(trim), "{shape:?}");
        let owner = decide::owner_of(whole);
        assert_eq!(
            decide::why_not(&owner, &[whole], "w2"),
            decide::why_not(&owner, &[trim], "w2"),
            "{shape:?}"
        );
    }
    // Every shape gives a different answer: the comparison covers each branch of why_not.
    let web = Owner { kind: OwnerKind::Deployment, namespace: "shop".into(), name: "web".into() };
    let pg = Owner { kind: OwnerKind::StatefulSet, namespace: "shop".into(), name: "pg".into() };
    let reasons: Vec<String> = trims
        .iter()
        .map(|p| decide::why_not(if decide::owner_of(p) == pg { &pg } else { &web }, &[p], "w2"))
        .collect();
    let expected = [
        "its replacement pods are not Ready yet",
        "its volume is bound to w2",
        "its image is missing on w1 (Back-off pulling image",
        "is crash looping on w1",
        "is stuck terminating on w2",
        "they are evicted only when their not-ready/unreachable toleration ends (45 s)",
    ];
    for (reason, expected) in reasons.iter().zip(expected) {
        assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
    }
    assert_eq!(decide::eviction_after(&trims[0]), Some(Duration::from_secs(45)));
    // Over the whole set too, as the tracker calls them.
    let whole_refs: Vec<&Pod> = wholes.iter().collect();
    let trim_refs: Vec<&Pod> = trims.iter().collect();
    assert_eq!(decide::affected(&whole_refs, "w2"), decide::affected(&trim_refs, "w2"));
    assert_eq!(decide::why_not(&web, &whole_refs, "w2"), decide::why_not(&web, &trim_refs, "w2"));
    for past_deadline in [false, true] {
        assert_eq!(
            decide::verdict(&web, &["web-5d8f7-5".into()], Some(3), &whole_refs, "w2", past_deadline),
            decide::verdict(&web, &["web-5d8f7-5".into()], Some(3), &trim_refs, "w2", past_deadline),
        );
    }
}

#[test]
fn a_trimmed_pod_is_a_fraction_of_the_whole() {
    let whole = whole_pod("web-5d8f7-x", Shape::ImagePull);
    let trim = trimmed(&whole);
    let (whole_bytes, trim_bytes) = (json_len(&whole), json_len(&trim));
    // Measured: 17 568 bytes whole, 1 346 trimmed (13.1x); asserted with a margin.
    assert!(whole_bytes >= 10 * trim_bytes, "{whole_bytes} bytes whole, {trim_bytes} trimmed");
    let meta = &trim.metadata;
    assert!(meta.managed_fields.is_none() && meta.annotations.is_none() && meta.finalizers.is_none());
    assert_eq!(
        meta.labels.as_ref().map(|l| l.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["pod-template-hash".to_owned()])
    );
    assert_eq!(meta.owner_references.as_ref().map(Vec::len), Some(1), "only the controller");
    let spec = trim.spec.as_ref().unwrap();
    assert!(spec.containers.is_empty() && spec.volumes.is_none() && spec.init_containers.is_none());
    let status = trim.status.as_ref().unwrap();
    let kept: Vec<&str> = status.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
    assert_eq!(kept, ["Ready", "PodScheduled"]);
    let containers = status.container_statuses.as_ref().unwrap();
    assert!(containers.iter().all(|c| c.image.is_empty() && c.last_state.is_none()));
    assert!(containers.iter().all(|c| c.state.as_ref().is_none_or(|s| s.running.is_none())));
}

#[test]
fn trimming_twice_changes_nothing() {
    let once = trimmed(&whole_pod("web-5d8f7-x", Shape::Unschedulable));
    assert_eq!(trimmed(&once), once);
}

fn whole_node(name: &str, ready: &str) -> Node {
    let condition = |type_: &str, status: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(format!("Kubelet{type_}")),
        message: Some(format!("kubelet reports {type_} {status}")),
        last_heartbeat_time: Some(time()),
        last_transition_time: Some(Time("2026-01-01T00:00:07Z".parse().unwrap())),
    };
    Node {
        metadata: whole_meta(None, name, &[("kubernetes.io/hostname", name)]),
        spec: Some(NodeSpec {
            pod_cidr: Some("10.244.1.0/24".into()),
            taints: Some(vec![Taint {
                key: "node.kubernetes.io/not-ready".into(),
                effect: "NoExecute".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            conditions: Some(vec![
                condition("MemoryPressure", "False"),
                condition("DiskPressure", "False"),
                condition("PIDPressure", "False"),
                condition("Ready", ready),
            ]),
            addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: "172.29.250.3".into() }]),
            capacity: Some(BTreeMap::from([("cpu".into(), Quantity("2".into()))])),
            node_info: Some(NodeSystemInfo {
                kernel_version: "6.8.0".into(),
                os_image: "Debian GNU/Linux 12".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[test]
fn a_trimmed_node_keeps_its_readiness() {
    for ready in ["True", "False", "Unknown"] {
        let whole = whole_node("w1", ready);
        let mut trim = whole.clone();
        node(&mut trim);
        assert_eq!(decide::readiness(&whole), decide::readiness(&trim), "{ready}");
        assert!(json_len(&whole) >= 5 * json_len(&trim), "{} vs {}", json_len(&whole), json_len(&trim));
        assert_eq!(trim.metadata.name.as_deref(), Some("w1"));
    }
    // A node just registered has no Ready condition: still none once trimmed.
    let mut fresh = whole_node("w9", "True");
    fresh.status.as_mut().unwrap().conditions = None;
    let whole = fresh.clone();
    node(&mut fresh);
    assert_eq!(decide::readiness(&whole), decide::readiness(&fresh));
}

#[test]
fn trimmed_owners_keep_their_replicas() {
    let template = PodTemplateSpec {
        metadata: Some(whole_meta(Some("shop"), "web", &[])),
        spec: whole_pod("template", Shape::Ready).spec,
    };
    let whole_deployment = Deployment {
        metadata: whole_meta(Some("shop"), "web", &[]),
        spec: Some(DeploymentSpec { replicas: Some(3), template: template.clone(), ..Default::default() }),
        ..Default::default()
    };
    let whole_set = StatefulSet {
        metadata: whole_meta(Some("shop"), "pg", &[]),
        spec: Some(StatefulSetSpec { replicas: Some(2), template, ..Default::default() }),
        ..Default::default()
    };
    let (mut d, mut s) = (whole_deployment.clone(), whole_set.clone());
    deployment(&mut d);
    stateful_set(&mut s);
    for owner in [
        Owner { kind: OwnerKind::Deployment, namespace: "shop".into(), name: "web".into() },
        Owner { kind: OwnerKind::StatefulSet, namespace: "shop".into(), name: "pg".into() },
    ] {
        let whole = decide::desired(&owner, &[&whole_deployment], &[&whole_set]);
        assert!(whole.is_some());
        assert_eq!(whole, decide::desired(&owner, &[&d], &[&s]), "{owner}");
    }
    assert!(json_len(&whole_deployment) >= 10 * json_len(&d));
    assert!(json_len(&whole_set) >= 10 * json_len(&s));
}

#[test]
fn a_trimmed_lease_keeps_its_renewals() {
    let whole = Lease {
        metadata: whole_meta(Some("kube-node-lease"), "w1", &[]),
        spec: Some(LeaseSpec {
            holder_identity: Some("w1".into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime("2026-01-01T00:00:35Z".parse().unwrap())),
            ..Default::default()
        }),
    };
    let mut trim = whole.clone();
    lease(&mut trim);
    assert!(decide::renew_time(&whole).is_some());
    assert_eq!(decide::renew_time(&whole), decide::renew_time(&trim));
    assert_eq!(decide::renewal_interval(&whole), decide::renewal_interval(&trim));
    assert_eq!(trim.spec, whole.spec);
    assert!(trim.metadata.managed_fields.is_none());
}

/// As the controller plugs it in: a watcher's events, trimmed on the way to the store.
#[tokio::test]
async fn trims_plug_into_a_watch_stream() {
    let whole = whole_pod("web-5d8f7-x", Shape::Ready);
    let events: Vec<Result<watcher::Event<Pod>, watcher::Error>> = vec![
        Ok(watcher::Event::Init),
        Ok(watcher::Event::InitApply(whole.clone())),
        Ok(watcher::Event::InitDone),
        Ok(watcher::Event::Apply(whole.clone())),
        Ok(watcher::Event::Delete(whole.clone())),
    ];
    let out: Vec<watcher::Event<Pod>> =
        futures::stream::iter(events).modify(pod).try_collect().await.expect("no errors");
    let objects: Vec<Pod> = futures::stream::iter(out)
        .filter_map(|e| async move {
            match e {
                watcher::Event::InitApply(p) | watcher::Event::Apply(p) | watcher::Event::Delete(p) => {
                    Some(p)
                }
                _ => None,
            }
        })
        .collect()
        .await;
    assert_eq!(objects.len(), 3);
    assert!(objects.iter().all(|p| *p == trimmed(&whole)));
    assert_eq!(watch_config().page_size, Some(LIST_PAGE_SIZE));
}
