//! What the alerter shares with its readers and writers: the `NodeIncident`
//! custom resource, the notices and verdicts (the webhook's payload, whose
//! JSON Schema is generated from them), the configuration file's types, and
//! what Ready means for a pod. The CLI reads and writes these without
//! linking the alerter's runtime.
#![forbid(unsafe_code)]

/// The configuration file, and the secrets it names.
pub mod config;
/// `NodeIncident`, the custom resource each incident is kept in.
pub mod crd;
/// One incident, as stored in a `NodeIncident`'s status.
pub mod incident;
/// Links to an incident's lines in the log store's UI.
pub mod logs;
/// Notices and verdicts: the webhook's payload.
pub mod model;

use k8s_openapi::api::core::v1::Pod;

/// All but RFC 3986's unreserved characters.
const RESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `text` with everything but RFC 3986's unreserved characters
/// percent-encoded: safe as a query parameter's value, a URL fragment's, or
/// an OTLP header's (`OTEL_EXPORTER_OTLP_HEADERS` values are URL-encoded).
pub fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}

/// The pod's Ready condition is True and it is not being deleted.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
