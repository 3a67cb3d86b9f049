//! A Docker Engine (bollard): one-shot stats of every running container.
//! Containers started by a kubelet's dockershim carry `io.kubernetes.*`
//! labels and are named by them; any other container is named by Docker.

use std::collections::HashMap;

use bollard::{
    Docker,
    models::ContainerStatsResponse,
    query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder},
};
use futures::StreamExt;

use super::{Collector, Error};
use crate::sample::{ContainerId, ContainerUsage, InterfaceUsage, Runtime, Samples};

const NAME: &str = "docker";

pub struct DockerCollector {
    docker: Docker,
    socket: String,
}

impl DockerCollector {
    /// Connects to the socket; fails at start, naming the socket and the fix.
    pub fn connect(socket: &str) -> Result<Self, Error> {
        let docker = Docker::connect_with_unix(socket, 10, bollard::API_DEFAULT_VERSION).map_err(|e| {
            Error::Config {
                source_name: NAME,
                message: format!(
                    "cannot use the Docker socket {socket}: {e} (mount it, or drop --collector.docker)"
                ),
            }
        })?;
        Ok(DockerCollector { docker, socket: socket.to_owned() })
    }

    /// Agrees on an API version with the engine; fails naming the socket and the fix.
    pub async fn negotiate(self) -> Result<Self, Error> {
        let socket = self.socket;
        let docker = self.docker.negotiate_version().await.map_err(|e| Error::Source {
            source_name: NAME,
            message: format!(
                "no Docker Engine answers on {socket}: {e} (is dockerd running? is the socket mounted? or drop --collector.docker)"
            ),
        })?;
        Ok(DockerCollector { docker, socket })
    }
}

impl Collector for DockerCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn collect(&self) -> Result<Samples, Error> {
        let source = |e: bollard::errors::Error| Error::Source { source_name: NAME, message: e.to_string() };
        let running = self
            .docker
            .list_containers(Some(ListContainersOptionsBuilder::default().all(false).build()))
            .await
            .map_err(source)?;
        let stats = futures::future::join_all(running.iter().map(|c| {
            let id = c.id.clone().unwrap_or_default();
            async move {
                let options = StatsOptionsBuilder::default().stream(false).one_shot(true).build();
                self.docker.stats(&id, Some(options)).next().await
            }
        }))
        .await;
        let mut samples = Samples::default();
        for (summary, stat) in running.into_iter().zip(stats) {
            // A container that stopped between the list and its stats is simply gone.
            let Some(Ok(stat)) = stat else { continue };
            let name = summary
                .names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            let runtime =
                Runtime { image: summary.image.clone().unwrap_or_default(), id: String::new(), name };
            let (id, usage, interfaces) = from_stats(runtime, &summary.labels.unwrap_or_default(), &stat);
            samples.containers.push((id, usage));
            samples.interfaces.extend(interfaces);
        }
        samples.containers.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(samples)
    }
}

/// One container's stats as samples. Working set is usage minus inactive
/// file pages, as cAdvisor computes it.
pub fn from_stats(
    runtime: Runtime,
    labels: &HashMap<String, String>,
    stat: &ContainerStatsResponse,
) -> (ContainerId, ContainerUsage, Vec<InterfaceUsage>) {
    let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
    let id = match labels.get("io.kubernetes.container.name") {
        Some(container) => ContainerId {
            namespace: label("io.kubernetes.pod.namespace"),
            pod: label("io.kubernetes.pod.name"),
            container: container.clone(),
            runtime,
        },
        None => ContainerId {
            namespace: String::new(),
            pod: String::new(),
            container: runtime.name.clone(),
            runtime,
        },
    };
    let memory = stat.memory_stats.as_ref();
    let usage_bytes = memory.and_then(|m| m.usage);
    let mem_stats = memory.and_then(|m| m.stats.as_ref());
    // cgroup v1 reports total_inactive_file, v2 inactive_file.
    let inactive =
        mem_stats.and_then(|s| s.get("total_inactive_file").or_else(|| s.get("inactive_file")).copied());
    let usage = ContainerUsage {
        cpu_seconds: stat
            .cpu_stats
            .as_ref()
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .map(|ns| ns as f64 / 1e9),
        memory_working_set_bytes: usage_bytes.map(|u| u.saturating_sub(inactive.unwrap_or(0))),
        memory_usage_bytes: usage_bytes,
        memory_rss_bytes: mem_stats.and_then(|s| s.get("total_rss").or_else(|| s.get("anon")).copied()),
        fs_usage_bytes: None,
        fs_limit_bytes: None,
        memory_cache_bytes: mem_stats.and_then(|s| s.get("total_cache").or_else(|| s.get("file")).copied()),
        memory_swap_bytes: mem_stats.and_then(|s| s.get("total_swap").copied()),
        cpu_cfs_periods: stat
            .cpu_stats
            .as_ref()
            .and_then(|c| c.throttling_data.as_ref())
            .and_then(|t| t.periods)
            .filter(|p| *p > 0),
        cpu_cfs_throttled_periods: stat
            .cpu_stats
            .as_ref()
            .and_then(|c| c.throttling_data.as_ref())
            .filter(|t| t.periods.unwrap_or(0) > 0)
            .and_then(|t| t.throttled_periods),
    };
    let interfaces = stat
        .networks
        .as_ref()
        .map(|networks| {
            let mut sorted: Vec<_> = networks.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            sorted
                .into_iter()
                .map(|(interface, n)| InterfaceUsage {
                    namespace: id.namespace.clone(),
                    pod: id.pod.clone(),
                    container: id.container.clone(),
                    runtime: id.runtime.clone(),
                    interface: interface.clone(),
                    rx_bytes: n.rx_bytes.unwrap_or(0),
                    tx_bytes: n.tx_bytes.unwrap_or(0),
                    rx_errors: n.rx_errors.unwrap_or(0),
                    tx_errors: n.tx_errors.unwrap_or(0),
                    rx_packets: n.rx_packets,
                    tx_packets: n.tx_packets,
                    rx_dropped: n.rx_dropped,
                    tx_dropped: n.tx_dropped,
                })
                .collect()
        })
        .unwrap_or_default();
    (id, usage, interfaces)
}
