//! The node container: what it needs to run systemd, containerd, runc and
//! the kubelet on a host where `--privileged` is refused, the way kind
//! assembles its flags (`commonArgs`, `runArgsForNode`).

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointIpamConfig, EndpointSettings, HostConfig,
    HostConfigCgroupnsModeEnum, Mount, MountType, NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
};

use super::{CLUSTER_LABEL, ROLE_LABEL, network};
use vigil_model::cluster::ClusterSpec;
use vigil_provider::NodeSpec;

/// The node's /var: a named volume, so that `down` finds it, a restarted
/// node keeps its state, and containerd's root is not on overlayfs.
pub fn volume_name(node: &str) -> String {
    format!("{node}-var")
}

/// What a container needs to run systemd, containerd, runc and the kubelet
/// on this host. `--privileged` fails here ("unable to apply caps"): the
/// host's bounding set lacks CAP_SYS_RESOURCE. Everything else is granted one
/// by one. The node containers and the image preloader use it.
pub fn nested_runtime_host_config() -> HostConfig {
    let tmpfs = ["/tmp", "/run", "/run/lock"].iter().map(|p| ((*p).to_owned(), String::new())).collect();
    HostConfig {
        cap_add: Some(vec!["ALL".into()]),
        cap_drop: Some(vec!["SYS_RESOURCE".into()]),
        security_opt: Some(vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()]),
        // The CLI's `--security-opt systempaths=unconfined`: nothing in
        // /proc and /sys masked or read-only, for kubelet and kube-proxy.
        masked_paths: Some(vec![]),
        readonly_paths: Some(vec![]),
        // Nested containers need device nodes (and runc's cgroup device rules).
        device_cgroup_rules: Some(vec!["a *:* rwm".into()]),
        // kubelet reads /dev/kmsg (OOM watcher) and exits without it.
        devices: Some(vec![DeviceMapping {
            path_on_host: Some("/dev/kmsg".into()),
            path_in_container: Some("/dev/kmsg".into()),
            cgroup_permissions: Some("rwm".into()),
        }]),
        // The node sees its own cgroup as the root of each hierarchy.
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        // systemd wants /run and /tmp as tmpfs, as on a real machine.
        tmpfs: Some(tmpfs),
        ..Default::default()
    }
}

/// Populates a new node's /var (the volume `volume_name(node)`, which Docker
/// first fills with the image's own /var): containerd's state from the
/// preloaded volume `state`, its unpacked layers hard-linked (overlayfs only
/// reads them, and a link costs nothing), its databases copied (each node's
/// containerd writes its own). Both volumes are reached through one mount of
/// Docker's volume directory, since a hard link cannot cross mounts.
const POPULATE_SCRIPT: &str = r#"set -eu
src="/volumes/$STATE/_data"
dst="/volumes/$NODE_VOLUME/_data/lib/containerd"
layers=io.containerd.snapshotter.v1.overlayfs/snapshots
test -d "$src/$layers"
rm -rf "$dst"
mkdir -p "$dst/${layers%/*}"
tar -C "$src" --exclude "./$layers" --xattrs --xattrs-include='*' -cf - . | tar -C "$dst" --xattrs --xattrs-include='*' -xpf -
cp -a --link "$src/$layers" "$dst/${layers%/*}/"
"#;

/// The one-shot container that runs [`POPULATE_SCRIPT`] for `node`.
pub fn populate_body(node: &str, image: &str, state: &str, volumes_dir: &str) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), POPULATE_SCRIPT.into()]),
        env: Some(vec![format!("STATE={state}"), format!("NODE_VOLUME={}", volume_name(node))]),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                target: Some("/var".into()),
                source: Some(volume_name(node)),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            binds: Some(vec![format!("{volumes_dir}:/volumes")]),
            network_mode: Some("none".into()),
            // Overlay whiteouts and opaque directories are device nodes and
            // trusted.* attributes: copying them takes the capabilities.
            ..nested_runtime_host_config()
        }),
        ..Default::default()
    }
}

/// How long a SYN nobody answered keeps its conntrack entry in a node
/// (the kernel's default is 120 s). kube-proxy removes stale entries for UDP
/// only (kubernetes/kubernetes#101607): a SYN sent to an endpoint on a dead
/// node leaves one behind, and any later connection that happens to reuse
/// that client's source port follows it to the dead pod, long after the
/// endpoint is gone. A few seconds still spans a SYN's first retransmissions.
pub const SYN_SENT_TIMEOUT_SECONDS: u32 = 3;

pub fn create_body(spec: &ClusterSpec, node: &NodeSpec, image: &str) -> ContainerCreateBody {
    let host_config = HostConfig {
        // Per network namespace: the host's own value is left alone.
        sysctls: Some(HashMap::from([(
            "net.netfilter.nf_conntrack_tcp_timeout_syn_sent".into(),
            SYN_SENT_TIMEOUT_SECONDS.to_string(),
        )])),
        mounts: Some(vec![Mount {
            target: Some("/var".into()),
            source: Some(volume_name(&node.name)),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }]),
        // A node stopped on purpose stays down; a host reboot brings the cluster back.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            ..Default::default()
        }),
        network_mode: Some(network::name(spec)),
        ..nested_runtime_host_config()
    };
    let endpoint = EndpointSettings {
        // A static address, so a restarted node keeps the one its certificates name.
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(node.ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.into()),
        hostname: Some(node.name.clone()),
        labels: Some(HashMap::from([
            (CLUSTER_LABEL.into(), spec.name.clone()),
            (ROLE_LABEL.into(), node.role.as_str().into()),
        ])),
        env: Some(vec!["container=docker".into()]),
        tty: Some(true),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network::name(spec), endpoint)])),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_flags_replace_privileged() {
        let spec = ClusterSpec::default();
        let worker = &vigil_provider::numbered_plan(&spec)[1];
        let body = create_body(&spec, worker, "img");
        let host = body.host_config.unwrap();
        assert_eq!(host.privileged, None);
        assert_eq!(host.cap_drop.unwrap(), ["SYS_RESOURCE"]);
        assert_eq!(host.cgroupns_mode, Some(HostConfigCgroupnsModeEnum::PRIVATE));
        assert_eq!(host.mounts.unwrap()[0].source.as_deref(), Some("vigil-worker-var"));
        assert_eq!(host.sysctls.unwrap()["net.netfilter.nf_conntrack_tcp_timeout_syn_sent"], "3");
        let labels = body.labels.unwrap();
        assert_eq!(labels[ROLE_LABEL], "worker");
        assert_eq!(labels[CLUSTER_LABEL], "vigil");
    }
}
