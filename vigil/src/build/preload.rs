//! containerd's state with every component image imported and unpacked,
//! made once at build time: a throwaway container from the node stage image
//! runs containerd on a volume (its root must not sit on overlayfs), imports
//! the `docker save` archive, and tars up /var/lib/containerd. The node image
//! carries that tree; Docker copies it into each new node's /var volume,
//! several times faster than every node importing the archive at boot.

use std::{collections::HashMap, path::Path};

use bollard::{
    Docker,
    models::{ContainerCreateBody, HostConfig, Mount, MountType},
    query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder},
};
use futures::StreamExt;

use super::{Error, Result, node::CONTAINERD_STATE};
use crate::provider::docker::nested_runtime_host_config;

/// Runs in the preloader: containerd in the background, the import, a clean
/// shutdown (so the metadata database is consistent), the archive.
const SCRIPT: &str = r#"set -eu
containerd --log-level warn &
pid=$!
for _ in $(seq 1 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
ctr --namespace k8s.io images import --digests /vigil/images.tar
ctr --namespace k8s.io images ls -q
kill "$pid"
wait "$pid" || true
tar --numeric-owner --xattrs -C /var/lib/containerd -cf /out/containerd-state.tar .
"#;

pub async fn containerd_state(
    docker: &Docker,
    stage_image: &str,
    archive: &Path,
    work: &Path,
    log: &Path,
) -> Result<()> {
    let name = "vigil-preload";
    let docker_err = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Docker { what, source }
    };
    let _ = docker
        .remove_container(name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
        .await;
    let body = ContainerCreateBody {
        image: Some(stage_image.into()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), SCRIPT.into()]),
        host_config: Some(HostConfig {
            binds: Some(vec![
                format!("{}:/vigil/images.tar:ro", archive.display()),
                format!("{}:/out", work.display()),
            ]),
            // Anonymous, removed with the container.
            mounts: Some(vec![Mount {
                target: Some("/var/lib/containerd".into()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            network_mode: Some("none".into()),
            ..nested_runtime_host_config()
        }),
        labels: Some(HashMap::from([("io.vigil.role".into(), "preload".into())])),
        ..Default::default()
    };
    docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body)
        .await
        .map_err(docker_err("create the preload container"))?;
    docker.start_container(name, None).await.map_err(docker_err("start the preload container"))?;
    let exit = docker.wait_container(name, None).next().await;
    let mut output = String::new();
    let mut logs = docker.logs(name, Some(LogsOptionsBuilder::default().stdout(true).stderr(true).build()));
    while let Some(Ok(chunk)) = logs.next().await {
        output.push_str(&chunk.to_string());
    }
    let _ = tokio::fs::write(log, &output).await;
    let _ = docker
        .remove_container(name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
        .await;
    let failed = match exit {
        Some(Ok(response)) => response.status_code != 0,
        _ => true,
    };
    if failed || !work.join(CONTAINERD_STATE).exists() {
        let tail: Vec<&str> = output.lines().rev().take(15).collect();
        return Err(Error::ImageBuild {
            image: format!("{stage_image} (preloading images into containerd)"),
            message: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            log: log.to_owned(),
        });
    }
    Ok(())
}
