//! Where nodes come from. A [`NodeProvider`] creates, lists, breaks and
//! removes the machines of a cluster; a [`Node`] is little more than
//! something commands can run on. Actions never know how a command reaches
//! its node (docker exec here; SSH for real hosts is the other transport
//! this trait is shaped for).

pub mod docker;

use std::fmt;

use crate::cluster::{ClusterSpec, Role};

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
    /// The Docker API refused a request.
    #[error("docker: {what}")]
    Docker {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The node network would overlap a network the host already routes.
    #[error(
        "node network {subnet} overlaps {other} ({other_subnet}): choose a free range with --subnet (or VIGIL_SUBNET)"
    )]
    SubnetClash { subnet: ipnet::Ipv4Net, other: String, other_subnet: ipnet::Ipv4Net },
    /// A container or network with one of vigil's names exists but is not vigil's.
    #[error(
        "{kind} {name} exists but was not created by vigil for cluster {cluster}: remove or rename it, or choose another --name"
    )]
    NameTaken { kind: &'static str, name: String, cluster: String },
    /// The network exists with other settings than asked for.
    #[error(
        "network {name} exists with subnet {actual}, not {wanted}: run `vigil down` first, or use --subnet {actual}"
    )]
    NetworkMismatch { name: String, actual: String, wanted: ipnet::Ipv4Net },
    /// Not enough room for the nodes' /var volumes.
    #[error(
        "only {free_gib:.1} GiB free in Docker's data directory {dir}; the new nodes need about {need_gib} GiB: free some space (`docker system prune`)"
    )]
    Disk { dir: String, free_gib: f64, need_gib: u64 },
    /// A fault hook's command failed on the node.
    #[error("{fault} {node} failed")]
    Fault {
        node: String,
        fault: &'static str,
        #[source]
        source: CommandError,
    },
    /// The named node is not part of the cluster.
    #[error("no node named {name} in cluster {cluster} (nodes: {known}); `vigil status` lists them")]
    UnknownNode { name: String, cluster: String, known: String },
    /// Starting a node container failed.
    #[error("node {node}: {step} failed; its log: `docker logs {node}`")]
    Node {
        node: String,
        step: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
}

/// What a successful command printed.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// Something commands can run on.
pub trait Node: Send + Sync {
    fn name(&self) -> &str;

    /// Runs `argv`, feeding `stdin`; fails on a non-zero exit.
    fn run(
        &self,
        argv: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<Output, CommandError>> + Send;

    /// Writes a file on the node (through `run`, so every transport can do it).
    fn write_file(
        &self,
        path: &str,
        contents: &[u8],
        mode: u32,
    ) -> impl Future<Output = Result<(), CommandError>> + Send {
        async move {
            let script = format!(
                "set -e; mkdir -p \"$(dirname '{path}')\"; cat > '{path}.vigil-tmp'; chmod {mode:o} '{path}.vigil-tmp'; mv '{path}.vigil-tmp' '{path}'"
            );
            self.run(&["sh", "-c", &script], Some(contents.to_vec())).await.map(|_| ())
        }
    }

    /// Reads a file from the node.
    fn read_file(&self, path: &str) -> impl Future<Output = Result<String, CommandError>> + Send {
        async move { self.run(&["cat", path], None).await.map(|o| o.stdout) }
    }
}

/// The state of one node machine as the provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub role: Role,
    /// Running, exited, ... as the provider reports it.
    pub state: String,
    /// The address on the cluster network; None while isolated.
    pub ip: Option<String>,
}

/// What `down` removed, for its report.
#[derive(Debug, Default)]
pub struct Removed {
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
}

/// How a fault hook breaks a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Orderly shutdown (systemd halts, as a powered-off machine would).
    Stop,
    /// SIGKILL of everything: a crashed machine.
    Kill,
    Start,
    /// Cut off the cluster network (all its traffic dropped), still running.
    Isolate,
    Reconnect,
}

pub trait NodeProvider: Send + Sync {
    type Node: Node;

    /// Cheap checks before any long work: names free or already ours, the
    /// node network free, enough disk for the nodes.
    fn preflight(&self, spec: &ClusterSpec) -> impl Future<Output = Result<(), Error>> + Send;
    /// Creates the network and node machines that do not exist yet and
    /// starts those that are stopped. Safe to call again.
    fn provision(
        &self,
        spec: &ClusterSpec,
        node_image: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    fn list_nodes(&self, cluster: &str) -> impl Future<Output = Result<Vec<NodeInfo>, Error>> + Send;
    fn node(&self, name: &str) -> Self::Node;
    fn fault(
        &self,
        spec: &ClusterSpec,
        node: &str,
        fault: Fault,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Removes everything labelled as this cluster's, and nothing else.
    fn delete_cluster(&self, cluster: &str) -> impl Future<Output = Result<Removed, Error>> + Send;
}
