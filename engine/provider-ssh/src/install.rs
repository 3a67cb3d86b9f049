//! vigil's build on a host: the host bundle (the node image's binaries,
//! configuration and units, and Debian's runc and CNI plugins; see
//! `vigil_build::host`) unpacked at the root over the SSH connection, its
//! list of files kept on the host so that `uninstall` (and `down
//! --inventory`) removes exactly what was added, then the units loaded and
//! containerd started. The hosts need no package repository.

use std::time::Duration;

use vigil_provider::{CommandError, Node};

/// Where a host keeps the list of files vigil installed, one per line.
pub const INSTALLED_LIST: &str = "/var/lib/vigil/installed-files";

/// The units vigil installs: containerd runs at once; the kubelet is
/// enabled and waits (restarting) for the configuration `kubeadm` writes,
/// as on a host set up by kubeadm's own instructions.
const UNITS: [&str; 2] = ["containerd.service", "kubelet.service"];

/// How long containerd may take to answer after it is started.
const CONTAINERD_START: Duration = Duration::from_secs(30);

/// The files and links of `bundle` (a tar rooted at `/`), as absolute
/// paths; directories are left out (a directory may hold the host's own
/// files too).
pub fn files_of(bundle: &[u8]) -> std::io::Result<Vec<String>> {
    let mut archive = tar::Archive::new(bundle);
    let mut files = vec![];
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Directory {
            files.push(format!("/{}", entry.path()?.display()));
        }
    }
    Ok(files)
}

/// Unpacks `bundle` on `node`, records its files, starts containerd.
pub async fn install(node: &dyn Node, bundle: &[u8]) -> Result<(), CommandError> {
    let files = files_of(bundle).map_err(|e| CommandError {
        node: node.name().into(),
        command: "reading the host bundle".into(),
        exit_code: None,
        output: String::new(),
        cause: Some(e.to_string()),
    })?;
    // The list first: an install cut short is still undone completely.
    node.copy_in(INSTALLED_LIST, (files.join("\n") + "\n").as_bytes(), 0o644).await?;
    node.run(&["tar", "-x", "-p", "-f", "-", "-C", "/"], Some(bundle.to_vec())).await?;
    node.run(&["systemctl", "daemon-reload"], None).await?;
    node.run(&["systemctl", "enable", "--now", "--quiet", UNITS[0]], None).await?;
    node.run(&["systemctl", "enable", "--quiet", UNITS[1]], None).await?;
    let deadline = tokio::time::Instant::now() + CONTAINERD_START;
    loop {
        match node.run(&["ctr", "version"], None).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Stops and removes what [`install`] added, by its list; says what it removed.
pub async fn uninstall(node: &dyn Node) -> Result<Vec<String>, CommandError> {
    let Ok(list) = vigil_provider::nodeutils::read_file(node, INSTALLED_LIST).await else {
        return Ok(vec![]);
    };
    let files: Vec<String> = list.lines().filter(|l| l.starts_with('/')).map(str::to_owned).collect();
    // Stopping what is not running, or disabling what is not enabled, is no failure.
    let _ = node.run(&["systemctl", "disable", "--now", "--quiet", UNITS[0], UNITS[1]], None).await;
    let mut remove = vec!["rm", "-f", "--"];
    remove.extend(files.iter().map(String::as_str));
    remove.push(INSTALLED_LIST);
    node.run(&remove, None).await?;
    node.run(&["systemctl", "daemon-reload"], None).await?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_holds_files_and_links_not_directories() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        builder.append_data(&mut dir, "usr/lib/cni/", std::io::empty()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_size(3);
        builder.append_data(&mut file, "usr/lib/cni/bridge", &b"elf"[..]).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder.append_link(&mut link, "usr/bin/kubelet", "/usr/local/bin/kube").unwrap();
        let bundle = builder.into_inner().unwrap();
        assert_eq!(files_of(&bundle).unwrap(), ["/usr/lib/cni/bridge", "/usr/bin/kubelet"]);
    }
}
