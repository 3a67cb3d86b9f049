//! Helpers for vigil's end-to-end tests: a cluster created through vigil's
//! own `up`, shared by the checks as a [`Cluster`]; a client for it through
//! the merged kubeconfig context; the provider its nodes come from. Waits
//! use vigil's own poller (`vigil::poll`). Everything talks to real Docker
//! and a real API server.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    api::{DeleteParams, LogParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use vigil::{
    app::Options,
    build::ImageNames,
    cluster::ClusterSpec,
    poll::until_some,
    progress::Progress,
    provider::{NodeProvider, NodeSpec},
    up::{Report, Scope},
};

/// Where the e2e's receivers listen on the host: the alerter's webhook, and
/// Alertmanager's. The cluster reaches the host at its node network's gateway.
pub const ALERTER_RECEIVER_PORT: u16 = 18787;
pub const ALERTMANAGER_RECEIVER_PORT: u16 = 18788;

/// The test cluster: its own name and node network, so it never touches a
/// cluster the user brought up with the defaults; its notices go to the
/// receivers the alerting checks run on the host.
pub fn test_spec() -> ClusterSpec {
    let node_subnet: ipnet::Ipv4Net = "172.29.250.0/24".parse().expect("valid");
    let host = node_subnet.hosts().next().expect("a gateway address");
    ClusterSpec {
        name: "vigil-e2e".into(),
        node_subnet,
        alerting: vigil::cluster::Alerting {
            webhook: Some(format!("http://{host}:{ALERTER_RECEIVER_PORT}/alerter")),
            alertmanager_webhook: Some(format!("http://{host}:{ALERTMANAGER_RECEIVER_PORT}/alertmanager")),
        },
        ..ClusterSpec::default()
    }
}

/// A kubeconfig file of the test's own, never the user's.
pub fn test_kubeconfig() -> PathBuf {
    std::env::temp_dir().join("vigil-e2e-kubeconfig")
}

pub fn cache_dir() -> PathBuf {
    vigil::build::default_cache_dir()
}

/// The images the build produces, for the test cluster's repository.
pub fn images() -> ImageNames {
    ImageNames { repository: test_spec().image_repository }
}

/// `vigil up` for `spec`, as the CLI runs it (cluster and every add-on).
pub async fn up(spec: &ClusterSpec) -> Result<Report> {
    let options = Options { cache: cache_dir(), kubeconfig: test_kubeconfig(), scope: Scope::Everything };
    vigil::app::up(spec, &options, &Progress::default()).await
}

pub async fn down(spec: &ClusterSpec) -> Result<()> {
    vigil::app::down(&spec.name, &test_kubeconfig(), &Progress::default()).await
}

/// The provider `vigil` chooses on this machine.
pub async fn provider() -> Result<Arc<dyn NodeProvider>> {
    Ok(vigil::provider::connect().await?)
}

/// A client through the context `up` merged into the kubeconfig.
pub async fn client(spec: &ClusterSpec) -> Result<(Client, Config)> {
    let kubeconfig = Kubeconfig::read_from(test_kubeconfig()).context("reading the test kubeconfig")?;
    let options = KubeConfigOptions { context: Some(spec.kube_context()), ..Default::default() };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    Ok((Client::try_from(config.clone())?, config))
}

/// The cluster the end-to-end checks share: created once by `vigil up`
/// (after a `vigil down`, so every run starts from nothing).
pub struct Cluster {
    pub spec: ClusterSpec,
    /// What the first `up` reported: its addresses and its join token.
    pub report: Report,
    pub client: Client,
    /// The admin client's configuration (for clients with other credentials).
    pub config: Config,
    pub provider: Arc<dyn NodeProvider>,
}

impl Cluster {
    pub async fn create() -> Result<Self> {
        let spec = test_spec();
        down(&spec).await.context("vigil down before the tests")?;
        let report = up(&spec).await.context("vigil up")?;
        let (client, config) = client(&spec).await?;
        Ok(Cluster { provider: provider().await?, spec, report, client, config })
    }

    /// The URL `up` reported for the add-on address `key`.
    pub fn url(&self, key: &str) -> Result<&str> {
        self.report
            .address(key)
            .with_context(|| format!("up reported no {key} address: {:?}", self.report.addresses))
    }

    pub fn web_url(&self) -> Result<&str> {
        self.url(vigil::addons::web::NAME)
    }

    pub fn prometheus_url(&self) -> Result<&str> {
        self.url(vigil::addons::prometheus::NAME)
    }

    /// The machines, as the provider planned them.
    pub fn nodes(&self) -> Vec<NodeSpec> {
        self.provider.plan(&self.spec)
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: std::time::Instant,
    pub headers: Vec<(String, String)>,
    /// The body as sent (signatures cover these bytes).
    pub raw: Vec<u8>,
    pub body: serde_json::Value,
}

/// An HTTP receiver on the host (all addresses, so the cluster reaches it
/// through the node network's gateway) that keeps what it gets and answers
/// with the status codes it is told, in turn (then 200).
#[derive(Clone)]
pub struct Receiver {
    pub seen: Arc<std::sync::Mutex<Vec<Received>>>,
    pub script: Arc<std::sync::Mutex<Vec<u16>>>,
}

impl Receiver {
    pub async fn start(port: u16) -> Result<Self> {
        use axum::{extract::State, http::HeaderMap, routing::post};
        let receiver = Receiver { seen: Arc::default(), script: Arc::default() };
        async fn take(
            State(r): State<Receiver>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::http::StatusCode {
            let headers = headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let raw = body.to_vec();
            let body = serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
            r.seen.lock().expect("not poisoned").push(Received {
                at: std::time::Instant::now(),
                headers,
                raw,
                body,
            });
            let mut script = r.script.lock().expect("not poisoned");
            let code = if script.is_empty() { 200 } else { script.remove(0) };
            axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK)
        }
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .with_context(|| format!("listening on port {port} for the cluster's notices"))?;
        let app = axum::Router::new().fallback(post(take)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(receiver)
    }

    pub fn received(&self) -> Vec<Received> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Creates a pod and waits until it has finished; returns (phase, logs).
pub async fn run_to_completion(
    client: &Client,
    namespace: &str,
    pod: Pod,
    limit: Duration,
) -> Result<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let name = pod.metadata.name.clone().context("pod needs a name")?;
    let _ = pods.delete(&name, &DeleteParams::default()).await;
    until_some(format!("old pod {name} gone"), Duration::from_secs(60), || async {
        Ok::<_, kube::Error>(pods.get_opt(&name).await?.is_none().then_some(()))
    })
    .await?;
    pods.create(&PostParams::default(), &pod).await?;
    let phase = until_some(format!("pod {name} finished"), limit, || async {
        let phase = pods.get(&name).await?.status.and_then(|s| s.phase).unwrap_or_default();
        Ok::<_, kube::Error>(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
    })
    .await?;
    let logs = pods.logs(&name, &LogParams::default()).await?;
    Ok((phase, logs))
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`); 0 when the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The middle value (the upper one of an even count), for benchmark rounds.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
