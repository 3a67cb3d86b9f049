//! The cluster remembers the choices it was made with. `up` writes them on
//! every node as it provisions it ([`NODE_PATH`]) and in the cluster (the
//! ConfigMap `kube-system/vigil-cluster`, for `kubectl` and in-cluster
//! readers); `vigil_provider::existing` reads them back from the nodes;
//! and a second `up` whose choices differ where kubeadm fixed them is
//! refused before anything is built, naming the fields and the fix.
//!
//! What a second `up` may change, and applies: the notice receivers (their
//! Secrets follow `--alert-webhook` and `--alertmanager-webhook`) and the
//! cAdvisor job's labels (Prometheus's configuration, whose checksum rolls
//! its pod). The webhook URLs are never saved: their path or query can be a
//! credential, and they live in Secrets only.

use serde::{Deserialize, Serialize};

use crate::cluster::{Alerting, ClusterSpec};

/// On every node, readable by root only like the rest of `/etc/vigil`.
pub const NODE_PATH: &str = "/etc/vigil/cluster.json";
pub const CONFIG_MAP: &str = "vigil-cluster";
pub const CONFIG_MAP_NAMESPACE: &str = "kube-system";
pub const CONFIG_MAP_KEY: &str = "cluster.json";

/// What is written: the spec without its receivers, and which vigil wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The version of the vigil that made or last changed the cluster.
    pub vigil: String,
    pub spec: ClusterSpec,
}

