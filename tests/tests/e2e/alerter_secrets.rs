//! The alerter's secrets on the shared cluster (issue 18): the webhook's
//! URL (`vigil up --alert-webhook`) is in the Secret `vigil-alerter-sinks`
//! only, never in the ConfigMap, the pods' template or a NodeIncident's
//! delivery record; the pods read the API password from its Secret, one key.

use alerter::{
    config::{Config, SinkKind},
    crd::NodeIncident,
};
use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
};
use kube::{Api, api::ListParams};
use vigil::addons::{
    alerter::{API_CREDENTIALS_SECRET, API_PASSWORD_KEY, NAME, SINKS_SECRET, WEBHOOK_URL_KEY},
    node_exporter::NAMESPACE,
};
use vigil_e2e::Cluster;

pub async fn the_webhook_url_is_only_in_its_secret(c: &Cluster) -> Result<()> {
    let url = c.spec.alerting.webhook.clone().context("the test cluster names a webhook")?;
    let secret = Api::<Secret>::namespaced(c.client.clone(), NAMESPACE).get(SINKS_SECRET).await?;
    let held =
        secret.data.as_ref().and_then(|d| d.get(WEBHOOK_URL_KEY)).context("no webhook URL in the Secret")?;
    ensure!(held.0 == url.as_bytes(), "the Secret holds another URL than the flag's");

    let config_map = Api::<ConfigMap>::namespaced(c.client.clone(), NAMESPACE).get(NAME).await?;
    let text = config_map.data.as_ref().and_then(|d| d.get("config.json")).context("no config.json")?;
    ensure!(!text.contains(&url), "the ConfigMap holds the webhook's URL");
    let config = Config::from_json(text, "the ConfigMap")?;
    ensure!(
        config.sinks.iter().any(
            |s| matches!(&s.kind, SinkKind::Webhook { url_file, .. } if url_file.ends_with(WEBHOOK_URL_KEY))
        ),
        "no webhook sink reading its URL from a file: {config:?}"
    );

    let deployment = Api::<Deployment>::namespaced(c.client.clone(), NAMESPACE).get(NAME).await?;
    let template = serde_json::to_string(&deployment.spec.context("no spec")?.template)?;
    ensure!(!template.contains(&url), "the pods' template holds the webhook's URL");
    ensure!(
        template.contains(API_CREDENTIALS_SECRET)
            && template.contains(&format!("\"key\":\"{API_PASSWORD_KEY}\"")),
        "the pods do not mount the API password"
    );

    let incidents = Api::<NodeIncident>::all(c.client.clone()).list(&ListParams::default()).await?;
    for incident in &incidents.items {
        let status = serde_json::to_string(&incident.status)?;
        ensure!(
            !status.contains(&url),
            "NodeIncident {} records the webhook's URL",
            incident.metadata.name.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}
