//! The hosts of an inventory as a [`NodeProvider`]: `up` provisions them
//! (vigil's preflight changes, its build, the node images) and then runs
//! the same steps as on node containers; `down` takes the cluster and
//! vigil's build off them again.
//!
//! Faults a host supports over SSH, with no power switch vigil can reach:
//! `stop` and `kill` end the node's Kubernetes (kubelet, containerd and
//! every pod: orderly, or SIGKILL at once) while the machine and its SSH
//! stay up; `start` brings them back. `isolate` is refused: a partition made
//! over SSH cuts the connection that would have to mend it.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::OnceCell;
use vigil_host::progress::Line;
use vigil_model::cluster::ClusterSpec;
use vigil_provider::{
    BoxError, CommandError, Error, Fault, HostPayload, MachineState, Node, NodeArtefact, NodeInfo,
    NodeProvider, NodeSpec, Output, Power, ProviderInfo, Removed, Result, nodeutils,
};

use crate::{
    hosts::{self, HostReport, Hosts},
    install,
    inventory::{Inventory, Machine},
    node::SshNode,
    preflight, runbook, teardown,
};

/// Prints whether containerd's root has ever been used (`used`) or not
/// (`fresh`): a host that never ran it may be given the preloaded root.
const ROOT_STATE_SCRIPT: &str = "if [ -e /var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db ]; then echo used; else echo fresh; fi";
/// containerd's root replaced by the preloaded one read on stdin: unpacked
/// beside it first (owners by number, as the image has them), swapped in
/// only when complete, containerd started again whatever happens, and never
/// over a containerd that holds an image.
const STATE_SCRIPT: &str = "set -eu
if ctr --namespace k8s.io images ls --quiet | grep -q .; then
  echo 'containerd already holds images: its root is not replaced' >&2; exit 3
fi
rm -rf /var/lib/containerd.vigil-new
mkdir -p /var/lib/containerd.vigil-new
tar -C /var/lib/containerd.vigil-new --numeric-owner --xattrs --xattrs-include='*' -xpf -
trap 'systemctl start containerd.service' EXIT
systemctl stop containerd.service
rm -rf /var/lib/containerd
mv /var/lib/containerd.vigil-new /var/lib/containerd";
/// vigil's build is there already: containerd (and, once kubeadm has
/// configured it, the kubelet) started, as after `vigil node stop`.
const START_SCRIPT: &str = "systemctl start containerd.service
if [ -e /var/lib/kubelet/config.yaml ]; then systemctl start kubelet.service; fi";
/// How long a host may take to answer `list_nodes`.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SshProvider {
    inventory: Inventory,
    /// The inventory's file, for the commands the hints name.
    path: PathBuf,
    hosts: Hosts,
    payload: Arc<dyn HostPayload>,
    info: OnceLock<ProviderInfo>,
    reports: Mutex<BTreeMap<String, HostReport>>,
    /// vigil's build and its SHA-256, made once for every host.
    bundle: OnceCell<(Vec<u8>, String)>,
    images: OnceCell<Arc<Vec<u8>>>,
    state: OnceCell<Arc<Vec<u8>>>,
    image_refs: OnceCell<Vec<String>>,
}

/// How a host's containerd gets the node images.
enum Images {
    /// It has them all.
    AlreadyLoaded,
    /// It never ran: the preloaded root, unpacked as it is.
    State(Arc<Vec<u8>>),
    /// It holds other things: the images, imported beside them.
    Archive(Arc<Vec<u8>>),
}

impl SshProvider {
    pub fn new(
        inventory: Inventory,
        path: PathBuf,
        machines: Vec<Machine>,
        payload: Arc<dyn HostPayload>,
    ) -> Self {
        SshProvider {
            inventory,
            path,
            hosts: Hosts::new(machines),
            payload,
            info: OnceLock::new(),
            reports: Mutex::new(BTreeMap::new()),
            bundle: OnceCell::new(),
            images: OnceCell::new(),
            state: OnceCell::new(),
            image_refs: OnceCell::new(),
        }
    }

