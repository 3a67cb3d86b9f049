//! The seed's web service, done properly: `GET /` answers `I'm <hostname>`
//! (so curls through the load balancer show which pod answered), every
//! request is logged, and `/metrics` serves request counts and latencies.
#![forbid(unsafe_code)]

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, StatusCode, Uri, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// One of HTTP's methods or `_OTHER`: a client's token is never a label.
    pub method: &'static str,
    /// The route, not the raw path: unknown paths share one label value.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// The service's own metrics, registered under the `web_` prefix.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("web");
        let requests = Family::<RequestLabels, Counter>::default();
        // 50 µs to ~1.6 s: a hostname reply is microseconds; anything near a second is an incident.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 16))
        });
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to serve a request, by route",
            latency.clone(),
        );
        vigil_telemetry::otel::register(&mut registry);
        Metrics { registry, requests, latency }
    }
}

pub struct AppState {
    /// The full reply, built once: `I'm <hostname>\n`.
    greeting: String,
    pub metrics: Metrics,
}

impl AppState {
    pub fn new(hostname: &str) -> Arc<Self> {
        Arc::new(AppState { greeting: format!("I'm {hostname}\n"), metrics: Metrics::default() })
    }
}

/// The hostname as the seed's Go server reports it (`os.Hostname()`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

async fn greet(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], state.greeting.clone())
}

async fn metrics(State(state): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
    let (content_type, body) = vigil_telemetry::encode_for(&state.metrics.registry, accept);
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body)
}

/// Counts, times and logs every request, whatever route answered it.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = vigil_telemetry::labels::method(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    // A clone shares the parsed bytes; the log line shows a bounded slice of it.
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.latency.get_or_create(&RouteLabels { route: route.clone() }).observe(elapsed.as_secs_f64());
    state.metrics.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    let path = vigil_telemetry::labels::path(uri.path());
    tracing::info!(%method, %path, status, micros = elapsed.as_micros() as u64, "request");
    response
}

/// Any other path: not counted (a client's path is never a label), but
/// logged like every request, its path cut as theirs are, so a probe for
/// paths that are not there shows in the logs.
async fn not_found(method: Method, uri: Uri) -> StatusCode {
    let method = vigil_telemetry::labels::method(&method);
    let path = vigil_telemetry::labels::path(uri.path());
    tracing::info!(%method, %path, status = 404u16, "request");
    StatusCode::NOT_FOUND
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(greet))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // Inside `observe`: the request's log line stays a log line, not an
        // event on its span, which already holds all it says.
        .route_layer(middleware::from_fn(vigil_telemetry::trace_http::serve))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_body(app: Router, uri: &str) -> (u16, String) {
        let response = app.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn greets_with_the_hostname_and_counts_it() {
        let state = AppState::new("web-abc");
        let (status, body) = get_body(router(state.clone()), "/").await;
        assert_eq!((status, body.as_str()), (200, "I'm web-abc\n"));
        let (_, metrics) = get_body(router(state.clone()), "/metrics").await;
        assert!(
            metrics.contains(r#"web_http_requests_total{method="GET",route="/",status="200"} 1"#),
            "{metrics}"
        );
        assert!(metrics.contains(r#"web_http_request_duration_seconds_count{route="/"} 1"#), "{metrics}");
        // No Accept header: the classic text format, which promtool and curl read.
        assert!(metrics.contains("# TYPE web_http_requests_total counter") && !metrics.contains("# EOF"));
        let request = Request::get("/metrics")
            .header(header::ACCEPT, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
            .body(Body::empty())
            .unwrap();
        let response = router(state).oneshot(request).await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_TYPE], vigil_telemetry::OPENMETRICS);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn a_clients_method_token_is_never_a_label() {
        let state = AppState::new("h");
        for method in ["FOO1", "FOO2", "get"] {
            let request = Request::builder().method(method).uri("/").body(Body::empty()).unwrap();
            let response = router(state.clone()).oneshot(request).await.unwrap();
            assert_eq!(response.status().as_u16(), 405);
        }
        let (_, metrics) = get_body(router(state), "/metrics").await;
        assert!(
            metrics.contains(r#"web_http_requests_total{method="_OTHER",route="/",status="405"} 3"#),
            "{metrics}"
        );
        assert!(!metrics.contains("FOO") && !metrics.contains(r#"method="get""#), "{metrics}");
    }

    #[tokio::test]
    async fn unknown_paths_share_one_label() {
        let state = AppState::new("h");
        for uri in ["/a", "/b/c"] {
            let (status, _) = get_body(router(state.clone()), uri).await;
            assert_eq!(status, 404);
        }
        // route_layer only wraps matched routes: 404s are logged by the
        // fallback, never observed with per-path labels.
        let (_, metrics) = get_body(router(state), "/metrics").await;
        assert!(!metrics.contains("/b/c"), "{metrics}");
    }
}
