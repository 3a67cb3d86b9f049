use std::{net::SocketAddr, sync::Arc, time::Duration};

use alerter::{
    config::Config,
    controller::{self, Context},
    delivery::Outbox,
    leader::Elector,
    metrics::Metrics,
    tracker::Settings,
};
use clap::Parser;
use kube::runtime::events::Reporter;

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
    /// How long a leader's renewal counts; a standby takes over after it.
    #[arg(long, env = "ALERTER_LEASE_DURATION", default_value = "8s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// Admin port: /metrics, /live, /ready, PUT /log-level.
    #[arg(long, env = "ALERTER_LISTEN", default_value = "0.0.0.0:9102")]
    listen: SocketAddr,
    #[arg(long, env = "ALERTER_LOG", default_value = "info")]
    log: String,
}

fn usage_error(message: impl std::fmt::Display) -> ! {
    eprintln!("alerter: {message}");
    std::process::exit(64)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let telemetry = vigil_telemetry::init("alerter", &args.log).unwrap_or_else(|e| usage_error(e));
    let config = Config::load(&args.config).unwrap_or_else(|e| usage_error(e));
    let sinks = config.sinks().unwrap_or_else(|e| usage_error(e));
    let client = kube::Client::try_default().await.unwrap_or_else(|e| {
        eprintln!("alerter: no Kubernetes API to talk to: {e} (in a pod it uses its ServiceAccount; elsewhere KUBECONFIG)");
        std::process::exit(1)
    });
    let metrics = Arc::new(Metrics::default());
    let (leading_tx, leading) = tokio::sync::watch::channel(false);
    // Nothing is sent unless this replica leads, asked right before each request.
    let leads = leading.clone();
    let (outbox, records) = Outbox::new(
        sinks,
        config.delivery.clone(),
        config.generator_url.clone().unwrap_or_default(),
        metrics.clone(),
        Arc::new(move || *leads.borrow()),
    );
    let elector = Elector {
        api: kube::Api::namespaced(client.clone(), &args.namespace),
        name: args.lease.clone(),
        identity: args.identity.clone(),
        duration: args.lease_duration,
        retry: args.lease_duration / 4,
    };
    let context = Context {
        client,
        settings: Settings {
            cluster: config.cluster.clone(),
            suspect_after_renewals: config.suspect_after_renewals,
            verify_grace: config.verify_grace,
            verify_deadline: config.verify_deadline,
            ..Settings::defaults(config.cluster.clone())
        },
        outbox: outbox.clone(),
        metrics: metrics.clone(),
        leading,
        reporter: Reporter { controller: "vigil-alerter".into(), instance: Some(args.identity.clone()) },
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|e| usage_error(format!("cannot listen on {}: {e}", args.listen)));
    tracing::info!(admin = %args.listen, sinks = ?outbox.sink_names(), identity = %args.identity, "starting");
    let admin = vigil_telemetry::admin::serve(
        listener,
        vigil_telemetry::admin::router_with_metrics(telemetry.log_level.clone(), metrics),
        vigil_telemetry::shutdown_signal(),
    );
    tokio::spawn(elector.run(leading_tx));
    tokio::spawn(outbox.run());
    tokio::select! {
        served = admin => served.unwrap_or_else(|e| usage_error(e)),
        ran = controller::run(context, records) => {
            if let Err(e) = ran {
                eprintln!("alerter: {e}");
                std::process::exit(1);
            }
        }
    }
}
