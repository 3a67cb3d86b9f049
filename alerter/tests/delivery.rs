//! Delivery against a real HTTP receiver on loopback: one that answers 500
//! and then recovers gets every notice, in order, each signed as the
//! Standard Webhooks spec says; a refusal is not retried; a notice that
//! cannot be delivered expires with a record, never silently.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use alerter::{
    config::{DeliveryConfig, Sink, Target, signing_key},
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

/// Spans get OpenTelemetry ids (exported nowhere), so deliveries carry a
/// `traceparent`. Process-wide: tracing caches whether a callsite is
/// enabled, and a test thread without a subscriber would cache "never".
fn spans_get_ids() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(vigil_telemetry::otel::recording_subscriber().0);
    });
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
        trace_id: alerter::model::incident_trace_id("w2-1700000000"),
    }
}

fn start_outbox(
    url: reqwest::Url,
    expire_after: Duration,
) -> (Arc<Outbox>, mpsc::UnboundedReceiver<Record>, Arc<Metrics>) {
    let config = DeliveryConfig {
        timeout: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        expire_after,
    };
    let sink = Sink {
        name: "ops".into(),
        target: Target::Webhook { url, key: signing_key("test", SECRET).unwrap() },
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
