//! The hosts of an inventory, each reached over its own SSH connection,
//! which the provider is made of: the preflight of every host at once and
//! its report, vigil's fixes, and vigil's build installed and removed.

use std::{fmt::Write as _, sync::Arc, time::SystemTime};

use vigil_model::cluster::Role;
use vigil_provider::Node;

use crate::{
    install,
    inventory::Machine,
    node::SshNode,
    preflight::{self, Facts, Finding},
    runbook::Runbook,
};

pub struct Hosts {
    nodes: Vec<Arc<SshNode>>,
    runbook: Runbook,
}

/// One host's preflight: its findings, or why it could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    pub host: String,
    pub address: std::net::Ipv4Addr,
    pub role: Role,
    pub outcome: Result<Vec<Finding>, String>,
    /// The container manager the host runs in, if any (see [`Facts::container`]).
    pub container: Option<String>,
}

impl HostReport {
    /// Ready for `up`: reached, and nothing wrong that vigil cannot fix.
    pub fn ready(&self) -> bool {
        self.outcome.as_ref().is_ok_and(|found| found.iter().all(|f| f.vigil_fixes()))
    }
}

impl Hosts {
    pub fn new(machines: Vec<Machine>) -> Self {
        let runbook = Runbook::default();
        let nodes = machines.into_iter().map(|m| Arc::new(SshNode::new(m, runbook.clone()))).collect();
        Hosts { nodes, runbook }
    }

    pub fn runbook(&self) -> &Runbook {
        &self.runbook
    }

    /// The hosts, in the inventory's order (the control plane first).
    pub fn nodes(&self) -> &[Arc<SshNode>] {
        &self.nodes
    }

    pub fn find(&self, name: &str) -> Option<&Arc<SshNode>> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    /// Makes vigil's changes on every host whose report lists some, all
    /// hosts at once: for each such host, how many changes, or why they
    /// could not be made (the host and the failing command named).
    pub async fn fix(&self, reports: &[HostReport]) -> Vec<(String, Result<usize, String>)> {
        let work = self.nodes.iter().zip(reports).filter_map(|(node, report)| {
            let found = report.outcome.as_ref().ok()?;
            let script = preflight::changes_script(found)?;
            let count = found.iter().filter(|f| f.vigil_fixes()).count();
            Some(async move {
                let made =
                    node.run(&["sh", "-c", &script], None).await.map(|_| count).map_err(|e| e.to_string());
                (report.host.clone(), made)
            })
        });
        futures::future::join_all(work).await
    }

    /// Installs vigil's build (`bundle`, see [`install`]) on every host at
    /// once; for each, what it installed and kept, or why it failed.
    pub async fn install(&self, bundle: &[u8]) -> Vec<(String, Result<install::Installed, String>)> {
        futures::future::join_all(self.nodes.iter().map(|node| async move {
            let done = install::install(node.as_ref(), bundle).await;
            (node.name().to_owned(), done.map_err(|e| e.to_string()))
        }))
        .await
    }

    /// Removes vigil's build from every host; for each, the files removed.
    pub async fn uninstall(&self) -> Vec<(String, Result<Vec<String>, String>)> {
        futures::future::join_all(self.nodes.iter().map(|node| async move {
            (node.name().to_owned(), install::uninstall(node.as_ref()).await.map_err(|e| e.to_string()))
        }))
        .await
    }

    /// Every host checked at once, in the inventory's order.
    pub async fn preflight(&self) -> Vec<HostReport> {
        futures::future::join_all(self.nodes.iter().map(|node| preflight_host(node))).await
    }
}

pub async fn preflight_host(node: &SshNode) -> HostReport {
    let machine = node.machine();
    let before = seconds(SystemTime::now());
    let outcome = node.run(&["sh", "-c", &preflight::script()], None).await;
    // The host read its clock between these two instants.
    let local_clock = (before + seconds(SystemTime::now())) / 2.0;
    let (outcome, container) = match outcome {
        Ok(out) => {
            let facts = Facts::parse(&out.stdout);
            (Ok(preflight::findings(&facts, machine.role, local_clock)), facts.container)
        }
        Err(e) => (Err(e.cause.clone().unwrap_or_else(|| e.to_string())), None),
    };
    HostReport {
        host: machine.name.clone(),
        address: machine.address,
        role: machine.role,
        outcome,
        container,
    }
}

fn seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The report as `vigil preflight` prints it: one line per host, then one
/// per finding with its fix and who applies it.
pub fn render(reports: &[HostReport]) -> String {
    let mut out = String::new();
    for report in reports {
        let _ = write!(out, "{} ({}, {}): ", report.host, report.address, report.role.as_str());
        match &report.outcome {
            Err(cause) => {
                let _ = writeln!(out, "not checked\n  - {cause}");
            }
            Ok(found) if found.is_empty() => out.push_str("ready\n"),
            Ok(found) => {
                let left = found.iter().filter(|f| !f.vigil_fixes()).count();
                let _ = writeln!(
                    out,
                    "{} to fix, {}",
                    found.len(),
                    if left == 0 { "all by vigil".to_string() } else { format!("{left} by you") }
                );
                for finding in found {
                    let who =
                        if finding.vigil_fixes() { "vigil does this with --fix" } else { "yours to do" };
                    let _ = writeln!(
                        out,
                        "  - {}: {}\n      fix ({who}): {}",
                        finding.check, finding.problem, finding.fix
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(check: &'static str, vigil_fixes: bool) -> Finding {
        let change = vigil_fixes.then_some(preflight::Change::SwapOff);
        Finding { check, problem: format!("{check} is wrong"), fix: format!("mend {check}"), change }
    }

    fn report(host: &str, outcome: Result<Vec<Finding>, String>) -> HostReport {
        HostReport {
            host: host.into(),
            address: [192, 168, 56, 10].into(),
            role: Role::Worker,
            outcome,
            container: None,
        }
    }

    #[test]
    fn each_host_then_each_finding_with_its_fix_and_who_does_it() {
        let reports = [
            report("a", Ok(vec![])),
            report("b", Ok(vec![finding("swap", true), finding("port", false)])),
            report("c", Ok(vec![finding("sysctl", true)])),
            report("d", Err("host d (192.168.56.10:22) cannot be reached: refused".into())),
        ];
        assert_eq!(
            render(&reports),
            "a (192.168.56.10, worker): ready
b (192.168.56.10, worker): 2 to fix, 1 by you
  - swap: swap is wrong
      fix (vigil does this with --fix): mend swap
  - port: port is wrong
      fix (yours to do): mend port
c (192.168.56.10, worker): 1 to fix, all by vigil
  - sysctl: sysctl is wrong
      fix (vigil does this with --fix): mend sysctl
d (192.168.56.10, worker): not checked
  - host d (192.168.56.10:22) cannot be reached: refused
"
        );
        let ready: Vec<bool> = reports.iter().map(HostReport::ready).collect();
        assert_eq!(ready, [true, false, true, false]);
    }
}
