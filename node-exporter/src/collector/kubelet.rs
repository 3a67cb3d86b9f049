//! The node's kubelet: `GET https://<node>:10250/stats/summary`, the
//! summary the kubelet builds from its embedded cAdvisor, and
//! `/metrics/cadvisor` for what the summary leaves out (see [`super::cadvisor`]). Authenticated with
//! the pod's ServiceAccount token (re-read on every scrape: projected tokens
//! rotate) and verified against the cluster CA: the kubelet's serving
//! certificate is signed by it (kubeadm's `serverTLSBootstrap`, approved by
//! `vigil up`), so nothing is skipped.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Collector, Error};
use crate::sample::{ContainerId, ContainerUsage, FilesystemUsage, InterfaceUsage, Samples};

const NAME: &str = "kubelet";

pub struct Kubelet {
    http: reqwest::Client,
    summary_url: String,
    cadvisor_url: String,
    token_path: PathBuf,
}

impl Kubelet {
    /// `address` is the node's IP or name as its serving certificate lists it.
    pub fn new(
        address: &str,
        port: u16,
        ca_path: &std::path::Path,
        token_path: PathBuf,
    ) -> Result<Self, Error> {
        let config = |message: String| Error::Config { source_name: NAME, message };
        let ca = std::fs::read(ca_path)
            .map_err(|e| config(format!("reading the cluster CA {}: {e}", ca_path.display())))?;
        let cas = reqwest::Certificate::from_pem_bundle(&ca)
            .map_err(|e| config(format!("the cluster CA {}: {e}", ca_path.display())))?;
        if cas.is_empty() {
            return Err(config(format!("the cluster CA {} holds no PEM certificate", ca_path.display())));
        }
        let http = cas
            .into_iter()
            .fold(reqwest::Client::builder().tls_built_in_root_certs(false), |b, ca| {
                b.add_root_certificate(ca)
            })
            .no_proxy()
            .build()
            .map_err(|e| config(e.to_string()))?;
        let host = if address.contains(':') { format!("[{address}]") } else { address.to_owned() };
        Ok(Kubelet {
            http,
            summary_url: format!("https://{host}:{port}/stats/summary"),
            cadvisor_url: format!("https://{host}:{port}/metrics/cadvisor"),
            token_path,
        })
    }

