//! Wires each subcommand to the library; the only place errors become anyhow.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::{
    build,
    cli::{Cli, Command, NodeAction},
    cluster::ClusterSpec,
    create, docker, kubeconfig,
    progress::Progress,
    provider::{Fault, Node, NodeProvider, docker::DockerProvider},
    status,
};

/// The spec of an existing cluster is what `up` was given; commands other
/// than `up` only need its name and defaults (subnets are read back from Docker).
fn spec_for(name: &str) -> ClusterSpec {
    ClusterSpec { name: name.into(), ..ClusterSpec::default() }
}

pub async fn run(cli: Cli) -> Result<()> {
    let progress = Progress::default();
    let cache = cli.global.cache_dir.clone().unwrap_or_else(build::default_cache_dir);
    let name = cli.global.name.clone();
    let kubeconfig = cli.global.kubeconfig.clone().unwrap_or_else(kubeconfig::default_path);
    match cli.command {
        Command::Build(args) => {
            let docker = docker::connect().await?;
            let image = build::ensure_node_image(&docker, &args.image_repository, &cache, &progress).await?;
            progress.info(format!("node image ready: {image}"));
        }
        Command::Up(args) => {
            let spec = args.spec(&name);
            spec.validate()?;
            up(&spec, &Options { cache, kubeconfig, workload: !args.cluster_only }, &progress).await?;
        }
        Command::Manifests { write, build } => match write {
            Some(dir) => {
                for path in crate::manifests::write(&dir, &build.image_repository)? {
                    progress.info(format!("wrote {path}"));
                }
            }
            None => {
                for (path, text) in crate::manifests::files(&build.image_repository) {
                    println!("# manifests/{path}\n{text}");
                }
            }
        },
        Command::Down => down(&name, &kubeconfig, &progress).await?,
        Command::Status(args) => {
            let provider = DockerProvider::new(docker::connect().await?);
            let spec = existing_spec(&provider, &name).await?;
            let containers = provider.list_nodes(&name).await?;
            let client = admin_client(&provider, &spec).await;
            let (web, prometheus) = match &client {
                Some(Ok(client)) => crate::deploy::urls(client).await,
                _ => (None, None),
            };
            let mut status = status::collect(&spec, containers, client).await;
            status.addresses.web = web;
            status.addresses.prometheus = prometheus;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
        }
        Command::Kubeconfig => {
            let provider = DockerProvider::new(docker::connect().await?);
            let spec = existing_spec(&provider, &name).await?;
            let admin = read_admin_conf(&provider, &spec).await?;
            print!("{}", kubeconfig::to_yaml(&kubeconfig::renamed(&admin, &spec.kube_context())?));
        }
        Command::Node { action } => {
            let provider = DockerProvider::new(docker::connect().await?);
            let spec = existing_spec(&provider, &name).await?;
            let (fault, node) = match action {
                NodeAction::Stop { node } => (Fault::Stop, node),
                NodeAction::Kill { node } => (Fault::Kill, node),
                NodeAction::Start { node } => (Fault::Start, node),
                NodeAction::Isolate { node } => (Fault::Isolate, node),
                NodeAction::Reconnect { node } => (Fault::Reconnect, node),
            };
            let step = progress.step(format!("{fault:?} {node}").to_lowercase());
            provider.fault(&spec, &node, fault).await?;
            step.done();
        }
    }
    Ok(())
}

/// Where `up` keeps things, and what it deploys.
pub struct Options {
    pub cache: PathBuf,
    pub kubeconfig: PathBuf,
    /// MetalLB and the web workload, after the cluster.
    pub workload: bool,
}

