//! `vigil up`: the ordered steps that turn node containers into a cluster.
//! Every step can find its work already done and skip it, so a failed `up`
//! resumes where it stopped and a second `up` changes nothing.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition},
    core::v1::{Node as KubeNode, Pod},
};
use kube::{
    Api, Client, Config,
    api::{ListParams, Patch, PatchParams},
    config::KubeConfigOptions,
};

use crate::{
    addons,
    cluster::{ClusterSpec, NodeSpec},
    kubeadm, kubeconfig,
    progress::Progress,
    provider::{self, CommandError, Node, NodeProvider},
    token::{self, BootstrapToken},
};

const KUBEADM_CONFIG: &str = "/etc/vigil/kubeadm.yaml";
const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
/// Long enough for concurrent joins on a slow machine; the token is deleted
/// as soon as they are done anyway.
const TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const READY_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] crate::cluster::Error),
    #[error(transparent)]
    Provider(#[from] provider::Error),
    /// A command on a node failed; where to look next is part of the message.
    #[error("node {node}: {step} failed; output saved in {}\n  {hint}", log.display())]
    NodeStep {
        node: String,
        step: &'static str,
        #[source]
        source: CommandError,
        log: PathBuf,
        hint: String,
    },
    /// The Kubernetes API refused or could not be reached.
    #[error("{step}: Kubernetes API error")]
    Kube {
        step: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{step}: gave up after {}s: {pending}\n  {hint}", waited.as_secs())]
    Timeout { step: &'static str, waited: Duration, pending: String, hint: String },
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::Error),
    #[error(transparent)]
    Token(#[from] token::Error),
    #[error("cannot build a client for the new cluster: {0}")]
    Client(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What `up` did, step by step, with timings (the benchmark reads these).
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub steps: Vec<(String, f64)>,
    /// The token the workers joined with (deleted by now). Kept in memory
    /// only, so the end-to-end test can prove it no longer authenticates.
    #[serde(skip)]
    pub join_token: Option<BootstrapToken>,
}

pub struct Context<'a, P: NodeProvider> {
    pub spec: &'a ClusterSpec,
    pub provider: &'a P,
    pub progress: &'a Progress,
    /// Per-cluster log directory (kubeadm output, ...).
    pub logs: PathBuf,
    /// The user's kubeconfig, which receives the cluster's context.
    pub kubeconfig: PathBuf,
}

/// Polls `check` every `every` until it yields a value; after `limit` fails
/// with the last reason it gave and a hint of where to look.
pub(crate) async fn until<T, F, Fut>(
    step: &'static str,
    limit: Duration,
    every: Duration,
    hint: impl FnOnce() -> String,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let pending = match check().await {
            Ok(value) => return Ok(value),
            Err(pending) => pending,
        };
        if Instant::now() > deadline {
            return Err(Error::Timeout { step, waited: limit, pending, hint: hint() });
        }
        tokio::time::sleep(every).await;
    }
}

fn journal_hint(node: &str, unit: &str) -> String {
    format!("journal: `docker exec {node} journalctl -u {unit} --no-pager | tail -50`")
}

impl<P: NodeProvider> Context<'_, P> {
    fn log_path(&self, node: &str, step: &str) -> PathBuf {
        self.logs.join(format!("{node}-{step}.log"))
    }

    /// Runs a command on a node, saving its output to the step's log either way.
    async fn run_logged(
        &self,
        node: &P::Node,
        step: &'static str,
        argv: &[&str],
        hint: String,
    ) -> Result<String> {
        let log = self.log_path(node.name(), &step.replace(' ', "-"));
        let _ = std::fs::create_dir_all(&self.logs);
        match node.run(argv, None).await {
            Ok(out) => {
                let _ = std::fs::write(&log, format!("$ {}\n{}{}", argv.join(" "), out.stdout, out.stderr));
                Ok(out.stdout)
            }
            Err(source) => {
                let _ = std::fs::write(&log, format!("$ {}\n{}", argv.join(" "), source.output));
                Err(Error::NodeStep { node: node.name().into(), step, source, log, hint })
            }
        }
    }

    async fn file_exists(&self, node: &P::Node, path: &str) -> bool {
        node.run(&["test", "-e", path], None).await.is_ok()
    }

    fn node_step(&self, node: &str, step: &'static str, source: CommandError, hint: String) -> Error {
        Error::NodeStep { node: node.into(), step, source, log: self.log_path(node, "exec"), hint }
    }
}

