//! The fault hooks later issues build on: `isolate` cuts a node off the
//! cluster network and `reconnect` puts it back; `kill` and `start` take a
//! node down and bring its kubelet back.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::{api::core::v1::Node as KubeNode, jiff::Timestamp};
use kube::Api;
use vigil::{
    cluster::Role,
    kubeadm::API_SERVER_PORT,
    poll::until_some,
    provider::{Fault, Power, fault},
};
use vigil_e2e::Cluster;

/// Whether `from` reaches the API server's health endpoint.
async fn reaches_api(c: &Cluster, from: &str) -> Result<bool> {
    let nodes = c.nodes();
    let cp = nodes.iter().find(|n| n.role == Role::ControlPlane).context("no control plane planned")?;
    let url = format!("https://{}:{API_SERVER_PORT}/healthz", cp.ip);
    let answer = c.provider.node(from).run(&["curl", "-sk", "--max-time", "2", &url], None).await;
    Ok(answer.is_ok_and(|o| o.stdout == "ok"))
}

pub async fn isolate_and_reconnect(c: &Cluster) -> Result<()> {
    let (spec, provider) = (&c.spec, c.provider.as_ref());
    let (victim, witness) = (spec.worker_name(1), spec.worker_name(0));
    ensure!(reaches_api(c, &victim).await?, "{victim} cannot reach the API server before the test");
    fault(provider, spec, &victim, Fault::Isolate).await?;
    let cut_off = !reaches_api(c, &victim).await?;
    let others_fine = reaches_api(c, &witness).await?;
    fault(provider, spec, &victim, Fault::Reconnect).await?;
    ensure!(cut_off, "{victim} still reached the API server while isolated");
    ensure!(others_fine, "{witness} lost the API server while only {victim} was isolated");
    ensure!(reaches_api(c, &victim).await?, "{victim} did not get its network back");
    Ok(())
}

fn heartbeat(node: &KubeNode) -> Option<Timestamp> {
    let ready = node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?.clone();
    (ready.status == "True").then_some(ready.last_heartbeat_time?.0)
}

pub async fn kill_and_start(c: &Cluster) -> Result<()> {
    let (spec, provider) = (&c.spec, c.provider.as_ref());
    let victim = spec.worker_name(1);
    fault(provider, spec, &victim, Fault::Power(Power::Kill)).await?;
    let state =
        provider.list_nodes(&spec.name).await?.into_iter().find(|n| n.name == victim).map(|n| n.state);
    ensure!(state == Some(vigil::provider::MachineState::Stopped), "{victim} is {state:?} after kill");
    let killed_at = Timestamp::now();
    dead_node_export(c, &victim).await?;
    fault(provider, spec, &victim, Fault::Power(Power::Start)).await?;
    // Its kubelet is back when it posts a Ready heartbeat newer than the kill.
    let nodes: Api<KubeNode> = Api::all(c.client.clone());
    until_some(format!("{victim}'s kubelet reporting Ready again"), Duration::from_secs(120), || async {
        Ok::<_, kube::Error>(heartbeat(&nodes.get(&victim).await?).filter(|t| *t > killed_at))
    })
    .await?;
    Ok(())
}

/// `vigil export logs` with a dead node: what the others hold is collected,
/// and the index says what could not be, naming the node.
async fn dead_node_export(c: &Cluster, dead: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let export = vigil::app::export_logs(
        c.provider.as_ref(),
        &c.spec,
        dir.path(),
        &vigil::progress::Progress::default(),
    )
    .await?;
    let index = std::fs::read_to_string(export.folder.join("index.md"))?;
    for node in c.nodes().iter().filter(|n| n.name != dead) {
        ensure!(
            export.folder.join(format!("nodes/{}/kubelet.log", node.name)).exists(),
            "no kubelet journal of the live node {}",
            node.name
        );
    }
    ensure!(
        export.folder.join(format!("nodes/{dead}/inspect.json")).exists(),
        "no inspect output of the dead node {dead}"
    );
    ensure!(
        index.contains("## Not collected") && index.contains(&format!("node {dead} is stopped")),
        "the index does not say what the dead node {dead} kept from the export:\n{index}"
    );
    Ok(())
}
