use std::{sync::Arc, time::Instant};

use crate::{
    check::Checker,
    config::Config,
    metrics::{CheckLabels, Metrics, RunLabels},
    probes::Probes,
};

/// Runs every check once per period, concurrently, for ever.
pub async fn run(config: Arc<Config>, checker: Checker, probes: Arc<Probes>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(config.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let checks: Vec<_> = std::iter::once(&config.workload).chain(&config.dependencies).cloned().collect();
    let targets: Vec<_> = checks.iter().map(|c| c.target()).collect();
    loop {
        tick.tick().await;
        let runs = checks.iter().zip(&targets).map(|(check, target)| {
            let checker = &checker;
            async move {
                let started = Instant::now();
                let result = checker.run(target, check.timeout).await;
                (result, started.elapsed())
            }
        });
        let results = futures::future::join_all(runs).await;
        for (index, ((result, took), check)) in results.into_iter().zip(&checks).enumerate() {
            let labels = CheckLabels { check: check.name.clone() };
            metrics.duration.get_or_create(&labels).observe(took.as_secs_f64());
            let outcome = if result.is_ok() { "success" } else { "failure" };
            metrics.runs.get_or_create(&RunLabels { check: check.name.clone(), result: outcome }).inc();
            if result.is_err() {
                metrics.failures.get_or_create(&labels).inc();
            }
            let error = result.as_ref().err().cloned();
            let (healthy, flipped) =
                probes.record(index, result, check.success_threshold, check.failure_threshold);
            metrics.healthy.get_or_create(&labels).set(healthy as i64);
            if flipped {
                match error {
                    None => tracing::info!(check = %check.name, "check is healthy"),
                    Some(error) => tracing::warn!(check = %check.name, %error, "check is failing"),
                }
            }
        }
    }
}
