//! The promtool unit tests of vigil's alerts (`promtool test rules`),
//! generated with the rules: for every alert a case that fires, one that
//! stays quiet, and one where a pod that is not the alert's source serves
//! the same series (under the labels Prometheus gives such a pod: its own
//! job and namespace, what it claimed as `exported_*`), which must not fire.

use std::collections::BTreeMap;

use serde::Serialize;

use super::rules::{Source, VIGIL_FILE, alerts};
use crate::prometheus::ANNOTATED_PODS_JOB;
use vigil_model::cluster::ScrapeLabels;

/// Its file name under `dashboards/rules/`.
pub const TESTS_FILE: &str = "vigil.rules.test.yml";

#[derive(Debug, Serialize)]
pub struct TestFile {
    rule_files: Vec<&'static str>,
    evaluation_interval: &'static str,
    pub(crate) tests: Vec<TestGroup>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TestGroup {
    name: String,
    interval: &'static str,
    pub(crate) input_series: Vec<InputSeries>,
    pub(crate) alert_rule_test: Vec<AlertTest>,
}

#[derive(Debug, Serialize)]
pub(crate) struct InputSeries {
    pub(crate) series: String,
    values: &'static str,
}

#[derive(Debug, Serialize)]
pub(crate) struct AlertTest {
    eval_time: &'static str,
    pub(crate) alertname: &'static str,
    pub(crate) exp_alerts: Vec<ExpectedAlert>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ExpectedAlert {
    exp_labels: BTreeMap<String, String>,
    exp_annotations: BTreeMap<String, String>,
}

/// Whose series a case feeds the rules.
#[derive(Clone, Copy)]
enum Origin {
    /// The alert's real source, under its target labels.
    Real(Source),
    /// A pod annotated for scraping in `namespace`, whose container
    /// `container` serves series labelled as `claims`'s.
    Impostor { claims: Source, namespace: &'static str, container: &'static str },
}

/// The labels Prometheus sets on every target of the annotated-pods job.
const POD_TARGET_LABELS: [&str; 6] =
    ["job", "instance", "kubernetes_namespace", "kubernetes_pod", "kubernetes_container", "kubernetes_node"];

impl Origin {
    /// The labels Prometheus stores on series with labels `own` from this origin.
    fn labels(self, cadvisor: &ScrapeLabels, own: &[(&str, &str)]) -> BTreeMap<String, String> {
        let own = own.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        match self {
            Origin::Real(source) => source.labels(cadvisor).into_iter().chain(own).collect(),
            Origin::Impostor { claims, namespace, container } => {
                // What Prometheus does without honor_labels: the target's
                // labels win, the pod's clashing ones become `exported_*`.
                let mut labels: BTreeMap<String, String> = claims
                    .labels(cadvisor)
                    .into_iter()
                    .chain(own)
                    .map(|(k, v)| {
                        if POD_TARGET_LABELS.contains(&k.as_str()) {
                            (format!("exported_{k}"), v)
                        } else {
                            (k, v)
                        }
                    })
                    .collect();
                labels.extend(
                    [
                        ("job", ANNOTATED_PODS_JOB),
                        ("kubernetes_namespace", namespace),
                        ("kubernetes_pod", "impostor"),
                        ("kubernetes_container", container),
                    ]
                    .map(|(k, v)| (k.to_owned(), v.to_owned())),
                );
                labels
            }
        }
    }
}

/// One alert's case: series sharing one label set (each with its values
/// every minute from 0m), when to look, and whether it fires then.
struct Case {
    alert: &'static str,
    name: &'static str,
    from: Origin,
    /// The series' own labels, besides their origin's.
    labels: &'static [(&'static str, &'static str)],
    /// Metric names and values.
    series: &'static [(&'static str, &'static str)],
    eval_time: &'static str,
    fires: bool,
    /// The labels the alert keeps (its expression may aggregate some away).
    kept: &'static [&'static str],
}

/// `{{ $labels.x }}` of an annotation, filled in the way Prometheus does.
pub(crate) fn expand(template: &str, labels: &BTreeMap<String, String>) -> String {
    let mut text = template.to_owned();
    while let Some(start) = text.find("{{ $labels.") {
        let Some(len) = text[start..].find(" }}") else { break };
        let name = &text[start + "{{ $labels.".len()..start + len];
        let value = labels.get(name).cloned().unwrap_or_default();
        text.replace_range(start..start + len + 3, &value);
    }
    text
}

/// A pod in `default`, where anyone with a namespace's worth of rights runs
/// pods, claiming to be `claims`.
const fn in_default(claims: Source, container: &'static str) -> Origin {
    Origin::Impostor { claims, namespace: "default", container }
}

/// A filesystem's available and total bytes: 8%, 4% and 12% left.
const LEFT_8: &[(&str, &str)] =
    &[("node_filesystem_avail_bytes", "8x10"), ("node_filesystem_size_bytes", "100x10")];
const LEFT_4: &[(&str, &str)] =
    &[("node_filesystem_avail_bytes", "4x10"), ("node_filesystem_size_bytes", "100x10")];
const LEFT_12: &[(&str, &str)] =
    &[("node_filesystem_avail_bytes", "12x10"), ("node_filesystem_size_bytes", "100x10")];

/// Every case, firing, quiet and impostor, for every alert.
fn cases() -> Vec<Case> {
    use Origin::Real;
    use Source::*;
    let ready = &[("condition", "Ready"), ("status", "true"), ("node", "vigil-worker")];
    let check = &[("check", "cluster-dns"), ("kubernetes_pod", "web-1")];
    let node = &[("kubernetes_node", "vigil-worker")];
    let nodefs = &[("kubernetes_node", "vigil-worker"), ("mountpoint", "/var/lib/kubelet")];
    let itself = &[("instance", "localhost:9090")];
    let not_rescheduled = &[("kind", "not-rescheduled")];
    let expired = &[("sink", "webhook"), ("outcome", "expired")];
    let pending = &[("sink", "webhook")];
    let all: &[&str] = &["*"];
    // 650 MiB of a 700 MiB limit (93%), then 550 MiB (79%); bytes.
    let tsdb_near = &[
        ("prometheus_tsdb_storage_blocks_bytes", "629145600x20"),
        ("prometheus_tsdb_wal_storage_size_bytes", "41943040x20"),
        ("prometheus_tsdb_head_chunks_storage_size_bytes", "10485760x20"),
        ("prometheus_tsdb_retention_limit_bytes", "734003200x20"),
    ];
    let tsdb_under = &[
        ("prometheus_tsdb_storage_blocks_bytes", "524288000x20"),
        ("prometheus_tsdb_wal_storage_size_bytes", "41943040x20"),
        ("prometheus_tsdb_head_chunks_storage_size_bytes", "10485760x20"),
        ("prometheus_tsdb_retention_limit_bytes", "734003200x20"),
    ];
    let tsdb_unlimited = &[
        ("prometheus_tsdb_storage_blocks_bytes", "629145600x20"),
        ("prometheus_tsdb_wal_storage_size_bytes", "41943040x20"),
        ("prometheus_tsdb_head_chunks_storage_size_bytes", "10485760x20"),
        ("prometheus_tsdb_retention_limit_bytes", "0x20"),
    ];
    // Values are one a minute from 0m. Firing cases hold past `for`; quiet
    // cases either cleared before `for` passed, are still pending at the
    // evaluation (a missing or shorter `for` would make them fire), stay
    // under the threshold, or come from a pod that is not the source.
    #[rustfmt::skip]
    let cases = vec![
        Case { alert: "VigilNodeNotReady", name: "a node NotReady from 2m, seen at 5m", from: Real(KubeStateMetrics), labels: ready, series: &[("kube_node_status_condition", "1 1 0 0 0 0")], eval_time: "5m", fires: true, kept: all },
        Case { alert: "VigilNodeNotReady", name: "a node NotReady from 2m, still pending at 2m30s", from: Real(KubeStateMetrics), labels: ready, series: &[("kube_node_status_condition", "1 1 0 0 0 0")], eval_time: "2m30s", fires: false, kept: all },
        Case { alert: "VigilNodeNotReady", name: "a node NotReady at 2m, Ready again at 3m", from: Real(KubeStateMetrics), labels: ready, series: &[("kube_node_status_condition", "1 1 0 1 1 1")], eval_time: "5m", fires: false, kept: all },
        Case { alert: "VigilNodeNotReady", name: "a pod in default serving kube-state-metrics' series", from: in_default(KubeStateMetrics, "impostor"), labels: ready, series: &[("kube_node_status_condition", "0 0 0 0 0 0")], eval_time: "5m", fires: false, kept: all },
        Case { alert: "VigilProbeFailing", name: "a check failing from 1m, seen at 4m", from: Real(ProbeServer), labels: check, series: &[("probe_check_healthy", "1 0 0 0 0")], eval_time: "4m", fires: true, kept: all },
        Case { alert: "VigilProbeFailing", name: "a check failing from 1m, still pending at 1m30s", from: Real(ProbeServer), labels: check, series: &[("probe_check_healthy", "1 0 0 0 0")], eval_time: "1m30s", fires: false, kept: all },
        Case { alert: "VigilProbeFailing", name: "a check failing at 1m only", from: Real(ProbeServer), labels: check, series: &[("probe_check_healthy", "1 0 1 1 1")], eval_time: "4m", fires: false, kept: all },
        Case { alert: "VigilProbeFailing", name: "a probe-server container outside web's namespace", from: Origin::Impostor { claims: ProbeServer, namespace: "tenant", container: "probe-server" }, labels: check, series: &[("probe_check_healthy", "0 0 0 0 0")], eval_time: "4m", fires: false, kept: all },
        Case { alert: "VigilNodeExporterDown", name: "node-exporter unreachable from 1m, seen at 4m", from: Real(NodeExporter), labels: node, series: &[("up", "1 0 0 0 0")], eval_time: "4m", fires: true, kept: all },
        Case { alert: "VigilNodeExporterDown", name: "node-exporter unreachable from 1m, still pending at 2m30s", from: Real(NodeExporter), labels: node, series: &[("up", "1 0 0 0 0")], eval_time: "2m30s", fires: false, kept: all },
        Case { alert: "VigilNodeExporterDown", name: "node-exporter scraped", from: Real(NodeExporter), labels: node, series: &[("up", "1 1 1 1 1")], eval_time: "4m", fires: false, kept: all },
        Case { alert: "VigilNodeExporterDown", name: "a pod in default claiming node-exporter's failed collection", from: in_default(NodeExporter, "impostor"), labels: node, series: &[("vigil_node_exporter_scrape_success", "0 0 0 0 0")], eval_time: "4m", fires: false, kept: all },
        Case { alert: "VigilNodeFilesystemSpaceLow", name: "8% left from 0m, seen at 7m", from: Real(NodeExporter), labels: nodefs, series: LEFT_8, eval_time: "7m", fires: true, kept: all },
        Case { alert: "VigilNodeFilesystemSpaceLow", name: "8% left from 0m, still pending at 3m", from: Real(NodeExporter), labels: nodefs, series: LEFT_8, eval_time: "3m", fires: false, kept: all },
        Case { alert: "VigilNodeFilesystemSpaceLow", name: "12% left", from: Real(NodeExporter), labels: nodefs, series: LEFT_12, eval_time: "7m", fires: false, kept: all },
        Case { alert: "VigilNodeFilesystemSpaceLow", name: "a pod in default claiming a full filesystem", from: in_default(NodeExporter, "impostor"), labels: nodefs, series: LEFT_4, eval_time: "7m", fires: false, kept: all },
        Case { alert: "VigilNodeFilesystemAlmostFull", name: "4% left from 0m, seen at 7m", from: Real(NodeExporter), labels: nodefs, series: LEFT_4, eval_time: "7m", fires: true, kept: all },
        Case { alert: "VigilNodeFilesystemAlmostFull", name: "4% left from 0m, still pending at 3m", from: Real(NodeExporter), labels: nodefs, series: LEFT_4, eval_time: "3m", fires: false, kept: all },
        Case { alert: "VigilNodeFilesystemAlmostFull", name: "8% left", from: Real(NodeExporter), labels: nodefs, series: LEFT_8, eval_time: "7m", fires: false, kept: all },
        Case { alert: "VigilNodeFilesystemAlmostFull", name: "a pod in default claiming a full filesystem", from: in_default(NodeExporter, "impostor"), labels: nodefs, series: LEFT_4, eval_time: "7m", fires: false, kept: all },
        Case { alert: "VigilPrometheusStorageNearRetentionLimit", name: "93% of the retention size from 0m, seen at 18m", from: Real(Prometheus), labels: itself, series: tsdb_near, eval_time: "18m", fires: true, kept: all },
        Case { alert: "VigilPrometheusStorageNearRetentionLimit", name: "93% of the retention size from 0m, still pending at 10m", from: Real(Prometheus), labels: itself, series: tsdb_near, eval_time: "10m", fires: false, kept: all },
        Case { alert: "VigilPrometheusStorageNearRetentionLimit", name: "79% of the retention size", from: Real(Prometheus), labels: itself, series: tsdb_under, eval_time: "18m", fires: false, kept: all },
        Case { alert: "VigilPrometheusStorageNearRetentionLimit", name: "no retention size configured", from: Real(Prometheus), labels: itself, series: tsdb_unlimited, eval_time: "18m", fires: false, kept: all },
        Case { alert: "VigilPrometheusStorageNearRetentionLimit", name: "a pod in default claiming Prometheus's TSDB", from: in_default(Prometheus, "impostor"), labels: itself, series: tsdb_near, eval_time: "18m", fires: false, kept: all },
        Case { alert: "VigilPrometheusWALCorrupted", name: "a corruption at 2m", from: Real(Prometheus), labels: itself, series: &[("prometheus_tsdb_wal_corruptions_total", "0 0 1 1")], eval_time: "3m", fires: true, kept: all },
        Case { alert: "VigilPrometheusWALCorrupted", name: "no corruption", from: Real(Prometheus), labels: itself, series: &[("prometheus_tsdb_wal_corruptions_total", "0 0 0 0")], eval_time: "3m", fires: false, kept: all },
        Case { alert: "VigilPrometheusWALCorrupted", name: "a corruption at 1m, two hours before", from: Real(Prometheus), labels: itself, series: &[("prometheus_tsdb_wal_corruptions_total", "0 1 1x125")], eval_time: "125m", fires: false, kept: all },
        Case { alert: "VigilPrometheusWALCorrupted", name: "a pod in default claiming a corruption", from: in_default(Prometheus, "impostor"), labels: itself, series: &[("prometheus_tsdb_wal_corruptions_total", "0 0 1 1")], eval_time: "3m", fires: false, kept: all },
        Case { alert: "VigilRescheduleFailed", name: "a not-rescheduled verdict at 2m", from: Real(Alerter), labels: not_rescheduled, series: &[("vigil_alerter_transitions_total", "0 0 1 1")], eval_time: "3m", fires: true, kept: all },
        Case { alert: "VigilRescheduleFailed", name: "a not-rescheduled verdict at 1m, 24 minutes before", from: Real(Alerter), labels: not_rescheduled, series: &[("vigil_alerter_transitions_total", "0 1 1x25")], eval_time: "25m", fires: false, kept: all },
        Case { alert: "VigilRescheduleFailed", name: "an alerter container in default", from: in_default(Alerter, "alerter"), labels: not_rescheduled, series: &[("vigil_alerter_transitions_total", "0 0 1 1")], eval_time: "3m", fires: false, kept: all },
        Case { alert: "VigilNotificationUndelivered", name: "a notice expired at 2m", from: Real(Alerter), labels: expired, series: &[("vigil_alerter_deliveries_total", "0 0 1 1 1 1 1 1 1")], eval_time: "8m", fires: true, kept: &["sink"] },
        Case { alert: "VigilNotificationUndelivered", name: "a notice expired at 2m, still pending at 4m", from: Real(Alerter), labels: expired, series: &[("vigil_alerter_deliveries_total", "0 0 1 1 1 1 1 1 1")], eval_time: "4m", fires: false, kept: &["sink"] },
        Case { alert: "VigilNotificationUndelivered", name: "a notice pending at 1m only, then delivered", from: Real(Alerter), labels: pending, series: &[("vigil_alerter_pending_deliveries", "0 1 0 0 0 0 0 0 0")], eval_time: "8m", fires: false, kept: &["sink"] },
        Case { alert: "VigilNotificationUndelivered", name: "an alerter container in default with a pending notice", from: in_default(Alerter, "alerter"), labels: pending, series: &[("vigil_alerter_pending_deliveries", "1 1 1 1 1 1 1 1 1")], eval_time: "8m", fires: false, kept: &["sink"] },
    ];
    cases
}

/// The test file for the rules written with `cadvisor`'s labels.
pub fn tests(cadvisor: &ScrapeLabels) -> TestFile {
    let rules = alerts(cadvisor).rules;
    let tests = cases()
        .into_iter()
        .map(|case| {
            let labels = case.from.labels(cadvisor, case.labels);
            let matchers = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(", ");
            let input_series = case
                .series
                .iter()
                .map(|(metric, values)| InputSeries { series: format!("{metric}{{{matchers}}}"), values })
                .collect();
            let rule = rules.iter().find(|r| r.name() == case.alert).expect("an alert of the file");
            let exp_alerts = if case.fires {
                let mut alert_labels: BTreeMap<String, String> = labels
                    .iter()
                    .filter(|(k, _)| case.kept == ["*"] || case.kept.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                alert_labels.extend(rule.labels.clone());
                let exp_annotations =
                    rule.annotations.iter().map(|(k, v)| (k.clone(), expand(v, &alert_labels))).collect();
                vec![ExpectedAlert { exp_labels: alert_labels, exp_annotations }]
            } else {
                vec![]
            };
            TestGroup {
                name: format!("{}: {}", case.alert, case.name),
                interval: "1m",
                input_series,
                alert_rule_test: vec![AlertTest {
                    eval_time: case.eval_time,
                    alertname: case.alert,
                    exp_alerts,
                }],
            }
        })
        .collect();
    TestFile { rule_files: vec![VIGIL_FILE], evaluation_interval: "1m", tests }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_has_a_firing_a_quiet_and_an_impostor_case() {
        let cadvisor = ScrapeLabels::default();
        let file = tests(&cadvisor);
        for rule in alerts(&cadvisor).rules {
            let groups: Vec<&TestGroup> =
                file.tests.iter().filter(|t| t.alert_rule_test[0].alertname == rule.name()).collect();
            let fires = |g: &&TestGroup| !g.alert_rule_test[0].exp_alerts.is_empty();
            assert!(groups.iter().any(fires), "{} never fires", rule.name());
            assert!(groups.iter().any(|g| !fires(g)), "{} has no quiet case", rule.name());
            // A pod that is not the source: quiet, though its series are the firing case's.
            let impostor = groups
                .iter()
                .find(|g| g.input_series.iter().all(|s| s.series.contains("kubernetes_pod=\"impostor\"")))
                .unwrap_or_else(|| panic!("{} has no case of a pod passing for its source", rule.name()));
            assert!(!fires(impostor), "{}: {}", rule.name(), impostor.name);
        }
    }

    #[test]
    fn an_impostor_keeps_its_own_job_and_namespace_and_exports_its_claims() {
        let labels = in_default(Source::KubeStateMetrics, "x").labels(&ScrapeLabels::default(), &[]);
        assert_eq!(labels["job"], ANNOTATED_PODS_JOB);
        assert_eq!(labels["exported_job"], "kube-state-metrics");
        assert_eq!(labels["kubernetes_namespace"], "default");
        let exporter = in_default(Source::NodeExporter, "x")
            .labels(&ScrapeLabels::default(), &[("kubernetes_node", "n")]);
        // Not a target label of the annotated pods' job: it stays as the pod wrote it.
        assert_eq!(exporter["metrics_path"], "/metrics/cadvisor");
        assert_eq!(exporter["exported_kubernetes_container"], "node-exporter");
        assert_eq!(exporter["exported_kubernetes_node"], "n");
        assert!(!exporter.contains_key("kubernetes_node"));
    }

    #[test]
    fn annotations_expand_labels() {
        let labels = BTreeMap::from([("node".to_owned(), "vigil-worker".to_owned())]);
        assert_eq!(
            expand("Node {{ $labels.node }} is {{ $labels.x }}down", &labels),
            "Node vigil-worker is down"
        );
    }
}
