//! kube-state-metrics v2.16.0, built from its Go module: the object state
//! (`kube_pod_info`, `kube_node_info`, requests and limits, quotas, owners)
//! that the dashboards users already have join cAdvisor's series with.
//! Only the collectors those dashboards and vigil's rules read are enabled,
//! and its ServiceAccount may only list and watch exactly those resources.

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, Probe};
use kube::api::ObjectMeta;

use super::{
    Addon, ImageFrom, ImageRun, Manifests, ROLLOUT, Rollout, UpstreamImage, cluster_identity, http_get_probe,
    locked_down,
    node_exporter::{self, NAMESPACE, monitoring_deployment, monitoring_meta},
    non_root_pod, resources, rule,
};
use crate::apply::Object;
use vigil_model::versions;

pub const NAME: &str = "kube-state-metrics";
/// Object metrics (`/metrics`), and `/livez`.
pub const METRICS_PORT: u16 = 8080;
/// Its own metrics, and `/readyz`.
pub const TELEMETRY_PORT: u16 = 8081;
/// The port name Prometheus's `kube-state-metrics` job scrapes.
pub const METRICS_PORT_NAME: &str = "http-metrics";
/// Upstream's image runs as `nobody`.
const USER: i64 = 65534;

/// The collectors enabled, with the API group and resource each lists and watches.
pub const COLLECTORS: [(&str, &str, &str); 10] = [
    ("pods", "", "pods"),
    ("nodes", "", "nodes"),
    ("namespaces", "", "namespaces"),
    ("resourcequotas", "", "resourcequotas"),
    ("persistentvolumeclaims", "", "persistentvolumeclaims"),
    ("deployments", "apps", "deployments"),
    ("replicasets", "apps", "replicasets"),
    ("statefulsets", "apps", "statefulsets"),
    ("daemonsets", "apps", "daemonsets"),
    ("jobs", "batch", "jobs"),
];

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "kube-state-metrics: object state for the dashboards' joins",
    crates: &[],
    images: &[IMAGE],
    needs: &[],
    installed_after: &[],
    namespace: Some(node_exporter::namespace),
    secrets: None,
    objects: |input| Ok(objects(&image(&input.spec.image_repository))),
    after_rollout: None,
    rollout: &[Rollout::Deployment { namespace: NAMESPACE, name: NAME, replicas: 1 }],
    address: None,
    manifests: Manifests::Generated { dir: NAMESPACE },
    timeout: ROLLOUT,
};

/// Upstream's image runs as 65534 (nobody); so does this one.
pub const IMAGE: UpstreamImage = UpstreamImage {
    name: NAME,
    version: versions::KUBE_STATE_METRICS,
    replaces: None,
    from: ImageFrom::Scratch,
    binary: "kube-state-metrics",
    path: "/kube-state-metrics",
    run: ImageRun::AsUser("65534:65534"),
    extra: &[],
};

pub fn image(repository: &str) -> String {
    IMAGE.reference(repository)
}

fn meta(name: &str, namespaced: bool) -> ObjectMeta {
    monitoring_meta(NAME, name, namespaced)
}

/// list and watch on each collector's resource, one rule per API group.
fn rules() -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    let mut groups: Vec<&str> = vec![];
    for (_, group, _) in COLLECTORS {
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    groups
        .into_iter()
        .map(|group| {
            let resources: Vec<&str> =
                COLLECTORS.iter().filter(|(_, g, _)| *g == group).map(|(_, _, r)| *r).collect();
            rule(group, &resources, &["list", "watch"], &[])
        })
        .collect()
}

pub fn objects(image: &str) -> Vec<Object> {
    let identity = cluster_identity(meta(NAME, true), meta("vigil:kube-state-metrics", false), rules());
    let probe = |port: u16, path: &str| Probe {
        period_seconds: Some(10),
        initial_delay_seconds: Some(2),
        ..http_get_probe(port, path)
    };
    let collectors: Vec<&str> = COLLECTORS.iter().map(|(name, _, _)| *name).collect();
    let container = Container {
        name: NAME.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            format!("--port={METRICS_PORT}"),
            format!("--telemetry-port={TELEMETRY_PORT}"),
            format!("--resources={}", collectors.join(",")),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some(METRICS_PORT_NAME.into()),
                container_port: METRICS_PORT.into(),
                ..Default::default()
            },
            ContainerPort {
                name: Some("telemetry".into()),
                container_port: TELEMETRY_PORT.into(),
                ..Default::default()
            },
        ]),
        liveness_probe: Some(probe(METRICS_PORT, "/livez")),
        readiness_probe: Some(probe(TELEMETRY_PORT, "/readyz")),
        resources: Some(resources(&[("cpu", "10m"), ("memory", "32Mi")], &[("memory", "128Mi")])),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    let deployment = monitoring_deployment(
        NAME,
        PodSpec {
            service_account_name: Some(NAME.into()),
            security_context: Some(non_root_pod(USER, None)),
            containers: vec![container],
            ..Default::default()
        },
    );
    let mut objects = Vec::from(identity);
    objects.push(Object::typed(deployment));
    objects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_lists_and_watches_exactly_the_enabled_collectors() {
        let objects = objects("img");
        let role =
            objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::rbac::v1::ClusterRole>()).unwrap();
        let mut granted = vec![];
        for rule in role.rules.as_ref().unwrap() {
            assert_eq!(rule.verbs, ["list", "watch"]);
            assert!(rule.resource_names.is_none());
            for resource in rule.resources.as_ref().unwrap() {
                granted.push((rule.api_groups.as_ref().unwrap()[0].clone(), resource.clone()));
            }
        }
        let wanted: Vec<_> = COLLECTORS.iter().map(|(_, g, r)| ((*g).to_owned(), (*r).to_owned())).collect();
        granted.sort();
        let mut wanted_sorted = wanted.clone();
        wanted_sorted.sort();
        assert_eq!(granted, wanted_sorted);
        let text: String = objects.iter().map(Object::to_yaml).collect();
        assert!(text.contains("--resources=pods,nodes,namespaces,resourcequotas,"), "{text}");
    }
}
