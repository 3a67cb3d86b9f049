//! Files on the host that can hold secrets (exported logs, the output of
//! `kubeadm` on a node, kubeconfigs): readable by their owner only, created
//! new rather than opened where they stand, and never reached through a
//! symbolic link someone else planted.
//!
//! A [`PrivateDir`] is a folder this process has just made itself (mode
//! 0700) and holds open: everything in it is created relative to that open
//! folder (`openat`), so renaming or replacing the path afterwards cannot
//! redirect a single write.

use std::{
    fs::File,
    io::Write,
    os::fd::OwnedFd,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rustix::fs::{Mode, OFlags};

/// Owner read and write only: files that can hold secrets.
pub const FILE_MODE: u32 = 0o600;
/// Owner only: the folders that hold them.
pub const DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something (a folder, a file, a symbolic link) is already at the path.
    #[error(
        "{} already exists; vigil makes a new folder here and never writes into or through an existing one: remove it, or choose another folder",
        path.display()
    )]
    Exists { path: PathBuf },
    /// The path was replaced by something that is not this user's folder.
    #[error("{} is not a folder of this user's (it was replaced while vigil was writing): {reason}", path.display())]
    Replaced { path: PathBuf, reason: &'static str },
    /// A name that would leave the folder (`..`, `/`, empty).
    #[error("{name:?} is not a plain file name; vigil writes only inside its own folder")]
    BadName { name: String },
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(rustix::io::Errno) -> Error + '_ {
    move |errno| Error::Io { path: path.to_owned(), source: errno.into() }
}

/// A folder this process made, with mode 0700, held open.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    fd: OwnedFd,
}

const DIR_FLAGS: OFlags =
    OFlags::DIRECTORY.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC).union(OFlags::RDONLY);

impl PrivateDir {
    /// Makes `parent/name`, which must not exist (not even as a symbolic
    /// link). `parent` is made (0700) when missing; it is the user's choice,
    /// so a link there is followed.
    pub fn create_new(parent: &Path, name: &str) -> Result<Self, Error> {
        check_name(name)?;
        let path = parent.join(name);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(parent)
            .map_err(|source| Error::Io { path: parent.to_owned(), source })?;
        let parent_fd = rustix::fs::open(parent, DIR_FLAGS, Mode::empty()).map_err(io(parent))?;
        make_dir(&parent_fd, name, &path, true)?;
        let fd = open_own_dir(&parent_fd, name, &path)?;
        Ok(PrivateDir { path, fd })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a new file at `relative` (`a/b/c.log`, folders made 0700 as
    /// needed) with mode 0600. Fails if the file exists.
    pub fn write_new(&self, relative: &str, contents: &[u8]) -> Result<(), Error> {
        let mut parts: Vec<&str> = relative.split('/').collect();
        let file_name = parts.pop().unwrap_or_default();
        for part in parts.iter().chain([&file_name]) {
            check_name(part)?;
        }
        let mut dir: Option<OwnedFd> = None;
        let mut path = self.path.clone();
        for part in parts {
            path.push(part);
            let here = dir.as_ref().unwrap_or(&self.fd);
            make_dir(here, part, &path, false)?;
            dir = Some(open_own_dir(here, part, &path)?);
        }
        path.push(file_name);
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(
            dir.as_ref().unwrap_or(&self.fd),
            file_name,
            flags,
            Mode::from_raw_mode(FILE_MODE),
        )
        .map_err(|errno| match errno {
            rustix::io::Errno::EXIST => Error::Exists { path: path.clone() },
            errno => io(&path)(errno),
        })?;
        // The umask can only take bits away; this makes the mode exact.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(FILE_MODE)).map_err(io(&path))?;
        File::from(fd).write_all(contents).map_err(|source| Error::Io { path, source })
    }
}

/// A single path component that stays inside its folder.
fn check_name(name: &str) -> Result<(), Error> {
    match name {
        "" | "." | ".." => Err(Error::BadName { name: name.into() }),
        _ if name.contains(['/', '\0']) => Err(Error::BadName { name: name.into() }),
        _ => Ok(()),
    }
}

fn make_dir(parent: &OwnedFd, name: &str, path: &Path, exclusive: bool) -> Result<(), Error> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(DIR_MODE)) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) if exclusive => Err(Error::Exists { path: path.to_owned() }),
        // Checked when opened: it must be a folder of ours, not a link.
        Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(errno) => Err(io(path)(errno)),
    }
}

