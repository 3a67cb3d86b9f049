//! What a cluster is made of: the user's choices ([`ClusterSpec`]), its
//! defaults (defined once, for clap and for `ClusterSpec::default`), and the
//! values derived from them. The machines and their addresses come from the
//! provider (`NodeProvider::plan`).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::versions;

/// A configuration that cannot describe a working cluster.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The name ends up in container, network and kubeconfig names.
    #[error(
        "cluster name {0:?} is not a DNS label (lowercase letters, digits and '-', at most 40 characters): choose another with --name"
    )]
    BadName(String),
    /// The seed asks for at least two workers; more than the subnet holds cannot be addressed.
    #[error("{requested} workers requested: vigil supports 1 to {max} workers on a {subnet} node network")]
    WorkerCount { requested: usize, max: usize, subnet: Ipv4Net },
    /// Nodes need a gateway, one address each, and a range for load balancers.
    #[error("node network {0} is too small: use a /27 or larger with --subnet")]
    SubnetTooSmall(Ipv4Net),
    /// The Services vigil pins need an address each.
    #[error(
        "the LoadBalancer pool {first}-{last} holds {count} addresses; vigil's Services take {PINNED_LOAD_BALANCER_ADDRESSES}: give it at least that many"
    )]
    PoolTooSmall { first: Ipv4Addr, last: Ipv4Addr, count: u32 },
    /// Overlapping ranges make routing ambiguous inside the cluster.
    #[error("{a_name} {a} overlaps {b_name} {b}: choose ranges that do not overlap")]
    Overlap { a_name: &'static str, a: Ipv4Net, b_name: &'static str, b: Ipv4Net },
}

/// The role a node plays; kubeadm init runs on the control plane, join on workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

/// The user's choices for one cluster. Everything else is derived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub name: String,
    pub workers: usize,
    /// The network the nodes share, which the host routes to: the lower
    /// half for node addresses (given by the provider), the upper half for
    /// LoadBalancer addresses.
    pub node_subnet: Ipv4Net,
    pub pod_subnet: Ipv4Net,
    pub service_subnet: Ipv4Net,
    /// Where kubeadm looks for component images. Not a registry anybody can
    /// reach: every image under it is built here and preloaded on the nodes.
    pub image_repository: String,
    pub kubernetes_version: String,
    /// Where notices about nodes go (the alerter and Alertmanager).
    #[serde(default)]
    pub alerting: Alerting,
    /// How fast a dead node is noticed and its pods moved.
    #[serde(default)]
    pub failover: Failover,
    /// The labels Prometheus gives node-exporter's cAdvisor series.
    #[serde(default)]
    pub cadvisor_labels: ScrapeLabels,
    /// LoadBalancer addresses named by the user (an inventory's pool, first
    /// and last): None for the upper half of the node network, which vigil
    /// keeps free when it numbers the nodes itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_pool: Option<(Ipv4Addr, Ipv4Addr)>,
}

/// How many LoadBalancer addresses the Services vigil pins take (web,
/// Prometheus, Alertmanager, Jaeger, VictoriaLogs: the component table's
/// indices are below it).
pub const PINNED_LOAD_BALANCER_ADDRESSES: u32 = 5;

/// The scrape jobs Prometheus has besides the cAdvisor one.
pub const OTHER_JOBS: [&str; 3] = ["prometheus", "kube-state-metrics", "kubernetes-pods"];

/// The labels of a scrape job's targets, `job` among them: what the
/// dashboards a user already has select cAdvisor's series by. The default
/// is kube-prometheus's (`job="kubelet", metrics_path="/metrics/cadvisor"`);
/// the kubernetes-mixin's own default is `job=cadvisor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeLabels(pub std::collections::BTreeMap<String, String>);

impl Default for ScrapeLabels {
    fn default() -> Self {
        defaults::CADVISOR_LABELS.parse().expect("valid default")
    }
}

impl ScrapeLabels {
    pub fn job(&self) -> &str {
        &self.0["job"]
    }

