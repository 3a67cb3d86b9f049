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
    /// One of [`OUTCOMES`].
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
    /// Re-sends of firing alerts to an Alertmanager sink, by outcome (one of
    /// [`RESEND_OUTCOMES`]): counted here, not kept in the incident.
    pub resends: Family<DeliveryLabels, Counter>,
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
        let resends = Family::<DeliveryLabels, Counter>::default();
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
        registry.register(
            "alertmanager_resends",
            "Re-sends of the alerts still firing to Alertmanager, by sink and outcome",
            resends.clone(),
        );
        registry.register("pending_deliveries", "Notices not delivered yet, by sink", pending.clone());
        registry.register("leader", "1 while this replica leads", leader.clone());
        registry.register("open_incidents", "Incidents not resolved", open_incidents.clone());
        vigil_telemetry::otel::register(&mut registry);
        Metrics {
            registry,
            transitions,
            detection_latency,
            time_to_rescheduled,
            deliveries,
            resends,
            pending,
            leader,
            open_incidents,
        }
    }
}

/// The outcomes a delivery attempt counts as.
pub const OUTCOMES: [&str; 4] = ["delivered", "retried", "expired", "rejected"];

/// The outcomes a re-send to Alertmanager counts as (a failed one is not
/// retried: the next interval's re-send is its retry).
pub const RESEND_OUTCOMES: [&str; 2] = ["delivered", "failed"];

impl Metrics {
    /// Every series the alerter can count, at zero, for these sinks: a
    /// series that first appears at 1 is an increase `increase()` cannot
    /// see, so a dashboard would miss the first incident after a start.
    pub fn initialize(&self, sinks: &[String]) {
        for kind in crate::model::NoticeKind::ALL {
            drop(self.transitions.get_or_create(&KindLabels { kind: kind.as_str() }));
        }
        for sink in sinks {
            for outcome in OUTCOMES {
                drop(self.deliveries.get_or_create(&DeliveryLabels { sink: sink.clone(), outcome }));
            }
            drop(self.pending.get_or_create(&SinkLabels { sink: sink.clone() }));
            drop(self.detection_latency.get_or_create(&SinkLabels { sink: sink.clone() }));
        }
    }

    /// The re-send series of these Alertmanager sinks, at zero.
    pub fn initialize_resends(&self, alertmanagers: &[String]) {
        for sink in alertmanagers {
            for outcome in RESEND_OUTCOMES {
                drop(self.resends.get_or_create(&DeliveryLabels { sink: sink.clone(), outcome }));
            }
        }
    }
}

impl AsRef<Registry> for Metrics {
    fn as_ref(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_starts_at_zero_so_the_first_incident_is_an_increase() {
        let metrics = Metrics::default();
        metrics.initialize(&["webhook".into(), "alertmanager".into()]);
        metrics.initialize_resends(&["alertmanager".into()]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        for kind in ["suspect", "node-down", "rescheduled", "not-rescheduled", "resolved"] {
            assert!(
                text.contains(&format!("vigil_alerter_transitions_total{{kind=\"{kind}\"}} 0")),
                "{text}"
            );
        }
        for outcome in OUTCOMES {
            let line =
                format!("vigil_alerter_deliveries_total{{sink=\"alertmanager\",outcome=\"{outcome}\"}} 0");
            assert!(text.contains(&line), "{text}");
        }
        for outcome in RESEND_OUTCOMES {
            let line = format!(
                "vigil_alerter_alertmanager_resends_total{{sink=\"alertmanager\",outcome=\"{outcome}\"}} 0"
            );
            assert!(text.contains(&line), "{text}");
        }
        assert!(!text.contains("resends_total{sink=\"webhook\""), "{text}");
        assert!(text.contains("vigil_alerter_pending_deliveries{sink=\"webhook\"} 0"), "{text}");
        assert!(text.contains("vigil_alerter_detection_latency_seconds_count{sink=\"webhook\"} 0"), "{text}");
    }
}
