//! "Real hosts" for the SSH provider's end-to-end checks: containers
//! started bare (Debian 12 with systemd and sshd only: no Kubernetes, no
//! containerd, nothing of vigil) on a network of their own, which vigil
//! reaches only over SSH. The test stands in for the hosts' owner: it puts
//! the user's public key in root's `authorized_keys` and reads each host's
//! key out of band (`docker exec`, as an owner reads it on the console) to
//! pin it or list it in `known_hosts`.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, ensure};
use vigil::{
    build::{
        image::{ContextFile, Instruction, Recipe},
        rootfs::{self, Rootfs},
    },
    cluster::{ClusterSpec, Role},
    poll::until,
    progress::Progress,
    provider::{NodeArtefact, NodeProvider, NodeSpec, docker::DockerProvider, nodeutils},
};
use vigil_provider_ssh::inventory::{Host, Inventory, SshDefaults};

/// What the hosts run before systemd (`tests/hosts/entrypoint`).
const ENTRYPOINT: &str = include_str!("../hosts/entrypoint");

/// Debian 12 with systemd and OpenSSH's server, and what every Debian
/// install has besides (iproute2 and kmod are of priority `important`), and
/// nothing else.
pub fn rootfs(repository: &str) -> Rootfs {
    Rootfs {
        name: "ssh-host",
        suite: rootfs::SUITE,
        image: format!("{repository}/ssh-host-rootfs:{}", rootfs::SUITE),
        packages: &["systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "kmod"],
        masked_units: &[
            // No consoles or udev in a container, as on the node.
            "getty@tty1.service",
            "console-getty.service",
            "systemd-udevd.service",
            "systemd-udev-trigger.service",
            "systemd-networkd-wait-online.service",
            "apt-daily.timer",
            "apt-daily-upgrade.timer",
            "e2scrub_all.timer",
            "fstrim.timer",
        ],
    }
}

/// Builds the bare host's image unless it is current; returns its name.
pub async fn ensure_image(repository: &str, cache: &Path) -> Result<String> {
    let docker = vigil::docker::connect().await?;
    let progress = Progress::default();
    let rootfs = rootfs(repository);
    let sources = vigil::build::debian::Sources::from_host().ok();
    let fresh = rootfs.freshness(&docker, cache, sources.as_ref(), &progress).await?;
    let key = rootfs.ensure(&docker, cache, &progress, fresh).await?;
    let recipe = Recipe {
        name: "ssh-host",
        tags: vec![format!("{repository}/ssh-host:e2e")],
        instructions: vec![
            Instruction::From(rootfs.image.clone()),
            Instruction::CopyRootfs,
            Instruction::Env("container", "docker".into()),
            Instruction::StopSignal("SIGRTMIN+3"),
            Instruction::Entrypoint(vec!["/usr/local/bin/entrypoint".into()]),
        ],
        files: vec![ContextFile::Bytes {
            dest: "/usr/local/bin/entrypoint".into(),
            data: ENTRYPOINT.as_bytes().to_vec(),
            mode: 0o755,
        }],
        parent_keys: vec![key],
    };
    let log = cache.join("logs/ssh-host-image.log");
    recipe.ensure(&docker, &cache.join("work"), &log).await?;
    Ok(recipe.primary_tag().to_owned())
}

/// The summary line of `host` in a runbook `vigil` wrote:
/// `| host | commands | failed | seconds | MiB sent |`.
pub fn runbook_summary<'a>(runbook: &'a str, host: &str) -> Option<&'a str> {
    runbook.lines().find(|l| l.starts_with(&format!("| {host} |")))
}

/// Three bare hosts (a control plane and two workers) on their own network.
pub struct BareHosts {
    pub provider: DockerProvider,
    pub spec: ClusterSpec,
    pub nodes: Vec<NodeSpec>,
    /// The user's key pair, made for the test (`key` and `key.pub`).
    pub dir: tempfile::TempDir,
}

