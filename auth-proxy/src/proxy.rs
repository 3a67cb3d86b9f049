//! One route: who may send what ([`decide`], pure), and the forwarding of
//! what may pass to the upstream, streamed both ways.
//!
//! In order, a request is refused when it is
//! 1. a CORS preflight (`OPTIONS`): 403, no CORS headers, so no browser
//!    page of another origin is ever allowed a request;
//! 2. for a path with dot segments or encoded slashes, dots or backslashes: 400
//!    (so that a path grant means what it says whatever the upstream's routing);
//! 3. a write (not GET or HEAD) whose `Origin` is not the address it was sent
//!    to: 403, so a browser holding the user's Basic credentials cannot be
//!    made to write from another page (CSRF);
//! 4. without valid credentials: 401 with `WWW-Authenticate`, unless it is a
//!    GET or HEAD of one of the route's public paths (the kubelet's probes);
//! 5. from a user without a grant for this method and path: 403;
//! 6. with a body over the route's limit: 413.
//!
//! What passes loses its hop-by-hop headers and `Authorization` (the
//! upstream never sees a password); the answer loses its hop-by-hop and
//! `Access-Control-*` headers (Alertmanager allows any origin by itself).

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use http_body_util::{LengthLimitError, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::{
    auth::{Identity, Users},
    config::Route,
    metrics::{Metrics, Outcome, RouteLabels, method_label},
};

/// The client every route forwards through: pooled connections to loopback.
pub type Upstream = Client<HttpConnector, Limited<Body>>;

pub fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .pool_max_idle_per_host(32)
        .build(connector)
}

/// What a route needs to answer.
pub struct RouteState {
    pub route: Route,
    pub realm: String,
    pub users: Arc<Users>,
    pub metrics: Arc<Metrics>,
    pub client: Upstream,
}

pub fn router(state: Arc<RouteState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward it; `Outcome::Proxied` (with the user) or `Outcome::Public`.
    Forward(Outcome, Option<String>),
    /// Send the browser to this path of the same address (303), for the user.
    Redirect(String, String),
    /// Answer it with this status; the outcome is why, the user who asked if known.
    Refuse(Outcome, Option<String>),
}

/// Whether `path` means what it says to any upstream: no `.` or `..`
/// segment, no encoded slash, dot or backslash.
pub fn clean_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let encoded = ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e));
    !encoded && !path.contains('\\') && !path.split('/').any(|s| s == "." || s == "..")
}

/// `host[:port]` as (lower-case host, port), the port `default` when absent.
fn authority(text: &str, default: u16) -> Option<(String, u16)> {
    let text = text.trim().trim_end_matches('/');
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default,
            None => return None,
        };
        (host, port)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (text, default),
        }
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// Whether the `Origin` header names the address the request was sent to
/// (`host`, from the `Host` header), over plain HTTP (the only scheme
/// served here). `null` and anything unparsable are another origin.
pub fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    if !scheme.eq_ignore_ascii_case("http") {
        return false;
    }
    match (authority(rest, 80), host.and_then(|h| authority(h, 80))) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The decision for a request to `route`, from its method, path and headers.
pub fn decide(route: &Route, users: &Users, method: &Method, path: &str, headers: &HeaderMap) -> Decision {
    if method == Method::OPTIONS {
        return Decision::Refuse(Outcome::Preflight, None);
    }
    if !clean_path(path) {
        return Decision::Refuse(Outcome::BadPath, None);
    }
    let reads = method == Method::GET || method == Method::HEAD;
    if reads && route.public.iter().any(|p| p == path) {
        return Decision::Forward(Outcome::Public, None);
    }
    if !reads && let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !origin.to_str().is_ok_and(|o| same_origin(o, host)) {
            return Decision::Refuse(Outcome::CrossOrigin, None);
        }
    }
    let user = match users.identify(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes)) {
        Identity::User(user) => user,
        Identity::Anonymous | Identity::Refused => return Decision::Refuse(Outcome::Unauthenticated, None),
    };
    if !route.grants.iter().any(|g| g.user == user && g.allows(method.as_str(), path)) {
        return Decision::Refuse(Outcome::Forbidden, Some(user));
    }
    if let Some(root) = route.root.as_ref().filter(|_| reads && path == "/") {
        return Decision::Redirect(root.clone(), user);
    }
    Decision::Forward(Outcome::Proxied, Some(user))
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named).chain([&header::UPGRADE]) {
        headers.remove(name);
    }
}

/// 303 to `path` of the same address (a validated path: see `Config::validate`).
fn redirect(path: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(path) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn refusal(status: StatusCode, realm: &str, message: &'static str) -> Response {
    let mut response = (status, message).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if status == StatusCode::UNAUTHORIZED {
        let challenge = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
        headers
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).expect("a validated realm"));
    }
    response
}

