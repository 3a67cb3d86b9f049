//! The drill's load: GETs of the web Service through its LoadBalancer
//! address from the host, each on a new connection (kube-proxy balances
//! connections), at a fixed rate, bounded in count and time, each recorded
//! with when it started and whether it was answered.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

/// One request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it started, from the load's start.
    pub at: Duration,
    pub ok: bool,
}

/// What the load saw, against the fault's time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Requests {
    pub total: usize,
    pub failed: usize,
    /// The last failure, in seconds from the fault.
    pub last_failure_seconds: Option<f64>,
    /// (answered, failed) in each second from the fault (before it: none).
    pub per_second: Vec<(u32, u32)>,
}

/// Sends `rate` requests a second to `url` until `stop` turns true or
/// `limit` requests are sent (so the loop ends by itself).
pub async fn run(url: String, rate: u32, limit: usize, mut stop: watch::Receiver<bool>) -> Vec<Sample> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
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
            let ok = match http.get(&url).send().await {
                Ok(response) => {
                    response.status().is_success()
                        && response.text().await.is_ok_and(|b| b.starts_with("I'm "))
                }
                Err(_) => false,
            };
            let _ = tx.send(Sample { at, ok });
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
        if s.ok { slot.0 += 1 } else { slot.1 += 1 }
    }
    Requests {
        total: samples.len(),
        failed: samples.iter().filter(|s| !s.ok).count(),
        last_failure_seconds: after.iter().rev().find(|s| !s.ok).map(|s| (s.at - fault_at).as_secs_f64()),
        per_second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_against_the_fault() {
        let s = |ms: u64, ok: bool| Sample { at: Duration::from_millis(ms), ok };
        let samples = [s(0, true), s(900, false), s(2100, true), s(2600, false), s(4200, true)];
        let r = summarize(&samples, Duration::from_secs(2));
        assert_eq!((r.total, r.failed), (5, 2));
        assert_eq!(r.last_failure_seconds, Some(0.6));
        assert_eq!(r.per_second, [(1, 1), (0, 0), (1, 0)]);
    }
}
