//! How the proxy serves a route: through `vigil_telemetry::serve`, the one
//! bounded server every deployable uses (header-read and idle timeouts, a
//! connection cap that sheds the oldest idle connection, bounded bodies,
//! a graceful drain), with the route's own body limit and an idle timeout
//! that outlasts the upstream's slowest answer.

use std::{future::Future, time::Duration};

use axum::Router;
use tokio::net::TcpListener;
use vigil_telemetry::serve::{DRAIN_TIMEOUT, Limits as ServeLimits, serve_with_peer};

use crate::config::{Limits, Route};

/// While the upstream works on an answer no byte moves on the client's
/// connection; the idle timeout must not cut an answer the route still
/// waits for, so it is the route's upstream timeout and this margin.
const IDLE_MARGIN: Duration = Duration::from_secs(5);

/// What the server allows a route's clients.
pub fn limits(limits: &Limits, route: &Route) -> ServeLimits {
    ServeLimits {
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: route.upstream_timeout + IDLE_MARGIN,
        max_connections: limits.max_connections,
        max_body_bytes: usize::try_from(route.body_limit).unwrap_or(usize::MAX),
        drain_timeout: DRAIN_TIMEOUT,
    }
}

/// Serves `router` (one route) until `shutdown` resolves; handlers find the
/// peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_with_peer(listener, router, limits, shutdown).await
}
