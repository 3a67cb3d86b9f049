//! The deployables' images into every node's containerd (one archive,
//! imported where a node lacks them), before anything runs them.

use async_trait::async_trait;

use super::{Context, Error, Outcome, Result, Step, provision};
use crate::{
    progress::Line,
    provider::{NodeSpec, nodeutils},
};

pub const NAME: &str = "load images";

pub struct LoadImages;

#[async_trait]
impl Step for LoadImages {
    fn name(&self) -> String {
        NAME.into()
    }

    fn needs(&self) -> Vec<String> {
        vec![provision::CONTROL_PLANE.into(), provision::WORKERS.into()]
    }

    fn title(&self, ctx: &Context) -> String {
        let refs = ctx.deployables.as_ref().map(|d| d.images.refs.values().cloned().collect::<Vec<_>>());
        format!("images into every node: {}", refs.unwrap_or_default().join(", "))
    }

    async fn run(&self, ctx: &Context, _: &Line) -> Result<Outcome> {
        let loaded = futures::future::try_join_all(ctx.nodes.iter().map(|n| load(ctx, n))).await?;
        let loaded: Vec<&str> = loaded.into_iter().flatten().collect();
        Ok(match loaded.len() {
            0 => Outcome::Skipped("every node has them".into()),
            _ => Outcome::Done(format!("loaded into {}", loaded.join(", "))),
        })
    }
}

/// Loads the images into one node unless it has them; the node's name if it did.
async fn load<'a>(ctx: &Context, spec: &'a NodeSpec) -> Result<Option<&'a str>> {
    let deployables = ctx.deployables.as_ref().ok_or(Error::OutOfOrder("the deployables' images"))?;
    let node = ctx.node(spec);
    if nodeutils::has_images(node.as_ref(), &deployables.images.all_tags).await {
        return Ok(None);
    }
    let archive = ctx.image_archive().await?.to_vec();
    nodeutils::load_images(node.as_ref(), archive)
        .await
        .map_err(|e| ctx.node_step(node.as_ref(), "loading images", e))?;
    Ok(Some(&spec.name))
}
