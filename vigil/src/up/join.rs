//! `kubeadm join` on every worker that has not joined, all at once, with a
//! short-lived bootstrap token and the cluster CA's key pinned. The token is
//! deleted as soon as the joins are over, whether they worked or not.

use async_trait::async_trait;

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};

use super::{Context, Error, Outcome, Result, Step, init, provision};
use crate::{
    kubeadm, poll,
    progress::Line,
    provider::{
        NodeSpec,
        nodeutils::{self, file_exists, read_file},
    },
    token,
};

pub const NAME: &str = "kubeadm join";
/// The kubelet's `staticPodPath`, kubeadm's default.
const STATIC_POD_DIR: &str = "/etc/kubernetes/manifests";
pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
const CLUSTER_CA: &str = "/etc/kubernetes/pki/ca.crt";
const SIGNED_TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN_DESCRIPTION: &str = "vigil: joins workers; deleted after";

pub struct KubeadmJoin;

#[async_trait]
impl Step for KubeadmJoin {
    fn name(&self) -> String {
        NAME.into()
    }

    fn needs(&self) -> Vec<String> {
        vec![init::NAME.into(), provision::WORKERS.into()]
    }

    fn title(&self, ctx: &Context) -> String {
        format!(
            "kubeadm join: {} (bootstrap token {}, TTL {}s, CA pinned)",
            ctx.workers().iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "),
            ctx.token.id(),
            init::TOKEN_TTL.as_secs()
        )
    }

    async fn run(&self, ctx: &Context, line: &Line) -> Result<Outcome> {
        let mut pending = vec![];
        for worker in ctx.workers() {
            if !file_exists(ctx.node(worker).as_ref(), KUBELET_CONF).await {
                pending.push(worker);
            }
        }
        if pending.is_empty() {
            return Ok(Outcome::Skipped("every worker has joined".into()));
        }
        let cp = ctx.node(ctx.control_plane());
        let hint = nodeutils::journal_hint(cp.as_ref(), "kubelet");
        if !ctx.token_created() {
            // Through the API, not `kubeadm token create <token>`: a command
            // line is readable by every user of the host, and kubeadm prints
            // the token it made.
            let secret = ctx.token.secret(init::TOKEN_TTL, Timestamp::now(), TOKEN_DESCRIPTION);
            Api::<Secret>::namespaced(ctx.client()?.clone(), "kube-system")
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|source| Error::Kube { step: "creating the bootstrap token", source })?;
        }
        // kubeadm's discovery retries every 5 s until the cluster-info
        // ConfigMap is signed for the token: wait for the signature instead.
        line.update("the controller manager signing cluster-info for the token");
        let joined = match signed_for_token(ctx).await {
            Ok(()) => {
                let names: Vec<&str> = pending.iter().map(|n| n.name.as_str()).collect();
                line.update(format!("joining {}", names.join(", ")));
                join_all(ctx, &pending).await
            }
            Err(e) => Err(e),
        };
        // The token has done its job (or failed): it must not outlive the joins.
        let deleted = ctx
            .run_logged(
                cp.as_ref(),
                "kubeadm token delete",
                &["kubeadm", "token", "delete", ctx.token.id()],
                hint,
            )
            .await;
        joined?;
        deleted?;
        ctx.joined_with(ctx.token.clone());
        Ok(Outcome::Done(format!("{} joined; bootstrap token deleted", pending.len())))
    }
}

/// The bootstrap signer has signed kube-public/cluster-info for `ctx.token`.
async fn signed_for_token(ctx: &Context) -> Result<()> {
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client()?.clone(), "kube-public");
    let key = format!("jws-kubeconfig-{}", ctx.token.id());
    let check = move |cm: Option<&ConfigMap>| match cm.and_then(|c| c.data.as_ref()) {
        Some(data) if data.contains_key(&key) => Ok(()),
        Some(_) => Err(format!("cluster-info has no {key} yet")),
        None => Err("no cluster-info ConfigMap yet".into()),
    };
    poll::watch_until(config_maps, "cluster-info", "cluster-info signed for the join token", SIGNED_TIMEOUT, check)
        .await
        .map_err(Error::timed_out(format!(
                "the bootstrap signer runs in kube-controller-manager: `kubectl --context {} -n kube-system logs -l component=kube-controller-manager`",
                ctx.spec.kube_context()
            )))
}

async fn join_all(ctx: &Context, pending: &[&NodeSpec]) -> Result<()> {
    let cp = ctx.node(ctx.control_plane());
    let ca = read_file(cp.as_ref(), CLUSTER_CA)
        .await
        .map_err(|e| ctx.node_step(cp.as_ref(), "reading the cluster CA", e))?;
    let ca_hash = token::ca_cert_hash(ca.as_bytes())?;
    let joins = pending.iter().map(|worker| join_one(ctx, worker, &ca_hash));
    futures::future::join_all(joins).await.into_iter().collect()
}

async fn join_one(ctx: &Context, worker: &NodeSpec, ca_hash: &str) -> Result<()> {
    let node = ctx.node(worker);
    let hint =
        format!("{}; `vigil up` retries after a reset", nodeutils::journal_hint(node.as_ref(), "kubelet"));
    if file_exists(node.as_ref(), CLUSTER_CA).await {
        // An earlier join stopped half-way: start that node over.
        ctx.run_logged(node.as_ref(), "kubeadm reset", &["kubeadm", "reset", "--force"], hint.clone())
            .await?;
    }
    // The kubelet's static pod directory, which kubeadm init makes on the
    // control plane and join does not: without it a worker's kubelet logs
    // "Unable to read config path" every second, forever.
    node.run(&["mkdir", "-p", STATIC_POD_DIR], None)
        .await
        .map_err(|e| ctx.node_step(node.as_ref(), "creating the static pod directory", e))?;
    // The token reaches kubeadm in a file only root on the node can read,
    // never on its command line, and the file goes once the join is over.
    let config = kubeadm::join_config(
        &ctx.spec,
        &ctx.provider.info(),
        ctx.control_plane(),
        worker,
        &ctx.token,
        ca_hash,
    );
    node.copy_in(init::KUBEADM_CONFIG, config.as_bytes(), 0o600)
        .await
        .map_err(|e| ctx.node_step(node.as_ref(), "writing the kubeadm config", e))?;
    let joined = ctx
        .run_logged(
            node.as_ref(),
            "kubeadm join",
            &["kubeadm", "join", "--config", init::KUBEADM_CONFIG],
            hint,
        )
        .await;
    let removed = node
        .run(&["rm", "-f", init::KUBEADM_CONFIG], None)
        .await
        .map_err(|e| ctx.node_step(node.as_ref(), "removing the join config", e));
    joined?;
    removed?;
    Ok(())
}
