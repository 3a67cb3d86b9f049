use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use journal_shipper::{
    batch::Limits,
    journal::Source,
    metrics::Metrics,
    ship::{Shipper, Store},
};
use vigil_telemetry::{admin::Heartbeat, usage_error};

/// The node's kubelet and containerd journal entries into the log store.
#[derive(Parser)]
struct Args {
    /// The host's journal directories, mounted read-only.
    #[arg(
        long = "journal-dir",
        env = "JOURNAL_DIRS",
        value_delimiter = ',',
        default_value = "/var/log/journal,/run/log/journal"
    )]
    journal_dirs: Vec<PathBuf>,
    /// The units whose entries are shipped.
    #[arg(
        long = "unit",
        env = "JOURNAL_UNITS",
        value_delimiter = ',',
        default_value = "kubelet.service,containerd.service"
    )]
    units: Vec<String>,
    /// The store's journald endpoint (`.../insert/journald/upload`).
    #[arg(long, env = "LOGS_URL")]
    url: reqwest::Url,
    /// The user the store's proxy knows the shippers by.
    #[arg(long, env = "LOGS_USER", default_value = "logs")]
    user: String,
    /// The file holding the user's password (a Secret's key).
    #[arg(long, env = "LOGS_PASSWORD_FILE")]
    password_file: PathBuf,
    /// Where the position shipped up to is kept (on the node).
    #[arg(long, env = "STATE_FILE", default_value = "/var/lib/journal-shipper/cursor")]
    state_file: PathBuf,
    /// With no saved position, how far back the first read starts.
    #[arg(long, env = "START_WINDOW", default_value = "1h", value_parser = humantime::parse_duration)]
    start_window: Duration,
    /// The wait between reads once the journal is read to its end.
    #[arg(long, env = "POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long one delivery may take.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Entries in one batch.
    #[arg(long, env = "MAX_ENTRIES", default_value_t = Limits::DEFAULT.entries)]
    max_entries: usize,
    /// Bytes of one batch's body (the entry that crosses it is the last).
    #[arg(long, env = "MAX_BYTES", default_value_t = Limits::DEFAULT.bytes)]
    max_bytes: usize,
    /// `/live`, `/ready`, `/metrics`.
    #[arg(long, env = "ADMIN_LISTEN", default_value = "0.0.0.0:9430")]
    admin_listen: SocketAddr,
    /// The log filter (`info`, `journal_shipper=debug`, ...).
    #[arg(long, env = "JOURNAL_SHIPPER_LOG", default_value = "info")]
    log: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let telemetry = vigil_telemetry::init("journal-shipper", &args.log).unwrap_or_else(|e| usage_error(e));
    if args.units.is_empty() || args.units.iter().any(|u| u.is_empty()) {
        usage_error("--unit names no unit: give at least one, such as kubelet.service");
    }
    if !matches!(args.url.scheme(), "http" | "https") {
        usage_error(format!("--url {} is not an http(s) URL", args.url));
    }
    if !args.url.username().is_empty() || args.url.password().is_some() {
        usage_error(
            "--url carries credentials: give the user with --user and the password in --password-file",
        );
    }
    if let Err(e) = std::fs::File::open(&args.password_file) {
        usage_error(format!(
            "cannot read the password file {}: {e} (mount the log shippers' Secret there)",
            args.password_file.display()
        ));
    }
    if args.max_entries == 0 || args.max_bytes == 0 {
        usage_error("--max-entries and --max-bytes must be at least 1");
    }
    let store =
        Store::new(args.url, args.user, args.password_file, args.timeout).unwrap_or_else(|e| usage_error(e));
    let metrics = Arc::new(Metrics::default());
    let heartbeat = Heartbeat::new(journal_shipper::ship::stale_after(args.timeout, args.interval));
    let shipper = Shipper {
        source: Source { dirs: args.journal_dirs, units: args.units },
        limits: Limits { entries: args.max_entries, bytes: args.max_bytes, ..Limits::DEFAULT },
        state_file: args.state_file,
        start_window: args.start_window,
        interval: args.interval,
        store,
        metrics: metrics.clone(),
        heartbeat: heartbeat.clone(),
    };
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .unwrap_or_else(|e| usage_error(format!("cannot listen on {}: {e}", args.admin_listen)));
    let router = vigil_telemetry::admin::router_with_metrics_and_heartbeat(
        telemetry.log_level.clone(),
        metrics,
        heartbeat,
    );
    // One listener for the signal, from the start: a second one made later
    // would miss a SIGTERM that came before it.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        vigil_telemetry::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let mut admin_stopped = stopped.clone();
    let admin = vigil_telemetry::admin::serve(admin, router, async move {
        let _ = admin_stopped.wait_for(|stop| *stop).await;
    });
    let ship = async { shipper.run(stopped).await.map_err(|e| e.to_string()) };
    let admin = async { admin.await.map_err(|e| e.to_string()) };
    if let Err(e) = tokio::try_join!(ship, admin) {
        tracing::error!(error = %e, "stopped");
        std::process::exit(1);
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
