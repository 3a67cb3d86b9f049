//! `kubeadm init` on the control plane from a typed config, unless it is
//! already initialized; a half-done earlier attempt is reset first. Ends
//! with an API client for the steps after it.

use std::time::Duration;

use async_trait::async_trait;

use super::{Context, Outcome, Result, Step, client_for, provision};
use crate::{
    kubeadm,
    progress::Line,
    provider::nodeutils::{self, file_exists, read_file},
};

pub const NAME: &str = "kubeadm init";
pub const KUBEADM_CONFIG: &str = "/etc/vigil/kubeadm.yaml";
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
const API_SERVER_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
/// Long enough for concurrent joins on a slow machine; the token is deleted
/// as soon as they are done anyway.
pub const TOKEN_TTL: Duration = Duration::from_secs(10 * 60);

pub struct KubeadmInit;

#[async_trait]
impl Step for KubeadmInit {
    fn name(&self) -> String {
        NAME.into()
    }

    fn needs(&self) -> Vec<String> {
        vec![provision::CONTROL_PLANE.into()]
    }

    fn title(&self, ctx: &Context) -> String {
        format!("kubeadm init on {} (Kubernetes {})", ctx.control_plane().name, ctx.spec.kubernetes_version)
    }

    async fn run(&self, ctx: &Context, line: &Line) -> Result<Outcome> {
        let cp_spec = ctx.control_plane();
        let cp = ctx.node(cp_spec);
        let outcome = if file_exists(cp.as_ref(), ADMIN_CONF).await {
            ctx.set_token_created(false);
            Outcome::Skipped("already initialized".into())
        } else {
            let hint = format!(
                "{}; `vigil up` retries after a reset",
                nodeutils::journal_hint(cp.as_ref(), "kubelet")
            );
            if file_exists(cp.as_ref(), API_SERVER_MANIFEST).await {
                // An earlier init stopped half-way: start that node over.
                line.update("resetting a half-done earlier attempt");
                ctx.run_logged(cp.as_ref(), "kubeadm reset", &["kubeadm", "reset", "--force"], hint.clone())
                    .await?;
            }
            for (name, patch) in kubeadm::patches() {
                let path = format!("{}/{name}", kubeadm::PATCHES_DIR);
                cp.copy_in(&path, patch.as_bytes(), 0o600)
                    .await
                    .map_err(|e| ctx.node_step(cp.as_ref(), "writing kubeadm's patches", e))?;
            }
            let config =
                kubeadm::init_config(&ctx.spec, &ctx.provider.info(), cp_spec, &ctx.token, TOKEN_TTL);
            cp.copy_in(KUBEADM_CONFIG, config.as_bytes(), 0o600)
                .await
                .map_err(|e| ctx.node_step(cp.as_ref(), "writing the kubeadm config", e))?;
            ctx.run_logged(
                cp.as_ref(),
                "kubeadm config validate",
                &["kubeadm", "config", "validate", "--config", KUBEADM_CONFIG],
                hint.clone(),
            )
            .await?;
            line.update("kubeadm init");
            ctx.run_logged(
                cp.as_ref(),
                "kubeadm init",
                &["kubeadm", "init", "--config", KUBEADM_CONFIG, "--skip-token-print"],
                hint,
            )
            .await?;
            ctx.set_token_created(true);
            Outcome::done()
        };
        let admin_conf = read_file(cp.as_ref(), ADMIN_CONF)
            .await
            .map_err(|e| ctx.node_step(cp.as_ref(), "reading admin.conf", e))?;
        ctx.set_client(client_for(&admin_conf).await?);
        ctx.set_admin_conf(admin_conf);
        Ok(outcome)
    }
}
