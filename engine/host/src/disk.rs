//! Free disk space, checked before long work would fill a disk half-way:
//! the build's cache, and Docker's data directory for new node containers.

use std::path::Path;

/// Too little room where something is about to be written.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("only {free_gib:.1} GiB free in {place}; {what} needs about {need_gib} GiB: {fix}")]
pub struct LowDisk {
    pub place: String,
    pub what: &'static str,
    pub free_gib: f64,
    pub need_gib: u64,
    /// How to make room, in the terms of whoever fills that disk.
    pub fix: String,
}

/// The bytes an unprivileged writer may still use on `path`'s filesystem
/// (statvfs, as `df` reports "Avail").
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Whether the filesystem of `path` (or of its nearest existing folder)
/// has `need_gib` free; the shortfall as [`LowDisk`] otherwise.
pub fn check(
    path: &Path,
    need_gib: u64,
    what: &'static str,
    place: impl FnOnce(&Path) -> String,
    fix: impl FnOnce(&Path) -> String,
) -> std::io::Result<Result<(), LowDisk>> {
    let probe = path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let free_gib = free_bytes(probe)? as f64 / (1u64 << 30) as f64;
    if free_gib >= need_gib as f64 {
        return Ok(Ok(()));
    }
    Ok(Err(LowDisk { place: place(probe), what, free_gib, need_gib, fix: fix(probe) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_what_df_says_and_a_shortfall_names_place_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        let df = std::process::Command::new("df")
            .arg("--output=avail")
            .arg("-B1")
            .arg(dir.path())
            .output()
            .unwrap();
        let df: u64 = String::from_utf8_lossy(&df.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
        // The disk moves a little between the two looks.
        assert!(free.abs_diff(df) < 256 << 20, "statvfs {free}, df {df}");

        let missing = dir.path().join("not/yet");
        assert_eq!(check(&missing, 0, "nothing", |_| unreachable!(), |_| unreachable!()).unwrap(), Ok(()));
        let low =
            check(&missing, u64::MAX >> 31, "the build", |p| p.display().to_string(), |_| "free some".into())
                .unwrap()
                .unwrap_err();
        assert_eq!(low.place, dir.path().display().to_string(), "the nearest existing folder");
        assert!(low.to_string().contains("; the build needs about"), "{low}");
        assert!(low.to_string().ends_with(": free some"), "{low}");
    }
}
