//! Where nodes come from. A [`NodeProvider`] plans, creates, lists, powers
//! and removes the machines of a cluster; a [`Node`] is something commands
//! run on and files are copied into. The rest of vigil sees only these two
//! traits (as kind's actions see only its `Provider` and `nodes.Node`): how a
//! command reaches its node (docker exec here, SSH for real hosts) stays
//! inside the provider's own module. What works over any transport (image
//! loading, the network partition, log hints) is in [`nodeutils`].
//!
//! A new provider is one crate implementing both traits (as
//! `vigil-provider-docker` does) plus the type that describes its machines
//! (Docker: a node network; SSH: an inventory), a variant of [`Machines`]
//! and one arm in the CLI's `provider::connect`. What it tells the rest
//! of vigil about its machines is typed here: [`ProviderInfo`] (read by the
//! kubeadm configuration, as kind's `Provider.Info()`), [`MachineState`], the
//! [`NodeArtefact`] it makes machines from, and its faults, which it causes
//! out of band ([`NodeProvider::fault`]: a partition made over SSH would cut
//! the very connection that has to mend it).

/// An in-memory provider for other crates' tests (the `fake` feature).
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod nodeutils;

use std::{fmt, net::Ipv4Addr, sync::Arc};

use async_trait::async_trait;
use serde::Serialize;

use vigil_model::cluster::{ClusterSpec, Role};

/// A provider's own failure (its API, its transport), boxed so that callers
/// never name the provider's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A command that ran on a node and failed, or could not be run there.
#[derive(Debug, thiserror::Error)]
pub struct CommandError {
    pub node: String,
    pub command: String,
    /// None when the command could not be started at all.
    pub exit_code: Option<i64>,
    pub output: String,
    pub cause: Option<String>,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.exit_code, &self.cause) {
            (_, Some(cause)) => write!(f, "on node {}: cannot run `{}`: {cause}", self.node, self.command)?,
            (Some(code), None) => write!(f, "on node {}: `{}` exited with {code}", self.node, self.command)?,
            (None, None) => write!(f, "on node {}: `{}` failed", self.node, self.command)?,
        }
        let tail: Vec<&str> = self.output.lines().rev().take(20).collect();
        if !tail.is_empty() {
            write!(f, "; last output:")?;
            for line in tail.iter().rev() {
                write!(f, "\n    {line}")?;
            }
        }
        Ok(())
    }
}

/// A provider operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The provider cannot be used at all (its engine, its inventory); the
    /// message names the cause and the fix.
    #[error(transparent)]
    Unavailable(BoxError),
    /// The provider's API refused a request or could not be reached.
    #[error("{provider}: {what}")]
    Backend {
        provider: &'static str,
        what: String,
        #[source]
        source: BoxError,
    },
    /// The node network would overlap a network the host already routes.
    #[error(
        "node network {subnet} overlaps {other} ({other_subnet}): choose a free range with --subnet (or VIGIL_SUBNET)"
    )]
    SubnetClash { subnet: ipnet::Ipv4Net, other: String, other_subnet: ipnet::Ipv4Net },
    /// A machine or network with one of vigil's names exists but is not vigil's.
    #[error(
        "{kind} {name} exists but was not created by vigil for cluster {cluster}: remove or rename it, or choose another --name"
    )]
    NameTaken { kind: &'static str, name: String, cluster: String },
    /// The network exists with other settings than asked for.
    #[error(
        "network {name} exists with subnet {actual}, not {wanted}: run `vigil down` first, or use --subnet {actual}"
    )]
    NetworkMismatch { name: String, actual: String, wanted: ipnet::Ipv4Net },
    /// Not enough room for the nodes' disks; its fix is in the provider's terms.
    #[error(transparent)]
    Disk(vigil_host::disk::LowDisk),
    /// A fault hook's command failed on the node.
    #[error("{fault} {node} failed")]
    Fault {
        node: String,
        fault: &'static str,
        #[source]
        source: Box<CommandError>,
    },
    /// The named node is not part of the cluster.
    #[error("no node named {name} in cluster {cluster} (nodes: {known}); `vigil status` lists them")]
    UnknownNode { name: String, cluster: String, known: String },
    /// Nothing of the named cluster exists.
    #[error("there is no cluster named {0:?} (no machine of it exists): `vigil up --name {0}` creates it")]
    NoSuchCluster(String),
    /// Creating or starting one machine failed.
    #[error("node {node}: {step} failed; its log: {log_hint}")]
    Node {
        node: String,
        step: &'static str,
        log_hint: String,
        #[source]
        source: BoxError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a successful command printed.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// One machine of the plan: its name (container name, hostname and
/// Kubernetes node name at once), its role and the address the provider
/// gives it on the node network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSpec {
    pub name: String,
    pub role: Role,
    pub ip: Ipv4Addr,
}

