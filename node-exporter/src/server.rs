//! Two routers on two ports:
//! - metrics (`listen`): `GET /metrics`, one scrape per request (cached briefly);
//! - admin (`admin_listen`): `GET /live`, `/ready`, `PUT /log-level`.
//!   Liveness never depends on the kubelet or Docker: a slow source shows
//!   in `scrape_success`, not as a restarted exporter.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, put},
};

use crate::{exposition, scrape::Scraper};

/// OpenMetrics for Prometheus, the classic text format for anyone else (promtool, curl).
async fn metrics(State(scraper): State<Arc<Scraper>>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let scrape = scraper.scrape().await;
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
    let (content_type, body) = vigil_telemetry::negotiate(exposition::render(scrape), accept);
    ([(header::CONTENT_TYPE, content_type)], body)
}

pub fn metrics_router(scraper: Arc<Scraper>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(scraper)
}

async fn log_level(State(handle): State<vigil_telemetry::LogLevelHandle>, body: String) -> impl IntoResponse {
    match vigil_telemetry::set_log_level(&handle, &body) {
        Ok(()) => (StatusCode::OK, format!("log level set to {}\n", body.trim())),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

pub fn admin_router(log_level_handle: vigil_telemetry::LogLevelHandle) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route("/ready", get(|| async { "ok\n" }))
        .route("/log-level", put(log_level))
        .with_state(log_level_handle)
}
