//! `serve` against real sockets on loopback: slow and silent clients are
//! shed by the header-read timeout, a stalled request by the idle timeout,
//! the connection cap displaces waiting connections first, bodies are
//! bounded, handlers can see the peer, and a shutdown drains.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::ConnectInfo,
    routing::{get, put},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinHandle,
};
use vigil_telemetry::serve::{self, Limits};

/// Where `/slow` waits until the test lets it answer.
fn app(release: Arc<Notify>) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/large", get(|| async { "x".repeat(LARGE) }))
        .route("/echo", put(|body: String| async move { body }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        )
        .route(
            "/slow",
            get(move || {
                let release = release.clone();
                async move {
                    release.notified().await;
                    "done"
                }
            }),
        )
}

/// A response far larger than the connection's buffers (a node's metrics can be hundreds of KiB).
const LARGE: usize = 1 << 20;

fn limits(header_read_ms: u64, idle_ms: u64) -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(header_read_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        ..Limits::DATA
    }
}

struct Server {
    addr: SocketAddr,
    release: Arc<Notify>,
    stop: Arc<Notify>,
    served: JoinHandle<std::io::Result<()>>,
}

/// Serves [`app`] on a loopback port until `stop` fires.
async fn start(limits: Limits, with_peer: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (release, stop) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let shutdown = {
        let stop = stop.clone();
        async move { stop.notified().await }
    };
    let router = app(release.clone());
    let served = tokio::spawn(async move {
        if with_peer {
            serve::serve_with_peer(listener, router, limits, shutdown).await
        } else {
            serve::serve(listener, router, limits, shutdown).await
        }
    });
    Server { addr, release, stop, served }
}

/// Sends `raw` on a new connection and reads until the server closes it.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = vec![];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 5 s to {:?}", String::from_utf8_lossy(raw));
    String::from_utf8_lossy(&answer).into_owned()
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").into_bytes()
}

/// When (since `started`) the server closed the stream, reading and
/// discarding what it sends; None if still open after `limit`.
async fn closed_at(
    mut stream: impl AsyncRead + Unpin,
    started: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()
}

