//! One scrape as OpenMetrics text, with cAdvisor's metric names and labels
//! (`namespace`, `pod`, `container`, `image`, `id`, `name`, plus `node`),
//! plus the exporter's own `vigil_node_exporter_*` metrics. A pod's network
//! counters are its sandbox's, once per interface, as cAdvisor reports them.
//! The node's filesystems are node_exporter's `node_filesystem_*` series.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    sample::{ContainerId, ContainerUsage, DiskUsage, FilesystemUsage, InterfaceUsage, Runtime},
    scrape::Scrape,
};

#[derive(Debug)]
struct ScrapeCollector(std::sync::Arc<Scrape>);

type Labels = Vec<(&'static str, String)>;

fn labels(node: &str, namespace: &str, pod: &str, container: &str, runtime: &Runtime) -> Labels {
    vec![
        ("namespace", namespace.into()),
        ("pod", pod.into()),
        ("container", container.into()),
        ("node", node.into()),
        ("image", runtime.image.clone()),
        ("id", runtime.id.clone()),
        ("name", runtime.name.clone()),
    ]
}

fn container_labels(node: &str, id: &ContainerId) -> Labels {
    labels(node, &id.namespace, &id.pod, &id.container, &id.runtime)
}

fn interface_labels(node: &str, i: &InterfaceUsage) -> Labels {
    let mut labels = labels(node, &i.namespace, &i.pod, &i.container, &i.runtime);
    labels.push(("interface", i.interface.clone()));
    labels
}

/// node_exporter's labels, and only those: its series have no `node`
/// (the target is the node), and queries written for it match exactly.
fn filesystem_labels(f: &FilesystemUsage) -> Labels {
    vec![("device", f.device.clone()), ("fstype", f.fstype.clone()), ("mountpoint", f.mountpoint.clone())]
}

fn disk_labels(node: &str, d: &DiskUsage) -> Labels {
    let mut labels = container_labels(node, &d.container);
    labels.push(("device", d.device.clone()));
    labels
}

/// Each family of `families` that has a value, one series per item.
fn encode_families<T>(
    encoder: &mut DescriptorEncoder,
    families: &[Family<T>],
    items: &[&T],
    labels: &dyn Fn(&T) -> Labels,
) -> Result<(), std::fmt::Error> {
    for family in families {
        let present: Vec<_> = items.iter().filter_map(|i| (family.value)(i).map(|v| (i, v))).collect();
        if present.is_empty() {
            continue;
        }
        let mut descriptor = encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
        for (item, value) in present {
            encode_value(family.kind, value, descriptor.encode_family(&labels(item))?)?;
        }
    }
    Ok(())
}

struct Family<'a, T> {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    value: &'a dyn Fn(&T) -> Option<f64>,
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let scrape = &self.0;
        let node = scrape.node.as_str();
        let containers: Vec<_> =
            scrape.outcomes.iter().filter_map(|o| o.samples.as_ref()).flat_map(|s| &s.containers).collect();
        let interfaces: Vec<_> =
            scrape.outcomes.iter().filter_map(|o| o.samples.as_ref()).flat_map(|s| &s.interfaces).collect();

        let disks: Vec<_> =
            scrape.outcomes.iter().filter_map(|o| o.samples.as_ref()).flat_map(|s| &s.disks).collect();
        let float = |v: Option<u64>| v.map(|v| v as f64);

        let container_families: [Family<(ContainerId, ContainerUsage)>; 10] = [
            Family {
                name: "container_cpu_usage_seconds",
                help: "Cumulative CPU time consumed, in seconds",
                kind: MetricType::Counter,
                value: &|(_, u)| u.cpu_seconds,
            },
            Family {
                name: "container_memory_working_set_bytes",
                help: "Current working set, in bytes",
                kind: MetricType::Gauge,
                value: &|(_, u)| float(u.memory_working_set_bytes),
            },
            Family {
                name: "container_memory_usage_bytes",
                help: "Current memory usage, including all memory regardless of when it was accessed",
                kind: MetricType::Gauge,
                value: &|(_, u)| float(u.memory_usage_bytes),
            },
            Family {
                name: "container_memory_rss",
                help: "Size of RSS, in bytes",
                kind: MetricType::Gauge,
                value: &|(_, u)| float(u.memory_rss_bytes),
            },
            Family {
                name: "container_memory_cache",
                help: "Number of bytes of page cache memory",
                kind: MetricType::Gauge,
                value: &|(_, u)| float(u.memory_cache_bytes),
            },
            Family {
                name: "container_memory_swap",
                help: "Container swap usage, in bytes",
                kind: MetricType::Gauge,
                value: &|(_, u)| float(u.memory_swap_bytes),
            },
            Family {
                name: "container_cpu_cfs_periods",
                help: "Number of elapsed enforcement period intervals",
                kind: MetricType::Counter,
                value: &|(_, u)| float(u.cpu_cfs_periods),
            },
            Family {
                name: "container_cpu_cfs_throttled_periods",
                help: "Number of throttled period intervals",
                kind: MetricType::Counter,
                value: &|(_, u)| float(u.cpu_cfs_throttled_periods),
            },
            Family {
                name: "container_fs_usage_bytes",
                help: "Bytes used by the container's writable layer",
                kind: MetricType::Gauge,
                value: &|(_, u)| float(u.fs_usage_bytes),
            },
            Family {
                name: "container_fs_limit_bytes",
                help: "Bytes the container's filesystem can use",
                kind: MetricType::Gauge,
                value: &|(_, u)| float(u.fs_limit_bytes),
            },
        ];
        encode_families(&mut encoder, &container_families, &containers, &|(id, _)| {
            container_labels(node, id)
        })?;

        let interface_families: [Family<InterfaceUsage>; 8] = [
            Family {
                name: "container_network_receive_bytes",
                help: "Cumulative bytes received",
                kind: MetricType::Counter,
                value: &|i| Some(i.rx_bytes as f64),
            },
            Family {
                name: "container_network_transmit_bytes",
                help: "Cumulative bytes transmitted",
                kind: MetricType::Counter,
                value: &|i| Some(i.tx_bytes as f64),
            },
            Family {
                name: "container_network_receive_errors",
                help: "Cumulative errors while receiving",
                kind: MetricType::Counter,
                value: &|i| Some(i.rx_errors as f64),
            },
            Family {
                name: "container_network_transmit_errors",
                help: "Cumulative errors while transmitting",
                kind: MetricType::Counter,
                value: &|i| Some(i.tx_errors as f64),
            },
            Family {
                name: "container_network_receive_packets",
                help: "Cumulative packets received",
                kind: MetricType::Counter,
                value: &|i| float(i.rx_packets),
            },
            Family {
                name: "container_network_transmit_packets",
                help: "Cumulative packets transmitted",
                kind: MetricType::Counter,
                value: &|i| float(i.tx_packets),
            },
            Family {
                name: "container_network_receive_packets_dropped",
                help: "Cumulative packets dropped while receiving",
                kind: MetricType::Counter,
                value: &|i| float(i.rx_dropped),
            },
            Family {
                name: "container_network_transmit_packets_dropped",
                help: "Cumulative packets dropped while transmitting",
                kind: MetricType::Counter,
                value: &|i| float(i.tx_dropped),
            },
        ];
        encode_families(&mut encoder, &interface_families, &interfaces, &|i| interface_labels(node, i))?;

        let disk_families: [Family<DiskUsage>; 4] = [
            Family {
                name: "container_fs_reads",
                help: "Cumulative reads completed",
                kind: MetricType::Counter,
                value: &|d| float(d.reads),
            },
            Family {
                name: "container_fs_writes",
                help: "Cumulative writes completed",
                kind: MetricType::Counter,
                value: &|d| float(d.writes),
            },
            Family {
                name: "container_fs_reads_bytes",
                help: "Cumulative bytes read",
                kind: MetricType::Counter,
                value: &|d| float(d.read_bytes),
            },
            Family {
                name: "container_fs_writes_bytes",
                help: "Cumulative bytes written",
                kind: MetricType::Counter,
                value: &|d| float(d.write_bytes),
            },
        ];
        encode_families(&mut encoder, &disk_families, &disks, &|d| disk_labels(node, d))?;

        let filesystems: Vec<_> =
            scrape.outcomes.iter().filter_map(|o| o.samples.as_ref()).flat_map(|s| &s.filesystems).collect();
        let filesystem_families: [Family<FilesystemUsage>; 4] = [
            Family {
                name: "node_filesystem_avail_bytes",
                help: "Filesystem space available to non-root users in bytes.",
                kind: MetricType::Gauge,
                value: &|f| float(f.avail_bytes),
            },
            Family {
                name: "node_filesystem_size_bytes",
                help: "Filesystem size in bytes.",
                kind: MetricType::Gauge,
                value: &|f| float(f.size_bytes),
            },
            Family {
                name: "node_filesystem_files_free",
                help: "Filesystem total free file nodes.",
                kind: MetricType::Gauge,
                value: &|f| float(f.files_free),
            },
            Family {
                name: "node_filesystem_files",
                help: "Filesystem total file nodes.",
                kind: MetricType::Gauge,
                value: &|f| float(f.files),
            },
        ];
        encode_families(&mut encoder, &filesystem_families, &filesystems, &filesystem_labels)?;

        let collector_label = |name: &'static str| vec![("collector", name.to_owned())];
        let mut success = encoder.encode_descriptor(
            "vigil_node_exporter_scrape_success",
            "Whether the collector's last collection succeeded (1) or not (0)",
            None,
            MetricType::Gauge,
        )?;
        for o in &scrape.outcomes {
            ConstGauge::new(o.samples.is_some() as i64)
                .encode(success.encode_family(&collector_label(o.collector))?)?;
        }
        let mut duration = encoder.encode_descriptor(
            "vigil_node_exporter_scrape_duration_seconds",
            "How long the collector's last collection took",
            None,
            MetricType::Gauge,
        )?;
        for o in &scrape.outcomes {
            ConstGauge::new(o.duration.as_secs_f64())
                .encode(duration.encode_family(&collector_label(o.collector))?)?;
        }
        let mut count = encoder.encode_descriptor(
            "vigil_node_exporter_containers",
            "Containers the collector reported in its last collection",
            None,
            MetricType::Gauge,
        )?;
        for o in scrape.outcomes.iter().filter(|o| o.samples.is_some()) {
            let n = o.samples.as_ref().map_or(0, |s| s.containers.len()) as i64;
            ConstGauge::new(n).encode(count.encode_family(&collector_label(o.collector))?)?;
        }
        let mut failures = encoder.encode_descriptor(
            "vigil_node_exporter_scrape_failures",
            "Failed collections, by collector and kind of error",
            None,
            MetricType::Counter,
        )?;
        for ((collector, kind), n) in &scrape.failures {
            let labels = vec![("collector", (*collector).to_owned()), ("error", (*kind).to_owned())];
            ConstCounter::new(*n).encode(failures.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn encode_value(
    kind: MetricType,
    value: f64,
    encoder: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(encoder),
        _ => ConstGauge::new(value).encode(encoder),
    }
}

/// The scrape as an OpenMetrics document.
pub fn render(scrape: std::sync::Arc<Scrape>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ScrapeCollector(scrape)));
    vigil_telemetry::otel::register(&mut registry);
    vigil_telemetry::encode(&registry)
}
