//! The kubelet's `/metrics/cadvisor`: what its embedded cAdvisor knows that
//! the stats summary leaves out. The summary stays the source of CPU,
//! memory, filesystem and network bytes; this adds, by container, the
//! runtime's labels (`image`, `id`, `name`), memory cache and swap, CFS
//! throttling, packet and drop counters of each pod's sandbox, and block
//! I/O by device, so dashboards written for cAdvisor find every series
//! they select.

use std::collections::BTreeMap;

use super::Error;
use crate::sample::{ContainerId, DiskUsage, Runtime, Samples};

const NAME: &str = "kubelet";

/// One sample line of the text exposition format.
#[derive(Debug, PartialEq)]
pub struct Line<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Line<'_> {
    pub fn label(&self, key: &str) -> &str {
        self.labels.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| v.as_str())
    }
}

/// The families read, and nothing else: the endpoint writes about sixty,
/// and a line of another family is skipped before its labels are parsed.
const FAMILIES: [&str; 14] = [
    "container_cpu_usage_seconds_total",
    "container_memory_cache",
    "container_memory_swap",
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_network_receive_packets_total",
    "container_network_transmit_packets_total",
    "container_network_receive_packets_dropped_total",
    "container_network_transmit_packets_dropped_total",
    "container_fs_reads_total",
    "container_fs_writes_total",
    "container_fs_reads_bytes_total",
    "container_fs_writes_bytes_total",
    "container_memory_working_set_bytes",
];

fn parse_error(message: String) -> Error {
    Error::Parse { source_name: NAME, message: format!("/metrics/cadvisor: {message}") }
}

/// The lines of `text` whose family is one of [`FAMILIES`].
pub fn parse(text: &str) -> Result<Vec<Line<'_>>, Error> {
    let mut lines = vec![];
    for (number, raw) in text.lines().enumerate() {
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let name_end = raw.find(['{', ' ']).unwrap_or(raw.len());
        let name = &raw[..name_end];
        if !FAMILIES.contains(&name) {
            continue;
        }
        let line = parse_line(name, &raw[name_end..])
            .map_err(|m| parse_error(format!("line {}: {m}: {raw}", number + 1)))?;
        lines.push(line);
    }
    Ok(lines)
}

/// `rest` is what follows the metric name: `{labels} value [timestamp]`.
fn parse_line<'a>(name: &'a str, rest: &'a str) -> Result<Line<'a>, String> {
    let mut labels = vec![];
    let mut rest = rest;
    if let Some(body) = rest.strip_prefix('{') {
        rest = body;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label without '='")?;
            let key = rest[..eq].trim();
            let quoted = rest[eq + 1..].strip_prefix('"').ok_or("a label value without quotes")?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("an unterminated escape".into()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value".into()),
                }
            };
            labels.push((key, value));
            rest = &quoted[end + 1..];
        }
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().map_err(|e| format!("value {v}: {e}"))?,
    };
    Ok(Line { name, labels, value })
}

type PodKey = (String, String);
type ContainerKey = (String, String, String);

