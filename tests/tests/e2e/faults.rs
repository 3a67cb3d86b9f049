//! The fault hooks later issues build on: `isolate` cuts a node off the
//! cluster network and `reconnect` puts it back; `kill` and `start` take a
//! node down and bring its kubelet back.

use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::{api::core::v1::Node as KubeNode, jiff::Timestamp};
use kube::{Api, Client};
use vigil::{
    cluster::ClusterSpec,
    provider::{Fault, Node, NodeProvider, docker::DockerProvider},
};
use vigil_e2e::wait_for;

/// Whether `from` reaches the API server's health endpoint.
async fn reaches_api(provider: &DockerProvider, from: &str, spec: &ClusterSpec) -> bool {
    let url = format!("https://{}:6443/healthz", spec.control_plane().ip);
    provider
        .node(from)
        .run(&["curl", "-sk", "--max-time", "2", &url], None)
        .await
        .is_ok_and(|o| o.stdout == "ok")
}

pub async fn isolate_and_reconnect(spec: &ClusterSpec) -> Result<()> {
    let provider = DockerProvider::new(vigil::docker::connect().await?);
    let (victim, witness) = (spec.worker_name(1), spec.worker_name(0));
    ensure!(
        reaches_api(&provider, &victim, spec).await,
        "{victim} cannot reach the API server before the test"
    );
    provider.fault(spec, &victim, Fault::Isolate).await?;
    let cut_off = !reaches_api(&provider, &victim, spec).await;
    let others_fine = reaches_api(&provider, &witness, spec).await;
    provider.fault(spec, &victim, Fault::Reconnect).await?;
    ensure!(cut_off, "{victim} still reached the API server while isolated");
    ensure!(others_fine, "{witness} lost the API server while only {victim} was isolated");
    ensure!(reaches_api(&provider, &victim, spec).await, "{victim} did not get its network back");
    Ok(())
}

fn heartbeat(node: &KubeNode) -> Option<Timestamp> {
    let ready = node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?.clone();
    (ready.status == "True").then_some(ready.last_heartbeat_time?.0)
}

pub async fn kill_and_start(client: &Client, spec: &ClusterSpec) -> Result<()> {
    let provider = DockerProvider::new(vigil::docker::connect().await?);
    let victim = spec.worker_name(1);
    provider.fault(spec, &victim, Fault::Kill).await?;
    let state =
        provider.list_nodes(&spec.name).await?.into_iter().find(|n| n.name == victim).map(|n| n.state);
    ensure!(state.as_deref() == Some("exited"), "{victim} is {state:?} after kill");
    let killed_at = Timestamp::now();
    provider.fault(spec, &victim, Fault::Start).await?;
    // Its kubelet is back when it posts a Ready heartbeat newer than the kill.
    let nodes: Api<KubeNode> = Api::all(client.clone());
    wait_for(&format!("{victim}'s kubelet reporting Ready again"), Duration::from_secs(120), || async {
        Ok(heartbeat(&nodes.get(&victim).await?).filter(|t| *t > killed_at))
    })
    .await?;
    Ok(())
}
