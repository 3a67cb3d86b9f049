//! Dashboards and rules (issue 11) against the live cluster: the rule files
//! pass `promtool check rules` and `promtool test rules` (Prometheus's own
//! promtool, from the image vigil built); every panel query of vigil's
//! dashboards, and of the kubernetes-mixin's Pod, Namespace and Node
//! compute-resources dashboards as kube-prometheus renders them (written
//! down below from the mixin's documented PromQL), returns at least one
//! series from the cluster's Prometheus, with the variables taken from the
//! live cluster. A failure lists every empty panel.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use vigil::{cluster::ScrapeLabels, monitoring};
use vigil_e2e::Cluster;

use crate::{
    monitoring::prometheus_http,
    workload::{name, web_pods},
};

fn repository_dir(dir: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)
}

/// promtool from the Prometheus image, on the committed `dashboards/rules/`.
fn promtool(args: &[&str]) -> Result<String> {
    let image = vigil::addons::prometheus::IMAGE.reference(&vigil_e2e::images().repository);
    let rules = repository_dir("dashboards/rules");
    let out = Command::new("docker")
        // The image is the binaries alone; `test rules` keeps its TSDB under /tmp.
        .args(["run", "--rm", "--network", "none", "--tmpfs", "/tmp", "-v"])
        .arg(format!("{}:/rules:ro", rules.canonicalize()?.display()))
        .args(["-w", "/rules", "--entrypoint", vigil::addons::prometheus::PROMTOOL, &image])
        .args(args)
        .output()
        .context("docker run promtool")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "promtool {}:\n{said}", args.join(" "));
    Ok(said)
}

pub async fn promtool_checks_and_tests_the_rules(_: &Cluster) -> Result<()> {
    let files = [monitoring::rules::UPSTREAM_FILE, monitoring::rules::VIGIL_FILE];
    let mut check = vec!["check", "rules"];
    check.extend(files);
    let said = promtool(&check)?;
    ensure!(said.matches("SUCCESS").count() == files.len(), "promtool check rules:\n{said}");
    let said = promtool(&["test", "rules", monitoring::promtool::TESTS_FILE])?;
    ensure!(said.contains("SUCCESS"), "promtool test rules:\n{said}");
    Ok(())
}

