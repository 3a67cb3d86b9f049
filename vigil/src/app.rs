//! Wires each subcommand to the library; the only place errors become anyhow.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result};
use tracing::Instrument as _;

use crate::{
    addons::ADDONS,
    build,
    cli::{Cli, Command, DashboardsAction, ExportWhat, Global, NodeAction, TracesWhat},
    cluster::{ClusterSpec, defaults},
    drill,
    images::ImageNames,
    kubeconfig,
    progress::Progress,
    provider::{self, Fault, Machines, NodeArtefact, NodeProvider, Power, nodeutils},
    status,
    up::{self, Context, Deployables, Plan, Report, Scope},
};

/// Which cluster a command is about: its machines and its name (an
/// inventory's own name when there is one).
pub struct Target {
    pub machines: Machines,
    pub name: String,
    pub inventory: Option<(PathBuf, vigil_provider_ssh::inventory::Inventory)>,
}

impl Target {
    /// The node containers of cluster `name`.
    pub fn containers(name: &str) -> Target {
        Target { machines: Machines::NodeContainers, name: name.into(), inventory: None }
    }

    /// The hosts of the inventory at `path`.
    pub fn hosts(path: &Path) -> Result<Target> {
        let (inventory, _) = vigil_provider_ssh::inventory::read(path)?;
        Ok(Target {
            machines: Machines::Inventory(path.to_path_buf()),
            name: inventory.name.clone(),
            inventory: Some((path.to_path_buf(), inventory)),
        })
    }

    /// Reads (and checks) the inventory, when `--inventory` names one.
    pub fn of(global: &Global) -> Result<Target> {
        match &global.inventory {
            None => Ok(Target::containers(&global.name)),
            Some(path) => {
                let target = Target::hosts(path)?;
                if global.name != defaults::NAME && global.name != target.name {
                    anyhow::bail!(
                        "--name {} with --inventory {}: the cluster of an inventory has its name ({}); leave --name (or VIGIL_CLUSTER) out",
                        global.name,
                        path.display(),
                        target.name
                    );
                }
                Ok(target)
            }
        }
    }

    /// What names this cluster on vigil's command line, for the hints it prints.
    pub fn flag(&self) -> String {
        match &self.inventory {
            Some((path, _)) => format!(" --inventory {}", path.display()),
            None if self.name == defaults::NAME => String::new(),
            None => format!(" --name {}", self.name),
        }
    }
}

/// The existing cluster `name`: the provider its machines are reached
/// through, and what it was created as.
async fn existing(machines: &Machines, name: &str) -> Result<(Arc<dyn NodeProvider>, ClusterSpec)> {
    let provider = provider::connect(machines).await?;
    let spec = provider::existing(provider.as_ref(), name).await?;
    Ok((provider, spec))
}

/// An admin client of `spec`'s cluster, whose control plane must be running.
async fn running_client(provider: &dyn NodeProvider, spec: &ClusterSpec) -> Result<kube::Client> {
    match admin_client(provider, spec).await {
        Some(client) => client.map_err(anyhow::Error::msg),
        None => anyhow::bail!("cluster {} has no running control plane: run `vigil up`", spec.name),
    }
}

/// An admin client of the existing cluster `name`.
async fn cluster_client(machines: &Machines, name: &str) -> Result<kube::Client> {
    let (provider, spec) = existing(machines, name).await?;
    running_client(provider.as_ref(), &spec).await
}

/// The node image and, for the whole suite, the deployables' images, built
/// side by side: the upstream Go builds and the workspace's links each
/// leave a core idle at times.
async fn build_images(
    docker: &build::Docker,
    repository: &str,
    cache: &Path,
    progress: &Progress,
    scope: Scope,
) -> Result<(String, Option<build::workload::Images>)> {
    let node = build::ensure_node_image(docker, repository, cache, progress);
    let deployables = async {
        match scope {
            Scope::Everything => build::workload::ensure(docker, repository, cache, progress).await.map(Some),
            Scope::ClusterOnly => Ok(None),
        }
    };
    let (node, deployables) = tokio::try_join!(node, deployables)?;
    Ok((node, deployables))
}

