//! Debian's updates in vigil's root filesystems. debootstrap installs a
//! release as it was published; fixes arrive later in `<suite>-updates` and
//! `<suite>-security`. So a root filesystem is upgraded from all three right
//! after debootstrap, its content key covers the package versions actually
//! installed, and a later build asks apt, in a throwaway container of the
//! image, whether anything is upgradable now: if so the image (and every
//! image built on it) is rebuilt. A mirror that cannot be reached never
//! fails a build that has an image to fall back on: the check says so and
//! the image is used as it is.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use bollard::{
    Docker,
    models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest},
};
use tokio::process::Command;

use super::{Error, Result, key::KeyBuilder};
use vigil_host::exec;

/// Where a root filesystem's packages come from: the release and its
/// updates from the mirror apt uses, security fixes from the security archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub mirror: String,
    pub security: String,
}

impl Sources {
    /// The mirror as debootstrap uses it (`VIGIL_DEBIAN_MIRROR`, else this
    /// machine's apt sources) and the security archive
    /// (`VIGIL_DEBIAN_SECURITY_MIRROR`, else the one in this machine's apt
    /// sources when the mirror is this machine's too, else the mirror's sibling path `<mirror>-security`, the
    /// layout of Debian's own archive).
    pub fn from_host() -> Result<Self> {
        let mirror = super::rootfs::debian_mirror()?;
        // A mirror of the user's choosing comes with its own security
        // archive; this machine's is only right for this machine's mirror.
        let own_mirror = std::env::var_os("VIGIL_DEBIAN_MIRROR").is_some();
        let security = std::env::var("VIGIL_DEBIAN_SECURITY_MIRROR")
            .ok()
            .or_else(|| {
                (!own_mirror).then(|| host_sources().iter().find_map(|text| security_uri(text))).flatten()
            })
            .unwrap_or_else(|| format!("{}-security", mirror.trim_end_matches('/')));
        Ok(Sources { mirror, security })
    }

    /// apt's sources for `suite` (deb822): the release and `-updates` from
    /// the mirror, `-security` from the security archive.
    pub fn deb822(&self, suite: &str) -> String {
        format!(
            "Types: deb\nURIs: {}\nSuites: {suite} {suite}-updates\nComponents: main\n\n\
             Types: deb\nURIs: {}\nSuites: {suite}-security\nComponents: main\n",
            self.mirror, self.security
        )
    }
}

/// The apt sources files of this machine that exist.
pub(super) fn host_sources() -> Vec<String> {
    ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

/// The URIs of a deb822 or one-line sources file, comments left out.
pub(super) fn uris(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.strip_prefix("URIs:").map(str::trim).or_else(|| {
                l.strip_prefix("deb ").and_then(|rest| rest.split_whitespace().find(|w| w.contains("://")))
            })
        })
        .flat_map(str::split_whitespace)
}

/// The first security archive URI of a sources file.
fn security_uri(text: &str) -> Option<String> {
    uris(text).find(|uri| uri.contains("security")).map(str::to_owned)
}

/// `dpkg-query -W -f '${Package}:${Architecture} ${Version}\n'`, sorted,
/// read from a root filesystem's dpkg status file (no dpkg needed on the
/// host): the packages installed, with their versions.
pub fn installed(status: &str) -> Vec<String> {
    let mut lines: Vec<String> = status
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
                    .map(str::trim)
            };
            let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
            match (installed, field("Package"), field("Architecture"), field("Version")) {
                (true, Some(package), Some(arch), Some(version)) => {
                    Some(format!("{package}:{arch} {version}"))
                }
                _ => None,
            }
        })
        .collect();
    lines.sort();
    lines
}

/// The part of a root filesystem's content key that its packages make.
pub fn packages_digest(installed: &[String]) -> String {
    installed.iter().fold(KeyBuilder::new("debian-packages"), |k, line| k.part(line)).finish()
}

/// A package apt would install or upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub package: String,
    /// None for a package that is new (a new dependency).
    pub from: Option<String>,
    pub to: String,
}

impl std::fmt::Display for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.from {
            Some(from) => write!(f, "{} {from} -> {}", self.package, self.to),
            None => write!(f, "{} (new) {}", self.package, self.to),
        }
    }
}

/// The `Inst` lines of `apt-get -s dist-upgrade`:
/// `Inst libssl3 [3.0.20-1~deb12u2] (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])`.
pub fn parse_upgrades(simulation: &str) -> Vec<Upgrade> {
    simulation
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("Inst ")?;
            let (package, rest) = rest.split_once(' ')?;
            let (from, rest) = match rest.strip_prefix('[') {
                Some(r) => {
                    let (from, rest) = r.split_once("] ")?;
                    (Some(from.to_owned()), rest)
                }
                None => (None, rest),
            };
            let to = rest.strip_prefix('(')?.split_whitespace().next()?;
            Some(Upgrade { package: package.into(), from, to: to.into() })
        })
        .collect()
}

