//! Prometheus rule files, typed: the upstream recording rules the
//! kubernetes-mixin's compute-resources dashboards read (as kube-prometheus
//! renders them, with the cAdvisor selector the cluster is configured
//! with), and vigil's own alerting and recording rules. The in-cluster
//! Prometheus loads them from a ConfigMap; `dashboards/rules/` holds them,
//! for the default cAdvisor labels, for a Prometheus of your own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::ScrapeLabels;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleFile {
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    pub expr: String,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    fn record(name: &str, expr: String) -> Self {
        Rule {
            record: Some(name.into()),
            alert: None,
            expr,
            for_: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// Its name, recorded or alerting.
    pub fn name(&self) -> &str {
        self.record.as_deref().or(self.alert.as_deref()).unwrap_or_default()
    }
}

/// kube-state-metrics's scrape job, as the dashboards select it.
pub const KSM: &str = r#"job="kube-state-metrics""#;

/// Where the runbooks are, relative to the repository; each alert links a section.
pub const RUNBOOKS: &str = "docs/runbooks.md";

/// The file names under `dashboards/rules/` and in the ConfigMap.
pub const UPSTREAM_FILE: &str = "kubernetes-mixin.rules.yml";
pub const VIGIL_FILE: &str = "vigil.rules.yml";

/// The kubernetes-mixin's recording rules that its Pod, Namespace and Node
/// compute-resources dashboards read (groups `k8s.rules.*` and
/// `node.rules`, kube-prometheus's rendering), written with `cadvisor`'s
/// labels for the cAdvisor selector.
pub fn upstream(cadvisor: &ScrapeLabels) -> RuleFile {
    let c = cadvisor.selector();
    let pod_node = "topk by (cluster, namespace, pod) (1, max by (cluster, namespace, pod, node) (kube_pod_info{node!=\"\"}))";
    let with_node = |series: &str| {
        format!("{series}{{{c}, image!=\"\"}} * on (cluster, namespace, pod) group_left(node) {pod_node}")
    };
    let active =
        r#"max by (namespace, pod, cluster) ((kube_pod_status_phase{phase=~"Pending|Running"} == 1))"#;
    let per_pod = |kind: &str, resource: &str| {
        format!(
            "kube_pod_container_resource_{kind}{{resource=\"{resource}\", {KSM}}} * on (namespace, pod, cluster) group_left() {active}"
        )
    };
    let per_namespace = |kind: &str, resource: &str| {
        format!(
            "sum by (namespace, cluster) (sum by (namespace, pod, cluster) (max by (namespace, pod, container, cluster) (kube_pod_container_resource_{kind}{{resource=\"{resource}\", {KSM}}}) * on (namespace, pod, cluster) group_left() {active}))"
        )
    };
    let mut resources = vec![];
    for (resource, metric) in [("memory", "memory"), ("cpu", "cpu")] {
        for kind in ["requests", "limits"] {
            resources.push(Group {
                name: format!("k8s.rules.container_{metric}_{kind}"),
                rules: vec![
                    Rule::record(
                        &format!("cluster:namespace:pod_{metric}:active:kube_pod_container_resource_{kind}"),
                        per_pod(kind, resource),
                    ),
                    Rule::record(
                        &format!("namespace_{metric}:kube_pod_container_resource_{kind}:sum"),
                        per_namespace(kind, resource),
                    ),
                ],
            });
        }
    }
    let mut groups = vec![Group {
        name: "k8s.rules.container_cpu_usage_seconds_total".into(),
        rules: vec![Rule::record(
            "node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m",
            format!(
                "sum by (cluster, namespace, pod, container) (rate(container_cpu_usage_seconds_total{{{c}, image!=\"\"}}[5m])) * on (cluster, namespace, pod) group_left(node) {pod_node}"
            ),
        )],
    }];
    for series in ["working_set_bytes", "rss", "cache", "swap"] {
        let metric = format!("container_memory_{series}");
        groups.push(Group {
            name: format!("k8s.rules.{metric}"),
            rules: vec![Rule::record(&format!("node_namespace_pod_container:{metric}"), with_node(&metric))],
        });
    }
    groups.extend(resources);
    groups.push(Group {
        name: "node.rules".into(),
        rules: vec![Rule::record(
            "node_namespace_pod:kube_pod_info:",
            format!(
                "topk by (cluster, namespace, pod) (1, max by (cluster, node, namespace, pod) (label_replace(kube_pod_info{{{KSM}, node!=\"\"}}, \"pod\", \"$1\", \"pod\", \"(.*)\")))"
            ),
        )],
    });
    RuleFile { groups }
}

/// One alert: its name, expression, how long it must hold, severity, and
/// what it tells the person paged. The runbook section is the alert's name
/// in lower case (a Markdown heading's anchor).
struct Alert {
    name: &'static str,
    expr: String,
    for_: Option<&'static str>,
    severity: &'static str,
    summary: &'static str,
    description: &'static str,
}

impl Alert {
    fn rule(self) -> Rule {
        Rule {
            record: None,
            alert: Some(self.name.into()),
            expr: self.expr,
            for_: self.for_.map(str::to_owned),
            labels: BTreeMap::from([("severity".into(), self.severity.into())]),
            annotations: BTreeMap::from([
                ("summary".into(), self.summary.into()),
                ("description".into(), self.description.into()),
                ("runbook_url".into(), format!("{RUNBOOKS}#{}", self.name.to_lowercase())),
            ]),
        }
    }
}

/// vigil's recording rules, named `level:metric:operations`: what the
/// dashboards would otherwise compute on every refresh.
pub fn recording(cadvisor: &ScrapeLabels) -> Group {
    let c = cadvisor.selector();
    Group {
        name: "vigil.records".into(),
        rules: vec![
            Rule::record(
                "node_namespace_pod_container:container_cpu_usage_seconds:rate1m",
                format!(
                    "sum by (node, namespace, pod, container) (rate(container_cpu_usage_seconds_total{{{c}, image!=\"\"}}[1m]))"
                ),
            ),
            Rule::record(
                "node:container_memory_working_set_bytes:sum",
                format!("sum by (node) (container_memory_working_set_bytes{{{c}, image!=\"\"}})"),
            ),
            Rule::record(
                "route_status:web_http_requests:rate1m",
                "sum by (route, status) (rate(web_http_requests_total[1m]))".into(),
            ),
            Rule::record(
                "le_route:web_http_request_duration_seconds_bucket:rate1m",
                "sum by (le, route) (rate(web_http_request_duration_seconds_bucket[1m]))".into(),
            ),
            Rule::record(
                "check:probe_check_duration_seconds_bucket:rate1m",
                "sum by (le, check) (rate(probe_check_duration_seconds_bucket[1m]))".into(),
            ),
            Rule::record(
                "sink_outcome:vigil_alerter_deliveries:increase1h",
                "sum by (sink, outcome) (increase(vigil_alerter_deliveries_total[1h]))".into(),
            ),
        ],
    }
}

/// vigil's alerts: the cluster's state (kube-state-metrics), the probes,
/// node-exporter's scrapes and the alerter's own outcomes.
pub fn alerts(cadvisor: &ScrapeLabels) -> Group {
    let exporter = format!("{}, kubernetes_container=\"node-exporter\"", cadvisor.selector());
    let alerts = [
        Alert {
            name: "VigilNodeNotReady",
            expr: format!(r#"kube_node_status_condition{{{KSM}, condition="Ready", status="true"}} == 0"#),
            for_: Some("1m"),
            severity: "critical",
            summary: "Node {{ $labels.node }} is not Ready",
            description: "The Ready condition of {{ $labels.node }} has not been True for a minute: its kubelet stopped posting status, or reports a failing check. Its pods are evicted once the not-ready toleration passes.",
        },
        Alert {
            name: "VigilProbeFailing",
            expr: "probe_check_healthy == 0".into(),
            for_: Some("1m"),
            severity: "warning",
            summary: "Check {{ $labels.check }} of pod {{ $labels.kubernetes_pod }} is failing",
            description: "probe-server in {{ $labels.kubernetes_namespace }}/{{ $labels.kubernetes_pod }} has found check {{ $labels.check }} failing for a minute past its thresholds: the pod is out of its Service (a dependency), or about to be restarted (the workload).",
        },
        Alert {
            name: "VigilNodeExporterDown",
            expr: format!(
                "up{{{exporter}}} == 0 or vigil_node_exporter_scrape_success{{{exporter}}} == 0"
            ),
            for_: Some("2m"),
            severity: "warning",
            summary: "node-exporter on {{ $labels.kubernetes_node }} is not collecting",
            description: "Prometheus cannot scrape node-exporter on {{ $labels.kubernetes_node }}, or one of its collectors has failed, for two minutes: that node's container metrics are missing from the dashboards.",
        },
        Alert {
            name: "VigilRescheduleFailed",
            expr: r#"increase(vigil_alerter_transitions_total{kind="not-rescheduled"}[15m]) > 0"#.into(),
            for_: None,
            severity: "critical",
            summary: "Pods of a dead node were not rescheduled",
            description: "The alerter found owners short of Ready replicas past the deadline after a node went down. `kubectl get nodeincidents` names the node, each owner and why (unschedulable, a volume bound to the dead node, an image missing, crash looping, a StatefulSet pod stuck terminating).",
        },
        Alert {
            name: "VigilNotificationUndelivered",
            expr: r#"sum by (sink) (increase(vigil_alerter_deliveries_total{outcome=~"expired|rejected"}[15m])) > 0 or max by (sink) (vigil_alerter_pending_deliveries) > 0"#.into(),
            for_: Some("5m"),
            severity: "critical",
            summary: "Notices to sink {{ $labels.sink }} are not being delivered",
            description: "The alerter has notices for {{ $labels.sink }} that expired or were refused, or that have waited five minutes: the receiver is down, slow or refuses the request. Its log names each attempt's error.",
        },
    ];
    Group { name: "vigil.alerts".into(), rules: alerts.into_iter().map(Alert::rule).collect() }
}

/// vigil's rule file: recording rules, then alerts.
pub fn vigil(cadvisor: &ScrapeLabels) -> RuleFile {
    RuleFile { groups: vec![recording(cadvisor), alerts(cadvisor)] }
}

/// Every rule file by name, as YAML.
pub fn files(cadvisor: &ScrapeLabels) -> Vec<(&'static str, String)> {
    let yaml = |file: &RuleFile| serde_yaml::to_string(file).expect("serializes");
    vec![(UPSTREAM_FILE, yaml(&upstream(cadvisor))), (VIGIL_FILE, yaml(&vigil(cadvisor)))]
}

/// The promtool unit tests of vigil's alerts (`promtool test rules`).
pub const TESTS_FILE: &str = "vigil.rules.test.yml";

#[derive(Debug, Serialize)]
pub struct TestFile {
    rule_files: Vec<&'static str>,
    evaluation_interval: &'static str,
    tests: Vec<TestGroup>,
}

#[derive(Debug, Serialize)]
struct TestGroup {
    name: String,
    interval: &'static str,
    input_series: Vec<InputSeries>,
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Debug, Serialize)]
struct InputSeries {
    series: String,
    values: &'static str,
}

#[derive(Debug, Serialize)]
struct AlertTest {
    eval_time: &'static str,
    alertname: &'static str,
    exp_alerts: Vec<ExpectedAlert>,
}

#[derive(Debug, Serialize)]
struct ExpectedAlert {
    exp_labels: BTreeMap<String, String>,
    exp_annotations: BTreeMap<String, String>,
}

/// One alert's case: a series (labels and values every minute), when to
/// look, and whether it fires then.
struct Case {
    alert: &'static str,
    name: &'static str,
    metric: &'static str,
    labels: &'static [(&'static str, &'static str)],
    values: &'static str,
    eval_time: &'static str,
    fires: bool,
    /// The labels the alert keeps (its expression may aggregate some away).
    kept: &'static [&'static str],
}

