//! What vigil does to a node over any transport, through [`Node::run`] and
//! [`Node::copy_in`] only (kind's `nodeutils`): files, containerd's images,
//! the network partition of the fault hooks, and where to look when
//! something on a node fails.

use super::{CommandError, Node};

/// containerd's namespace for the kubelet's images and containers.
const K8S_NAMESPACE: &str = "k8s.io";

pub async fn file_exists(node: &dyn Node, path: &str) -> bool {
    node.run(&["test", "-e", path], None).await.is_ok()
}

pub async fn read_file(node: &dyn Node, path: &str) -> Result<String, CommandError> {
    node.run(&["cat", path], None).await.map(|o| o.stdout)
}

/// Whether the node's containerd has every one of `refs`.
pub async fn has_images(node: &dyn Node, refs: &[String]) -> bool {
    let listed = node.run(&["ctr", "--namespace", K8S_NAMESPACE, "images", "ls", "--quiet"], None).await;
    listed.is_ok_and(|out| refs.iter().all(|r| out.stdout.lines().any(|l| l == r)))
}

/// Imports a `docker save` archive into the node's containerd, where the
/// kubelet finds its images (nothing is ever pulled).
pub async fn load_images(node: &dyn Node, archive: Vec<u8>) -> Result<(), CommandError> {
    node.run(&["ctr", "--namespace", K8S_NAMESPACE, "images", "import", "--digests", "-"], Some(archive))
        .await
        .map(|_| ())
}

/// The journal of a unit, as a hint in an error message.
pub fn journal_hint(node: &dyn Node, unit: &str) -> String {
    format!("journal: `{} | tail -50`", node.shell_hint(&format!("journalctl -u {unit} --no-pager")))
}

/// The chain `isolate` jumps to first from INPUT, OUTPUT and FORWARD;
/// loopback stays open so the node's own services keep talking to each other.
const ISOLATE_SCRIPT: &str = "set -e
iptables -N VIGIL-ISOLATE 2>/dev/null || iptables -F VIGIL-ISOLATE
iptables -A VIGIL-ISOLATE -i lo -j RETURN
iptables -A VIGIL-ISOLATE -o lo -j RETURN
iptables -A VIGIL-ISOLATE -j DROP
for chain in INPUT OUTPUT FORWARD; do
  iptables -C $chain -j VIGIL-ISOLATE 2>/dev/null || iptables -I $chain 1 -j VIGIL-ISOLATE
done";

const RECONNECT_SCRIPT: &str = "set -e
for chain in INPUT OUTPUT FORWARD; do
  while iptables -D $chain -j VIGIL-ISOLATE 2>/dev/null; do :; done
done
iptables -F VIGIL-ISOLATE 2>/dev/null || true
iptables -X VIGIL-ISOLATE 2>/dev/null || true";

/// A partition, not an unplugged cable: every packet in or out of the node
/// (and through it, for its pods) is dropped, while its interface, address
/// and routes stay as they are, so `reconnect` restores exactly the network
/// it had (flannel's VXLAN device included, which a Docker
/// disconnect/connect would orphan). Works the same on a real host.
pub async fn isolate(node: &dyn Node) -> Result<(), CommandError> {
    node.run(&["sh", "-c", ISOLATE_SCRIPT], None).await.map(|_| ())
}

pub async fn reconnect(node: &dyn Node) -> Result<(), CommandError> {
    node.run(&["sh", "-c", RECONNECT_SCRIPT], None).await.map(|_| ())
}