    /// `vigil --inventory FILE <command>`, as a hint names it.
    fn command(&self, command: &str) -> String {
        format!("vigil --inventory {} {command}", self.path.display())
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The SSH node of host `name`, when the inventory lists it.
    fn host(&self, name: &str) -> Result<&Arc<SshNode>> {
        self.hosts.find(name).ok_or_else(|| Error::UnknownNode {
            name: name.into(),
            cluster: self.inventory.name.clone(),
            known: self.hosts.nodes().iter().map(|n| n.name().to_owned()).collect::<Vec<_>>().join(", "),
        })
    }

    /// Makes `node` ready for kubeadm: vigil's preflight changes, its build
    /// (unless that same build is there), and the node images.
    async fn provision_host(&self, node: &SshNode, artefact: &NodeArtefact, line: &Line) -> Result<()> {
        let say = |what: String| line.update(format!("{}: {what}", node.name()));
        let failed = |step: &'static str| {
            let node = node.name().to_owned();
            move |source: BoxError| Error::Node {
                node: node.clone(),
                step,
                log_hint: "every command run on it is in the runbook `vigil` writes beside the logs".into(),
                source,
            }
        };
        let boxed = |e: CommandError| -> BoxError { Box::new(e) };
        let cached_report = self.reports.lock().expect("not poisoned").get(node.name()).cloned();
        let report = match cached_report {
            Some(report) => report,
            None => hosts::preflight_host(node).await,
        };
        let found = report.outcome.map_err(|cause| failed("preflight")(cause.into()))?;
        if let Some(script) = preflight::changes_script(&found) {
            say("vigil's preflight changes".into());
            node.run(&["sh", "-c", &script], None)
                .await
                .map_err(boxed)
                .map_err(failed("preflight changes"))?;
        }
        let refs = self
            .image_refs
            .get_or_try_init(|| self.payload.image_refs(artefact))
            .await
            .map_err(failed("reading the node images"))?;
        // Lacking when it cannot be asked: whether the root may be replaced
        // is then asked apart, and a failure to answer stops here.
        let lacks_images = !nodeutils::has_images(node, refs).await;
        let fresh = lacks_images
            && node
                .run(&["sh", "-c", ROOT_STATE_SCRIPT], None)
                .await
                .map_err(boxed)
                .map_err(failed("reading containerd's state"))?
                .stdout
                .trim()
                == "fresh";
        // The images are exported while the build is copied: both take seconds.
        let build = async {
            let (bundle, digest) = self
                .bundle
                .get_or_try_init(|| async {
                    let bundle = self.payload.bundle(artefact).await?;
                    let digest = digest(&bundle);
                    Ok::<_, BoxError>((bundle, digest))
                })
                .await
                .map_err(failed("reading vigil's build"))?;
            let installed_script =
                format!("cat {} && test -e {}", install::BUNDLE_DIGEST, install::INSTALLED_LIST);
            let installed = node.run(&["sh", "-c", &installed_script], None).await;
            if installed.is_ok_and(|out| out.stdout.trim() == *digest) {
                node.run(&["sh", "-c", START_SCRIPT], None)
                    .await
                    .map_err(boxed)
                    .map_err(failed("starting containerd"))?;
                return install::wait_for_containerd(node)
                    .await
                    .map_err(boxed)
                    .map_err(failed("starting containerd"));
            }
            say(format!("copying vigil's build ({})", runbook::size(bundle.len())));
            install::install(node, bundle)
                .await
                .map_err(boxed)
                .map_err(failed("installing vigil's build"))?;
            node.copy_in(install::BUNDLE_DIGEST, format!("{digest}\n").as_bytes(), 0o644)
                .await
                .map_err(boxed)
                .map_err(failed("installing vigil's build"))
        };
        let images = async {
            if !lacks_images {
                return Ok(Images::AlreadyLoaded);
            }
            if fresh {
                let state = self
                    .state
                    .get_or_try_init(|| async { self.payload.containerd_state(artefact).await.map(Arc::new) })
                    .await
                    .map_err(failed("reading the preloaded containerd state"))?;
                return Ok(Images::State(state.clone()));
            }
            self.images
                .get_or_try_init(|| async { self.payload.images(refs).await.map(Arc::new) })
                .await
                .map(|archive| Images::Archive(archive.clone()))
                .map_err(failed("exporting the node images"))
        };
        let ((), images) = tokio::try_join!(build, images)?;
        match images {
            Images::AlreadyLoaded => {}
            Images::State(state) => {
                say(format!("unpacking the preloaded containerd state ({})", runbook::size(state.len())));
                node.run(&["sh", "-c", STATE_SCRIPT], Some(state.to_vec()))
                    .await
                    .map_err(boxed)
                    .map_err(failed("unpacking the preloaded containerd state"))?;
                install::wait_for_containerd(node)
                    .await
                    .map_err(boxed)
                    .map_err(failed("unpacking the preloaded containerd state"))?;
            }
            // A containerd that was stopped (`vigil node stop`) could not be
            // asked before the build step started it: it may have them all.
            Images::Archive(_) if nodeutils::has_images(node, refs).await => {}
            Images::Archive(archive) => {
                say(format!("importing the node images ({})", runbook::size(archive.len())));
                nodeutils::load_images(node, archive.to_vec())
                    .await
                    .map_err(boxed)
                    .map_err(failed("importing the node images"))?;
            }
        }
        Ok(())
    }
}

