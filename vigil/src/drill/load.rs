//! The drill's load: GETs of the web Service through its LoadBalancer
//! address from the host, each on a new connection (kube-proxy balances
//! connections), at a fixed rate, bounded in count and time, each recorded
//! with when it started and whether it was answered.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Answered,
    /// No connection: refused, or the SYN unanswered within the timeout
    /// (the address on a dead node, or an endpoint that is gone).
    NoConnection,
    /// Connected, but no answer within the timeout.
    Slow,
    /// An answer that is not web's greeting.
    BadAnswer,
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it started, from the load's start.
    pub at: Duration,
    pub outcome: Outcome,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Answered
    }
}

/// What the load saw, against the fault's time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Requests {
    pub total: usize,
    pub failed: usize,
    /// The failures by how they failed.
    pub failures: std::collections::BTreeMap<Outcome, usize>,
    /// The last failure, in seconds from the fault.
    pub last_failure_seconds: Option<f64>,
    /// (answered, failed) in each second from the fault (before it: none).
    pub per_second: Vec<(u32, u32)>,
}

impl Requests {
    /// " (12 no-connection, 3 slow)", or nothing without failures.
    pub fn failure_kinds(&self) -> String {
        if self.failures.is_empty() {
            return String::new();
        }
        let kinds: Vec<String> = self
            .failures
            .iter()
            .map(|(outcome, n)| {
                let name = serde_json::to_value(outcome).ok().and_then(|v| v.as_str().map(str::to_owned));
                format!("{n} {}", name.unwrap_or_default())
            })
            .collect();
        format!(" ({})", kinds.join(", "))
    }
}

/// Sends `rate` requests a second to `url` until `stop` turns true or
/// `limit` requests are sent (so the loop ends by itself).
pub async fn run(url: String, rate: u32, limit: usize, mut stop: watch::Receiver<bool>) -> Vec<Sample> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        // The whole request may take longer than the connection, so that an
        // unanswered SYN counts as no connection and not as a slow answer.
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .build()
        .expect("a plain client builds");
    let started = Instant::now();
    let every = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut samples = Vec::with_capacity(limit.min(100_000));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..limit {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        let (http, url, tx) = (http.clone(), url.clone(), tx.clone());
        let at = started.elapsed();
        tokio::spawn(async move {
            let outcome = match http.get(&url).send().await {
                Ok(response) if !response.status().is_success() => Outcome::BadAnswer,
                Ok(response) => match response.text().await {
                    Ok(body) if body.starts_with("I'm ") => Outcome::Answered,
                    Ok(_) => Outcome::BadAnswer,
                    Err(e) if e.is_timeout() => Outcome::Slow,
                    Err(_) => Outcome::BadAnswer,
                },
                Err(e) if e.is_connect() => Outcome::NoConnection,
                Err(e) if e.is_timeout() => Outcome::Slow,
                Err(_) => Outcome::BadAnswer,
            };
            let _ = tx.send(Sample { at, outcome });
        });
    }
    drop(tx);
    while let Some(sample) = rx.recv().await {
        samples.push(sample);
    }
    samples.sort_by_key(|s| s.at);
    samples
}

/// The samples against the fault, which happened `fault_at` into the load.
pub fn summarize(samples: &[Sample], fault_at: Duration) -> Requests {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= fault_at).collect();
    let seconds = after.last().map(|s| (s.at - fault_at).as_secs() as usize + 1).unwrap_or(0);
    let mut per_second = vec![(0u32, 0u32); seconds];
    for s in &after {
        let slot = &mut per_second[(s.at - fault_at).as_secs() as usize];
        if s.ok() { slot.0 += 1 } else { slot.1 += 1 }
    }
    let mut failures = std::collections::BTreeMap::new();
    for s in samples.iter().filter(|s| !s.ok()) {
        *failures.entry(s.outcome).or_default() += 1;
    }
    Requests {
        total: samples.len(),
        failed: samples.iter().filter(|s| !s.ok()).count(),
        failures,
        last_failure_seconds: after.iter().rev().find(|s| !s.ok()).map(|s| (s.at - fault_at).as_secs_f64()),
        per_second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_against_the_fault() {
        let s = |ms: u64, outcome: Outcome| Sample { at: Duration::from_millis(ms), outcome };
        let samples = [
            s(0, Outcome::Answered),
            s(900, Outcome::Slow),
            s(2100, Outcome::Answered),
            s(2600, Outcome::NoConnection),
            s(4200, Outcome::Answered),
        ];
        let r = summarize(&samples, Duration::from_secs(2));
        assert_eq!((r.total, r.failed), (5, 2));
        assert_eq!(r.failures, [(Outcome::NoConnection, 1), (Outcome::Slow, 1)].into());
        assert_eq!(r.failure_kinds(), " (1 no-connection, 1 slow)");
        assert_eq!(r.last_failure_seconds, Some(0.6));
        assert_eq!(r.per_second, [(1, 1), (0, 0), (1, 0)]);
    }
}
