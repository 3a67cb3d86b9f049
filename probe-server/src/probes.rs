use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use serde::Serialize;

use crate::{config::Config, state::CheckState};

/// The three probes' shared view of every check. Index 0 is the workload.
pub struct Probes {
    checks: Mutex<Vec<CheckState>>,
    shutting_down: AtomicBool,
}

/// What a probe endpoint answers: the decision and the checks behind it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Verdict {
    pub probe: &'static str,
    pub ok: bool,
    /// Why not, in one line (absent when ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub checks: Vec<CheckState>,
}

impl Probes {
    pub fn new(config: &Config) -> Self {
        let checks = std::iter::once(&config.workload)
            .chain(&config.dependencies)
            .map(|c| CheckState::new(&c.name))
            .collect();
        Probes { checks: Mutex::new(checks), shutting_down: AtomicBool::new(false) }
    }

    /// Records a result for check `index`; returns the state after it and whether it flipped.
    pub fn record(
        &self,
        index: usize,
        result: Result<(), String>,
        success_threshold: u32,
        failure_threshold: u32,
    ) -> (bool, bool) {
        let mut checks = self.checks.lock().expect("no panics while held");
        let state = &mut checks[index];
        let flipped = state.record(result, success_threshold, failure_threshold);
        (state.healthy, flipped)
    }

    /// From now on readiness is false, whatever the checks say.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    fn snapshot(&self) -> Vec<CheckState> {
        self.checks.lock().expect("no panics while held").clone()
    }

    /// Started once the workload has been healthy once.
    pub fn startup(&self) -> Verdict {
        let workload = self.snapshot().swap_remove(0);
        let reason = (!workload.ever_healthy).then(|| failing("has not been healthy yet", &workload));
        Verdict { probe: "startup", ok: reason.is_none(), reason, checks: vec![workload] }
    }

    /// Alive while the workload is healthy. Dependencies are deliberately
    /// left out: restarting a healthy pod because a database is down only
    /// spreads the outage.
    pub fn liveness(&self) -> Verdict {
        let workload = self.snapshot().swap_remove(0);
        let reason = (!workload.healthy).then(|| failing("is failing", &workload));
        Verdict { probe: "liveness", ok: reason.is_none(), reason, checks: vec![workload] }
    }

    /// Ready when the workload and every dependency are healthy, and not shutting down.
    pub fn readiness(&self) -> Verdict {
        let checks = self.snapshot();
        let reason = if self.shutting_down.load(Ordering::SeqCst) {
            Some("shutting down (SIGTERM received)".to_owned())
        } else {
            checks.iter().find(|c| !c.healthy).map(|c| failing("is failing", c))
        };
        Verdict { probe: "readiness", ok: reason.is_none(), reason, checks }
    }
}

fn failing(what: &str, check: &CheckState) -> String {
    match &check.last_error {
        Some(error) => format!("check {} {what}: {error}", check.name),
        None => format!("check {} {what}", check.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes() -> Probes {
        let config = crate::config::Config::from_json(
            r#"{"workload": {"name": "web", "http": "http://127.0.0.1:8000/"}, "dependencies": [{"name": "db", "tcp": "db:5432"}]}"#,
            "t",
        )
        .unwrap();
        Probes::new(&config)
    }

    #[test]
    fn startup_waits_for_the_first_healthy_workload() {
        let p = probes();
        assert!(!p.startup().ok);
        p.record(0, Ok(()), 1, 1);
        assert!(p.startup().ok);
        p.record(0, Err("down".into()), 1, 1);
        assert!(p.startup().ok, "startup is a latch");
    }

    #[test]
    fn a_failing_dependency_fails_readiness_but_not_liveness() {
        let p = probes();
        p.record(0, Ok(()), 1, 1);
        p.record(1, Err("connect db:5432: refused".into()), 1, 1);
        assert!(p.liveness().ok);
        let ready = p.readiness();
        assert!(!ready.ok);
        assert_eq!(ready.reason.as_deref(), Some("check db is failing: connect db:5432: refused"));
        p.record(1, Ok(()), 1, 1);
        assert!(p.readiness().ok);
    }

    #[test]
    fn a_failing_workload_fails_liveness_with_its_reason() {
        let p = probes();
        p.record(0, Ok(()), 1, 2);
        p.record(0, Err("no answer within 500ms".into()), 1, 2);
        assert!(p.liveness().ok, "one failure is below the threshold");
        p.record(0, Err("no answer within 500ms".into()), 1, 2);
        let live = p.liveness();
        assert!(!live.ok);
        assert_eq!(live.reason.as_deref(), Some("check web is failing: no answer within 500ms"));
        assert_eq!(live.checks.len(), 1, "liveness reports the workload only");
    }

    #[test]
    fn shutdown_turns_readiness_off_at_once() {
        let p = probes();
        p.record(0, Ok(()), 1, 1);
        p.record(1, Ok(()), 1, 1);
        assert!(p.readiness().ok);
        p.begin_shutdown();
        let ready = p.readiness();
        assert!(!ready.ok && ready.reason.unwrap().contains("SIGTERM"));
        assert!(p.liveness().ok, "still alive while draining");
    }
}
