//! node-exporter as a DaemonSet on every node (control plane included),
//! with a ServiceAccount whose only permission is the one it uses: `get` on
//! `nodes/stats`, which is what the kubelet checks for `/stats/summary`.
//! (RBAC cannot narrow that to "its own node": a DaemonSet's pods share one
//! ServiceAccount. The exporter only ever asks its own node's kubelet.)

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, HTTPGetAction, Namespace, PodSecurityContext, PodSpec,
            PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Toleration,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::api::ObjectMeta;

use super::{Object, cluster_identity, core_rule, field_env};

pub const NAMESPACE: &str = "monitoring";
pub const NAME: &str = "node-exporter";
pub const METRICS_PORT: u16 = 9100;
pub const ADMIN_PORT: u16 = 9101;

fn selector() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".into(), NAME.into())])
}

fn labels() -> BTreeMap<String, String> {
    let mut labels = selector();
    labels.extend([
        ("app.kubernetes.io/component".to_owned(), "monitoring".to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "vigil".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "vigil".to_owned()),
    ]);
    labels
}

fn meta(name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespaced.then(|| NAMESPACE.into()),
        labels: Some(labels()),
        ..Default::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT.into()),
            ..Default::default()
        }),
        period_seconds: Some(10),
        ..Default::default()
    }
}

/// The namespace the monitoring components share.
pub fn namespace() -> Object {
    Object::Namespace(Namespace { metadata: meta(NAMESPACE, false), ..Default::default() })
}

pub fn objects(image: &str) -> Vec<Object> {
    // What the kubelet checks for `/stats/summary`, and nothing else.
    let identity = cluster_identity(
        meta(NAME, true),
        meta("vigil:node-exporter", false),
        vec![core_rule(&["nodes/stats"], &["get"])],
    );
    let container = Container {
        name: NAME.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(vec![field_env("NODE_NAME", "spec.nodeName"), field_env("NODE_IP", "status.hostIP")]),
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
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("10m".into())),
                ("memory".into(), Quantity("8Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("32Mi".into()))])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), METRICS_PORT.to_string()),
    ]);
    let daemon_set = DaemonSet {
        metadata: meta(NAME, true),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(selector()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    // Every node, the control plane included.
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }]),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut objects = vec![namespace()];
    objects.extend(identity);
    objects.push(Object::DaemonSet(daemon_set));
    objects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_grants_exactly_what_the_exporter_uses() {
        let objects = objects("img");
        let role =
            objects.iter().find_map(|o| if let Object::ClusterRole(r) = o { Some(r) } else { None }).unwrap();
        let rules = role.rules.as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].resources.as_deref(), Some(&["nodes/stats".to_owned()][..]));
        assert_eq!(rules[0].verbs, ["get"]);
    }
}
