use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{ArgAction, Parser};
use node_exporter::{
    collector::{docker::DockerCollector, kubelet::Kubelet},
    scrape::{Scraper, Source},
    server,
};
use vigil_telemetry::usage_error;

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Per-container usage of this node, for Prometheus.
#[derive(Parser)]
struct Args {
    /// This node's name (the `node` label); the downward API's spec.nodeName.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Where this node's kubelet answers, as its serving certificate names it (status.hostIP).
    #[arg(long, env = "NODE_IP")]
    kubelet_address: Option<String>,
    #[arg(long, env = "KUBELET_PORT", default_value_t = 10250)]
    kubelet_port: u16,
    /// The cluster CA the kubelet's serving certificate is checked against.
    #[arg(long, env = "KUBELET_CA", default_value_t = format!("{SERVICE_ACCOUNT}/ca.crt"))]
    kubelet_ca: String,
    /// The ServiceAccount token sent to the kubelet (re-read on every scrape).
    #[arg(long, env = "KUBELET_TOKEN", default_value_t = format!("{SERVICE_ACCOUNT}/token"))]
    kubelet_token: String,
    /// Read the kubelet's stats (its embedded cAdvisor).
    #[arg(long = "collector.kubelet", env = "COLLECTOR_KUBELET", default_value_t = true, action = ArgAction::Set)]
    collector_kubelet: bool,
    /// Read Docker Engine's container stats.
    #[arg(long = "collector.docker", env = "COLLECTOR_DOCKER", default_value_t = false, action = ArgAction::Set)]
    collector_docker: bool,
    #[arg(long, env = "DOCKER_SOCKET", default_value = "/var/run/docker.sock")]
    docker_socket: String,
    #[arg(long, env = "NODE_EXPORTER_LISTEN", default_value = "0.0.0.0:9100")]
    listen: SocketAddr,
    #[arg(long, env = "NODE_EXPORTER_ADMIN_LISTEN", default_value = "0.0.0.0:9101")]
    admin_listen: SocketAddr,
    /// A collector slower than this contributes nothing to the scrape.
    #[arg(long, env = "NODE_EXPORTER_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Scrapes within this window share one collection.
    #[arg(long, env = "NODE_EXPORTER_CACHE", default_value = "2s", value_parser = humantime::parse_duration)]
    cache: Duration,
    #[arg(long, env = "NODE_EXPORTER_LOG", default_value = "info")]
    log: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let telemetry = vigil_telemetry::init("node-exporter", &args.log).unwrap_or_else(|e| usage_error(e));
    let mut sources = vec![];
    if args.collector_kubelet {
        let address = args.kubelet_address.clone().unwrap_or_else(|| args.node_name.clone());
        let kubelet = Kubelet::new(
            &address,
            args.kubelet_port,
            args.kubelet_ca.as_ref(),
            PathBuf::from(&args.kubelet_token),
        )
        .unwrap_or_else(|e| usage_error(e));
        sources.push(Source::Kubelet(kubelet));
    }
    if args.collector_docker {
        let docker = DockerCollector::connect(&args.docker_socket).unwrap_or_else(|e| usage_error(e));
        sources.push(Source::Docker(docker.negotiate().await.unwrap_or_else(|e| usage_error(e))));
    }
    if sources.is_empty() {
        usage_error("no collector enabled: set --collector.kubelet=true or --collector.docker=true");
    }
    let names: Vec<_> = sources.iter().map(Source::name).collect();
    let scraper = Arc::new(Scraper::new(args.node_name.clone(), sources, args.timeout, args.cache));

    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| usage_error(format!("cannot listen on {addr}: {e}")))
    };
    let (metrics, admin) = (bind(args.listen).await, bind(args.admin_listen).await);
    tracing::info!(node = %args.node_name, collectors = ?names, metrics = %args.listen, admin = %args.admin_listen, "serving");
    let metrics = vigil_telemetry::serve::serve(
        metrics,
        server::metrics_router(scraper),
        vigil_telemetry::serve::Limits::SMALL,
        vigil_telemetry::shutdown_signal(),
    );
    let admin_router = vigil_telemetry::admin::router(telemetry.log_level.clone());
    let admin = vigil_telemetry::admin::serve(admin, admin_router, vigil_telemetry::shutdown_signal());
    let result = tokio::try_join!(metrics, admin);
    result.unwrap_or_else(|e| usage_error(e));
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
