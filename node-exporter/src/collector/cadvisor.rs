//! The kubelet's `/metrics/cadvisor`: what its embedded cAdvisor knows that
//! the stats summary leaves out. The summary stays the source of CPU,
//! memory, filesystem and network bytes; this adds, by container, the
//! runtime's labels (`image`, `id`, `name`), memory cache and swap, CFS
//! throttling, packet and drop counters of each pod's sandbox, and block
//! I/O by device, so dashboards written for cAdvisor find every series
//! they select.

use std::collections::BTreeMap;

use vigil_telemetry::text_format::{self, Line};

use super::Error;
use crate::sample::{ContainerId, DiskUsage, Runtime, Samples};

const NAME: &str = "kubelet";

/// The families read, and nothing else: the endpoint writes about sixty,
/// and a line of another family is skipped before its labels are parsed.
/// `container_start_time_seconds` picks, among the cgroups of one container
/// name (a restarted container's old one lingers a moment), the newest.
const FAMILIES: [&str; 13] = [
    "container_start_time_seconds",
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
];

fn parse_error(message: String) -> Error {
    Error::Parse { source_name: NAME, message: format!("/metrics/cadvisor: {message}") }
}

/// The lines of `text` whose family is one of [`FAMILIES`].
pub fn parse(text: &str) -> Result<Vec<Line<'_>>, Error> {
    text_format::parse(text, &FAMILIES).map_err(|e| parse_error(e.to_string()))
}

type ContainerKey = (String, String, String);

/// What `/metrics/cadvisor` says of one cgroup (one container, or a pod's sandbox).
#[derive(Default)]
struct Cgroup<'a> {
    key: ContainerKey,
    runtime: Runtime,
    started: f64,
    /// Value by family (and, for network and disk families, interface or device).
    values: BTreeMap<(&'a str, String), u64>,
}

/// A cumulative count or a size, as the samples hold them.
fn whole(v: f64) -> Option<u64> {
    (v >= 0.0 && v.is_finite()).then_some(v as u64)
}

/// What `/metrics/cadvisor` adds to the summary's samples, by container
/// and by pod sandbox. Lines are grouped by cgroup (`id`): one container
/// name may have two for a moment after a restart, and each sample takes
/// every value from the newest one, never a mix.
pub fn merge(samples: &mut Samples, text: &str) -> Result<(), Error> {
    let mut cgroups: BTreeMap<String, Cgroup> = BTreeMap::new();
    for line in parse(text)? {
        // Series of cgroups that are no pod's (the node, slices) are not ours to export.
        if line.label("pod").is_empty() || line.label("image").is_empty() {
            continue;
        }
        let cgroup = cgroups.entry(line.label("id").to_owned()).or_insert_with(|| Cgroup {
            key: (line.label("namespace").into(), line.label("pod").into(), line.label("container").into()),
            runtime: Runtime {
                image: line.label("image").into(),
                id: line.label("id").into(),
                name: line.label("name").into(),
            },
            ..Default::default()
        });
        if line.name == "container_start_time_seconds" {
            cgroup.started = line.value;
            continue;
        }
        let detail = line.label("interface").to_owned() + line.label("device");
        if let Some(value) = whole(line.value) {
            cgroup.values.insert((line.name, detail), value);
        }
    }
    // The newest cgroup of each container name, and of each pod's sandbox (container "").
    let mut newest: BTreeMap<ContainerKey, &Cgroup> = BTreeMap::new();
    for cgroup in cgroups.values() {
        let slot = newest.entry(cgroup.key.clone()).or_insert(cgroup);
        if cgroup.started > slot.started {
            *slot = cgroup;
        }
    }

    for (id, usage) in &mut samples.containers {
        let Some(cgroup) = newest.get(&(id.namespace.clone(), id.pod.clone(), id.container.clone())) else {
            continue;
        };
        id.runtime = cgroup.runtime.clone();
        let value = |name: &str| cgroup.values.get(&(name, String::new())).copied();
        usage.memory_cache_bytes = value("container_memory_cache");
        usage.memory_swap_bytes = value("container_memory_swap");
        usage.cpu_cfs_periods = value("container_cpu_cfs_periods_total");
        usage.cpu_cfs_throttled_periods = value("container_cpu_cfs_throttled_periods_total");
    }
    samples.disks = disks(&newest, &samples.containers);
    for interface in &mut samples.interfaces {
        let Some(sandbox) = newest.get(&(interface.namespace.clone(), interface.pod.clone(), String::new()))
        else {
            continue;
        };
        interface.runtime = sandbox.runtime.clone();
        let value = |name: &str| sandbox.values.get(&(name, interface.interface.clone())).copied();
        interface.rx_packets = value("container_network_receive_packets_total");
        interface.tx_packets = value("container_network_transmit_packets_total");
        interface.rx_dropped = value("container_network_receive_packets_dropped_total");
        interface.tx_dropped = value("container_network_transmit_packets_dropped_total");
    }
    Ok(())
}

