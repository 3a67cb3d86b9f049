//! The cluster's admin kubeconfig, renamed to the cluster's name and merged
//! into the user's kubeconfig the way kind does it (and removed again by `down`).

use std::path::{Path, PathBuf};

use kube::config::{Kubeconfig, KubeconfigError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin.conf kubeadm wrote did not parse.
    #[error("the control plane's admin kubeconfig is not valid: {0}")]
    Parse(#[source] KubeconfigError),
    /// The user's kubeconfig exists but is not valid YAML/kubeconfig.
    #[error("{} is not a valid kubeconfig; fix or move it, then run `vigil up` again", path.display())]
    UserFile {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The renamed kubeconfig has no entry for the cluster.
    #[error("kubeadm's admin kubeconfig has no cluster, user or context entry")]
    Incomplete,
}

/// kubeadm's admin.conf with cluster, user and context all named `name`.
pub fn renamed(admin_conf: &str, name: &str) -> Result<Kubeconfig, Error> {
    let mut config = Kubeconfig::from_yaml(admin_conf).map_err(Error::Parse)?;
    let (Some(cluster), Some(user), Some(context)) =
        (config.clusters.first_mut(), config.auth_infos.first_mut(), config.contexts.first_mut())
    else {
        return Err(Error::Incomplete);
    };
    cluster.name = name.into();
    user.name = name.into();
    context.name = name.into();
    if let Some(ctx) = context.context.as_mut() {
        ctx.cluster = name.into();
        ctx.user = Some(name.into());
    }
    config.clusters.truncate(1);
    config.auth_infos.truncate(1);
    config.contexts.truncate(1);
    config.current_context = Some(name.into());
    Ok(config)
}

pub fn to_yaml(config: &Kubeconfig) -> String {
    serde_yaml::to_string(config).expect("kubeconfig serializes")
}

/// kubectl's default file when KUBECONFIG is unset.
pub fn default_path() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".kube/config")
}

fn read_user(path: &Path) -> Result<Kubeconfig, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(Kubeconfig::default()),
        Ok(text) => {
            Kubeconfig::from_yaml(&text).map_err(|source| Error::UserFile { path: path.into(), source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Kubeconfig::default()),
        Err(e) => Err(Error::Write { path: path.into(), source: e }),
    }
}

