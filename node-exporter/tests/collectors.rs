//! The collectors and the exposition against payloads captured from a real
//! vigil cluster (see `fixtures/README.md`), and the scrape's timeout and
//! cache against a kubelet address that accepts connections but never answers.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use node_exporter::{
    collector::{
        cadvisor,
        docker::from_stats,
        kubelet::{IMAGEFS_MOUNTPOINT, Kubelet, NODEFS_MOUNTPOINT, parse_summary},
    },
    exposition,
    sample::{ContainerId, FilesystemUsage, Runtime},
    scrape::{Outcome, Scrape, Scraper, Source},
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn id(namespace: &str, pod: &str, container: &str) -> ContainerId {
    ContainerId {
        namespace: namespace.into(),
        pod: pod.into(),
        container: container.into(),
        runtime: Runtime::default(),
    }
}

/// A runtime of a Docker container: named by Docker, no cgroup id known.
fn docker_runtime(name: &str) -> Runtime {
    Runtime { image: "vigil.local/node:v1.34.12".into(), id: String::new(), name: name.into() }
}

#[test]
fn kubelet_summary_gives_every_container_with_its_usage() {
    let samples = parse_summary(&read("kubelet-stats-summary.json")).unwrap();
    assert_eq!(samples.containers.len(), 9, "9 containers run on vigil-worker in the capture");
    let usage =
        |i: &ContainerId| samples.containers.iter().find(|(c, _)| c == i).map(|(_, u)| u.clone()).unwrap();
    let web = usage(&id("default", "web-984db4dd5-cv5hr", "web"));
    assert_eq!(web.cpu_seconds, Some(0.073572337));
    assert_eq!(web.memory_working_set_bytes, Some(737_280));
    assert_eq!(web.fs_usage_bytes, Some(20_480));
    let probe = usage(&id("default", "web-984db4dd5-85d9v", "probe-server"));
    assert_eq!(probe.cpu_seconds, Some(0.177507289));
    // Pod network: one eth0 per pod, not per container.
    let eth0: Vec<_> = samples.interfaces.iter().filter(|i| i.pod == "web-984db4dd5-cv5hr").collect();
    assert_eq!(eth0.len(), 1);
    assert_eq!((eth0[0].interface.as_str(), eth0[0].rx_bytes), ("eth0", 211_911));
}

#[test]
fn kubelet_summary_gives_the_nodes_filesystem_and_image_filesystem() {
    let samples = parse_summary(&read("kubelet-stats-summary.json")).unwrap();
    let fs = |mountpoint: &str, avail: u64, files_free: u64| FilesystemUsage {
        mountpoint: mountpoint.into(),
        device: String::new(),
        fstype: String::new(),
        avail_bytes: Some(avail),
        size_bytes: Some(270_553_174_016),
        files_free: Some(files_free),
        files: Some(16_777_216),
    };
    // One host disk under both in the capture (node containers share it).
    assert_eq!(
        samples.filesystems,
        vec![
            fs(NODEFS_MOUNTPOINT, 19_933_048_832, 15_984_163),
            fs(IMAGEFS_MOUNTPOINT, 19_933_048_832, 15_984_163)
        ]
    );
    let other = parse_summary(&read("kubelet-stats-summary-with-cadvisor.json")).unwrap();
    assert_eq!(other.filesystems[0].avail_bytes, Some(35_130_744_832));
}

