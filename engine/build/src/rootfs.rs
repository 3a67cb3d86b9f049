//! Debian root filesystems made with debootstrap and imported into Docker:
//! a small one for pod images that need iptables (kube-proxy, flannel) and a
//! test toolbox, and the node's, with systemd and the container runtime's
//! Debian parts (runc, CNI plugins).

use std::path::Path;

use tokio::process::Command;

use super::{
    Error, Result,
    debian::{self, Sources},
    image,
    key::{KeyBuilder, short},
};
use vigil_host::{exec, progress::Progress};
use vigil_model::images::ImageNames;

pub use vigil_model::versions::DEBIAN_SUITE as SUITE;

pub struct Rootfs {
    pub name: &'static str,
    /// The Debian release debootstrapped.
    pub suite: &'static str,
    /// The tag it is imported as.
    pub image: String,
    pub packages: &'static [&'static str],
    /// Units a node container must not start (they fight the container).
    pub masked_units: &'static [&'static str],
}

/// Pod base: iptables for kube-proxy and flannel, socat and getent for the
/// end-to-end test's toolbox pods. Nothing else.
pub fn base(repository: &str) -> Rootfs {
    Rootfs {
        name: "base",
        suite: SUITE,
        image: ImageNames::new(repository).base(),
        packages: &["iptables", "conntrack", "socat", "ca-certificates"],
        masked_units: &[],
    }
}

/// The node: systemd as PID 1, runc and the reference CNI plugins from
/// Debian, and the tools kubeadm and kubelet shell out to.
pub fn node(repository: &str) -> Rootfs {
    Rootfs {
        name: "node",
        suite: SUITE,
        image: format!("{repository}/node-rootfs:{SUITE}"),
        packages: &[
            "systemd",
            "systemd-sysv",
            "dbus",
            "runc",
            "containernetworking-plugins",
            "iptables",
            "ipset",
            "ebtables",
            "conntrack",
            "socat",
            "ethtool",
            "iproute2",
            "util-linux",
            "mount",
            "kmod",
            "procps",
            "libseccomp2",
            "ca-certificates",
            "curl",
            "bind9-dnsutils",
        ],
        masked_units: &[
            // No consoles, no udev, no kernel-module loading in a container.
            "getty@tty1.service",
            "console-getty.service",
            "systemd-udevd.service",
            "systemd-udev-trigger.service",
            "systemd-modules-load.service",
            "systemd-networkd-wait-online.service",
            "apt-daily.timer",
            "apt-daily-upgrade.timer",
            "e2scrub_all.timer",
            "fstrim.timer",
        ],
    }
}

/// The recipe a root filesystem image was made from (its content key,
/// under the usual label, also covers the packages installed).
pub const RECIPE_LABEL: &str = "io.vigil.rootfs-recipe";
/// The digest of the packages installed, with their versions.
pub const PACKAGES_LABEL: &str = "io.vigil.debian-packages";

/// What a build does about one root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// The image is current; its content key.
    Current(String),
    /// It is (re)built: why, and the content key of the image there is,
    /// used if the build fails (a mirror gone mid-way must not leave the
    /// user with nothing).
    Build { why: String, fallback: Option<String> },
}

impl Freshness {
    /// The key images built on this one are planned with: its content key,
    /// or, while it is to be rebuilt, one no image carries.
    pub fn planned_key(&self, name: &str) -> String {
        match self {
            Freshness::Current(key) => key.clone(),
            Freshness::Build { .. } => format!("to be rebuilt: {name}"),
        }
    }
}

impl Rootfs {
    /// What the image is made from, before its packages are known: the
    /// release, the packages asked for, the masked units, and the sources
    /// it is upgraded from.
    pub fn recipe_key(&self) -> String {
        let k = KeyBuilder::new("rootfs").part(self.name).part(self.suite);
        let k = self.packages.iter().fold(k, |k, p| k.part(p));
        let k = self.masked_units.iter().fold(k.part("masked"), |k, u| k.part(u));
        // What `trim` does, so that a change to it rebuilds the images.
        k.part("upgraded from: release, -updates, -security")
            .part("trimmed: docs, man, locales, info, apt caches; machine-id empty, dbus's a link to it")
            .finish()
    }

