//! The pinned upstream releases, in one place. The Go modules under
//! `upstream/` pin the same versions in their `go.mod`; a unit test keeps the
//! two in agreement.

/// The Kubernetes release. 1.34 is the newest minor whose kubelet starts on a
/// cgroup v1 host by default (1.35 sets `failCgroupV1: true` and kubeadm
/// turns the warning into an error); .12 is the newest 1.34 patch the Go
/// module proxy serves here.
pub const KUBERNETES: &str = "v1.34.12";
/// `gitMinor` for the version ldflags.
pub const KUBERNETES_MINOR: &str = "34";
/// kubeadm v1.34's `DefaultEtcdVersion` (image tag; the binary is 3.6.5).
pub const ETCD_IMAGE_TAG: &str = "3.6.5-0";
pub const ETCD: &str = "v3.6.5";
/// kubeadm v1.34's `CoreDNSVersion`.
pub const COREDNS: &str = "v1.12.1";
/// kubeadm v1.34's `PauseVersion`, also containerd's pinned sandbox image.
pub const PAUSE: &str = "3.10.1";
/// Newest flannel release whose dependencies the module proxy serves in full.
pub const FLANNEL: &str = "v0.27.4";
/// The flannel CNI plugin: its own repository is not served by the module
/// proxy, so the plugin comes from containernetworking/plugins' last release
/// that still carried `plugins/meta/flannel` (same code, same subnet.env contract).
pub const FLANNEL_CNI: &str = "v0.9.1";
/// containerd's support matrix lists 2.1.3+ for Kubernetes 1.34; Debian 12's
/// 1.6.20 is below every listed minimum.
pub const CONTAINERD: &str = "v2.1.6";
/// local-path-provisioner: the newest release the module proxy serves here.
pub const LOCAL_PATH: &str = "v0.0.30";
/// kube-state-metrics: v2.16.0 is the newest release the module proxy serves
/// here (v2.17.0 is refused); its client-go is v0.32, within its supported skew.
pub const KUBE_STATE_METRICS: &str = "v2.16.0";
/// Jaeger v2 (an OpenTelemetry Collector distribution), released as v1.75.0
/// of its Go module: the proxy also serves v1.76.0, but not as an approved
/// release.
pub const JAEGER: &str = "v1.75.0";
/// Prometheus 3.16.0 and promtool, released as v0.316.0 of its Go module
/// (the newest the module proxy serves here); its UI is built from the
/// module's own sources.
pub const PROMETHEUS_MODULE: &str = "v0.316.0";
pub const PROMETHEUS: &str = "v3.16.0";
/// Alertmanager and its new (Mantine) UI, from its Go module: the newest
/// release the module proxy serves here.
pub const ALERTMANAGER: &str = "v0.35.0";
/// VictoriaLogs and its agent vlagent, one Go module.
pub const VICTORIALOGS: &str = "v1.52.2";
/// cAdvisor (standalone, for the exporter benchmark): its root and `lib` modules.
pub const CADVISOR: &str = "v0.60.6";
/// MetalLB: v0.16 needs a frr-k8s release the module proxy does not serve here.
pub const METALLB: &str = "v0.15.2";
/// The Debian release of the node's and the pods' root filesystems.
pub const DEBIAN_SUITE: &str = "bookworm";

#[cfg(test)]
mod tests {
    use super::*;

    fn requires(go_mod: &str, module: &str) -> Option<String> {
        go_mod.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == module).then(|| words.next().map(str::to_owned))?
        })
    }

    #[test]
    fn go_modules_pin_the_same_versions() {
        let pins = [
            (include_str!("../../../upstream/kube/go.mod"), "k8s.io/kubernetes", KUBERNETES),
            (include_str!("../../../upstream/etcd/go.mod"), "go.etcd.io/etcd/server/v3", ETCD),
            (include_str!("../../../upstream/coredns/go.mod"), "github.com/coredns/coredns", COREDNS),
            (include_str!("../../../upstream/flannel/go.mod"), "github.com/flannel-io/flannel", FLANNEL),
            (
                include_str!("../../../upstream/flannel-cni/go.mod"),
                "github.com/containernetworking/plugins",
                FLANNEL_CNI,
            ),
            (include_str!("../../../upstream/metallb/go.mod"), "go.universe.tf/metallb", METALLB),
            (
                include_str!("../../../upstream/local-path-provisioner/go.mod"),
                "github.com/rancher/local-path-provisioner",
                LOCAL_PATH,
            ),
            (
                include_str!("../../../upstream/kube-state-metrics/go.mod"),
                "k8s.io/kube-state-metrics/v2",
                KUBE_STATE_METRICS,
            ),
            (include_str!("../../../upstream/jaeger/go.mod"), "github.com/jaegertracing/jaeger", JAEGER),
            (
                include_str!("../../../upstream/prometheus/go.mod"),
                "github.com/prometheus/prometheus",
                PROMETHEUS_MODULE,
            ),
            (
                include_str!("../../../upstream/alertmanager/go.mod"),
                "github.com/prometheus/alertmanager",
                ALERTMANAGER,
            ),
            (
                include_str!("../../../upstream/victorialogs/go.mod"),
                "github.com/VictoriaMetrics/VictoriaLogs",
                VICTORIALOGS,
            ),
            (include_str!("../../../upstream/cadvisor/go.mod"), "github.com/google/cadvisor/lib", CADVISOR),
            (
                include_str!("../../../upstream/containerd/go.mod"),
                "github.com/containerd/containerd/v2",
                CONTAINERD,
            ),
        ];
        for (go_mod, module, pinned) in pins {
            assert_eq!(requires(go_mod, module).as_deref(), Some(pinned), "{module} in go.mod");
        }
    }

    #[test]
    fn etcd_image_tag_names_the_etcd_release() {
        assert!(ETCD_IMAGE_TAG.starts_with(ETCD.trim_start_matches('v')));
        assert!(KUBERNETES.starts_with(&format!("v1.{KUBERNETES_MINOR}.")));
    }
}