/// Creates (or completes) the cluster; returns a client for it.
pub async fn up<P: NodeProvider>(ctx: &Context<'_, P>, node_image: &str) -> Result<(Client, Report)> {
    let spec = ctx.spec;
    spec.validate()?;
    let mut report = Report::default();
    let mut steps = vec![];
    let mut timed =
        |name: &str, started: Instant| steps.push((name.to_owned(), started.elapsed().as_secs_f64()));

    let started = Instant::now();
    let step = ctx.progress.step(format!(
        "nodes: {} on network {} ({})",
        node_names(spec),
        spec.network_name(),
        spec.node_subnet
    ));
    ctx.provider.provision(spec, node_image).await?;
    step.done();
    timed("provision", started);

    let started = Instant::now();
    let step = ctx.progress.step("waiting for systemd and containerd on every node");
    futures::future::try_join_all(spec.nodes().iter().map(|n| wait_for_boot(ctx, n))).await?;
    step.done();
    timed("boot", started);

    let control_plane = ctx.provider.node(&spec.control_plane_name());
    let token = BootstrapToken::generate();
    let started = Instant::now();
    let initialized_now = kubeadm_init(ctx, &control_plane, &token).await?;
    timed("kubeadm init", started);

    let admin_conf = control_plane
        .read_file(ADMIN_CONF)
        .await
        .map_err(|e| ctx.node_step(control_plane.name(), "read admin.conf", e, String::new()))?;
    let client = client_for(&admin_conf).await?;

    let started = Instant::now();
    let step = ctx.progress.step("pod network: flannel (VXLAN)");
    let flannel_image = crate::build::ImageNames { repository: spec.image_repository.clone() }.flannel();
    for object in addons::flannel::objects(spec, &flannel_image) {
        object.apply(&client).await.map_err(|source| Error::Kube { step: "installing flannel", source })?;
    }
    step.done();
    timed("cni", started);

    let started = Instant::now();
    if join_workers(ctx, &control_plane, &token, initialized_now).await? {
        report.join_token = Some(token);
    }
    timed("kubeadm join", started);

    let started = Instant::now();
    wait_for_ready(ctx, &client).await?;
    timed("nodes and system pods ready", started);

    let started = Instant::now();
    wait_for_dns(ctx, &control_plane).await?;
    timed("dns", started);

    report.steps = steps;
    let step = ctx.progress.step(format!("kubeconfig: context {}", spec.kube_context()));
    kubeconfig::merge_into_file(
        &ctx.kubeconfig,
        kubeconfig::renamed(&admin_conf, &spec.kube_context())?,
        &spec.kube_context(),
    )?;
    step.done_with(format!("merged into {}", ctx.kubeconfig.display()));
    Ok((client, report))
}

fn node_names(spec: &ClusterSpec) -> String {
    spec.nodes().iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
}

pub async fn client_for(admin_conf: &str) -> Result<Client> {
    let kubeconfig = kubeconfig::renamed(admin_conf, "vigil")?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Client(e.to_string()))?;
    Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

async fn wait_for_boot<P: NodeProvider>(ctx: &Context<'_, P>, node: &NodeSpec) -> Result<()> {
    let handle = ctx.provider.node(&node.name);
    let hint = || {
        format!("{}; entrypoint output: `docker logs {}`", journal_hint(&node.name, "containerd"), node.name)
    };
    until("node boot", BOOT_TIMEOUT, Duration::from_millis(250), hint, || async {
        let state = match handle.run(&["systemctl", "is-active", "containerd"], None).await {
            Ok(out) => out.stdout,
            Err(e) => e.output,
        };
        match state.trim() {
            "active" => Ok(()),
            other => Err(format!("{}: containerd is {other:?}", node.name)),
        }
    })
    .await
}