    /// The content key: the recipe and the versions actually installed.
    pub fn content_key(recipe_key: &str, packages_digest: &str) -> String {
        KeyBuilder::new("rootfs-content").part(recipe_key).part(packages_digest).finish()
    }

    /// Whether the image is current: made from this recipe, and nothing in
    /// it upgradable from today's sources (asked at most once per
    /// [`debian::check_interval`]). When the check cannot be made, the image
    /// is used as it is, with a warning.
    pub async fn freshness(
        &self,
        docker: &bollard::Docker,
        cache: &Path,
        sources: Option<&Sources>,
        progress: &Progress,
    ) -> Result<Freshness> {
        let Some(labels) = image::labels(docker, &self.image).await? else {
            return Ok(Freshness::Build { why: "no image yet".into(), fallback: None });
        };
        let (Some(recipe), Some(key)) = (labels.get(RECIPE_LABEL), labels.get(image::KEY_LABEL)) else {
            return Ok(Freshness::Build {
                why: "made before vigil kept Debian's updates".into(),
                fallback: None,
            });
        };
        if *recipe != self.recipe_key() {
            return Ok(Freshness::Build { why: "its recipe changed".into(), fallback: None });
        }
        // Checked recently: nothing to say on the warm path.
        if debian::checked_recently(cache, self.name, key, debian::check_interval()) {
            return Ok(Freshness::Current(key.clone()));
        }
        let title = format!("Debian updates for {}", self.image);
        let Some(sources) = sources else {
            progress.line(title).skipped("image kept: no Debian mirror known to check it for updates");
            return Ok(Freshness::Current(key.clone()));
        };
        let line = progress.line(title);
        line.update("asking apt for Debian updates");
        match debian::upgradable(docker, self.name, &self.image, &sources.deb822(self.suite)).await {
            Ok(upgrades) if upgrades.is_empty() => {
                debian::record_checked(cache, self.name, key);
                line.skipped("image up to date (no Debian updates)");
                Ok(Freshness::Current(key.clone()))
            }
            Ok(upgrades) => {
                line.done_with(format!("{} Debian updates: rebuilding", upgrades.len()));
                let why = format!("{} Debian updates: {}", upgrades.len(), debian::summary(&upgrades));
                Ok(Freshness::Build { why, fallback: Some(key.clone()) })
            }
            Err(why) => {
                // Recorded as a check all the same: an offline machine would
                // otherwise wait on apt at every build; it asks again after
                // the interval.
                debian::record_checked(cache, self.name, key);
                tracing::warn!(image = %self.image, %why, "cannot check for Debian updates");
                line.skipped(format!(
                    "image kept as it is: cannot check for Debian updates ({why}); asking again in {}",
                    humantime::format_duration(debian::check_interval())
                ));
                Ok(Freshness::Current(key.clone()))
            }
        }
    }

    /// Makes the image unless it is current; returns its content key. A
    /// rebuild that fails falls back on the image there is, with a warning.
    pub async fn ensure(
        &self,
        docker: &bollard::Docker,
        cache: &Path,
        progress: &Progress,
        freshness: Freshness,
    ) -> Result<String> {
        match freshness {
            Freshness::Current(key) => Ok(key),
            Freshness::Build { why, fallback } => {
                match (self.build(docker, cache, progress, &why).await, fallback) {
                    (Ok(key), _) => Ok(key),
                    (Err(e), Some(key)) => {
                        let e = super::chain(&e);
                        tracing::warn!(image = %self.image, error = %e, "rebuild failed; the image there is stays");
                        progress.info(format!(
                        "warning: {} could not be rebuilt with Debian's updates ({e}); using the image there is",
                        self.image
                    ));
                        Ok(key)
                    }
                    (Err(e), None) => Err(e),
                }
            }
        }
    }

