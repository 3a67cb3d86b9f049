//! Command-line interface. Every option has an environment fallback.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ipnet::Ipv4Net;

use crate::{
    cluster::{self, Alerting, ClusterSpec, Failover, ScrapeLabels, defaults},
    drill::DrillFault,
};

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "A real kubeadm cluster in local node containers, watched by the vigil suite"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Cluster name: prefix of node containers, Docker network and kubeconfig context.
    #[arg(long, global = true, env = "VIGIL_CLUSTER", default_value = defaults::NAME, value_parser = cluster_name)]
    pub name: String,
    /// Build outputs and logs.
    #[arg(long, global = true, env = "VIGIL_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The kubeconfig `up` merges the cluster's context into and `down` removes it from.
    #[arg(long, global = true, env = "KUBECONFIG", value_parser = first_path)]
    pub kubeconfig: Option<PathBuf>,
    /// An inventory (YAML) of hosts reached over SSH: the cluster is made of them instead of
    /// node containers, and takes the inventory's name.
    #[arg(long, global = true, env = "VIGIL_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// Log filter for vigil's own diagnostics (tracing syntax).
    #[arg(long, global = true, env = "VIGIL_LOG", default_value = "warn")]
    pub log: String,
}

/// A DNS label, since the name ends up in container, network and context names.
fn cluster_name(value: &str) -> Result<String, String> {
    cluster::validate_name(value).map(|()| value.to_owned()).map_err(|e| e.to_string())
}

