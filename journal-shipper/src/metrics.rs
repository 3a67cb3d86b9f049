//! What the shipper counts, on its admin port's `/metrics`. Labels hold
//! fixed values only.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `delivered`, or why not: `refused` (an answer to try again),
    /// `rejected` (an answer no retry changes: the batch is dropped),
    /// `unreachable` (no answer), `password` (its file unreadable).
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Entries the store took.
    pub entries_delivered: Counter,
    /// Entries of batches the store rejected for good.
    pub entries_dropped: Counter,
    /// Deliveries tried, by outcome.
    pub deliveries: Family<Outcome, Counter>,
    /// Reads of the journal that failed.
    pub read_errors: Counter,
    /// Entries the reader could not read and passed over.
    pub unreadable_entries: Counter,
    /// Values cut or left out to keep an entry within its bound.
    pub values_cut: Counter,
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
        let metrics = Metrics {
            registry: Registry::default(),
            entries_delivered: Counter::default(),
            entries_dropped: Counter::default(),
            deliveries: Family::default(),
            read_errors: Counter::default(),
            unreadable_entries: Counter::default(),
            values_cut: Counter::default(),
            last_delivery: Gauge::default(),
        };
        registry.register(
            "entries_delivered",
            "Journal entries the log store took",
            metrics.entries_delivered.clone(),
        );
        registry.register(
            "entries_dropped",
            "Journal entries of batches the log store rejected for good",
            metrics.entries_dropped.clone(),
        );
        registry.register(
            "deliveries",
            "Batches sent to the log store, by outcome",
            metrics.deliveries.clone(),
        );
        registry.register("read_errors", "Reads of the journal that failed", metrics.read_errors.clone());
        registry.register(
            "unreadable_entries",
            "Journal entries the reader could not read and passed over (counted on each read that meets them)",
            metrics.unreadable_entries.clone(),
        );
        registry.register(
            "values_cut",
            "Values cut or left out to bound an entry",
            metrics.values_cut.clone(),
        );
        registry.register(
            "last_delivery_timestamp_seconds",
            "When the log store last took a batch",
            metrics.last_delivery.clone(),
        );
        Metrics { registry, ..metrics }
    }
}
