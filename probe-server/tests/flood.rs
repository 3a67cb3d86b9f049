//! probe-server under a flood of slow clients on its probe port, on
//! loopback: 300 connections (more than the port's cap of 128) that send
//! nothing, half a request line, or a head a byte at a time; while they
//! hold their connections the "kubelet" probes `/readyz` and `/livez` every
//! 100 ms. Every probe is
//! answered 200 within the kubelet's 1 s timeout, so a flood cannot get
//! web restarted through failed probes; memory stays bounded; the process
//! lives; and every slow connection is closed by the server (displaced at
//! the cap, or at its header-read timeout). Bounded: 300 connections, ~10 s.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tokio::net::TcpStream;
use vigil_telemetry::testing::{Process, free_port, get, rss_kib, slow_client};

const FLOOD: usize = 300;
const HEADER_READ_TIMEOUT: Duration = vigil_telemetry::serve::HEADER_READ_TIMEOUT;
/// The web pod's probes' `timeoutSeconds`.
const KUBELET_TIMEOUT: Duration = Duration::from_secs(1);
/// At most 128 connections held at once (the cap) of at most ~20 KiB each:
/// about 2.5 MiB; 8 MiB leaves room for the allocator, and stays well
/// inside the sidecar's 32 MiB limit.
const RSS_GROWTH_BOUND_KIB: u64 = 8 * 1024;

/// A workload on loopback that answers 200 to anything.
fn workload() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_the_probe_port_does_not_fail_the_kubelets_probes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let (probes, admin) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            r#"{{"listen": "127.0.0.1:{probes}", "admin_listen": "127.0.0.1:{admin}", "period": "200ms",
                "workload": {{"name": "web", "http": "http://127.0.0.1:{}/", "timeout": "150ms"}}}}"#,
            workload()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_probe-server"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Process(child);
    let pid = server.0.id();
    let mut ready = false;
    for _ in 0..200 {
        if get(probes, "/readyz").await.0.starts_with("HTTP/1.1 200") {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "probe-server never ready on port {probes}");
    let baseline = rss_kib(pid);

    let limit = HEADER_READ_TIMEOUT + Duration::from_secs(4);
    let connecting: Vec<_> = (0..FLOOD)
        .map(|_| {
            tokio::spawn(async move { (TcpStream::connect(("127.0.0.1", probes)).await, Instant::now()) })
        })
        .collect();
    let mut flood = vec![];
    for (i, connected) in connecting.into_iter().enumerate() {
        let (stream, at) = connected.await.unwrap();
        flood.push(tokio::spawn(slow_client(
            stream.expect("the flood connects"),
            at,
            i % 3,
            "/readyz",
            limit,
        )));
    }
    // The flood holds its connections; the server has accepted them (and
    // displaced the oldest beyond its cap).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut answers = vec![];
    let mut peak = baseline;
    let watching = Instant::now();
    while watching.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(1) {
        for path in ["/readyz", "/livez"] {
            let (answer, took) = get(probes, path).await;
            answers.push((path, answer.lines().next().unwrap_or_default().to_owned(), took));
        }
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut closed = vec![];
    for client in flood {
        closed.push(client.await.unwrap());
    }

    let failed: Vec<_> = answers
        .iter()
        .filter(|(_, status, took)| !status.starts_with("HTTP/1.1 200") || *took > KUBELET_TIMEOUT)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} probes failed or timed out during the flood: {failed:?}",
        failed.len(),
        answers.len()
    );
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} of {FLOOD} slow connections still open {limit:?} after connecting");
    assert!(
        closed.iter().flatten().all(|after| *after <= HEADER_READ_TIMEOUT + Duration::from_secs(3)),
        "every slow connection goes by its header-read timeout"
    );
    assert!(
        peak - baseline <= RSS_GROWTH_BOUND_KIB,
        "RSS grew from {baseline} KiB to {peak} KiB, more than {RSS_GROWTH_BOUND_KIB} KiB"
    );
    assert!(server.0.try_wait().unwrap().is_none(), "probe-server exited during the flood");
    let (metrics, _) = get(admin, "/metrics").await;
    let shed = |reason: &str| {
        let series = format!(r#"probe_http_connections_shed_total{{reason="{reason}"}} "#);
        metrics.lines().find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    assert!(shed("evicted") > 0.0, "the cap of 128 displaced waiting connections:\n{metrics}");
    assert!(shed("evicted") + shed("header_timeout") >= FLOOD as f64, "{metrics}");
    let worst = answers.iter().map(|(_, _, took)| *took).max().unwrap();
    println!(
        "{} probes during the flood, slowest {worst:?}; RSS {baseline} KiB before, {peak} KiB at most; shed: {} evicted, {} at the header timeout",
        answers.len(),
        shed("evicted"),
        shed("header_timeout")
    );
}
