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
    let span = request_span(&request);
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

/// The server span of `request`, named `METHOD route`. Bounded: a client's
/// method token or path never names a span.
fn request_span(request: &Request) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str());
    let method = crate::labels::method(request.method());
    tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        url.path = crate::labels::path(request.uri().path()),
        http.response.status_code = Empty,
    )
}

/// The current span's context as outgoing `traceparent` headers.
pub fn current_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    crate::otel::inject(&tracing::Span::current().context(), &mut headers);
    headers
}

#[cfg(test)]
mod tests {
    use opentelemetry::Value;

    use super::*;

    #[test]
    fn a_clients_method_and_path_are_bounded_in_the_span() {
        let (subscriber, recorded) = crate::otel::recording_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let long = format!("/{}", "x".repeat(5000));
            let request =
                Request::builder().method("FOO1").uri(long).body(axum::body::Body::empty()).unwrap();
            drop(request_span(&request));
        });
        let spans = recorded.spans();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "_OTHER unmatched");
        let attribute = |key: &str| {
            spans[0].attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.clone())
        };
        assert_eq!(attribute("http.request.method"), Some(Value::from("_OTHER")));
        let Some(Value::String(path)) = attribute("url.path") else { panic!("no url.path: {spans:?}") };
        assert_eq!(path.as_str().len(), crate::labels::MAX_PATH_BYTES);
    }
}
