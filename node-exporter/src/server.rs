//! Two routers on two ports:
//! - metrics (`listen`): `GET /metrics`, one scrape per request (cached briefly);
//! - admin (`admin_listen`): telemetry's admin router (`GET /live`, `/ready`,
//!   `PUT /log-level` from localhost). Liveness never depends on the kubelet
//!   or Docker: a slow source shows in `scrape_success`, not as a restarted
//!   exporter.

use std::sync::Arc;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::{exposition, scrape::Scraper};

/// OpenMetrics for Prometheus, the classic text format for anyone else (promtool, curl).
async fn metrics(State(scraper): State<Arc<Scraper>>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let scrape = scraper.scrape().await;
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
    let (content_type, body) = vigil_telemetry::negotiate(exposition::render(scrape), accept);
    ([(header::CONTENT_TYPE, content_type)], body)
}

pub fn metrics_router(scraper: Arc<Scraper>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn(vigil_telemetry::trace_http::serve))
        .with_state(scraper)
}
