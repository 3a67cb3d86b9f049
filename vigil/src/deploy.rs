//! `vigil up`'s second half: MetalLB with an address pool on the node
//! network, then the `web` workload with its probe-server sidecar, checked
//! from the host through the load balancer.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::Service,
};
use kube::{Api, Client, api::DynamicObject};

use crate::{
    addons::{Object, metallb, web},
    build::workload::WorkloadImages,
    create::{Context, Error, Result, until},
    provider::{Node, NodeProvider},
};

const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(500);

/// What `up` deployed, for its summary and `vigil status --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployed {
    pub load_balancer_ip: String,
    pub web_url: String,
}

fn kube_err(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { step, source }
}

/// Loads the workload images into every node's containerd, unless present.
async fn load_images<P: NodeProvider>(
    ctx: &Context<'_, P>,
    docker: &bollard::Docker,
    images: &WorkloadImages,
) -> Result<()> {
    let refs = &images.all_tags;
    let mut archive: Option<Vec<u8>> = None;
    for node in ctx.spec.nodes() {
        let handle = ctx.provider.node(&node.name);
        let listed = handle.run(&["ctr", "--namespace", "k8s.io", "images", "ls", "--quiet"], None).await;
        let present =
            listed.map(|out| refs.iter().all(|r| out.stdout.lines().any(|l| l == r))).unwrap_or(false);
        if present {
            continue;
        }
        if archive.is_none() {
            archive = Some(save(docker, refs).await?);
        }
        handle
            .run(&["ctr", "--namespace", "k8s.io", "images", "import", "--digests", "-"], archive.clone())
            .await
            .map_err(|source| Error::NodeStep {
                node: node.name.clone(),
                step: "loading the workload images",
                source,
                log: ctx.logs.join("deploy.log"),
                hint: format!("`docker exec {} journalctl -u containerd`", node.name),
            })?;
    }
    Ok(())
}

async fn save(docker: &bollard::Docker, refs: &[String]) -> Result<Vec<u8>> {
    use futures::StreamExt;
    let names: Vec<&str> = refs.iter().map(String::as_str).collect();
    let mut out = vec![];
    let mut stream = std::pin::pin!(docker.export_images(&names));
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(
            &chunk.map_err(|e| Error::Client(format!("docker save {}: {e}", refs.join(" "))))?,
        );
    }
    Ok(out)
}

async fn rolled_out_deployment(
    api: &Api<Deployment>,
    name: &str,
    want: i32,
) -> std::result::Result<(), String> {
    let d = api.get(name).await.map_err(|e| e.to_string())?;
    let status = d.status.unwrap_or_default();
    let (ready, updated) = (status.ready_replicas.unwrap_or(0), status.updated_replicas.unwrap_or(0));
    let current = status.observed_generation >= d.metadata.generation;
    if current && ready >= want && updated >= want && status.replicas.unwrap_or(0) == want {
        Ok(())
    } else {
        Err(format!("deployment {name}: {ready}/{want} ready, {updated} updated"))
    }
}

async fn rolled_out_daemon_set(api: &Api<DaemonSet>, name: &str) -> std::result::Result<(), String> {
    let status = api.get(name).await.map_err(|e| e.to_string())?.status.unwrap_or_default();
    if status.desired_number_scheduled > 0 && status.number_ready == status.desired_number_scheduled {
        Ok(())
    } else {
        Err(format!("daemonset {name}: {}/{} ready", status.number_ready, status.desired_number_scheduled))
    }
}

async fn install_metallb<P: NodeProvider>(ctx: &Context<'_, P>, client: &Client) -> Result<()> {
    let spec = ctx.spec;
    let step = ctx.progress.step(format!(
        "MetalLB {} (L2), pool {:?}",
        metallb::VERSION,
        spec.load_balancer_range()
    ));
    let objects =
        metallb::native_objects(&spec.image_repository).map_err(|e| Error::Client(e.to_string()))?;
    for object in objects {
        Object::Dynamic(object).apply(client).await.map_err(kube_err("installing MetalLB"))?;
    }
    let hint =
        format!("`kubectl --context {} -n metallb-system get pods` and their logs", spec.kube_context());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), metallb::NAMESPACE);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), metallb::NAMESPACE);
    until(
        "MetalLB rollout",
        ROLLOUT_TIMEOUT,
        POLL,
        || hint.clone(),
        || async {
            rolled_out_deployment(&deployments, "controller", 1).await?;
            rolled_out_daemon_set(&daemon_sets, "speaker").await
        },
    )
    .await?;
    // The controller's admission webhook validates pools; it may take a
    // moment after the rollout before it answers.
    let pool: Vec<DynamicObject> = metallb::pool_objects(spec);
    until(
        "MetalLB address pool",
        Duration::from_secs(90),
        POLL,
        || hint,
        || async {
            for object in &pool {
                Object::Dynamic(object.clone()).apply(client).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    )
    .await?;
    step.done();
    Ok(())
}

pub async fn deploy<P: NodeProvider>(
    ctx: &Context<'_, P>,
    client: &Client,
    docker: &bollard::Docker,
    images: &WorkloadImages,
) -> Result<Deployed> {
    install_metallb(ctx, client).await?;

    let step = ctx
        .progress
        .step(format!("web: 3 replicas + probe-server sidecar, Service type LoadBalancer ({})", images.web));
    load_images(ctx, docker, images).await?;
    let objects =
        web::objects(&web::Images { web: images.web.clone(), probe_server: images.probe_server.clone() });
    for object in &objects {
        object.apply(client).await.map_err(kube_err("deploying web"))?;
    }
    let hint = format!(
        "`kubectl --context {} describe deployment web` and `kubectl logs -l app=web -c probe-server`",
        ctx.spec.kube_context()
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), web::NAMESPACE);
    until(
        "web rollout",
        ROLLOUT_TIMEOUT,
        POLL,
        || hint.clone(),
        || rolled_out_deployment(&deployments, web::NAME, 3),
    )
    .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), web::NAMESPACE);
    let ip = until(
        "LoadBalancer address",
        Duration::from_secs(60),
        POLL,
        || hint.clone(),
        || load_balancer_ip(&services),
    )
    .await?;
    let url = format!("http://{ip}/");
    // From the host, the way a user will try it.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| Error::Client(e.to_string()))?;
    let answer = until(
        "web answering through the load balancer",
        Duration::from_secs(60),
        POLL,
        || hint,
        || async {
            let response = http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
            let body = response.text().await.map_err(|e| e.to_string())?;
            body.starts_with("I'm ")
                .then_some(body.trim().to_owned())
                .ok_or_else(|| format!("GET {url} answered {body:?}"))
        },
    )
    .await?;
    step.done_with(format!("{url} answers {answer:?}"));
    Ok(Deployed { load_balancer_ip: ip, web_url: url })
}

/// The address MetalLB gave Service `web`.
pub async fn load_balancer_ip(services: &Api<Service>) -> std::result::Result<String, String> {
    let service = services.get(web::NAME).await.map_err(|e| e.to_string())?;
    service
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .and_then(|i| i.into_iter().find_map(|i| i.ip))
        .ok_or_else(|| "Service web has no LoadBalancer address yet".to_owned())
}

/// For `vigil status`: the web URL, when the Service has an address.
pub async fn web_url(client: &Client) -> Option<String> {
    let services: Api<Service> = Api::namespaced(client.clone(), web::NAMESPACE);
    load_balancer_ip(&services).await.ok().map(|ip| format!("http://{ip}/"))
}
