//! What of a request may become a metric label, a span name or a log field:
//! only values from a fixed set, or bounded in length. Anything a client
//! types (`curl -X FOO1`, a 60 KiB path) would otherwise become a series
//! that lives as long as the process, or a span name per request.

/// The request's method as OpenTelemetry's HTTP conventions name it: one of
/// the methods HTTP defines, or `_OTHER` for any other token. Static, so a
/// label costs no allocation.
pub fn method(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "_OTHER",
    }
}

/// Longest request path kept in a log line or span: room for any route
/// here and an id or two; a longer one is cut.
pub const MAX_PATH_BYTES: usize = 128;

/// `path` cut to [`MAX_PATH_BYTES`] (at a character boundary).
pub fn path(path: &str) -> &str {
    if path.len() <= MAX_PATH_BYTES {
        return path;
    }
    let mut end = MAX_PATH_BYTES;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_http_share_one_value() {
        let method_of = |token: &str| method(&http::Method::from_bytes(token.as_bytes()).unwrap());
        assert_eq!(method_of("FOO1"), "_OTHER");
        assert_eq!(method_of("get"), "_OTHER", "methods are case-sensitive");
        assert_eq!(method_of("PROPFIND"), "_OTHER");
        for known in ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] {
            assert_eq!(method_of(known), known);
        }
    }

    #[test]
    fn long_paths_are_cut() {
        assert_eq!(path("/metrics"), "/metrics");
        let long = format!("/{}", "a".repeat(10_000));
        assert_eq!(path(&long).len(), MAX_PATH_BYTES);
        let multibyte = format!("/{}", "é".repeat(100));
        assert!(path(&multibyte).len() <= MAX_PATH_BYTES && multibyte.starts_with(path(&multibyte)));
    }
}
