//! Links into the log store's web UI (VictoriaLogs') for an incident: the
//! lines of every pod on the node that went down, and of the workloads it
//! held wherever they run now (their rescheduled pods), over the incident's
//! window. The alerter's notices and `vigil drill`'s report carry them.

/// At most this many workloads are named in a query; the node's own lines
/// are always in it. Keeps a link short enough for chat clients and
/// browsers (a few KiB) when a node held many owners.
pub const MAX_WORKLOADS: usize = 10;

/// How far before the first sign of trouble a link reaches: the node's last
/// lines before it stopped.
pub const BEFORE: std::time::Duration = std::time::Duration::from_secs(60);

/// How far past a notice a link reaches while its incident is open: the
/// rescheduled pods' first lines, which come after the notice.
pub const AFTER_OPEN: std::time::Duration = std::time::Duration::from_secs(600);

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// A LogsQL query for the lines of every pod on `node` and of its own
/// journal (its kubelet's and containerd's entries, whose `_HOSTNAME` is
/// the node's), and of the pods of each `(namespace, name)` workload (those
/// whose name starts with `name-`, as a Deployment's and a StatefulSet's
/// pods are named) wherever they run.
pub fn incident_query<'a>(node: &str, workloads: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut query = format!("kubernetes.pod_node_name:{node} OR _HOSTNAME:{node}", node = quoted(node));
    for (namespace, name) in workloads.into_iter().take(MAX_WORKLOADS) {
        query += &format!(
            " OR (kubernetes.pod_namespace:{} AND kubernetes.pod_name:={}*)",
            quoted(namespace),
            quoted(&format!("{name}-"))
        );
    }
    query
}

/// The UI's page showing `query` over the `range_seconds` before `end`
/// (RFC 3339), given the UI's URL as `vigil up` prints it. The parameters
/// are the UI's own (`g0.end_input`, `g0.range_input`; `relative_time`
/// `none` so it does not slide to now).
pub fn ui_link(ui_url: &str, query: &str, end: &str, range_seconds: u64) -> String {
    let range = format!("{range_seconds}s");
    let pairs =
        [("query", query), ("g0.end_input", end), ("g0.range_input", &range), ("g0.relative_time", "none")];
    let encoded =
        pairs.iter().map(|(k, v)| format!("{k}={}", crate::percent_encode(v))).collect::<Vec<_>>().join("&");
    format!("{ui_url}#/?{encoded}")
}

/// What a link holds, read back from it: the query, the window's end, its
/// length in seconds. `None` for a link [`ui_link`] did not make.
pub fn parse_link(link: &str) -> Option<(String, String, u64)> {
    let (_, fragment) = link.split_once("#/?")?;
    let mut query = None;
    let mut end = None;
    let mut range = None;
    for pair in fragment.split('&') {
        let (key, value) = pair.split_once('=')?;
        let value = percent_encoding::percent_decode_str(value).decode_utf8().ok()?.into_owned();
        match key {
            "query" => query = Some(value),
            "g0.end_input" => end = Some(value),
            "g0.range_input" => range = value.strip_suffix('s').and_then(|s| s.parse().ok()),
            _ => {}
        }
    }
    Some((query?, end?, range?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incident_link_selects_the_node_and_its_workloads_over_the_window() {
        let query = incident_query("vigil-worker", [("default", "web"), ("monitoring", "prometheus")]);
        assert_eq!(
            query,
            r#"kubernetes.pod_node_name:"vigil-worker" OR _HOSTNAME:"vigil-worker" OR (kubernetes.pod_namespace:"default" AND kubernetes.pod_name:="web-"*) OR (kubernetes.pod_namespace:"monitoring" AND kubernetes.pod_name:="prometheus-"*)"#
        );
        let link = ui_link("http://10.0.0.1:9428/select/vmui/", &query, "2026-01-01T00:10:00Z", 600);
        assert!(
            link.starts_with("http://10.0.0.1:9428/select/vmui/#/?query=kubernetes.pod_node_name%3A%22vigil-worker%22%20OR%20"),
            "{link}"
        );
        assert!(
            link.ends_with(
                "&g0.end_input=2026-01-01T00%3A10%3A00Z&g0.range_input=600s&g0.relative_time=none"
            ),
            "{link}"
        );
        assert_eq!(parse_link(&link), Some((query, "2026-01-01T00:10:00Z".into(), 600)));
        assert_eq!(parse_link("http://x/#/?query=a"), None);
    }

    #[test]
    fn names_are_quoted_and_the_workloads_bounded() {
        let query = incident_query("n\" OR *", [("a\"b", "c")]);
        assert!(query.starts_with(r#"kubernetes.pod_node_name:"n\" OR *""#), "{query}");
        assert!(query.contains(r#"kubernetes.pod_namespace:"a\"b""#), "{query}");
        let many: Vec<(String, String)> = (0..50).map(|i| ("ns".to_owned(), format!("w{i}"))).collect();
        let query = incident_query("n", many.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        assert_eq!(query.matches(" OR ").count(), 1 + MAX_WORKLOADS);
    }
}