    /// debootstraps, upgrades from the release's updates and security
    /// archive, trims, and imports the root filesystem.
    async fn build(
        &self,
        docker: &bollard::Docker,
        cache: &Path,
        progress: &Progress,
        why: &str,
    ) -> Result<String> {
        let recipe_key = self.recipe_key();
        let title =
            format!("debootstrap {} rootfs ({}, {} packages)", self.name, self.suite, self.packages.len());
        let step = progress.line(title);
        step.update(why);
        let sources = Sources::from_host()?;
        let mirror = &sources.mirror;
        let dir = cache.join("rootfs").join(format!("{}-{}", self.name, short(&recipe_key)));
        let log = cache.join("logs").join(format!("debootstrap-{}.log", self.name));
        if dir.exists() {
            // A previous attempt stopped half-way; debootstrap needs a clean target.
            tokio::fs::remove_dir_all(&dir).await.map_err(|e| Error::io(&dir, e))?;
        }
        let debs = cache.join("debs");
        tokio::fs::create_dir_all(&debs).await.map_err(|e| Error::io(&debs, e))?;
        let mut cmd = Command::new("debootstrap");
        cmd.arg("--variant=minbase")
            .arg(format!("--include={}", self.packages.join(",")))
            .arg(format!("--cache-dir={}", debs.display()))
            .arg(self.suite)
            .arg(&dir)
            .arg(mirror);
        exec::run_logged(cmd, &log, |line| {
            // Lines naming the mirror are left out of the progress.
            if let Some(what) = line.strip_prefix("I: ").filter(|l| !l.contains("://")) {
                step.update(what);
            }
        })
        .await
        .map_err(|e| Error::step(self.name, "debootstrap", e))?;

        step.update("upgrading from the release's updates and security archive");
        if let debian::Upgraded::NotFetched(e) =
            debian::upgrade(&dir, &sources.deb822(self.suite), &log).await?
        {
            let e = super::chain(&e);
            tracing::warn!(rootfs = self.name, error = %e, "Debian updates not fetched");
            progress.info(format!(
                "warning: the {} root filesystem has the release's packages only: its updates could not be fetched ({e}); the next build tries again",
                self.name
            ));
        }
        let installed = debian::installed_in(&dir)?;
        let digest = debian::packages_digest(&installed);
        let key = Self::content_key(&recipe_key, &digest);

        step.update("trimming and importing into Docker");
        self.trim(&dir).await?;
        let labels = [(RECIPE_LABEL, recipe_key.as_str()), (PACKAGES_LABEL, digest.as_str())];
        image::import_rootfs(docker, &dir, &self.image, &key, &labels).await?;
        tokio::fs::remove_dir_all(&dir).await.map_err(|e| Error::io(&dir, e))?;
        // Just built from today's lists: no need to ask apt again soon.
        debian::record_checked(cache, self.name, &key);
        step.done_with(format!("{} ({} packages; log {})", self.image, installed.len(), log.display()));
        Ok(key)
    }

    /// Drops what no container needs (docs, man pages, locales, apt's
    /// caches), gives every container its own machine-id, masks units.
    async fn trim(&self, dir: &Path) -> Result<()> {
        for sub in [
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
            "usr/share/info",
            "var/cache/apt",
            "var/lib/apt/lists",
        ] {
            let path = dir.join(sub);
            if path.exists() {
                tokio::fs::remove_dir_all(&path).await.map_err(|e| Error::io(&path, e))?;
                tokio::fs::create_dir_all(&path).await.map_err(|e| Error::io(&path, e))?;
            }
        }
        let machine_id = dir.join("etc/machine-id");
        tokio::fs::write(&machine_id, "").await.map_err(|e| Error::io(&machine_id, e))?;
        // dbus's install wrote an id here, and systemd-machine-id-setup takes
        // it over a fresh one unless it is a symlink: every container had
        // the build's id. Debian links it to /etc/machine-id.
        let dbus_id = dir.join("var/lib/dbus/machine-id");
        if tokio::fs::symlink_metadata(&dbus_id).await.is_ok() {
            tokio::fs::remove_file(&dbus_id).await.map_err(|e| Error::io(&dbus_id, e))?;
            tokio::fs::symlink("/etc/machine-id", &dbus_id).await.map_err(|e| Error::io(&dbus_id, e))?;
        }
        for unit in self.masked_units {
            let link = dir.join("etc/systemd/system").join(unit);
            let _ = tokio::fs::remove_file(&link).await;
            tokio::fs::symlink("/dev/null", &link).await.map_err(|e| Error::io(&link, e))?;
        }
        Ok(())
    }
}