impl Saved {
    pub fn of(spec: &ClusterSpec) -> Self {
        Saved {
            vigil: env!("CARGO_PKG_VERSION").into(),
            spec: ClusterSpec { alerting: Alerting::default(), ..spec.clone() },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a spec serializes") + "\n"
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// One choice a second `up` asks to change that it cannot change in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub field: &'static str,
    /// The `vigil up` option that sets it (None: fixed by the vigil binary).
    pub flag: Option<&'static str>,
    pub saved: String,
    pub wanted: String,
}

/// The choices of `wanted` that differ from `saved` and that kubeadm, the
/// node machines or the pod network fixed when the cluster was made.
pub fn fixed_differences(saved: &ClusterSpec, wanted: &ClusterSpec) -> Vec<Difference> {
    // Destructured, so that a new field cannot be added without deciding here
    // whether a second `up` may change it.
    let ClusterSpec {
        name: _,
        workers,
        node_subnet,
        pod_subnet,
        service_subnet,
        image_repository,
        kubernetes_version,
        failover,
        alerting: _,
        cadvisor_labels: _,
        // MetalLB's pool is applied again by every `up`.
        load_balancer_pool: _,
    } = saved;
    let mut differences = Vec::new();
    let mut compare = |field, flag, saved: String, wanted: String| {
        if saved != wanted {
            differences.push(Difference { field, flag, saved, wanted });
        }
    };
    compare("workers", Some("--workers"), workers.to_string(), wanted.workers.to_string());
    compare("node network", Some("--subnet"), node_subnet.to_string(), wanted.node_subnet.to_string());
    compare("pod network", Some("--pod-subnet"), pod_subnet.to_string(), wanted.pod_subnet.to_string());
    compare(
        "service network",
        Some("--service-subnet"),
        service_subnet.to_string(),
        wanted.service_subnet.to_string(),
    );
    compare(
        "image repository",
        Some("--image-repository"),
        image_repository.clone(),
        wanted.image_repository.clone(),
    );
    compare("failover timings", Some("--failover"), failover_name(*failover), failover_name(wanted.failover));
    compare("Kubernetes version", None, kubernetes_version.clone(), wanted.kubernetes_version.clone());
    differences
}

fn failover_name(failover: crate::cluster::Failover) -> String {
    clap::ValueEnum::to_possible_value(&failover).map(|v| v.get_name().to_owned()).unwrap_or_default()
}

/// A second `up` asked for choices the cluster was not made with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}", describe(.cluster, .differences))]
pub struct Differs {
    pub cluster: String,
    pub differences: Vec<Difference>,
}

fn describe(cluster: &str, differences: &[Difference]) -> String {
    let listed: Vec<String> = differences
        .iter()
        .map(|d| format!("{} is {} (this `up` asks for {})", d.field, d.saved, d.wanted))
        .collect();
    let flags: Vec<String> =
        differences.iter().filter_map(|d| d.flag.map(|flag| format!("{flag} {}", d.saved))).collect();
    let name_flag =
        if cluster == crate::cluster::defaults::NAME { String::new() } else { format!(" --name {cluster}") };
    let same = match flags.is_empty() {
        true => "run `vigil up` from the vigil that made it".to_owned(),
        false => format!("run `vigil{name_flag} up {}`", flags.join(" ")),
    };
    let version = match differences.iter().any(|d| d.flag.is_none()) {
        true => " (vigil does not upgrade a cluster's Kubernetes)",
        false => "",
    };
    format!(
        "cluster {cluster} was made with other choices, which it cannot change in place: {}. To keep it, {same}; to make it anew with yours, `vigil{name_flag} down` first{version}",
        listed.join("; ")
    )
}

/// Refuses `wanted` when it differs from what the cluster was made with.
pub fn check(saved: &Saved, wanted: &ClusterSpec) -> Result<(), Differs> {
    let differences = fixed_differences(&saved.spec, wanted);
    match differences.is_empty() {
        true => Ok(()),
        false => Err(Differs { cluster: wanted.name.clone(), differences }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Failover;

    fn made() -> ClusterSpec {
        ClusterSpec {
            name: "lab".into(),
            alerting: Alerting {
                webhook: Some("https://hooks.example/T0/secret-token".into()),
                alertmanager_webhook: Some("https://am.example/?key=hunter2".into()),
            },
            ..ClusterSpec::default()
        }
    }

    #[test]
    fn the_receivers_are_never_saved_and_the_rest_comes_back() {
        let saved = Saved::of(&made());
        let text = saved.to_json();
        assert!(!text.contains("secret-token") && !text.contains("hunter2"), "{text}");
        let read = Saved::from_json(&text).unwrap();
        assert_eq!(read.spec, ClusterSpec { alerting: Alerting::default(), ..made() });
        assert_eq!(read.vigil, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn receivers_and_scrape_labels_may_change_in_place() {
        let saved = Saved::of(&made());
        let wanted = ClusterSpec {
            alerting: Alerting::default(),
            cadvisor_labels: "job=cadvisor".parse().unwrap(),
            ..made()
        };
        assert_eq!(check(&saved, &wanted), Ok(()));
    }

    #[test]
    fn fixed_choices_are_refused_naming_each_field_and_the_flags_that_keep_the_cluster() {
        let saved = Saved::of(&made());
        let wanted = ClusterSpec {
            pod_subnet: "10.245.0.0/16".parse().unwrap(),
            failover: Failover::Upstream,
            workers: 3,
            ..made()
        };
        let err = check(&saved, &wanted).unwrap_err();
        let fields: Vec<&str> = err.differences.iter().map(|d| d.field).collect();
        assert_eq!(fields, ["workers", "pod network", "failover timings"]);
        let message = err.to_string();
        for part in [
            "cluster lab was made with other choices",
            "pod network is 10.244.0.0/16 (this `up` asks for 10.245.0.0/16)",
            "run `vigil --name lab up --workers 2 --pod-subnet 10.244.0.0/16 --failover tuned`",
            "`vigil --name lab down` first",
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
        assert!(!message.contains("upgrade"), "{message}");
    }

    #[test]
    fn another_kubernetes_is_refused_without_a_flag_to_suggest() {
        let saved = Saved::of(&ClusterSpec { kubernetes_version: "v1.0.0".into(), ..ClusterSpec::default() });
        let message = check(&saved, &ClusterSpec::default()).unwrap_err().to_string();
        assert!(message.contains("Kubernetes version is v1.0.0"), "{message}");
        assert!(message.contains("run `vigil up` from the vigil that made it"), "{message}");
        assert!(message.contains("`vigil down` first (vigil does not upgrade"), "{message}");
    }
}
