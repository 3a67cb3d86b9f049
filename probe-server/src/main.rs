use std::{net::SocketAddr, sync::Arc, time::Duration};

use clap::Parser;
use probe_server::{
    check::Checker,
    config::{Config, Overrides},
    probes::Probes,
    runner,
    server::{self, ProbeState},
};
use vigil_telemetry::serve::{self, Limits};
use vigil_telemetry::usage_error;

/// The sidecar kubelet's probes call. Flags and environment override the file.
#[derive(Parser)]
struct Args {
    /// The configuration file (a mounted ConfigMap).
    #[arg(long, env = "PROBE_CONFIG", default_value = "/etc/probe-server/config.json")]
    config: String,
    #[arg(long, env = "PROBE_LISTEN")]
    listen: Option<SocketAddr>,
    #[arg(long, env = "PROBE_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// The workload's HTTP check URL.
    #[arg(long, env = "PROBE_WORKLOAD_HTTP")]
    workload_http: Option<String>,
    #[arg(long, env = "PROBE_PERIOD", value_parser = humantime::parse_duration)]
    period: Option<Duration>,
    #[arg(long, env = "PROBE_DRAIN", value_parser = humantime::parse_duration)]
    drain: Option<Duration>,
    #[arg(long, env = "PROBE_LOG", default_value = "info")]
    log: String,
    /// A connection that has not sent a whole request head within this is
    /// closed; the kubelet sends its probe's at once.
    #[arg(long, env = "PROBE_HEADER_READ_TIMEOUT", default_value_t = serve::HEADER_READ_TIMEOUT.into())]
    header_read_timeout: humantime::Duration,
    /// Connections open at once on each port; at the cap a new one (the
    /// kubelet's next probe) displaces the oldest waiting for a request.
    #[arg(long, env = "PROBE_MAX_CONNECTIONS", default_value_t = serve::MAX_SMALL_CONNECTIONS)]
    max_connections: usize,
}

async fn bind(addr: SocketAddr, what: &str) -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| usage_error(format!("cannot listen on {addr} ({what}): {e}")))
}

// One thread: the work is a handful of small checks a second.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let telemetry = vigil_telemetry::init("probe-server", &args.log).unwrap_or_else(|e| usage_error(e));
    let overrides = Overrides {
        listen: args.listen,
        admin_listen: args.admin_listen,
        workload_http: args.workload_http,
        period: args.period,
        drain: args.drain,
    };
    let config = Arc::new(Config::load(&args.config, &overrides).unwrap_or_else(|e| usage_error(e)));
    let limits = Limits {
        header_read_timeout: Duration::from(args.header_read_timeout),
        max_connections: args.max_connections,
        ..Limits::SMALL
    };
    limits.check().unwrap_or_else(|e| usage_error(format!("{e} (see --help)")));
    let checker = Checker::new();
    let probes = Arc::new(Probes::new(&config));
    let metrics = Arc::new(probe_server::metrics::Metrics::default());

    let probe_listener = bind(config.listen, "probes").await;
    let admin_listener = bind(config.admin_listen, "admin").await;
    tracing::info!(probes = %config.listen, admin = %config.admin_listen, checks = 1 + config.dependencies.len(), "serving");

    tokio::spawn(runner::run(config.clone(), checker, probes.clone(), metrics.clone()));
    let probe_app = server::probe_router(ProbeState { probes: probes.clone(), metrics: metrics.clone() });
    let admin_app = server::admin_router(metrics, telemetry.log_level.clone());

    // On SIGTERM readiness turns false at once; keep answering through the
    // drain so the kubelet sees it and the pod leaves its Services first.
    let drain = config.drain;
    let stop = async move {
        vigil_telemetry::shutdown_signal().await;
        probes.begin_shutdown();
        tracing::info!(drain = %humantime::format_duration(drain), "not ready any more; draining");
        tokio::time::sleep(drain).await;
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    let probe_server = serve::serve(probe_listener, probe_app, limits, wait(stop_rx.clone()));
    let admin_server = serve::serve_with_peer(admin_listener, admin_app, limits, wait(stop_rx));
    let servers = async { tokio::try_join!(probe_server, admin_server) };
    tokio::pin!(servers);
    tokio::select! {
        result = &mut servers => result.map(|_| ()).unwrap_or_else(|e| usage_error(e)),
        () = stop => {
            let _ = stop_tx.send(true);
            let _ = servers.await;
        }
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
