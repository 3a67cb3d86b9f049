//! The node image: the node rootfs plus the container runtime, the
//! Kubernetes multi-call binary, the flannel CNI plugin, systemd units, the
//! entrypoint and containerd's generated configuration (the "stage"), then
//! containerd's own state with every component image already unpacked
//! (see `preload.rs`).

use std::collections::BTreeMap;
use vigil_provider_docker::STATE_VOLUME_LABEL;

use serde::Serialize;

use super::{
    image::{ContextFile, Instruction, Recipe},
    sources,
};

/// Written into the image: what it was built from, for `vigil status`.
pub const BUILD_INFO: &str = "/etc/vigil/build.json";

/// containerd 2.x configuration (version 3), only the fields vigil sets.
#[derive(Debug, Serialize)]
pub struct ContainerdConfig {
    version: u8,
    plugins: Plugins,
}

#[derive(Debug, Serialize)]
struct Plugins {
    #[serde(rename = "io.containerd.cri.v1.images")]
    images: CriImages,
    #[serde(rename = "io.containerd.cri.v1.runtime")]
    runtime: CriRuntime,
}

#[derive(Debug, Serialize)]
struct CriImages {
    snapshotter: &'static str,
    /// The sandbox image is pinned so that image GC never removes it.
    pinned_images: BTreeMap<&'static str, String>,
}

#[derive(Debug, Serialize)]
struct CriRuntime {
    /// Without CAP_SYS_RESOURCE containerd cannot lower oom_score_adj below
    /// its own; clamp instead of failing every container.
    restrict_oom_score_adj: bool,
    containerd: RuntimeContainerd,
    cni: Cni,
}

#[derive(Debug, Serialize)]
struct RuntimeContainerd {
    default_runtime_name: &'static str,
    runtimes: BTreeMap<&'static str, Runtime>,
}

#[derive(Debug, Serialize)]
struct Runtime {
    runtime_type: &'static str,
    options: RuncOptions,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RuncOptions {
    /// Must match the kubelet's `cgroupDriver: systemd`.
    systemd_cgroup: bool,
    /// Debian's runc.
    binary_name: &'static str,
}

#[derive(Debug, Serialize)]
struct Cni {
    /// The flannel plugin vigil builds, then Debian's reference plugins.
    bin_dirs: Vec<&'static str>,
    conf_dir: &'static str,
}

impl ContainerdConfig {
    pub fn new(sandbox_image: String) -> Self {
        ContainerdConfig {
            version: 3,
            plugins: Plugins {
                images: CriImages {
                    snapshotter: "overlayfs",
                    pinned_images: BTreeMap::from([("sandbox", sandbox_image)]),
                },
                runtime: CriRuntime {
                    restrict_oom_score_adj: true,
                    containerd: RuntimeContainerd {
                        default_runtime_name: "runc",
                        runtimes: BTreeMap::from([(
                            "runc",
                            Runtime {
                                runtime_type: "io.containerd.runc.v2",
                                options: RuncOptions { systemd_cgroup: true, binary_name: "/usr/sbin/runc" },
                            },
                        )]),
                    },
                    cni: Cni { bin_dirs: vec!["/opt/cni/bin", "/usr/lib/cni"], conf_dir: "/etc/cni/net.d" },
                },
            },
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("containerd config serializes")
    }
}

/// Where the node image holds vigil's binaries, its units and containerd's
/// configuration: what a real host is given too ([`host_paths`]).
pub mod paths {
    pub const KUBE: &str = "/usr/local/bin/kube";
    pub const CONTAINERD: &str = "/usr/local/bin/containerd";
    pub const CONTAINERD_SHIM: &str = "/usr/local/bin/containerd-shim-runc-v2";
    pub const CTR: &str = "/usr/local/bin/ctr";
    pub const FLANNEL_CNI: &str = "/opt/cni/bin/flannel";
    /// The Kubernetes multi-call binary's names.
    pub const KUBE_LINKS: [&str; 3] = ["/usr/bin/kubelet", "/usr/bin/kubeadm", "/usr/bin/kubectl"];
    pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
    pub const UNITS: &str = "/etc/systemd/system";
    pub const CONTAINERD_UNIT: &str = "/etc/systemd/system/containerd.service";
    pub const KUBELET_UNIT: &str = "/etc/systemd/system/kubelet.service";
    pub const KUBELET_DROPIN: &str = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf";
    /// Debian's runc and reference CNI plugins, from the node root filesystem.
    pub const RUNC: &str = "/usr/sbin/runc";
    pub const CNI_PLUGINS: &str = "/usr/lib/cni";
}

/// What a real host is given of the node image, unpacked at its root: the
/// binaries, the links, containerd's configuration and the units (not the
/// entrypoint, which repairs what a container lacks), and Debian's runc and
/// CNI plugins.
pub fn host_paths() -> Vec<&'static str> {
    use paths::*;
    let mut all = vec![KUBE, CONTAINERD, CONTAINERD_SHIM, CTR, FLANNEL_CNI];
    all.extend(KUBE_LINKS);
    all.extend([
        CONTAINERD_CONFIG,
        CONTAINERD_UNIT,
        KUBELET_UNIT,
        KUBELET_DROPIN,
        RUNC,
        CNI_PLUGINS,
        BUILD_INFO,
    ]);
    all
}

/// Binaries the node image carries, by their build outputs.
pub struct NodeBinaries {
    pub kube: ContextFile,
    pub containerd: ContextFile,
    pub containerd_shim: ContextFile,
    pub ctr: ContextFile,
    pub flannel_cni: ContextFile,
}

fn text(dest: &str, data: &str, mode: u32) -> ContextFile {
    ContextFile::Bytes { dest: dest.into(), data: data.as_bytes().to_vec(), mode }
}

fn link(dest: &str, target: &str) -> ContextFile {
    ContextFile::Symlink { dest: dest.into(), target: target.into() }
}

#[derive(Serialize)]
pub struct BuildInfo<'a> {
    pub kubernetes: &'a str,
    pub etcd: &'a str,
    pub coredns: &'a str,
    pub pause: &'a str,
    pub flannel: &'a str,
    pub containerd: &'a str,
    pub metallb: &'a str,
    pub images: &'a [String],
}

