use std::net::SocketAddr;

use clap::Parser;

/// The seed's web service.
#[derive(Parser)]
struct Args {
    /// Port to serve on (the seed's PORT variable).
    #[arg(long, env = "PORT", default_value_t = 8000)]
    port: u16,
    /// Log filter.
    #[arg(long, env = "WEB_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _telemetry = vigil_telemetry::init("web", &args.log).unwrap_or_else(|e| {
        eprintln!("web: {e}");
        std::process::exit(64)
    });
    let state = web::AppState::new(&web::hostname());
    let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| {
        eprintln!("web: cannot listen on {addr}: {e} (another process on this port? set PORT)");
        std::process::exit(1)
    });
    tracing::info!(%addr, "listening");
    axum::serve(listener, web::router(state))
        .with_graceful_shutdown(vigil_telemetry::shutdown_signal())
        .await
        .expect("server runs until shutdown");
}