/// The Debian mirror this machine's apt uses (VIGIL_DEBIAN_MIRROR overrides):
/// debootstrap must fetch from the same place apt already can.
pub fn debian_mirror() -> Result<String> {
    if let Ok(mirror) = std::env::var("VIGIL_DEBIAN_MIRROR") {
        return Ok(mirror);
    }
    debian::host_sources().iter().find_map(|text| parse_mirror(text)).ok_or(Error::NoMirror)
}

/// The first non-security Debian URI of a deb822 or one-line sources file.
fn parse_mirror(text: &str) -> Option<String> {
    debian::uris(text).find(|uri| !uri.contains("security")).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(parse_mirror(deb822).as_deref(), Some("http://mirror.example/debian"));
        let one_line = "deb http://security.example/debian-security bookworm-security main\n\
                        deb [arch=amd64] http://mirror.example/debian bookworm main\n";
        assert_eq!(parse_mirror(one_line).as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(parse_mirror("# nothing\n"), None);
    }

    #[tokio::test]
    async fn trimmed_trees_carry_no_machine_id_and_dbus_links_to_the_one_systemd_writes() {
        let tree = tempfile::tempdir().unwrap();
        let dir = tree.path();
        for sub in ["etc/systemd/system", "var/lib/dbus", "usr/share/doc/bash"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("etc/machine-id"), "75376c69b49d416fa50dc2b9c18fbe13\n").unwrap();
        std::fs::write(dir.join("var/lib/dbus/machine-id"), "75376c69b49d416fa50dc2b9c18fbe13\n").unwrap();
        node("vigil.local").trim(dir).await.unwrap();
        assert_eq!(std::fs::read(dir.join("etc/machine-id")).unwrap(), b"");
        let link = std::fs::read_link(dir.join("var/lib/dbus/machine-id")).unwrap();
        assert_eq!(link, Path::new("/etc/machine-id"));
        assert_eq!(std::fs::read_dir(dir.join("usr/share/doc")).unwrap().count(), 0);
    }

    #[test]
    fn keys_change_with_packages() {
        let a = base("vigil.local");
        let mut b = base("vigil.local");
        assert_eq!(a.recipe_key(), b.recipe_key());
        b.packages = &["iptables"];
        assert_ne!(a.recipe_key(), b.recipe_key());
        assert_ne!(base("x").recipe_key(), node("x").recipe_key());
    }

    #[test]
    fn the_content_key_follows_the_installed_versions() {
        let recipe = base("vigil.local").recipe_key();
        let before = debian::packages_digest(&["libssl3:amd64 3.0.20-1~deb12u2".to_owned()]);
        let after = debian::packages_digest(&["libssl3:amd64 3.0.22-1~deb12u2".to_owned()]);
        assert_ne!(Rootfs::content_key(&recipe, &before), Rootfs::content_key(&recipe, &after));
        assert_eq!(Rootfs::content_key(&recipe, &before), Rootfs::content_key(&recipe, &before));
        let other = node("vigil.local").recipe_key();
        assert_ne!(Rootfs::content_key(&recipe, &before), Rootfs::content_key(&other, &before));
        // Planned keys: a rootfs to be rebuilt matches no image.
        let build = Freshness::Build { why: "test".into(), fallback: Some("k".into()) };
        assert_eq!(Freshness::Current("k".into()).planned_key("base"), "k");
        assert_ne!(build.planned_key("base"), "k");
    }
}
