use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use vigil_telemetry::serve::{self, Limits};

/// The seed's web service.
#[derive(Parser)]
struct Args {
    /// Port to serve on (the seed's PORT variable).
    #[arg(long, env = "PORT", default_value_t = 8000)]
    port: u16,
    /// Log filter.
    #[arg(long, env = "WEB_LOG", default_value = "info")]
    log: String,
    /// A connection that has not sent a whole request head within this is
    /// closed (also how long a kept-alive connection may wait for its next).
    #[arg(long, env = "WEB_HEADER_READ_TIMEOUT", default_value_t = serve::HEADER_READ_TIMEOUT.into())]
    header_read_timeout: humantime::Duration,
    /// A connection that moves no byte for this is closed.
    #[arg(long, env = "WEB_IDLE_TIMEOUT", default_value_t = serve::IDLE_TIMEOUT.into())]
    idle_timeout: humantime::Duration,
    /// Connections open at once; at the cap a new one displaces the oldest
    /// waiting for a request.
    #[arg(long, env = "WEB_MAX_CONNECTIONS", default_value_t = serve::MAX_CONNECTIONS)]
    max_connections: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _telemetry = vigil_telemetry::init("web", &args.log).unwrap_or_else(|e| {
        eprintln!("web: {e}");
        std::process::exit(64)
    });
    let limits = Limits {
        header_read_timeout: Duration::from(args.header_read_timeout),
        idle_timeout: Duration::from(args.idle_timeout),
        max_connections: args.max_connections,
        ..Limits::DATA
    };
    if let Err(e) = limits.check() {
        eprintln!("web: {e} (see --help)");
        std::process::exit(64)
    }
    let state = web::AppState::new(&web::hostname());
    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| {
        eprintln!("web: cannot listen on {addr}: {e} (another process on this port? set PORT)");
        std::process::exit(1)
    });
    tracing::info!(%addr, ?limits, "listening");
    serve::serve(listener, web::router(state), limits, vigil_telemetry::shutdown_signal())
        .await
        .expect("server runs until shutdown");
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