/// `{{ $labels.x }}` of an annotation, filled in the way Prometheus does.
fn expand(template: &str, labels: &BTreeMap<String, String>) -> String {
    let mut text = template.to_owned();
    while let Some(start) = text.find("{{ $labels.") {
        let Some(len) = text[start..].find(" }}") else { break };
        let name = &text[start + "{{ $labels.".len()..start + len];
        let value = labels.get(name).cloned().unwrap_or_default();
        text.replace_range(start..start + len + 3, &value);
    }
    text
}

/// A firing and a quiet case for every alert.
pub fn tests(cadvisor: &ScrapeLabels) -> TestFile {
    let exporter: Vec<(String, String)> = cadvisor
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain([("kubernetes_container".into(), "node-exporter".into())])
        .collect();
    let ready = &[
        ("job", "kube-state-metrics"),
        ("condition", "Ready"),
        ("status", "true"),
        ("node", "vigil-worker"),
    ];
    let check = &[("check", "cluster-dns"), ("kubernetes_namespace", "default"), ("kubernetes_pod", "web-1")];
    let node = &[("kubernetes_node", "vigil-worker")];
    let not_rescheduled = &[("kind", "not-rescheduled")];
    let expired = &[("sink", "webhook"), ("outcome", "expired")];
    let pending = &[("sink", "webhook")];
    let all: &[&str] = &["*"];
    // Values are one a minute from 0m. Firing cases hold past `for`; quiet
    // cases either cleared before `for` passed or are still pending at the
    // evaluation (a missing or shorter `for` would make them fire).
    #[rustfmt::skip]
    let cases = [
        Case { alert: "VigilNodeNotReady", name: "a node NotReady from 2m, seen at 5m", metric: "kube_node_status_condition", labels: ready, values: "1 1 0 0 0 0", eval_time: "5m", fires: true, kept: all },
        Case { alert: "VigilNodeNotReady", name: "a node NotReady from 2m, still pending at 2m30s", metric: "kube_node_status_condition", labels: ready, values: "1 1 0 0 0 0", eval_time: "2m30s", fires: false, kept: all },
        Case { alert: "VigilNodeNotReady", name: "a node NotReady at 2m only, Ready again at 3m", metric: "kube_node_status_condition", labels: ready, values: "1 1 0 1 1 1", eval_time: "5m", fires: false, kept: all },
        Case { alert: "VigilProbeFailing", name: "a check failing from 1m, seen at 4m", metric: "probe_check_healthy", labels: check, values: "1 0 0 0 0", eval_time: "4m", fires: true, kept: all },
        Case { alert: "VigilProbeFailing", name: "a check failing from 1m, still pending at 1m30s", metric: "probe_check_healthy", labels: check, values: "1 0 0 0 0", eval_time: "1m30s", fires: false, kept: all },
        Case { alert: "VigilProbeFailing", name: "a check failing at 1m only", metric: "probe_check_healthy", labels: check, values: "1 0 1 1 1", eval_time: "4m", fires: false, kept: all },
        Case { alert: "VigilNodeExporterDown", name: "node-exporter unreachable from 1m, seen at 4m", metric: "up", labels: node, values: "1 0 0 0 0", eval_time: "4m", fires: true, kept: all },
        Case { alert: "VigilNodeExporterDown", name: "node-exporter unreachable from 1m, still pending at 2m30s", metric: "up", labels: node, values: "1 0 0 0 0", eval_time: "2m30s", fires: false, kept: all },
        Case { alert: "VigilNodeExporterDown", name: "node-exporter scraped", metric: "up", labels: node, values: "1 1 1 1 1", eval_time: "4m", fires: false, kept: all },
        Case { alert: "VigilRescheduleFailed", name: "a not-rescheduled verdict at 2m", metric: "vigil_alerter_transitions_total", labels: not_rescheduled, values: "0 0 1 1", eval_time: "3m", fires: true, kept: &["kind"] },
        Case { alert: "VigilRescheduleFailed", name: "a not-rescheduled verdict at 1m, 24 minutes before", metric: "vigil_alerter_transitions_total", labels: not_rescheduled, values: "0 1 1x25", eval_time: "25m", fires: false, kept: &["kind"] },
        Case { alert: "VigilNotificationUndelivered", name: "a notice expired at 2m", metric: "vigil_alerter_deliveries_total", labels: expired, values: "0 0 1 1 1 1 1 1 1", eval_time: "8m", fires: true, kept: &["sink"] },
        Case { alert: "VigilNotificationUndelivered", name: "a notice expired at 2m, still pending at 4m", metric: "vigil_alerter_deliveries_total", labels: expired, values: "0 0 1 1 1 1 1 1 1", eval_time: "4m", fires: false, kept: &["sink"] },
        Case { alert: "VigilNotificationUndelivered", name: "a notice pending at 1m only, then delivered", metric: "vigil_alerter_pending_deliveries", labels: pending, values: "0 1 0 0 0 0 0 0 0", eval_time: "8m", fires: false, kept: &["sink"] },
    ];
    let rules = alerts(cadvisor).rules;
    let tests = cases
        .into_iter()
        .map(|case| {
            let mut labels: BTreeMap<String, String> =
                case.labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            if case.metric == "up" || case.metric.starts_with("vigil_node_exporter") {
                labels.extend(exporter.iter().cloned());
            }
            let series = format!(
                "{}{{{}}}",
                case.metric,
                labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(", ")
            );
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
                input_series: vec![InputSeries { series, values: case.values }],
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
    fn every_alert_has_a_firing_and_a_quiet_promtool_case() {
        let cadvisor = ScrapeLabels::default();
        let tests = tests(&cadvisor);
        for rule in alerts(&cadvisor).rules {
            let cases: Vec<_> = tests
                .tests
                .iter()
                .flat_map(|t| &t.alert_rule_test)
                .filter(|t| t.alertname == rule.name())
                .collect();
            assert!(cases.iter().any(|c| !c.exp_alerts.is_empty()), "{} never fires", rule.name());
            assert!(cases.iter().any(|c| c.exp_alerts.is_empty()), "{} has no quiet case", rule.name());
        }
    }

    #[test]
    fn annotations_expand_labels() {
        let labels = BTreeMap::from([("node".to_owned(), "vigil-worker".to_owned())]);
        assert_eq!(
            expand("Node {{ $labels.node }} is {{ $labels.x }}down", &labels),
            "Node vigil-worker is down"
        );
    }

    #[test]
    fn every_alert_has_a_summary_description_and_a_runbook_section() {
        let runbooks =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../", "docs/runbooks.md")).unwrap();
        let anchors: Vec<String> = runbooks
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(|h| h.trim().to_lowercase().replace(' ', "-"))
            .collect();
        let alerts = alerts(&ScrapeLabels::default());
        assert_eq!(alerts.rules.len(), 5);
        for rule in &alerts.rules {
            for key in ["summary", "description", "runbook_url"] {
                assert!(rule.annotations.contains_key(key), "{} has no {key}", rule.name());
            }
            let anchor = rule.annotations["runbook_url"].rsplit_once('#').unwrap().1;
            assert!(anchors.iter().any(|a| a == anchor), "no section {anchor} in docs/runbooks.md");
        }
    }

    #[test]
    fn the_cadvisor_selector_follows_the_configured_labels() {
        let mixin: ScrapeLabels = "job=cadvisor".parse().unwrap();
        let text = serde_yaml::to_string(&upstream(&mixin)).unwrap();
        assert!(text.contains(r#"container_cpu_usage_seconds_total{job="cadvisor", image!=""}"#), "{text}");
        assert!(!text.contains("metrics_path"));
        let default = serde_yaml::to_string(&upstream(&ScrapeLabels::default())).unwrap();
        assert!(
            default.contains(r#"{job="kubelet", metrics_path="/metrics/cadvisor", image!=""}"#),
            "{default}"
        );
    }
}
