//! probe-server: the endpoint kubelet's startup, liveness and readiness
//! probes call, as a sidecar in the workload's pod.
//!
//! Checks run in the background on a fixed period; the probe endpoints
//! answer from their results at once, so a slow dependency never makes a
//! kubelet probe time out. Liveness looks at the workload only (a failing
//! dependency must not restart healthy pods in cascade); readiness looks at
//! the workload and its dependencies, and turns false the moment SIGTERM
//! arrives so the pod leaves its Services before it exits.
#![forbid(unsafe_code)]

/// Running one check: HTTP, TCP or DNS, with a timeout.
pub mod check;
/// The configuration file, its environment overrides and validation.
pub mod config;
/// Metrics about checks and probe answers.
pub mod metrics;
/// The probe decisions: startup, liveness, readiness.
pub mod probes;
/// The check loop.
pub mod runner;
/// HTTP: the probe router (for the kubelet) and the admin router (for operators).
pub mod server;
/// Threshold bookkeeping per check: when a result flips a check's state.
pub mod state;
