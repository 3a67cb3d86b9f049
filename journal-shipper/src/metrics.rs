//! What the shipper counts, on its admin port's `/metrics`. Labels hold
//! fixed values only.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `delivered`, or why not: `refused` (the store answered an error),
    /// `unreachable` (no answer).
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Entries the store took.
    pub entries: Counter,
    /// Deliveries tried, by outcome.
    pub deliveries: Family<Outcome, Counter>,
    /// Reads of the journal that failed.
    pub read_errors: Counter,
    /// When the store last took a batch (seconds since the epoch).
    pub last_delivery: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl AsRef<Registry> for Metrics {
    fn as_ref(&self) -> &Registry {
        &self.registry
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("journal_shipper");
        let entries = Counter::default();
        let deliveries = Family::<Outcome, Counter>::default();
        let read_errors = Counter::default();
        let last_delivery = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register("entries", "Journal entries the log store took", entries.clone());
        registry.register("deliveries", "Batches sent to the log store, by outcome", deliveries.clone());
        registry.register("read_errors", "Reads of the journal that failed", read_errors.clone());
        registry.register(
            "last_delivery_timestamp_seconds",
            "When the log store last took a batch",
            last_delivery.clone(),
        );
        Metrics { registry, entries, deliveries, read_errors, last_delivery }
    }
}