/// Something commands run on and files are copied into.
#[async_trait]
pub trait Node: Send + Sync {
    fn name(&self) -> &str;

    /// How a person runs `command` on this node from the host, for the
    /// hints in error messages (`docker exec NODE ...`, `ssh HOST ...`).
    fn shell_hint(&self, command: &str) -> String;

    /// Where the machine's own boot output is, for hints.
    fn console_hint(&self) -> String;

    /// Runs `argv`, feeding `stdin`; fails on a non-zero exit.
    async fn run(&self, argv: &[&str], stdin: Option<Vec<u8>>) -> Result<Output, CommandError>;

    /// Copies `contents` into a file on the node, atomically. Through `run`
    /// by default, which every transport can do. The contents travel on
    /// stdin, never on a command line; the file is created owner-only
    /// (umask 077, so a secret is never readable before the chmod) and gets
    /// `mode` once complete.
    async fn copy_in(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), CommandError> {
        self.run(&["sh", "-c", &copy_in_script(path, mode)], Some(contents.to_vec())).await.map(|_| ())
    }
}

/// The shell script of [`Node::copy_in`]: reads the file from stdin.
pub fn copy_in_script(path: &str, mode: u32) -> String {
    format!(
        "set -e; umask 077; mkdir -p \"$(dirname '{path}')\"; cat > '{path}.vigil-tmp'; chmod {mode:o} '{path}.vigil-tmp'; mv '{path}.vigil-tmp' '{path}'"
    )
}

/// The state of one machine as the provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub role: Role,
    pub state: MachineState,
    /// The address on the cluster network; None while the machine has none.
    pub ip: Option<String>,
}

/// Whether a machine runs, as its provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineState {
    Running,
    /// Powered off, or never started: commands cannot reach it.
    Stopped,
    /// Anything else the provider reports (paused, restarting, ...), in its words.
    Other(String),
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MachineState::Running => "running",
            MachineState::Stopped => "stopped",
            MachineState::Other(state) => state,
        })
    }
}

impl Serialize for MachineState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What kind of machine a provider makes, as far as kubeadm's and the
/// kubelet's settings care (kind's `Provider.Info()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    /// Containers that share the host's kernel, disk and memory: kubeadm's
    /// preflight (kernel modules, system verification) does not apply,
    /// kube-proxy leaves the host-wide conntrack table alone, the kubelet
    /// tolerates the host's swap and evicts at absolute disk amounts (its
    /// percentages would measure the host's whole disk).
    pub shares_host_kernel: bool,
    /// The cgroup the kubelet puts pods under, when the machine gives it one
    /// of its own (a node container's, made by its entrypoint); None: the
    /// kubelet's default.
    pub kubelet_cgroup_root: Option<String>,
}

impl ProviderInfo {
    /// Containers on the host's kernel whose entrypoint makes the kubelet a
    /// cgroup of its own (`/kubelet`), as kind's node image does.
    pub fn node_containers() -> Self {
        ProviderInfo { shares_host_kernel: true, kubelet_cgroup_root: Some("/kubelet".into()) }
    }
}

/// What vigil's build made for the machines: the node image, whose root
/// filesystem holds every binary and unit a node runs (kubelet, kubeadm,
/// kubectl, containerd, runc, the CNI plugins) and names the containerd
/// state with the cluster's images preloaded. Node containers run it; a
/// provider for real hosts copies its files out and imports the images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeArtefact {
    pub image: String,
}

/// What a provider for real hosts copies onto them, taken from the node
/// artefact (so a host runs exactly what a node container runs). Made by the
/// caller, which holds the build: the provider never names Docker.
#[async_trait]
pub trait HostPayload: Send + Sync {
    /// vigil's build as one tar rooted at `/`: binaries, configuration, units.
    async fn bundle(&self, artefact: &NodeArtefact) -> std::result::Result<Vec<u8>, BoxError>;
    /// The image references a node's containerd holds before any pod runs.
    async fn image_refs(&self, artefact: &NodeArtefact) -> std::result::Result<Vec<String>, BoxError>;
    /// Those images as one archive (`docker save`), for `ctr images import`.
    async fn images(&self, refs: &[String]) -> std::result::Result<Vec<u8>, BoxError>;
    /// containerd's root with those images already unpacked, as one tar
    /// (extended attributes kept): what a host whose containerd holds
    /// nothing yet starts from, instead of importing and unpacking them.
    async fn containerd_state(&self, artefact: &NodeArtefact) -> std::result::Result<Vec<u8>, BoxError>;
}

