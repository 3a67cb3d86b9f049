//! The add-ons' pods as the table's objects describe them: which
//! containers run where, how many, which are scraped by annotation and
//! which export spans. The end-to-end checks read their expectations from
//! here, so a new deployable is expected without editing a check.

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::PodTemplateSpec,
};

use crate::{ADDONS, Input, prometheus};

/// How many of a pod run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    /// A Deployment's count.
    Fixed(i32),
    /// A DaemonSet's pod on every node.
    EveryNode,
}

impl Replicas {
    /// The count on a cluster of `nodes` nodes.
    pub fn on(self, nodes: usize) -> usize {
        match self {
            Replicas::Fixed(n) => usize::try_from(n).unwrap_or_default(),
            Replicas::EveryNode => nodes,
        }
    }
}

/// One container of an add-on's pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub namespace: String,
    /// The Deployment or DaemonSet.
    pub workload: String,
    pub name: String,
    pub replicas: Replicas,
    /// Prometheus's annotated-pods job scrapes it: its pod asks to be
    /// scraped and it has a port of a name that job keeps.
    pub scraped_by_annotation: bool,
    /// Its `OTEL_SERVICE_NAME`: the service its spans are under.
    pub traced_as: Option<String>,
}

/// Every container of every add-on's pod templates, in table order.
pub fn containers(input: &Input) -> Vec<Container> {
    let mut found = vec![];
    for addon in ADDONS {
        let objects = (addon.objects)(input).unwrap_or_else(|e| panic!("{}: {e}", addon.name));
        for object in &objects {
            let workload = if let Some(d) = object.to_typed::<Deployment>() {
                let replicas = Replicas::Fixed(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1));
                d.spec.map(|s| (d.metadata, s.template, replicas))
            } else if let Some(d) = object.to_typed::<DaemonSet>() {
                d.spec.map(|s| (d.metadata, s.template, Replicas::EveryNode))
            } else {
                None
            };
            if let Some((meta, template, replicas)) = workload {
                found.extend(of_template(&meta, &template, replicas));
            }
        }
    }
    found
}

fn of_template(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    template: &PodTemplateSpec,
    replicas: Replicas,
) -> Vec<Container> {
    let annotated = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .is_some_and(|a| a.get("prometheus.io/scrape").is_some_and(|v| v == "true"));
    let kept_port_names: Vec<&str> = prometheus::METRICS_PORT_NAMES.split('|').collect();
    template
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .map(|c| Container {
            namespace: meta.namespace.clone().unwrap_or_default(),
            workload: meta.name.clone().unwrap_or_default(),
            name: c.name.clone(),
            replicas,
            scraped_by_annotation: annotated
                && c.ports
                    .iter()
                    .flatten()
                    .any(|p| p.name.as_deref().is_some_and(|n| kept_port_names.contains(&n))),
            traced_as: c
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "OTEL_SERVICE_NAME")
                .and_then(|e| e.value.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_pods_are_found_with_their_scraping_and_tracing() {
        let images = crate::crates().into_iter().map(|c| (c, format!("img/{c}"))).collect();
        let spec = vigil_model::cluster::ClusterSpec::default();
        let input = Input { spec: &spec, images: &images, api_server: None };
        let all = containers(&input);
        let find =
            |name: &str| all.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("{name}: {all:?}"));
        assert_eq!(find("web").replicas, Replicas::Fixed(3));
        assert!(find("web").scraped_by_annotation && find("probe-server").scraped_by_annotation);
        assert_eq!(find("node-exporter").replicas.on(3), 3);
        assert_eq!(find("web").traced_as.as_deref(), Some("web"));
        assert_eq!(find("alerter").traced_as.as_deref(), Some("alerter"));
        // kube-state-metrics has its own job, not the annotation's; it exports no spans.
        let ksm = find("kube-state-metrics");
        assert!(!ksm.scraped_by_annotation && ksm.traced_as.is_none());
    }
}
