//! node-exporter as a DaemonSet on every node (control plane included),
//! with a ServiceAccount whose only permissions are the ones it uses: `get`
//! on `nodes/stats` and `nodes/metrics`, which are what the kubelet checks
//! for `/stats/summary` and `/metrics/cadvisor`.
//! (RBAC cannot narrow that to "its own node": a DaemonSet's pods share one
//! ServiceAccount. The exporter only ever asks its own node's kubelet.)

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec},
        core::v1::{Container, ContainerPort, Namespace, PodSpec, PodTemplateSpec, Probe, Toleration},
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::api::ObjectMeta;

use super::{
    Addon, Manifests, ROLLOUT, Rollout, cluster_identity, core_rule, field_env, http_get_probe, locked_down,
    non_root_pod, resources,
};
use crate::apply::Object;

pub const NAMESPACE: &str = "monitoring";
pub const NAME: &str = "node-exporter";
pub const METRICS_PORT: u16 = 9100;
pub const ADMIN_PORT: u16 = 9101;
/// The user the workload images are built to run as.
const USER: i64 = 65532;

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "node-exporter: a DaemonSet on every node",
    crates: &[NAME],
    images: &[],
    needs: &[],
    installed_after: &[],
    namespace: Some(namespace),
    secrets: None,
    objects: |input| Ok(objects(&input.image(NAME))),
    after_rollout: None,
    rollout: &[Rollout::DaemonSet { namespace: NAMESPACE, name: NAME }],
    address: None,
    manifests: Manifests::Generated { dir: NAMESPACE },
    timeout: ROLLOUT,
};

/// What selects a monitoring component's pods (`app` is its name).
pub(super) fn monitoring_selector(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".into(), app.into())])
}

/// The labels every object of a monitoring component carries.
pub(super) fn monitoring_labels(app: &str) -> BTreeMap<String, String> {
    let mut labels = monitoring_selector(app);
    labels.extend([
        ("app.kubernetes.io/component".to_owned(), "monitoring".to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "vigil".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "vigil".to_owned()),
    ]);
    labels
}

/// One replica of the monitoring component `app`, running `pod`: the
/// Deployment, its selector and its pods' labels all named after `app`.
pub(super) fn monitoring_deployment(app: &str, pod: PodSpec) -> k8s_openapi::api::apps::v1::Deployment {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    Deployment {
        metadata: monitoring_meta(app, app, true),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(monitoring_selector(app)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(monitoring_labels(app)), ..Default::default() }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The DaemonSet of the monitoring component `app` (its `metadata` given),
/// running `pod` on every node, the control plane included: its selector
/// and its pods' labels named after `app`, `annotations` on its pods.
pub(super) fn monitoring_daemon_set(
    app: &str,
    metadata: ObjectMeta,
    annotations: Option<BTreeMap<String, String>>,
    pod: PodSpec,
) -> DaemonSet {
    DaemonSet {
        metadata,
        spec: Some(DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(monitoring_selector(app)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(monitoring_labels(app)),
                    annotations,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }]),
                    ..pod
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An object `name` of the monitoring component `app`, in the monitoring
/// namespace when `namespaced`.
pub(super) fn monitoring_meta(app: &str, name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespaced.then(|| NAMESPACE.into()),
        labels: Some(monitoring_labels(app)),
        ..Default::default()
    }
}

fn meta(name: &str, namespaced: bool) -> ObjectMeta {
    monitoring_meta(NAME, name, namespaced)
}

fn probe(path: &str) -> Probe {
    Probe { period_seconds: Some(10), ..http_get_probe(ADMIN_PORT, path) }
}

/// The namespace the monitoring components share. Every one of them passes
/// the `restricted` Pod Security profile, which it enforces.
pub fn namespace() -> Object {
    let mut metadata = meta(NAMESPACE, false);
    metadata
        .labels
        .get_or_insert_default()
        .extend(super::pod_security::labels(super::pod_security::Level::Restricted));
    Object::typed(Namespace { metadata, ..Default::default() })
}

pub fn objects(image: &str) -> Vec<Object> {
    // What the kubelet checks for `/stats/summary` and `/metrics/cadvisor`, and nothing else.
    let identity = cluster_identity(
        meta(NAME, true),
        meta("vigil:node-exporter", false),
        vec![core_rule(&["nodes/stats", "nodes/metrics"], &["get"])],
    );
    let container = Container {
        name: NAME.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(
            [field_env("NODE_NAME", "spec.nodeName"), field_env("NODE_IP", "status.hostIP")]
                .into_iter()
                // Prometheus scrapes each node every 15 s: one scrape in ten is traced.
                .chain(super::jaeger::otel_env(NAME, Some(0.1)))
                .collect(),
        ),
        ports: Some(vec![
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT.into(),
                ..Default::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: ADMIN_PORT.into(),
                ..Default::default()
            },
        ]),
        liveness_probe: Some(probe("/live")),
        readiness_probe: Some(probe("/ready")),
        resources: Some(resources(&[("cpu", "10m"), ("memory", "8Mi")], &[("memory", "32Mi")])),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    // Prometheus's cAdvisor job finds it by its name label (no scrape
    // annotation: the generic job would scrape it twice).
    let daemon_set = monitoring_daemon_set(
        NAME,
        meta(NAME, true),
        None,
        PodSpec {
            service_account_name: Some(NAME.into()),
            security_context: Some(non_root_pod(USER, None)),
            containers: vec![container],
            ..Default::default()
        },
    );
    let mut objects = Vec::from(identity);
    objects.push(Object::typed(daemon_set));
    objects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_grants_exactly_what_the_exporter_uses() {
        let objects = objects("img");
        let role =
            objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::rbac::v1::ClusterRole>()).unwrap();
        let rules = role.rules.as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["nodes/stats".to_owned(), "nodes/metrics".to_owned()][..])
        );
        assert_eq!(rules[0].verbs, ["get"]);
    }
}