/// Opens `name` in `parent` as a folder, refusing a link, and checks that
/// this user owns it; its mode is set to exactly 0700.
fn open_own_dir(parent: &OwnedFd, name: &str, path: &Path) -> Result<OwnedFd, Error> {
    let fd = rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(|errno| match errno {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
            Error::Replaced { path: path.to_owned(), reason: "a symbolic link or a file stands there" }
        }
        errno => io(path)(errno),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(io(path))?;
    if stat.st_uid != rustix::process::geteuid().as_raw() {
        return Err(Error::Replaced { path: path.to_owned(), reason: "another user owns it" });
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE)).map_err(io(path))?;
    Ok(fd)
}

/// Makes `dir` (and its missing parents) with mode 0700, and sets `dir`
/// itself to 0700 if it was there already: a folder of logs that can hold
/// secrets, reused from run to run.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other(format!("{} is not a folder", dir.display())));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Writes `contents` to `path` with mode 0600, replacing what is there but
/// never following a symbolic link at `path`; a file left with a wider mode
/// by an older vigil is narrowed.
pub fn write(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    file.write_all(contents)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_folder_is_0700_and_its_files_0600() {
        let root = tempfile::tempdir().unwrap();
        let dir = PrivateDir::create_new(&root.path().join("made"), "export").unwrap();
        dir.write_new("nodes/w1/kubelet.log", b"journal").unwrap();
        dir.write_new("index.md", b"index").unwrap();
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.path().join("nodes")), 0o700);
        assert_eq!(mode(&dir.path().join("nodes/w1")), 0o700);
        assert_eq!(mode(&dir.path().join("nodes/w1/kubelet.log")), 0o600);
        assert_eq!(mode(&dir.path().join("index.md")), 0o600);
        assert_eq!(std::fs::read(dir.path().join("nodes/w1/kubelet.log")).unwrap(), b"journal");
        // A file is written once: a second write of the same name is refused.
        assert!(matches!(dir.write_new("index.md", b"again"), Err(Error::Exists { .. })));
    }

    #[test]
    fn a_symlink_at_the_target_is_refused_and_nothing_is_written_through_it() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let mode_before = mode(&elsewhere);
        std::os::unix::fs::symlink(&elsewhere, root.path().join("export")).unwrap();
        let err = PrivateDir::create_new(root.path(), "export").unwrap_err();
        assert!(matches!(err, Error::Exists { .. }), "{err}");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing written through the link");
        assert_eq!(mode(&elsewhere), mode_before, "its mode untouched");
    }

    #[test]
    fn an_existing_folder_at_the_target_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("export")).unwrap();
        let err = PrivateDir::create_new(root.path(), "export").unwrap_err();
        assert!(matches!(err, Error::Exists { .. }), "{err}");
    }

    #[test]
    fn links_inside_the_folder_are_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let dir = PrivateDir::create_new(root.path(), "export").unwrap();
        // Planted by someone with access (only this user has, at 0700).
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("nodes")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("f"), dir.path().join("index.md")).unwrap();
        let err = dir.write_new("nodes/w1.log", b"x").unwrap_err();
        assert!(matches!(err, Error::Replaced { .. }), "{err}");
        assert!(matches!(dir.write_new("index.md", b"x"), Err(Error::Exists { .. })));
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = PrivateDir::create_new(root.path(), "export").unwrap();
        for bad in ["../escape", "a/../../b", "/abs", "a//b", ""] {
            assert!(matches!(dir.write_new(bad, b"x"), Err(Error::BadName { .. })), "{bad}");
        }
        assert!(matches!(PrivateDir::create_new(root.path(), ".."), Err(Error::BadName { .. })));
        assert!(!root.path().join("escape").exists());
    }

    #[test]
    fn write_replaces_with_0600_and_never_follows_a_link() {
        let root = tempfile::tempdir().unwrap();
        let log = root.path().join("step.log");
        std::fs::write(&log, "old").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&log, b"new").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"new");
        assert_eq!(mode(&log), 0o600, "an older, wider file is narrowed");

        let target = root.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        let link = root.path().join("linked.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write(&link, b"secret").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn ensure_dir_narrows_an_existing_folder() {
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("logs/cluster");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&logs).unwrap();
        assert_eq!(mode(&logs), 0o700);
        let fresh = root.path().join("fresh/a");
        ensure_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&root.path().join("fresh")), 0o700);
    }
}