/// `kubeadm init` unless the control plane is already initialized. Returns
/// whether it ran (and so created the bootstrap token).
async fn kubeadm_init<P: NodeProvider>(
    ctx: &Context<'_, P>,
    cp: &P::Node,
    token: &BootstrapToken,
) -> Result<bool> {
    let spec = ctx.spec;
    if ctx.file_exists(cp, ADMIN_CONF).await {
        ctx.progress.step(format!("kubeadm init on {}", cp.name())).skipped("already initialized");
        return Ok(false);
    }
    let step =
        ctx.progress.step(format!("kubeadm init on {} (Kubernetes {})", cp.name(), spec.kubernetes_version));
    let hint = format!("{}; `vigil up` retries after a reset", journal_hint(cp.name(), "kubelet"));
    if ctx.file_exists(cp, "/etc/kubernetes/manifests/kube-apiserver.yaml").await {
        // An earlier init stopped half-way: start that node over.
        step.update("resetting a half-done earlier attempt");
        ctx.run_logged(cp, "kubeadm reset", &["kubeadm", "reset", "--force"], hint.clone()).await?;
    }
    let config = kubeadm::init_config(spec, token, TOKEN_TTL);
    cp.write_file(KUBEADM_CONFIG, config.as_bytes(), 0o600)
        .await
        .map_err(|e| ctx.node_step(cp.name(), "writing kubeadm config", e, String::new()))?;
    ctx.run_logged(
        cp,
        "kubeadm config validate",
        &["kubeadm", "config", "validate", "--config", KUBEADM_CONFIG],
        hint.clone(),
    )
    .await?;
    ctx.run_logged(
        cp,
        "kubeadm init",
        &["kubeadm", "init", "--config", KUBEADM_CONFIG, "--skip-token-print"],
        hint,
    )
    .await?;
    step.done();
    Ok(true)
}

async fn join_workers<P: NodeProvider>(
    ctx: &Context<'_, P>,
    cp: &P::Node,
    token: &BootstrapToken,
    token_exists: bool,
) -> Result<bool> {
    let spec = ctx.spec;
    let workers: Vec<NodeSpec> =
        spec.nodes().into_iter().filter(|n| n.role == crate::cluster::Role::Worker).collect();
    let mut pending = vec![];
    for worker in &workers {
        if !ctx.file_exists(&ctx.provider.node(&worker.name), KUBELET_CONF).await {
            pending.push(worker.clone());
        }
    }
    if pending.is_empty() {
        ctx.progress.step("kubeadm join (workers)").skipped("every worker has joined");
        return Ok(false);
    }
    let step = ctx.progress.step(format!(
        "kubeadm join: {} (bootstrap token {}, TTL {}s, CA pinned)",
        pending.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "),
        token.id(),
        TOKEN_TTL.as_secs()
    ));
    if !token_exists {
        let ttl = format!("{}s", TOKEN_TTL.as_secs());
        let secret = token.to_string();
        ctx.run_logged(
            cp,
            "kubeadm token create",
            &[
                "kubeadm",
                "token",
                "create",
                &secret,
                "--ttl",
                &ttl,
                "--description",
                "vigil: joins workers; deleted after",
            ],
            journal_hint(cp.name(), "kubelet"),
        )
        .await?;
    }
    let ca = cp
        .read_file("/etc/kubernetes/pki/ca.crt")
        .await
        .map_err(|e| ctx.node_step(cp.name(), "reading the cluster CA", e, String::new()))?;
    let ca_hash = token::ca_cert_hash(ca.as_bytes())?;
    let joins = pending.iter().map(|worker| join_one(ctx, worker, token, &ca_hash));
    let joined = futures::future::join_all(joins).await;
    // The token has done its job (or failed): it must not outlive the joins.
    let deleted = ctx
        .run_logged(
            cp,
            "kubeadm token delete",
            &["kubeadm", "token", "delete", token.id()],
            journal_hint(cp.name(), "kubelet"),
        )
        .await;
    joined.into_iter().collect::<Result<Vec<_>>>()?;
    deleted?;
    step.done_with("bootstrap token deleted");
    Ok(true)
}

async fn join_one<P: NodeProvider>(
    ctx: &Context<'_, P>,
    worker: &NodeSpec,
    token: &BootstrapToken,
    ca_hash: &str,
) -> Result<()> {
    let node = ctx.provider.node(&worker.name);
    let hint = format!("{}; `vigil up` retries after a reset", journal_hint(&worker.name, "kubelet"));
    if ctx.file_exists(&node, "/etc/kubernetes/pki/ca.crt").await {
        ctx.run_logged(&node, "kubeadm reset", &["kubeadm", "reset", "--force"], hint.clone()).await?;
    }
    let config = kubeadm::join_config(ctx.spec, &worker.name, worker.ip, token, ca_hash);
    node.write_file(KUBEADM_CONFIG, config.as_bytes(), 0o600)
        .await
        .map_err(|e| ctx.node_step(&worker.name, "writing kubeadm config", e, String::new()))?;
    ctx.run_logged(&node, "kubeadm join", &["kubeadm", "join", "--config", KUBEADM_CONFIG], hint).await?;
    Ok(())
}

