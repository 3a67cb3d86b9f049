use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub check: String,
    /// `success` or `failure`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    /// `startup`, `liveness` or `readiness`.
    pub probe: &'static str,
    pub code: u16,
}

/// probe-server's metrics, under the `probe_` prefix.
pub struct Metrics {
    pub registry: Registry,
    pub runs: Family<RunLabels, Counter>,
    pub failures: Family<CheckLabels, Counter>,
    pub duration: Family<CheckLabels, Histogram>,
    pub healthy: Family<CheckLabels, Gauge>,
    pub answers: Family<AnswerLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("probe");
        let runs = Family::<RunLabels, Counter>::default();
        let failures = Family::<CheckLabels, Counter>::default();
        let duration = Family::<CheckLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.5, 12))
        });
        let healthy = Family::<CheckLabels, Gauge>::default();
        let answers = Family::<AnswerLabels, Counter>::default();
        registry.register("check_runs", "Check runs, by check and result", runs.clone());
        registry.register("check_failures", "Failed check runs, by check", failures.clone());
        registry.register("check_duration_seconds", "Time one check run took", duration.clone());
        registry.register(
            "check_healthy",
            "Current state of each check after thresholds (1 healthy, 0 failing)",
            healthy.clone(),
        );
        registry.register(
            "answers",
            "Probe answers given to the kubelet, by probe and status code",
            answers.clone(),
        );
        vigil_telemetry::otel::register(&mut registry);
        Metrics { registry, runs, failures, duration, healthy, answers }
    }
}

impl AsRef<Registry> for Metrics {
    fn as_ref(&self) -> &Registry {
        &self.registry
    }
}
