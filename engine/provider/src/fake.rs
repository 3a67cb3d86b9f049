//! A provider for unit tests: machines that are a set of files and a log of
//! the commands run on them. It answers the commands `up`'s steps run the
//! way a node would (kubeadm writes its files, reset removes them, ctr
//! lists what was imported), and fails a command once when told to, leaving
//! what a half-done run leaves.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;

use super::{
    CommandError, Error, Fault, MachineState, Node, NodeArtefact, NodeInfo, NodeProvider, NodeSpec, Output,
    ProviderInfo, Removed, Result,
};
use vigil_model::cluster::{ClusterSpec, Role};

/// A real cluster CA (captured from a vigil cluster), so the CA pin can be computed.
const CLUSTER_CA: &str = include_str!("../../../node-exporter/tests/fixtures/cluster-ca.crt");
/// An admin kubeconfig that builds a client (it is never dialled: tests
/// give the steps a mocked API server first).
const ADMIN_CONF: &str = "apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: https://127.0.0.1:1
    insecure-skip-tls-verify: true
users:
- name: kubernetes-admin
  user:
    token: fake
contexts:
- name: kubernetes-admin@kubernetes
  context:
    cluster: kubernetes
    user: kubernetes-admin
current-context: kubernetes-admin@kubernetes
";

#[derive(Default)]
pub struct State {
    /// Files on each node, with their contents.
    pub files: BTreeMap<String, BTreeMap<String, String>>,
    /// The mode each copied-in file was given: (node, path) to mode.
    pub modes: BTreeMap<(String, String), u32>,
    /// Every command, in the order it ran: (node, command line).
    pub log: Vec<(String, String)>,
    /// Commands to fail once: (node, start of the command line).
    pub fail_once: Vec<(String, String)>,
    /// Node machines that exist.
    pub machines: BTreeSet<String>,
    /// Image references in each node's containerd.
    pub images: BTreeMap<String, BTreeSet<String>>,
    /// What `ctr images import` adds.
    pub importable: Vec<String>,
    /// Bootstrap tokens that exist (by id): made by `kubeadm init` here,
    /// or through the API (tests record those), deleted by `kubeadm token delete`.
    pub tokens: BTreeSet<String>,
}

#[derive(Clone, Default)]
pub struct FakeProvider {
    pub state: Arc<Mutex<State>>,
}

impl FakeProvider {
    /// A fake whose machines of `spec` exist, as after `up`'s provision steps.
    pub fn with_machines(spec: &ClusterSpec) -> Self {
        let provider = FakeProvider::default();
        provider
            .state
            .lock()
            .unwrap()
            .machines
            .extend(super::numbered_plan(spec).into_iter().map(|n| n.name));
        provider
    }

    /// Fails the next command on `node` that starts with `prefix`.
    pub fn fail_once(&self, node: &str, prefix: &str) {
        self.state.lock().unwrap().fail_once.push((node.into(), prefix.into()));
    }

    /// The commands run on `node`, in order.
    pub fn commands(&self, node: &str) -> Vec<String> {
        self.state.lock().unwrap().log.iter().filter(|(n, _)| n == node).map(|(_, c)| c.clone()).collect()
    }

    /// Where in the whole log the first command on `node` starting with `prefix` ran.
    pub fn position(&self, node: &str, prefix: &str) -> Option<usize> {
        self.state.lock().unwrap().log.iter().position(|(n, c)| n == node && c.starts_with(prefix))
    }
}

pub struct FakeNode {
    name: String,
    state: Arc<Mutex<State>>,
}

#[async_trait]
impl Node for FakeNode {
    fn name(&self) -> &str {
        &self.name
    }

    fn shell_hint(&self, command: &str) -> String {
        format!("fake exec {} {command}", self.name)
    }

    fn console_hint(&self) -> String {
        format!("fake console {}", self.name)
    }

    async fn copy_in(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), CommandError> {
        let mut state = self.state.lock().unwrap();
        state.log.push((self.name.clone(), format!("copy {path}")));
        state.modes.insert((self.name.clone(), path.into()), mode);
        let text = String::from_utf8_lossy(contents).into_owned();
        state.files.entry(self.name.clone()).or_default().insert(path.into(), text);
        Ok(())
    }

