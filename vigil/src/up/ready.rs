//! Every planned node Ready and every system pod ready, approving the
//! kubelets' serving certificates on the way (serverTLSBootstrap: kubeadm
//! does not approve them) for this cluster's nodes only, each for its own
//! name and address only ([`super::csr`]).

use std::{
    collections::BTreeSet,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use k8s_openapi::api::{
    certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition},
    core::v1::{Node as KubeNode, Pod},
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};

use super::{
    Context, Error, Outcome, Result, Step, cni,
    csr::{Verdict, verdict},
    join,
};
use crate::{
    addons::flannel,
    conditions::{node_ready, pod_ready},
    poll,
    progress::Line,
    provider::NodeSpec,
};

pub const NAME: &str = "nodes ready";
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Namespaces whose pods make a working cluster.
const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", flannel::NAMESPACE];

pub struct NodesReady;

#[async_trait]
impl Step for NodesReady {
    fn name(&self) -> String {
        NAME.into()
    }

    fn needs(&self) -> Vec<String> {
        vec![cni::NAME.into(), join::NAME.into()]
    }

    fn title(&self, _: &Context) -> String {
        "every node Ready, every system pod ready".into()
    }

    async fn run(&self, ctx: &Context, line: &Line) -> Result<Outcome> {
        let client = ctx.client()?;
        let approved = AtomicUsize::new(0);
        // Each refusal is logged once, though every poll sees the request again.
        let refused: Mutex<BTreeSet<String>> = Mutex::default();
        poll::until(NAME, READY_TIMEOUT, poll::EVERY, || async {
            let mut waiting: Vec<String> = vec![];
            match approve_serving_csrs(client, &ctx.nodes).await {
                Ok(pass) => {
                    approved.fetch_add(pass.approved, Ordering::Relaxed);
                    let mut logged = refused.lock().expect("not poisoned");
                    for (csr, reason) in pass.refused {
                        if logged.insert(csr.clone()) {
                            tracing::warn!(%csr, %reason, "left a kubelet serving certificate request pending");
                        }
                    }
                }
                Err(e) => waiting.push(format!("approving kubelet serving certificates: {e}")),
            }
            match not_ready(client, &ctx.nodes).await {
                Ok(pending) => waiting.extend(pending),
                Err(e) => waiting.push(format!("API: {e}")),
            }
            if waiting.is_empty() {
                return Ok(());
            }
            let pending = waiting.join(", ");
            line.update(&pending);
            Err(pending)
        })
        .await
        .map_err(Error::timed_out(format!(
            "inspect with `kubectl --context {} get nodes,pods -A`; the kubelet's journal on each node",
            ctx.spec.kube_context()
        )))?;
        let refused = refused.into_inner().expect("not poisoned").len();
        Ok(Outcome::Done(format!(
            "{} nodes; {} serving certificates approved{}",
            ctx.nodes.len(),
            approved.into_inner(),
            match refused {
                0 => String::new(),
                n => format!(", {n} requests refused (see the log)"),
            }
        )))
    }
}

/// What is not ready yet: planned nodes, then system pods.
async fn not_ready(client: &Client, planned: &[NodeSpec]) -> kube::Result<Vec<String>> {
    let mut waiting = vec![];
    let nodes = Api::<KubeNode>::all(client.clone()).list(&ListParams::default()).await?;
    for node in planned {
        match nodes.items.iter().find(|n| n.metadata.name.as_deref() == Some(&node.name)) {
            Some(n) if node_ready(n) => {}
            Some(_) => waiting.push(format!("node {} NotReady", node.name)),
            None => waiting.push(format!("node {} not registered", node.name)),
        }
    }
    for namespace in SYSTEM_NAMESPACES {
        let pods = Api::<Pod>::namespaced(client.clone(), namespace).list(&ListParams::default()).await?;
        if pods.items.is_empty() {
            waiting.push(format!("no pods in {namespace} yet"));
        }
        waiting.extend(pods.items.iter().filter(|p| !pod_ready(p)).map(|p| {
            format!("pod {namespace}/{} not ready", p.metadata.name.as_deref().unwrap_or_default())
        }));
    }
    Ok(waiting)
}

/// What one pass over the certificate requests did.
#[derive(Debug, Default)]
pub struct Approvals {
    pub approved: usize,
    /// Requests left pending, by name, and why.
    pub refused: Vec<(String, String)>,
}

/// Approves the pending kubelet-serving requests of `nodes` that ask for
/// their own names and addresses, and nothing else.
pub async fn approve_serving_csrs(client: &Client, nodes: &[NodeSpec]) -> kube::Result<Approvals> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut pass = Approvals::default();
    for csr in api.list(&ListParams::default()).await? {
        let name = csr.metadata.name.clone().unwrap_or_default();
        let node = match verdict(&csr, nodes) {
            Verdict::NotOurs => continue,
            Verdict::Refuse(reason) => {
                pass.refused.push((name, reason));
                continue;
            }
            Verdict::Approve(node) => node,
        };
        let mut approval = csr.clone();
        approval.status.get_or_insert_with(Default::default).conditions =
            Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("VigilApprovedNodeServingCert".into()),
                message: Some(format!(
                    "node {} of this vigil cluster, for its own name and address",
                    node.name
                )),
                ..Default::default()
            }]);
        tracing::debug!(csr = %name, node = %node.name, "approving a kubelet serving certificate");
        api.patch_approval(&name, &PatchParams::default(), &Patch::Merge(&approval)).await?;
        pass.approved += 1;
    }
    Ok(pass)
}
