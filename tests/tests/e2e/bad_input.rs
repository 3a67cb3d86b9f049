//! Bad input is refused before any long work, with one error that names the
//! cause and the fix, and nothing is created. Real Docker, real networks.

use anyhow::{Result, ensure};
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use vigil::cluster::ClusterSpec;
use vigil_e2e::up;

async fn foreign_network(docker: &bollard::Docker, name: &str, subnet: &str) -> Result<()> {
    let _ = docker.remove_network(name).await;
    docker
        .create_network(NetworkCreateRequest {
            name: name.into(),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig { subnet: Some(subnet.into()), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    Ok(())
}

pub async fn a_clashing_subnet_is_refused_before_anything_is_built() -> Result<()> {
    let docker = vigil::docker::connect().await?;
    // A subnet no other check's cluster uses: a cluster left by an interrupted
    // run must not make this check's own setup clash.
    foreign_network(&docker, "vigil-e2e-someone-else", "172.29.254.0/24").await?;
    let spec = ClusterSpec {
        name: "vigil-e2e-clash".into(),
        node_subnet: "172.29.254.0/24".parse()?,
        ..ClusterSpec::default()
    };
    let started = std::time::Instant::now();
    let outcome = up(&spec).await;
    docker.remove_network("vigil-e2e-someone-else").await?;

    let message = format!("{:#}", outcome.expect_err("up must refuse an overlapping subnet"));
    ensure!(
        message.contains("node network 172.29.254.0/24 overlaps Docker network vigil-e2e-someone-else"),
        "{message}"
    );
    ensure!(message.contains("--subnet"), "the error must name the fix: {message}");
    ensure!(
        started.elapsed().as_secs() < 30,
        "refused only after {:?}: preflight must come first",
        started.elapsed()
    );
    ensure!(docker.inspect_network("vigil-e2e-clash", None).await.is_err(), "a network was created anyway");
    ensure!(
        docker.inspect_container("vigil-e2e-clash-control-plane", None).await.is_err(),
        "a node was created anyway"
    );
    Ok(())
}

pub async fn a_network_name_that_is_not_ours_is_refused() -> Result<()> {
    let docker = vigil::docker::connect().await?;
    foreign_network(&docker, "vigil-e2e-taken", "172.29.252.0/24").await?;
    let spec = ClusterSpec {
        name: "vigil-e2e-taken".into(),
        node_subnet: "172.29.253.0/24".parse()?,
        ..ClusterSpec::default()
    };
    let outcome = up(&spec).await;
    docker.remove_network("vigil-e2e-taken").await?;
    let message = format!("{:#}", outcome.expect_err("up must refuse a foreign network"));
    ensure!(
        message.contains("Docker network vigil-e2e-taken exists but was not created by vigil"),
        "{message}"
    );
    ensure!(
        docker.inspect_container("vigil-e2e-taken-control-plane", None).await.is_err(),
        "a node was created anyway"
    );
    Ok(())
}