pub async fn run(cli: Cli) -> Result<()> {
    let progress = Progress::default();
    let cache = cli.global.cache_dir.clone().unwrap_or_else(build::default_cache_dir);
    let target = Target::of(&cli.global)?;
    let machines = target.machines.clone();
    let name = target.name.clone();
    let kubeconfig = cli.global.kubeconfig.clone().unwrap_or_else(kubeconfig::default_path);
    match cli.command {
        Command::Build(args) => {
            let docker = crate::docker::connect().await?;
            let (image, deployables) =
                build_images(&docker, &args.image_repository, &cache, &progress, Scope::Everything).await?;
            progress.info(format!("node image ready: {image}"));
            if let Some(deployables) = deployables {
                let refs: Vec<&str> = deployables.refs.values().map(String::as_str).collect();
                progress.info(format!("deployables' images ready: {}", refs.join(", ")));
            }
        }
        Command::Up(args) => {
            let spec = match &target.inventory {
                Some((path, inventory)) => {
                    let overridden = args.set_by_an_inventory();
                    if !overridden.is_empty() {
                        anyhow::bail!(
                            "{} cannot be used with --inventory: the inventory {} sets the hosts and the networks; change it there",
                            overridden.join(", "),
                            path.display()
                        );
                    }
                    inventory.spec(args.spec(&name))
                }
                None => args.spec(&name),
            };
            spec.validate()?;
            let scope = if args.cluster_only { Scope::ClusterOnly } else { Scope::Everything };
            let report = up(&spec, &Options { cache, kubeconfig, scope, target }, &progress).await?;
            if args.json {
                print_stdout(&serde_json::to_string_pretty(&report)?)?;
            }
        }
        Command::Manifests { write, build } => match write {
            Some(dir) => {
                for path in crate::manifests::write(&dir, &build.image_repository)? {
                    progress.info(format!("wrote {path}"));
                }
            }
            None => {
                let text: String = crate::manifests::files(&build.image_repository)
                    .into_iter()
                    .map(|(path, text)| format!("# manifests/{path}\n{text}\n"))
                    .collect();
                print_stdout(&text)?;
            }
        },
        Command::Dashboards { action: Some(DashboardsAction::Render { out, minutes }), .. } => {
            let client = cluster_client(&machines, &name).await?;
            let prometheus = prometheus_url(&client).await?;
            let dir = out.unwrap_or_else(|| crate::build::default_cache_dir().join("dashboards"));
            let credentials = crate::addons::credentials::read_api(&client).await?;
            let http = crate::monitoring::render::client(&credentials)?;
            let window = crate::monitoring::render::Window::last_minutes(minutes);
            for (_, dashboard) in crate::monitoring::dashboards::all() {
                for path in
                    crate::monitoring::render::dashboard(&http, &prometheus, &dashboard, window, &dir).await?
                {
                    progress.info(format!("wrote {}", path.display()));
                }
            }
        }
        Command::Dashboards { action: Some(DashboardsAction::Links { minutes, json }), .. } => {
            let client = cluster_client(&machines, &name).await?;
            let prometheus = prometheus_url(&client).await?;
            let links: std::collections::BTreeMap<String, (String, String)> =
                crate::monitoring::dashboards::all()
                    .into_iter()
                    .map(|(_, d)| {
                        let link = crate::monitoring::render::prometheus_link(&prometheus, &d, minutes);
                        (d.uid, (d.title, link))
                    })
                    .collect();
            let text = if json {
                let by_uid: std::collections::BTreeMap<&String, &String> =
                    links.iter().map(|(uid, (_, link))| (uid, link)).collect();
                format!("{}\n", serde_json::to_string_pretty(&by_uid)?)
            } else {
                links.values().map(|(title, link)| format!("{title}\n  {link}\n")).collect()
            };
            print_stdout(&text)?;
        }
        Command::Dashboards { write, cadvisor_labels, action: None } => match write {
            Some(dir) => {
                for path in crate::monitoring::write(&dir, &cadvisor_labels)? {
                    progress.info(format!("wrote {path}"));
                }
            }
            None => {
                let text: String = crate::monitoring::files(&cadvisor_labels)
                    .into_iter()
                    .map(|(path, text)| format!("# dashboards/{path}\n{text}\n"))
                    .collect();
                print_stdout(&text)?;
            }
        },
        Command::Images { name: wanted, build } => {
            let names = ImageNames::new(&build.image_repository);
            let images = build::all_images(&names);
            match wanted {
                Some(wanted) => {
                    let (_, image) = images.iter().find(|(name, _)| *name == wanted).with_context(|| {
                        let known: Vec<&str> = images.iter().map(|(n, _)| *n).collect();
                        format!("no image named {wanted:?}; the build produces {}", known.join(", "))
                    })?;
                    print_stdout(&format!("{image}\n"))?;
                }
                None => {
                    print_stdout(&images.iter().map(|(n, i)| format!("{n:<24} {i}\n")).collect::<String>())?
                }
            }
        }
        Command::Down => {
            down(&target, &kubeconfig, &cache, &progress).await?;
        }
        Command::Drill(args) => {
            let (provider, spec) = existing(&machines, &name).await?;
            let client = running_client(provider.as_ref(), &spec).await?;
            let web_url = status::addon_url(&client, crate::addons::web::NAME).await.context(
                "the web Service has no LoadBalancer address: run `vigil up` (without --cluster-only)",
            )?;
            let options = drill::Options {
                fault: args.fault,
                node: args.node,
                rate: args.rate,
                timeout: args.timeout,
                report_dir: args.report_dir.unwrap_or_else(|| cache.join("drills")),
            };
            let span = tracing::info_span!("drill", otel.name = "vigil drill", vigil.cluster = %spec.name);
            let report =
                drill::run(provider, &spec, client, web_url, options, &progress).instrument(span).await?;
            if args.json {
                print_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                print_stdout(&drill::summary(&report))?;
            }
        }
        Command::Status(args) => {
            let (provider, spec) = existing(&machines, &name).await?;
            let containers = provider.list_nodes(&name).await?;
            let client = admin_client(provider.as_ref(), &spec).await;
            let credentials = crate::password_file::existing(
                &crate::password_file::default_dir(),
                &spec.name,
                crate::addons::credentials::API_USER,
            );
            let status = status::collect(&spec, &provider.plan(&spec), containers, client, credentials).await;
            if args.json {
                print_stdout(&format!("{}\n", serde_json::to_string_pretty(&status)?))?;
            } else {
                print_stdout(&status.render())?;
            }
        }
        Command::Alerts { json } => {
            let client = cluster_client(&machines, &name).await?;
            let held = crate::alerts::fetch(&client).await?;
            let text = if json {
                format!("{}\n", serde_json::to_string_pretty(&held)?)
            } else {
                crate::alerts::text(&held)
            };
            print_stdout(&text)?;
        }
        Command::Traces { what: TracesWhat::Show { id, svg, json } } => {
            let client = cluster_client(&machines, &name).await?;
            let trace = crate::traces::fetch(&client, &id).await?;
            if let Some(path) = &svg {
                let title = format!("vigil traces show {}", trace.trace_id);
                std::fs::write(path, crate::traces::svg(&trace, &title))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let text = if json {
                format!("{}\n", serde_json::to_string_pretty(&trace)?)
            } else {
                crate::traces::text(&trace)
            };
            print_stdout(&text)?;
        }
        Command::Export { what: ExportWhat::Logs { dir } } => {
            let (provider, spec) = existing(&machines, &name).await?;
            let export = export_logs(provider.as_ref(), &spec, &dir, &progress).await?;
            print_stdout(&format!("{}\n", export.folder.join("index.md").display()))?;
        }
        Command::Kubeconfig => {
            let (provider, spec) = existing(&machines, &name).await?;
            let admin = read_admin_conf(provider.as_ref(), &spec).await?;
            print_stdout(&kubeconfig::to_yaml(&kubeconfig::renamed(&admin, &spec.kube_context())?))?;
        }
        Command::Preflight { fix } => {
            let inventory = cli.global.inventory.as_deref().context(
                "`vigil preflight` checks the hosts of an inventory: name it with --inventory FILE (or VIGIL_INVENTORY)",
            )?;
            preflight(inventory, fix, &cache, &progress).await?
        }
        Command::Node { action } => {
            let (provider, spec) = existing(&machines, &name).await?;
            let (fault, node) = match action {
                NodeAction::Stop { node } => (Fault::Power(Power::Stop), node),
                NodeAction::Kill { node } => (Fault::Power(Power::Kill), node),
                NodeAction::Start { node } => (Fault::Power(Power::Start), node),
                NodeAction::Isolate { node } => (Fault::Isolate, node),
                NodeAction::Reconnect { node } => (Fault::Reconnect, node),
            };
            let line = progress.line(format!("{} {node}", fault.name()));
            provider::fault(provider.as_ref(), &spec, &node, fault).await?;
            line.done();
        }
    }
    Ok(())
}

/// Checks every host of the inventory and prints what is wrong with each;
/// fails when a host cannot be reached or has a problem only its owner can mend.
async fn preflight(path: &Path, fix: bool, cache: &Path, progress: &Progress) -> Result<()> {
    use vigil_provider_ssh::{hosts, inventory};
    let (inventory, machines) = inventory::read(path)?;
    let checked = hosts::Hosts::new(machines);
    let mut reports = checked.preflight().await;
    if fix {
        for (host, made) in checked.fix(&reports).await {
            match made {
                Ok(count) => {
                    progress.info(format!("{host}: {count} change{} made", if count == 1 { "" } else { "s" }))
                }
                Err(e) => progress.info(format!("{host}: the changes failed: {e}")),
            }
        }
        reports = checked.preflight().await;
    }
    print_stdout(&hosts::render(&reports))?;
    let title = format!("vigil preflight{}: {}", if fix { " --fix" } else { "" }, path.display());
    let logs = cache.join("logs").join(&inventory.name);
    write_runbook(&logs, "preflight", &checked.runbook().to_markdown(&title), progress)?;
    let not_ready: Vec<&str> = reports.iter().filter(|r| !r.ready()).map(|r| r.host.as_str()).collect();
    if !not_ready.is_empty() {
        anyhow::bail!(
            "{} of {} hosts are not ready ({}): mend what is listed above as yours to do, then run `vigil preflight` again",
            not_ready.len(),
            reports.len(),
            not_ready.join(", ")
        );
    }
    Ok(())
}

/// Every command run on every host, beside the logs `up` keeps
/// (`<logs>/<command>-runbook.md`): what a student shows of what was done.
fn write_runbook(logs: &Path, command: &str, markdown: &str, progress: &Progress) -> Result<PathBuf> {
    let runbook = logs.join(format!("{command}-runbook.md"));
    crate::private::ensure_dir(logs)
        .and_then(|()| crate::private::write(&runbook, markdown.as_bytes()))
        .with_context(|| format!("writing the runbook {}", runbook.display()))?;
    progress.info(format!("every command run on the hosts: {}", runbook.display()));
    Ok(runbook)
}

/// The provider's runbook of `command` (`vigil up`, ...), when it keeps one.
fn save_provider_runbook(provider: &dyn NodeProvider, logs: &Path, command: &str, progress: &Progress) {
    let title = format!("vigil {command}");
    if let Some(markdown) = provider.runbook(&title)
        && let Err(e) = write_runbook(logs, command, &markdown, progress)
    {
        progress.info(format!("{e:#}"));
    }
}

/// The cluster's Prometheus, from its Service's LoadBalancer address.
async fn prometheus_url(client: &kube::Client) -> Result<String> {
    status::addon_url(client, crate::addons::prometheus::NAME).await.context(
        "the prometheus Service has no LoadBalancer address: run `vigil up` (without --cluster-only)",
    )
}

/// Writes to stdout; a reader that went away (`vigil status --json | head`)
/// ends the output quietly instead of failing.
fn print_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// Where `up` keeps things, and what it deploys.
pub struct Options {
    pub cache: PathBuf,
    pub kubeconfig: PathBuf,
    pub scope: Scope,
    /// The machines, and how the hints `up` prints name the cluster.
    pub target: Target,
}

/// Builds what is missing, creates or completes the cluster, deploys the
/// add-ons, and prints what to do next.
pub async fn up(spec: &ClusterSpec, options: &Options, progress: &Progress) -> Result<Report> {
    let provider = provider::connect(&options.target.machines).await?;
    let logs = options.cache.join("logs").join(&spec.name);
    let result = up_on(provider.clone(), spec, options, &logs, progress).await;
    save_provider_runbook(provider.as_ref(), &logs, "up", progress);
    result
}

async fn up_on(
    provider: Arc<dyn NodeProvider>,
    spec: &ClusterSpec,
    options: &Options,
    logs: &Path,
    progress: &Progress,
) -> Result<Report> {
    let cache = options.cache.as_path();
    // Cheap checks first: a clashing subnet or a cluster made with other
    // choices should not wait for a long build.
    if let Some(saved) = provider::saved(provider.as_ref(), &spec.name).await {
        crate::saved_spec::check(&saved, spec)?;
    }
    provider.preflight(spec).await?;
    let docker = crate::docker::connect().await?;
    let (image, images) =
        build_images(&docker, &spec.image_repository, cache, progress, options.scope).await?;
    let node_artefact = NodeArtefact { image };
    let deployables =
        images.map(|images| Deployables { images, archive: Arc::new(build::LocalImages(docker.clone())) });
    let ctx = Context::new(
        spec.clone(),
        provider,
        progress.clone(),
        logs.to_path_buf(),
        options.kubeconfig.clone(),
        node_artefact,
        deployables,
    );
    let plan = Plan::new(up::steps(options.scope));
    let report = plan.run(&ctx).await.map_err(|failed| {
        let stopped = match failed.stopped.is_empty() {
            true => String::new(),
            false => format!(" (stopped with it: {})", failed.stopped.join(", ")),
        };
        let flag = options.target.flag();
        anyhow::Error::new(failed.source).context(format!(
            "`vigil up` stopped at step {}{stopped}; the nodes are left as they are: run `vigil{flag} up` again to resume, or `vigil{flag} down` to remove everything (logs in {}; `vigil{flag} export logs` collects the nodes' journals and the pods' logs)",
            failed.step,
            logs.display(),
        ))
    })?;
    // Timings for the benchmark; the token is not serialized.
    let _ = crate::private::write(
        &logs.join("up-report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    );
    let worker = ctx.workers().first().map_or_else(|| spec.worker_name(0), |n| n.name.clone());
    progress.info(summary(spec, &report, &options.target.flag(), &worker));
    Ok(report)
}

/// What `up` prints at the end: what to curl and open, and what to try next.
fn summary(spec: &ClusterSpec, report: &Report, flag: &str, worker: &str) -> String {
    let addresses: String = ADDONS
        .iter()
        .filter_map(|a| a.address.as_ref())
        .filter_map(|a| {
            let url = report.address(a.key)?;
            let verb = if a.key == crate::addons::web::NAME { "curl" } else { "open" };
            Some(format!("  {verb} {url:<28} # {}\n", a.hint))
        })
        .collect::<String>()
        + &report
            .credentials
            .as_ref()
            .map(|c| {
                format!(
                    "  # Prometheus, Alertmanager, Jaeger and VictoriaLogs ask for user {} and the password in {}\n",
                    c.username,
                    c.password_file.display()
                )
            })
            .unwrap_or_default()
        + &report
            .address(crate::addons::prometheus::NAME)
            .map(|_| format!("  vigil{flag} dashboards links   # vigil's dashboards, live in Prometheus's UI\n"))
            .unwrap_or_default();
    format!(
        "\nCluster {} is up in {:.0}s: 1 control plane, {} workers, Kubernetes {}.\n\n{addresses}  kubectl --context {} get nodes -o wide\n  vigil{flag} status\n  vigil{flag} node stop {}   # break a worker on purpose\n  vigil{flag} down\n",
        spec.name,
        report.seconds,
        spec.workers,
        spec.kubernetes_version,
        spec.kube_context(),
        worker,
    )
}

/// `vigil export logs`, with the admin client when the API server answers.
pub async fn export_logs(
    provider: &dyn NodeProvider,
    spec: &ClusterSpec,
    dir: &Path,
    progress: &Progress,
) -> Result<crate::export::Export> {
    let client = match admin_client(provider, spec).await {
        Some(client) => client,
        None => Err(format!("cluster {} has no initialized control plane: run `vigil up`", spec.name)),
    };
    let export = crate::export::logs(provider, spec, client, dir, progress).await?;
    if !export.missing.is_empty() {
        progress.info(format!(
            "{} things could not be collected; {} says which and why",
            export.missing.len(),
            export.folder.join("index.md").display()
        ));
    }
    Ok(export)
}

async fn read_admin_conf(provider: &dyn NodeProvider, spec: &ClusterSpec) -> Result<String> {
    let cp = provider::control_plane(provider, spec).context("the provider planned no control plane")?;
    nodeutils::read_file(cp.as_ref(), up::ADMIN_CONF)
        .await
        .with_context(|| format!("cluster {} has no initialized control plane: run `vigil up`", spec.name))
}

async fn admin_client(
    provider: &dyn NodeProvider,
    spec: &ClusterSpec,
) -> Option<Result<kube::Client, String>> {
    let admin = read_admin_conf(provider, spec).await.ok()?;
    Some(up::client_for(&admin).await.map_err(|e| e.to_string()))
}

/// Removes the cluster's machines, volumes, network and kubeconfig entries
/// (with an inventory: takes the cluster and vigil's build off the hosts,
/// and says what it left).
pub async fn down(
    target: &Target,
    kubeconfig: &Path,
    cache: &Path,
    progress: &Progress,
) -> Result<provider::Removed> {
    let name = target.name.as_str();
    let provider = provider::connect(&target.machines).await?;
    let logs = cache.join("logs").join(name);
    let removed = remove(provider.as_ref(), name, kubeconfig, progress).await;
    save_provider_runbook(provider.as_ref(), &logs, "down", progress);
    let removed = removed?;
    for left in &removed.left {
        progress.info(format!("left: {left}"));
    }
    Ok(removed)
}

async fn remove(
    provider: &dyn NodeProvider,
    name: &str,
    kubeconfig: &Path,
    progress: &Progress,
) -> Result<provider::Removed> {
    let line = progress.line(format!("removing cluster {name}"));
    let removed = provider.delete_cluster(name).await?;
    let had_context = kubeconfig::remove_from_file(kubeconfig, name)?;
    let password_dir = crate::password_file::default_dir();
    let had_password = crate::password_file::remove(&password_dir, name)
        .with_context(|| format!("removing {}", crate::password_file::path(&password_dir, name).display()))?;
    line.done_with(format!(
        "{} machines, {} volumes, {} networks{}{}",
        removed.machines.len(),
        removed.volumes.len(),
        removed.networks.len(),
        if had_context {
            format!(", context {name} removed from {}", kubeconfig.display())
        } else {
            String::new()
        },
        if had_password { ", its API password file removed" } else { "" }
    ));
    Ok(removed)
}
