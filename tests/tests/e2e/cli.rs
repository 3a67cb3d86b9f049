//! The CLI's answers to a user's mistakes: a cluster that does not exist, a
//! name that cannot be one. One error naming the cause and the fix, and a
//! failure (`vigil::app::run` returns an error, which `main` turns into a
//! non-zero exit).

use anyhow::{Result, ensure};
use clap::Parser as _;
use vigil::{app, cli::Cli};

async fn run(args: &[&str]) -> Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("vigil").chain(args.iter().copied()))?;
    app::run(cli).await
}

pub async fn a_cluster_that_does_not_exist_is_named_as_such() -> Result<()> {
    for command in [
        &["status"][..],
        &["status", "--json"],
        &["kubeconfig"],
        &["node", "stop", "nosuch-worker"],
        &["alerts"],
        &["traces", "show", "0af7"],
        &["dashboards", "links"],
    ] {
        let args: Vec<&str> = ["--name", "nosuch"].iter().chain(command).copied().collect();
        let err = run(&args).await.err();
        let message = err.map(|e| format!("{e:#}")).unwrap_or_default();
        ensure!(
            message.contains("there is no cluster named \"nosuch\"")
                && message.contains("`vigil up --name nosuch`"),
            "vigil {}: {message:?}",
            args.join(" ")
        );
    }
    Ok(())
}

pub async fn a_name_that_is_not_a_dns_label_is_refused() -> Result<()> {
    for command in [&["status"][..], &["up", "--cluster-only"], &["down"]] {
        let args: Vec<&str> = ["--name", "Bad Name!"].iter().chain(command).copied().collect();
        let message = run(&args).await.err().map(|e| format!("{e:#}")).unwrap_or_default();
        ensure!(
            message.contains("cluster name \"Bad Name!\" is not a DNS label") && message.contains("--name"),
            "vigil {}: {message:?}",
            args.join(" ")
        );
    }
    Ok(())
}