/// What `/metrics/cadvisor` adds to the summary's samples, by container
/// and by pod sandbox.
pub fn merge(samples: &mut Samples, text: &str) -> Result<(), Error> {
    let lines = parse(text)?;
    let container_key = |l: &Line| {
        (l.label("namespace").to_owned(), l.label("pod").to_owned(), l.label("container").to_owned())
    };
    let runtime = |l: &Line| Runtime {
        image: l.label("image").to_owned(),
        id: l.label("id").to_owned(),
        name: l.label("name").to_owned(),
    };
    let counter = |v: f64| (v >= 0.0 && v.is_finite()).then_some(v as u64);

    let mut runtimes: BTreeMap<ContainerKey, Runtime> = BTreeMap::new();
    let mut sandboxes: BTreeMap<PodKey, Runtime> = BTreeMap::new();
    let mut values: BTreeMap<(ContainerKey, &str), u64> = BTreeMap::new();
    let mut interfaces: BTreeMap<(PodKey, String, &str), u64> = BTreeMap::new();
    let mut disks: BTreeMap<(ContainerKey, String), DiskUsage> = BTreeMap::new();
    for line in &lines {
        // Series of cgroups that are no pod's (the node, slices) are not ours to export.
        if line.label("pod").is_empty() || line.label("image").is_empty() {
            continue;
        }
        let key = container_key(line);
        let is_sandbox = key.2.is_empty();
        if is_sandbox {
            sandboxes.entry((key.0.clone(), key.1.clone())).or_insert_with(|| runtime(line));
        } else {
            runtimes.entry(key.clone()).or_insert_with(|| runtime(line));
        }
        let Some(value) = counter(line.value) else { continue };
        match line.name {
            name if name.starts_with("container_network_") && is_sandbox => {
                interfaces.insert(((key.0, key.1), line.label("interface").to_owned(), name), value);
            }
            name if name.starts_with("container_fs_") && !is_sandbox => {
                let device = line.label("device").to_owned();
                let container = ContainerId {
                    namespace: key.0.clone(),
                    pod: key.1.clone(),
                    container: key.2.clone(),
                    runtime: runtime(line),
                };
                let disk = disks.entry((key, device.clone())).or_insert(DiskUsage {
                    container,
                    device,
                    reads: None,
                    writes: None,
                    read_bytes: None,
                    write_bytes: None,
                });
                let slot = match name {
                    "container_fs_reads_total" => &mut disk.reads,
                    "container_fs_writes_total" => &mut disk.writes,
                    "container_fs_reads_bytes_total" => &mut disk.read_bytes,
                    _ => &mut disk.write_bytes,
                };
                *slot = Some(value);
            }
            name if !is_sandbox => {
                values.insert((key, name), value);
            }
            _ => {}
        }
    }

    for (id, usage) in &mut samples.containers {
        let key = (id.namespace.clone(), id.pod.clone(), id.container.clone());
        if let Some(runtime) = runtimes.get(&key) {
            id.runtime = runtime.clone();
        }
        let value = |name: &str| values.get(&(key.clone(), name)).copied();
        usage.memory_cache_bytes = value("container_memory_cache");
        usage.memory_swap_bytes = value("container_memory_swap");
        usage.cpu_cfs_periods = value("container_cpu_cfs_periods_total");
        usage.cpu_cfs_throttled_periods = value("container_cpu_cfs_throttled_periods_total");
    }
    for interface in &mut samples.interfaces {
        let pod = (interface.namespace.clone(), interface.pod.clone());
        if let Some(runtime) = sandboxes.get(&pod) {
            interface.runtime = runtime.clone();
        }
        let value =
            |name: &'static str| interfaces.get(&(pod.clone(), interface.interface.clone(), name)).copied();
        interface.rx_packets = value("container_network_receive_packets_total");
        interface.tx_packets = value("container_network_transmit_packets_total");
        interface.rx_dropped = value("container_network_receive_packets_dropped_total");
        interface.tx_dropped = value("container_network_transmit_packets_dropped_total");
    }
    samples.disks = disks.into_values().collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_escapes_timestamps_and_other_families_skipped() {
        let text = "# HELP container_memory_cache x\n\
            container_memory_cache{container=\"web\",id=\"/a\\\"b\",image=\"img\",name=\"n\",namespace=\"default\",pod=\"p\"} 4096 1795819790802\n\
            container_tasks_state{container=\"web\",state=\"sleeping\"} 1\n\
            container_memory_swap 0\n";
        let lines = parse(text).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].name, "container_memory_cache");
        assert_eq!(lines[0].label("id"), "/a\"b");
        assert_eq!(lines[0].value, 4096.0);
        assert_eq!(lines[1].labels, vec![]);
    }

    #[test]
    fn a_broken_line_is_a_parse_error_naming_it() {
        let err = parse("container_memory_cache{container=\"web 1\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("unterminated"), "{err}");
    }
}