/// The bundle's SHA-256, hex.
fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The shell script of a power fault on a host: the node's Kubernetes (its
/// kubelet, containerd and every pod) ends or starts; the machine does not.
fn power_script(power: Power) -> &'static str {
    match power {
        // kubelet first, so it does not restart what stops under it.
        // Each in turn; the pods' slice is gone after an earlier stop or kill.
        Power::Stop => {
            "systemctl stop kubelet.service && { systemctl stop kubepods.slice 2>/dev/null || true; } && systemctl stop containerd.service"
        }
        Power::Kill => {
            "set -u
systemctl kill --signal=SIGKILL kubelet.service containerd.service
for procs in $(find /sys/fs/cgroup -path '*kubepods*' -name cgroup.procs 2>/dev/null); do
  for pid in $(cat \"$procs\"); do kill -9 \"$pid\" 2>/dev/null; done
done
systemctl stop kubelet.service containerd.service kubepods.slice 2>/dev/null || true"
        }
        Power::Start => "systemctl start containerd.service kubelet.service",
    }
}

/// What `vigil` knows of a host, for `inspect`.
#[derive(Serialize)]
struct Inspected<'a> {
    name: &'a str,
    address: String,
    port: u16,
    user: &'a str,
    role: &'static str,
    reachable: bool,
    /// `systemctl is-active` of each unit, or why the host did not answer.
    units: BTreeMap<&'static str, String>,
    kernel: String,
}

#[async_trait]
impl NodeProvider for SshProvider {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn info(&self) -> ProviderInfo {
        self.info
            .get()
            .cloned()
            .unwrap_or(ProviderInfo { shares_host_kernel: false, kubelet_cgroup_root: None })
    }

    fn plan(&self, _spec: &ClusterSpec) -> Vec<NodeSpec> {
        self.hosts
            .nodes()
            .iter()
            .map(|n| NodeSpec { name: n.name().to_owned(), role: n.machine().role, ip: n.machine().address })
            .collect()
    }