/// Builds what is missing, creates or completes the cluster, deploys the
/// workload, and prints what to do next.
pub async fn up(
    spec: &ClusterSpec,
    options: &Options,
    progress: &Progress,
) -> Result<(create::Report, Option<crate::deploy::Deployed>)> {
    let (cache, kubeconfig) = (options.cache.as_path(), options.kubeconfig.as_path());
    let started = std::time::Instant::now();
    let provider = DockerProvider::new(docker::connect().await?);
    // Cheap checks first: a clashing subnet should not wait for a long build.
    provider.preflight(spec).await?;
    let node_image =
        build::ensure_node_image(provider.docker(), &spec.image_repository, cache, progress).await?;
    let workload_images = match options.workload {
        true => {
            Some(build::workload::ensure(provider.docker(), &spec.image_repository, cache, progress).await?)
        }
        false => None,
    };
    let ctx = create::Context {
        spec,
        provider: &provider,
        progress,
        logs: cache.join("logs").join(&spec.name),
        kubeconfig: kubeconfig.to_owned(),
    };
    let resume = || {
        format!(
            "`vigil up` stopped; the nodes are left as they are: run `vigil up` again to resume, or `vigil down --name {}` to remove everything (logs in {})",
            spec.name,
            ctx.logs.display()
        )
    };
    let (client, report) = create::up(&ctx, &node_image).await.with_context(resume)?;
    let deployed = match &workload_images {
        Some(images) => {
            Some(crate::deploy::deploy(&ctx, &client, provider.docker(), images).await.with_context(resume)?)
        }
        None => None,
    };
    let report_path = ctx.logs.join("up-report.json");
    // Timings for the benchmark; the token is not serialized.
    let _ = std::fs::write(&report_path, serde_json::to_string_pretty(&report)?);
    let name_flag = if spec.name == ClusterSpec::default().name {
        String::new()
    } else {
        format!(" --name {}", spec.name)
    };
    progress.info(format!(
        "\nCluster {} is up in {:.0}s: 1 control plane, {} workers, Kubernetes {}.\n\
         {}\n  kubectl --context {} get nodes -o wide\n  vigil{name_flag} status\n  vigil{name_flag} node stop {}   # break a worker on purpose\n  vigil{name_flag} down\n",
        spec.name,
        started.elapsed().as_secs_f64(),
        spec.workers,
        spec.kubernetes_version,
        match &deployed {
            Some(d) => format!(
                "\n  curl {}          # the web service behind the load balancer (or open it in a browser)\n  open {}    # Prometheus (container_cpu_usage_seconds_total, ...)\n",
                d.web_url, d.prometheus_url
            ),
            None => "\n".into(),
        },
        spec.kube_context(),
        spec.worker_name(0),
    ));
    Ok((report, deployed))
}

/// Reads the subnet back from the cluster's Docker network, so that node
/// addresses in fault hooks and status match what `up` created.
async fn existing_spec(provider: &DockerProvider, name: &str) -> Result<ClusterSpec> {
    let mut spec = spec_for(name);
    if let Ok(network) = provider.docker().inspect_network(&spec.network_name(), None).await {
        let subnet = network.ipam.and_then(|i| i.config).and_then(|c| c.into_iter().find_map(|c| c.subnet));
        if let Some(subnet) = subnet.and_then(|s| s.parse().ok()) {
            spec.node_subnet = subnet;
        }
        let workers = provider
            .list_nodes(name)
            .await?
            .iter()
            .filter(|n| n.role == crate::cluster::Role::Worker)
            .count();
        spec.workers = workers.max(1);
    }
    Ok(spec)
}

async fn read_admin_conf(provider: &DockerProvider, spec: &ClusterSpec) -> Result<String> {
    provider
        .node(&spec.control_plane_name())
        .read_file("/etc/kubernetes/admin.conf")
        .await
        .with_context(|| format!("cluster {} has no initialized control plane: run `vigil up`", spec.name))
}

async fn admin_client(provider: &DockerProvider, spec: &ClusterSpec) -> Option<Result<kube::Client, String>> {
    let admin = read_admin_conf(provider, spec).await.ok()?;
    Some(create::client_for(&admin).await.map_err(|e| e.to_string()))
}

/// Removes the cluster's containers, volumes, network and kubeconfig entries.
pub async fn down(name: &str, kubeconfig: &Path, progress: &Progress) -> Result<()> {
    let provider = DockerProvider::new(docker::connect().await?);
    let step = progress.step(format!("removing cluster {name}"));
    let removed = provider.delete_cluster(name).await?;
    let had_context = kubeconfig::remove_from_file(kubeconfig, name)?;
    step.done_with(format!(
        "{} containers, {} volumes, {} networks{}",
        removed.containers.len(),
        removed.volumes.len(),
        removed.networks.len(),
        if had_context {
            format!(", context {name} removed from {}", kubeconfig.display())
        } else {
            String::new()
        }
    ));
    Ok(())
}