/// The kubernetes-mixin's compute-resources dashboards (Pod, Namespace,
/// Node), as kube-prometheus renders them from kubernetes-mixin
/// `aa38e2bf`: dashboard, panel, refId, query. `{C}` is the cAdvisor
/// selector (kube-prometheus: `job="kubelet", metrics_path="/metrics/cadvisor"`),
/// `{DEV}` kube-prometheus's disk device matcher.
#[rustfmt::skip]
const MIXIN_PANELS: &[(&str, &str, &str, &str)] = &[
    ("Pod", "CPU Usage", "A", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{namespace="$namespace", pod="$pod", cluster="$cluster", container!=""})) by (container)"#),
    ("Pod", "CPU Usage", "B", r#"sum( kube_pod_container_resource_requests{job="kube-state-metrics", cluster="$cluster", namespace="$namespace", pod="$pod", resource="cpu"} )"#),
    ("Pod", "CPU Usage", "C", r#"sum( kube_pod_container_resource_limits{job="kube-state-metrics", cluster="$cluster", namespace="$namespace", pod="$pod", resource="cpu"} )"#),
    ("Pod", "CPU Throttling", "A", r#"sum(increase(container_cpu_cfs_throttled_periods_total{{C}, namespace="$namespace", pod="$pod", container!="", cluster="$cluster"}[$__rate_interval])) by (container) /sum(increase(container_cpu_cfs_periods_total{{C}, namespace="$namespace", pod="$pod", container!="", cluster="$cluster"}[$__rate_interval])) by (container)"#),
    ("Pod", "CPU Quota", "A", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{namespace="$namespace", pod="$pod", cluster="$cluster", container!=""})) by (container)"#),
    ("Pod", "CPU Quota", "B", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_requests{cluster="$cluster", namespace="$namespace", pod="$pod", container!=""})) by (container)"#),
    ("Pod", "CPU Quota", "C", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", namespace="$namespace", pod="$pod", container!=""})) by (container) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_requests{cluster="$cluster", namespace="$namespace", pod="$pod", container!=""})) by (container)"#),
    ("Pod", "CPU Quota", "D", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_limits{cluster="$cluster", namespace="$namespace", pod="$pod", container!=""})) by (container)"#),
    ("Pod", "CPU Quota", "E", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", namespace="$namespace", pod="$pod", container!=""})) by (container) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_limits{cluster="$cluster", namespace="$namespace", pod="$pod", container!=""})) by (container)"#),
    ("Pod", "Memory Usage (WSS)", "A", r#"sum(max by (cluster, namespace, pod, container)(container_memory_working_set_bytes{{C}, cluster="$cluster", namespace="$namespace", pod="$pod", container!="", image!=""})) by (container)"#),
    ("Pod", "Memory Usage (WSS)", "B", r#"sum( kube_pod_container_resource_requests{job="kube-state-metrics", cluster="$cluster", namespace="$namespace", pod="$pod", resource="memory"} )"#),
    ("Pod", "Memory Usage (WSS)", "C", r#"sum( kube_pod_container_resource_limits{job="kube-state-metrics", cluster="$cluster", namespace="$namespace", pod="$pod", resource="memory"} )"#),
    ("Pod", "Memory Quota", "A", r#"sum(max by (cluster, namespace, pod, container)(container_memory_working_set_bytes{{C}, cluster="$cluster", namespace="$namespace", pod="$pod", container!="", image!=""})) by (container)"#),
    ("Pod", "Memory Quota", "B", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_requests{cluster="$cluster", namespace="$namespace", pod="$pod"})) by (container)"#),
    ("Pod", "Memory Quota", "C", r#"sum(max by (cluster, namespace, pod, container)(container_memory_working_set_bytes{{C}, cluster="$cluster", namespace="$namespace", pod="$pod", image!=""})) by (container) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_requests{cluster="$cluster", namespace="$namespace", pod="$pod"})) by (container)"#),
    ("Pod", "Memory Quota", "D", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_limits{cluster="$cluster", namespace="$namespace", pod="$pod"})) by (container)"#),
    ("Pod", "Memory Quota", "E", r#"sum(max by (cluster, namespace, pod, container)(container_memory_working_set_bytes{{C}, cluster="$cluster", namespace="$namespace", pod="$pod", container!="", image!=""})) by (container) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_limits{cluster="$cluster", namespace="$namespace", pod="$pod"})) by (container)"#),
    ("Pod", "Memory Quota", "F", r#"sum(max by (cluster, namespace, pod, container)(container_memory_rss{{C}, cluster="$cluster", namespace="$namespace", pod="$pod", container != "", container != "POD"})) by (container)"#),
    ("Pod", "Memory Quota", "G", r#"sum(max by (cluster, namespace, pod, container)(container_memory_cache{{C}, cluster="$cluster", namespace="$namespace", pod="$pod", container != "", container != "POD"})) by (container)"#),
    ("Pod", "Memory Quota", "H", r#"sum(max by (cluster, namespace, pod, container)(container_memory_swap{{C}, cluster="$cluster", namespace="$namespace", pod="$pod", container != "", container != "POD"})) by (container)"#),
    ("Pod", "Receive Bandwidth", "A", r#"sum((8 * irate(container_network_receive_bytes_total{{C}, cluster="$cluster", namespace="$namespace", pod=~"$pod"}[$__rate_interval]))) by (pod)"#),
    ("Pod", "Transmit Bandwidth", "A", r#"sum((8 * rate(container_network_transmit_bytes_total{{C}, cluster="$cluster", namespace="$namespace", pod=~"$pod"}[$__rate_interval]))) by (pod)"#),
    ("Pod", "Rate of Received Packets", "A", r#"sum(rate(container_network_receive_packets_total{{C}, cluster="$cluster", namespace="$namespace", pod=~"$pod"}[$__rate_interval])) by (pod)"#),
    ("Pod", "Rate of Transmitted Packets", "A", r#"sum(rate(container_network_transmit_packets_total{{C}, cluster="$cluster", namespace="$namespace", pod=~"$pod"}[$__rate_interval])) by (pod)"#),
    ("Pod", "Rate of Received Packets Dropped", "A", r#"sum(rate(container_network_receive_packets_dropped_total{{C}, cluster="$cluster", namespace="$namespace", pod=~"$pod"}[$__rate_interval])) by (pod)"#),
    ("Pod", "Rate of Transmitted Packets Dropped", "A", r#"sum(rate(container_network_transmit_packets_dropped_total{{C}, cluster="$cluster", namespace="$namespace", pod=~"$pod"}[$__rate_interval])) by (pod)"#),
    ("Pod", "IOPS (Pod)", "A", r#"ceil(sum by(pod) (rate(container_fs_reads_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace", pod=~"$pod"}[$__rate_interval])))"#),
    ("Pod", "IOPS (Pod)", "B", r#"ceil(sum by(pod) (rate(container_fs_writes_total{{C}, {DEV}, container!="", cluster="$cluster",namespace="$namespace", pod=~"$pod"}[$__rate_interval])))"#),
    ("Pod", "ThroughPut (Pod)", "A", r#"sum by(pod) (rate(container_fs_reads_bytes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace", pod=~"$pod"}[$__rate_interval]))"#),
    ("Pod", "ThroughPut (Pod)", "B", r#"sum by(pod) (rate(container_fs_writes_bytes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace", pod=~"$pod"}[$__rate_interval]))"#),
    ("Pod", "IOPS (Containers)", "A", r#"ceil(sum by(container) (rate(container_fs_reads_total{{C}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval]) + rate(container_fs_writes_total{{C}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval])))"#),
    ("Pod", "ThroughPut (Containers)", "A", r#"sum by(container) (rate(container_fs_reads_bytes_total{{C}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval]) + rate(container_fs_writes_bytes_total{{C}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval]))"#),
    ("Pod", "Current Storage IO", "A", r#"sum by(container) (rate(container_fs_reads_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval]))"#),
    ("Pod", "Current Storage IO", "B", r#"sum by(container) (rate(container_fs_writes_total{{C},{DEV}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval]))"#),
    ("Pod", "Current Storage IO", "C", r#"sum by(container) (rate(container_fs_reads_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval]) + rate(container_fs_writes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval]))"#),
    ("Pod", "Current Storage IO", "D", r#"sum by(container) (rate(container_fs_reads_bytes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval]))"#),
    ("Pod", "Current Storage IO", "E", r#"sum by(container) (rate(container_fs_writes_bytes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval]))"#),
    ("Pod", "Current Storage IO", "F", r#"sum by(container) (rate(container_fs_reads_bytes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval]) + rate(container_fs_writes_bytes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace", pod="$pod"}[$__rate_interval]))"#),
    ("Namespace", "CPU Utilisation (from requests)", "A", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", namespace="$namespace"})) / sum(kube_pod_container_resource_requests{job="kube-state-metrics", cluster="$cluster", namespace="$namespace", resource="cpu"})"#),
    ("Namespace", "CPU Utilisation (from limits)", "A", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", namespace="$namespace"})) / sum(kube_pod_container_resource_limits{job="kube-state-metrics", cluster="$cluster", namespace="$namespace", resource="cpu"})"#),
    ("Namespace", "Memory Utilisation (from requests)", "A", r#"sum(max by (cluster, namespace, pod, container)(container_memory_working_set_bytes{{C}, cluster="$cluster", namespace="$namespace",container!="", image!=""})) / sum(kube_pod_container_resource_requests{job="kube-state-metrics", cluster="$cluster", namespace="$namespace", resource="memory"})"#),
    ("Namespace", "Memory Utilisation (from limits)", "A", r#"sum(max by (cluster, namespace, pod, container)(container_memory_working_set_bytes{{C}, cluster="$cluster", namespace="$namespace",container!="", image!=""})) / sum(kube_pod_container_resource_limits{job="kube-state-metrics", cluster="$cluster", namespace="$namespace", resource="memory"})"#),
    ("Namespace", "CPU Usage", "A", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", namespace="$namespace"})) by (pod)"#),
    ("Namespace", "CPU Usage", "B", r#"scalar(max(kube_resourcequota{cluster="$cluster", namespace="$namespace", type="hard",resource="requests.cpu"}))"#),
    ("Namespace", "CPU Usage", "C", r#"scalar(max(kube_resourcequota{cluster="$cluster", namespace="$namespace", type="hard",resource="limits.cpu"}))"#),
    ("Namespace", "CPU Quota", "A", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", namespace="$namespace"})) by (pod)"#),
    ("Namespace", "CPU Quota", "B", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_requests{cluster="$cluster", namespace="$namespace"})) by (pod)"#),
    ("Namespace", "CPU Quota", "C", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", namespace="$namespace"})) by (pod) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_requests{cluster="$cluster", namespace="$namespace"})) by (pod)"#),
    ("Namespace", "CPU Quota", "D", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_limits{cluster="$cluster", namespace="$namespace"})) by (pod)"#),
    ("Namespace", "CPU Quota", "E", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", namespace="$namespace"})) by (pod) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_limits{cluster="$cluster", namespace="$namespace"})) by (pod)"#),
    ("Namespace", "Memory Usage (w/o cache)", "A", r#"sum(max by (cluster, namespace, pod, container)(container_memory_working_set_bytes{{C}, cluster="$cluster", namespace="$namespace", container!="", image!=""})) by (pod)"#),
    ("Namespace", "Memory Usage (w/o cache)", "B", r#"scalar(max(kube_resourcequota{cluster="$cluster", namespace="$namespace", type="hard",resource="requests.memory"}))"#),
    ("Namespace", "Memory Usage (w/o cache)", "C", r#"scalar(max(kube_resourcequota{cluster="$cluster", namespace="$namespace", type="hard",resource="limits.memory"}))"#),
    ("Namespace", "Memory Quota", "A", r#"sum(max by (cluster, namespace, pod, container)(container_memory_working_set_bytes{{C}, cluster="$cluster", namespace="$namespace", container!="", image!=""})) by (pod)"#),
    ("Namespace", "Memory Quota", "B", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_requests{cluster="$cluster", namespace="$namespace"})) by (pod)"#),
    ("Namespace", "Memory Quota", "C", r#"sum(max by (cluster, namespace, pod, container)(container_memory_working_set_bytes{{C}, cluster="$cluster", namespace="$namespace",container!="", image!=""})) by (pod) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_requests{cluster="$cluster", namespace="$namespace"})) by (pod)"#),
    ("Namespace", "Memory Quota", "D", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_limits{cluster="$cluster", namespace="$namespace"})) by (pod)"#),
    ("Namespace", "Memory Quota", "E", r#"sum(max by (cluster, namespace, pod, container)(container_memory_working_set_bytes{{C}, cluster="$cluster", namespace="$namespace",container!="", image!=""})) by (pod) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_limits{cluster="$cluster", namespace="$namespace"})) by (pod)"#),
    ("Namespace", "Memory Quota", "F", r#"sum(max by (cluster, namespace, pod, container)(container_memory_rss{{C}, cluster="$cluster", namespace="$namespace",container!=""})) by (pod)"#),
    ("Namespace", "Memory Quota", "G", r#"sum(max by (cluster, namespace, pod, container)(container_memory_cache{{C}, cluster="$cluster", namespace="$namespace",container!=""})) by (pod)"#),
    ("Namespace", "Memory Quota", "H", r#"sum(max by (cluster, namespace, pod, container)(container_memory_swap{{C}, cluster="$cluster", namespace="$namespace",container!=""})) by (pod)"#),
    ("Namespace", "Current Network Usage", "A", r#"sum((8 * rate(container_network_receive_bytes_total{{C}, cluster="$cluster", namespace="$namespace"}[$__rate_interval]))) by (pod)"#),
    ("Namespace", "Current Network Usage", "B", r#"sum((8 * rate(container_network_transmit_bytes_total{{C}, cluster="$cluster", namespace="$namespace"}[$__rate_interval]))) by (pod)"#),
    ("Namespace", "Current Network Usage", "C", r#"sum(rate(container_network_receive_packets_total{{C}, cluster="$cluster", namespace="$namespace"}[$__rate_interval])) by (pod)"#),
    ("Namespace", "Current Network Usage", "D", r#"sum(rate(container_network_transmit_packets_total{{C}, cluster="$cluster", namespace="$namespace"}[$__rate_interval])) by (pod)"#),
    ("Namespace", "Current Network Usage", "E", r#"sum(rate(container_network_receive_packets_dropped_total{{C}, cluster="$cluster", namespace="$namespace"}[$__rate_interval])) by (pod)"#),
    ("Namespace", "Current Network Usage", "F", r#"sum(rate(container_network_transmit_packets_dropped_total{{C}, cluster="$cluster", namespace="$namespace"}[$__rate_interval])) by (pod)"#),
    ("Namespace", "Receive Bandwidth", "A", r#"sum((8 * rate(container_network_receive_bytes_total{cluster="$cluster", namespace="$namespace"}[$__rate_interval]))) by (pod)"#),
    ("Namespace", "Transmit Bandwidth", "A", r#"sum((8 * rate(container_network_transmit_bytes_total{cluster="$cluster", namespace="$namespace"}[$__rate_interval]))) by (pod)"#),
    ("Namespace", "Rate of Received Packets", "A", r#"sum(rate(container_network_receive_packets_total{{C}, cluster="$cluster", namespace="$namespace"}[$__rate_interval])) by (pod)"#),
    ("Namespace", "Rate of Transmitted Packets", "A", r#"sum(rate(container_network_transmit_packets_total{{C}, cluster="$cluster", namespace="$namespace"}[$__rate_interval])) by (pod)"#),
    ("Namespace", "Rate of Received Packets Dropped", "A", r#"sum(rate(container_network_receive_packets_dropped_total{{C}, cluster="$cluster", namespace="$namespace"}[$__rate_interval])) by (pod)"#),
    ("Namespace", "Rate of Transmitted Packets Dropped", "A", r#"sum(rate(container_network_transmit_packets_dropped_total{{C}, cluster="$cluster", namespace="$namespace"}[$__rate_interval])) by (pod)"#),
    ("Namespace", "IOPS(Reads+Writes)", "A", r#"ceil(sum by(pod) (rate(container_fs_reads_total{container!="", {DEV}, cluster="$cluster", namespace="$namespace"}[$__rate_interval]) + rate(container_fs_writes_total{container!="", {DEV}, cluster="$cluster", namespace="$namespace"}[$__rate_interval])))"#),
    ("Namespace", "ThroughPut(Read+Write)", "A", r#"sum by(pod) (rate(container_fs_reads_bytes_total{container!="", {DEV}, cluster="$cluster", namespace="$namespace"}[$__rate_interval]) + rate(container_fs_writes_bytes_total{container!="", {DEV}, cluster="$cluster", namespace="$namespace"}[$__rate_interval]))"#),
    ("Namespace", "Current Storage IO", "A", r#"sum by(pod) (rate(container_fs_reads_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace"}[$__rate_interval]))"#),
    ("Namespace", "Current Storage IO", "B", r#"sum by(pod) (rate(container_fs_writes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace"}[$__rate_interval]))"#),
    ("Namespace", "Current Storage IO", "C", r#"sum by(pod) (rate(container_fs_reads_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace"}[$__rate_interval]) + rate(container_fs_writes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace"}[$__rate_interval]))"#),
    ("Namespace", "Current Storage IO", "D", r#"sum by(pod) (rate(container_fs_reads_bytes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace"}[$__rate_interval]))"#),
    ("Namespace", "Current Storage IO", "E", r#"sum by(pod) (rate(container_fs_writes_bytes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace"}[$__rate_interval]))"#),
    ("Namespace", "Current Storage IO", "F", r#"sum by(pod) (rate(container_fs_reads_bytes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace"}[$__rate_interval]) + rate(container_fs_writes_bytes_total{{C}, {DEV}, container!="", cluster="$cluster", namespace="$namespace"}[$__rate_interval]))"#),
    ("Node", "CPU Usage", "A", r#"sum(kube_node_status_capacity{cluster="$cluster", job="kube-state-metrics", node=~"$node", resource="cpu"})"#),
    ("Node", "CPU Usage", "B", r#"sum(kube_node_status_allocatable{cluster="$cluster", job="kube-state-metrics", node=~"$node", resource="cpu"})"#),
    ("Node", "CPU Usage", "C", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", node=~"$node"})) by (pod)"#),
    ("Node", "CPU Quota", "A", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", node=~"$node"})) by (pod)"#),
    ("Node", "CPU Quota", "B", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_requests{cluster="$cluster", node=~"$node"})) by (pod)"#),
    ("Node", "CPU Quota", "C", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", node=~"$node"})) by (pod) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_requests{cluster="$cluster", node=~"$node"})) by (pod)"#),
    ("Node", "CPU Quota", "D", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_limits{cluster="$cluster", node=~"$node"})) by (pod)"#),
    ("Node", "CPU Quota", "E", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m{cluster="$cluster", node=~"$node"})) by (pod) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_cpu:active:kube_pod_container_resource_limits{cluster="$cluster", node=~"$node"})) by (pod)"#),
    ("Node", "Memory Usage (w/cache)", "A", r#"sum(kube_node_status_capacity{cluster="$cluster", job="kube-state-metrics", node=~"$node", resource="memory"})"#),
    ("Node", "Memory Usage (w/cache)", "B", r#"sum(kube_node_status_allocatable{cluster="$cluster", job="kube-state-metrics", node=~"$node", resource="memory"})"#),
    ("Node", "Memory Usage (w/cache)", "C", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_memory_working_set_bytes{cluster="$cluster", node=~"$node", container!=""})) by (pod)"#),
    ("Node", "Memory Usage (w/o cache)", "A", r#"sum(kube_node_status_capacity{cluster="$cluster", job="kube-state-metrics", node=~"$node", resource="memory"})"#),
    ("Node", "Memory Usage (w/o cache)", "B", r#"sum(kube_node_status_allocatable{cluster="$cluster", job="kube-state-metrics", node=~"$node", resource="memory"})"#),
    ("Node", "Memory Usage (w/o cache)", "C", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_memory_rss{cluster="$cluster", node=~"$node", container!=""})) by (pod)"#),
    ("Node", "Memory Quota", "A", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_memory_working_set_bytes{cluster="$cluster", node=~"$node",container!=""})) by (pod)"#),
    ("Node", "Memory Quota", "B", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_requests{cluster="$cluster", node=~"$node"})) by (pod)"#),
    ("Node", "Memory Quota", "C", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_memory_working_set_bytes{cluster="$cluster", node=~"$node",container!=""})) by (pod) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_requests{cluster="$cluster", node=~"$node"})) by (pod)"#),
    ("Node", "Memory Quota", "D", r#"sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_limits{cluster="$cluster", node=~"$node"})) by (pod)"#),
    ("Node", "Memory Quota", "E", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_memory_working_set_bytes{cluster="$cluster", node=~"$node",container!=""})) by (pod) / sum(max by (cluster, namespace, pod, container)(cluster:namespace:pod_memory:active:kube_pod_container_resource_limits{cluster="$cluster", node=~"$node"})) by (pod)"#),
    ("Node", "Memory Quota", "F", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_memory_rss{cluster="$cluster", node=~"$node",container!=""})) by (pod)"#),
    ("Node", "Memory Quota", "G", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_memory_cache{cluster="$cluster", node=~"$node",container!=""})) by (pod)"#),
    ("Node", "Memory Quota", "H", r#"sum(max by (cluster, namespace, pod, container)(node_namespace_pod_container:container_memory_swap{cluster="$cluster", node=~"$node",container!=""})) by (pod)"#),
];

const MIXIN_DEVICES: &str =
    r#"device=~"(/dev/)?(mmcblk.p.+|nvme.+|rbd.+|sd.+|vd.+|xvd.+|dm-.+|md.+|dasd.+)""#;

/// A panel query and where it comes from.
struct PanelQuery {
    source: String,
    expr: String,
}

/// Every query of vigil's committed dashboards and of the mixin's, with
/// the variables set: `vars` maps a variable's name to its value.
fn panel_queries(vars: &[(&str, String)], cadvisor: &ScrapeLabels) -> Result<Vec<PanelQuery>> {
    let substitute = |expr: &str| {
        let mut expr = expr.replace("$__rate_interval", "1m");
        // Longest names first, so a variable that is a prefix of another cannot replace part of it.
        let mut vars: Vec<&(&str, String)> = vars.iter().collect();
        vars.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
        for (name, value) in vars {
            expr = expr.replace(&format!("${name}"), value);
        }
        expr
    };
    let mut queries = vec![];
    for (file, text) in monitoring::dashboard_files(&repository_dir("dashboards"))? {
        let dashboard: monitoring::grafana::Dashboard =
            serde_json::from_str(&text).with_context(|| format!("dashboards/{file}"))?;
        for panel in dashboard.panels {
            for target in panel.targets {
                queries.push(PanelQuery {
                    source: format!("dashboards/{file}: panel {:?} ({})", panel.title, target.ref_id),
                    expr: substitute(&target.expr),
                });
            }
        }
    }
    for (dashboard, panel, ref_id, expr) in MIXIN_PANELS {
        let expr = expr.replace("{C}", &cadvisor.selector()).replace("{DEV}", MIXIN_DEVICES);
        queries.push(PanelQuery {
            source: format!("kubernetes-mixin {dashboard}: panel {panel:?} ({ref_id})"),
            expr: substitute(&expr),
        });
    }
    Ok(queries)
}

/// Whether an instant query's answer holds a series (or a scalar that is a number).
async fn has_data(http: &reqwest::Client, base: &str, expr: &str) -> Result<bool> {
    let url = format!("{base}api/v1/query");
    let body = http.get(&url).query(&[("query", expr)]).send().await?.text().await?;
    let answer: Value = serde_json::from_str(&body).with_context(|| format!("{url}: {body}"))?;
    ensure!(answer["status"] == "success", "invalid query: {}", answer["error"]);
    Ok(match answer["data"]["resultType"].as_str() {
        Some("scalar") => answer["data"]["result"][1].as_str().is_some_and(|v| v != "NaN"),
        _ => answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty()),
    })
}

/// Whether the kubelet's own cAdvisor on `node` reports block I/O of any
/// pod's container: where it does not (cgroup v1 here charges buffered
/// writeback to no container), the mixin's disk panels are empty at the
/// source, and node-exporter must not invent them.
async fn cadvisor_has_container_block_io(c: &Cluster, node: &str) -> Result<bool> {
    let path = format!("/api/v1/nodes/{node}/proxy/metrics/cadvisor");
    let text = c.client.request_text(http::Request::get(&path).body(vec![])?).await?;
    Ok(text.lines().any(|l| {
        (l.starts_with("container_fs_reads_total{") || l.starts_with("container_fs_writes_total{"))
            && !l.contains("container=\"\"")
    }))
}

pub async fn every_panel_query_has_data(c: &Cluster) -> Result<()> {
    let http = prometheus_http(c)?;
    let base = c.prometheus_url()?;
    // A web pod and its node: web has CPU limits (CFS series) and a quota in its namespace.
    let pods: Vec<Pod> = web_pods(&c.client).await?;
    let pod = pods
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .context("no running web pod")?;
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).context("web pod not scheduled")?;
    let vars = [
        ("cluster", String::new()),
        ("namespace", "default".to_owned()),
        ("pod", name(pod)),
        ("node", node.clone()),
    ];
    let queries = panel_queries(&vars, &vigil_e2e::test_spec().cadvisor_labels)?;
    let block_io_at_source = cadvisor_has_container_block_io(c, &node).await?;
    // Recording rules over 5 minutes need two samples; a minute of scrapes is enough.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut empty = vec![];
        let mut empty_at_source = vec![];
        let mut invalid = vec![];
        for q in &queries {
            match has_data(&http, base, &q.expr).await {
                Ok(true) => {}
                Ok(false) if !block_io_at_source && q.expr.contains("container_fs_") => {
                    empty_at_source.push(&q.source)
                }
                Ok(false) => empty.push(format!("{}\n    {}", q.source, q.expr)),
                Err(e) => invalid.push(format!("{}: {e:#}\n    {}", q.source, q.expr)),
            }
        }
        ensure!(invalid.is_empty(), "panel queries Prometheus refuses:\n{}", invalid.join("\n"));
        if empty.is_empty() {
            println!(
                "{} panel queries have data; {} disk I/O queries are empty because the kubelet's cAdvisor on {node} reports no container block I/O",
                queries.len() - empty_at_source.len(),
                empty_at_source.len()
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} panel queries return no series (pod {}, node {node}):\n{}",
                empty.len(),
                queries.len(),
                vars[2].1,
                empty.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}
