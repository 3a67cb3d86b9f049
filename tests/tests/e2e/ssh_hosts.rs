//! Real hosts over SSH (issue 19), on bare hosts: containers with Debian
//! 12, systemd and sshd only, on a network of their own, reached by vigil
//! over SSH alone (`vigil_e2e::ssh_hosts`).

use anyhow::{Context as _, Result, ensure};
use clap::Parser as _;
use vigil::{
    app,
    cli::Cli,
    provider::{Node as _, NodeProvider as _, nodeutils},
};
use vigil_e2e::ssh_hosts::{BareHosts, ensure_image, runbook_summary};
use vigil_provider_ssh::{hosts::Hosts, inventory};

/// `vigil preflight --inventory PATH [--fix]`, as the CLI runs it.
async fn preflight(path: &std::path::Path, fix: bool) -> Result<()> {
    let mut args = vec!["vigil", "preflight", "--inventory", path.to_str().context("a UTF-8 path")?];
    if fix {
        args.push("--fix");
    }
    app::run(Cli::try_parse_from(args)?).await
}

/// `vigil preflight` reaches three bare hosts over SSH (one checked against
/// known_hosts, two pinned) and finds them ready; forwarding turned off is
/// set again by `--fix`, now and at boot; a port taken on one, a
/// changed host key, a key the host does not accept and an address nothing
/// answers at are each named with the host and the fix.
pub async fn preflight_reaches_bare_hosts_and_names_what_is_wrong() -> Result<()> {
    let image = ensure_image(&vigil_e2e::images().repository, &vigil_e2e::cache_dir()).await?;
    let hosts = BareHosts::start(&image).await?;
    let result = checks(&hosts).await;
    hosts.remove().await?;
    result
}

async fn checks(hosts: &BareHosts) -> Result<()> {
    let good = hosts.inventory().await?;
    let path = hosts.write("inventory.yaml", &good)?;
    let (_, machines) = inventory::read(&path)?;
    let checked = Hosts::new(machines.clone());
    let reports = checked.preflight().await;
    let text = vigil_provider_ssh::hosts::render(&reports);
    for report in &reports {
        ensure!(report.ready(), "a bare host is ready for vigil up:\n{text}");
    }
    ensure!(checked.runbook().steps().len() == 3, "one command per host");
    preflight(&path, false).await.with_context(|| format!("vigil preflight on ready hosts:\n{text}"))?;

    // The control plane's forwarding turned off: vigil's to change, and `--fix` does.
    let control_plane = hosts.provider.node(&hosts.nodes[0].name);
    control_plane.run(&["sysctl", "-qw", "net.ipv4.ip_forward=0"], None).await?;
    let reports = Hosts::new(machines.clone()).preflight().await;
    let found = reports[0].outcome.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(
        found.len() == 1 && found[0].problem == "net.ipv4.ip_forward is 0, not 1" && found[0].vigil_fixes(),
        "{found:?}"
    );
    ensure!(reports[0].ready(), "vigil makes this change itself");
    preflight(&path, true).await.context("vigil preflight --fix")?;
    let forwarding = control_plane.run(&["cat", "/proc/sys/net/ipv4/ip_forward"], None).await?.stdout;
    let persisted = nodeutils::read_file(control_plane.as_ref(), "/etc/sysctl.d/90-vigil.conf").await?;
    ensure!(
        forwarding.trim() == "1" && persisted == "net.ipv4.ip_forward=1\n",
        "{forwarding:?} {persisted:?}"
    );
    // The runbook of that run: both checks of every host and the change, each with its exit status.
    let runbook = vigil_e2e::cache_dir().join("logs").join(&good.name).join("preflight-runbook.md");
    let runbook = std::fs::read_to_string(&runbook).with_context(|| format!("{}", runbook.display()))?;
    ensure!(
        runbook.starts_with("# vigil preflight --fix: ") && runbook.contains("7 commands, 0 failed"),
        "{runbook}"
    );
    ensure!(runbook.contains("sysctl -qw net.ipv4.ip_forward=1"), "{runbook}");

    // Something of the owner's listens on the kubelet's port on one worker.
    let worker = &hosts.nodes[1].name;
    hosts.provider.node(worker).run(&["/usr/sbin/sshd", "-p", "10250"], None).await?;
    let reports = Hosts::new(machines.clone()).preflight().await;
    let taken = reports.iter().find(|r| &r.host == worker).context("the worker's report")?;
    let found = taken.outcome.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(
        found.iter().any(|f| f.check == "port" && f.problem == "port 10250 is in use" && !f.vigil_fixes()),
        "{found:?}"
    );
    let error = preflight(&path, false).await.err().map(|e| format!("{e:#}")).unwrap_or_default();
    ensure!(error.contains(&format!("1 of 3 hosts are not ready ({worker})")), "{error}");

    // The other worker's pinned key is another host's; the control plane's
    // user key is one it never saw; a third host is at an address nothing answers at.
    let mut wrong = good.clone();
    wrong.hosts[2].host_key = good.hosts[1].host_key.clone();
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(hosts.dir.path().join("stranger"))
        .status()?;
    wrong.hosts[0].key = Some(hosts.dir.path().join("stranger"));
    let mut gone = good.hosts[1].clone();
    gone.address = hosts.spec.node_network_host(99);
    gone.name = Some("gone".into());
    wrong.hosts.push(gone);
    let (_, machines) = inventory::read(&hosts.write("wrong.yaml", &wrong)?)?;
    let reports = Hosts::new(machines).preflight().await;
    let cause = |i: usize| reports[i].outcome.clone().err().unwrap_or_default();
    ensure!(cause(0).contains("refused user root") && cause(0).contains("authorized_keys"), "{}", cause(0));
    ensure!(cause(1).is_empty(), "the first worker is still reached: {}", cause(1));
    ensure!(
        cause(2).contains(&hosts.nodes[2].name)
            && cause(2).contains("is not the one pinned in the inventory"),
        "{}",
        cause(2)
    );
    ensure!(cause(3).starts_with("host gone (") && cause(3).contains("cannot be reached"), "{}", cause(3));
    Ok(())
}

