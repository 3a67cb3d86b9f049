//! Helpers for vigil's end-to-end tests: a cluster created through vigil's
//! own `up`, a client for it through the merged kubeconfig context, and
//! bounded waits. Everything talks to real Docker and a real API server.

use std::{
    future::Future,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    api::{DeleteParams, LogParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use vigil::{cluster::ClusterSpec, progress::Progress};

/// The test cluster: its own name and node network, so it never touches a
/// cluster the user brought up with the defaults.
pub fn test_spec() -> ClusterSpec {
    ClusterSpec {
        name: "vigil-e2e".into(),
        node_subnet: "172.29.250.0/24".parse().expect("valid"),
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

/// `vigil up` for the test cluster, as the CLI runs it (cluster, MetalLB, workload).
pub async fn up(spec: &ClusterSpec) -> Result<(vigil::create::Report, Option<vigil::deploy::Deployed>)> {
    let options = vigil::app::Options { cache: cache_dir(), kubeconfig: test_kubeconfig(), workload: true };
    vigil::app::up(spec, &options, &Progress::default()).await
}

pub async fn down(spec: &ClusterSpec) -> Result<()> {
    vigil::app::down(&spec.name, &test_kubeconfig(), &Progress::default()).await
}

/// A client through the context `up` merged into the kubeconfig.
pub async fn client(spec: &ClusterSpec) -> Result<(Client, Config)> {
    let kubeconfig = Kubeconfig::read_from(test_kubeconfig()).context("reading the test kubeconfig")?;
    let options = KubeConfigOptions { context: Some(spec.kube_context()), ..Default::default() };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    Ok((Client::try_from(config.clone())?, config))
}

/// Polls `check` until it returns Some, or fails after `limit` with the last reason.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "not yet".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("{what}: not within {}s (last: {last})", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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
    wait_for(&format!("old pod {name} gone"), Duration::from_secs(60), || async {
        Ok(pods.get_opt(&name).await?.is_none().then_some(()))
    })
    .await?;
    pods.create(&PostParams::default(), &pod).await?;
    let phase = wait_for(&format!("pod {name} finished"), limit, || async {
        let phase = pods.get(&name).await?.status.and_then(|s| s.phase).unwrap_or_default();
        Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
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