impl BareHosts {
    /// The hosts' network: apart from the test cluster's.
    pub fn spec() -> ClusterSpec {
        ClusterSpec {
            name: "vigil-e2e-hosts".into(),
            node_subnet: "172.29.251.0/24".parse().expect("valid"),
            workers: 2,
            ..ClusterSpec::default()
        }
    }

    /// Starts the hosts afresh (any left by an earlier run are removed
    /// first), gives root the test's key and waits until sshd answers.
    pub async fn start(image: &str) -> Result<BareHosts> {
        let provider = DockerProvider::new(vigil::docker::connect().await?);
        let spec = Self::spec();
        provider.delete_cluster(&spec.name).await?;
        let nodes = provider.plan(&spec);
        let line = Progress::default().line(format!("bare hosts of {image}"));
        provider.provision(&spec, &nodes, &NodeArtefact { image: image.into() }, &line).await?;
        line.done();
        let dir = tempfile::tempdir()?;
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "vigil-e2e", "-f"])
            .arg(dir.path().join("key"))
            .status()
            .context("ssh-keygen (Debian's openssh-client)")?;
        ensure!(status.success(), "ssh-keygen failed");
        let public = std::fs::read(dir.path().join("key.pub"))?;
        let hosts = BareHosts { provider, spec, nodes, dir };
        for node in &hosts.nodes {
            let machine = hosts.provider.node(&node.name);
            until(
                format!("{}: sshd", node.name),
                Duration::from_secs(60),
                Duration::from_millis(250),
                || async {
                    match machine.run(&["systemctl", "is-active", "ssh"], None).await {
                        Ok(out) if out.stdout.trim() == "active" => Ok(()),
                        Ok(out) => Err(out.stdout),
                        Err(e) => Err(e.to_string()),
                    }
                },
            )
            .await?;
            machine.copy_in("/root/.ssh/authorized_keys", &public, 0o600).await?;
        }
        Ok(hosts)
    }

    /// `ssh-ed25519 AAAA...` of `node`, read on the host itself.
    pub async fn host_key(&self, node: &str) -> Result<String> {
        let text =
            nodeutils::read_file(self.provider.node(node).as_ref(), "/etc/ssh/ssh_host_ed25519_key.pub")
                .await?;
        Ok(text.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
    }

    /// An inventory of the hosts: the control plane's key in `known_hosts`,
    /// the workers' pinned, as a user would mix them.
    pub async fn inventory(&self) -> Result<Inventory> {
        let mut known_hosts = String::new();
        let mut hosts = vec![];
        for node in &self.nodes {
            let key = self.host_key(&node.name).await?;
            let pinned = if node.role == Role::ControlPlane {
                known_hosts.push_str(&format!("{} {key}\n", node.ip));
                None
            } else {
                Some(key)
            };
            hosts.push(Host {
                address: node.ip,
                role: node.role,
                name: Some(node.name.clone()),
                user: None,
                port: None,
                key: None,
                host_key: pinned,
            });
        }
        let known = self.dir.path().join("known_hosts");
        std::fs::write(&known, known_hosts)?;
        Ok(Inventory {
            name: self.spec.name.clone(),
            network: self.spec.node_subnet,
            load_balancer_pool: format!(
                "{}-{}",
                self.spec.node_network_host(200),
                self.spec.node_network_host(210)
            )
            .parse()
            .map_err(anyhow::Error::msg)?,
            pod_subnet: self.spec.pod_subnet,
            service_subnet: self.spec.service_subnet,
            ssh: SshDefaults {
                user: Some("root".into()),
                port: None,
                key: Some(self.dir.path().join("key")),
                known_hosts: Some(known),
            },
            hosts,
        })
    }

    /// Writes `inventory` as a file beside the keys; returns its path.
    pub fn write(&self, name: &str, inventory: &Inventory) -> Result<std::path::PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_yaml::to_string(inventory)?)?;
        Ok(path)
    }

    /// Removes the hosts and their network.
    pub async fn remove(&self) -> Result<()> {
        self.provider.delete_cluster(&self.spec.name).await?;
        Ok(())
    }
}