/// A short list for a progress line: the first few, and how many more.
pub fn summary(upgrades: &[Upgrade]) -> String {
    let shown: Vec<String> = upgrades.iter().take(3).map(Upgrade::to_string).collect();
    match upgrades.len().saturating_sub(shown.len()) {
        0 => shown.join(", "),
        more => format!("{}, and {more} more", shown.join(", ")),
    }
}

/// Runs in the throwaway container: today's sources, the lists, and what
/// a dist-upgrade would do (simulated: nothing in the image changes).
const CHECK_SCRIPT: &str = r#"set -e
printf '%s' "$VIGIL_APT_SOURCES" > /etc/apt/sources.list.d/debian.sources
rm -f /etc/apt/sources.list
apt-get update -o Acquire::Languages=none -o Acquire::Retries=1 -o Acquire::http::Timeout=20
echo '--- simulation'
apt-get -s -o Debug::NoLocking=1 dist-upgrade
"#;

/// How long a check can take before the image is used as it is.
const CHECK_TIMEOUT: Duration = Duration::from_secs(180);

/// What apt, given today's `sources`, would upgrade in `image`. Runs a
/// throwaway container of the image on the host's network (so it reaches
/// the mirror as debootstrap does); its package lists are kept in a volume
/// per image, so a later check downloads only what changed. Err says why
/// there is no answer (mirror unreachable, Docker refused).
pub async fn upgradable(
    docker: &Docker,
    name: &str,
    image: &str,
    sources: &str,
) -> Result<Vec<Upgrade>, String> {
    let volume = format!("vigil-apt-lists-{name}");
    let _ = docker
        .create_volume(VolumeCreateRequest {
            name: Some(volume.clone()),
            labels: Some(HashMap::from([("io.vigil.role".into(), "apt-lists".into())])),
            ..Default::default()
        })
        .await;
    let container = format!("vigil-apt-check-{name}");
    let body = ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), CHECK_SCRIPT.into()]),
        env: Some(vec![format!("VIGIL_APT_SOURCES={sources}")]),
        host_config: Some(HostConfig {
            network_mode: Some("host".into()),
            mounts: Some(vec![Mount {
                target: Some("/var/lib/apt/lists".into()),
                source: Some(volume),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        labels: Some(HashMap::from([("io.vigil.role".into(), "apt-check".into())])),
        ..Default::default()
    };
    let ran = tokio::time::timeout(
        CHECK_TIMEOUT,
        vigil_provider_docker::engine::run_to_end(docker, &container, body),
    )
    .await;
    let (succeeded, output) = match ran {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => return Err(format!("docker: {e}")),
        Err(_) => {
            let options =
                bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = docker.remove_container(&container, Some(options)).await;
            return Err(format!("apt took longer than {}s", CHECK_TIMEOUT.as_secs()));
        }
    };
    check_result(succeeded, &output)
}

/// The check's answer from its output: the upgrades, or why there are none
/// to tell (apt's own error lines).
fn check_result(succeeded: bool, output: &str) -> Result<Vec<Upgrade>, String> {
    let failures: Vec<&str> =
        output.lines().filter(|l| l.starts_with("E: ") || l.starts_with("Err:")).take(3).collect();
    match output.split_once("--- simulation") {
        Some((_, simulation)) if succeeded && failures.is_empty() => Ok(parse_upgrades(simulation)),
        _ if !failures.is_empty() => Err(failures.join("; ")),
        _ => Err(format!("apt failed: {}", output.lines().rev().take(3).collect::<Vec<_>>().join("; "))),
    }
}

/// When the last check of an image found nothing to upgrade: within
/// [`check_interval`] of it the check is not run again (the warm path of
/// `vigil up` stays free of network work).
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct Checked {
    key: String,
    at_unix: u64,
}

/// 6 hours by default: Debian's security archive publishes a few times a
/// day at most. `VIGIL_DEBIAN_CHECK_INTERVAL` (`0s` checks every time).
pub fn check_interval() -> Duration {
    std::env::var("VIGIL_DEBIAN_CHECK_INTERVAL")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(Duration::from_secs(6 * 3600))
}

fn checked_path(cache: &Path, name: &str) -> PathBuf {
    cache.join("rootfs").join(format!("{name}.checked.json"))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Whether the image of content key `key` was found up to date less than
/// `interval` ago.
pub fn checked_recently(cache: &Path, name: &str, key: &str, interval: Duration) -> bool {
    let Ok(text) = std::fs::read_to_string(checked_path(cache, name)) else { return false };
    let Ok(checked) = serde_json::from_str::<Checked>(&text) else { return false };
    checked.key == key && unix_now().saturating_sub(checked.at_unix) < interval.as_secs()
}

pub fn record_checked(cache: &Path, name: &str, key: &str) {
    let path = checked_path(cache, name);
    let checked = Checked { key: key.into(), at_unix: unix_now() };
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, serde_json::to_string(&checked).expect("serializes")));
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), error = %e, "cannot record the Debian check");
    }
}