/// Which machines a cluster is made of: what [`connect`] is given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Machines {
    /// Node containers on the local Docker Engine (`DOCKER_HOST`, or its socket).
    #[default]
    NodeContainers,
    /// The hosts an inventory file lists, reached over SSH.
    Inventory(std::path::PathBuf),
}

/// Machines numbered on the node network: addresses from its lower half,
/// after the gateway, the control plane first, then the workers. The upper
/// half is the cluster's LoadBalancer range. For providers whose machines
/// take the addresses vigil gives them.
pub fn numbered_plan(spec: &ClusterSpec) -> Vec<NodeSpec> {
    let control_plane =
        NodeSpec { name: spec.control_plane_name(), role: Role::ControlPlane, ip: spec.node_network_host(1) };
    let workers = (0..spec.workers).map(|i| NodeSpec {
        name: spec.worker_name(i),
        role: Role::Worker,
        ip: spec.node_network_host(2 + i as u32),
    });
    std::iter::once(control_plane).chain(workers).collect()
}

/// What `down` removed, for its report.
#[derive(Debug, Default)]
pub struct Removed {
    pub machines: Vec<String>,
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
    /// What was found and left in place, and why (a host's own files, ...).
    pub left: Vec<String>,
}

/// How a machine is powered off or on: the faults only the provider can cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Orderly shutdown (systemd halts, as a powered-off machine would).
    Stop,
    /// Everything killed at once: a crashed machine.
    Kill,
    Start,
}

/// How a fault hook breaks (or mends) a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Power(Power),
    /// Cut off the cluster network (all its traffic dropped), still running.
    Isolate,
    Reconnect,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Power(Power::Stop) => "stop",
            Fault::Power(Power::Kill) => "kill",
            Fault::Power(Power::Start) => "start",
            Fault::Isolate => "isolate",
            Fault::Reconnect => "reconnect",
        }
    }
}

#[async_trait]
pub trait NodeProvider: Send + Sync {
    /// The provider's name, for messages.
    fn name(&self) -> &'static str;

    /// What its machines are, for the kubeadm and kubelet configuration.
    fn info(&self) -> ProviderInfo;

    /// The machines of `spec`: names, roles, and the addresses this
    /// provider gives them. Control plane first.
    fn plan(&self, spec: &ClusterSpec) -> Vec<NodeSpec>;

    /// Cheap checks before any long work: names free or already ours, the
    /// node network free, enough disk for the nodes.
    async fn preflight(&self, spec: &ClusterSpec) -> Result<()>;

    /// Creates the machines of `nodes` that do not exist yet (and the
    /// network they share) and starts those that are stopped. Safe to call
    /// again, and for a part of the plan at a time. Long work says what it
    /// is doing on `line`.
    async fn provision(
        &self,
        spec: &ClusterSpec,
        nodes: &[NodeSpec],
        artefact: &NodeArtefact,
        line: &vigil_host::progress::Line,
    ) -> Result<()>;

    /// The cluster's machines, control plane first.
    async fn list_nodes(&self, cluster: &str) -> Result<Vec<NodeInfo>>;

    /// What the machines of an existing cluster tell of it (its node
    /// network, its number of workers), for a cluster an older vigil made
    /// without saving its spec; fails when there is none. [`existing`]
    /// prefers the spec saved on the nodes.
    async fn discover(&self, name: &str) -> Result<ClusterSpec>;

    fn node(&self, name: &str) -> Arc<dyn Node>;

    /// Breaks or mends `node` out of band: its power, or its network cut
    /// off (and restored) without relying on that network.
    async fn fault(&self, node: &str, fault: Fault) -> Result<()>;

    /// What the provider knows of a machine (its state, image, mounts,
    /// addresses), as JSON: `docker inspect` for node containers. Readable
    /// when the machine is stopped.
    async fn inspect(&self, node: &str) -> Result<String>;

    /// Removes everything labelled as this cluster's, and nothing else.
    async fn delete_cluster(&self, cluster: &str) -> Result<Removed>;

    /// Every command run on the machines so far, as a Markdown runbook
    /// titled `title`, when the provider records them (SSH does: it is the
    /// documentation of what was done to hosts the user owns).
    fn runbook(&self, _title: &str) -> Option<String> {
        None
    }
}

