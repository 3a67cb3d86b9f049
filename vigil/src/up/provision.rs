//! The machines: the control plane's step and the workers' run at once, so
//! that `kubeadm init` can start on the control plane while the workers are
//! still being made (over SSH, while their images are still being copied).
//! A step ends when every one of its machines has booted:
//! systemd is up and containerd answers. Each then holds the cluster's spec
//! (`saved_spec`), which a later `vigil` reads back.

use std::time::Duration;

use async_trait::async_trait;

use super::{Context, Error, Outcome, Result, Step};
use crate::{
    cluster::Role,
    poll,
    progress::Line,
    provider::{NodeSpec, nodeutils},
    saved_spec::{self, Saved},
};

pub const CONTROL_PLANE: &str = "provision control plane";
pub const WORKERS: &str = "provision workers";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

pub enum Provision {
    ControlPlane,
    Workers,
}

impl Provision {
    fn role(&self) -> Role {
        match self {
            Provision::ControlPlane => Role::ControlPlane,
            Provision::Workers => Role::Worker,
        }
    }

    fn nodes<'a>(&self, ctx: &'a Context) -> Vec<&'a NodeSpec> {
        ctx.nodes.iter().filter(|n| n.role == self.role()).collect()
    }
}

#[async_trait]
impl Step for Provision {
    fn name(&self) -> String {
        match self {
            Provision::ControlPlane => CONTROL_PLANE,
            Provision::Workers => WORKERS,
        }
        .into()
    }

    fn needs(&self) -> Vec<String> {
        // The provider makes what the machines share (a node network) once,
        // whichever step asks first.
        vec![]
    }

    fn title(&self, ctx: &Context) -> String {
        let names: Vec<&str> = self.nodes(ctx).iter().map(|n| n.name.as_str()).collect();
        format!("{} on network {} ({})", names.join(", "), ctx.spec.name, ctx.spec.node_subnet)
    }

    async fn run(&self, ctx: &Context, line: &Line) -> Result<Outcome> {
        let nodes: Vec<NodeSpec> = self.nodes(ctx).into_iter().cloned().collect();
        ctx.provider.provision(&ctx.spec, &nodes, &ctx.node_artefact, line).await?;
        line.update("booting");
        futures::future::try_join_all(nodes.iter().map(|n| wait_for_boot(ctx, n))).await?;
        line.update("saving the cluster spec");
        let saved = Saved::of(&ctx.spec).to_json();
        futures::future::try_join_all(nodes.iter().map(|n| async {
            let node = ctx.node(n);
            node.copy_in(saved_spec::NODE_PATH, saved.as_bytes(), 0o600)
                .await
                .map_err(|e| ctx.node_step(node.as_ref(), "saving the cluster spec", e))
        }))
        .await?;
        Ok(Outcome::Done(format!("{} booted", nodes.len())))
    }
}

/// systemd has started containerd on the node.
async fn wait_for_boot(ctx: &Context, spec: &NodeSpec) -> Result<()> {
    let node = ctx.node(spec);
    poll::until(format!("{} booting", spec.name), BOOT_TIMEOUT, Duration::from_millis(200), || async {
        let state = match node.run(&["systemctl", "is-active", "containerd"], None).await {
            Ok(out) => out.stdout,
            Err(e) => e.output,
        };
        match state.trim() {
            "active" => Ok(()),
            other => Err(format!("{}: containerd is {other:?}", spec.name)),
        }
    })
    .await
    .map_err(Error::timed_out(format!(
        "{}; the boot output: {}",
        nodeutils::journal_hint(node.as_ref(), "containerd"),
        node.console_hint()
    )))
}
