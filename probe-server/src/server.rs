//! Two routers on two ports, as linkerd keeps admin apart from the data path:
//!
//! - probes (`listen`): `GET /startupz`, `/livez`, `/readyz`: 200 or 503 and a
//!   JSON body saying which check failed and why. These are the product.
//! - admin (`admin_listen`): `GET /metrics` plus telemetry's admin router
//!   (`/live`, `/ready`: probe-server's own health, never mixed up with the
//!   results it reports; `PUT /log-level` from localhost).

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::{
    metrics::{AnswerLabels, Metrics},
    probes::{Probes, Verdict},
};

#[derive(Clone)]
pub struct ProbeState {
    pub probes: Arc<Probes>,
    pub metrics: Arc<Metrics>,
}

fn answer(state: &ProbeState, verdict: Verdict) -> impl IntoResponse + use<> {
    let code = if verdict.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    state.metrics.answers.get_or_create(&AnswerLabels { probe: verdict.probe, code: code.as_u16() }).inc();
    (code, Json(verdict))
}

pub fn probe_router(state: ProbeState) -> Router {
    Router::new()
        .route("/startupz", get(|State(s): State<ProbeState>| async move { answer(&s, s.probes.startup()) }))
        .route("/livez", get(|State(s): State<ProbeState>| async move { answer(&s, s.probes.liveness()) }))
        .route("/readyz", get(|State(s): State<ProbeState>| async move { answer(&s, s.probes.readiness()) }))
        .route_layer(axum::middleware::from_fn(vigil_telemetry::trace_http::serve))
        .with_state(state)
}

/// The admin port: probe-server's own metrics next to the shared admin endpoints.
pub fn admin_router(metrics: Arc<Metrics>, log_level: vigil_telemetry::LogLevelHandle) -> Router {
    vigil_telemetry::admin::router_with_metrics(log_level, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn probes_answer_503_with_the_failing_check_in_json() {
        let config = crate::config::Config::from_json(
            r#"{"workload": {"name": "web", "http": "http://127.0.0.1:8000/"}, "dependencies": [{"name": "dns", "dns": "kubernetes.default"}]}"#,
            "t",
        )
        .unwrap();
        let state = ProbeState { probes: Arc::new(Probes::new(&config)), metrics: Arc::default() };
        state.probes.record(0, Ok(()), 1, 1);
        state.probes.record(1, Err("resolve kubernetes.default: timed out".into()), 1, 1);
        let get = |path: &'static str| {
            let app = probe_router(state.clone());
            async move {
                let response = app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
                let code = response.status().as_u16();
                let body: serde_json::Value =
                    serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
                        .unwrap();
                (code, body)
            }
        };
        let (code, body) = get("/readyz").await;
        assert_eq!(code, 503);
        assert_eq!(body["reason"], "check dns is failing: resolve kubernetes.default: timed out");
        assert_eq!(body["checks"][1]["healthy"], false);
        let (code, body) = get("/livez").await;
        assert_eq!((code, body["ok"].as_bool()), (200, Some(true)));
        let (code, _) = get("/startupz").await;
        assert_eq!(code, 200);
        let text = vigil_telemetry::encode(&state.metrics.registry);
        assert!(text.contains(r#"probe_answers_total{probe="readiness",code="503"} 1"#), "{text}");
    }
}