/// vigil's build reaches bare hosts over SSH alone: the node image's
/// binaries, configuration and units and Debian's runc and CNI plugins
/// (the hosts need no package repository), containerd running and the
/// Kubernetes binaries of the build answering; then uninstall removes
/// every file it added and stops containerd, as the host's owner sees.
pub async fn vigils_build_installs_on_bare_hosts_and_uninstalls_cleanly() -> Result<()> {
    let repository = vigil_e2e::images().repository;
    let cache = vigil_e2e::cache_dir();
    let docker = vigil::docker::connect().await?;
    let progress = vigil::progress::Progress::default();
    let node_image = vigil::build::ensure_node_image(&docker, &repository, &cache, &progress).await?;
    let bundle = vigil::build::host::bundle(&docker, &node_image).await?;
    let hosts = BareHosts::start(&ensure_image(&repository, &cache).await?).await?;
    let result = install_checks(&hosts, &bundle).await;
    hosts.remove().await?;
    result
}

async fn install_checks(hosts: &BareHosts, bundle: &[u8]) -> Result<()> {
    let (_, machines) = inventory::read(&hosts.write("inventory.yaml", &hosts.inventory().await?)?)?;
    let over_ssh = Hosts::new(machines.clone());
    // One host already has a runc of its own, as its package manager would have put it there.
    let owners_host = &hosts.nodes[1].name;
    let owner = hosts.provider.node(owners_host);
    let own_runc = b"#!/bin/sh\necho \"the host's own runc\"\n";
    owner.copy_in("/usr/sbin/runc", own_runc, 0o755).await?;
    let files = vigil_provider_ssh::install::files_of(bundle)?;
    for (host, installed) in over_ssh.install(bundle).await {
        let installed = installed.map_err(|e| anyhow::anyhow!("installing on {host}: {e}"))?;
        let kept: &[&str] = if &host == owners_host { &["/usr/sbin/runc"] } else { &[] };
        ensure!(installed.kept == kept, "{host} kept {:?}", installed.kept);
        ensure!(installed.files.len() + kept.len() == files.len(), "{host}: {installed:?}");
        println!("{host}: {:.1} MiB sent", bundle.len() as f64 / (1024.0 * 1024.0));
    }
    for machine in &machines {
        let node = vigil_provider_ssh::node::SshNode::new(machine.clone(), Default::default());
        let version = node.run(&["kubeadm", "version", "-o", "short"], None).await?.stdout;
        ensure!(version.trim() == vigil::versions::KUBERNETES, "{}: kubeadm {version}", machine.name);
        let containerd = node.run(&["systemctl", "is-active", "containerd"], None).await?.stdout;
        ensure!(containerd.trim() == "active", "{}: containerd {containerd}", machine.name);
        let runc =
            node.run(&["runc", "--version"], None).await.context("runc runs with the host's libraries")?;
        ensure!(
            (&machine.name == owners_host) == (runc.stdout == "the host's own runc\n"),
            "{}: {:?}",
            machine.name,
            runc.stdout
        );
        node.run(&["test", "-x", "/usr/lib/cni/bridge"], None).await?;
    }

    for (host, removed) in over_ssh.uninstall().await {
        let removed = removed.map_err(|e| anyhow::anyhow!("uninstalling on {host}: {e}"))?;
        let expected = files.len() - usize::from(&host == owners_host);
        ensure!(removed.len() == expected, "{host}: removed {} of {expected} files", removed.len());
    }
    // What the owner sees on each host afterwards: nothing of vigil's, and their own runc.
    let script = format!(
        "for f in {} {}; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then echo \"$f\"; fi; done; systemctl is-active containerd || true",
        files.join(" "),
        vigil_provider_ssh::install::INSTALLED_LIST
    );
    for node in &hosts.nodes {
        let left = hosts.provider.node(&node.name).run(&["sh", "-c", &script], None).await?.stdout;
        let expected = if &node.name == owners_host { "/usr/sbin/runc\ninactive" } else { "inactive" };
        ensure!(left.trim() == expected, "{}: left behind: {left}", node.name);
    }
    let runc = owner.run(&["/usr/sbin/runc"], None).await?.stdout;
    ensure!(runc.as_bytes() == b"the host's own runc\n", "the host's own runc is as it was: {runc:?}");
    Ok(())
}

