//! A span per HTTP request served, continuing the caller's trace when the
//! request carries a W3C `traceparent`.

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Middleware (`axum::middleware::from_fn(trace_http::serve)`): one server
/// span named `METHOD route`, child of the incoming `traceparent`'s span,
/// for each request the sampling traces; none at all for the others.
pub async fn serve(request: Request, next: Next) -> Response {
    let parent = crate::otel::extract(request.headers());
    if !crate::otel::traced(&parent) {
        return next.run(request).await;
    }
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str());
    let method = request.method().as_str();
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = Empty,
    );
    // A malformed or absent header gives an empty context: a new trace.
    let _ = span.set_parent(parent);
    async move {
        let response = next.run(request).await;
        tracing::Span::current().record("http.response.status_code", response.status().as_u16());
        response
    }
    .instrument(span)
    .await
}

/// The current span's context as outgoing `traceparent` headers.
pub fn current_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    crate::otel::inject(&tracing::Span::current().context(), &mut headers);
    headers
}
