use std::{convert::Infallible, fmt::Display, net::SocketAddr, sync::Arc, time::Duration};

use alerter::{
    config::Config,
    controller::{self, Context},
    delivery::Outbox,
    leader::{Elector, Timings},
    metrics::Metrics,
    model::{Notice, NoticeKind},
    tracker::Settings,
};
use clap::Parser;
use kube::runtime::events::Reporter;
use tokio::task::JoinError;
use vigil_telemetry::admin::Heartbeat;
use vigil_telemetry::usage_error;

/// The controller's loop turns every second; this long without a turn, it is stuck.
const STUCK_AFTER: Duration = Duration::from_secs(30);

/// Watches Nodes; tells when one goes down and whether its pods came back.
#[derive(Parser)]
struct Args {
    /// The configuration file (a mounted ConfigMap).
    #[arg(long, env = "ALERTER_CONFIG", default_value = "/etc/alerter/config.json")]
    config: String,
    /// The namespace of the leader-election Lease (the pod's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "monitoring")]
    namespace: String,
    /// This replica's name in the Lease and in Events (the pod's name).
    #[arg(long, env = "POD_NAME")]
    identity: String,
    #[arg(long, env = "ALERTER_LEASE", default_value = "vigil-alerter")]
    lease: String,
    /// How long a standby waits, after it last saw the Lease change, before
    /// it takes over (whole seconds). The leader renews every quarter of it
    /// and stops acting two thirds of it after its last renewal was sent.
    #[arg(long, env = "ALERTER_LEASE_DURATION", default_value = "8s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// Admin port: /metrics, /live, /ready, PUT /log-level.
    #[arg(long, env = "ALERTER_LISTEN", default_value = "0.0.0.0:9102")]
    listen: SocketAddr,
    #[arg(long, env = "ALERTER_LOG", default_value = "info")]
    log: String,
}

/// One line on why a supervised task ended: none of them ends on its own.
fn ended<E: Display>(what: &str, joined: Result<Result<(), E>, JoinError>) -> String {
    match joined {
        Ok(Ok(())) => format!("the {what} stopped"),
        Ok(Err(e)) => format!("the {what} failed: {e}"),
        Err(e) if e.is_panic() => format!("the {what} panicked"),
        Err(_) => format!("the {what} was cancelled"),
    }
}

fn infallible(joined: Result<(), JoinError>) -> Result<Result<(), Infallible>, JoinError> {
    joined.map(Ok)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let telemetry = vigil_telemetry::init("alerter", &args.log).unwrap_or_else(|e| usage_error(e));
    let config = Config::load(&args.config).unwrap_or_else(|e| usage_error(e));
    let sinks = config.sinks().unwrap_or_else(|e| usage_error(e));
    let timings = Timings::for_lease_duration(args.lease_duration).unwrap_or_else(|e| usage_error(e));
    let client = kube::Client::try_default().await.unwrap_or_else(|e| {
        eprintln!("alerter: no Kubernetes API to talk to: {e} (in a pod it uses its ServiceAccount; elsewhere KUBECONFIG)");
        std::process::exit(1)
    });
    let metrics = Arc::new(Metrics::default());
    let (elector, leadership) = Elector::new(
        kube::Api::namespaced(client.clone(), &args.namespace),
        args.lease.clone(),
        args.identity.clone(),
        timings,
    );
    // Notices about nodes go out while this replica leads; those of a
    // control-plane incident (no node) also while it is cut off from the
    // API server, if it led when that began (the page is about that very
    // outage), and its resolved always: a replica deposed after paging it
    // is the only one that knows of it.
    let gate = leadership.clone();
    let (outbox, records) = Outbox::new(
        sinks,
        config.delivery.clone(),
        config.generator_url.clone().unwrap_or_default(),
        metrics.clone(),
        Arc::new(move |notice: &Notice| match (notice.node.is_empty(), notice.kind) {
            (true, NoticeKind::Resolved) => true,
            (true, _) => gate.led_when_contact_lost(),
            (false, _) => gate.leading(),
        }),
    );
    let heartbeat = Heartbeat::new(STUCK_AFTER);
    let context = Context {
        client,
        settings: Settings {
            suspect_after_renewals: config.suspect_after_renewals,
            verify_grace: config.verify_grace,
            verify_deadline: config.verify_deadline,
            control_plane_after: config.control_plane_after,
            stable_for: config.stable_for,
            logs_ui: config.logs_url.clone(),
            ..Settings::defaults(config.cluster.clone())
        },
        outbox: outbox.clone(),
        metrics: metrics.clone(),
        leadership,
        heartbeat: heartbeat.clone(),
        // The elector's requests answer within its renew deadline when the
        // API server is there at all.
        contact_window: timings.renew_deadline,
        retention: config.retention,
        reporter: Reporter { controller: "vigil-alerter".into(), instance: Some(args.identity.clone()) },
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|e| usage_error(format!("cannot listen on {}: {e}", args.listen)));
    tracing::info!(admin = %args.listen, sinks = ?outbox.sink_names(), identity = %args.identity, ?timings, "starting");
    let admin_router = vigil_telemetry::admin::router_with_metrics_and_heartbeat(
        telemetry.log_level.clone(),
        metrics,
        heartbeat,
    );
    // The admin port serves until the process exits: through shutdown too.
    let mut admin =
        tokio::spawn(vigil_telemetry::admin::serve(listener, admin_router, std::future::pending()));
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let mut elector = tokio::spawn(elector.run(async {
        let _ = released.await;
    }));
    let mut outbox = tokio::spawn(outbox.run());
    let mut controller = tokio::spawn(controller::run(context, records));
    // Each task runs for the process's life; if one ends, the process ends
    // with it, and the kubelet starts a whole one again.
    let failure = tokio::select! {
        joined = &mut elector => ended("leader elector", infallible(joined)),
        joined = &mut outbox => ended("outbox", infallible(joined)),
        joined = &mut controller => ended("controller", joined),
        joined = &mut admin => ended("admin server", joined),
        () = vigil_telemetry::shutdown_signal() => {
            // Stop acting first, then hand the Lease over: the standby takes
            // over at once instead of after the lease duration.
            controller.abort();
            outbox.abort();
            let _ = controller.await;
            let _ = outbox.await;
            let _ = release.send(());
            let bound = timings.request_timeout * 4;
            if tokio::time::timeout(bound, elector).await.is_err() {
                tracing::warn!(?bound, "the Lease was not released in time; the standby takes it once it expires");
            }
            tracing::info!("stopped");
            return;
        }
    };
    tracing::error!("{failure}");
    drop(telemetry);
    eprintln!("alerter: {failure}; exiting so that the kubelet restarts it");
    std::process::exit(1);
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