/// KUBECONFIG may be a list; kubectl writes to its first entry.
fn first_path(value: &str) -> Result<PathBuf, String> {
    std::env::split_paths(value).next().ok_or_else(|| "empty path".into())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the node image and component images from upstream, and the deployables' images (skipped when unchanged).
    Build(BuildArgs),
    /// Create the cluster (building what is missing), or finish creating it.
    Up(UpArgs),
    /// Remove every container, network and volume of the cluster, and its kubeconfig context;
    /// with --inventory, take the cluster and vigil's build off the hosts.
    Down,
    /// Show nodes and system pods.
    Status(StatusArgs),
    /// Print a standalone kubeconfig for the cluster.
    Kubeconfig,
    /// Print, or write, the kustomize layout of the workload and MetalLB (what `up` applies).
    Manifests {
        /// Write the files under this directory (the repository's `manifests/`) instead of printing.
        #[arg(long, env = "VIGIL_MANIFESTS_WRITE")]
        write: Option<PathBuf>,
        #[command(flatten)]
        build: BuildArgs,
    },
    /// Print, or write, the Prometheus rule files and Grafana dashboards (what `dashboards/` holds);
    /// `render` draws the dashboards' panels from the cluster's Prometheus, `links` opens them
    /// live in Prometheus's UI.
    #[command(args_conflicts_with_subcommands = true)]
    Dashboards {
        /// Write the files under this directory (the repository's `dashboards/`) instead of printing.
        #[arg(long, env = "VIGIL_DASHBOARDS_WRITE")]
        write: Option<PathBuf>,
        /// The labels of cAdvisor's series the rules select (as `vigil up --cadvisor-labels`).
        #[arg(long, env = "VIGIL_CADVISOR_LABELS", default_value = defaults::CADVISOR_LABELS)]
        cadvisor_labels: ScrapeLabels,
        #[command(subcommand)]
        action: Option<DashboardsAction>,
    },
    /// Check the hosts of an inventory (--inventory) over SSH: the inventory itself, each
    /// host's key and login, and what kubeadm needs of it (one line per problem, with its fix).
    Preflight {
        /// Make the changes vigil may make (swap off, kernel modules, sysctls; now and at
        /// every boot, in files of vigil's own), then check again.
        #[arg(long, env = "VIGIL_PREFLIGHT_FIX")]
        fix: bool,
    },
    /// Fault hooks: stop, kill, start, isolate or reconnect a node.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Break a worker that holds web pods under load, and report what happened.
    Drill(DrillArgs),
    /// List what Alertmanager holds: its alerts (silenced ones too) and the silences
    /// that have not expired.
    Alerts {
        /// Alertmanager's own objects, as JSON.
        #[arg(long, env = "VIGIL_JSON")]
        json: bool,
    },
    /// Read what Jaeger holds (`traces show ID`).
    Traces {
        #[command(subcommand)]
        what: TracesWhat,
    },
    /// Collect what explains a problem (`export logs [DIR]`).
    Export {
        #[command(subcommand)]
        what: ExportWhat,
    },
    /// Print the images the build produces (or the one named: `kubectl`, `node`, `web`, ...).
    Images {
        name: Option<String>,
        #[command(flatten)]
        build: BuildArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TracesWhat {
    /// One trace as a waterfall: each span's start, duration, service and
    /// operation under its parent (the id the drill report or a
    /// `traceparent` gives).
    Show {
        /// The trace id: up to 32 hexadecimal digits.
        id: String,
        /// Also draw it as SVG into this file.
        #[arg(long, env = "VIGIL_TRACE_SVG")]
        svg: Option<PathBuf>,
        /// Jaeger's own trace, as JSON, instead of the waterfall.
        #[arg(long, env = "VIGIL_JSON")]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportWhat {
    /// Every node's kubelet and containerd journals and inspect output, every
    /// pod's logs (current and previous), the cluster's events, `kubectl
    /// describe` of the nodes and of pods that are not Ready, and an index,
    /// in a dated folder under DIR.
    Logs {
        /// Where the dated folder is made.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Image repository the component images are tagged under (kubeadm's imageRepository).
    #[arg(long, env = "VIGIL_IMAGE_REPOSITORY", default_value = defaults::IMAGE_REPOSITORY)]
    pub image_repository: String,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Number of worker nodes.
    #[arg(long, env = "VIGIL_WORKERS", default_value_t = defaults::WORKERS)]
    pub workers: usize,
    /// Node network (a Docker bridge network); its upper half is kept for LoadBalancer addresses.
    #[arg(long, env = "VIGIL_SUBNET", default_value = defaults::NODE_SUBNET)]
    pub subnet: Ipv4Net,
    /// Pod network (flannel).
    #[arg(long, env = "VIGIL_POD_SUBNET", default_value = defaults::POD_SUBNET)]
    pub pod_subnet: Ipv4Net,
    /// Service network.
    #[arg(long, env = "VIGIL_SERVICE_SUBNET", default_value = defaults::SERVICE_SUBNET)]
    pub service_subnet: Ipv4Net,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Create the cluster only: no MetalLB, no workload.
    #[arg(long, env = "VIGIL_CLUSTER_ONLY")]
    pub cluster_only: bool,
    /// Print what `up` did as JSON on stdout (steps with timings, addresses).
    #[arg(long, env = "VIGIL_JSON")]
    pub json: bool,
    /// How fast a dead node is noticed and its pods moved: upstream's timings, or tuned ones.
    #[arg(long, env = "VIGIL_FAILOVER", value_enum, default_value_t = Failover::default())]
    pub failover: Failover,
    /// Where the alerter posts its notices (JSON signed per Standard Webhooks).
    #[arg(long, env = "VIGIL_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
    /// Alertmanager's webhook receiver, for the alerts it routes.
    #[arg(long, env = "VIGIL_ALERTMANAGER_WEBHOOK")]
    pub alertmanager_webhook: Option<String>,
    /// The labels of node-exporter's cAdvisor series in Prometheus: what your
    /// dashboards select (kube-prometheus's by default; the kubernetes-mixin's own is job=cadvisor).
    #[arg(long, env = "VIGIL_CADVISOR_LABELS", default_value = defaults::CADVISOR_LABELS)]
    pub cadvisor_labels: ScrapeLabels,
}

impl UpArgs {
    /// The options an inventory sets instead (its hosts, its networks), when
    /// given other values than their defaults.
    pub fn set_by_an_inventory(&self) -> Vec<&'static str> {
        let defaults = ClusterSpec::default();
        [
            ("--workers", self.workers != defaults.workers),
            ("--subnet", self.subnet != defaults.node_subnet),
            ("--pod-subnet", self.pod_subnet != defaults.pod_subnet),
            ("--service-subnet", self.service_subnet != defaults.service_subnet),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }

    pub fn spec(&self, name: &str) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            workers: self.workers,
            node_subnet: self.subnet,
            pod_subnet: self.pod_subnet,
            service_subnet: self.service_subnet,
            image_repository: self.build.image_repository.clone(),
            alerting: Alerting {
                webhook: self.alert_webhook.clone(),
                alertmanager_webhook: self.alertmanager_webhook.clone(),
            },
            failover: self.failover,
            cadvisor_labels: self.cadvisor_labels.clone(),
            ..ClusterSpec::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DashboardsAction {
    /// Draw every time-series panel of vigil's dashboards as SVG, from range
    /// queries against the cluster's Prometheus (variables set to All).
    Render {
        /// Where the SVGs go (default: the cache directory's `dashboards/`).
        #[arg(long, env = "VIGIL_RENDER_OUT")]
        out: Option<PathBuf>,
        /// The window drawn: the last N minutes.
        #[arg(long, env = "VIGIL_RENDER_MINUTES", default_value_t = 60)]
        minutes: u32,
    },
    /// Print, for each of vigil's dashboards, a link that opens it live in
    /// Prometheus's own UI: a graph per query of each time-series panel, a
    /// table for the others, variables set to All.
    Links {
        /// The window the graphs show: the last N minutes.
        #[arg(long, env = "VIGIL_RENDER_MINUTES", default_value_t = 60)]
        minutes: u32,
        /// Print them as JSON (dashboard uid to link).
        #[arg(long, env = "VIGIL_JSON")]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// How to break the node.
    #[arg(long, env = "VIGIL_DRILL_FAULT", value_enum, default_value_t = DrillFault::Kill)]
    pub fault: DrillFault,
    /// The worker to break (default: the one holding the most web pods).
    #[arg(long, env = "VIGIL_DRILL_NODE")]
    pub node: Option<String>,
    /// Requests per second through the LoadBalancer while it runs.
    #[arg(long, env = "VIGIL_DRILL_RATE", default_value_t = 20)]
    pub rate: u32,
    /// How long to wait for the verdict, and then for the node's recovery.
    #[arg(long, env = "VIGIL_DRILL_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Where the report goes (default: the cache's `drills/`).
    #[arg(long, env = "VIGIL_DRILL_REPORT_DIR")]
    pub report_dir: Option<PathBuf>,
    /// Print the report as JSON (each step in seconds since the fault).
    #[arg(long, env = "VIGIL_JSON")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output, including the addresses of what vigil deployed.
    #[arg(long, env = "VIGIL_JSON")]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodeAction {
    /// Stop the node container gracefully (systemd shuts down, as a powered-off machine would);
    /// on a host of an inventory, stop its kubelet, pods and containerd.
    Stop { node: String },
    /// Kill the node container at once (SIGKILL: a crashed machine); on a host of an
    /// inventory, SIGKILL its kubelet, pods and containerd.
    Kill { node: String },
    /// Start a stopped or killed node (container, or a host's Kubernetes) again.
    Start { node: String },
    /// Cut the node off the cluster network (every packet in or out dropped); it keeps running.
    Isolate { node: String },
    /// Put an isolated node back on the network, as it was.
    Reconnect { node: String },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap's own checks of the definition (conflicting names, bad defaults, env fallbacks).
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    /// What docs/operate.md promises: every option of every subcommand can come
    /// from the environment too.
    #[test]
    fn every_option_has_an_environment_fallback() {
        fn missing(command: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !arg.is_positional() && !builtin && arg.get_env().is_none() {
                    out.push(format!("{path} --{}", arg.get_long().unwrap_or(arg.get_id().as_str())));
                }
            }
            for sub in command.get_subcommands() {
                missing(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut out = vec![];
        missing(&super::Cli::command(), "vigil", &mut out);
        assert!(out.is_empty(), "options without an environment fallback: {out:?}");
    }
}