/// Runs `script` chrooted in `dir`, with /proc mounted in a mount namespace
/// of its own (gone with the command, whatever happens to vigil).
fn chrooted(dir: &Path, script: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -t proc proc "$0/proc" && exec chroot "$0" /bin/sh -c "$1""#)
        .arg(dir)
        .arg(script);
    cmd
}

const UPDATE: &str = "set -e; export PATH=/usr/sbin:/usr/bin:/sbin:/bin; \
    apt-get update -o Acquire::Languages=none -o Acquire::Retries=2 -o Acquire::http::Timeout=20";
const UPGRADE: &str = "set -e; export PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive; \
    apt-get -y -o Acquire::http::Timeout=20 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade; apt-get clean";
/// Keeps maintainer scripts from starting services in the chroot.
const POLICY_RC_D: &str =
    "#!/bin/sh\n# vigil: no service starts while the root filesystem is built\nexit 101\n";

/// Whether a freshly debootstrapped `dir` got its updates.
pub enum Upgraded {
    Yes,
    /// The lists could not be fetched (the security archive unreachable):
    /// the release's packages stay, and the next build checks again.
    NotFetched(exec::Error),
}

/// Points `dir`'s apt at `sources` (release, updates, security) and
/// upgrades every package from them.
pub async fn upgrade(dir: &Path, sources: &str, log: &Path) -> Result<Upgraded> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e| Error::io(&path, e)
    };
    let list = dir.join("etc/apt/sources.list.d/debian.sources");
    tokio::fs::write(&list, sources).await.map_err(io(&list))?;
    let one_line = dir.join("etc/apt/sources.list");
    if one_line.exists() {
        tokio::fs::remove_file(&one_line).await.map_err(io(&one_line))?;
    }
    let policy = dir.join("usr/sbin/policy-rc.d");
    tokio::fs::write(&policy, POLICY_RC_D).await.map_err(io(&policy))?;
    {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(io(&policy))?;
    }
    let result = match exec::run_logged(chrooted(dir, UPDATE), log, |_| {}).await {
        Err(e) => Ok(Upgraded::NotFetched(e)),
        Ok(()) => exec::run_logged(chrooted(dir, UPGRADE), log, |_| {})
            .await
            .map(|()| Upgraded::Yes)
            .map_err(|e| Error::step("root filesystem", "apt-get dist-upgrade", e)),
    };
    tokio::fs::remove_file(&policy).await.map_err(io(&policy))?;
    result
}

