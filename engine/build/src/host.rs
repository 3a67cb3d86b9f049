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
    let docker_err = |what: String| move |source| Error::Docker { what, source };
    // A container is never started: it only lets Docker read the image's files.
    let body = ContainerCreateBody {
        image: Some(node_image.into()),
        entrypoint: Some(vec!["/bin/true".into()]),
        ..Default::default()
    };
    let created = docker
        .create_container(None::<bollard::query_parameters::CreateContainerOptions>, body)
        .await
        .map_err(docker_err(format!("create a container of {node_image} to read its files")))?;
    let result = collect(docker, &created.id).await;
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(&created.id, Some(remove)).await;
    result
}

async fn collect(docker: &Docker, container: &str) -> Result<Vec<u8>> {
    let mut out = tar::Builder::new(Vec::new());
    for path in node::host_paths() {
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let archive: Vec<u8> = docker
            .download_from_container(container, Some(options))
            .map_ok(|chunk| chunk.to_vec())
            .try_concat()
            .await
            .map_err(|source| Error::Docker { what: format!("read {path} from the node image"), source })?;
        reroot(&archive, path, &mut out).map_err(|e| Error::io(std::path::Path::new(path), e))?;
    }
    out.into_inner().map_err(|e| Error::io(std::path::Path::new("host bundle"), e))
}

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
