//! The admin endpoints every deployable serves on a port of its own, apart
//! from its data path (linkerd's admin server): `GET /live`, `GET /ready`
//! and `PUT /log-level`. A deployable merges its own routes (`/metrics`)
//! into [`router`]. One whose main loop can get stuck passes a
//! [`Heartbeat`] ([`router_with_metrics_and_heartbeat`]), and `/live` fails
//! when the loop stops beating it, so the kubelet restarts it.
//!
//! The port is reachable from every pod of the cluster, so changing the log
//! level is allowed from loopback only: `kubectl port-forward` and
//! `kubectl exec` arrive there, other pods do not. Serve the router with
//! [`serve`], which gives handlers the peer's address.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, put},
};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

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

/// A main loop's sign of life: the loop calls [`Heartbeat::beat`] once per
/// turn, and `/live` answers 503 once no beat came for `stale_after`. The
/// first beat arms it: before the loop first turns, the process is waiting
/// on something a restart would not bring back sooner (its API server).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    last: Arc<Mutex<Option<Instant>>>,
    stale_after: Duration,
}

impl Heartbeat {
    pub fn new(stale_after: Duration) -> Self {
        Heartbeat { last: Arc::new(Mutex::new(None)), stale_after }
    }

    pub fn beat(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Why the loop counts as stuck (one line), if it does.
    pub fn stuck(&self) -> Option<String> {
        let last = (*self.last.lock().unwrap_or_else(|e| e.into_inner()))?;
        let silent = last.elapsed();
        (silent >= self.stale_after).then(|| {
            format!(
                "the main loop has not turned for {}s (stale after {}s)",
                silent.as_secs(),
                self.stale_after.as_secs()
            )
        })
    }
}

/// `/live` and `/ready` answer while the process serves: liveness never
/// depends on what the deployable talks to (only, with a heartbeat, on its
/// own loop turning), and it is ready once its listeners are bound, which
/// is when this router starts serving.
pub fn router(handle: LogLevelHandle) -> Router {
    router_with_heartbeat(handle, None)
}

fn router_with_heartbeat(handle: LogLevelHandle, heartbeat: Option<Heartbeat>) -> Router {
    let live = move || {
        let stuck = heartbeat.as_ref().and_then(Heartbeat::stuck);
        async move {
            match stuck {
                Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
                None => (StatusCode::OK, "ok\n".to_owned()),
            }
        }
    };
    Router::new()
        .route("/live", get(live))
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

/// [`router_with_metrics`] whose `/live` fails once `heartbeat` goes stale.
pub fn router_with_metrics_and_heartbeat<M: AsRef<Registry> + Send + Sync + 'static>(
    handle: LogLevelHandle,
    metrics: Arc<M>,
    heartbeat: Heartbeat,
) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics::<M>))
        .with_state(metrics)
        .merge(router_with_heartbeat(handle, Some(heartbeat)))
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

    async fn live(app: Router) -> (u16, String) {
        let app = app.layer(MockConnectInfo("127.0.0.1:40000".parse::<SocketAddr>().unwrap()));
        let response = app.oneshot(Request::get("/live").body(Body::empty()).unwrap()).await.unwrap();
        let code = response.status().as_u16();
        let text =
            String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        (code, text)
    }

    #[tokio::test(start_paused = true)]
    async fn live_fails_once_the_heartbeat_goes_stale() {
        let (_layer, handle) = reload::Layer::<Targets, tracing_subscriber::Registry>::new(Targets::new());
        let heartbeat = Heartbeat::new(Duration::from_secs(30));
        let app = router_with_heartbeat(handle.clone(), Some(heartbeat.clone()));
        // Not armed before the first beat, however long start-up takes.
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(live(app.clone()).await, (200, "ok\n".into()));
        heartbeat.beat();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(live(app.clone()).await.0, 200);
        tokio::time::advance(Duration::from_secs(2)).await;
        let (code, text) = live(app.clone()).await;
        assert_eq!(code, 503, "{text}");
        assert_eq!(text, "the main loop has not turned for 31s (stale after 30s)\n");
        heartbeat.beat();
        assert_eq!(live(app).await.0, 200);
        // Without a heartbeat, `/live` answers while the process serves.
        assert_eq!(live(router(handle)).await, (200, "ok\n".into()));
    }
}