/// The packages installed in the root filesystem at `dir`.
pub fn installed_in(dir: &Path) -> Result<Vec<String>> {
    let status = dir.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status).map_err(|e| Error::io(&status, e))?;
    Ok(installed(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: adduser\nStatus: install ok installed\nPriority: important\n\
        Architecture: all\nMulti-Arch: foreign\nVersion: 3.134\nDepends: passwd\n\
        Description: add and remove users and groups\n This package includes the 'adduser'\n .\n Version: 9\n\n\
        Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.22-1~deb12u2\n\n\
        Package: removed-one\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n\n\
        Package: apt\nStatus: hold ok installed\nArchitecture: amd64\nVersion: 2.6.2\n";

    #[test]
    fn installed_packages_are_read_like_dpkg_query() {
        assert_eq!(
            installed(STATUS),
            ["adduser:all 3.134", "apt:amd64 2.6.2", "libssl3:amd64 3.0.22-1~deb12u2"]
        );
        assert!(installed("").is_empty());
    }

    #[test]
    fn the_digest_follows_every_version() {
        let before = installed(STATUS);
        let updated = installed(&STATUS.replace("3.0.22-1~deb12u2", "3.0.23-1~deb12u1"));
        assert_eq!(packages_digest(&before), packages_digest(&installed(STATUS)));
        assert_ne!(packages_digest(&before), packages_digest(&updated));
        assert_ne!(packages_digest(&before), packages_digest(&before[1..]));
    }

    /// What `apt-get -s dist-upgrade` printed in vigil's bookworm base
    /// image, 13 minutes after it was debootstrapped without the security suite.
    const SIMULATION: &str = "Reading package lists...\nBuilding dependency tree...\nCalculating upgrade...\n\
        The following packages will be upgraded:\n  libssl3 openssl tzdata\n\
        3 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.\n\
        Inst libssl3 [3.0.20-1~deb12u2] (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])\n\
        Inst libpam-modules-bin [1.5.2-6+deb12u2] (1.5.2-6+deb12u3 Debian-Security:12/oldstable-security [amd64]) [libpam-modules:amd64 on libpam-modules-bin:amd64] [libpam-modules:amd64 ]\n\
        Conf libssl3 (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])\n\
        Inst tzdata [2026b-0+deb12u1] (2026f-0+deb12u1 Debian-Security:12/oldstable-security [all])\n\
        Inst libnew1 (1.2-3 Debian:12.13/oldstable [amd64])\n";

    #[test]
    fn upgrades_are_read_from_the_simulation() {
        let upgrades = parse_upgrades(SIMULATION);
        let shown: Vec<String> = upgrades.iter().map(Upgrade::to_string).collect();
        assert_eq!(
            shown,
            [
                "libssl3 3.0.20-1~deb12u2 -> 3.0.22-1~deb12u2",
                "libpam-modules-bin 1.5.2-6+deb12u2 -> 1.5.2-6+deb12u3",
                "tzdata 2026b-0+deb12u1 -> 2026f-0+deb12u1",
                "libnew1 (new) 1.2-3",
            ]
        );
        assert_eq!(
            summary(&upgrades),
            "libssl3 3.0.20-1~deb12u2 -> 3.0.22-1~deb12u2, libpam-modules-bin 1.5.2-6+deb12u2 -> 1.5.2-6+deb12u3, tzdata 2026b-0+deb12u1 -> 2026f-0+deb12u1, and 1 more"
        );
        assert!(
            parse_upgrades("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n").is_empty()
        );
    }

    #[test]
    fn an_unreachable_mirror_is_no_answer_not_an_empty_list() {
        let output = "Get:1 http://mirror.example/debian bookworm InRelease [151 kB]\n\
            Err:3 http://mirror.example/debian-security bookworm-security InRelease\n  400  Bad Request\n\
            E: Failed to fetch http://mirror.example/debian-security/dists/bookworm-security/InRelease  400  Bad Request\n";
        let err = check_result(false, output).unwrap_err();
        assert!(err.contains("Err:3 http://mirror.example/debian-security"), "{err}");
        assert!(check_result(false, "sh: 1: apt-get: not found\n").is_err());
        let ok =
            format!("Hit:1 http://mirror.example/debian bookworm InRelease\n--- simulation\n{SIMULATION}");
        assert_eq!(check_result(true, &ok).unwrap().len(), 4);
        let current = "--- simulation\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n";
        assert_eq!(check_result(true, current).unwrap(), []);
    }

    #[test]
    fn sources_carry_the_release_its_updates_and_security() {
        let sources = Sources {
            mirror: "http://mirror.example/debian".into(),
            security: "http://mirror.example/debian-security".into(),
        };
        assert_eq!(
            sources.deb822("bookworm"),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
             Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n"
        );
        assert!(sources.deb822("trixie").contains("Suites: trixie-security\n"));
    }

    #[test]
    fn the_security_archive_is_found_in_apt_sources() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\n\
                      Types: deb\n# URIs: http://old.example/debian-security\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(security_uri(deb822).as_deref(), Some("http://mirror.example/debian-security"));
        let one_line = "deb http://mirror.example/debian bookworm main\n\
                        deb [arch=amd64] http://security.example/debian-security bookworm-security main\n";
        assert_eq!(security_uri(one_line).as_deref(), Some("http://security.example/debian-security"));
        assert_eq!(security_uri("deb http://mirror.example/debian bookworm main\n"), None);
    }

    #[test]
    fn a_check_is_remembered_for_its_key_and_interval() {
        let cache = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        assert!(!checked_recently(cache.path(), "base", "k1", hour));
        record_checked(cache.path(), "base", "k1");
        assert!(checked_recently(cache.path(), "base", "k1", hour));
        assert!(!checked_recently(cache.path(), "base", "k2", hour), "another image");
        assert!(!checked_recently(cache.path(), "node", "k1", hour), "another root filesystem");
        assert!(!checked_recently(cache.path(), "base", "k1", Duration::ZERO), "interval 0: every time");
    }
}
