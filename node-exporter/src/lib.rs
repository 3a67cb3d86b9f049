//! node-exporter: per-container CPU, memory, network and filesystem usage
//! for the node it runs on, read at scrape time from the kubelet's stats
//! (its embedded cAdvisor, `/stats/summary` on 10250, TLS verified against
//! the cluster CA) and, where a Docker socket is configured, from Docker
//! Engine. Metric names and labels are the ones dashboards already expect
//! from cAdvisor (`container_cpu_usage_seconds_total{namespace,pod,container,node}`, ...),
//! and the node's own filesystems under prometheus/node_exporter's names
//! (`node_filesystem_avail_bytes{device,fstype,mountpoint}`, ...).
#![forbid(unsafe_code)]

/// Sources of container samples: one module each, behind one trait.
pub mod collector;
/// OpenMetrics rendering of one scrape.
pub mod exposition;
/// The samples every collector produces.
pub mod sample;
/// Scrape-time collection: every collector at once, each with a timeout and a short cache.
pub mod scrape;
/// HTTP: `/metrics` and the admin endpoints.
pub mod server;
