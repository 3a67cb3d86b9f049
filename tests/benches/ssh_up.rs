//! Issue 19's measure: `vigil up` on three bare hosts over SSH, warm (every
//! image built), next to the container provider's `up` of the same cluster
//! and suite in the same run on the same machine (the anchor), and the
//! bytes sent to each host (from the runbook `up` writes). The goal is
//! within 2x of the anchor.
//!
//! The anchor is `vigil up` of node containers (cluster `vigil-bench-ssh`,
//! 172.29.248.0/24) from nothing, then `down`. The hosts are the e2e's bare
//! hosts (`vigil_e2e::ssh_hosts`: Debian 12 with systemd and sshd, started
//! afresh, untimed), given an inventory; `up --inventory` from nothing is
//! timed, then `down --inventory`, and the hosts are removed.
//!
//! `cargo bench -p vigil-e2e --bench ssh_up [-- --runs N]`

use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use vigil::{app::Target, cluster::ClusterSpec};
use vigil_e2e::{
    down_on,
    ssh_hosts::{BareHosts, ensure_image, runbook_summary},
    up_on,
};

fn runs() -> Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    let value = args.iter().position(|a| a == "--runs").and_then(|i| args.get(i + 1));
    Ok(value.map(|v| v.parse()).transpose().context("--runs N")?.unwrap_or(1))
}

/// The container provider's `up` from nothing: seconds.
async fn anchor() -> Result<f64> {
    let spec = ClusterSpec {
        name: "vigil-bench-ssh".into(),
        node_subnet: "172.29.248.0/24".parse()?,
        ..ClusterSpec::default()
    };
    let target = || Target::containers(&spec.name);
    down_on(&target()).await?;
    let started = Instant::now();
    up_on(&spec, target()).await.context("vigil up (node containers)")?;
    let seconds = started.elapsed().as_secs_f64();
    down_on(&target()).await?;
    Ok(seconds)
}

/// `up --inventory` on fresh bare hosts: seconds, and each host's summary
/// line of the runbook (commands, failed, seconds, MiB sent).
async fn over_ssh(image: &str) -> Result<(f64, Vec<String>)> {
    let hosts = BareHosts::start(image).await?;
    let measured = async {
        let inventory = hosts.inventory().await?;
        let path = hosts.write("inventory.yaml", &inventory)?;
        let spec = inventory.spec(ClusterSpec::default());
        let started = Instant::now();
        up_on(&spec, Target::hosts(&path)?).await.context("vigil up --inventory")?;
        let seconds = started.elapsed().as_secs_f64();
        let runbook = vigil_e2e::cache_dir().join("logs").join(&inventory.name).join("up-runbook.md");
        let runbook = std::fs::read_to_string(&runbook)?;
        let lines: Vec<String> = hosts
            .nodes
            .iter()
            .filter_map(|n| runbook_summary(&runbook, &n.name))
            .map(str::to_owned)
            .collect();
        ensure!(lines.len() == hosts.nodes.len(), "a host has no line in the runbook");
        down_on(&Target::hosts(&path)?).await.context("vigil down --inventory")?;
        Ok((seconds, lines))
    }
    .await;
    hosts.remove().await?;
    measured
}

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let runs = runs()?;
    let image = ensure_image(&vigil_e2e::images().repository, &vigil_e2e::cache_dir()).await?;
    // One untimed `up` of node containers builds whatever is missing (the
    // hosts are given what that build made).
    println!("warming up (untimed)");
    anchor().await?;
    let mut rows = vec![];
    for run in 1..=runs {
        let containers = anchor().await?;
        let (ssh, hosts) = over_ssh(&image).await?;
        println!("run {run}: node containers {containers:.1} s, 3 bare hosts over SSH {ssh:.1} s");
        for line in &hosts {
            println!("  {line}");
        }
        rows.push((containers, ssh));
    }
    let mean = |f: fn(&(f64, f64)) -> f64| rows.iter().map(f).sum::<f64>() / rows.len() as f64;
    let (containers, ssh) = (mean(|r| r.0), mean(|r| r.1));
    println!(
        "\nvigil up, warm, the cluster and the whole suite ({runs} run(s)):\n  node containers (anchor) {containers:.1} s\n  3 bare hosts over SSH     {ssh:.1} s\n  ratio {:.2}x (goal: within 2x)",
        ssh / containers
    );
    Ok(())
}