/// The node image without the preloaded images.
pub fn stage_recipe(
    tag: String,
    rootfs_image: &str,
    rootfs_key: String,
    binaries: NodeBinaries,
    sandbox_image: String,
    build_info: &BuildInfo<'_>,
) -> Recipe {
    let wants = format!("{}/multi-user.target.wants", paths::UNITS);
    let [kubelet, kubeadm, kubectl] = paths::KUBE_LINKS;
    let files = vec![
        binaries.kube,
        link(kubelet, paths::KUBE),
        link(kubeadm, paths::KUBE),
        link(kubectl, paths::KUBE),
        binaries.containerd,
        binaries.containerd_shim,
        binaries.ctr,
        binaries.flannel_cni,
        text("/usr/local/bin/entrypoint", sources::node::ENTRYPOINT, 0o755),
        text(paths::CONTAINERD_CONFIG, &ContainerdConfig::new(sandbox_image).to_toml(), 0o644),
        text(paths::CONTAINERD_UNIT, sources::node::CONTAINERD_SERVICE, 0o644),
        text(paths::KUBELET_UNIT, sources::node::KUBELET_SERVICE, 0o644),
        text(paths::KUBELET_DROPIN, sources::node::KUBELET_KUBEADM_DROPIN, 0o644),
        link(&format!("{wants}/containerd.service"), "../containerd.service"),
        link(&format!("{wants}/kubelet.service"), "../kubelet.service"),
        text(BUILD_INFO, &serde_json::to_string_pretty(build_info).expect("serializes"), 0o644),
    ];
    Recipe {
        name: "node-stage",
        tags: vec![tag],
        instructions: vec![
            Instruction::From(rootfs_image.into()),
            Instruction::CopyRootfs,
            Instruction::Env("container", "docker".into()),
            // systemd's documented way to ask it to halt.
            Instruction::StopSignal("SIGRTMIN+3"),
            Instruction::Entrypoint(vec!["/usr/local/bin/entrypoint".into()]),
        ],
        files,
        parent_keys: vec![rootfs_key],
    }
}

/// The volume that holds containerd's preloaded state of content key `key`.
pub fn state_volume(key: &str) -> String {
    format!("vigil-containerd-state-{}", super::key::short(key))
}

/// The node image: the stage, naming the volume of containerd's preloaded
/// state that a provider gives each new node (the Docker provider
/// hard-links it into the node's /var: nothing is copied).
pub fn final_recipe(tag: String, stage: &Recipe, state_key: &str) -> Recipe {
    Recipe {
        name: "node",
        tags: vec![tag],
        instructions: vec![
            Instruction::From(stage.primary_tag().into()),
            Instruction::Label(STATE_VOLUME_LABEL, state_volume(state_key)),
        ],
        files: vec![],
        parent_keys: vec![stage.key(), state_key.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_config_matches_golden_file() {
        let toml = ContainerdConfig::new("vigil.local/pause:3.10.1".into()).to_toml();
        vigil_host::assert_golden(env!("CARGO_MANIFEST_DIR"), "containerd-config.toml", &toml);
    }
}