    async fn get(&self, url: &str, token: &str) -> Result<Vec<u8>, Error> {
        let response = self.http.get(url).bearer_auth(token).send().await.map_err(|e| Error::Source {
            source_name: NAME,
            message: format!("GET {url}: {}", vigil_telemetry::error_chain(&e)),
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(Error::Source {
                source_name: NAME,
                message: format!("GET {url} answered {status}: {}", body.trim()),
            });
        }
        response
            .bytes()
            .await
            .map(Vec::from)
            .map_err(|e| Error::Source { source_name: NAME, message: vigil_telemetry::error_chain(&e) })
    }
}

impl Collector for Kubelet {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn collect(&self) -> Result<Samples, Error> {
        let token = tokio::fs::read_to_string(&self.token_path).await.map_err(|e| Error::Config {
            source_name: NAME,
            message: format!("reading the ServiceAccount token {}: {e}", self.token_path.display()),
        })?;
        let token = token.trim();
        let (summary, cadvisor) =
            tokio::join!(self.get(&self.summary_url, token), self.get(&self.cadvisor_url, token));
        let mut samples = parse_summary(&summary?)?;
        // Without `/metrics/cadvisor` the summary's CPU, memory and network
        // still stand: it is reported as a problem, not a failed collection.
        let merged = cadvisor.and_then(|bytes| {
            let text = String::from_utf8(bytes).map_err(|e| Error::Parse {
                source_name: NAME,
                message: format!("/metrics/cadvisor is not UTF-8: {e}"),
            })?;
            super::cadvisor::merge(&mut samples, &text)
        });
        if let Err(e) = merged {
            samples.problems.push(e);
        }
        Ok(samples)
    }
}

/// Where the kubelet's two filesystems are, as `mountpoint`: its root
/// directory (nodefs: pods' logs, volumes, writable layers) and containerd's
/// (imagefs: images). The summary gives their usage, not where they are
/// mounted: these are the paths the kubelet and containerd use in vigil's
/// node image (the defaults), which a reader of `/proc/mounts` would report
/// as the mount that holds them.
pub const NODEFS_MOUNTPOINT: &str = "/var/lib/kubelet";
pub const IMAGEFS_MOUNTPOINT: &str = "/var/lib/containerd";

// The parts of the kubelet's stats/v1alpha1 Summary that are exported.
#[derive(Deserialize)]
struct Summary {
    node: Option<NodeStats>,
    #[serde(default)]
    pods: Vec<PodStats>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeStats {
    fs: Option<NodeFsStats>,
    runtime: Option<RuntimeStats>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeStats {
    image_fs: Option<NodeFsStats>,
}

/// A filesystem's space and inodes, as the summary gives it for the node.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeFsStats {
    available_bytes: Option<u64>,
    capacity_bytes: Option<u64>,
    inodes_free: Option<u64>,
    inodes: Option<u64>,
}

impl NodeFsStats {
    fn at(self, mountpoint: &str) -> FilesystemUsage {
        FilesystemUsage {
            mountpoint: mountpoint.into(),
            device: String::new(),
            fstype: String::new(),
            avail_bytes: self.available_bytes,
            size_bytes: self.capacity_bytes,
            files_free: self.inodes_free,
            files: self.inodes,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStats {
    pod_ref: PodRef,
    #[serde(default)]
    containers: Vec<ContainerStats>,
    network: Option<NetworkStats>,
}

#[derive(Deserialize)]
struct PodRef {
    name: String,
    namespace: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStats {
    name: String,
    cpu: Option<CpuStats>,
    memory: Option<MemoryStats>,
    rootfs: Option<FsStats>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CpuStats {
    usage_core_nano_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemoryStats {
    working_set_bytes: Option<u64>,
    usage_bytes: Option<u64>,
    rss_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FsStats {
    used_bytes: Option<u64>,
    capacity_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetworkStats {
    #[serde(default)]
    interfaces: Vec<InterfaceStats>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InterfaceStats {
    name: String,
    rx_bytes: Option<u64>,
    tx_bytes: Option<u64>,
    rx_errors: Option<u64>,
    tx_errors: Option<u64>,
}

/// The summary as samples: one per container, one per pod interface, and
/// the node's filesystems.
pub fn parse_summary(json: &[u8]) -> Result<Samples, Error> {
    let summary: Summary = serde_json::from_slice(json)
        .map_err(|e| Error::Parse { source_name: NAME, message: e.to_string() })?;
    let mut samples = Samples::default();
    if let Some(node) = summary.node {
        samples.filesystems.extend(node.fs.map(|fs| fs.at(NODEFS_MOUNTPOINT)));
        samples.filesystems.extend(node.runtime.and_then(|r| r.image_fs).map(|fs| fs.at(IMAGEFS_MOUNTPOINT)));
    }
    for pod in summary.pods {
        for c in pod.containers {
            let id = ContainerId {
                namespace: pod.pod_ref.namespace.clone(),
                pod: pod.pod_ref.name.clone(),
                container: c.name,
                runtime: Default::default(),
            };
            let usage = ContainerUsage {
                cpu_seconds: c.cpu.and_then(|cpu| cpu.usage_core_nano_seconds).map(|ns| ns as f64 / 1e9),
                memory_working_set_bytes: c.memory.as_ref().and_then(|m| m.working_set_bytes),
                memory_usage_bytes: c.memory.as_ref().and_then(|m| m.usage_bytes),
                memory_rss_bytes: c.memory.as_ref().and_then(|m| m.rss_bytes),
                fs_usage_bytes: c.rootfs.as_ref().and_then(|f| f.used_bytes),
                fs_limit_bytes: c.rootfs.as_ref().and_then(|f| f.capacity_bytes),
                ..Default::default()
            };
            samples.containers.push((id, usage));
        }
        for i in pod.network.map(|n| n.interfaces).unwrap_or_default() {
            samples.interfaces.push(InterfaceUsage {
                namespace: pod.pod_ref.namespace.clone(),
                pod: pod.pod_ref.name.clone(),
                container: String::new(),
                runtime: Default::default(),
                interface: i.name,
                rx_bytes: i.rx_bytes.unwrap_or(0),
                tx_bytes: i.tx_bytes.unwrap_or(0),
                rx_errors: i.rx_errors.unwrap_or(0),
                tx_errors: i.tx_errors.unwrap_or(0),
                rx_packets: None,
                tx_packets: None,
                rx_dropped: None,
                tx_dropped: None,
            });
        }
    }
    samples.containers.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(samples)
}
