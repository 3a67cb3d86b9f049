use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use auth_proxy::{
    auth::Users,
    config::Config,
    metrics::Metrics,
    serve::{limits, serve},
};
use clap::Parser;
use vigil_telemetry::usage_error;

/// HTTP Basic authentication in front of a server in the same pod.
#[derive(Parser)]
struct Args {
    /// The configuration: routes, users and their password files (a mounted ConfigMap).
    #[arg(long, env = "AUTH_PROXY_CONFIG", default_value = "/etc/auth-proxy/config.json")]
    config: String,
    /// The address every route listens on (the pod's IP: the upstream keeps loopback).
    #[arg(long, env = "AUTH_PROXY_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// The admin port: /live, /ready, /metrics, PUT /log-level.
    #[arg(long, env = "AUTH_PROXY_ADMIN_LISTEN", default_value = "0.0.0.0:9095")]
    admin_listen: SocketAddr,
    #[arg(long, env = "AUTH_PROXY_LOG", default_value = "info")]
    log: String,
}

async fn bind(addr: SocketAddr, what: &str) -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| usage_error(format!("cannot listen on {addr} ({what}): {e}")))
}

// One thread: a few requests a second (a UI, scrapes, span batches).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let telemetry = vigil_telemetry::init("auth-proxy", &args.log).unwrap_or_else(|e| usage_error(e));
    let config = Config::load(&args.config).unwrap_or_else(|e| usage_error(e));
    let users = Arc::new(Users::load(&config.users).unwrap_or_else(|e| usage_error(e)));
    let metrics = Arc::new(Metrics::default());
    let admin = bind(args.admin_listen, "admin").await;
    let mut servers = vec![];
    for (route, router) in auth_proxy::routers(&config, users, metrics.clone()) {
        let listen = auth_proxy::config::listen_address(args.bind_address, &route);
        let listener = bind(listen, &route.name).await;
        tracing::info!(route = %route.name, %listen, upstream = %route.upstream, "serving");
        let limits = limits(&config.limits, &route);
        limits.check().unwrap_or_else(|e| usage_error(format!("route {}: {e}", route.name)));
        servers.push(tokio::spawn(serve(listener, router, limits, vigil_telemetry::shutdown_signal())));
    }
    let admin_router = vigil_telemetry::admin::router_with_metrics(telemetry.log_level.clone(), metrics);
    let admin = vigil_telemetry::admin::serve(admin, admin_router, vigil_telemetry::shutdown_signal());
    if let Err(e) = admin.await {
        usage_error(format!("admin port: {e}"));
    }
    for server in servers {
        let _ = server.await;
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap's own checks of the definition (conflicting names, bad defaults, env fallbacks).
    #[test]
    fn the_command_line_is_well_formed() {
        super::Args::command().debug_assert();
    }
}
