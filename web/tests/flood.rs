//! The web binary under a flood of slow clients, on loopback: 300
//! connections that send nothing, half a request line, or a head a byte at
//! a time. web keeps answering ordinary requests promptly, its memory stays
//! bounded, it does not die, and it closes every slow connection itself
//! after its header-read timeout. Bounded: 300 connections, about 10 s.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const FLOOD: usize = 300;
/// web's default (`WEB_HEADER_READ_TIMEOUT`): what the test expects of the binary as shipped.
const HEADER_READ_TIMEOUT: Duration = vigil_telemetry::serve::HEADER_READ_TIMEOUT;
/// What the flood may add to web's resident memory: 300 connections of
/// at most ~20 KiB each are 6 MiB; twice that leaves room for the allocator.
const RSS_GROWTH_BOUND_KIB: u64 = 12 * 1024;
/// The kubelet's probe timeout, and far more than an answer on loopback takes.
const PROMPT: Duration = Duration::from_secs(1);

struct Web(Child);

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// GET `path` on a new connection: the status line and how long the answer took.
async fn get(port: u16, path: &str) -> (String, Duration) {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange).await;
    let status = match answer {
        Ok(Ok(answer)) => answer.lines().next().unwrap_or_default().to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "no answer within 5 s".into(),
    };
    (status, started.elapsed())
}

/// One slow client: `kind` 0 sends nothing, 1 half a request line, 2 a head
/// a byte every 250 ms. Returns how long after connecting the server
/// closed the connection (None: still open after `limit`).
async fn slow_client(port: u16, kind: usize, limit: Duration) -> Option<Duration> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let connected = Instant::now();
    let (mut read, mut write) = stream.into_split();
    match kind {
        0 => {}
        1 => write.write_all(b"GET / HT").await.ok()?,
        _ => {
            tokio::spawn(async move {
                let head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                for byte in head {
                    if write.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            });
        }
    }
    let mut buf = [0u8; 512];
    let closed = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return connected.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, closed).await.ok()
}

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
    let mut web = Web(child);
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
    let flood: Vec<_> = (0..FLOOD).map(|i| tokio::spawn(slow_client(port, i % 3, limit))).collect();
    // Ordinary requests every 100 ms while the flood holds its connections.
    let mut answers = vec![];
    let mut peak = baseline;
    let watching = Instant::now();
    while watching.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(1) {
        answers.push(get(port, "/").await);
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