    async fn run(&self, argv: &[&str], stdin: Option<Vec<u8>>) -> Result<Output, CommandError> {
        let command = argv.join(" ");
        let mut state = self.state.lock().unwrap();
        state.log.push((self.name.clone(), command.clone()));
        let fail = |state: &mut State, output: &str| {
            // What a half-done attempt leaves behind.
            let files = state.files.entry(self.name.clone()).or_default();
            match argv {
                ["kubeadm", "join", ..] => {
                    files.insert("/etc/kubernetes/pki/ca.crt".into(), CLUSTER_CA.into());
                }
                ["kubeadm", "init", ..] => {
                    files.insert("/etc/kubernetes/manifests/kube-apiserver.yaml".into(), String::new());
                }
                _ => {}
            }
            Err(CommandError {
                node: self.name.clone(),
                command: command.clone(),
                exit_code: Some(1),
                output: output.into(),
                cause: None,
            })
        };
        if let Some(i) =
            state.fail_once.iter().position(|(n, p)| *n == self.name && command.starts_with(p.as_str()))
        {
            state.fail_once.remove(i);
            return fail(&mut state, "injected failure\n");
        }
        let ok = |stdout: &str| Ok(Output { stdout: stdout.into(), stderr: String::new() });
        let state = &mut *state;
        let files = state.files.entry(self.name.clone()).or_default();
        match argv {
            ["systemctl", "is-active", _] => ok("active\n"),
            ["test", "-e", path] if files.contains_key(*path) => ok(""),
            ["test", "-e", _] => fail(state, ""),
            ["cat", path] => match files.get(*path) {
                Some(text) => ok(&text.clone()),
                None => fail(state, "No such file or directory\n"),
            },
            ["kubeadm", "init", ..] => {
                for (path, text) in [
                    ("/etc/kubernetes/admin.conf", ADMIN_CONF),
                    ("/etc/kubernetes/manifests/kube-apiserver.yaml", ""),
                    ("/etc/kubernetes/pki/ca.crt", CLUSTER_CA),
                    ("/etc/kubernetes/kubelet.conf", ""),
                ] {
                    files.insert(path.into(), text.into());
                }
                // The token in the config kubeadm was given.
                let config = files.get("/etc/vigil/kubeadm.yaml").cloned().unwrap_or_default();
                if let Some(id) = config.lines().find_map(|l| l.trim().strip_prefix("token: ")) {
                    state.tokens.insert(id.split('.').next().unwrap_or_default().to_owned());
                }
                ok("")
            }
            ["kubeadm", "join", ..] => {
                files.insert("/etc/kubernetes/kubelet.conf".into(), String::new());
                files.insert("/etc/kubernetes/pki/ca.crt".into(), CLUSTER_CA.into());
                ok("")
            }
            ["kubeadm", "reset", ..] => {
                files.retain(|path, _| !path.starts_with("/etc/kubernetes/"));
                ok("")
            }
            ["rm", "-f", path] => {
                files.remove(*path);
                ok("")
            }
            ["kubeadm", "token", "delete", id] => {
                state.tokens.remove(*id);
                ok("")
            }
            ["ctr", .., "images", "ls", "--quiet"] => {
                let images = state.images.entry(self.name.clone()).or_default();
                ok(&images.iter().map(|i| format!("{i}\n")).collect::<String>())
            }
            ["ctr", _, _, "images", "import", ..] => {
                let importable = state.importable.clone();
                state.images.entry(self.name.clone()).or_default().extend(importable);
                ok("")
            }
            // A DNS query over bash's /dev/udp: CoreDNS's answer, in od's hex.
            ["bash", "-c", script, _] if script.contains("/dev/udp") => {
                ok(&answer_api_service(&stdin.unwrap_or_default()))
            }
            _ => ok(""),
        }
    }
}

/// The query's bytes made an answer (RFC 1035 §4.1): the response bit set,
/// one A record for the name asked (a pointer to it), 10.96.0.1; as `od
/// -An -tx1` prints it.
fn answer_api_service(query: &[u8]) -> String {
    let mut answer = query.to_vec();
    if answer.len() < 12 {
        return String::new();
    }
    answer[2] |= 0x80;
    answer[6..8].copy_from_slice(&1u16.to_be_bytes());
    answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 1]);
    answer.iter().map(|b| format!(" {b:02x}")).collect()
}

#[async_trait]
impl NodeProvider for FakeProvider {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo::node_containers()
    }

    fn plan(&self, spec: &ClusterSpec) -> Vec<NodeSpec> {
        super::numbered_plan(spec)
    }

    async fn preflight(&self, _: &ClusterSpec) -> Result<()> {
        Ok(())
    }

    async fn provision(
        &self,
        _: &ClusterSpec,
        nodes: &[NodeSpec],
        _: &NodeArtefact,
        _: &vigil_host::progress::Line,
    ) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        for node in nodes {
            state.log.push((node.name.clone(), "provision".into()));
            state.machines.insert(node.name.clone());
        }
        Ok(())
    }

    async fn list_nodes(&self, cluster: &str) -> Result<Vec<NodeInfo>> {
        let state = self.state.lock().unwrap();
        Ok(state
            .machines
            .iter()
            .filter(|m| m.starts_with(cluster))
            .map(|m| NodeInfo {
                name: m.clone(),
                role: if m.ends_with("control-plane") { Role::ControlPlane } else { Role::Worker },
                state: MachineState::Running,
                ip: None,
            })
            .collect())
    }

    async fn discover(&self, name: &str) -> Result<ClusterSpec> {
        match self.list_nodes(name).await?.is_empty() {
            true => Err(Error::NoSuchCluster(name.into())),
            false => Ok(ClusterSpec { name: name.into(), ..ClusterSpec::default() }),
        }
    }

    fn node(&self, name: &str) -> Arc<dyn Node> {
        Arc::new(FakeNode { name: name.into(), state: self.state.clone() })
    }

    async fn inspect(&self, node: &str) -> Result<String> {
        Ok(serde_json::json!({ "Name": node, "Provider": "fake" }).to_string())
    }

    async fn fault(&self, node: &str, fault: Fault) -> Result<()> {
        self.state.lock().unwrap().log.push((node.into(), format!("fault {}", fault.name())));
        Ok(())
    }

    async fn delete_cluster(&self, cluster: &str) -> Result<Removed> {
        let mut state = self.state.lock().unwrap();
        let machines: Vec<String> =
            state.machines.iter().filter(|m| m.starts_with(cluster)).cloned().collect();
        state.machines.retain(|m| !m.starts_with(cluster));
        Ok(Removed { machines, ..Removed::default() })
    }
}
