//! `vigil up`'s second half: MetalLB with an address pool on the node
//! network, the `web` workload with its probe-server sidecar (checked from
//! the host through the load balancer), then monitoring: local-path volumes,
//! node-exporter on every node and Prometheus with its data on a claim.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{PersistentVolumeClaim, Service},
};
use kube::{Api, Client, api::DynamicObject};

use crate::{
    addons::{Object, local_path, metallb, node_exporter, prometheus, web},
    build::{ImageNames, rootfs, workload::WorkloadImages},
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
    /// Prometheus's UI, on its own LoadBalancer address.
    pub prometheus_url: String,
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
    let web_images = web::Images { web: images.web.clone(), probe_server: images.probe_server.clone() };
    let objects = web::objects(&web_images, &ctx.spec.load_balancer_ip(0).to_string());
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
        || load_balancer_ip(&services, web::NAME),
    )
    .await?;
    let url = format!("http://{ip}/");
    let http = host_http().map_err(Error::Client)?;
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
    let prometheus_url = install_monitoring(ctx, client, images).await?;
    Ok(Deployed { load_balancer_ip: ip, web_url: url, prometheus_url })
}

/// From the host, the way a user will try it.
fn host_http() -> std::result::Result<reqwest::Client, String> {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())
}

async fn apply_all(client: &Client, objects: Vec<Object>, step: &'static str) -> Result<()> {
    for object in objects {
        object.apply(client).await.map_err(kube_err(step))?;
    }
    Ok(())
}

/// local-path-provisioner, node-exporter and Prometheus; returns the UI's URL.
async fn install_monitoring<P: NodeProvider>(
    ctx: &Context<'_, P>,
    client: &Client,
    images: &WorkloadImages,
) -> Result<String> {
    let spec = ctx.spec;
    let names = ImageNames { repository: spec.image_repository.clone() };
    let step = ctx.progress.step(format!(
        "monitoring: local-path-provisioner {}, node-exporter DaemonSet, Prometheus on a PersistentVolumeClaim",
        crate::versions::LOCAL_PATH
    ));
    let storage = local_path::objects(&spec.image_repository, &names.base())
        .map_err(|e| Error::Client(e.to_string()))?;
    apply_all(
        client,
        storage.into_iter().map(Object::Dynamic).collect(),
        "installing local-path-provisioner",
    )
    .await?;
    apply_all(client, node_exporter::objects(&images.node_exporter), "deploying node-exporter").await?;
    let prometheus_image = rootfs::monitoring(&spec.image_repository).image;
    let prometheus_ip = spec.load_balancer_ip(1).to_string();
    apply_all(client, prometheus::objects(&prometheus_image, &prometheus_ip), "deploying Prometheus").await?;

    let context = spec.kube_context();
    let hint = || {
        format!(
            "`kubectl --context {context} -n {} get pods,pvc` and `kubectl --context {context} -n {} get pods`, and their logs",
            node_exporter::NAMESPACE,
            local_path::NAMESPACE
        )
    };
    let storage_deployments: Api<Deployment> = Api::namespaced(client.clone(), local_path::NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), node_exporter::NAMESPACE);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), node_exporter::NAMESPACE);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), node_exporter::NAMESPACE);
    until("monitoring rollout", ROLLOUT_TIMEOUT, POLL, hint, || async {
        rolled_out_deployment(&storage_deployments, "local-path-provisioner", 1).await?;
        rolled_out_daemon_set(&daemon_sets, node_exporter::NAME).await?;
        let claim = claims.get(prometheus::CLAIM).await.map_err(|e| e.to_string())?;
        let phase = claim.status.and_then(|s| s.phase).unwrap_or_default();
        if phase != "Bound" {
            return Err(format!("PersistentVolumeClaim {}: {phase:?}, not Bound", prometheus::CLAIM));
        }
        rolled_out_deployment(&deployments, prometheus::NAME, 1).await
    })
    .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), node_exporter::NAMESPACE);
    let ip = until("Prometheus LoadBalancer address", Duration::from_secs(60), POLL, hint, || {
        load_balancer_ip(&services, prometheus::NAME)
    })
    .await?;
    let url = format!("http://{ip}:{}/", prometheus::PORT);
    let ready = format!("{url}-/ready");
    let http = host_http().map_err(Error::Client)?;
    until("Prometheus answering through the load balancer", Duration::from_secs(60), POLL, hint, || async {
        let response = http.get(&ready).send().await.map_err(|e| format!("GET {ready}: {e}"))?;
        response
            .status()
            .is_success()
            .then_some(())
            .ok_or_else(|| format!("GET {ready}: {}", response.status()))
    })
    .await?;
    step.done_with(format!("Prometheus at {url}"));
    Ok(url)
}

/// The address MetalLB gave a Service.
pub async fn load_balancer_ip(services: &Api<Service>, name: &str) -> std::result::Result<String, String> {
    let service = services.get(name).await.map_err(|e| e.to_string())?;
    service
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .and_then(|i| i.into_iter().find_map(|i| i.ip))
        .ok_or_else(|| format!("Service {name} has no LoadBalancer address yet"))
}

/// For `vigil status`: the web and Prometheus URLs, when their Services have addresses.
pub async fn urls(client: &Client) -> (Option<String>, Option<String>) {
    let web: Api<Service> = Api::namespaced(client.clone(), web::NAMESPACE);
    let monitoring: Api<Service> = Api::namespaced(client.clone(), node_exporter::NAMESPACE);
    (
        load_balancer_ip(&web, web::NAME).await.ok().map(|ip| format!("http://{ip}/")),
        load_balancer_ip(&monitoring, prometheus::NAME)
            .await
            .ok()
            .map(|ip| format!("http://{ip}:{}/", prometheus::PORT)),
    )
}