/// Block I/O by device of the containers the summary reported.
fn disks(
    newest: &BTreeMap<ContainerKey, &Cgroup>,
    containers: &[(ContainerId, crate::sample::ContainerUsage)],
) -> Vec<DiskUsage> {
    let mut disks = vec![];
    for (id, _) in containers {
        let Some(cgroup) = newest.get(&(id.namespace.clone(), id.pod.clone(), id.container.clone())) else {
            continue;
        };
        let devices: std::collections::BTreeSet<&String> = cgroup
            .values
            .keys()
            .filter(|(name, device)| name.starts_with("container_fs_") && !device.is_empty())
            .map(|(_, device)| device)
            .collect();
        for device in devices {
            let value = |name: &str| cgroup.values.get(&(name, device.clone())).copied();
            disks.push(DiskUsage {
                container: id.clone(),
                device: device.clone(),
                reads: value("container_fs_reads_total"),
                writes: value("container_fs_writes_total"),
                read_bytes: value("container_fs_reads_bytes_total"),
                write_bytes: value("container_fs_writes_bytes_total"),
            });
        }
    }
    disks
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

    fn summary_of(containers: &[(&str, &str)]) -> Samples {
        Samples {
            containers: containers
                .iter()
                .map(|(pod, container)| {
                    let id = ContainerId {
                        namespace: "default".into(),
                        pod: (*pod).into(),
                        container: (*container).into(),
                        runtime: Runtime::default(),
                    };
                    (id, Default::default())
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_restarted_container_takes_every_value_from_its_newest_cgroup() {
        let line = |family: &str, id: &str, extra: &str, value: f64| {
            format!(
                "{family}{{container=\"web\",id=\"/{id}\",image=\"web:{id}\",name=\"{id}\",namespace=\"default\",pod=\"p\"{extra}}} {value}\n"
            )
        };
        // The old cgroup is listed after the new one: order must not matter.
        let text = [
            line("container_start_time_seconds", "new", "", 200.0),
            line("container_cpu_cfs_periods_total", "new", "", 40.0),
            line("container_cpu_cfs_throttled_periods_total", "new", "", 4.0),
            line("container_fs_reads_total", "new", ",device=\"/dev/vda\"", 7.0),
            line("container_fs_writes_bytes_total", "new", ",device=\"/dev/vda\"", 4096.0),
            line("container_start_time_seconds", "old", "", 100.0),
            line("container_cpu_cfs_periods_total", "old", "", 900.0),
            line("container_fs_reads_total", "old", ",device=\"/dev/vdb\"", 1.0),
        ]
        .concat();
        let mut samples = summary_of(&[("p", "web")]);
        merge(&mut samples, &text).unwrap();
        let (id, usage) = &samples.containers[0];
        assert_eq!((id.runtime.id.as_str(), id.runtime.image.as_str()), ("/new", "web:new"));
        assert_eq!((usage.cpu_cfs_periods, usage.cpu_cfs_throttled_periods), (Some(40), Some(4)));
        assert_eq!(samples.disks.len(), 1, "{:?}", samples.disks);
        let disk = &samples.disks[0];
        assert_eq!((disk.device.as_str(), disk.reads, disk.write_bytes), ("/dev/vda", Some(7), Some(4096)));
        assert_eq!((disk.writes, disk.read_bytes), (None, None));
        assert_eq!(disk.container.runtime.id, "/new");
    }

    #[test]
    fn a_broken_line_is_a_parse_error_naming_it() {
        let err = parse("container_memory_cache{container=\"web 1\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("unterminated"), "{err}");
    }
}
