//! The upstream recipes vigil carries inside its own binary: each Go module
//! under `upstream/` (go.mod and go.sum pin every dependency; a main.go only
//! where vigil composes upstream packages) and the node image's files.

/// A Go module from `upstream/<dir>`, embedded at compile time.
pub struct GoModule {
    pub dir: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

macro_rules! go_module {
    ($dir:literal, [$($file:literal),* $(,)?]) => {
        GoModule {
            dir: $dir,
            files: &[$(($file, include_str!(concat!("../../../upstream/", $dir, "/", $file)))),*],
        }
    };
}

pub static KUBE: GoModule = go_module!("kube", ["go.mod", "go.sum", "main.go"]);
pub static ETCD: GoModule = go_module!("etcd", ["go.mod", "go.sum"]);
pub static COREDNS: GoModule = go_module!("coredns", ["go.mod", "go.sum"]);
pub static FLANNEL: GoModule = go_module!("flannel", ["go.mod", "go.sum"]);
pub static FLANNEL_CNI: GoModule = go_module!("flannel-cni", ["go.mod", "go.sum"]);
pub static CONTAINERD: GoModule = go_module!("containerd", ["go.mod", "go.sum"]);
pub static METALLB: GoModule = go_module!("metallb", ["go.mod", "go.sum"]);
pub static LOCAL_PATH: GoModule = go_module!("local-path-provisioner", ["go.mod", "go.sum"]);
pub static KUBE_STATE_METRICS: GoModule = go_module!("kube-state-metrics", ["go.mod", "go.sum"]);
pub static JAEGER: GoModule = go_module!("jaeger", ["go.mod", "go.sum"]);
pub static PROMETHEUS: GoModule = go_module!("prometheus", ["go.mod", "go.sum"]);
pub static ALERTMANAGER: GoModule = go_module!("alertmanager", ["go.mod", "go.sum"]);
pub static VICTORIALOGS: GoModule = go_module!("victorialogs", ["go.mod", "go.sum"]);
/// Only for the exporter benchmark; never deployed.
pub static CADVISOR: GoModule = go_module!("cadvisor", ["go.mod", "go.sum", "main.go"]);

/// Files of the node image that are plain text by nature (a shell
/// entrypoint, systemd units); containerd's TOML is generated in `node.rs`.
pub mod node {
    pub const ENTRYPOINT: &str = include_str!("../../../upstream/node/entrypoint");
    pub const CONTAINERD_SERVICE: &str = include_str!("../../../upstream/node/containerd.service");
    pub const KUBELET_SERVICE: &str = include_str!("../../../upstream/node/kubelet.service");
    pub const KUBELET_KUBEADM_DROPIN: &str = include_str!("../../../upstream/node/10-kubeadm.conf");
}