/// Replaces the file atomically with one of mode 0600 (it holds the admin's
/// key): written first to a new file of random name in the same folder
/// (created exclusively, 0600 from the start, so no one can plant a link
/// there or read it half-written), then renamed over `path`.
fn write_user(path: &Path, config: &Kubeconfig) -> Result<(), Error> {
    use std::{io::Write, os::unix::fs::DirBuilderExt};
    let err = |source| Error::Write { path: path.into(), source };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    let mut tmp = tempfile::Builder::new().prefix(".vigil-kubeconfig-").tempfile_in(dir).map_err(err)?;
    tmp.write_all(to_yaml(config).as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Replaces any entries named `name` with the cluster's and makes it the
/// current context, leaving every other entry as it was.
pub fn merge_into(user: &mut Kubeconfig, cluster: Kubeconfig, name: &str) {
    remove_from(user, name);
    user.clusters.extend(cluster.clusters);
    user.auth_infos.extend(cluster.auth_infos);
    user.contexts.extend(cluster.contexts);
    user.current_context = Some(name.into());
    user.api_version.get_or_insert_with(|| "v1".into());
    user.kind.get_or_insert_with(|| "Config".into());
}

/// Removes the entries named `name`; unsets current-context if it was `name`.
pub fn remove_from(user: &mut Kubeconfig, name: &str) -> bool {
    let before = user.clusters.len() + user.auth_infos.len() + user.contexts.len();
    user.clusters.retain(|c| c.name != name);
    user.auth_infos.retain(|a| a.name != name);
    user.contexts.retain(|c| c.name != name);
    if user.current_context.as_deref() == Some(name) {
        user.current_context = None;
    }
    before != user.clusters.len() + user.auth_infos.len() + user.contexts.len()
}

pub fn merge_into_file(path: &Path, cluster: Kubeconfig, name: &str) -> Result<(), Error> {
    let mut user = read_user(path)?;
    merge_into(&mut user, cluster, name);
    write_user(path, &user)
}

/// Returns whether the file held entries of this cluster.
pub fn remove_from_file(path: &Path, name: &str) -> Result<bool, Error> {
    let mut user = read_user(path)?;
    if !remove_from(&mut user, name) {
        return Ok(false);
    }
    write_user(path, &user)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN_CONF: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://172.29.0.2:6443
  name: vigil
contexts:
- context:
    cluster: vigil
    user: kubernetes-admin
  name: kubernetes-admin@vigil
current-context: kubernetes-admin@vigil
kind: Config
users:
- name: kubernetes-admin
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
";

    const USER_CONF: &str = "apiVersion: v1
kind: Config
clusters:
- cluster: {server: 'https://other:6443'}
  name: other
- cluster: {server: 'https://stale:6443'}
  name: vigil
contexts:
- context: {cluster: other, user: other}
  name: other
users:
- name: other
  user: {token: abc}
current-context: other
";

    #[test]
    fn renames_every_entry_to_the_cluster_name() {
        let config = renamed(ADMIN_CONF, "vigil").unwrap();
        assert_eq!(config.clusters[0].name, "vigil");
        assert_eq!(config.auth_infos[0].name, "vigil");
        let ctx = &config.contexts[0];
        assert_eq!(ctx.name, "vigil");
        assert_eq!(ctx.context.as_ref().unwrap().user.as_deref(), Some("vigil"));
        assert_eq!(config.current_context.as_deref(), Some("vigil"));
        // The credentials survive the round trip.
        let yaml = to_yaml(&config);
        assert!(yaml.contains("client-key-data: S0VZ"), "{yaml}");
    }

    #[test]
    fn merge_replaces_only_our_entries_and_remove_undoes_it() {
        let mut user = Kubeconfig::from_yaml(USER_CONF).unwrap();
        merge_into(&mut user, renamed(ADMIN_CONF, "vigil").unwrap(), "vigil");
        let names = |u: &Kubeconfig| u.clusters.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&user), ["other", "vigil"]);
        assert_eq!(
            user.clusters[1].cluster.as_ref().unwrap().server.as_deref(),
            Some("https://172.29.0.2:6443")
        );
        assert_eq!(user.current_context.as_deref(), Some("vigil"));
        assert!(remove_from(&mut user, "vigil"));
        assert_eq!(names(&user), ["other"]);
        assert_eq!(user.contexts.len(), 1);
        assert_eq!(user.current_context, None);
        assert!(!remove_from(&mut user, "vigil"));
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_merged_file_is_0600_and_no_temporary_file_is_left() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(".kube/config");
        merge_into_file(&path, renamed(ADMIN_CONF, "vigil").unwrap(), "vigil").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&home.path().join(".kube")), 0o700, "a folder vigil makes is the user's alone");
        // An existing, wider file is replaced by a 0600 one.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        assert!(remove_from_file(&path, "vigil").unwrap());
        assert_eq!(mode(&path), 0o600);
        let names: Vec<String> = std::fs::read_dir(home.path().join(".kube"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["config"]);
    }

    #[test]
    fn a_link_planted_at_the_old_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        // The name the temporary file used to have, which anyone could predict.
        std::os::unix::fs::symlink(&victim, dir.path().join("config.vigil-tmp")).unwrap();
        merge_into_file(&path, renamed(ADMIN_CONF, "vigil").unwrap(), "vigil").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(std::fs::read_to_string(&path).unwrap().contains("client-key-data: S0VZ"));
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn incomplete_admin_conf_is_refused() {
        assert!(matches!(renamed("apiVersion: v1\nkind: Config\n", "vigil"), Err(Error::Incomplete)));
    }
}
