//! A check's state changes only after `success_threshold` consecutive
//! successes or `failure_threshold` consecutive failures, so one slow answer
//! does not flap a probe, and a check that alternates never flips at all.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckState {
    pub name: String,
    pub healthy: bool,
    /// Whether the check has ever been healthy (the startup latch).
    pub ever_healthy: bool,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    /// Why the last run failed, while it is failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub runs: u64,
}

impl CheckState {
    /// A check starts unhealthy: nothing is known until it has succeeded.
    pub fn new(name: &str) -> Self {
        CheckState {
            name: name.into(),
            healthy: false,
            ever_healthy: false,
            consecutive_successes: 0,
            consecutive_failures: 0,
            last_error: None,
            runs: 0,
        }
    }

    /// Records one result; returns true when the state flipped.
    pub fn record(
        &mut self,
        result: Result<(), String>,
        success_threshold: u32,
        failure_threshold: u32,
    ) -> bool {
        self.runs += 1;
        let before = self.healthy;
        match result {
            Ok(()) => {
                self.consecutive_successes += 1;
                self.consecutive_failures = 0;
                self.last_error = None;
                if !self.healthy && self.consecutive_successes >= success_threshold {
                    self.healthy = true;
                    self.ever_healthy = true;
                }
            }
            Err(reason) => {
                self.consecutive_failures += 1;
                self.consecutive_successes = 0;
                self.last_error = Some(reason);
                if self.healthy && self.consecutive_failures >= failure_threshold {
                    self.healthy = false;
                }
            }
        }
        before != self.healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<(), String> {
        Ok(())
    }
    fn fail() -> Result<(), String> {
        Err("connection refused".into())
    }

    #[test]
    fn needs_success_threshold_successes_to_become_healthy() {
        let mut s = CheckState::new("web");
        assert!(!s.record(ok(), 2, 3));
        assert!(!s.healthy && !s.ever_healthy);
        assert!(s.record(ok(), 2, 3));
        assert!(s.healthy && s.ever_healthy);
    }

    #[test]
    fn needs_failure_threshold_failures_to_fail() {
        let mut s = CheckState::new("web");
        s.record(ok(), 1, 3);
        assert!(!s.record(fail(), 1, 3));
        assert!(!s.record(fail(), 1, 3));
        assert!(s.healthy, "two failures are below the threshold");
        assert_eq!(s.last_error.as_deref(), Some("connection refused"));
        assert!(s.record(fail(), 1, 3));
        assert!(!s.healthy && s.ever_healthy);
        assert_eq!(s.consecutive_failures, 3);
    }

    #[test]
    fn flapping_never_reaches_a_threshold() {
        let mut s = CheckState::new("dep");
        s.record(ok(), 2, 2);
        s.record(ok(), 2, 2);
        let flips: usize =
            (0..20).map(|i| s.record(if i % 2 == 0 { fail() } else { ok() }, 2, 2) as usize).sum();
        assert_eq!(flips, 0);
        assert!(s.healthy);
        assert_eq!(s.runs, 22);
    }

    #[test]
    fn recovery_clears_the_error() {
        let mut s = CheckState::new("dep");
        s.record(fail(), 1, 1);
        assert!(!s.healthy && !s.ever_healthy, "never healthy yet");
        s.record(ok(), 1, 1);
        assert!(s.healthy && s.last_error.is_none() && s.consecutive_failures == 0);
    }
}