fn answer_for(outcome: Outcome, realm: &str) -> Response {
    let (status, message) = match outcome {
        Outcome::Preflight => (StatusCode::FORBIDDEN, "cross-origin requests are refused\n"),
        Outcome::BadPath => {
            (StatusCode::BAD_REQUEST, "a path with dot segments or encoded slashes is refused\n")
        }
        Outcome::CrossOrigin => (StatusCode::FORBIDDEN, "a write from another origin is refused\n"),
        Outcome::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            "credentials required (HTTP Basic): `vigil status` names the user and its password file\n",
        ),
        Outcome::Forbidden => (StatusCode::FORBIDDEN, "this user may not use this method and path\n"),
        Outcome::TooLarge => {
            (StatusCode::PAYLOAD_TOO_LARGE, "the request body is over this address's limit\n")
        }
        Outcome::UpstreamError => {
            (StatusCode::BAD_GATEWAY, "the server behind this address did not answer\n")
        }
        Outcome::UpstreamTimeout => {
            (StatusCode::GATEWAY_TIMEOUT, "the server behind this address did not answer in time\n")
        }
        Outcome::Proxied | Outcome::Public | Outcome::Redirected => unreachable!("not a refusal"),
    };
    refusal(status, realm, message)
}

/// The path as a log field: bounded, whatever the client sent.
fn shown(path: &str) -> &str {
    match path.char_indices().nth(200) {
        Some((at, _)) => &path[..at],
        None => path,
    }
}

fn too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<LengthLimitError>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

