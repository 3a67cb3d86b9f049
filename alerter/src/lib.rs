//! vigil's alerter: watches Nodes, their kubelet Leases and Pods, and says
//! when a node goes down, whether the pods it held came back Ready on other
//! nodes, and when the node is back, to webhooks, Slack and Alertmanager.
#![forbid(unsafe_code)]

/// The configuration, the custom resource and the notices: the API crate's.
pub use alerter_api::{config, crd, logs, model};

/// The loop: reflectors, the tracker, incidents, Events, notices.
pub mod controller;
/// Pure decisions over cluster objects: readiness, staleness, owners, verdicts.
pub mod decide;
/// Delivery queues with retries, backoff and expiry.
pub mod delivery;
/// Leader election on a Lease.
pub mod leader;
/// The alerter's Prometheus metrics.
pub mod metrics;
/// How long closed NodeIncidents are kept, and which to delete.
pub mod retention;
/// What each kind of sink receives: signed webhooks, Slack, Alertmanager.
pub mod sinks;
/// What a new leader takes over from the NodeIncidents.
pub mod takeover;
/// The incident as one trace: detection, notices, deliveries, verification.
pub mod trace;
/// One incident per node, driven by reflector snapshots.
pub mod tracker;
/// Watched objects cut down to what the decisions read.
pub mod trim;

#[cfg(test)]
pub(crate) mod fixtures;
