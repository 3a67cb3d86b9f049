//! The runbook: every command vigil ran on every host, in order, with its
//! exit status and duration, written as Markdown beside the logs. It is the
//! seed's documentation of the install, made by the install itself, so a
//! student can show exactly what was done.
//!
//! What a command was fed on stdin is never recorded (files copied in may
//! be keys or tokens): a copy is recorded as its path, size and mode.

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

/// One command as it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub host: String,
    /// The command line as the host's shell received it, or what a copy wrote.
    pub command: String,
    pub started: SystemTime,
    pub duration: Duration,
    pub outcome: Outcome,
    /// Bytes fed to it on stdin (a file, an archive): counted, never kept.
    pub sent: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(u32),
    Signalled(String),
    /// The command could not be run or its connection ended first.
    NotRun(String),
}

/// The steps of one `vigil up` (or `down`), shared by every host's node.
#[derive(Debug, Clone, Default)]
pub struct Runbook {
    steps: Arc<Mutex<Vec<Step>>>,
}

impl Runbook {
    pub fn record(&self, step: Step) {
        self.steps.lock().expect("runbook lock").push(step);
    }

    pub fn steps(&self) -> Vec<Step> {
        self.steps.lock().expect("runbook lock").clone()
    }

    /// The Markdown document: a summary per host, then every step in order.
    pub fn to_markdown(&self, title: &str) -> String {
        render(title, &self.steps())
    }
}

fn render(title: &str, steps: &[Step]) -> String {
    let mut out = format!("# {title}\n\n");
    let failed = steps.iter().filter(|s| s.outcome != Outcome::Exited(0)).count();
    let total: Duration = steps.iter().map(|s| s.duration).sum();
    let _ = writeln!(
        out,
        "{} commands, {failed} failed, {:.1} s in all. A command's duration includes the SSH round trip.\n",
        steps.len(),
        total.as_secs_f64()
    );
    let mut hosts: Vec<&str> = vec![];
    for step in steps {
        if !hosts.contains(&step.host.as_str()) {
            hosts.push(&step.host);
        }
    }
    out.push_str("| host | commands | failed | seconds | MiB sent |\n|---|---:|---:|---:|---:|\n");
    for host in &hosts {
        let of_host: Vec<&Step> = steps.iter().filter(|s| s.host == *host).collect();
        let failed = of_host.iter().filter(|s| s.outcome != Outcome::Exited(0)).count();
        let seconds: f64 = of_host.iter().map(|s| s.duration.as_secs_f64()).sum();
        let sent: usize = of_host.iter().map(|s| s.sent).sum();
        let _ = writeln!(out, "| {host} | {} | {failed} | {seconds:.1} | {} |", of_host.len(), mib(sent));
    }
    out.push('\n');
    for (number, step) in steps.iter().enumerate() {
        let outcome = match &step.outcome {
            Outcome::Exited(code) => format!("exit {code}"),
            Outcome::Signalled(signal) => format!("killed by {signal}"),
            Outcome::NotRun(why) => format!("not run: {why}"),
        };
        let sent = if step.sent > 0 { format!(" · {} sent", size(step.sent)) } else { String::new() };
        let _ = writeln!(
            out,
            "## {}. {} · {} · {outcome} · {:.2} s{sent}\n",
            number + 1,
            step.host,
            humantime::format_rfc3339_seconds(step.started),
            step.duration.as_secs_f64()
        );
        let fence = fence_for(&step.command);
        let _ = writeln!(out, "{fence}sh\n{}\n{fence}\n", step.command.trim_end());
    }
    out
}

fn mib(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// A size as a person reads it: bytes, KiB or MiB.
pub fn size(bytes: usize) -> String {
    match bytes {
        0..1024 => format!("{bytes} bytes"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{} MiB", mib(bytes)),
    }
}

/// A code fence longer than any run of backticks in `text`, so a command
/// holding one cannot end its block early.
fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(host: &str, command: &str, seconds: u64, outcome: Outcome) -> Step {
        Step {
            host: host.into(),
            command: command.into(),
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_518_923),
            duration: Duration::from_millis(seconds * 1000 + 250),
            outcome,
            sent: 0,
        }
    }

    #[test]
    fn every_step_in_order_with_its_host_status_and_duration() {
        let book = Runbook::default();
        book.record(step("cp", "swapoff -a", 0, Outcome::Exited(0)));
        book.record(step("w1", "modprobe br_netfilter", 1, Outcome::Exited(1)));
        book.record(step("cp", "kubeadm init --config /etc/vigil/kubeadm.yaml", 40, Outcome::Exited(0)));
        book.record(Step {
            sent: 3 * 1024 * 1024,
            ..step("w1", "ctr images import -", 2, Outcome::Exited(0))
        });
        book.record(Step {
            sent: 300,
            ..step("w1", "# write /etc/vigil/cluster.json", 0, Outcome::Exited(0))
        });
        book.record(step("w1", "systemctl kill -s KILL kubelet", 0, Outcome::Signalled("KILL".into())));
        let text = book.to_markdown("vigil up: lab");
        assert!(text.starts_with("# vigil up: lab\n\n6 commands, 2 failed, 44.5 s in all."), "{text}");
        assert!(text.contains("| cp | 2 | 0 | 40.5 | 0.0 |\n| w1 | 4 | 2 | 4.0 | 3.0 |\n"), "{text}");
        let swapoff =
            text.find("## 1. cp · 2026-12-06T01:02:03Z · exit 0 · 0.25 s\n\n```sh\nswapoff -a\n```").unwrap();
        let modprobe = text.find("## 2. w1 · 2026-12-06T01:02:03Z · exit 1 · 1.25 s").unwrap();
        let init = text.find("## 3. cp").unwrap();
        let import = text.find("## 4. w1 · 2026-12-06T01:02:03Z · exit 0 · 2.25 s · 3.0 MiB sent").unwrap();
        let write = text.find("## 5. w1 · 2026-12-06T01:02:03Z · exit 0 · 0.25 s · 300 bytes sent").unwrap();
        let kill = text.find("## 6. w1 · 2026-12-06T01:02:03Z · killed by KILL").unwrap();
        assert!(swapoff < modprobe && modprobe < init && init < import && import < write && write < kill);
    }

    #[test]
    fn a_command_holding_backticks_stays_in_its_block() {
        let text =
            render("t", &[step("cp", "echo ```; echo `date`", 0, Outcome::NotRun("connection lost".into()))]);
        assert!(text.contains("not run: connection lost"));
        assert!(text.contains("````sh\necho ```; echo `date`\n````\n"), "{text}");
    }
}