/// Kubelets ask for serving certificates (serverTLSBootstrap); kubeadm does
/// not approve them. Approve exactly those whose requester is one of this
/// cluster's nodes.
async fn approve_serving_csrs(client: &Client, spec: &ClusterSpec) -> kube::Result<usize> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let ours: Vec<String> = spec.nodes().iter().map(|n| format!("system:node:{}", n.name)).collect();
    let mut approved = 0;
    for csr in api.list(&ListParams::default()).await? {
        let decided = csr.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| !c.is_empty());
        let serving = csr.spec.signer_name == "kubernetes.io/kubelet-serving";
        let requester_ok = csr.spec.username.as_ref().is_some_and(|u| ours.contains(u));
        if decided || !serving || !requester_ok {
            continue;
        }
        let name = csr.metadata.name.clone().unwrap_or_default();
        let mut approval = csr.clone();
        approval.status.get_or_insert_with(Default::default).conditions =
            Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("VigilApprovedNodeServingCert".into()),
                message: Some("the requester is a node of this vigil cluster".into()),
                ..Default::default()
            }]);
        api.patch_approval(&name, &PatchParams::default(), &Patch::Merge(&approval)).await?;
        approved += 1;
    }
    Ok(approved)
}

fn node_ready(node: &KubeNode) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_for_ready<P: NodeProvider>(ctx: &Context<'_, P>, client: &Client) -> Result<()> {
    let spec = ctx.spec;
    let step = ctx.progress.step("waiting for every node Ready and every system pod Running");
    let nodes: Api<KubeNode> = Api::all(client.clone());
    let hint = || {
        format!(
            "inspect with `kubectl --context {} get nodes,pods -A`; {}",
            spec.kube_context(),
            journal_hint("<node>", "kubelet")
        )
    };
    until("cluster readiness", READY_TIMEOUT, Duration::from_secs(1), hint, || async {
        let mut waiting: Vec<String> = vec![];
        if let Err(e) = approve_serving_csrs(client, spec).await {
            waiting.push(format!("approving kubelet serving certificates: {e}"));
        }
        match nodes.list(&ListParams::default()).await {
            Ok(list) => {
                for planned in spec.nodes() {
                    match list.items.iter().find(|n| n.metadata.name.as_deref() == Some(&planned.name)) {
                        Some(n) if node_ready(n) => {}
                        Some(_) => waiting.push(format!("node {} NotReady", planned.name)),
                        None => waiting.push(format!("node {} not registered", planned.name)),
                    }
                }
            }
            Err(e) => waiting.push(format!("API: {e}")),
        }
        for namespace in ["kube-system", addons::flannel::NAMESPACE] {
            let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
            match pods.list(&ListParams::default()).await {
                Ok(list) if list.items.is_empty() => waiting.push(format!("no pods in {namespace} yet")),
                Ok(list) => waiting.extend(list.items.iter().filter(|p| !pod_ready(p)).map(|p| {
                    format!("pod {namespace}/{} not ready", p.metadata.name.as_deref().unwrap_or_default())
                })),
                Err(e) => waiting.push(format!("API: {e}")),
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        let pending = waiting.join(", ");
        step.update(&pending);
        Err(pending)
    })
    .await?;
    step.done();
    Ok(())
}

/// CoreDNS answers for the API server's Service name, asked from the
/// control plane node the way a pod would (through the Service address).
async fn wait_for_dns<P: NodeProvider>(ctx: &Context<'_, P>, cp: &P::Node) -> Result<()> {
    let dns = ctx.spec.dns_service_ip().to_string();
    let expected = std::net::Ipv4Addr::from(u32::from(ctx.spec.service_subnet.network()) + 1).to_string();
    let step = ctx.progress.step(format!("CoreDNS answers at {dns}"));
    let server = format!("@{dns}");
    let name = "kubernetes.default.svc.cluster.local";
    let hint = || {
        format!(
            "CoreDNS logs: `kubectl --context {} -n kube-system logs -l k8s-app=kube-dns`",
            ctx.spec.kube_context()
        )
    };
    until("DNS", Duration::from_secs(60), Duration::from_millis(500), hint, || async {
        match cp.run(&["dig", "+short", "+time=1", "+tries=1", &server, name], None).await {
            Ok(out) if out.stdout.trim() == expected => Ok(()),
            Ok(out) => Err(format!("{name} via {dns} answered {:?}, expected {expected}", out.stdout.trim())),
            Err(e) => Err(format!("{name} via {dns}: {e}")),
        }
    })
    .await?;
    step.done_with(format!("{name} = {expected}"));
    Ok(())
}
