//! What a real host is given of vigil's build: the files of the node image
//! listed by [`node::host_paths`], taken out of the image itself (so a host
//! runs exactly what a node container runs) as one tar rooted at `/`, which
//! the SSH provider unpacks on the host.

use bollard::{
    Docker,
    models::ContainerCreateBody,
    query_parameters::{DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder},
};
use futures::TryStreamExt as _;

use super::{Error, Result, node};

/// The host bundle of `node_image`: every path of [`node::host_paths`],
/// directories with their contents, links as links.
pub async fn bundle(docker: &Docker, node_image: &str) -> Result<Vec<u8>> {
    let image = ImageFiles::open(docker, node_image).await?;
    let result = async {
        let mut out = tar::Builder::new(Vec::new());
        for path in node::host_paths() {
            let archive = image.download(path).await?;
            reroot(&archive, path, &mut out).map_err(|e| Error::io(std::path::Path::new(path), e))?;
        }
        out.into_inner().map_err(|e| Error::io(std::path::Path::new("host bundle"), e))
    }
    .await;
    image.close().await;
    result
}

/// The images a node's containerd holds from the start, as the node image's
/// build information names them.
pub async fn image_refs(docker: &Docker, node_image: &str) -> Result<Vec<String>> {
    /// The part of [`node::BuildInfo`] read back.
    #[derive(serde::Deserialize)]
    struct BuildInfo {
        images: Vec<String>,
    }
    let image = ImageFiles::open(docker, node_image).await?;
    let archive = image.download(node::BUILD_INFO).await;
    image.close().await;
    let path = std::path::Path::new(node::BUILD_INFO);
    let archive = archive?;
    let mut entries = tar::Archive::new(archive.as_slice());
    let mut text = String::new();
    if let Some(entry) = entries.entries().map_err(|e| Error::io(path, e))?.next() {
        std::io::Read::read_to_string(&mut entry.map_err(|e| Error::io(path, e))?, &mut text)
            .map_err(|e| Error::io(path, e))?;
    }
    let info: BuildInfo = serde_json::from_str(&text)
        .map_err(|e| Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    Ok(info.images)
}

/// What [`containerd_state`] runs: the preloaded root as one tar, extended
/// attributes kept (overlayfs marks opaque directories with them).
const STATE_TAR_SCRIPT: &str = "tar -C /state --xattrs --xattrs-include='*' -cf /out/state.tar .";

/// The node image's preloaded containerd state (its root with every node
/// image unpacked, the volume the image's label names) as one tar: what a
/// fresh host's containerd starts from instead of importing the images.
pub async fn containerd_state(docker: &Docker, node_image: &str) -> Result<Vec<u8>> {
    use bollard::models::{HostConfig, Mount, MountType};
    let inspect = docker
        .inspect_image(node_image)
        .await
        .map_err(|source| Error::Docker { what: format!("inspect {node_image}"), source })?;
    let label = vigil_provider_docker::STATE_VOLUME_LABEL;
    let volume =
        inspect.config.and_then(|c| c.labels).and_then(|l| l.get(label).cloned()).ok_or_else(|| {
            Error::io(
                std::path::Path::new(node_image),
                std::io::Error::other(format!("{node_image} has no {label} label: run `vigil build`")),
            )
        })?;
    let out = tempfile::tempdir().map_err(|e| Error::io(&std::env::temp_dir(), e))?;
    let body = ContainerCreateBody {
        image: Some(node_image.into()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), STATE_TAR_SCRIPT.into()]),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/out", out.path().display())]),
            mounts: Some(vec![Mount {
                target: Some("/state".into()),
                source: Some(volume.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(true),
                ..Default::default()
            }]),
            network_mode: Some("none".into()),
            // Reading overlayfs's trusted.* attributes takes CAP_SYS_ADMIN.
            ..vigil_provider_docker::nested_runtime_host_config()
        }),
        ..Default::default()
    };
    let (succeeded, output) = vigil_provider_docker::engine::run_to_end(docker, "vigil-host-state", body)
        .await
        .map_err(|source| Error::Docker { what: format!("tar the containerd state {volume}"), source })?;
    let tar = out.path().join("state.tar");
    if !succeeded {
        return Err(Error::io(&tar, std::io::Error::other(output)));
    }
    tokio::fs::read(&tar).await.map_err(|e| Error::io(&tar, e))
}

/// The files of an image, read through a container that is never started.
struct ImageFiles<'a> {
    docker: &'a Docker,
    image: String,
    container: String,
}

impl<'a> ImageFiles<'a> {
    async fn open(docker: &'a Docker, image: &str) -> Result<Self> {
        let body = ContainerCreateBody {
            image: Some(image.into()),
            entrypoint: Some(vec!["/bin/true".into()]),
            ..Default::default()
        };
        let created = docker
            .create_container(None::<bollard::query_parameters::CreateContainerOptions>, body)
            .await
            .map_err(|source| Error::Docker {
                what: format!("create a container of {image} to read its files"),
                source,
            })?;
        Ok(ImageFiles { docker, image: image.into(), container: created.id })
    }

