//! The store as the shipper meets it, over real HTTP on loopback: what a
//! delivery sends, and what a refusal says.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use journal_shipper::ship::{CONTENT_TYPE, DeliveryError, Store};

/// A request's content type, authorization and body.
type Request = (Option<String>, Option<String>, Vec<u8>);

#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<Request>>>,
    answers: Arc<Mutex<Vec<StatusCode>>>,
}

async fn upload(
    State(seen): State<Seen>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    seen.requests.lock().unwrap().push((header("content-type"), header("authorization"), body.to_vec()));
    let status = seen.answers.lock().unwrap().pop().unwrap_or(StatusCode::NO_CONTENT);
    (status, "unauthorized\n")
}

async fn store(seen: Seen) -> reqwest::Url {
    let app = Router::new().route("/insert/journald/upload", post(upload)).with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/insert/journald/upload").parse().unwrap()
}

#[tokio::test]
async fn a_batch_goes_as_the_export_format_with_the_users_password() {
    let seen = Seen::default();
    let url = store(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let shipper = Store::new(url, "logs".into(), password, Duration::from_secs(5)).unwrap();
    shipper.deliver(b"MESSAGE=x\n\n".to_vec()).await.unwrap();
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (content_type, authorization, body) = &requests[0];
    assert_eq!(content_type.as_deref(), Some(CONTENT_TYPE));
    // logs:s3cret, the file's trailing newline dropped.
    assert_eq!(authorization.as_deref(), Some("Basic bG9nczpzM2NyZXQ="));
    assert_eq!(body, b"MESSAGE=x\n\n");
}

#[tokio::test]
async fn a_refusal_names_the_status_and_what_to_do_and_never_the_password() {
    let seen = Seen::default();
    seen.answers.lock().unwrap().push(StatusCode::UNAUTHORIZED);
    let url = store(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret").unwrap();
    let shipper = Store::new(url, "logs".into(), password.clone(), Duration::from_secs(5)).unwrap();
    let err = shipper.deliver(b"MESSAGE=x\n\n".to_vec()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DeliveryError::Refused { .. }), "{text}");
    assert!(!err.is_permanent(), "a wrong password is tried again: the Secret may be fixed");
    assert!(text.contains("401") && text.contains("vigil-logs-credentials"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");

    std::fs::remove_file(&password).unwrap();
    let err = shipper.deliver(vec![]).await.unwrap_err();
    assert!(err.to_string().contains(&password.display().to_string()), "{err}");
}

#[tokio::test]
async fn a_store_that_does_not_answer_is_unreachable_within_the_timeout() {
    // A listener that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "x").unwrap();
    let url = format!("http://{addr}/insert/journald/upload").parse().unwrap();
    let shipper = Store::new(url, "logs".into(), password, Duration::from_millis(300)).unwrap();
    let started = std::time::Instant::now();
    let err = shipper.deliver(b"MESSAGE=x\n\n".to_vec()).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Unreachable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_malformed_or_oversized_batch_is_rejected_for_good() {
    for status in [StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE] {
        let seen = Seen::default();
        seen.answers.lock().unwrap().push(status);
        let url = store(seen.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "x").unwrap();
        let shipper = Store::new(url, "logs".into(), password, Duration::from_secs(5)).unwrap();
        let err = shipper.deliver(b"MESSAGE=x\n\n".to_vec()).await.unwrap_err();
        assert!(err.is_permanent(), "{status}: {err}");
    }
}
