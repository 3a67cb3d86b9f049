//! The proxy in front of a real upstream on loopback, through real
//! connections: what passes, what is refused and how, and that answers
//! stream.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use auth_proxy::{
    auth::{Users, basic_header},
    config::{Config, Grant, Limits, Route},
    metrics::Metrics,
};
use axum::{
    Router,
    body::Body,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

const LIMIT: u64 = 1024;

/// An upstream that says what it received.
async fn upstream(release: Arc<Notify>) -> SocketAddr {
    async fn echo(headers: HeaderMap, body: axum::body::Bytes) -> impl IntoResponse {
        let saw = headers.contains_key("authorization").to_string();
        (
            StatusCode::CREATED,
            [
                ("access-control-allow-origin", "*".to_owned()),
                ("access-control-allow-credentials", "true".to_owned()),
                ("x-upstream", "yes".to_owned()),
                ("x-saw-authorization", saw),
            ],
            body,
        )
    }
    let stream = move || {
        let release = release.clone();
        async move {
            let chunks = futures::stream::unfold(0, move |n| {
                let release = release.clone();
                async move {
                    match n {
                        0 => Some((Ok::<_, std::io::Error>("first\n"), 1)),
                        1 => {
                            release.notified().await;
                            Some((Ok("second\n"), 2))
                        }
                        _ => None,
                    }
                }
            });
            Body::from_stream(chunks)
        }
    };
    let app = Router::new()
        .route("/-/ready", get(|| async { "ready\n" }).post(|| async { "posted\n" }))
        .route("/echo", post(echo))
        .route("/v1/traces", post(|| async { "accepted\n" }).get(|| async { "listed\n" }))
        .route("/stream", get(stream))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late\n"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Proxy {
    url: String,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    release: Arc<Notify>,
}

fn config(upstream: SocketAddr, limits: Limits) -> Config {
    Config {
        realm: "vigil".into(),
        users: BTreeMap::from([
            ("vigil".into(), "/etc/auth-proxy/users/vigil".into()),
            ("otlp".into(), "/etc/auth-proxy/users/otlp".into()),
        ]),
        routes: vec![Route {
            name: "test".into(),
            port: 1,
            upstream,
            body_limit: LIMIT,
            upstream_timeout: Duration::from_secs(1),
            public: vec!["/-/ready".into()],
            root: Some("/ui/".into()),
            grants: vec![
                Grant::all("vigil"),
                Grant { user: "otlp".into(), methods: vec!["POST".into()], paths: vec!["/v1/traces".into()] },
            ],
        }],
        limits,
    }
}

async fn proxy_with(limits: Limits) -> Proxy {
    let release = Arc::new(Notify::new());
    let config = config(upstream(release.clone()).await, limits);
    config.validate().unwrap();
    let users = Arc::new(Users::from_passwords([("vigil", "right"), ("otlp", "spans")]));
    let metrics = Arc::new(Metrics::default());
    let (_, router) = auth_proxy::routers(&config, users, metrics.clone()).remove(0);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = auth_proxy::serve::limits(&config.limits, &config.routes[0]);
    tokio::spawn(auth_proxy::serve::serve(listener, router, limits, std::future::pending()));
    Proxy { url: format!("http://{addr}"), addr, metrics, release }
}

async fn proxy() -> Proxy {
    proxy_with(Limits::default()).await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap()
}

fn vigil() -> String {
    basic_header("vigil", "right")
}

#[tokio::test]
async fn without_credentials_the_answer_is_401_with_a_challenge() {
    let p = proxy().await;
    let answer = http().post(format!("{}/echo", p.url)).body("x").send().await.unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(answer.headers()["www-authenticate"], "Basic realm=\"vigil\", charset=\"UTF-8\"");
    assert!(answer.headers().get("x-upstream").is_none(), "nothing reached the upstream");
}

#[tokio::test]
async fn a_wrong_password_or_unknown_user_is_401() {
    let p = proxy().await;
    for header in [basic_header("vigil", "wrong"), basic_header("root", "right"), "Bearer right".into()] {
        let answer =
            http().get(format!("{}/echo", p.url)).header("authorization", &header).send().await.unwrap();
        assert_eq!(answer.status(), 401, "{header}");
    }
}

#[tokio::test]
async fn the_right_password_is_proxied_with_status_and_body_intact_and_no_cors_or_password() {
    let p = proxy().await;
    let body = "a body, with bytes: \u{e9}\n".repeat(10);
    let answer = http()
        .post(format!("{}/echo?x=1", p.url))
        .header("authorization", vigil())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let headers = answer.headers().clone();
    assert_eq!(headers["x-upstream"], "yes");
    assert_eq!(headers["x-saw-authorization"], "false", "the upstream never sees the password");
    assert!(
        !headers.keys().any(|k| k.as_str().starts_with("access-control-")),
        "the upstream's CORS headers are stripped: {headers:?}"
    );
    assert_eq!(answer.text().await.unwrap(), body);
}

#[tokio::test]
async fn the_root_leads_an_authenticated_reader_to_the_ui() {
    let p = proxy().await;
    let no_redirects =
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer =
        no_redirects.get(format!("{}/", p.url)).header("authorization", vigil()).send().await.unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/ui/");
    assert!(answer.headers().get("x-upstream").is_none(), "answered by the proxy");
    let anonymous = no_redirects.get(format!("{}/", p.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "the redirect is no way around the credentials");
    let metrics = vigil_telemetry::encode(&p.metrics.registry);
    assert!(metrics.contains(r#"outcome="redirected""#), "{metrics}");
}

#[tokio::test]
async fn answers_stream_as_the_upstream_writes_them() {
    let p = proxy().await;
    let mut answer =
        http().get(format!("{}/stream", p.url)).header("authorization", vigil()).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    // The upstream holds its second chunk until the first has come through.
    let first = tokio::time::timeout(Duration::from_secs(3), answer.chunk()).await.expect("the first chunk");
    assert_eq!(first.unwrap().unwrap(), "first\n");
    p.release.notify_one();
    let second = answer.chunk().await.unwrap().unwrap();
    assert_eq!(second, "second\n");
    assert!(answer.chunk().await.unwrap().is_none());
}

#[tokio::test]
async fn the_otlp_user_may_only_post_spans() {
    let p = proxy().await;
    let otlp = basic_header("otlp", "spans");
    let send = |method: reqwest::Method, path: &str| {
        http().request(method, format!("{}{path}", p.url)).header("authorization", &otlp).body("{}").send()
    };
    assert_eq!(send(reqwest::Method::POST, "/v1/traces").await.unwrap().status(), 200);
    assert_eq!(send(reqwest::Method::GET, "/v1/traces").await.unwrap().status(), 403);
    assert_eq!(send(reqwest::Method::POST, "/echo").await.unwrap().status(), 403);
    assert_eq!(send(reqwest::Method::POST, "/v1/traces/../echo").await.unwrap().status(), 403);
}

#[tokio::test]
async fn a_probe_path_is_public_for_reads_only() {
    let p = proxy().await;
    let answer = http().get(format!("{}/-/ready", p.url)).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "ready\n");
    assert_eq!(http().head(format!("{}/-/ready", p.url)).send().await.unwrap().status(), 200);
    assert_eq!(http().post(format!("{}/-/ready", p.url)).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn a_cross_origin_write_is_refused_even_with_credentials() {
    let p = proxy().await;
    let post = |origin: String| {
        http()
            .post(format!("{}/echo", p.url))
            .header("authorization", vigil())
            .header("origin", origin)
            .body("silence")
            .send()
    };
    let evil = post("http://evil.example".into()).await.unwrap();
    assert_eq!(evil.status(), 403);
    assert!(evil.headers().get("x-upstream").is_none());
    let same = post(format!("http://{}", p.addr)).await.unwrap();
    assert_eq!(same.status(), 201);
    assert_eq!(same.text().await.unwrap(), "silence");
}

#[tokio::test]
async fn a_preflight_is_refused_without_cors_headers() {
    let p = proxy().await;
    let answer = http()
        .request(reqwest::Method::OPTIONS, format!("{}/echo", p.url))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .header("authorization", vigil())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    assert!(!answer.headers().keys().any(|k| k.as_str().starts_with("access-control-")), "{answer:?}");
}

/// Sends `request` as raw bytes and reads the answer's status line.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await.unwrap().unwrap();
    String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_declared_or_chunked() {
    let p = proxy().await;
    let big = vec![b'x'; LIMIT as usize + 1];
    let answer =
        http().post(format!("{}/echo", p.url)).header("authorization", vigil()).body(big).send().await;
    assert_eq!(answer.unwrap().status(), 413);
    let fits = vec![b'x'; LIMIT as usize];
    let answer =
        http().post(format!("{}/echo", p.url)).header("authorization", vigil()).body(fits).send().await;
    assert_eq!(answer.unwrap().status(), 201);
    // No Content-Length: the limit is counted as the chunks come.
    let chunk = "x".repeat(600);
    let request = format!(
        "POST /echo HTTP/1.1\r\nhost: {}\r\nauthorization: {}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        p.addr,
        vigil(),
        chunk.len(),
        chunk.len()
    );
    assert_eq!(raw(p.addr, request.as_bytes()).await, "HTTP/1.1 413 Payload Too Large");
}

#[tokio::test]
async fn a_slow_upstream_is_504_within_its_timeout() {
    let p = proxy().await;
    let started = Instant::now();
    let answer = http().get(format!("{}/slow", p.url)).header("authorization", vigil()).send().await.unwrap();
    assert_eq!(answer.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let limits = Limits { header_read_timeout: Duration::from_millis(300), max_connections: 8 };
    let p = proxy_with(limits).await;
    let mut slow = TcpStream::connect(p.addr).await.unwrap();
    slow.write_all(b"GET /-/ready HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let started = Instant::now();
    let read =
        tokio::time::timeout(Duration::from_secs(3), slow.read(&mut buf)).await.expect("closed in time");
    // Closed (0 bytes) or answered 408, and nothing from the upstream.
    let text = String::from_utf8_lossy(&buf[..read.unwrap_or(0)]).into_owned();
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let limits = Limits { header_read_timeout: Duration::from_millis(300), max_connections: 8 };
    let p = proxy_with(limits).await;
    let mut stream = TcpStream::connect(p.addr).await.unwrap();
    stream.write_all(b"GET /-/ready HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let after =
        tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await.expect("closed in time");
    assert_eq!(after.unwrap_or(0), 0, "the idle connection is closed, not answered");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn at_the_cap_a_client_displaces_a_connection_that_sent_nothing() {
    let limits = Limits { header_read_timeout: Duration::from_secs(10), max_connections: 1 };
    let p = proxy_with(limits).await;
    let mut idle = TcpStream::connect(p.addr).await.unwrap();
    // Give the proxy the moment it takes to accept the first one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let quick = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().unwrap();
    let answer = quick.get(format!("{}/-/ready", p.url)).send().await.expect("served at the cap");
    assert_eq!(answer.status(), 200);
    let mut buf = [0u8; 64];
    let read =
        tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf)).await.expect("closed in time");
    assert_eq!(read.unwrap_or(0), 0, "the silent connection was closed to make room");
}

#[tokio::test]
async fn the_metrics_hold_known_labels_whatever_the_method() {
    let p = proxy().await;
    let method = reqwest::Method::from_bytes(b"FOO1").unwrap();
    let answer =
        http().request(method, format!("{}/some/path/{}", p.url, "x".repeat(50))).send().await.unwrap();
    assert_eq!(answer.status(), 401);
    http().get(format!("{}/echo", p.url)).header("authorization", vigil()).send().await.unwrap();
    let text = vigil_telemetry::encode(&p.metrics.registry);
    assert!(
        text.contains(
            r#"auth_proxy_requests_total{route="test",method="_OTHER",outcome="unauthenticated"} 1"#
        ),
        "{text}"
    );
    assert!(!text.contains("FOO1") && !text.contains("some/path"), "{text}");
}