    /// Every host reached and checked at once: fails, naming each host and
    /// what is wrong with it, when one cannot be reached or has a problem
    /// only its owner can mend (vigil's own changes wait for `provision`).
    async fn preflight(&self, _spec: &ClusterSpec) -> Result<()> {
        let reports = self.hosts.preflight().await;
        // Hosts that are containers share their machine's kernel: kubeadm's
        // kernel checks and the kubelet's swap and disk rules do not apply.
        if let Some(control_plane) =
            reports.iter().find(|r| r.role == vigil_model::cluster::Role::ControlPlane)
        {
            let info = match control_plane.container {
                Some(_) => ProviderInfo { shares_host_kernel: true, kubelet_cgroup_root: None },
                None => ProviderInfo { shares_host_kernel: false, kubelet_cgroup_root: None },
            };
            let _ = self.info.set(info);
        }
        let not_ready: Vec<HostReport> = reports.iter().filter(|r| !r.ready()).cloned().collect();
        *self.reports.lock().expect("not poisoned") =
            reports.into_iter().map(|r| (r.host.clone(), r)).collect();
        if not_ready.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = not_ready.iter().map(|r| r.host.as_str()).collect();
        Err(Error::Unavailable(
            format!(
                "{} of the inventory's hosts cannot be used yet ({}):\n{}mend what is listed as yours to do, then run `{}` again (`{}` checks without changing anything)",
                not_ready.len(),
                names.join(", "),
                hosts::render(&not_ready),
                self.command("up"),
                self.command("preflight")
            )
            .into(),
        ))
    }

    async fn provision(
        &self,
        _spec: &ClusterSpec,
        nodes: &[NodeSpec],
        artefact: &NodeArtefact,
        line: &Line,
    ) -> Result<()> {
        let work = nodes.iter().map(|spec| async move {
            let node = self.host(&spec.name)?;
            self.provision_host(node, artefact, line).await
        });
        // Every host goes as far as it can; the first failure is reported
        // with the host and step named, and an `up` again resumes each.
        let results = futures::future::join_all(work).await;
        let mut failures = results.into_iter().filter_map(Result::err);
        let Some(mut first) = failures.next() else { return Ok(()) };
        let others: Vec<String> = failures.map(|e| e.to_string()).collect();
        if let (Error::Node { log_hint, .. }, false) = (&mut first, others.is_empty()) {
            log_hint.push_str(&format!("; also: {}", others.join("; ")));
        }
        Err(first)
    }

    async fn list_nodes(&self, cluster: &str) -> Result<Vec<NodeInfo>> {
        if cluster != self.inventory.name {
            return Ok(vec![]);
        }
        let answers = futures::future::join_all(self.hosts.nodes().iter().map(|node| async move {
            let reached = tokio::time::timeout(REACH_TIMEOUT, node.connection()).await;
            let state = match reached {
                Ok(Ok(_)) => MachineState::Running,
                Ok(Err(e)) => MachineState::Other(format!("unreachable: {e}")),
                Err(_) => MachineState::Other("unreachable: no answer in 10 s".into()),
            };
            NodeInfo {
                name: node.name().to_owned(),
                role: node.machine().role,
                state,
                ip: Some(node.machine().address.to_string()),
            }
        }))
        .await;
        Ok(answers)
    }

    async fn discover(&self, name: &str) -> Result<ClusterSpec> {
        if name != self.inventory.name {
            return Err(Error::NoSuchCluster(name.into()));
        }
        Ok(self.inventory.spec(ClusterSpec::default()))
    }

    fn node(&self, name: &str) -> Arc<dyn Node> {
        match self.hosts.find(name) {
            Some(node) => node.clone(),
            None => Arc::new(NotListed { name: name.into(), inventory: self.inventory.name.clone() }),
        }
    }

    async fn fault(&self, node_name: &str, fault: Fault) -> Result<()> {
        let node = self.host(node_name)?;
        let script = match fault {
            Fault::Power(power) => power_script(power),
            Fault::Isolate | Fault::Reconnect => {
                return Err(Error::Unavailable(
                    format!(
                        "{} {node_name}: a host reached over SSH cannot be cut off the network by vigil, since the cut would end the connection that has to mend it; use `vigil node stop` or `kill`, or cut the host's network yourself (a switch port, a hypervisor's link)",
                        fault.name()
                    )
                    .into(),
                ));
            }
        };
        node.run(&["sh", "-c", script], None).await.map(|_| ()).map_err(|source| Error::Fault {
            node: node_name.into(),
            fault: fault.name(),
            source: Box::new(source),
        })
    }

