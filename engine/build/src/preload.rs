//! containerd's state with every component image imported and unpacked,
//! made once at build time: a throwaway container from the node stage image
//! runs containerd with its root on a named volume, imports the `docker save`
//! archive, and stops it cleanly. The volume, labelled with the state's
//! content key, is what every new node's containerd starts from: the Docker
//! provider hard-links its unpacked layers into the node's /var, so a node is
//! ready to run its pods without importing or copying anything. Layer blobs
//! are discarded once unpacked (as kind's containerd does): nothing reads
//! them again.

use std::{collections::HashMap, path::Path};

use bollard::{
    Docker,
    models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest},
    query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder},
};

use super::{Error, Result, image::KEY_LABEL};
use vigil_provider_docker::nested_runtime_host_config;

/// Runs in the preloader: containerd in the background, the import, a clean
/// shutdown (so the metadata database is consistent). Part of the state's
/// content key.
pub const SCRIPT: &str = r#"set -eu
containerd --log-level warn &
pid=$!
for _ in $(seq 1 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
ctr --namespace k8s.io images import --local --digests --discard-unpacked-layers /vigil/images.tar
# A synchronous removal runs the garbage collector now, which drops the discarded layers.
ctr --namespace k8s.io images tag "$(ctr --namespace k8s.io images ls -q | head -1)" vigil.local/preload-gc:now
ctr --namespace k8s.io images rm --sync vigil.local/preload-gc:now
du -sh /var/lib/containerd/io.containerd.content.v1.content /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs
ctr --namespace k8s.io images ls -q
kill "$pid"
wait "$pid" || true
"#;

/// Volumes that hold a preloaded state carry this label (and the key label).
const STATE_LABEL: &str = "io.vigil.role";
const STATE_ROLE: &str = "containerd-state";

fn docker_err(what: &str) -> impl FnOnce(bollard::errors::Error) -> Error {
    let what = what.to_owned();
    move |source| Error::Docker { what, source }
}

/// Whether `volume` exists and holds the state of content key `key`.
pub async fn state_is_current(docker: &Docker, volume: &str, key: &str) -> Result<bool> {
    match docker.inspect_volume(volume).await {
        Ok(v) => Ok(v.labels.get(KEY_LABEL).is_some_and(|k| k == key)),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
        Err(e) => Err(docker_err(&format!("inspect volume {volume}"))(e)),
    }
}

/// Makes the volume `volume` hold containerd's state with every image of
/// `archive` unpacked. A volume of that name is a failed or older attempt
/// and starts over. (A state is complete once the node image that names it
/// is built, which happens only after this returns: an interrupted preload
/// is redone by the next build.)
pub async fn containerd_state(
    docker: &Docker,
    stage_image: &str,
    archive: &Path,
    volume: &str,
    key: &str,
    log: &Path,
) -> Result<()> {
    let _ =
        docker.remove_volume(volume, Some(RemoveVolumeOptionsBuilder::default().force(true).build())).await;
    docker
        .create_volume(VolumeCreateRequest {
            name: Some(volume.into()),
            labels: Some(HashMap::from([
                (KEY_LABEL.into(), key.into()),
                (STATE_LABEL.into(), STATE_ROLE.into()),
            ])),
            ..Default::default()
        })
        .await
        .map_err(docker_err(&format!("create volume {volume}")))?;
    let body = ContainerCreateBody {
        image: Some(stage_image.into()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), SCRIPT.into()]),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/vigil/images.tar:ro", archive.display())]),
            mounts: Some(vec![Mount {
                target: Some("/var/lib/containerd".into()),
                source: Some(volume.into()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            network_mode: Some("none".into()),
            ..nested_runtime_host_config()
        }),
        labels: Some(HashMap::from([(STATE_LABEL.into(), "preload".into())])),
        ..Default::default()
    };
    let (succeeded, output) = vigil_provider_docker::engine::run_to_end(docker, "vigil-preload", body)
        .await
        .map_err(docker_err("run the preloader"))?;
    let _ = tokio::fs::write(log, &output).await;
    if !succeeded {
        let _ = docker.remove_volume(volume, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
        let tail: Vec<&str> = output.lines().rev().take(15).collect();
        return Err(Error::ImageBuild {
            image: format!("{stage_image} (preloading images into containerd)"),
            message: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            log: log.to_owned(),
        });
    }
    Ok(())
}

/// Removes preloaded states other than `current`: they are 1 GiB each, and
/// no node needs them once it has its own links.
pub async fn remove_stale_states(docker: &Docker, current: &str) {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{STATE_LABEL}={STATE_ROLE}")])]);
    let Ok(listed) =
        docker.list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filters).build())).await
    else {
        return;
    };
    for volume in listed.volumes.unwrap_or_default().into_iter().filter(|v| v.name != current) {
        tracing::debug!(volume = %volume.name, "removing an older preloaded state");
        let _ =
            docker.remove_volume(&volume.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
    }
}
