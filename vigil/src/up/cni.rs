//! The pod network: flannel (VXLAN) as typed objects.

use async_trait::async_trait;

use super::{Context, Outcome, Result, Step, init};
use crate::{addons::flannel, images::ImageNames, kubeadm, progress::Line, versions};

pub const NAME: &str = "pod network";

pub struct PodNetwork;

#[async_trait]
impl Step for PodNetwork {
    fn name(&self) -> String {
        NAME.into()
    }

    fn needs(&self) -> Vec<String> {
        vec![init::NAME.into()]
    }

    fn title(&self, ctx: &Context) -> String {
        format!("pod network: flannel {} (VXLAN), {}", versions::FLANNEL, ctx.spec.pod_subnet)
    }

    async fn run(&self, ctx: &Context, _: &Line) -> Result<Outcome> {
        let image = ImageNames::new(&ctx.spec.image_repository).flannel();
        let api_server = (ctx.control_plane().ip, kubeadm::API_SERVER_PORT);
        ctx.applier()?.apply(&flannel::objects(&ctx.spec, &image, api_server)).await?;
        Ok(Outcome::done())
    }
}
