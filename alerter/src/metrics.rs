//! The alerter's metrics, under the `vigil_alerter_` prefix, scraped by the
//! in-cluster Prometheus from the admin port.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `suspect`, `node-down`, `rescheduled`, `not-rescheduled`, `resolved`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub sink: String,
    /// `delivered`, `retried`, `expired`, `rejected`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

pub struct Metrics {
    pub registry: Registry,
    /// Notices decided, by kind: the nodes' transitions.
    pub transitions: Family<KindLabels, Counter>,
    /// From the Ready condition's change to a node-down notice delivered, by sink.
    pub detection_latency: Family<SinkLabels, Histogram>,
    /// From a node seen down to every owner back.
    pub time_to_rescheduled: Histogram,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub pending: Family<SinkLabels, Gauge>,
    /// 1 while this replica is the leader.
    pub leader: Gauge,
    pub open_incidents: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vigil_alerter");
        // 100 ms to about 7 minutes: tuned clusters answer in seconds, upstream defaults in minutes.
        let seconds =
            || Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.1, 2.0, 13));
        let transitions = Family::<KindLabels, Counter>::default();
        let detection_latency = Family::<SinkLabels, Histogram>::new_with_constructor(seconds);
        let time_to_rescheduled = seconds();
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        let pending = Family::<SinkLabels, Gauge>::default();
        let leader = Gauge::default();
        let open_incidents = Gauge::default();
        registry.register("transitions", "Notices decided, by kind", transitions.clone());
        registry.register(
            "detection_latency_seconds",
            "From a node's Ready condition changing to its node-down notice delivered, by sink",
            detection_latency.clone(),
        );
        registry.register(
            "time_to_rescheduled_seconds",
            "From a node seen down to every owner of its pods back on other nodes",
            time_to_rescheduled.clone(),
        );
        registry.register("deliveries", "Delivery attempts' outcomes, by sink", deliveries.clone());
        registry.register("pending_deliveries", "Notices not delivered yet, by sink", pending.clone());
        registry.register("leader", "1 while this replica leads", leader.clone());
        registry.register("open_incidents", "Incidents not resolved", open_incidents.clone());
        Metrics {
            registry,
            transitions,
            detection_latency,
            time_to_rescheduled,
            deliveries,
            pending,
            leader,
            open_incidents,
        }
    }
}

impl AsRef<Registry> for Metrics {
    fn as_ref(&self) -> &Registry {
        &self.registry
    }
}