    /// The PromQL matchers that select these series: `job="kubelet", metrics_path="/metrics/cadvisor"`.
    pub fn selector(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(", ")
    }
}

impl std::fmt::Display for ScrapeLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&pairs.join(","))
    }
}

impl std::str::FromStr for ScrapeLabels {
    type Err = String;

    /// `job=kubelet,metrics_path=/metrics/cadvisor`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut labels = std::collections::BTreeMap::new();
        for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                format!("{pair:?} is not label=value (e.g. job=kubelet,metrics_path=/metrics/cadvisor)")
            })?;
            let key = key.trim();
            let name_ok = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !key.starts_with("__");
            if !name_ok {
                return Err(format!(
                    "{key:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                ));
            }
            if ["namespace", "pod", "container", "node", "image", "id", "name"].contains(&key) {
                return Err(format!("{key:?} is one of the labels node-exporter sets on each series"));
            }
            if key.starts_with("kubernetes_") {
                return Err(format!("{key:?}: Prometheus sets kubernetes_* labels to the scraped pod"));
            }
            if key == "job" && OTHER_JOBS.contains(&value) {
                return Err(format!("job={value} is another of vigil's scrape jobs: choose another name"));
            }
            if value.is_empty() || value.contains('"') || value.contains('\\') {
                return Err(format!("the value of {key} must be non-empty, without quotes or backslashes"));
            }
            labels.insert(key.to_owned(), value.to_owned());
        }
        if !labels.contains_key("job") {
            return Err("the labels must include job (e.g. job=kubelet or job=cadvisor)".into());
        }
        Ok(ScrapeLabels(labels))
    }
}

/// How fast the cluster notices a dead node and moves its pods: the node
/// heartbeat, the node controller's grace, and the pods' default
/// not-ready/unreachable tolerations, set together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Failover {
    /// Kubernetes' defaults: NotReady after 50 s, pods evicted 300 s later.
    Upstream,
    /// Seconds instead of minutes, at the cost of more Lease writes and a
    /// shorter tolerance for a stalled node; the default, since a busy
    /// machine did not set a node NotReady in the drill bench's 10 minutes
    /// (docs/develop.md, Benchmarks).
    #[default]
    Tuned,
}

/// The timings a [`Failover`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// kubelet `nodeStatusUpdateFrequency`.
    pub node_status_update_seconds: u32,
    /// kubelet `nodeLeaseDurationSeconds` (renewed every quarter of it).
    pub node_lease_seconds: u32,
    /// kube-controller-manager `--node-monitor-period`.
    pub node_monitor_period_seconds: u32,
    /// kube-controller-manager `--node-monitor-grace-period`.
    pub node_monitor_grace_seconds: u32,
    /// kube-apiserver `--default-not-ready-toleration-seconds` and `--default-unreachable-toleration-seconds`.
    pub toleration_seconds: u32,
}

impl Failover {
    pub fn timings(self) -> Timings {
        match self {
            Failover::Upstream => Timings {
                node_status_update_seconds: 10,
                node_lease_seconds: 40,
                node_monitor_period_seconds: 5,
                node_monitor_grace_seconds: 50,
                toleration_seconds: 300,
            },
            // The Lease renewed every second, and a node NotReady after 8 s
            // without one: by then MetalLB's memberlist has moved the
            // address (about 6 s), and the endpoints on the dead node, which
            // fail every request sent to them, go with the NotReady.
            Failover::Tuned => Timings {
                node_status_update_seconds: 2,
                node_lease_seconds: 4,
                node_monitor_period_seconds: 1,
                node_monitor_grace_seconds: 8,
                toleration_seconds: 5,
            },
        }
    }
}

/// Receivers of the alerter's notices, outside the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alerting {
    /// The alerter posts its signed JSON notices here (none: only to Alertmanager).
    pub webhook: Option<String>,
    /// Alertmanager's webhook receiver (none: alerts stay in Alertmanager's UI).
    pub alertmanager_webhook: Option<String>,
}

