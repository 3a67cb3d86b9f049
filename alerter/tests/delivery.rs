//! Delivery against a real HTTP receiver on loopback: one that answers 500
//! and then recovers gets every notice, in order, each signed as the
//! Standard Webhooks spec says; a refusal is not retried; a notice that
//! cannot be delivered expires with a record, never silently. A webhook's
//! URL (its secret) is in no record, log line or span; a redirect is not
//! followed; Alertmanager behind Basic authentication gets the credentials.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use alerter::{
    config::{BasicAuth, DeliveryConfig, Sink, Target, signing_key},
    crd::DeliveryState,
    delivery::{Outbox, Record},
    metrics::Metrics,
    model::{Notice, NoticeKind},
    sinks::sign,
};
use axum::{Router, extract::State, http::HeaderMap, routing::post};
use tokio::sync::mpsc;

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
    }
}

fn start_outbox(
    url: reqwest::Url,
    expire_after: Duration,
) -> (Arc<Outbox>, mpsc::UnboundedReceiver<Record>, Arc<Metrics>) {
    let sink = Sink {
        name: "ops".into(),
        target: Target::Webhook { url, key: signing_key("test", SECRET).unwrap() },
    };
    start_sink(sink, expire_after)
}

fn start_sink(
    sink: Sink,
    expire_after: Duration,
) -> (Arc<Outbox>, mpsc::UnboundedReceiver<Record>, Arc<Metrics>) {
    let config = DeliveryConfig {
        timeout: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        expire_after,
    };
    let metrics = Arc::new(Metrics::default());
    let (outbox, records) = Outbox::new(vec![sink], config, String::new(), metrics.clone());
    tokio::spawn(outbox.clone().run());
    (outbox, records, metrics)
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
async fn a_refusal_is_not_retried_and_an_undeliverable_notice_expires() {
    spans_get_ids();
    let (url, state) = receiver(vec![400]).await;
    let (outbox, mut records, _) = start_outbox(url, Duration::from_secs(60));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    assert_eq!(all.last().unwrap().delivery.state, DeliveryState::Rejected);
    assert_eq!(state.lock().unwrap().seen.len(), 1);

    let (url, _) = receiver(vec![500; 100]).await;
    let (outbox, mut records, metrics) = start_outbox(url, Duration::from_millis(300));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    let last = &all.last().unwrap().delivery;
    assert_eq!(last.state, DeliveryState::Expired);
    assert!(last.attempts >= 2, "{last:?}");
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
async fn a_redirect_is_not_followed_and_is_a_refusal_that_names_no_location() {
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
        start_outbox(format!("http://{addr}/hook").parse().unwrap(), Duration::from_secs(60));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    let last = &all.last().expect("a record").delivery;
    assert_eq!((last.state, last.attempts), (DeliveryState::Rejected, 1), "{last:?}");
    let why = last.last_error.clone().unwrap_or_default();
    assert!(why.contains("302") && why.contains("redirect"), "{why}");
    assert!(!why.contains("SECRET789") && !why.contains("SECRET790"), "{why}");
    let state = state.lock().unwrap();
    assert_eq!((state.asked, state.followed), (1, 0));
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
async fn alertmanager_behind_basic_auth_gets_every_notice_and_a_wrong_password_is_a_refusal() {
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

    let (outbox, mut records, _) = start_sink(sink("wrong-SECRET654"), Duration::from_secs(60));
    outbox.enqueue(None, &notice(NoticeKind::NodeDown), 0, outbox.expiry());
    let all = finals(&mut records, 1).await;
    let last = &all.last().expect("a record").delivery;
    assert_eq!(last.state, DeliveryState::Rejected, "{last:?}");
    let why = last.last_error.clone().unwrap_or_default();
    assert!(why.contains("401"), "{why}");
    assert_eq!(state.lock().unwrap().seen, [(basic("vigil", "wrong-SECRET654"), 401)]);
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