#[test]
fn a_summary_without_node_stats_gives_no_filesystem() {
    let samples = parse_summary(br#"{"node": {"nodeName": "n"}, "pods": []}"#).unwrap();
    assert!(samples.filesystems.is_empty());
    let samples = parse_summary(br#"{"pods": []}"#).unwrap();
    assert!(samples.filesystems.is_empty());
}

#[test]
fn exposition_names_filesystems_as_node_exporter_does() {
    let text = exposition::render(Arc::new(scrape_of_fixture()));
    let value = |series: &str| -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    for (series, expected) in [
        (
            r#"node_filesystem_avail_bytes{device="",fstype="",mountpoint="/var/lib/kubelet"}"#,
            19_933_048_832.0,
        ),
        (
            r#"node_filesystem_size_bytes{device="",fstype="",mountpoint="/var/lib/kubelet"}"#,
            270_553_174_016.0,
        ),
        (r#"node_filesystem_files_free{device="",fstype="",mountpoint="/var/lib/kubelet"}"#, 15_984_163.0),
        (r#"node_filesystem_files{device="",fstype="",mountpoint="/var/lib/kubelet"}"#, 16_777_216.0),
        (
            r#"node_filesystem_avail_bytes{device="",fstype="",mountpoint="/var/lib/containerd"}"#,
            19_933_048_832.0,
        ),
    ] {
        assert_eq!(value(series), Some(expected), "{series} in\n{text}");
    }
    for family in ["node_filesystem_avail_bytes", "node_filesystem_files"] {
        assert!(text.contains(&format!("# TYPE {family} gauge\n")), "{family} is not a gauge:\n{text}");
    }
}

#[test]
fn a_summary_that_is_not_one_is_a_parse_error() {
    let err = parse_summary(b"<html>502</html>").unwrap_err();
    assert_eq!(err.metric_label(), "parse");
    assert!(err.to_string().starts_with("kubelet: unexpected answer"), "{err}");
}

#[test]
fn docker_stats_of_a_plain_container_are_named_by_docker() {
    let stats: bollard::models::ContainerStatsResponse =
        serde_json::from_slice(&read("docker-stats-vigil-worker.json")).unwrap();
    let listed: serde_json::Value =
        serde_json::from_slice(&read("docker-containers-vigil-worker.json")).unwrap();
    let labels: HashMap<String, String> = serde_json::from_value(listed[0]["Labels"].clone()).unwrap();
    let (id_, usage, interfaces) = from_stats(docker_runtime("vigil-worker"), &labels, &stats);
    assert_eq!(id_, ContainerId { runtime: docker_runtime("vigil-worker"), ..id("", "", "vigil-worker") });
    assert_eq!(usage.cpu_seconds, Some(20.303852369));
    // cgroup v1: working set = usage - total_inactive_file, as cAdvisor computes it.
    assert_eq!(usage.memory_usage_bytes, Some(230_535_168));
    assert_eq!(usage.memory_working_set_bytes, Some(230_535_168 - 27_004_928));
    assert_eq!(interfaces.len(), 1);
    assert_eq!(
        (interfaces[0].interface.as_str(), interfaces[0].container.as_str()),
        ("eth0", "vigil-worker")
    );
}

#[test]
fn docker_containers_of_a_kubelet_are_named_by_their_pod() {
    let stats: bollard::models::ContainerStatsResponse =
        serde_json::from_slice(&read("docker-stats-vigil-worker.json")).unwrap();
    let labels = HashMap::from([
        ("io.kubernetes.pod.namespace".to_owned(), "default".to_owned()),
        ("io.kubernetes.pod.name".to_owned(), "web-1".to_owned()),
        ("io.kubernetes.container.name".to_owned(), "web".to_owned()),
    ]);
    let runtime = docker_runtime("k8s_web_web-1_default_0");
    let (id_, _, interfaces) = from_stats(runtime.clone(), &labels, &stats);
    assert_eq!(id_, ContainerId { runtime, ..id("default", "web-1", "web") });
    assert_eq!(interfaces[0].pod, "web-1");
}

/// The summary and `/metrics/cadvisor` captured together, merged.
fn merged_capture() -> node_exporter::sample::Samples {
    let mut samples = parse_summary(&read("kubelet-stats-summary-with-cadvisor.json")).unwrap();
    let text = String::from_utf8(read("kubelet-metrics-cadvisor.txt")).unwrap();
    cadvisor::merge(&mut samples, &text).unwrap();
    samples
}

#[test]
fn cadvisor_gives_each_container_its_runtime_labels_cache_and_swap() {
    let samples = merged_capture();
    assert_eq!(samples.containers.len(), 10);
    let (web, usage) = samples
        .containers
        .iter()
        .find(|(c, _)| c.pod == "web-5dc6d657d7-2n4t4" && c.container == "web")
        .unwrap();
    assert_eq!(web.runtime.image, "vigil.local/web:0.1.0");
    assert_eq!(web.runtime.name, "cd7415f971a8e9e9cb0b9c28dc73c6774cc85925fb9a8b250d6de58f34b74425");
    assert!(web.runtime.id.ends_with(&format!("cri-containerd-{}.scope", web.runtime.name)));
    assert_eq!(usage.memory_cache_bytes, Some(12_288));
    assert_eq!(usage.memory_swap_bytes, Some(0));
    // No container here has a CPU limit, and cAdvisor reports CFS periods only under one.
    assert!(samples.containers.iter().all(|(_, u)| u.cpu_cfs_periods.is_none()));
    // Every container has an image: a dashboard's `image!=""` keeps them all.
    assert!(samples.containers.iter().all(|(c, _)| !c.runtime.image.is_empty()), "{:?}", samples.containers);
}

#[test]
fn cadvisor_gives_each_pod_interface_once_with_packets_from_its_sandbox() {
    let samples = merged_capture();
    let web: Vec<_> = samples.interfaces.iter().filter(|i| i.pod == "web-5dc6d657d7-2n4t4").collect();
    assert_eq!(web.len(), 1, "one eth0 per pod, not per container: {web:?}");
    assert_eq!(web[0].container, "");
    assert_eq!(web[0].runtime.image, "vigil.local/pause:3.10.1");
    assert_eq!(web[0].rx_packets, Some(1_600));
    assert!(web[0].tx_packets.is_some() && web[0].rx_dropped.is_some() && web[0].tx_dropped.is_some());
    // The capture's only block I/O series are the node's own (id "/"), which are not a pod's.
    assert!(samples.disks.is_empty(), "{:?}", samples.disks);
}

#[test]
fn exposition_of_a_merged_capture_carries_cadvisor_labels_and_families() {
    let scrape = Scrape {
        node: "vigil-worker".into(),
        outcomes: vec![Outcome {
            collector: "kubelet",
            samples: Some(merged_capture()),
            duration: Duration::from_millis(12),
        }],
        failures: Default::default(),
    };
    let text = exposition::render(Arc::new(scrape));
    let web_cpu = text
        .lines()
        .find(|l| {
            l.starts_with("container_cpu_usage_seconds_total{") && l.contains("2n4t4\",container=\"web\"")
        })
        .unwrap_or_else(|| panic!("no web CPU line in\n{text}"));
    assert!(web_cpu.contains(r#"image="vigil.local/web:0.1.0""#), "{web_cpu}");
    for family in [
        "container_memory_cache{",
        "container_memory_swap{",
        "container_network_receive_packets_total{",
        "container_network_transmit_packets_dropped_total{",
    ] {
        assert!(text.contains(family), "no {family} in\n{text}");
    }
    let web_rx: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("container_network_receive_bytes_total{") && l.contains("2n4t4"))
        .collect();
    assert_eq!(web_rx.len(), 1, "{web_rx:?}");
}

fn scrape_of_fixture() -> Scrape {
    let samples = parse_summary(&read("kubelet-stats-summary.json")).unwrap();
    Scrape {
        node: "vigil-worker".into(),
        outcomes: vec![Outcome {
            collector: "kubelet",
            samples: Some(samples),
            duration: Duration::from_millis(12),
        }],
        failures: Default::default(),
    }
}

#[test]
fn exposition_uses_cadvisor_names_and_dashboard_labels() {
    let text = exposition::render(Arc::new(scrape_of_fixture()));
    let line = r#"container_cpu_usage_seconds_total{namespace="default",pod="web-984db4dd5-cv5hr",container="web",node="vigil-worker",image="",id="",name=""} 0.073572337"#;
    assert!(text.lines().any(|l| l == line), "{text}");
    for family in [
        "container_memory_working_set_bytes{",
        "container_memory_usage_bytes{",
        "container_fs_usage_bytes{",
        "container_network_receive_bytes_total{",
        "container_network_transmit_bytes_total{",
        "vigil_node_exporter_scrape_success{collector=\"kubelet\"} 1",
        "vigil_node_exporter_scrape_duration_seconds{collector=\"kubelet\"} 0.012",
        "vigil_node_exporter_containers{collector=\"kubelet\"} 9",
    ] {
        assert!(text.contains(family), "no {family} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn a_failed_collection_exports_no_container_series_and_says_so() {
    let mut scrape = scrape_of_fixture();
    scrape.outcomes[0].samples = None;
    scrape.failures.insert(("kubelet", "timeout"), 2);
    let text = exposition::render(Arc::new(scrape));
    assert!(!text.contains("container_"), "stale series after a failure:\n{text}");
    assert!(!text.contains("node_filesystem_"), "stale filesystem after a failure:\n{text}");
    assert!(text.contains("vigil_node_exporter_scrape_success{collector=\"kubelet\"} 0"));
    assert!(
        text.contains(r#"vigil_node_exporter_scrape_failures_total{collector="kubelet",error="timeout"} 2"#)
    );
}

/// A kubelet address that accepts TCP connections and never answers them.
async fn silent_kubelet() -> (Kubelet, tokio::net::TcpListener, tempfile::NamedTempFile) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "token").unwrap();
    let kubelet =
        Kubelet::new("127.0.0.1", port, &fixture("cluster-ca.crt"), token.path().to_owned()).unwrap();
    (kubelet, listener, token)
}

#[tokio::test]
async fn a_silent_kubelet_costs_one_timeout_not_a_stalled_scrape() {
    let (kubelet, _listener, _token) = silent_kubelet().await;
    let scraper =
        Scraper::new("n".into(), vec![Source::Kubelet(kubelet)], Duration::from_millis(300), Duration::ZERO);
    let started = std::time::Instant::now();
    let scrape = scraper.scrape().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "the scrape waited {took:?} for a silent kubelet");
    assert!(scrape.outcomes[0].samples.is_none());
    assert_eq!(scrape.failures.get(&("kubelet", "timeout")), Some(&1));
    // Without a cache, the next scrape collects (and times out) again.
    let again = scraper.scrape().await;
    assert!(!Arc::ptr_eq(&scrape, &again));
    assert_eq!(again.failures.get(&("kubelet", "timeout")), Some(&2));
}

#[tokio::test]
async fn scrapes_within_the_cache_window_share_one_collection() {
    let (kubelet, _listener, _token) = silent_kubelet().await;
    let scraper = Scraper::new(
        "n".into(),
        vec![Source::Kubelet(kubelet)],
        Duration::from_millis(50),
        Duration::from_secs(60),
    );
    let (first, second) = tokio::join!(scraper.scrape(), scraper.scrape());
    assert!(Arc::ptr_eq(&first, &second), "two concurrent scrapes collected twice");
    assert_eq!(second.failures.get(&("kubelet", "timeout")), Some(&1));
}

#[tokio::test]
async fn an_unreadable_token_is_a_config_error_naming_the_file() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let missing = PathBuf::from("/nonexistent/vigil/token");
    let kubelet = Kubelet::new("127.0.0.1", port, &fixture("cluster-ca.crt"), missing).unwrap();
    use node_exporter::collector::Collector as _;
    let err = kubelet.collect().await.unwrap_err();
    assert_eq!(err.metric_label(), "config");
    assert!(err.to_string().contains("/nonexistent/vigil/token"), "{err}");
}

#[test]
fn a_ca_that_is_not_a_certificate_is_refused_at_start() {
    let bogus = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bogus.path(), "not a certificate").unwrap();
    let err = Kubelet::new("127.0.0.1", 10250, bogus.path(), "/t".into()).err().expect("refused");
    assert!(err.to_string().contains(&bogus.path().display().to_string()), "{err}");
}

#[test]
fn a_missing_docker_socket_is_one_error_naming_it_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock").display().to_string();
    let err =
        node_exporter::collector::docker::DockerCollector::connect(&socket).err().expect("no socket there");
    assert_eq!(err.metric_label(), "config");
    let message = err.to_string();
    assert!(message.contains(&socket) && message.contains("--collector.docker"), "{message}");
}
