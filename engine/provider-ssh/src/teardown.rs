//! `vigil down --inventory` on one host: the cluster taken apart (what
//! `kubeadm reset` does, then what it says it leaves: the pod network's
//! configuration, interfaces and packet-filter rules), vigil's build
//! removed by its list, and vigil's preflight changes undone. What stays
//! (the host's own files at the bundle's paths, kernel settings in effect
//! until the next boot) is said, never left silently.

use vigil_provider::{CommandError, Node};

use crate::{install, preflight};

/// Takes the cluster apart on a host, finding each part already gone when
/// it is. Packet-filter rules go after the kubelet stopped (it would add
/// its own again) and before containerd does: a host without iptables of
/// its own cleans them with the one in the kube-proxy image, run on the
/// host's network.
const CLUSTER_SCRIPT: &str = r#"set -u
say() { echo "vigil-down: $*"; }
if command -v kubeadm >/dev/null 2>&1 && [ -d /etc/kubernetes ]; then
  out=$(kubeadm reset --force --cleanup-tmp-dir 2>&1) \
    || say "kubeadm reset failed ($(printf '%s' "$out" | tail -n 1)); what it leaves is removed below"
fi
systemctl stop kubelet.service 2>/dev/null || true
# The pods go before their rules: kube-proxy would program them again.
systemctl stop kubepods.slice 2>/dev/null || true
rules='rc=0
for v in iptables ip6tables; do for t in filter nat mangle raw; do
  $v-save -t $t >/dev/null 2>&1 || continue
  $v-save -t $t | grep -v -E "(^:|-A |-j )(KUBE|FLANNEL|CNI|VIGIL)-" | $v-restore -T $t || rc=1
done; done
exit $rc'
proxy=$(sed -n 's/.*"\([^"]*\/kube-proxy:[^"]*\)".*/\1/p' /etc/vigil/build.json 2>/dev/null | head -n 1)
if command -v iptables-save >/dev/null 2>&1; then
  sh -c "$rules" || say "the cluster's packet-filter rules could not all be removed"
elif [ -n "$proxy" ] && ctr --namespace k8s.io images ls --quiet 2>/dev/null | grep -qxF "$proxy"; then
  ctr --namespace k8s.io containers rm vigil-down-rules >/dev/null 2>&1 || true
  ctr --namespace k8s.io run --rm --net-host --privileged "$proxy" vigil-down-rules sh -c "$rules" \
    || say "the cluster's packet-filter rules could not all be removed"
else
  say "the cluster's packet-filter rules stay: no iptables on the host, nor the kube-proxy image"
fi
for link in cni0 flannel.1; do
  [ -e "/sys/class/net/$link" ] || continue
  if command -v ip >/dev/null 2>&1; then
    ip link delete "$link" || say "interface $link stays"
  else
    say "interface $link stays: no ip command (iproute2) on the host"
  fi
done
systemctl stop containerd.service 2>/dev/null || true
# The shims of the cluster's containers only (namespace k8s.io), not another containerd's.
for dir in /proc/[0-9]*; do
  [ "$(cat "$dir/comm" 2>/dev/null)" = containerd-shim ] || continue
  tr '\0' ' ' < "$dir/cmdline" 2>/dev/null | grep -q -- '-namespace k8s.io' && kill -9 "${dir#/proc/}" 2>/dev/null
done
awk '$2 ~ "^/(run/containerd|var/lib/containerd|var/lib/kubelet|run/netns)/" { print $2 }' /proc/self/mounts \
  | sort -r | while read -r mountpoint; do umount -l "$mountpoint" 2>/dev/null; done
rm -rf /etc/cni/net.d/10-flannel.conflist /var/lib/cni /run/flannel /etc/kubernetes /var/lib/kubelet \
  /var/lib/etcd /var/log/pods /var/log/containers /var/local-path-provisioner /var/lib/containerd \
  /var/lib/containerd.vigil-new /run/containerd
rmdir /etc/cni/net.d /etc/cni 2>/dev/null || true
"#;

/// What is left of the host afterwards, each with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TornDown {
    /// vigil's files removed.
    pub removed: Vec<String>,
    pub left: Vec<String>,
}

/// Takes the cluster and vigil's build off `node`. A host without vigil's
/// build (never given it, or already cleaned) keeps everything but vigil's
/// own preflight files: what looks like a cluster there is not vigil's.
pub async fn teardown(node: &dyn Node) -> Result<TornDown, CommandError> {
    let installed_script = format!("if [ -e {} ]; then echo installed; fi", install::INSTALLED_LIST);
    let installed = node.run(&["sh", "-c", &installed_script], None).await?.stdout.trim() == "installed";
    let mut left = vec![];
    if installed {
        let out = node.run(&["sh", "-c", CLUSTER_SCRIPT], None).await?;
        left.extend(
            out.stdout
                .lines()
                .filter_map(|l| l.strip_prefix("vigil-down: "))
                .map(|l| format!("{}: {l}", node.name())),
        );
    }
    let kept_script = format!("if [ -e {0} ]; then cat {0}; fi", install::KEPT_LIST);
    let kept = node.run(&["sh", "-c", &kept_script], None).await?.stdout;
    left.extend(
        kept.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{}: /{} (the host's own, kept)", node.name(), l.trim())),
    );
    let removed = install::uninstall(node).await?;
    let undone = node.run(&["sh", "-c", &undo_script()], None).await?;
    left.extend(
        undone
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{}: {l} stays in effect until the host boots again", node.name())),
    );
    Ok(TornDown { removed, left })
}

/// Undoes vigil's preflight changes: its modules and sysctl files go, the
/// swap lines it marked in fstab come back and swap is turned on again.
/// Prints the settings now in effect that only a boot resets (the kernel's
/// earlier values are not known).
fn undo_script() -> String {
    format!(
        r#"set -u
if [ -e {sysctls} ]; then sed -n 's/^\([^=]*\)=.*/\1/p' {sysctls}; rm -f {sysctls}; fi
if [ -e {modules} ]; then sed 's/^/module /' {modules}; rm -f {modules}; fi
if grep -q '^{mark}' /etc/fstab 2>/dev/null; then sed -i 's/^{mark}//' /etc/fstab; swapon -a || true; fi
rm -rf /var/lib/vigil /etc/vigil
rmdir /etc/systemd/system/kubelet.service.d /etc/containerd /opt/cni/bin /opt/cni 2>/dev/null || true
"#,
        sysctls = preflight::SYSCTL_FILE,
        modules = preflight::MODULES_FILE,
        mark = preflight::FSTAB_MARK,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_undo_names_vigils_own_files_and_marks_only() {
        let script = undo_script();
        assert!(script.contains("rm -f /etc/sysctl.d/90-vigil.conf"), "{script}");
        assert!(script.contains("rm -f /etc/modules-load.d/vigil.conf"), "{script}");
        assert!(script.contains(&format!("sed -i 's/^{}//' /etc/fstab", preflight::FSTAB_MARK)));
    }

    #[test]
    fn the_rules_removed_are_the_clusters_chains_only() {
        // Chains and jumps of kube-proxy, the kubelet, flannel, the CNI
        // plugins and vigil's isolate: the host's own rules stay.
        assert!(CLUSTER_SCRIPT.contains(r#"grep -v -E "(^:|-A |-j )(KUBE|FLANNEL|CNI|VIGIL)-""#));
        assert!(
            CLUSTER_SCRIPT.find("systemctl stop kubelet").unwrap() < CLUSTER_SCRIPT.find("$rules").unwrap()
        );
    }
}
