//! Delivery against real HTTP receivers on loopback: one that answers 500
//! and then recovers gets every notice, in order, each signed as the
//! Standard Webhooks spec says; one incident failing does not hold back
//! another's; 410 is final, 401 and 429 are retried (the latter no sooner
//! than its Retry-After); nothing is sent while the gate is closed; a
//! `clear()` during an attempt leaves what is queued after it alone;
//! Alertmanager is told again of what is firing; a notice that cannot be
//! delivered expires with a record, never silently. A webhook's URL (its
//! secret) is in no record, log line or span; a redirect is not followed;
//! Alertmanager behind Basic authentication gets the credentials.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use alerter::{
    config::{BasicAuth, DeliveryConfig, Sink, Target, signing_key},
    crd::DeliveryState,
    delivery::{Gate, Outbox, Record},
    metrics::Metrics,
    model::{Notice, NoticeKind},
    sinks::sign,
};
use axum::{Router, extract::State, http::HeaderMap, routing::post};
use k8s_openapi::jiff::Timestamp;
use tokio::{sync::mpsc, time::Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct Receiver {
    /// Status codes to answer, in turn; 204 once they run out.
    script: Vec<u16>,
    /// (webhook-id, signature valid, answered)
    seen: Vec<(String, bool, u16)>,
    /// Each request's `traceparent` header.
    traceparents: Vec<String>,
}

async fn hook(
    State(receiver): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp").parse::<i64>().unwrap_or(0));
    let key = signing_key("test", SECRET).unwrap();
    let valid = header("webhook-signature") == sign(&key, &id, timestamp, &body);
    let mut receiver = receiver.lock().unwrap();
    let code = if receiver.script.is_empty() { 204 } else { receiver.script.remove(0) };
    receiver.seen.push((id, valid, code));
    receiver.traceparents.push(header("traceparent"));
    axum::http::StatusCode::from_u16(code).unwrap()
}

async fn receiver(script: Vec<u16>) -> (reqwest::Url, Arc<Mutex<Receiver>>) {
    let state = Arc::new(Mutex::new(Receiver { script, ..Receiver::default() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = reqwest::Url::parse(&format!("http://{}/hook", listener.local_addr().unwrap())).unwrap();
    let app = Router::new().route("/hook", post(hook)).with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

/// What every test's spans and log lines came to, kept in memory.
struct Telemetry {
    /// The ended spans, as an exporter (Jaeger) would get them.
    spans: vigil_telemetry::otel::Recorded,
    /// Every event's fields, a line each.
    logs: Arc<Mutex<String>>,
}

/// Keeps each event's fields as a line of text.
struct CaptureLogs(Arc<Mutex<String>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureLogs {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Line(String);
        impl tracing::field::Visit for Line {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0 += &format!(" {}={value:?}", field.name());
            }
        }
        let mut line = Line(event.metadata().level().to_string());
        event.record(&mut line);
        let mut logs = self.0.lock().unwrap();
        logs.push_str(&line.0);
        logs.push('\n');
    }
}

/// Spans get OpenTelemetry ids (exported nowhere), so deliveries carry a
/// `traceparent`; spans and log lines are kept. Process-wide: tracing
/// caches whether a callsite is enabled, and a test thread without a
/// subscriber would cache "never".
fn spans_get_ids() -> &'static Telemetry {
    static TELEMETRY: std::sync::OnceLock<Telemetry> = std::sync::OnceLock::new();
    TELEMETRY.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        let (subscriber, spans) = vigil_telemetry::otel::recording_subscriber();
        let logs = Arc::new(Mutex::new(String::new()));
        let _ = tracing::subscriber::set_global_default(subscriber.with(CaptureLogs(logs.clone())));
        Telemetry { spans, logs }
    })
}

fn notice(kind: NoticeKind) -> Notice {
    Notice {
        kind,
        id: Notice::key("w2-1700000000", kind),
        incident: "w2-1700000000".into(),
        cluster: "vigil".into(),
        node: "w2".into(),
        summary: kind.as_str().into(),
        time: "2026-01-01T00:00:00Z".into(),
        lease_renewed_at: None,
        not_ready_since: Some("2026-01-01T00:00:00Z".into()),
        detected_at: None,
        seconds_to_rescheduled: None,
        owners: vec![],
        flaps: 0,
        trace_id: alerter::model::incident_trace_id("w2-1700000000"),
        logs_url: None,
    }
}

fn start_outbox(
    url: reqwest::Url,
    expire_after: Duration,
) -> (Arc<Outbox>, mpsc::UnboundedReceiver<Record>, Arc<Metrics>) {
    start_sink(webhook(url), expire_after)
}

fn start_sink(
    sink: Sink,
    expire_after: Duration,
) -> (Arc<Outbox>, mpsc::UnboundedReceiver<Record>, Arc<Metrics>) {
    start(sink, DeliveryConfig { expire_after, ..config() }, Arc::new(|_: &Notice| true))
}

/// Quick retries; an attempt's timeout of 2 s.
fn config() -> DeliveryConfig {
    DeliveryConfig {
        timeout: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        expire_after: Duration::from_secs(60),
        resend_interval: Duration::from_secs(60),
    }
}

fn start(
    sink: Sink,
    config: DeliveryConfig,
    gate: Gate,
) -> (Arc<Outbox>, mpsc::UnboundedReceiver<Record>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let (outbox, records) = Outbox::new(vec![sink], config, String::new(), metrics.clone(), gate);
    tokio::spawn(outbox.clone().run());
    (outbox, records, metrics)
}

fn webhook(url: reqwest::Url) -> Sink {
    Sink { name: "ops".into(), target: Target::Webhook { url, key: signing_key("test", SECRET).unwrap() } }
}

/// Records until `n` have a final state, or 10 s.
async fn finals(records: &mut mpsc::UnboundedReceiver<Record>, n: usize) -> Vec<Record> {
    let mut all = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while all.iter().filter(|r: &&Record| r.delivery.state != DeliveryState::Pending).count() < n {
        match tokio::time::timeout_at(deadline, records.recv()).await {
            Ok(Some(record)) => all.push(record),
            _ => break,
        }
    }
    all
}

#[tokio::test]
async fn a_receiver_that_fails_then_recovers_gets_every_notice_in_order() {
    spans_get_ids();
    let (url, state) = receiver(vec![500, 500, 503]).await;
    let (outbox, mut records, metrics) = start_outbox(url, Duration::from_secs(60));
    for kind in [NoticeKind::NodeDown, NoticeKind::Rescheduled, NoticeKind::Resolved] {
        outbox.enqueue(None, &notice(kind), 0, outbox.expiry());
    }
    let all = finals(&mut records, 3).await;
    let delivered: Vec<(String, u32)> = all
        .iter()
        .filter(|r| r.delivery.state == DeliveryState::Delivered)
        .map(|r| (r.delivery.key.clone(), r.delivery.attempts))
        .collect();
    assert_eq!(
        delivered,
        [
            ("w2-1700000000/node-down".to_owned(), 4),
            ("w2-1700000000/rescheduled".to_owned(), 1),
            ("w2-1700000000/resolved".to_owned(), 1)
        ]
    );
    let seen = state.lock().unwrap().seen.clone();
    assert!(seen.iter().all(|(_, valid, _)| *valid), "every request is signed: {seen:?}");
    let accepted: Vec<&str> =
        seen.iter().filter(|(_, _, code)| *code == 204).map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(accepted.len(), 3, "each notice once: {seen:?}");
    // Every attempt continues the incident's trace, each as a span of its own.
    let traceparents = state.lock().unwrap().traceparents.clone();
    let trace = alerter::model::incident_trace_id("w2-1700000000");
    assert_eq!(traceparents.len(), 6, "{traceparents:?}");
    for traceparent in &traceparents {
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(
            (parts.len(), parts[0], parts[1], parts[3]),
            (4, "00", trace.as_str(), "01"),
            "{traceparent}"
        );
    }
    let spans: std::collections::BTreeSet<&str> = traceparents.iter().map(|t| &t[36..52]).collect();
    assert_eq!(spans.len(), 6, "one span per attempt: {traceparents:?}");
    let text = vigil_telemetry::encode(&metrics.registry);
    assert!(text.contains(r#"vigil_alerter_deliveries_total{sink="ops",outcome="retried"} 3"#), "{text}");
    assert!(text.contains(r#"vigil_alerter_pending_deliveries{sink="ops"} 0"#), "{text}");
}

#[tokio::test]
async fn gone_is_final_with_a_record_and_an_undeliverable_notice_expires_with_its_last_error() {
    spans_get_ids();
    let (url, state) = receiver(vec![410]).await;
    let (outbox, mut records, _) = start_outbox(url, Duration::from_secs(60));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    let last = &all.last().unwrap().delivery;
    assert_eq!((last.state, last.attempts), (DeliveryState::Rejected, 1), "{last:?}");
    assert!(last.last_error.as_deref().unwrap_or_default().contains("410"), "{last:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state.lock().unwrap().seen.len(), 1, "not retried");

    let (url, _) = receiver(vec![500; 100]).await;
    let (outbox, mut records, metrics) = start_outbox(url, Duration::from_millis(300));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    let last = &all.last().unwrap().delivery;
    assert_eq!(last.state, DeliveryState::Expired);
    assert!(last.attempts >= 2, "{last:?}");
    assert_eq!(last.last_error.as_deref(), Some("answered 500 Internal Server Error"), "{last:?}");
    let text = vigil_telemetry::encode(&metrics.registry);
    assert!(text.contains(r#"vigil_alerter_deliveries_total{sink="ops",outcome="expired"} 1"#), "{text}");
}

/// The tokens a webhook URL carries in its path and query.
const URL_SECRETS: [&str; 2] = ["SECRET123", "SECRET456"];

#[tokio::test]
async fn a_failed_delivery_shows_the_webhook_url_nowhere() {
    let telemetry = spans_get_ids();
    // A port nothing listens on (bound, then released).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = reqwest::Url::parse(&format!("http://{closed}/hooks/SECRET123?token=SECRET456")).unwrap();
    let sink = Sink {
        name: "secret-hook".into(),
        target: Target::Webhook { url, key: signing_key("test", SECRET).unwrap() },
    };
    let (outbox, mut records, _) = start_sink(sink, Duration::from_millis(300));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    assert_eq!(all.last().map(|r| r.delivery.state), Some(DeliveryState::Expired), "{all:?}");
    // What the NodeIncident's status gets.
    let errors: Vec<&str> = all.iter().filter_map(|r| r.delivery.last_error.as_deref()).collect();
    assert!(!errors.is_empty() && errors.iter().all(|e| e.contains("could not connect")), "{errors:?}");
    let status = serde_json::to_string(&all.iter().map(|r| &r.delivery).collect::<Vec<_>>()).unwrap();
    // What the logs and the spans (Jaeger's) get.
    let logs = telemetry.logs.lock().unwrap().clone();
    assert!(logs.contains("could not connect"), "the failures are logged: {logs}");
    let spans = format!("{:?}", telemetry.spans.spans());
    assert!(spans.contains("deliver node-down to secret-hook"), "{spans}");
    for secret in URL_SECRETS {
        assert!(!status.contains(secret), "{secret} in the status: {status}");
        assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
        assert!(!spans.contains(secret), "{secret} in a span: {spans}");
    }
}

#[derive(Default)]
struct Redirects {
    /// Requests to the sink's URL, and to where it redirects.
    asked: usize,
    followed: usize,
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_is_retried_with_an_error_that_names_no_location() {
    spans_get_ids();
    let state = Arc::new(Mutex::new(Redirects::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let location = format!("http://{addr}/elsewhere/SECRET789?token=SECRET790");
    let app = Router::new()
        .route(
            "/hook",
            post(|State(s): State<Arc<Mutex<Redirects>>>| async move {
                s.lock().unwrap().asked += 1;
                (axum::http::StatusCode::FOUND, [(axum::http::header::LOCATION, location)])
            }),
        )
        .route(
            "/elsewhere/{*rest}",
            axum::routing::any(|State(s): State<Arc<Mutex<Redirects>>>| async move {
                s.lock().unwrap().followed += 1;
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (outbox, mut records, _) =
        start_outbox(format!("http://{addr}/hook").parse().unwrap(), Duration::from_millis(400));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    let last = &all.last().expect("a record").delivery;
    assert_eq!(last.state, DeliveryState::Expired, "{last:?}");
    assert!(last.attempts >= 2, "retried until it expired: {last:?}");
    let why = last.last_error.clone().unwrap_or_default();
    assert!(why.contains("302") && why.contains("redirect") && why.contains("final"), "{why}");
    assert!(!why.contains("SECRET789") && !why.contains("SECRET790"), "{why}");
    let state = state.lock().unwrap();
    assert_eq!((state.asked, state.followed), (last.attempts as usize, 0));
}

/// An Alertmanager behind a proxy that asks for Basic authentication.
#[derive(Default)]
struct Guarded {
    /// Each request's `Authorization` header, and what was answered.
    seen: Vec<(String, u16)>,
}

async fn guarded_alertmanager(expected: String) -> (reqwest::Url, Arc<Mutex<Guarded>>) {
    let state = Arc::new(Mutex::new(Guarded::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = reqwest::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let app = Router::new()
        .route(
            "/api/v2/alerts",
            post(move |State(s): State<Arc<Mutex<Guarded>>>, headers: HeaderMap| async move {
                let given = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let code = if given == expected { 200 } else { 401 };
                s.lock().unwrap().seen.push((given, code));
                axum::http::StatusCode::from_u16(code).unwrap()
            }),
        )
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base.join("api/v2/alerts").unwrap(), state)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn alertmanager_behind_basic_auth_gets_every_notice_and_a_wrong_password_is_retried_until_expiry() {
    let telemetry = spans_get_ids();
    let (alerts_url, state) = guarded_alertmanager(basic("vigil", "right-SECRET321")).await;
    let sink = |password: &str| Sink {
        name: "alertmanager".into(),
        target: Target::Alertmanager {
            alerts_url: alerts_url.clone(),
            auth: Some(BasicAuth::new("vigil", password)),
        },
    };
    let (outbox, mut records, _) = start_sink(sink("right-SECRET321"), Duration::from_secs(60));
    let kinds = [NoticeKind::Suspect, NoticeKind::NodeDown, NoticeKind::Resolved];
    for kind in kinds {
        outbox.enqueue(None, &notice(kind), 0, outbox.expiry());
    }
    let all = finals(&mut records, 3).await;
    let states: Vec<DeliveryState> = all.iter().map(|r| r.delivery.state).collect();
    assert_eq!(states, [DeliveryState::Delivered; 3]);
    let seen = std::mem::take(&mut state.lock().unwrap().seen);
    assert_eq!(seen, vec![(basic("vigil", "right-SECRET321"), 200); 3]);

    let (outbox, mut records, _) = start_sink(sink("wrong-SECRET654"), Duration::from_millis(300));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    let last = &all.last().expect("a record").delivery;
    assert_eq!(last.state, DeliveryState::Expired, "{last:?}");
    let why = last.last_error.clone().unwrap_or_default();
    assert!(why.contains("401"), "{why}");
    let seen = state.lock().unwrap().seen.clone();
    assert!(seen.len() >= 2, "retried: {seen:?}");
    assert!(seen.iter().all(|s| *s == (basic("vigil", "wrong-SECRET654"), 401)), "{seen:?}");
    let logs = telemetry.logs.lock().unwrap().clone();
    let spans = format!("{:?}", telemetry.spans.spans());
    for secret in ["right-SECRET321", "wrong-SECRET654"] {
        let encoded = basic("vigil", secret);
        for (what, text) in [("error", &why), ("logs", &logs), ("spans", &spans)] {
            assert!(
                !text.contains(secret) && !text.contains(&encoded[6..]),
                "{secret} in the {what}: {text}"
            );
        }
    }
}

/// One request a [`replying`] receiver got.
#[derive(Clone, Debug)]
struct Hit {
    /// `webhook-id`; empty for Alertmanager.
    id: String,
    /// When it arrived.
    at: Instant,
    body: serde_json::Value,
}

/// How a [`replying`] receiver answers.
struct Reply {
    status: u16,
    retry_after: Option<&'static str>,
    /// Waited before answering.
    delay: Duration,
}

fn status(status: u16) -> Reply {
    Reply { status, retry_after: None, delay: Duration::ZERO }
}

type Hits = Arc<Mutex<Vec<Hit>>>;

/// A receiver on loopback, on every path, answering `answer(webhook-id, how
/// many requests came before with that id)`; its URL and what it got.
async fn replying<F>(answer: F) -> (reqwest::Url, Hits)
where
    F: Fn(&str, usize) -> Reply + Send + Sync + 'static,
{
    let hits: Hits = Arc::default();
    let answer = Arc::new(answer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = reqwest::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let recorded = hits.clone();
    let app = Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
        let (hits, answer) = (recorded.clone(), answer.clone());
        async move {
            let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let before = {
                let mut hits = hits.lock().unwrap();
                let before = hits.iter().filter(|h| h.id == id).count();
                let body = serde_json::from_slice(&body).unwrap_or_default();
                hits.push(Hit { id: id.clone(), at: Instant::now(), body });
                before
            };
            let reply = answer(&id, before);
            tokio::time::sleep(reply.delay).await;
            let mut response = axum::http::Response::builder().status(reply.status);
            if let Some(after) = reply.retry_after {
                response = response.header("retry-after", after);
            }
            response.body(axum::body::Body::empty()).unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

fn notice_of(incident: &str, kind: NoticeKind) -> Notice {
    Notice { id: Notice::key(incident, kind), incident: incident.into(), ..notice(kind) }
}

/// Waits up to `within` for `done`, checking every 20 ms.
async fn eventually(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test]
async fn an_incident_that_keeps_failing_does_not_delay_another_on_the_same_sink() {
    spans_get_ids();
    let (url, hits) = replying(|id, _| status(if id.starts_with("a-1/") { 500 } else { 204 })).await;
    let (outbox, mut records, _) = start(webhook(url), config(), Arc::new(|_: &Notice| true));
    let started = Instant::now();
    outbox.enqueue(None, &notice_of("a-1", NoticeKind::NodeDown), 0, outbox.expiry());
    outbox.enqueue(None, &notice_of("a-1", NoticeKind::Resolved), 0, outbox.expiry());
    // Let A fail a few times first.
    assert!(eventually(Duration::from_secs(2), || hits.lock().unwrap().len() >= 3).await);
    outbox.enqueue(None, &notice_of("b-1", NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    let done = all.last().expect("a record").delivery.clone();
    assert_eq!(
        (done.key.as_str(), done.state, done.attempts),
        ("b-1/node-down", DeliveryState::Delivered, 1)
    );
    assert!(started.elapsed() < Duration::from_secs(3), "B waited {:?}", started.elapsed());
    // A is still being retried, its second notice behind its first.
    let hits = hits.lock().unwrap().clone();
    assert!(hits.iter().all(|h| h.id != "a-1/resolved"), "A's notices stay in order: {hits:?}");
    let a = all.iter().filter(|r| r.incident == "a-1").collect::<Vec<_>>();
    assert!(a.iter().all(|r| r.delivery.state == DeliveryState::Pending), "{a:?}");
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    spans_get_ids();
    let (url, hits) = replying(|_, before| match before {
        0 => Reply { status: 429, retry_after: Some("2"), delay: Duration::ZERO },
        _ => status(204),
    })
    .await;
    let (outbox, mut records, _) = start(webhook(url), config(), Arc::new(|_: &Notice| true));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    let last = &all.last().expect("a record").delivery;
    assert_eq!((last.state, last.attempts), (DeliveryState::Delivered, 2), "{all:?}");
    let hits = hits.lock().unwrap().clone();
    assert_eq!(hits.len(), 2);
    let waited = hits[1].at - hits[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    assert!(waited < Duration::from_secs(3), "retried after {waited:?}");
    assert!(all[0].delivery.last_error.as_deref().unwrap_or_default().contains("429"), "{all:?}");
}

#[tokio::test]
async fn a_retry_after_beyond_the_expiry_expires_the_notice_then_without_another_request() {
    spans_get_ids();
    let (url, hits) =
        replying(|_, _| Reply { status: 503, retry_after: Some("3600"), delay: Duration::ZERO }).await;
    let config = DeliveryConfig { expire_after: Duration::from_millis(600), ..config() };
    let (outbox, mut records, _) = start(webhook(url), config, Arc::new(|_: &Notice| true));
    let started = Instant::now();
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    let last = &all.last().expect("a record").delivery;
    assert_eq!((last.state, last.attempts), (DeliveryState::Expired, 1), "{all:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(hits.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn unauthorized_forbidden_and_not_found_are_retried_until_delivered() {
    spans_get_ids();
    let (url, hits) = replying(|_, before| status([401, 403, 404, 204][before.min(3)])).await;
    let (outbox, mut records, _) = start(webhook(url), config(), Arc::new(|_: &Notice| true));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    let states: Vec<(DeliveryState, u32)> =
        all.iter().map(|r| (r.delivery.state, r.delivery.attempts)).collect();
    use DeliveryState::{Delivered, Pending};
    assert_eq!(states, [(Pending, 1), (Pending, 2), (Pending, 3), (Delivered, 4)]);
    assert!(all[0].delivery.last_error.as_deref().unwrap_or_default().contains("401"), "{all:?}");
    assert_eq!(hits.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn an_id_queued_again_is_sent_once() {
    spans_get_ids();
    let (url, hits) = replying(|_, _| status(204)).await;
    let gate = Arc::new(AtomicBool::new(false));
    let open = gate.clone();
    let (outbox, mut records, metrics) =
        start(webhook(url), config(), Arc::new(move |_: &Notice| open.load(Ordering::SeqCst)));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 3, outbox.expiry());
    let text = vigil_telemetry::encode(&metrics.registry);
    assert!(text.contains(r#"vigil_alerter_pending_deliveries{sink="ops"} 1"#), "{text}");
    gate.store(true, Ordering::SeqCst);
    let all = finals(&mut records, 1).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].delivery.attempts, 1, "the first queuing is kept: {all:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hits.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn nothing_is_sent_while_the_gate_is_closed() {
    spans_get_ids();
    let (url, hits) = replying(|_, _| status(204)).await;
    let gate = Arc::new(AtomicBool::new(false));
    let open = gate.clone();
    let (outbox, mut records, metrics) =
        start(webhook(url), config(), Arc::new(move |_: &Notice| open.load(Ordering::SeqCst)));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(hits.lock().unwrap().is_empty(), "sent while the gate was closed");
    assert!(records.try_recv().is_err(), "no attempt, no record");
    let text = vigil_telemetry::encode(&metrics.registry);
    for outcome in ["delivered", "retried", "expired", "rejected"] {
        let line = format!(r#"vigil_alerter_deliveries_total{{sink="ops",outcome="{outcome}"}} 0"#);
        assert!(text.contains(&line), "no attempt counted: {text}");
    }
    let opened = Instant::now();
    gate.store(true, Ordering::SeqCst);
    let all = finals(&mut records, 1).await;
    let last = &all.last().expect("a record").delivery;
    assert_eq!((last.state, last.attempts), (DeliveryState::Delivered, 1), "{all:?}");
    // Looked at again at least every 500 ms.
    assert!(opened.elapsed() < Duration::from_secs(1), "{:?}", opened.elapsed());
    assert_eq!(hits.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_clear_during_an_attempt_leaves_what_is_queued_after_it_alone() {
    spans_get_ids();
    // The first request's answer comes late: success, then failure.
    for slow in [204, 500] {
        let (url, hits) = replying(move |_, before| match before {
            0 => Reply { status: slow, retry_after: None, delay: Duration::from_millis(700) },
            _ => status(204),
        })
        .await;
        let (outbox, mut records, metrics) = start(webhook(url), config(), Arc::new(|_: &Notice| true));
        outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
        assert!(eventually(Duration::from_secs(2), || hits.lock().unwrap().len() == 1).await);
        // Leadership lost and won again while the request is on its way: the
        // notice is queued anew, as a new leader takes it over.
        outbox.clear();
        outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
        let all = finals(&mut records, 1).await;
        let states: Vec<(DeliveryState, u32)> =
            all.iter().map(|r| (r.delivery.state, r.delivery.attempts)).collect();
        assert_eq!(states, [(DeliveryState::Delivered, 1)], "answered {slow} first: {all:?}");
        assert_eq!(hits.lock().unwrap().len(), 2, "the new item was sent itself (answered {slow} first)");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = vigil_telemetry::encode(&metrics.registry);
        assert!(text.contains(r#"vigil_alerter_pending_deliveries{sink="ops"} 0"#), "{text}");
    }
}

/// The VigilNodeDown alerts `hits` carry: when each arrived, its status in
/// its `endsAt` (firing: in the future), and that `endsAt`.
fn node_down_posts(hits: &[Hit]) -> Vec<(Instant, Timestamp)> {
    hits.iter()
        .flat_map(|h| {
            h.body.as_array().cloned().unwrap_or_default().into_iter().filter_map(move |a| {
                (a["labels"]["alertname"] == "VigilNodeDown")
                    .then(|| (h.at, a["endsAt"].as_str().unwrap().parse::<Timestamp>().unwrap()))
            })
        })
        .collect()
}

#[tokio::test]
async fn alertmanager_is_told_again_while_the_alert_fires_and_no_more_once_it_stops() {
    spans_get_ids();
    let (base, hits) = replying(|_, _| status(200)).await;
    let sink = Sink {
        name: "am".into(),
        target: Target::Alertmanager { alerts_url: base.join("api/v2/alerts").unwrap(), auth: None },
    };
    let gate = Arc::new(AtomicBool::new(true));
    let open = gate.clone();
    let config = DeliveryConfig { resend_interval: Duration::from_millis(300), ..config() };
    let (outbox, mut records, metrics) =
        start(sink, config, Arc::new(move |_: &Notice| open.load(Ordering::SeqCst)));
    let down = notice(NoticeKind::NodeDown);
    outbox.enqueue(None, &down, 0, outbox.expiry());
    outbox.firing(&down.incident, Some(&down));
    let all = finals(&mut records, 1).await;
    assert_eq!(all.last().map(|r| r.delivery.state), Some(DeliveryState::Delivered), "{all:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let posts = node_down_posts(&hits.lock().unwrap());
    assert!(posts.len() >= 4, "posted, then sent again every 300 ms: {posts:?}");
    // Each firing for four intervals from when it was sent (a day ahead no more).
    let now = (Instant::now(), Timestamp::now());
    for (at, ends_at) in &posts {
        let sent = now.1.checked_sub(now.0.duration_since(*at)).unwrap();
        let ahead = ends_at.duration_since(sent).as_secs_f64();
        assert!((0.5..1.3).contains(&ahead), "endsAt {ends_at} is {ahead} s after it was sent");
    }
    let resent = hits.lock().unwrap()[1..].to_vec();
    for hit in &resent {
        let names: Vec<&str> =
            hit.body.as_array().unwrap().iter().map(|a| a["labels"]["alertname"].as_str().unwrap()).collect();
        assert_eq!(names, ["VigilNodeDown"], "only what fires is sent again");
    }
    let text = vigil_telemetry::encode(&metrics.registry);
    assert!(
        !text.contains(r#"vigil_alerter_alertmanager_resends_total{sink="am",outcome="delivered"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"vigil_alerter_deliveries_total{sink="am",outcome="delivered"} 1"#),
        "re-sends are not deliveries: {text}"
    );
    assert!(records.try_recv().is_err(), "re-sends are not recorded in the incident");

    // While the gate is closed, nothing is sent again either.
    gate.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = hits.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(hits.lock().unwrap().len(), before, "sent again while the gate was closed");
    gate.store(true, Ordering::SeqCst);
    assert!(eventually(Duration::from_millis(800), || hits.lock().unwrap().len() > before).await);

    outbox.firing(&down.incident, None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = hits.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(hits.lock().unwrap().len(), stopped, "sent again after it stopped firing");
}

/// Cut off from the API server, the leader's node incidents are gated shut
/// while its control-plane incident is not: the open one is re-sent once
/// an interval, not each time the shut one is looked at again.
#[tokio::test]
async fn a_gated_incident_does_not_hurry_the_re_sends_of_another() {
    spans_get_ids();
    let (base, hits) = replying(|_, _| status(200)).await;
    let sink = Sink {
        name: "am".into(),
        target: Target::Alertmanager { alerts_url: base.join("api/v2/alerts").unwrap(), auth: None },
    };
    let config = DeliveryConfig { resend_interval: Duration::from_millis(400), ..config() };
    let (outbox, _records, _) = start(sink, config, Arc::new(|n: &Notice| n.node.is_empty()));
    let down = notice_of("w2-1", NoticeKind::NodeDown);
    let outage =
        Notice { node: String::new(), ..notice_of("control-plane-1", NoticeKind::ControlPlaneUnreachable) };
    outbox.firing(&down.incident, Some(&down));
    outbox.firing(&outage.incident, Some(&outage));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let hits = hits.lock().unwrap();
    let posts = hits.len();
    // Due at 0.4, 0.8, 1.2, 1.6 and 2.0 s.
    assert!((4..=6).contains(&posts), "{posts} posts in 2.1 s, each interval 400 ms");
    for hit in hits.iter() {
        let names: Vec<&str> =
            hit.body.as_array().unwrap().iter().map(|a| a["labels"]["alertname"].as_str().unwrap()).collect();
        assert_eq!(names, ["VigilControlPlaneUnreachable"], "the gated incident was sent");
    }
}
