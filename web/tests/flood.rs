//! The web binary under a flood of slow clients, on loopback: 300
//! connections that send nothing, half a request line, or a head a byte at
//! a time. web keeps answering ordinary requests promptly, its memory stays
//! bounded, it does not die, and it closes every slow connection itself
//! after its header-read timeout. Bounded: 300 connections, about 10 s.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tokio::net::TcpStream;
use vigil_telemetry::testing::{Process, free_port, get, rss_kib, slow_client};

const FLOOD: usize = 300;
/// web's default (`WEB_HEADER_READ_TIMEOUT`): what the test expects of the binary as shipped.
const HEADER_READ_TIMEOUT: Duration = vigil_telemetry::serve::HEADER_READ_TIMEOUT;
/// What the flood may add to web's resident memory: 300 connections of
/// at most ~20 KiB each are 6 MiB; twice that leaves room for the allocator.
const RSS_GROWTH_BOUND_KIB: u64 = 12 * 1024;
/// The kubelet's probe timeout, and far more than an answer on loopback takes.
const PROMPT: Duration = Duration::from_secs(1);

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_connections_neither_slows_nor_grows_nor_kills_web() {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_web"))
        .env_clear()
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut web = Process(child);
    let pid = web.0.id();
    let mut up = false;
    for _ in 0..100 {
        if get(port, "/").await.0.starts_with("HTTP/1.1 200") {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "web did not answer on port {port}");
    let baseline = rss_kib(pid);

    let limit = HEADER_READ_TIMEOUT + Duration::from_secs(4);
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
                slow_client(stream, Instant::now(), i % 3, "/", limit).await
            })
        })
        .collect();
    // Ordinary requests every 100 ms while the flood holds its connections.
    let mut answers = vec![];
    let mut peak = baseline;
    let watching = Instant::now();
    while watching.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(1) {
        let (answer, took) = get(port, "/").await;
        answers.push((answer.lines().next().unwrap_or_default().to_owned(), took));
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut closed = vec![];
    for client in flood {
        closed.push(client.await.unwrap());
    }

    let slow: Vec<_> = answers
        .iter()
        .filter(|(status, took)| !status.starts_with("HTTP/1.1 200") || *took > PROMPT)
        .collect();
    assert!(
        slow.is_empty(),
        "{} of {} requests failed or were slow during the flood: {slow:?}",
        slow.len(),
        answers.len()
    );
    let worst = answers.iter().map(|(_, took)| *took).max().unwrap();
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} of {FLOOD} slow connections still open {limit:?} after connecting");
    for after in closed.into_iter().flatten() {
        assert!(
            after >= HEADER_READ_TIMEOUT - Duration::from_millis(100)
                && after <= HEADER_READ_TIMEOUT + Duration::from_secs(3),
            "a slow connection was closed {after:?} after connecting, not at the {HEADER_READ_TIMEOUT:?} header-read timeout"
        );
    }
    assert!(
        peak - baseline <= RSS_GROWTH_BOUND_KIB,
        "RSS grew from {baseline} KiB to {peak} KiB, more than {RSS_GROWTH_BOUND_KIB} KiB"
    );
    assert!(web.0.try_wait().unwrap().is_none(), "web exited during the flood");
    let metrics =
        reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
    let shed = metric(&metrics, r#"web_http_connections_shed_total{reason="header_timeout"}"#);
    assert!(shed >= FLOOD as f64, "{shed} connections shed for their head, not {FLOOD}");
    println!(
        "{} requests during the flood, slowest {worst:?}; RSS {baseline} KiB before, {peak} KiB at most",
        answers.len()
    );
}