    /// Docker's tar of `path` (its entries named from its last component).
    async fn download(&self, path: &str) -> Result<Vec<u8>> {
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        self.docker
            .download_from_container(&self.container, Some(options))
            .map_ok(|chunk| chunk.to_vec())
            .try_concat()
            .await
            .map_err(|source| Error::Docker { what: format!("read {path} from {}", self.image), source })
    }

    async fn close(self) {
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self.docker.remove_container(&self.container, Some(remove)).await;
    }
}

/// What the SSH provider copies to hosts, read from the local Docker
/// Engine's node image and images. It connects on first use: commands that
/// copy nothing (`status`, `down`) need no Docker Engine.
#[derive(Default)]
pub struct DockerPayload {
    docker: tokio::sync::OnceCell<Docker>,
}

impl DockerPayload {
    async fn docker(&self) -> std::result::Result<&Docker, BoxError> {
        Ok(self.docker.get_or_try_init(vigil_provider_docker::engine::connect).await?)
    }
}

#[async_trait::async_trait]
impl vigil_provider::HostPayload for DockerPayload {
    async fn bundle(
        &self,
        artefact: &vigil_provider::NodeArtefact,
    ) -> std::result::Result<Vec<u8>, BoxError> {
        Ok(bundle(self.docker().await?, &artefact.image).await?)
    }

    async fn image_refs(
        &self,
        artefact: &vigil_provider::NodeArtefact,
    ) -> std::result::Result<Vec<String>, BoxError> {
        Ok(image_refs(self.docker().await?, &artefact.image).await?)
    }

    async fn images(&self, refs: &[String]) -> std::result::Result<Vec<u8>, BoxError> {
        Ok(super::image::save_to_memory(self.docker().await?, refs).await?)
    }

    async fn containerd_state(
        &self,
        artefact: &vigil_provider::NodeArtefact,
    ) -> std::result::Result<Vec<u8>, BoxError> {
        Ok(containerd_state(self.docker().await?, &artefact.image).await?)
    }
}

type BoxError = vigil_provider::BoxError;

/// Docker's archive of `path` names its entries from the path's last
/// component; the bundle names them from the root.
fn reroot(archive: &[u8], path: &str, out: &mut tar::Builder<Vec<u8>>) -> std::io::Result<()> {
    let parent =
        std::path::Path::new(path.trim_start_matches('/')).parent().unwrap_or(std::path::Path::new(""));
    let mut entries = tar::Archive::new(archive);
    for entry in entries.entries()? {
        let mut entry = entry?;
        let name = parent.join(entry.path()?);
        let mut header = entry.header().clone();
        match header.entry_type() {
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.unwrap_or_default().into_owned();
                out.append_link(&mut header, &name, target)?;
            }
            _ => out.append_data(&mut header, &name, &mut entry)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data, target) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o755);
            header.set_size(data.len() as u64);
            match kind {
                tar::EntryType::Symlink => builder.append_link(&mut header, name, target).unwrap(),
                _ => builder.append_data(&mut header, name, *data).unwrap(),
            }
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn entries_are_named_from_the_root_links_kept() {
        let mut out = tar::Builder::new(Vec::new());
        let cni = archive(&[
            ("cni/", tar::EntryType::Directory, b"", ""),
            ("cni/bridge", tar::EntryType::Regular, b"elf", ""),
        ]);
        reroot(&cni, "/usr/lib/cni", &mut out).unwrap();
        let link = archive(&[("kubelet", tar::EntryType::Symlink, b"", "/usr/local/bin/kube")]);
        reroot(&link, "/usr/bin/kubelet", &mut out).unwrap();
        let bytes = out.into_inner().unwrap();
        let mut read = tar::Archive::new(bytes.as_slice());
        let names: Vec<(String, Option<String>)> = read
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let target = e.link_name().unwrap().map(|t| t.display().to_string());
                (e.path().unwrap().display().to_string(), target)
            })
            .collect();
        assert_eq!(
            names,
            [
                ("usr/lib/cni/".to_string(), None),
                ("usr/lib/cni/bridge".to_string(), None),
                ("usr/bin/kubelet".to_string(), Some("/usr/local/bin/kube".to_string())),
            ]
        );
    }

    #[test]
    fn a_host_gets_the_binaries_config_and_units_but_not_the_entrypoint() {
        let paths = node::host_paths();
        for wanted in [node::paths::KUBE, node::paths::RUNC, node::paths::KUBELET_DROPIN, "/usr/bin/kubeadm"]
        {
            assert!(paths.contains(&wanted), "{wanted}");
        }
        assert!(!paths.iter().any(|p| p.contains("entrypoint")));
    }
}