async fn handle(State(state): State<Arc<RouteState>>, request: Request) -> Response {
    let route = &state.route;
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map_or("-".into(), |c| c.0.to_string());
    let refuse = |outcome: Outcome, user: Option<&str>| {
        state.metrics.count(&route.name, &method, outcome);
        tracing::warn!(
            route = %route.name,
            method = method_label(&method),
            path = shown(&path),
            %peer,
            user = user.unwrap_or("-"),
            reason = outcome.as_str(),
            "refused"
        );
        answer_for(outcome, &state.realm)
    };
    let outcome = match decide(route, &state.users, &method, &path, request.headers()) {
        Decision::Refuse(outcome, user) => return refuse(outcome, user.as_deref()),
        Decision::Redirect(root, _) => {
            state.metrics.count(&route.name, &method, Outcome::Redirected);
            return redirect(&root);
        }
        Decision::Forward(outcome, _) => outcome,
    };
    let (mut parts, body) = request.into_parts();
    let length = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|n| n > route.body_limit) {
        return refuse(Outcome::TooLarge, None);
    }
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::AUTHORIZATION);
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match Uri::builder()
        .scheme("http")
        .authority(route.upstream.to_string())
        .path_and_query(path_and_query)
        .build()
    {
        Ok(uri) => uri,
        Err(_) => return refuse(Outcome::BadPath, None),
    };
    let limit = usize::try_from(route.body_limit).unwrap_or(usize::MAX);
    let forwarded = Request::from_parts(parts, Limited::new(body, limit));
    let started = Instant::now();
    let answer = tokio::time::timeout(route.upstream_timeout, state.client.request(forwarded)).await;
    let response = match answer {
        Err(_) => return refuse(Outcome::UpstreamTimeout, None),
        Ok(Err(e)) if too_large(&e) => return refuse(Outcome::TooLarge, None),
        Ok(Err(e)) => {
            tracing::warn!(route = %route.name, error = %vigil_telemetry::error_chain(&e), "upstream");
            return refuse(Outcome::UpstreamError, None);
        }
        Ok(Ok(response)) => response,
    };
    state
        .metrics
        .upstream_seconds
        .get_or_create(&RouteLabels { route: route.name.clone() })
        .observe(started.elapsed().as_secs_f64());
    state.metrics.count(&route.name, &method, outcome);
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let cors: Vec<HeaderName> =
        parts.headers.keys().filter(|k| k.as_str().starts_with("access-control-")).cloned().collect();
    for name in cors {
        parts.headers.remove(name);
    }
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{auth::basic_header, config::Grant};

    fn route() -> Route {
        Route {
            name: "alertmanager".into(),
            port: 9093,
            upstream: "127.0.0.1:9093".parse().unwrap(),
            body_limit: 1 << 20,
            upstream_timeout: Duration::from_secs(30),
            public: vec!["/-/ready".into()],
            root: Some("/ui/".into()),
            grants: vec![
                Grant::all("vigil"),
                Grant { user: "otlp".into(), methods: vec!["POST".into()], paths: vec!["/v1/traces".into()] },
            ],
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn each_rule_in_its_order() {
        let users = Users::from_passwords([("vigil", "pw"), ("otlp", "pw2")]);
        let vigil = basic_header("vigil", "pw");
        let otlp = basic_header("otlp", "pw2");
        let d = |m: Method, path: &str, h: &[(&'static str, &str)]| {
            decide(&route(), &users, &m, path, &headers(h))
        };
        use Decision::*;
        assert_eq!(d(Method::GET, "/-/ready", &[]), Forward(Outcome::Public, None));
        assert_eq!(d(Method::HEAD, "/-/ready", &[]), Forward(Outcome::Public, None));
        assert_eq!(d(Method::POST, "/-/ready", &[]), Refuse(Outcome::Unauthenticated, None));
        assert_eq!(d(Method::GET, "/-/ready/", &[]), Refuse(Outcome::Unauthenticated, None));
        assert_eq!(
            d(Method::OPTIONS, "/-/ready", &[("authorization", &vigil)]),
            Refuse(Outcome::Preflight, None)
        );
        assert_eq!(d(Method::GET, "/api/../-/ready", &[]), Refuse(Outcome::BadPath, None));
        assert_eq!(d(Method::GET, "/v1%2ftraces", &[]), Refuse(Outcome::BadPath, None));
        assert_eq!(
            d(Method::POST, "/api/v2/silences", &[("authorization", &vigil)]),
            Forward(Outcome::Proxied, Some("vigil".into()))
        );
        assert_eq!(
            d(
                Method::POST,
                "/api/v2/silences",
                &[
                    ("authorization", &vigil),
                    ("origin", "http://evil.example"),
                    ("host", "172.29.0.130:9093")
                ]
            ),
            Refuse(Outcome::CrossOrigin, None)
        );
        assert_eq!(
            d(
                Method::DELETE,
                "/api/v2/silence/x",
                &[
                    ("authorization", &vigil),
                    ("origin", "http://172.29.0.130:9093"),
                    ("host", "172.29.0.130:9093")
                ]
            ),
            Forward(Outcome::Proxied, Some("vigil".into()))
        );
        // A read may come from anywhere: the answer carries no CORS header to let a page read it.
        assert_eq!(
            d(
                Method::GET,
                "/api/v2/silences",
                &[("authorization", &vigil), ("origin", "http://evil.example")]
            ),
            Forward(Outcome::Proxied, Some("vigil".into()))
        );
        assert_eq!(
            d(Method::POST, "/v1/traces", &[("authorization", &otlp)]),
            Forward(Outcome::Proxied, Some("otlp".into()))
        );
        assert_eq!(
            d(Method::POST, "/api/v2/silences", &[("authorization", &otlp)]),
            Refuse(Outcome::Forbidden, Some("otlp".into()))
        );
        assert_eq!(
            d(Method::GET, "/v1/traces", &[("authorization", &otlp)]),
            Refuse(Outcome::Forbidden, Some("otlp".into()))
        );
        assert_eq!(
            d(Method::GET, "/api/v2/silences", &[("authorization", &basic_header("vigil", "wrong"))]),
            Refuse(Outcome::Unauthenticated, None)
        );
        // The root leads to the UI, once the user is known and may read.
        assert_eq!(
            d(Method::GET, "/", &[("authorization", &vigil)]),
            Redirect("/ui/".into(), "vigil".into())
        );
        assert_eq!(
            d(Method::HEAD, "/", &[("authorization", &vigil)]),
            Redirect("/ui/".into(), "vigil".into())
        );
        assert_eq!(d(Method::GET, "/", &[]), Refuse(Outcome::Unauthenticated, None));
        assert_eq!(
            d(Method::GET, "/", &[("authorization", &otlp)]),
            Refuse(Outcome::Forbidden, Some("otlp".into()))
        );
        assert_eq!(
            d(Method::POST, "/", &[("authorization", &vigil)]),
            Forward(Outcome::Proxied, Some("vigil".into()))
        );
    }

    #[test]
    fn origins_compare_by_scheme_host_and_port() {
        assert!(same_origin("http://172.29.0.130:9093", Some("172.29.0.130:9093")));
        assert!(same_origin("http://Example.test", Some("example.test:80")));
        assert!(same_origin("http://[::1]:9093", Some("[::1]:9093")));
        assert!(!same_origin("http://172.29.0.130:9094", Some("172.29.0.130:9093")));
        assert!(!same_origin("https://172.29.0.130:9093", Some("172.29.0.130:9093")));
        assert!(!same_origin("null", Some("172.29.0.130:9093")));
        assert!(!same_origin("http://172.29.0.130:9093", None));
        assert!(!same_origin("ftp://172.29.0.130:9093", Some("172.29.0.130:9093")));
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn a_logged_path_is_bounded() {
        let long = "/".repeat(1000);
        assert_eq!(shown(&long).len(), 200);
        assert_eq!(shown("/é"), "/é");
    }
}
