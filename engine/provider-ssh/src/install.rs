//! vigil's build on a host: the host bundle (the node image's binaries,
//! configuration and units, and Debian's runc and CNI plugins; see
//! `vigil_build::host`) unpacked at the root over the SSH connection, its
//! list of files kept on the host so that `uninstall` (and `down
//! --inventory`) removes exactly what was added, then the units loaded and
//! containerd started. The hosts need no package repository. A file the
//! host already had at one of the bundle's paths (Debian's own runc or CNI
//! plugins, owned by its package manager) is left as it is and never
//! removed.

use std::time::Duration;

use vigil_provider::{CommandError, Node};

/// Where a host keeps the list of files vigil installed, one per line.
pub const INSTALLED_LIST: &str = "/var/lib/vigil/installed-files";
/// The SHA-256 of the bundle installed, so that a second `up` copies it
/// only when it changed (and only while the list above is there too).
pub const BUNDLE_DIGEST: &str = "/var/lib/vigil/bundle-digest";
/// The host's own files at the bundle's paths, which vigil leaves alone
/// (relative to `/`, as tar's `--exclude-from` reads them).
pub const KEPT_LIST: &str = "/var/lib/vigil/kept-host-files";

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

/// What an install did with the bundle's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// vigil's files on the host now (its list), new or replaced.
    pub files: Vec<String>,
    /// The host's own files at those paths (a runc or CNI plugins its
    /// package manager installed): kept as they are, and never removed.
    pub kept: Vec<String>,
}

/// Splits the bundle's `files` between vigil's and the host's own: a file
/// already there counts as vigil's only when vigil's list (`previous`)
/// names it.
pub fn split(files: &[String], existing: &[String], previous: &[String]) -> Installed {
    let host_owned = |f: &String| existing.contains(f) && !previous.contains(f);
    Installed {
        files: files.iter().filter(|f| !host_owned(f)).cloned().collect(),
        kept: files.iter().filter(|f| host_owned(f)).cloned().collect(),
    }
}

/// Lists which of the paths given as arguments exist (files or links).
const EXISTING_SCRIPT: &str = r#"for f in "$@"; do if [ -e "$f" ] || [ -L "$f" ]; then echo "$f"; fi; done"#;

/// Unpacks `bundle` on `node` (leaving the host's own files at its paths
/// alone), records vigil's files, starts containerd.
pub async fn install(node: &dyn Node, bundle: &[u8]) -> Result<Installed, CommandError> {
    let files = files_of(bundle).map_err(|e| CommandError {
        node: node.name().into(),
        command: "reading the host bundle".into(),
        exit_code: None,
        output: String::new(),
        cause: Some(e.to_string()),
    })?;
    let previous = listed(node).await?;
    let mut check = vec!["sh", "-c", EXISTING_SCRIPT, "sh"];
    check.extend(files.iter().map(String::as_str));
    let existing: Vec<String> = node.run(&check, None).await?.stdout.lines().map(str::to_owned).collect();
    let installed = split(&files, &existing, &previous);
    // The list first: an install cut short is still undone completely.
    node.copy_in(INSTALLED_LIST, (installed.files.join("\n") + "\n").as_bytes(), 0o644).await?;
    let excluded: String =
        installed.kept.iter().map(|f| format!("{}\n", f.trim_start_matches('/'))).collect();
    node.copy_in(KEPT_LIST, excluded.as_bytes(), 0o644).await?;
    node.run(&["tar", "-x", "-p", "-f", "-", "-C", "/", "--exclude-from", KEPT_LIST], Some(bundle.to_vec()))
        .await?;
    node.run(&["systemctl", "daemon-reload"], None).await?;
    node.run(&["systemctl", "enable", "--now", "--quiet", UNITS[0]], None).await?;
    node.run(&["systemctl", "enable", "--quiet", UNITS[1]], None).await?;
    wait_for_containerd(node).await?;
    Ok(installed)
}

/// Waits until the containerd just started answers.
pub async fn wait_for_containerd(node: &dyn Node) -> Result<(), CommandError> {
    let deadline = tokio::time::Instant::now() + CONTAINERD_START;
    loop {
        match node.run(&["ctr", "version"], None).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The files vigil's list on the host names: none when there is no list,
/// an error when the host cannot be asked (counting vigil's own files as
/// the host's would keep them there for ever).
async fn listed(node: &dyn Node) -> Result<Vec<String>, CommandError> {
    let script = format!("if [ -e {INSTALLED_LIST} ]; then cat {INSTALLED_LIST}; fi");
    let list = node.run(&["sh", "-c", &script], None).await?.stdout;
    Ok(list.lines().filter(|l| l.starts_with('/')).map(str::to_owned).collect())
}

/// Stops and removes what [`install`] added, by its list; says what it removed.
pub async fn uninstall(node: &dyn Node) -> Result<Vec<String>, CommandError> {
    let files = listed(node).await?;
    if files.is_empty() {
        return Ok(files);
    }
    // Stopping what is not running, or disabling what is not enabled, is no failure.
    let _ = node.run(&["systemctl", "disable", "--now", "--quiet", UNITS[0], UNITS[1]], None).await;
    let mut remove = vec!["rm", "-f", "--"];
    remove.extend(files.iter().map(String::as_str));
    remove.extend([INSTALLED_LIST, KEPT_LIST, BUNDLE_DIGEST]);
    node.run(&remove, None).await?;
    node.run(&["systemctl", "daemon-reload"], None).await?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_own_files_are_kept_and_vigils_replaced() {
        let files: Vec<String> =
            ["/usr/sbin/runc", "/usr/local/bin/kube", "/usr/lib/cni/bridge"].map(String::from).into();
        // A first install on a host whose package manager put runc there.
        let first = split(&files, &["/usr/sbin/runc".to_string()], &[]);
        assert_eq!(first.kept, ["/usr/sbin/runc"]);
        assert_eq!(first.files, ["/usr/local/bin/kube", "/usr/lib/cni/bridge"]);
        // Again: vigil's own files are there too, and are vigil's to replace.
        let again =
            split(&files, &["/usr/sbin/runc".to_string(), "/usr/local/bin/kube".to_string()], &first.files);
        assert_eq!(again, first);
    }

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