/// The defaults, defined once: clap's `default_value`s and
/// [`ClusterSpec::default`] both read them.
pub mod defaults {
    pub const NAME: &str = "vigil";
    pub const WORKERS: usize = 2;
    pub const NODE_SUBNET: &str = "172.29.0.0/24";
    pub const POD_SUBNET: &str = "10.244.0.0/16";
    pub const SERVICE_SUBNET: &str = "10.96.0.0/16";
    pub const IMAGE_REPOSITORY: &str = "vigil.local";
    /// kube-prometheus's labels for cAdvisor's series.
    pub const CADVISOR_LABELS: &str = "job=kubelet,metrics_path=/metrics/cadvisor";
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            name: defaults::NAME.into(),
            workers: defaults::WORKERS,
            node_subnet: defaults::NODE_SUBNET.parse().expect("valid default"),
            pod_subnet: defaults::POD_SUBNET.parse().expect("valid default"),
            service_subnet: defaults::SERVICE_SUBNET.parse().expect("valid default"),
            image_repository: defaults::IMAGE_REPOSITORY.into(),
            kubernetes_version: versions::KUBERNETES.into(),
            alerting: Alerting::default(),
            failover: Failover::default(),
            cadvisor_labels: ScrapeLabels::default(),
            load_balancer_pool: None,
        }
    }
}

/// A network and what it is (`"pod network"`, a field's name).
pub type NamedNetwork<'a> = (&'a str, Ipv4Net);

/// Every pair of named networks of which one holds (part of) the other, in order.
pub fn overlaps<'a>(networks: &[NamedNetwork<'a>]) -> Vec<(NamedNetwork<'a>, NamedNetwork<'a>)> {
    let mut found = vec![];
    for (i, a) in networks.iter().enumerate() {
        for b in &networks[i + 1..] {
            if a.1.contains(&b.1) || b.1.contains(&a.1) {
                found.push((*a, *b));
            }
        }
    }
    found
}

/// Whether `name` can name a cluster: it ends up in container, network,
/// volume and kubeconfig names, so it must be a short DNS label.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let label_ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if label_ok { Ok(()) } else { Err(Error::BadName(name.into())) }
}

impl ClusterSpec {
    pub fn validate(&self) -> Result<(), Error> {
        validate_name(&self.name)?;
        if self.node_subnet.prefix_len() > 27 {
            return Err(Error::SubnetTooSmall(self.node_subnet));
        }
        if let Some((first, last)) = self.load_balancer_pool {
            let count = (u32::from(last) + 1).saturating_sub(u32::from(first));
            if count < PINNED_LOAD_BALANCER_ADDRESSES {
                return Err(Error::PoolTooSmall { first, last, count });
            }
        }
        let max = self.max_workers();
        if self.workers == 0 || self.workers > max {
            return Err(Error::WorkerCount { requested: self.workers, max, subnet: self.node_subnet });
        }
        let ranges = [
            ("node network", self.node_subnet),
            ("pod network", self.pod_subnet),
            ("service network", self.service_subnet),
        ];
        match overlaps(&ranges).first() {
            Some(&((a_name, a), (b_name, b))) => Err(Error::Overlap { a_name, a, b_name, b }),
            None => Ok(()),
        }
    }

    /// Nodes get addresses in the lower half of the node network (after the
    /// gateway); the upper half is left for load-balancer addresses. Hosts
    /// with addresses of their own (and a pool named apart) are bounded by
    /// the same 20.
    fn max_workers(&self) -> usize {
        match self.load_balancer_pool {
            Some(_) => 20,
            None => (self.node_subnet.hosts().count() / 2).saturating_sub(2).min(20),
        }
    }

