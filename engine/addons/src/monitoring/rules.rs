//! Prometheus rule files, typed: the upstream recording rules the
//! kubernetes-mixin's compute-resources dashboards read (as kube-prometheus
//! renders them, with the cAdvisor selector the cluster is configured
//! with), and vigil's own alerting and recording rules. The in-cluster
//! Prometheus loads them from a ConfigMap; `dashboards/rules/` holds them,
//! for the default cAdvisor labels, for a Prometheus of your own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use vigil_model::cluster::ScrapeLabels;

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

/// Where a series the rules read comes from, as the labels Prometheus
/// gives each target say: no scrape job honours a target's own `job` or
/// `kubernetes_*` labels (see [`crate::prometheus::config_yaml`]),
/// so a pod that serves a series under another job's name keeps its own
/// job and namespace, and a rule that selects the real source ignores it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// kube-state-metrics' own job, in the monitoring namespace.
    KubeStateMetrics,
    /// node-exporter, under the cAdvisor labels the cluster is configured with.
    NodeExporter,
    /// Prometheus's own metrics (a static target: itself).
    Prometheus,
    /// The alerter's pods: annotated, in the monitoring namespace.
    Alerter,
    /// probe-server, the sidecar of web's pods in web's namespace.
    ProbeServer,
    /// web's own container.
    Web,
}

/// The containers Prometheus finds the annotated sources in (checked
/// against the add-ons' pod specs by a test).
pub const ALERTER_CONTAINER: &str = "alerter";
pub const PROBE_SERVER_CONTAINER: &str = "probe-server";
pub const WEB_CONTAINER: &str = "web";

impl Source {
    /// The target labels that identify it.
    pub fn labels(self, cadvisor: &ScrapeLabels) -> Vec<(String, String)> {
        use crate::{alerter, node_exporter, prometheus, web};
        let pairs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let annotated = |namespace: &str, container: &str| {
            pairs(&[
                ("job", prometheus::ANNOTATED_PODS_JOB),
                ("kubernetes_namespace", namespace),
                ("kubernetes_container", container),
            ])
        };
        match self {
            Source::KubeStateMetrics => pairs(&[("job", crate::kube_state_metrics::NAME)]),
            Source::NodeExporter => {
                let mut labels: Vec<(String, String)> = cadvisor.0.clone().into_iter().collect();
                labels.push(("kubernetes_container".into(), node_exporter::NAME.into()));
                labels
            }
            Source::Prometheus => pairs(&[("job", prometheus::PROMETHEUS_JOB)]),
            Source::Alerter => annotated(alerter::NAMESPACE, ALERTER_CONTAINER),
            Source::ProbeServer => annotated(web::NAMESPACE, PROBE_SERVER_CONTAINER),
            Source::Web => annotated(web::NAMESPACE, WEB_CONTAINER),
        }
    }

    /// Its labels as a PromQL matcher list (`job="...", ...`).
    pub fn selector(self, cadvisor: &ScrapeLabels) -> String {
        self.labels(cadvisor).iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join(", ")
    }
}

/// vigil's recording rules, named `level:metric:operations`: what the
/// dashboards would otherwise compute on every refresh.
pub fn recording(cadvisor: &ScrapeLabels) -> Group {
    let c = cadvisor.selector();
    let web = Source::Web.selector(cadvisor);
    let probes = Source::ProbeServer.selector(cadvisor);
    let alerter = Source::Alerter.selector(cadvisor);
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
                format!("sum by (route, status) (rate(web_http_requests_total{{{web}}}[1m]))"),
            ),
            Rule::record(
                "le_route:web_http_request_duration_seconds_bucket:rate1m",
                format!("sum by (le, route) (rate(web_http_request_duration_seconds_bucket{{{web}}}[1m]))"),
            ),
            Rule::record(
                "check:probe_check_duration_seconds_bucket:rate1m",
                format!("sum by (le, check) (rate(probe_check_duration_seconds_bucket{{{probes}}}[1m]))"),
            ),
            Rule::record(
                "sink_outcome:vigil_alerter_deliveries:increase1h",
                format!("sum by (sink, outcome) (increase(vigil_alerter_deliveries_total{{{alerter}}}[1h]))"),
            ),
        ],
    }
}

