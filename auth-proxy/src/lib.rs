//! An authenticating reverse proxy, a sidecar in front of a server that
//! listens on loopback in its pod (Prometheus, Alertmanager, Jaeger): HTTP
//! Basic users whose passwords are mounted Secret files, each user with the
//! methods and paths it may use, public probe paths, no cross-origin
//! writes, bounded bodies, connections and waits. See [`proxy`] for the
//! rules in their order.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod serve;

use std::sync::Arc;

use axum::Router;

use crate::{auth::Users, config::Config, metrics::Metrics, proxy::RouteState};

/// Each route of `config` and the router that serves it, sharing one
/// upstream client.
pub fn routers(config: &Config, users: Arc<Users>, metrics: Arc<Metrics>) -> Vec<(config::Route, Router)> {
    let client = proxy::upstream_client();
    config
        .routes
        .iter()
        .map(|route| {
            let state = RouteState {
                route: route.clone(),
                realm: config.realm.clone(),
                users: users.clone(),
                metrics: metrics.clone(),
                client: client.clone(),
            };
            (route.clone(), proxy::router(Arc::new(state)))
        })
        .collect()
}
