//! The admin endpoints every deployable serves on a port of its own, apart
//! from its data path (linkerd's admin server): `GET /live`, `GET /ready`
//! and `PUT /log-level`. A deployable merges its own routes (`/metrics`)
//! into [`router`].
//!
//! The port is reachable from every pod of the cluster, so changing the log
//! level is allowed from loopback only: `kubectl port-forward` and
//! `kubectl exec` arrive there, other pods do not. Serve the router with
//! [`serve`], which gives handlers the peer's address.

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, put},
};
use prometheus_client::registry::Registry;

use crate::LogLevelHandle;

async fn put_log_level(
    State(handle): State<LogLevelHandle>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: String,
) -> impl IntoResponse {
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "the log level can only be changed from localhost (you are {}): use `kubectl port-forward` or `kubectl exec`\n",
                peer.ip()
            ),
        );
    }
    match crate::set_log_level(&handle, &body) {
        Ok(()) => {
            tracing::info!(filter = body.trim(), "log level changed");
            (StatusCode::OK, format!("log level set to {}\n", body.trim()))
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

/// `/live` and `/ready` answer while the process serves: liveness never
/// depends on what the deployable talks to, and it is ready once its
/// listeners are bound, which is when this router starts serving.
pub fn router(handle: LogLevelHandle) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route("/ready", get(|| async { "ok\n" }))
        .route("/log-level", put(put_log_level))
        .with_state(handle)
}

async fn get_metrics<M: AsRef<Registry>>(
    State(metrics): State<Arc<M>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
    let (content_type, body) = crate::encode_for((*metrics).as_ref(), accept);
    ([(header::CONTENT_TYPE, content_type)], body)
}

/// [`router`] plus `GET /metrics` of a deployable's registry, in the format
/// the client asks for (OpenMetrics for Prometheus, text for the rest).
pub fn router_with_metrics<M: AsRef<Registry> + Send + Sync + 'static>(
    handle: LogLevelHandle,
    metrics: Arc<M>,
) -> Router {
    Router::new().route("/metrics", get(get_metrics::<M>)).with_state(metrics).merge(router(handle))
}

/// Serves an admin router on its own port until `shutdown` resolves: with
/// the peer's address its handlers check, and a small port's limits
/// ([`Limits::SMALL`](crate::serve::Limits::SMALL)).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    crate::serve::serve_with_peer(listener, router, crate::serve::Limits::SMALL, shutdown).await
}

#[cfg(test)]
mod tests {
    use axum::{
        body::Body,
        extract::connect_info::MockConnectInfo,
        http::{Method, Request},
    };
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use tracing_subscriber::{filter::Targets, reload};

    use super::*;

    async fn put_from(peer: &str, body: &'static str) -> (u16, String) {
        // The layer must outlive the request: the handle only reaches a live one.
        let (_layer, handle) = reload::Layer::<Targets, tracing_subscriber::Registry>::new(Targets::new());
        let app = router(handle).layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let request =
            Request::builder().method(Method::PUT).uri("/log-level").body(Body::from(body)).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let code = response.status().as_u16();
        let text =
            String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        (code, text)
    }

    #[tokio::test]
    async fn the_log_level_changes_from_localhost_only() {
        let (code, text) = put_from("10.244.1.7:40000", "debug").await;
        assert_eq!(code, 403, "{text}");
        assert!(text.contains("only be changed from localhost (you are 10.244.1.7)"), "{text}");
        let (code, text) = put_from("127.0.0.1:40000", "debug").await;
        assert_eq!((code, text.as_str()), (200, "log level set to debug\n"));
        let (code, text) = put_from("[::1]:40000", "web=loud").await;
        assert_eq!(code, 400, "a bad filter is refused naming it: {text}");
        assert!(text.contains("web=loud"));
    }
}
