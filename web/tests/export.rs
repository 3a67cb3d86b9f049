//! web's trace export against endpoints on loopback, with the real binary:
//! a request's `traceparent` reaches an OTLP receiver under the caller's
//! trace id; a wrong endpoint is one clear error at start and web serves;
//! an endpoint that never answers costs dropped spans, counted, never a
//! request.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, routing::post};

struct Web {
    child: Child,
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts web with these variables and waits until it answers.
async fn web(vars: &[(&str, String)]) -> Web {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_web"));
    command.env_clear().env("PORT", port.to_string()).stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, v) in vars {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let lines = Arc::new(Mutex::new(vec![]));
    let stdout = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let web = Web { child, url: format!("http://127.0.0.1:{port}"), lines };
    for _ in 0..100 {
        if reqwest::get(&web.url).await.is_ok() {
            return web;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("web did not answer on {}: {:?}", web.url, web.lines.lock().unwrap());
}

async fn metric(web: &Web, series: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", web.url)).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Polls `series` (bounded: 100 × 100 ms) until it reaches `at_least`.
async fn metric_reaches(web: &Web, series: &str, at_least: f64) -> f64 {
    let mut value = 0.0;
    for _ in 0..100 {
        value = metric(web, series).await;
        if value >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    value
}

/// An OTLP/HTTP receiver that keeps every body POSTed to /v1/traces.
async fn receiver() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let bodies = Arc::new(Mutex::new(vec![]));
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(b): State<Arc<Mutex<Vec<Vec<u8>>>>>, body: axum::body::Bytes| async move {
                b.lock().unwrap().push(body.to_vec());
                ""
            }),
        )
        .with_state(bodies.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, bodies)
}

#[tokio::test]
async fn a_traceparent_reaches_the_otlp_endpoint_under_the_callers_trace_id() {
    let (endpoint, bodies) = receiver().await;
    let web = web(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_off".into()),
        ("OTEL_SERVICE_NAME", "web-under-test".into()),
    ])
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = reqwest::Client::new()
        .get(&web.url)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(metric_reaches(&web, "web_otel_spans_exported_total", 1.0).await >= 1.0);
    // OTLP protobuf carries the trace id as its 16 raw bytes.
    let raw: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace[2 * i..2 * i + 2], 16).unwrap()).collect();
    let bodies = bodies.lock().unwrap().clone();
    let has = |body: &[u8], bytes: &[u8]| body.windows(bytes.len()).any(|w| w == bytes);
    assert!(
        bodies.iter().any(|b| has(b, &raw) && has(b, b"GET /")),
        "no exported span in trace {trace} named GET /: {} bodies",
        bodies.len()
    );
    // Under its service's name, from the resource every export carries.
    assert!(bodies.iter().all(|b| has(b, b"service.name") && has(b, b"web-under-test")), "no service.name");
    // The sampler is parentbased_always_off: requests without a sampled parent are not exported.
    let before = metric(&web, "web_otel_spans_exported_total").await;
    for _ in 0..5 {
        reqwest::get(&web.url).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(metric(&web, "web_otel_spans_exported_total").await, before);
}

#[tokio::test]
async fn a_bad_endpoint_is_one_clear_error_and_web_still_serves() {
    let web = web(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "jaeger:4318".into())]).await;
    assert_eq!(reqwest::get(&web.url).await.unwrap().status(), 200);
    let lines = web.lines.lock().unwrap().clone();
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("trace export is off")).collect();
    assert_eq!(errors.len(), 1, "{lines:?}");
    assert!(
        errors[0].contains(r#"OTEL_EXPORTER_OTLP_ENDPOINT="jaeger:4318""#) && errors[0].contains("http://")
    );
}

#[tokio::test]
async fn an_endpoint_that_never_answers_costs_counted_spans_not_requests() {
    // Accepts connections and never answers: the worst case for an exporter.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let web = web(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000".into()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "4".into()),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "10".into()),
    ])
    .await;
    for _ in 0..50 {
        assert_eq!(reqwest::get(&web.url).await.unwrap().status(), 200);
    }
    let dropped = metric(&web, r#"web_otel_spans_dropped_total{reason="queue_full"}"#).await;
    assert!(
        dropped >= 40.0,
        "with a queue of 4 and one export stuck, most of 50 spans are dropped: {dropped}"
    );
    drop(silent);
}

#[tokio::test]
async fn an_endpoint_that_refuses_counts_failed_exports() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let web = web(&[("OTEL_EXPORTER_OTLP_ENDPOINT", closed), ("OTEL_BSP_SCHEDULE_DELAY", "50".into())]).await;
    for _ in 0..3 {
        assert_eq!(reqwest::get(&web.url).await.unwrap().status(), 200);
    }
    let failed = metric_reaches(&web, r#"web_otel_spans_dropped_total{reason="export_failed"}"#, 3.0).await;
    assert!(failed >= 3.0, "{failed}");
}
