//! Each incident is one trace whose ids come from the incident's name
//! ([`incident_trace`]): its root span is the detection (from the node's
//! last sign of life to the alerter's decision), and every later span (a
//! notice, each delivery attempt to each sink, the rescheduling verdict)
//! is its child, whichever replica makes it and however long after. With
//! export off, these are no-ops.

use std::time::SystemTime;

use k8s_openapi::jiff::Timestamp;
use tracing::field::Empty;
use vigil_telemetry::otel::{
    OpenTelemetrySpanExt as _,
    opentelemetry::{
        Context, KeyValue, global,
        trace::{Span as _, SpanId, SpanKind, TraceId, Tracer as _},
    },
    remote_parent, start_with_ids,
};

use crate::{
    model::{Notice, incident_trace},
    tracker::Incident,
};

const TRACER: &str = "alerter";

fn ids(incident: &str) -> (TraceId, SpanId) {
    let (trace, span) = incident_trace(incident);
    (TraceId::from_bytes(trace), SpanId::from_bytes(span))
}

/// The incident's root span, as the parent of what follows it.
pub fn parent(incident: &str) -> Context {
    let (trace, span) = ids(incident);
    remote_parent(trace, span)
}

fn time(t: Option<&str>) -> Option<SystemTime> {
    t.and_then(|t| t.parse::<Timestamp>().ok()).map(SystemTime::from)
}

/// Records the root span once the node is judged down: it starts at the
/// node's last sign of life (its Ready condition's change, or its lease's
/// last renewal) and ends at the detection.
pub fn detected(incident: &Incident) {
    let end = time(incident.detected_at.as_deref()).unwrap_or_else(SystemTime::now);
    let start = time(incident.not_ready_since.as_deref())
        .or_else(|| time(incident.lease_renewed_at.as_deref()))
        .or_else(|| time(Some(&incident.started_at)))
        .unwrap_or(end)
        .min(end);
    let (trace, span) = ids(&incident.name);
    let tracer = global::tracer(TRACER);
    let mut root = start_with_ids(trace, span, || {
        tracer
            .span_builder(format!("incident: node {} down", incident.node))
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("vigil.incident", incident.name.clone()),
                KeyValue::new("k8s.node.name", incident.node.clone()),
                KeyValue::new("vigil.down_reason", incident.down_reason.clone().unwrap_or_default()),
            ])
            .start_with_context(&tracer, &Context::new())
    });
    root.end_with_timestamp(end);
}

/// Records the rescheduling verification: from the detection to the verdict.
pub fn verified(incident: &Incident, notice: &Notice) {
    let end = SystemTime::now();
    let start = time(incident.detected_at.as_deref()).unwrap_or(end).min(end);
    let tracer = global::tracer(TRACER);
    let mut span = tracer
        .span_builder("verify rescheduling")
        .with_start_time(start)
        .with_attributes([
            KeyValue::new("vigil.incident", incident.name.clone()),
            KeyValue::new("vigil.verdict", notice.kind.as_str()),
            KeyValue::new("vigil.owners", notice.owners.len() as i64),
            KeyValue::new("vigil.seconds_to_rescheduled", notice.seconds_to_rescheduled.unwrap_or(-1.0)),
        ])
        .start_with_context(&tracer, &parent(&incident.name));
    span.end_with_timestamp(end);
}

/// The span of a notice being decided, recorded and queued.
pub fn notice(notice: &Notice) -> tracing::Span {
    let span = tracing::info_span!(
        "notice",
        otel.name = format!("notice {}", notice.kind.as_str()),
        vigil.incident = %notice.incident,
        vigil.notice = %notice.id,
    );
    let _ = span.set_parent(parent(&notice.incident));
    span
}

/// The span of one delivery attempt of one notice to one sink; the request
/// carries it as `traceparent`.
pub fn delivery(notice: &Notice, sink: &str, attempt: u32) -> tracing::Span {
    let span = tracing::info_span!(
        "deliver",
        otel.name = format!("deliver {} to {sink}", notice.kind.as_str()),
        otel.kind = "client",
        vigil.incident = %notice.incident,
        vigil.notice = %notice.id,
        vigil.sink = sink,
        vigil.attempt = attempt,
        vigil.outcome = Empty,
        otel.status_code = Empty,
        http.response.status_code = Empty,
    );
    let _ = span.set_parent(parent(&notice.incident));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incidents_trace_id_is_stable_and_its_own() {
        let (trace, span) = ids("w2-1767225600");
        assert_eq!(trace, ids("w2-1767225600").0);
        assert_ne!(trace, ids("w2-1767225601").0);
        assert_eq!(trace.to_string(), crate::model::incident_trace_id("w2-1767225600"));
        assert!(trace != TraceId::INVALID && span != SpanId::INVALID);
    }
}
