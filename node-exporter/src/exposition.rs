//! One scrape as OpenMetrics text, with cAdvisor's metric names and the
//! labels dashboards query (`namespace`, `pod`, `container`, `node`), plus
//! the exporter's own `vigil_node_exporter_*` metrics.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    sample::{ContainerUsage, InterfaceUsage},
    scrape::Scrape,
};

#[derive(Debug)]
struct ScrapeCollector(std::sync::Arc<Scrape>);

type Labels = Vec<(&'static str, String)>;

fn container_labels(node: &str, namespace: &str, pod: &str, container: &str) -> Labels {
    vec![
        ("namespace", namespace.into()),
        ("pod", pod.into()),
        ("container", container.into()),
        ("node", node.into()),
    ]
}

fn interface_labels(node: &str, i: &InterfaceUsage) -> Labels {
    let mut labels = container_labels(node, &i.namespace, &i.pod, &i.container);
    labels.push(("interface", i.interface.clone()));
    labels
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

        let container_families: [Family<ContainerUsage>; 6] = [
            Family {
                name: "container_cpu_usage_seconds",
                help: "Cumulative CPU time consumed, in seconds",
                kind: MetricType::Counter,
                value: &|u| u.cpu_seconds,
            },
            Family {
                name: "container_memory_working_set_bytes",
                help: "Current working set, in bytes",
                kind: MetricType::Gauge,
                value: &|u| u.memory_working_set_bytes.map(|v| v as f64),
            },
            Family {
                name: "container_memory_usage_bytes",
                help: "Current memory usage, including all memory regardless of when it was accessed",
                kind: MetricType::Gauge,
                value: &|u| u.memory_usage_bytes.map(|v| v as f64),
            },
            Family {
                name: "container_memory_rss",
                help: "Size of RSS, in bytes",
                kind: MetricType::Gauge,
                value: &|u| u.memory_rss_bytes.map(|v| v as f64),
            },
            Family {
                name: "container_fs_usage_bytes",
                help: "Bytes used by the container's writable layer",
                kind: MetricType::Gauge,
                value: &|u| u.fs_usage_bytes.map(|v| v as f64),
            },
            Family {
                name: "container_fs_limit_bytes",
                help: "Bytes the container's filesystem can use",
                kind: MetricType::Gauge,
                value: &|u| u.fs_limit_bytes.map(|v| v as f64),
            },
        ];
        for family in &container_families {
            let present: Vec<_> =
                containers.iter().filter_map(|(id, usage)| (family.value)(usage).map(|v| (id, v))).collect();
            if present.is_empty() {
                continue;
            }
            let mut descriptor = encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (id, value) in present {
                let labels = container_labels(node, &id.namespace, &id.pod, &id.container);
                encode_value(family.kind, value, descriptor.encode_family(&labels)?)?;
            }
        }

        let interface_families: [Family<InterfaceUsage>; 4] = [
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
        ];
        if !interfaces.is_empty() {
            for family in &interface_families {
                let mut descriptor =
                    encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
                for i in &interfaces {
                    let value = (family.value)(i).unwrap_or(0.0);
                    encode_value(family.kind, value, descriptor.encode_family(&interface_labels(node, i))?)?;
                }
            }
        }

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
    vigil_telemetry::encode(&registry)
}
