//! What every step of `up` shares: the cluster's spec and machines, the
//! provider they come from, where logs go, the images to deploy, and what
//! earlier steps found out (the API client, the join token, addresses).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

use kube::Client;

use super::{Error, Result};
use crate::{
    apply::Applier,
    build::workload::Images,
    cluster::{ClusterSpec, Role},
    progress::Progress,
    provider::{CommandError, ImageArchive, Node, NodeArtefact, NodeProvider, NodeSpec, nodeutils},
    token::BootstrapToken,
};

/// The deployables' images, and how to ship them to nodes.
pub struct Deployables {
    pub images: Images,
    pub archive: Arc<dyn ImageArchive>,
}

pub struct Context {
    pub spec: ClusterSpec,
    /// The machines, as the provider plans them: control plane first.
    pub nodes: Vec<NodeSpec>,
    pub provider: Arc<dyn NodeProvider>,
    pub progress: Progress,
    /// Per-cluster log directory (kubeadm output, ...).
    pub logs: PathBuf,
    /// The user's kubeconfig, which receives the cluster's context.
    pub kubeconfig: PathBuf,
    pub node_artefact: NodeArtefact,
    /// None with `--cluster-only`.
    pub deployables: Option<Deployables>,
    /// The token this run's joins use (created by init, or by the join step).
    pub token: BootstrapToken,
    state: State,
}

/// Filled in by steps for the steps that need them.
#[derive(Default)]
struct State {
    admin_conf: OnceLock<String>,
    client: OnceLock<Client>,
    applier: OnceLock<Applier>,
    /// Whether `kubeadm init` ran now, and so created `token`.
    token_created: OnceLock<bool>,
    joined_with: Mutex<Option<BootstrapToken>>,
    addresses: Mutex<BTreeMap<String, String>>,
    credentials: Mutex<Option<crate::password_file::HostCredentials>>,
    archive: tokio::sync::OnceCell<Vec<u8>>,
}

impl Context {
    pub fn new(
        spec: ClusterSpec,
        provider: Arc<dyn NodeProvider>,
        progress: Progress,
        logs: PathBuf,
        kubeconfig: PathBuf,
        node_artefact: NodeArtefact,
        deployables: Option<Deployables>,
    ) -> Self {
        Context {
            nodes: provider.plan(&spec),
            spec,
            provider,
            progress,
            logs,
            kubeconfig,
            node_artefact,
            deployables,
            token: BootstrapToken::generate(),
            state: State::default(),
        }
    }

    pub fn control_plane(&self) -> &NodeSpec {
        self.nodes.iter().find(|n| n.role == Role::ControlPlane).expect("every plan has a control plane")
    }

    pub fn workers(&self) -> Vec<&NodeSpec> {
        self.nodes.iter().filter(|n| n.role == Role::Worker).collect()
    }

    pub fn node(&self, spec: &NodeSpec) -> Arc<dyn Node> {
        self.provider.node(&spec.name)
    }

    pub fn log_path(&self, node: &str, step: &str) -> PathBuf {
        self.logs.join(format!("{node}-{}.log", step.replace(' ', "-")))
    }

    /// Runs a command on a node, saving its output to the step's log either
    /// way. kubeadm's output can name credentials: the logs are the user's
    /// alone (0600 in a 0700 folder), and no secret is ever in `argv`.
    pub async fn run_logged(
        &self,
        node: &dyn Node,
        step: &'static str,
        argv: &[&str],
        hint: String,
    ) -> Result<String> {
        let log = self.log_path(node.name(), step);
        let save = |text: String| {
            if let Err(e) = crate::private::ensure_dir(&self.logs)
                .and_then(|()| crate::private::write(&log, text.as_bytes()))
            {
                tracing::warn!(log = %log.display(), error = %e, "cannot save a step's log");
            }
        };
        match node.run(argv, None).await {
            Ok(out) => {
                save(format!("$ {}\n{}{}", argv.join(" "), out.stdout, out.stderr));
                Ok(out.stdout)
            }
            Err(source) => {
                save(format!("$ {}\n{}", argv.join(" "), source.output));
                Err(Error::NodeStep { node: node.name().into(), step, source: Box::new(source), log, hint })
            }
        }
    }

    /// A failed command that has no log of its own.
    pub fn node_step(&self, node: &dyn Node, step: &'static str, source: CommandError) -> Error {
        Error::NodeStep {
            node: node.name().into(),
            step,
            source: Box::new(source),
            log: self.log_path(node.name(), "exec"),
            hint: nodeutils::journal_hint(node, "containerd"),
        }
    }

    /// kubeadm's admin kubeconfig, once init has run.
    pub fn set_admin_conf(&self, admin_conf: String) {
        self.state.admin_conf.get_or_init(|| admin_conf);
    }

    /// The API client every later step uses. The first one set stays
    /// (tests set a mocked API server's before the steps run).
    pub fn set_client(&self, client: Client) {
        self.state.applier.get_or_init(|| Applier::new(client.clone()));
        self.state.client.get_or_init(|| client);
    }

    pub fn client(&self) -> Result<&Client> {
        self.state.client.get().ok_or(Error::OutOfOrder("an API client (kubeadm init)"))
    }

    pub fn applier(&self) -> Result<&Applier> {
        self.state.applier.get().ok_or(Error::OutOfOrder("an API client (kubeadm init)"))
    }

    pub fn admin_conf(&self) -> Result<&str> {
        self.state.admin_conf.get().map(String::as_str).ok_or(Error::OutOfOrder("admin.conf (kubeadm init)"))
    }

    pub fn set_token_created(&self, created: bool) {
        let _ = self.state.token_created.set(created);
    }

    pub fn token_created(&self) -> bool {
        self.state.token_created.get().copied().unwrap_or(false)
    }

    pub fn joined_with(&self, token: BootstrapToken) {
        *self.state.joined_with.lock().expect("not poisoned") = Some(token);
    }

    pub fn join_token(&self) -> Option<BootstrapToken> {
        self.state.joined_with.lock().expect("not poisoned").clone()
    }

    pub fn add_address(&self, key: &str, url: String) {
        self.state.addresses.lock().expect("not poisoned").insert(key.into(), url);
    }

    pub fn addresses(&self) -> BTreeMap<String, String> {
        self.state.addresses.lock().expect("not poisoned").clone()
    }

    pub fn set_credentials(&self, credentials: crate::password_file::HostCredentials) {
        *self.state.credentials.lock().expect("not poisoned") = Some(credentials);
    }

    pub fn credentials(&self) -> Option<crate::password_file::HostCredentials> {
        self.state.credentials.lock().expect("not poisoned").clone()
    }

    /// The deployables' images as one archive, made on first use.
    pub async fn image_archive(&self) -> Result<&[u8]> {
        let deployables = self.deployables.as_ref().ok_or(Error::OutOfOrder("the deployables' images"))?;
        let archive = self
            .state
            .archive
            .get_or_try_init(|| deployables.archive.archive(&deployables.images.all_tags))
            .await
            .map_err(Error::Images)?;
        Ok(archive)
    }
}

/// A client for the cluster, through kubeadm's admin kubeconfig.
pub async fn client_for(admin_conf: &str) -> Result<Client> {
    let kubeconfig = crate::kubeconfig::renamed(admin_conf, "vigil")?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(Error::ClientConfig)?;
    Client::try_from(config).map_err(|source| Error::Kube { step: "building an API client", source })
}