/// The share of a filesystem left, below which the node-filesystem alerts
/// fire (kube-prometheus's NodeFilesystemAlmostOutOfSpace, simplified).
/// The nodes share the host's disk, and etcd writes to it: the kubelet's
/// own eviction starts at 1 GiB left (see `crate::kubeadm`), later still.
pub const FILESYSTEM_WARNING_RATIO: f64 = 0.10;
pub const FILESYSTEM_CRITICAL_RATIO: f64 = 0.05;
/// The share of the TSDB's retention size in use above which
/// `VigilPrometheusStorageNearRetentionLimit` fires.
pub const RETENTION_WARNING_RATIO: f64 = 0.9;

/// vigil's alerts: the cluster's state (kube-state-metrics), the probes,
/// node-exporter's scrapes and the node's disk, Prometheus's own storage,
/// and the alerter's outcomes. Each selects its series by [`Source`].
pub fn alerts(cadvisor: &ScrapeLabels) -> Group {
    let exporter = Source::NodeExporter.selector(cadvisor);
    let probes = Source::ProbeServer.selector(cadvisor);
    let alerter = Source::Alerter.selector(cadvisor);
    let prometheus = Source::Prometheus.selector(cadvisor);
    let filesystem_left =
        format!("node_filesystem_avail_bytes{{{exporter}}} / node_filesystem_size_bytes{{{exporter}}}");
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
            expr: format!("probe_check_healthy{{{probes}}} == 0"),
            for_: Some("1m"),
            severity: "warning",
            summary: "Check {{ $labels.check }} of pod {{ $labels.kubernetes_pod }} is failing",
            description: "probe-server in {{ $labels.kubernetes_namespace }}/{{ $labels.kubernetes_pod }} has found check {{ $labels.check }} failing for a minute past its thresholds: the pod is out of its Service (a dependency), or about to be restarted (the workload).",
        },
        Alert {
            name: "VigilNodeExporterDown",
            expr: format!("up{{{exporter}}} == 0 or vigil_node_exporter_scrape_success{{{exporter}}} == 0"),
            for_: Some("2m"),
            severity: "warning",
            summary: "node-exporter on {{ $labels.kubernetes_node }} is not collecting",
            description: "Prometheus cannot scrape node-exporter on {{ $labels.kubernetes_node }}, or one of its collectors has failed, for two minutes: that node's container metrics are missing from the dashboards.",
        },
        Alert {
            name: "VigilNodeFilesystemSpaceLow",
            expr: format!("{filesystem_left} < {FILESYSTEM_WARNING_RATIO}"),
            for_: Some("5m"),
            severity: "warning",
            summary: "Under 10% left on {{ $labels.mountpoint }} of {{ $labels.kubernetes_node }}",
            description: "The filesystem of {{ $labels.mountpoint }} on {{ $labels.kubernetes_node }} has had less than 10% of its space available for five minutes. The nodes share the host's disk with etcd and Prometheus's volume: free space on the host, or remove what fills it.",
        },
        Alert {
            name: "VigilNodeFilesystemAlmostFull",
            expr: format!("{filesystem_left} < {FILESYSTEM_CRITICAL_RATIO}"),
            for_: Some("5m"),
            severity: "critical",
            summary: "Under 5% left on {{ $labels.mountpoint }} of {{ $labels.kubernetes_node }}",
            description: "The filesystem of {{ $labels.mountpoint }} on {{ $labels.kubernetes_node }} has had less than 5% of its space available for five minutes. At 1 GiB left the kubelet evicts pods and deletes unused images; when the disk is full etcd stops accepting writes and the cluster stops.",
        },
        Alert {
            name: "VigilPrometheusStorageNearRetentionLimit",
            expr: format!(
                "(prometheus_tsdb_storage_blocks_bytes{{{prometheus}}} + prometheus_tsdb_wal_storage_size_bytes{{{prometheus}}} + prometheus_tsdb_head_chunks_storage_size_bytes{{{prometheus}}}) / (prometheus_tsdb_retention_limit_bytes{{{prometheus}}} > 0) > {RETENTION_WARNING_RATIO}"
            ),
            for_: Some("15m"),
            severity: "warning",
            summary: "Prometheus's TSDB is over 90% of its retention size",
            description: "Prometheus's blocks, WAL and head chunks have held more than 90% of --storage.tsdb.retention.size for fifteen minutes: it deletes its oldest blocks early to stay under it, so the dashboards hold less than the retention time. Past 100% the WAL alone outgrows the limit and the volume itself is next.",
        },
        Alert {
            name: "VigilPrometheusWALCorrupted",
            expr: format!("increase(prometheus_tsdb_wal_corruptions_total{{{prometheus}}}[1h]) > 0"),
            for_: None,
            severity: "warning",
            summary: "Prometheus found its WAL corrupted",
            description: "Prometheus repaired a corrupted write-ahead log within the last hour, dropping the samples past the damage: a full disk or an unclean stop of its pod.",
        },
        Alert {
            name: "VigilRescheduleFailed",
            expr: format!(
                r#"increase(vigil_alerter_transitions_total{{{alerter}, kind="not-rescheduled"}}[15m]) > 0"#
            ),
            for_: None,
            severity: "critical",
            summary: "Pods of a dead node were not rescheduled",
            description: "The alerter found owners short of Ready replicas past the deadline after a node went down. `kubectl get nodeincidents` names the node, each owner and why (unschedulable, a volume bound to the dead node, an image missing, crash looping, a StatefulSet pod stuck terminating).",
        },
        Alert {
            name: "VigilNotificationUndelivered",
            expr: format!(
                r#"sum by (sink) (increase(vigil_alerter_deliveries_total{{{alerter}, outcome=~"expired|rejected"}}[15m])) > 0 or max by (sink) (vigil_alerter_pending_deliveries{{{alerter}}}) > 0"#
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_has_a_summary_description_and_a_runbook_section() {
        let runbooks =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../", "docs/runbooks.md"))
                .unwrap();
        let anchors: Vec<String> = runbooks
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(|h| h.trim().to_lowercase().replace(' ', "-"))
            .collect();
        let alerts = alerts(&ScrapeLabels::default());
        assert_eq!(alerts.rules.len(), 9);
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

    #[test]
    fn every_alert_and_record_selects_the_job_its_series_come_from() {
        let cadvisor = ScrapeLabels::default();
        let rules = vigil(&cadvisor);
        for rule in rules.groups.iter().flat_map(|g| &g.rules) {
            let selects_a_job = rule.expr.split('{').skip(1).all(|matchers| matchers.starts_with("job="));
            assert!(selects_a_job, "{}: a selector without a job: {}", rule.name(), rule.expr);
        }
        let alerter = Source::Alerter.selector(&cadvisor);
        assert_eq!(
            alerter,
            r#"job="kubernetes-pods", kubernetes_namespace="monitoring", kubernetes_container="alerter""#
        );
        let text = serde_yaml::to_string(&rules).unwrap();
        assert!(text.contains(&format!("vigil_alerter_pending_deliveries{{{alerter}}}")), "{text}");
        assert!(text.contains(r#"probe_check_healthy{job="kubernetes-pods", kubernetes_namespace="default", kubernetes_container="probe-server"}"#), "{text}");
    }

    #[test]
    fn the_sources_containers_are_the_add_ons_containers() {
        let images = crate::crates().into_iter().map(|c| (c, format!("img/{c}"))).collect();
        let spec = vigil_model::cluster::ClusterSpec::default();
        let input = crate::Input { spec: &spec, images: &images, api_server: None };
        let found: Vec<(String, String)> =
            crate::workloads::containers(&input).into_iter().map(|c| (c.namespace, c.name)).collect();
        for source in [Source::Web, Source::ProbeServer, Source::Alerter] {
            let labels: BTreeMap<String, String> =
                source.labels(&ScrapeLabels::default()).into_iter().collect();
            let wanted = (labels["kubernetes_namespace"].clone(), labels["kubernetes_container"].clone());
            assert!(found.contains(&wanted), "{source:?}: {wanted:?} not among {found:?}");
        }
    }
}