    async fn inspect(&self, node_name: &str) -> Result<String> {
        let node = self.host(node_name)?;
        let machine = node.machine();
        let mut units = BTreeMap::new();
        let mut kernel = String::new();
        let mut reachable = false;
        match node
            .run(&["sh", "-c", "uname -srvm; systemctl is-active containerd kubelet || true"], None)
            .await
        {
            Ok(out) => {
                reachable = true;
                let mut lines = out.stdout.lines();
                kernel = lines.next().unwrap_or_default().to_owned();
                for unit in ["containerd", "kubelet"] {
                    units.insert(unit, lines.next().unwrap_or("unknown").to_owned());
                }
            }
            Err(e) => {
                let why = e.cause.unwrap_or(e.output);
                for unit in ["containerd", "kubelet"] {
                    units.insert(unit, format!("not asked: {why}"));
                }
            }
        }
        let inspected = Inspected {
            name: &machine.name,
            address: machine.address.to_string(),
            port: machine.port,
            user: &machine.user,
            role: machine.role.as_str(),
            reachable,
            units,
            kernel,
        };
        Ok(serde_json::to_string_pretty(&inspected).expect("serializes"))
    }

    /// Every host at once: the cluster taken apart and vigil's build and
    /// changes removed ([`teardown`]). A host that fails is named; the others
    /// are still cleaned.
    async fn delete_cluster(&self, cluster: &str) -> Result<Removed> {
        if cluster != self.inventory.name {
            return Err(Error::NoSuchCluster(cluster.into()));
        }
        let results =
            futures::future::join_all(self.hosts.nodes().iter().map(|node| async move {
                (node.name().to_owned(), teardown::teardown(node.as_ref()).await)
            }))
            .await;
        let mut removed = Removed::default();
        let mut failures = vec![];
        for (host, result) in results {
            match result {
                Ok(torn) => {
                    removed.machines.push(host);
                    removed.left.extend(torn.left);
                }
                Err(e) => failures.push(e),
            }
        }
        match failures.into_iter().next() {
            None => Ok(removed),
            Some(first) => Err(Error::Node {
                node: first.node.clone(),
                step: "taking the cluster off the host",
                log_hint: format!(
                    "the other hosts were cleaned ({}){}; run `{}` again once it answers",
                    if removed.machines.is_empty() { "none".into() } else { removed.machines.join(", ") },
                    removed.left.iter().map(|l| format!("; left: {l}")).collect::<String>(),
                    self.command("down")
                ),
                source: Box::new(first),
            }),
        }
    }

    fn runbook(&self, title: &str) -> Option<String> {
        Some(self.hosts.runbook().to_markdown(title))
    }
}

/// A name the inventory does not list: every command fails, saying so.
struct NotListed {
    name: String,
    inventory: String,
}

#[async_trait]
impl Node for NotListed {
    fn name(&self) -> &str {
        &self.name
    }

    fn shell_hint(&self, command: &str) -> String {
        command.into()
    }

    fn console_hint(&self) -> String {
        String::new()
    }

    async fn run(&self, argv: &[&str], _stdin: Option<Vec<u8>>) -> std::result::Result<Output, CommandError> {
        Err(CommandError {
            node: self.name.clone(),
            command: argv.join(" "),
            exit_code: None,
            output: String::new(),
            cause: Some(format!("inventory {} lists no host named {}", self.inventory, self.name)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_tells_builds_apart() {
        assert_eq!(digest(b"vigil"), digest(b"vigil"));
        assert_ne!(digest(b"vigil 1"), digest(b"vigil 2"));
        assert_eq!(digest(b"").len(), 64);
    }

    #[test]
    fn power_faults_end_the_nodes_kubernetes_and_keep_the_machine() {
        assert!(power_script(Power::Stop).starts_with("systemctl stop kubelet.service &&"));
        assert!(power_script(Power::Stop).ends_with("&& systemctl stop containerd.service"));
        assert!(power_script(Power::Kill).contains("--signal=SIGKILL"));
        assert!(!power_script(Power::Kill).contains("poweroff"));
        assert_eq!(power_script(Power::Start), "systemctl start containerd.service kubelet.service");
    }
}