/// `vigil up --inventory` on three bare hosts, reached over SSH alone: the
/// named checks of the local cluster pass on the result (nodes Ready, the
/// system pods, the pod network across hosts and DNS, the LoadBalancer
/// from this machine, node-exporter's series of every web pod in
/// Prometheus, a drill with a verdict); the runbook lists every command;
/// a second `up` copies nothing again; `down --inventory` leaves nothing of
/// the cluster or of vigil on the hosts, as their owner lists it.
pub async fn the_cluster_and_suite_run_on_bare_hosts_and_down_leaves_them_clean() -> Result<()> {
    let image = ensure_image(&vigil_e2e::images().repository, &vigil_e2e::cache_dir()).await?;
    let hosts = BareHosts::start(&image).await?;
    let result = suite_checks(&hosts).await;
    hosts.remove().await?;
    result
}

async fn suite_checks(hosts: &BareHosts) -> Result<()> {
    // One change for vigil to make, and for `down` to say it leaves in effect.
    let control_plane = &hosts.nodes[0].name;
    hosts.provider.node(control_plane).run(&["sysctl", "-qw", "net.ipv4.ip_forward=0"], None).await?;
    let inventory = hosts.inventory().await?;
    let path = hosts.write("inventory.yaml", &inventory)?;
    let spec = inventory.spec(vigil::cluster::ClusterSpec {
        failover: vigil::cluster::Failover::Tuned,
        ..Default::default()
    });
    // A host nothing answers at: `up` names it before anything is copied.
    let mut unreachable = inventory.clone();
    unreachable.hosts[2].address = hosts.spec.node_network_host(99);
    unreachable.hosts[2].name = Some("gone".into());
    let unreachable = app::Target::hosts(&hosts.write("unreachable.yaml", &unreachable)?)?;
    let error =
        vigil_e2e::up_on(&spec, unreachable).await.err().map(|e| format!("{e:#}")).unwrap_or_default();
    ensure!(
        error.contains("1 of the inventory's hosts cannot be used yet (gone)")
            && error.contains("cannot be reached"),
        "{error}"
    );
    let logs = vigil_e2e::cache_dir().join("logs").join(&inventory.name);
    let runbook = std::fs::read_to_string(logs.join("up-runbook.md"))?;
    ensure!(!runbook.contains("tar -x") && !runbook.contains("# write"), "copied to a host:\n{runbook}");

    // A host that fails midway: the second worker's /usr/local/bin is a
    // file, so vigil's build cannot be unpacked there. `up` names the host
    // and the step and stops; once the owner mends it, `up` again resumes.
    let broken = &hosts.nodes[2].name;
    let owner = hosts.provider.node(broken);
    owner.run(&["sh", "-c", "mv /usr/local/bin /usr/local/bin.owner && touch /usr/local/bin"], None).await?;
    let started = std::time::Instant::now();
    let target = app::Target::hosts(&path)?;
    let error = vigil_e2e::up_on(&spec, target).await.err().map(|e| format!("{e:#}")).unwrap_or_default();
    ensure!(
        error.contains("stopped at step provision workers")
            && error.contains(&format!("node {broken}: installing vigil's build failed"))
            && error.contains(&format!("run `vigil --inventory {} up` again to resume", path.display())),
        "{error}"
    );
    let stopped = started.elapsed().as_secs_f64();
    owner.run(&["sh", "-c", "rm /usr/local/bin && mv /usr/local/bin.owner /usr/local/bin"], None).await?;
    let resumed = std::time::Instant::now();
    let c = vigil_e2e::Cluster::up_on(spec.clone(), app::Target::hosts(&path)?).await?;
    println!(
        "vigil up --inventory: stopped at {broken} after {stopped:.1} s; resumed, the cluster and the whole suite up in {:.1} s",
        resumed.elapsed().as_secs_f64()
    );
    let runbook = std::fs::read_to_string(logs.join("up-runbook.md"))?;
    // The worker that finished in the stopped `up` is not given it again.
    // (The control plane's step runs beside the workers' and was stopped with
    // it, wherever it was: it may be given the build again.)
    let given = hosts_that_ran(&runbook, "tar -x -p");
    let finished = &hosts.nodes[1].name;
    ensure!(
        given.contains(broken) && !given.contains(finished),
        "vigil's build given again to {given:?}:\n{runbook}"
    );
    for host in &hosts.nodes {
        let summary = runbook_summary(&runbook, &host.name)
            .with_context(|| format!("no summary line for {} in the runbook", host.name))?;
        println!("runbook: {summary}");
    }
    let state = "tar -C /var/lib/containerd.vigil-new --numeric-owner";
    for command in ["kubeadm join", state, "tar -x -p"] {
        ensure!(runbook.contains(command), "the runbook has no {command:?}");
    }

    crate::cluster::nodes_are_ready(&c).await.context("nodes Ready")?;
    crate::cluster::system_pods_run(&c).await.context("system pods")?;
    crate::cluster::pod_network_and_dns(&c).await.context("pod network and DNS")?;
    crate::workload::load_balancer_reaches_every_pod(&c).await.context("the LoadBalancer")?;
    crate::monitoring::prometheus_sees_every_web_pod(&c).await.context("node-exporter's series")?;

    // A second `up` finds everything done, and starts again what `vigil
    // node stop` stopped on a worker: nothing is copied again.
    let stopped_worker = &hosts.nodes[1].name;
    let path_text = path.to_str().context("a UTF-8 path")?;
    app::run(Cli::try_parse_from(["vigil", "--inventory", path_text, "node", "stop", stopped_worker])?)
        .await?;
    let worker = c.provider.node(stopped_worker);
    let kubelet = worker.run(&["sh", "-c", "systemctl is-active kubelet || true"], None).await?.stdout;
    ensure!(kubelet.trim() == "inactive", "vigil node stop left the kubelet {kubelet}");
    let again = std::time::Instant::now();
    vigil_e2e::up_on(&spec, app::Target::hosts(&path)?).await.context("vigil up again")?;
    let runbook = std::fs::read_to_string(logs.join("up-runbook.md"))?;
    for host in &hosts.nodes {
        let summary = runbook_summary(&runbook, &host.name).unwrap_or_default();
        let sent: f64 = summary.trim_end_matches(" |").rsplit("| ").next().unwrap_or_default().parse()?;
        ensure!(sent < 0.1, "{} was sent {sent} MiB again:\n{runbook}", host.name);
    }
    println!("vigil up --inventory again: {:.1} s", again.elapsed().as_secs_f64());

    // A drill: a worker's Kubernetes killed over SSH, a verdict, and back.
    let keep = crate::drill::prometheus_node(&c).await?;
    let node = crate::drill::victim(&c, |w| w != keep).await?;
    let dir = tempfile::tempdir()?;
    let options = vigil::drill::Options {
        fault: vigil::drill::DrillFault::Kill,
        node: Some(node.clone()),
        rate: 20,
        timeout: crate::drill::DRILL_TIMEOUT,
        report_dir: dir.path().to_owned(),
    };
    let report = vigil::drill::run(
        c.provider.clone(),
        &c.spec,
        c.client.clone(),
        c.web_url()?.to_owned(),
        options,
        &vigil::progress::Progress::default(),
    )
    .await?;
    eprintln!("{}", vigil::drill::summary(&report));
    ensure!(report.verdict == Some(vigil::drill::Verdict::Rescheduled), "{report:?}");

    // `vigil --inventory FILE status`: every host reached and its node Ready again.
    app::run(Cli::try_parse_from(["vigil", "--inventory", path_text, "status"])?).await?;
    let machines = c.provider.list_nodes(&c.spec.name).await?;
    let status =
        vigil::status::collect(&c.spec, &c.nodes(), machines, Some(Ok(c.client.clone())), None).await;
    ensure!(
        status.nodes.len() == 3
            && status
                .nodes
                .iter()
                .all(|n| n.machine == vigil::provider::MachineState::Running && n.ready == Some(true)),
        "{}",
        status.render()
    );

    let removed = vigil_e2e::down_on(&app::Target::hosts(&path)?).await.context("vigil down --inventory")?;
    ensure!(removed.machines.len() == 3, "{removed:?}");
    ensure!(
        removed.left
            == [format!("{control_plane}: net.ipv4.ip_forward stays in effect until the host boots again")],
        "what down says it left: {:?}",
        removed.left
    );
    let bundle_files = {
        let docker = vigil::docker::connect().await?;
        let node_image = vigil_e2e::images().node();
        vigil_provider_ssh::install::files_of(&vigil::build::host::bundle(&docker, &node_image).await?)?
    };
    // What the owner lists on each host afterwards.
    let script = format!(
        r#"for f in {} /etc/kubernetes /var/lib/kubelet /var/lib/etcd /var/lib/containerd /var/lib/cni /etc/cni/net.d /run/flannel /var/lib/vigil /etc/vigil /etc/sysctl.d/90-vigil.conf /etc/modules-load.d/vigil.conf /sys/class/net/cni0 /sys/class/net/flannel.1; do
  if [ -e "$f" ] || [ -L "$f" ]; then echo "$f"; fi
done
systemctl is-active containerd kubelet || true"#,
        bundle_files.join(" ")
    );
    for host in &hosts.nodes {
        let left = hosts.provider.node(&host.name).run(&["sh", "-c", &script], None).await?.stdout;
        ensure!(left.trim() == "inactive\ninactive", "{}: left behind:\n{left}", host.name);
    }
    // The cluster's packet-filter rules, read in each host's network namespace.
    for host in &hosts.nodes {
        let rules = iptables_of(&host.name).await?;
        ensure!(
            !rules.lines().any(|l| l.contains("KUBE-") || l.contains("FLANNEL-") || l.contains("CNI-")),
            "{}: rules left behind:\n{rules}",
            host.name
        );
    }
    Ok(())
}

/// The hosts of the runbook's steps whose command holds `needle`.
fn hosts_that_ran(runbook: &str, needle: &str) -> Vec<String> {
    let mut host = "";
    let mut hosts = vec![];
    for line in runbook.lines() {
        if let Some(header) = line.strip_prefix("## ") {
            // `## 12. host · 2026-12-06T04:32:15Z · exit 0 · ...`
            host = header.split(" · ").next().and_then(|n| n.split_once(". ")).map_or("", |(_, h)| h);
        } else if line.contains(needle) && !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_owned());
        }
    }
    hosts
}

/// `iptables-save` in the network namespace of the host container `name`,
/// run from the node image (the host has no iptables of its own).
async fn iptables_of(name: &str) -> Result<String> {
    let out = tokio::process::Command::new("docker")
        .args(["run", "--rm", "--network", &format!("container:{name}"), "--cap-add", "NET_ADMIN"])
        .args(["--entrypoint", "sh", &vigil_e2e::images().node(), "-c", "iptables-save; ip6tables-save"])
        .output()
        .await
        .context("docker run of the node image")?;
    ensure!(out.status.success(), "iptables-save in {name}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