#[tokio::test]
async fn a_silent_or_slow_head_is_shed_after_the_header_read_timeout() {
    let server = start(limits(400, 10_000), false).await;
    let before = serve::shed_count("header_timeout");
    let started = Instant::now();
    let silent = TcpStream::connect(server.addr).await.unwrap();
    let (slow, mut trickle) = TcpStream::connect(server.addr).await.unwrap().into_split();
    // A byte every 50 ms: activity, but never a whole head.
    tokio::spawn(async move {
        for byte in b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if trickle.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    // Meanwhile a whole request is answered.
    assert!(exchange(server.addr, &get_request("/")).await.starts_with("HTTP/1.1 200"));
    let limit = Duration::from_secs(3);
    let silent = closed_at(silent, started, limit).await.expect("the silent connection is closed");
    let slow = closed_at(slow, started, limit).await.expect("the slow connection is closed");
    for closed in [silent, slow] {
        assert!(closed >= Duration::from_millis(350) && closed < Duration::from_millis(1500), "{closed:?}");
    }
    assert!(serve::shed_count("header_timeout") >= before + 2);
}

#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed() {
    let server = start(limits(400, 10_000), false).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let answered = Instant::now();
    let closed = closed_at(stream, answered, Duration::from_secs(3)).await.expect("closed while idle");
    assert!(closed >= Duration::from_millis(350) && closed < Duration::from_millis(1500), "{closed:?}");
}

#[tokio::test]
async fn a_request_that_stalls_is_closed_after_the_idle_timeout() {
    let server = start(limits(300, 800), false).await;
    let before = serve::shed_count("idle_timeout");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // The head arrives in time; of the 100 bytes of body promised, 10 do.
    stream
        .write_all(b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = closed_at(stream, started, Duration::from_secs(4)).await.expect("closed when idle");
    // Swept four times per timeout: between 1 and 1¼ timeouts, plus scheduling.
    assert!(closed >= Duration::from_millis(750) && closed < Duration::from_millis(2000), "{closed:?}");
    assert!(serve::shed_count("idle_timeout") > before);
}

#[tokio::test]
async fn at_the_cap_a_new_connection_displaces_the_oldest_waiting_one() {
    let server = start(Limits { max_connections: 3, ..limits(5000, 10_000) }, false).await;
    let started = Instant::now();
    let mut waiting = vec![];
    for _ in 0..3 {
        waiting.push(TcpStream::connect(server.addr).await.unwrap());
        // Accepted in this order.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = serve::shed_count("evicted");
    assert!(exchange(server.addr, &get_request("/")).await.starts_with("HTTP/1.1 200"));
    let oldest = waiting.remove(0);
    let closed = closed_at(oldest, started, Duration::from_secs(2)).await;
    assert!(closed.is_some_and(|c| c < Duration::from_secs(2)), "the oldest waiting connection made room");
    for younger in waiting {
        assert_eq!(closed_at(younger, started, Duration::from_millis(200)).await, None, "still open");
    }
    assert!(serve::shed_count("evicted") > before);
}

#[tokio::test]
async fn at_the_cap_with_every_connection_mid_request_a_new_one_is_refused() {
    let server = start(Limits { max_connections: 1, ..limits(5000, 10_000) }, false).await;
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(&get_request("/slow")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = serve::shed_count("refused");
    let refused = exchange(server.addr, &get_request("/")).await;
    assert_eq!(refused, "", "closed without an answer");
    assert!(serve::shed_count("refused") > before);
    server.release.notify_one();
    let mut answer = String::new();
    busy.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"), "{answer}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let server = start(Limits { max_body_bytes: 64, ..limits(5000, 10_000) }, false).await;
    let put = |headers: &str, body: &str| {
        format!("PUT /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n{body}").into_bytes()
    };
    let small = exchange(server.addr, &put("Content-Length: 5\r\n", "hello")).await;
    assert!(small.starts_with("HTTP/1.1 200") && small.ends_with("hello"), "{small}");
    let big = "x".repeat(100);
    let declared = exchange(server.addr, &put("Content-Length: 100\r\n", &big)).await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    let chunked =
        exchange(server.addr, &put("Transfer-Encoding: chunked\r\n", &format!("64\r\n{big}\r\n0\r\n\r\n")))
            .await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
}

#[tokio::test]
async fn a_response_larger_than_the_buffers_is_sent_whole() {
    let server = start(limits(5000, 10_000), false).await;
    let answer = exchange(server.addr, &get_request("/large")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{}", &answer[..100.min(answer.len())]);
    assert!(answer.ends_with(&"x".repeat(LARGE)), "{} bytes", answer.len());
}

#[tokio::test]
async fn handlers_see_the_peer_when_served_with_it() {
    let server = start(limits(5000, 10_000), true).await;
    let answer = exchange(server.addr, &get_request("/peer")).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("127.0.0.1"), "{answer}");
}

#[tokio::test]
async fn shutdown_drains_the_request_in_flight_and_stops_accepting() {
    let server = start(limits(5000, 10_000), false).await;
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(&get_request("/slow")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop.notify_one();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(TcpStream::connect(server.addr).await.is_err(), "the listener is closed");
    assert!(!server.served.is_finished(), "still draining the request in flight");
    server.release.notify_one();
    let mut answer = String::new();
    busy.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"), "{answer}");
    let served = tokio::time::timeout(Duration::from_secs(2), server.served).await;
    assert!(matches!(served, Ok(Ok(Ok(())))), "serve returns once drained: {served:?}");
}

#[test]
fn limits_that_refuse_everyone_are_named() {
    assert_eq!(Limits::DATA.check(), Ok(()));
    assert_eq!(Limits::SMALL.check(), Ok(()));
    let err = Limits { max_connections: 0, ..Limits::DATA }.check().unwrap_err().to_string();
    assert!(err.contains("connection cap") && err.contains("at least 1"), "{err}");
    let err = Limits { header_read_timeout: Duration::ZERO, ..Limits::DATA }.check().unwrap_err().to_string();
    assert!(err.contains("header read timeout") && err.contains("5s"), "{err}");
}
