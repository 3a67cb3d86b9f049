//! The CLI's own trace export: `vigil_telemetry`'s, from the standard
//! OpenTelemetry variables, plus vigil's credentials when the endpoint is
//! the cluster's own Jaeger (behind its authenticating proxy) and no
//! `OTEL_EXPORTER_OTLP_*HEADERS` says otherwise. Never to another
//! endpoint: the password goes nowhere but the cluster it belongs to.
//!
//! The first `vigil up` of a cluster has no credentials yet when it
//! starts, so its spans are refused (one warning); later commands send them.

use vigil_telemetry::{
    TraceExport,
    otel::{self, Settings},
};

use crate::{
    addons::{credentials, jaeger},
    provider::Machines,
};

/// Whether `endpoint` (a full URL) is `jaeger`'s `(host, port)`.
fn is_address(endpoint: &str, jaeger: (&str, u16)) -> bool {
    let Ok(uri) = endpoint.parse::<http::Uri>() else { return false };
    uri.scheme_str() == Some("http")
        && uri.host() == Some(jaeger.0)
        && uri.port_u16().unwrap_or(80) == jaeger.1
}

/// The `Authorization` header for the cluster `name`'s Jaeger, when
/// `endpoint` is that Jaeger's OTLP address and the password file is there.
async fn cluster_header(machines: &Machines, name: &str, endpoint: &str) -> Option<(String, String)> {
    let provider = crate::provider::connect(machines).await.ok()?;
    let spec = crate::provider::existing(provider.as_ref(), name).await.ok()?;
    let host = spec.load_balancer_ip(jaeger::LOAD_BALANCER_INDEX).to_string();
    if !is_address(endpoint, (&host, jaeger::OTLP_PORT)) {
        return None;
    }
    let file = crate::password_file::path(&crate::password_file::default_dir(), name);
    let password = crate::password_file::read(&file).ok()?;
    let credentials = credentials::Credentials { username: credentials::API_USER.into(), password };
    Some(("Authorization".into(), credentials.basic_header()))
}

/// Trace export for the cluster `name`, as `vigil_telemetry::trace_export`
/// does it, with the cluster's credentials when its endpoint is that
/// cluster's Jaeger and no headers variable names others.
pub async fn trace_export<S>(machines: &Machines, name: &str) -> TraceExport<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span> + Send + Sync,
{
    let mut settings = otel::settings(|n| std::env::var(n).ok(), "vigil");
    let mut note = "";
    if let Ok(Settings::On(config)) = &mut settings
        && !config.headers_from_environment
        && let Some(header) = cluster_header(machines, name, &config.endpoint).await
    {
        config.extra_headers.push(header);
        note = " with vigil's credentials";
    }
    vigil_telemetry::trace_export_from(settings, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_to_the_clusters_own_jaeger() {
        let jaeger = ("172.29.0.131", 4318);
        assert!(is_address("http://172.29.0.131:4318/v1/traces", jaeger));
        assert!(!is_address("http://172.29.0.131:4319/v1/traces", jaeger));
        assert!(!is_address("http://collector.example:4318/v1/traces", jaeger));
        assert!(!is_address("http://172.29.0.131/v1/traces", jaeger));
        assert!(!is_address("https://172.29.0.131:4318/v1/traces", jaeger));
        assert!(!is_address("not a url", jaeger));
    }
}
