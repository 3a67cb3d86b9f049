//! Debian root filesystems made with debootstrap and imported into Docker:
//! a small one for pod images that need iptables (kube-proxy, flannel) and a
//! test toolbox, and the node's, with systemd and the container runtime's
//! Debian parts (runc, CNI plugins).

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::{Error, Result, image, key::KeyBuilder, key::short};
use crate::{exec, progress::Progress};

pub const SUITE: &str = "bookworm";
/// Debian 13: its Prometheus (2.53) has Kubernetes service discovery, which
/// Debian 12's (2.42) was built without.
pub const MONITORING_SUITE: &str = "trixie";

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
        image: format!("{repository}/base:{SUITE}"),
        packages: &["iptables", "conntrack", "socat", "ca-certificates"],
        masked_units: &[],
    }
}

/// Prometheus and Alertmanager as Debian packages them (with the classic
/// web UI's JavaScript libraries), plus promtool and amtool, from trixie.
pub fn monitoring(repository: &str) -> Rootfs {
    Rootfs {
        name: "monitoring",
        suite: MONITORING_SUITE,
        image: format!("{repository}/monitoring:{MONITORING_SUITE}"),
        packages: &["prometheus", "prometheus-alertmanager", "ca-certificates"],
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

impl Rootfs {
    pub fn key(&self) -> String {
        let k = KeyBuilder::new("rootfs").part(self.name).part(self.suite);
        let k = self.packages.iter().fold(k, |k, p| k.part(p));
        self.masked_units.iter().fold(k.part("masked"), |k, u| k.part(u)).finish()
    }

    /// debootstraps and imports the rootfs unless the image carries this key.
    pub async fn ensure(&self, docker: &bollard::Docker, cache: &Path, progress: &Progress) -> Result<()> {
        let key = self.key();
        let title =
            format!("debootstrap {} rootfs ({}, {} packages)", self.name, self.suite, self.packages.len());
        if image::has_key(docker, &self.image, &key).await? {
            progress.line(title).skipped("image up to date");
            return Ok(());
        }
        let step = progress.line(title);
        let mirror = debian_mirror()?;
        let dir = cache.join("rootfs").join(format!("{}-{}", self.name, short(&key)));
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
            .arg(&mirror);
        exec::run_logged(cmd, &log, |line| {
            // Lines naming the mirror are left out of the progress.
            if let Some(what) = line.strip_prefix("I: ").filter(|l| !l.contains("://")) {
                step.update(what);
            }
        })
        .await
        .map_err(|e| Error::step(self.name, "debootstrap", e))?;

        step.update("trimming and importing into Docker");
        self.trim(&dir).await?;
        image::import_rootfs(docker, &dir, &self.image, &key).await?;
        tokio::fs::remove_dir_all(&dir).await.map_err(|e| Error::io(&dir, e))?;
        step.done_with(format!("{} (log {})", self.image, log.display()));
        Ok(())
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
    let candidates =
        [PathBuf::from("/etc/apt/sources.list.d/debian.sources"), PathBuf::from("/etc/apt/sources.list")];
    for path in &candidates {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(mirror) = parse_mirror(&text)
        {
            return Ok(mirror);
        }
    }
    Err(Error::NoMirror)
}

/// The first non-security Debian URI of a deb822 or one-line sources file.
fn parse_mirror(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.strip_prefix("URIs:").map(str::trim).or_else(|| {
                l.strip_prefix("deb ").and_then(|rest| rest.split_whitespace().find(|w| w.contains("://")))
            })
        })
        .flat_map(str::split_whitespace)
        .find(|uri| !uri.contains("security"))
        .map(str::to_owned)
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

    #[test]
    fn keys_change_with_packages() {
        let a = base("vigil.local");
        let mut b = base("vigil.local");
        assert_eq!(a.key(), b.key());
        b.packages = &["iptables"];
        assert_ne!(a.key(), b.key());
        assert_ne!(base("x").key(), node("x").key());
    }
}
