//! The cluster's context, merged into the user's kubeconfig the way kind
//! does it (`kubectl --context <name>`).

use async_trait::async_trait;

use super::{Context, Outcome, Result, Step, init};
use crate::{kubeconfig, progress::Line};

pub struct MergeKubeconfig;

#[async_trait]
impl Step for MergeKubeconfig {
    fn name(&self) -> String {
        "kubeconfig".into()
    }

    fn needs(&self) -> Vec<String> {
        vec![init::NAME.into()]
    }

    fn title(&self, ctx: &Context) -> String {
        format!("kubeconfig: context {}", ctx.spec.kube_context())
    }

    async fn run(&self, ctx: &Context, _: &Line) -> Result<Outcome> {
        let context = ctx.spec.kube_context();
        kubeconfig::merge_into_file(
            &ctx.kubeconfig,
            kubeconfig::renamed(ctx.admin_conf()?, &context)?,
            &context,
        )?;
        Ok(Outcome::Done(format!("merged into {}", ctx.kubeconfig.display())))
    }
}