    /// The `n`th host address of the node network (0: the gateway).
    pub fn node_network_host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.node_subnet.network()) + 1 + n)
    }

    pub fn control_plane_name(&self) -> String {
        format!("{}-control-plane", self.name)
    }

    /// kind's naming: `<name>-worker`, `<name>-worker2`, ...
    pub fn worker_name(&self, index: usize) -> String {
        match index {
            0 => format!("{}-worker", self.name),
            n => format!("{}-worker{}", self.name, n + 1),
        }
    }

    /// The LoadBalancer addresses: the pool named, or the second half of the node network.
    pub fn load_balancer_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        if let Some(pool) = self.load_balancer_pool {
            return pool;
        }
        let hosts = self.node_subnet.hosts().count() as u32;
        (self.node_network_host(hosts / 2), self.node_network_host(hosts - 1))
    }

    /// The `n`th LoadBalancer address, for the Services vigil pins (the
    /// component table says which takes which).
    pub fn load_balancer_ip(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.load_balancer_range().0) + n)
    }

    /// The in-cluster DNS service address kubeadm assigns: the tenth address
    /// of the service network.
    pub fn dns_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.service_subnet.network()) + 10)
    }

    /// The API server's ClusterIP (`kubernetes.default`): the service network's first address.
    pub fn api_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.service_subnet.network()) + 1)
    }

    pub fn kube_context(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_addresses() {
        let spec = ClusterSpec::default();
        spec.validate().unwrap();
        assert_eq!(spec.node_network_host(1).to_string(), "172.29.0.2");
        assert_eq!(spec.dns_service_ip().to_string(), "10.96.0.10");
        assert_eq!(spec.api_service_ip().to_string(), "10.96.0.1");
        let (first, last) = spec.load_balancer_range();
        assert_eq!((first.to_string(), last.to_string()), ("172.29.0.128".into(), "172.29.0.254".into()));
        assert_eq!(
            (spec.control_plane_name(), spec.worker_name(1)),
            ("vigil-control-plane".into(), "vigil-worker2".into())
        );
    }

    #[test]
    fn rejects_bad_names_counts_and_overlaps() {
        let bad_name = ClusterSpec { name: "Vigil_1".into(), ..Default::default() };
        assert!(matches!(bad_name.validate(), Err(Error::BadName(_))));
        assert!(validate_name("Bad Name!").unwrap_err().to_string().contains("--name"));
        assert!(validate_name("-x").is_err() && validate_name(&"a".repeat(41)).is_err());
        validate_name("vigil-e2e").unwrap();

        let none = ClusterSpec { workers: 0, ..Default::default() };
        assert!(matches!(none.validate(), Err(Error::WorkerCount { requested: 0, .. })));

        let tiny = ClusterSpec { node_subnet: "172.29.0.0/29".parse().unwrap(), ..Default::default() };
        assert_eq!(tiny.validate(), Err(Error::SubnetTooSmall(tiny.node_subnet)));

        let overlap = ClusterSpec { pod_subnet: "10.96.0.0/12".parse().unwrap(), ..Default::default() };
        let err = overlap.validate().unwrap_err();
        assert!(err.to_string().contains("pod network 10.96.0.0/12 overlaps service network"), "{err}");
    }

    #[test]
    fn a_pool_named_apart_holds_every_pinned_address() {
        let pool = |last: [u8; 4]| ClusterSpec {
            load_balancer_pool: Some(([192, 168, 56, 240].into(), last.into())),
            ..Default::default()
        };
        pool([192, 168, 56, 244]).validate().unwrap();
        assert_eq!(pool([192, 168, 56, 244]).load_balancer_ip(4).to_string(), "192.168.56.244");
        let err = pool([192, 168, 56, 243]).validate().unwrap_err();
        assert!(matches!(err, Error::PoolTooSmall { count: 4, .. }), "{err}");
    }

    #[test]
    fn the_worker_count_is_bounded_by_the_lower_half() {
        let spec =
            ClusterSpec { node_subnet: "10.50.0.0/27".parse().unwrap(), workers: 13, ..Default::default() };
        spec.validate().unwrap();
        assert_eq!(spec.load_balancer_range().0.to_string(), "10.50.0.16");
        let too_many = ClusterSpec { workers: 14, ..spec };
        assert!(matches!(too_many.validate(), Err(Error::WorkerCount { max: 13, .. })));
    }
}
