//! The cluster's spec in the cluster: the ConfigMap `kube-system/vigil-cluster`
//! (the nodes get theirs as they are provisioned), where `kubectl` and
//! in-cluster readers find what the cluster was made with.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;

use super::{Context, Outcome, Result, Step, init};
use crate::{
    apply::Object,
    progress::Line,
    saved_spec::{CONFIG_MAP, CONFIG_MAP_KEY, CONFIG_MAP_NAMESPACE, Saved},
};

pub const NAME: &str = "save the cluster spec";

pub struct SaveSpec;

/// The ConfigMap holding `saved`.
pub fn config_map(saved: &Saved) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP.into()),
            namespace: Some(CONFIG_MAP_NAMESPACE.into()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".into(), "vigil".into())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(CONFIG_MAP_KEY.into(), saved.to_json())])),
        ..Default::default()
    }
}

#[async_trait]
impl Step for SaveSpec {
    fn name(&self) -> String {
        NAME.into()
    }

    fn needs(&self) -> Vec<String> {
        vec![init::NAME.into()]
    }

    fn title(&self, _: &Context) -> String {
        format!("save the cluster spec in {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP}")
    }

    async fn run(&self, ctx: &Context, _: &Line) -> Result<Outcome> {
        ctx.applier()?.apply(&[Object::typed(config_map(&Saved::of(&ctx.spec)))]).await?;
        Ok(Outcome::done())
    }
}