/// The control plane of `spec`, as the provider plans it (None only for a
/// provider that plans none).
pub fn control_plane(provider: &dyn NodeProvider, spec: &ClusterSpec) -> Option<Arc<dyn Node>> {
    provider.plan(spec).into_iter().find(|n| n.role == Role::ControlPlane).map(|n| provider.node(&n.name))
}

/// The cluster `name` as it was made: the spec `up` saved on its nodes (the
/// first that answers, control plane first), or what the provider can tell
/// from the machines of a cluster made before vigil saved it. Fails when no
/// machine of that cluster exists.
pub async fn existing(provider: &dyn NodeProvider, name: &str) -> Result<ClusterSpec> {
    // The saved spec when a node has it; what the machines tell (and the
    // provider's error when there are none) otherwise.
    match saved(provider, name).await {
        Some(saved) => Ok(saved.spec),
        None => provider.discover(name).await,
    }
}

/// The spec saved on the nodes of `cluster`, if one answers with it.
pub async fn saved(provider: &dyn NodeProvider, cluster: &str) -> Option<vigil_model::saved_spec::Saved> {
    for machine in provider.list_nodes(cluster).await.ok()? {
        let node = provider.node(&machine.name);
        let Ok(text) = nodeutils::read_file(node.as_ref(), vigil_model::saved_spec::NODE_PATH).await else {
            continue;
        };
        match vigil_model::saved_spec::Saved::from_json(&text) {
            Ok(saved) if saved.spec.name == cluster => return Some(saved),
            Ok(saved) => tracing::warn!(
                node = machine.name,
                saved = saved.spec.name,
                "a node of another cluster's spec"
            ),
            Err(error) => {
                tracing::warn!(node = machine.name, %error, path = vigil_model::saved_spec::NODE_PATH, "unreadable saved spec")
            }
        }
    }
    None
}

/// Breaks or mends `node` of `spec`, through its provider.
pub async fn fault(provider: &dyn NodeProvider, spec: &ClusterSpec, node: &str, fault: Fault) -> Result<()> {
    let planned = provider.plan(spec);
    if !planned.iter().any(|n| n.name == node) {
        let known = planned.iter().map(|n| n.name.clone()).collect::<Vec<_>>().join(", ");
        return Err(Error::UnknownNode { name: node.into(), cluster: spec.name.clone(), known });
    }
    tracing::info!(node, fault = fault.name(), "fault hook");
    provider.fault(node, fault).await
}

/// Where the deployables' images come from when a node lacks them: an
/// archive of them (`docker save`), made at most once per `up`.
#[async_trait]
pub trait ImageArchive: Send + Sync {
    async fn archive(&self, refs: &[String]) -> std::result::Result<Vec<u8>, BoxError>;
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A node that is this machine: `run` starts the process here, so the
    /// default `copy_in` runs its real script.
    struct Local;

    #[async_trait]
    impl Node for Local {
        fn name(&self) -> &str {
            "local"
        }
        fn shell_hint(&self, command: &str) -> String {
            command.into()
        }
        fn console_hint(&self) -> String {
            String::new()
        }
        async fn run(&self, argv: &[&str], stdin: Option<Vec<u8>>) -> Result<Output, CommandError> {
            use tokio::io::AsyncWriteExt;
            let mut child = tokio::process::Command::new(argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut input = child.stdin.take().unwrap();
            input.write_all(&stdin.unwrap_or_default()).await.unwrap();
            drop(input);
            let out = child.wait_with_output().await.unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            Ok(Output { stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::new() })
        }
    }

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn copy_in_makes_owner_only_files_and_folders() {
        let root = tempfile::tempdir().unwrap();
        let secret = root.path().join("etc/vigil/kubeadm.yaml");
        let path = secret.to_str().unwrap();
        Local.copy_in(path, b"token: abcdef.0123456789abcdef\n", 0o600).await.unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "token: abcdef.0123456789abcdef\n");
        assert_eq!(mode(&secret), 0o600);
        // Made under umask 077: so was the temporary file, before its chmod.
        assert_eq!(mode(&root.path().join("etc/vigil")), 0o700);
        assert!(!root.path().join("etc/vigil/kubeadm.yaml.vigil-tmp").exists());
        // A file meant to be readable still gets the mode asked for.
        let public = root.path().join("etc/vigil/public.conf");
        Local.copy_in(public.to_str().unwrap(), b"x", 0o644).await.unwrap();
        assert_eq!(mode(&public), 0o644);
        assert!(copy_in_script(path, 0o600).starts_with("set -e; umask 077;"));
    }
}
