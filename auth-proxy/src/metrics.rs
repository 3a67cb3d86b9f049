//! The proxy's own metrics, under the `auth_proxy_` prefix. Every label
//! value comes from a fixed set: the route is which upstream (a name from
//! the configuration, never the path), the method is one of HTTP's or
//! `_OTHER`, the outcome one of [`Outcome`]'s.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// What became of a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded for an authenticated user that may do this.
    Proxied,
    /// Forwarded without credentials: a GET or HEAD of a public path.
    Public,
    /// An authenticated GET or HEAD of `/` sent to the route's root (303).
    Redirected,
    /// No or wrong credentials (401).
    Unauthenticated,
    /// An authenticated user without a grant for this (403).
    Forbidden,
    /// A write whose `Origin` is not the address it was sent to (403).
    CrossOrigin,
    /// A CORS preflight (OPTIONS), never answered with CORS headers (403).
    Preflight,
    /// A path with dot segments or encoded slashes or dots (400).
    BadPath,
    /// A body over the route's limit (413).
    TooLarge,
    /// The upstream could not be reached or broke off (502).
    UpstreamError,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Proxied => "proxied",
            Outcome::Public => "public",
            Outcome::Redirected => "redirected",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::CrossOrigin => "cross_origin",
            Outcome::Preflight => "preflight",
            Outcome::BadPath => "bad_path",
            Outcome::TooLarge => "too_large",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamTimeout => "upstream_timeout",
        }
    }
}

/// A method as a label: HTTP's own, or `_OTHER` (as OpenTelemetry's HTTP
/// conventions do), so a client cannot mint series.
pub fn method_label(method: &http::Method) -> &'static str {
    crate::config::METHODS.iter().find(|m| **m == method.as_str()).copied().unwrap_or("_OTHER")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_seconds: Family<RouteLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("auth_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        let upstream_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 4.0, 9))
        });
        registry.register("requests", "Requests, by route, method and what became of them", requests.clone());
        registry.register(
            "upstream_seconds",
            "Time the upstream took to start its answer, by route",
            upstream_seconds.clone(),
        );
        vigil_telemetry::otel::register(&mut registry);
        Metrics { registry, requests, upstream_seconds }
    }
}

impl Metrics {
    pub fn count(&self, route: &str, method: &http::Method, outcome: Outcome) {
        let labels =
            RequestLabels { route: route.into(), method: method_label(method), outcome: outcome.as_str() };
        self.requests.get_or_create(&labels).inc();
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
    fn any_other_method_is_one_label() {
        assert_eq!(method_label(&http::Method::POST), "POST");
        assert_eq!(method_label(&http::Method::from_bytes(b"FOO1").unwrap()), "_OTHER");
        assert_eq!(method_label(&http::Method::from_bytes(b"get").unwrap()), "_OTHER");
    }
}
