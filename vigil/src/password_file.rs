//! vigil's password for Prometheus, Alertmanager and Jaeger, on the host:
//! `vigil up` copies it from the cluster's Secret into a file only the user
//! can read (`$VIGIL_CONFIG_DIR`, else `$XDG_CONFIG_HOME/vigil`, else
//! `~/.config/vigil`, then `<cluster>/api-password`), `vigil status` names
//! the file, and `vigil down` removes it. Written without following a
//! link an attacker could have put in its place.

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use serde::Serialize;

/// Where the password is, and for whom: what `up` and `status` show (never the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostCredentials {
    pub username: String,
    pub password_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing vigil's password file {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something other than a folder of the user's stands where the file goes.
    #[error("{} is not a plain folder (a link?): remove it, then run `vigil up` again", path.display())]
    NotAFolder { path: PathBuf },
}

/// The folder of vigil's per-cluster files.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VIGIL_CONFIG_DIR") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/root/.config"));
    base.join("vigil")
}

/// The password file of `cluster` under `dir`.
pub fn path(dir: &Path, cluster: &str) -> PathBuf {
    dir.join(cluster).join("api-password")
}

/// What `status` shows: the file when it is there.
pub fn existing(dir: &Path, cluster: &str, username: &str) -> Option<HostCredentials> {
    let file = path(dir, cluster);
    std::fs::symlink_metadata(&file)
        .is_ok_and(|m| m.is_file())
        .then(|| HostCredentials { username: username.into(), password_file: file })
}

/// Writes `password` to `file` (mode 0600, its folder 0700); returns
/// whether it changed. A new file is created under a name
/// of its own, exclusively (which never follows a link), then renamed over
/// the old one (which replaces a link rather than writing through it).
pub fn write(file: &Path, password: &str) -> Result<bool, Error> {
    let io = |source| Error::Io { path: file.to_owned(), source };
    let dir = file.parent().ok_or_else(|| io(std::io::Error::other("no parent folder")))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(Error::NotAFolder { path: dir.to_owned() });
    }
    // A folder made earlier, or by hand, with a wider mode is narrowed.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    let content = format!("{password}\n");
    if let Ok(meta) = std::fs::symlink_metadata(file)
        && meta.is_file()
        && meta.permissions().mode() & 0o777 == 0o600
        && std::fs::read_to_string(file).is_ok_and(|old| old == content)
    {
        return Ok(false);
    }
    let suffix: u64 = rand::random();
    let temporary = dir.join(format!(".api-password.{suffix:016x}"));
    let written = (|| {
        let mut out =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        out.write_all(content.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temporary, file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(io)?;
    Ok(true)
}

/// The password in `file` (without its newline).
pub fn read(file: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(file)?.trim_end_matches(['\r', '\n']).to_owned())
}

/// Removes `cluster`'s file, and its folder once empty; whether the file was there.
pub fn remove(dir: &Path, cluster: &str) -> std::io::Result<bool> {
    let file = path(dir, cluster);
    let removed = match std::fs::remove_file(&file) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    if let Some(folder) = file.parent() {
        let _ = std::fs::remove_dir(folder);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_the_users_alone_and_rewritten_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), "vigil");
        assert!(write(&file, "first").unwrap());
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(file.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(read(&file).unwrap(), "first");
        assert!(!write(&file, "first").unwrap(), "unchanged");
        assert!(write(&file, "second").unwrap());
        assert_eq!(read(&file).unwrap(), "second");
        assert_eq!(std::fs::read_dir(file.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
        assert_eq!(existing(dir.path(), "vigil", "vigil").unwrap().password_file, file);
        assert!(remove(dir.path(), "vigil").unwrap());
        assert!(!file.parent().unwrap().exists(), "the empty folder goes too");
        assert!(existing(dir.path(), "vigil", "vigil").is_none());
        assert!(!remove(dir.path(), "vigil").unwrap());
    }

    #[test]
    fn a_link_in_its_place_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        let file = path(dir.path(), "vigil");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &file).unwrap();
        assert!(write(&file, "s3cret").unwrap());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(std::fs::symlink_metadata(&file).unwrap().is_file());
        assert_eq!(read(&file).unwrap(), "s3cret");
        // A link where the cluster's folder goes is refused.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::os::unix::fs::symlink(&other, dir.path().join("linked")).unwrap();
        let err = write(&path(dir.path(), "linked"), "x").unwrap_err().to_string();
        assert!(err.contains("not a plain folder"), "{err}");
    }
}
