//! vigil's own dashboards: the cluster and its nodes, the workload, the
//! probes, and failover. Heavy queries read the recording rules of
//! [`super::rules`]. Panels over series that carry node, namespace or pod
//! honour those variables; `web`'s requests and latency and the check
//! durations read records summed over every pod (one service, one line),
//! and the failover panels are cluster-wide.

use super::{
    grafana::{Dashboard, DashboardSpec, Kind, PanelSpec, build, query_variable},
    rules::{KSM, Source},
};
use vigil_model::cluster::ScrapeLabels;

/// The alerter's and probe-server's series, as the rules select them (their
/// labels do not depend on the cAdvisor labels).
fn alerter() -> String {
    Source::Alerter.selector(&ScrapeLabels::default())
}

fn probe_server() -> String {
    Source::ProbeServer.selector(&ScrapeLabels::default())
}

fn node_variable() -> super::grafana::Variable {
    query_variable("node", "Node", &format!("label_values(kube_node_info{{{KSM}}}, node)"))
}

fn namespace_variable() -> super::grafana::Variable {
    query_variable("namespace", "Namespace", &format!("label_values(kube_pod_info{{{KSM}}}, namespace)"))
}

fn pod_variable() -> super::grafana::Variable {
    query_variable(
        "pod",
        "Pod",
        &format!(r#"label_values(kube_pod_info{{{KSM}, namespace=~"$namespace", node=~"$node"}}, pod)"#),
    )
}

fn timeseries(
    title: &'static str,
    description: &'static str,
    unit: &'static str,
    queries: Vec<(String, &'static str)>,
) -> PanelSpec {
    PanelSpec { title, description, kind: Kind::TimeSeries, unit, queries }
}

fn stat(title: &'static str, description: &'static str, unit: &'static str, query: String) -> PanelSpec {
    PanelSpec { title, description, kind: Kind::Stat, unit, queries: vec![(query, "")] }
}

pub fn cluster() -> Dashboard {
    build(DashboardSpec {
        uid: "vigil-cluster",
        title: "vigil / Cluster and nodes",
        description: "Node readiness, CPU, memory and pods per node.",
        variables: vec![node_variable()],
        panels: vec![
            stat(
                "Nodes Ready",
                "Nodes whose Ready condition is True.",
                "none",
                format!(r#"sum(kube_node_status_condition{{{KSM}, condition="Ready", status="true", node=~"$node"}})"#),
            ),
            stat(
                "Nodes not Ready",
                "Nodes whose Ready condition is False or Unknown.",
                "none",
                format!(
                    r#"sum(kube_node_status_condition{{{KSM}, condition="Ready", status=~"false|unknown", node=~"$node"}})"#
                ),
            ),
            stat(
                "Pods running",
                "Pods in phase Running on the selected nodes.",
                "none",
                format!(
                    r#"sum(kube_pod_status_phase{{{KSM}, phase="Running"}} * on (namespace, pod) group_left() max by (namespace, pod) (kube_pod_info{{{KSM}, node=~"$node"}}))"#
                ),
            ),
            stat(
                "Open incidents",
                "Node incidents the alerter has not seen resolved (its leader's count).",
                "none",
                format!("max(vigil_alerter_open_incidents{{{}}})", alerter()),
            ),
            timeseries(
                "Ready state by node",
                "1 while the node's Ready condition is True.",
                "none",
                vec![(
                    format!(r#"max by (node) (kube_node_status_condition{{{KSM}, condition="Ready", status="true", node=~"$node"}})"#),
                    "{{node}}",
                )],
            ),
            timeseries(
                "CPU by node",
                "CPU used by the containers on each node, in cores (node-exporter).",
                "short",
                vec![(
                    r#"sum by (node) (node_namespace_pod_container:container_cpu_usage_seconds:rate1m{node=~"$node"})"#.into(),
                    "{{node}}",
                )],
            ),
            timeseries(
                "Memory by node",
                "Working set of the containers on each node (node-exporter).",
                "bytes",
                vec![(r#"node:container_memory_working_set_bytes:sum{node=~"$node"}"#.into(), "{{node}}")],
            ),
            stat(
                "Memory allocatable",
                "Memory the nodes offer to pods, in total.",
                "bytes",
                format!(r#"sum(kube_node_status_allocatable{{{KSM}, resource="memory", node=~"$node"}})"#),
            ),
            timeseries(
                "Pods per node",
                "Pods scheduled on each node.",
                "none",
                vec![(format!(r#"count by (node) (kube_pod_info{{{KSM}, node=~"$node"}})"#), "{{node}}")],
            ),
        ],
    })
}

pub fn workload() -> Dashboard {
    let pods = r#"namespace=~"$namespace", pod=~"$pod""#;
    build(DashboardSpec {
        uid: "vigil-workload",
        title: "vigil / Workload",
        description: "Per-pod CPU and memory (node-exporter), web's requests and latency, replicas desired and ready.",
        variables: vec![node_variable(), namespace_variable(), pod_variable()],
        panels: vec![
            timeseries(
                "CPU by pod",
                "CPU used by each pod's containers, in cores.",
                "short",
                vec![(
                    format!(r#"sum by (namespace, pod) (node_namespace_pod_container:container_cpu_usage_seconds:rate1m{{{pods}, node=~"$node"}})"#),
                    "{{namespace}}/{{pod}}",
                )],
            ),
            timeseries(
                "Memory by pod",
                "Working set of each pod's containers.",
                "bytes",
                vec![(
                    format!(r#"sum by (namespace, pod) (node_namespace_pod_container:container_memory_working_set_bytes{{{pods}, node=~"$node"}})"#),
                    "{{namespace}}/{{pod}}",
                )],
            ),
            timeseries(
                "web requests by status",
                "Requests web served per second, by route and status.",
                "reqps",
                vec![("sum by (route, status) (route_status:web_http_requests:rate1m)".into(), "{{route}} {{status}}")],
            ),
            timeseries(
                "web latency",
                "Time to serve a request: median and 99th percentile over a minute.",
                "s",
                vec![
                    (
                        "histogram_quantile(0.5, sum by (le) (le_route:web_http_request_duration_seconds_bucket:rate1m))".into(),
                        "p50",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (le) (le_route:web_http_request_duration_seconds_bucket:rate1m))".into(),
                        "p99",
                    ),
                ],
            ),
            timeseries(
                "Replicas desired and ready",
                "Each Deployment's desired replicas against those Ready.",
                "none",
                vec![
                    (
                        format!(r#"max by (namespace, deployment) (kube_deployment_spec_replicas{{{KSM}, namespace=~"$namespace"}})"#),
                        "{{deployment}} desired",
                    ),
                    (
                        format!(r#"max by (namespace, deployment) (kube_deployment_status_replicas_ready{{{KSM}, namespace=~"$namespace"}})"#),
                        "{{deployment}} ready",
                    ),
                ],
            ),
            timeseries(
                "Network received by pod",
                "Bytes per second into each pod (its sandbox's interfaces, counted once).",
                "Bps",
                vec![(
                    format!(r#"sum by (namespace, pod) (rate(container_network_receive_bytes_total{{{pods}, node=~"$node"}}[$__rate_interval]))"#),
                    "{{namespace}}/{{pod}}",
                )],
            ),
        ],
    })
}

pub fn probes() -> Dashboard {
    build(DashboardSpec {
        uid: "vigil-probes",
        title: "vigil / Probes",
        description: "probe-server's checks (results, durations, answers to the kubelet) and container restarts.",
        variables: vec![node_variable(), namespace_variable(), pod_variable()],
        panels: vec![
            timeseries(
                "Check state",
                "1 healthy, 0 failing (after thresholds), by pod and check.",
                "none",
                vec![(
                    format!(r#"max by (kubernetes_pod, check) (probe_check_healthy{{{}, kubernetes_namespace=~"$namespace", kubernetes_pod=~"$pod"}})"#, probe_server()),
                    "{{kubernetes_pod}} {{check}}",
                )],
            ),
            timeseries(
                "Check runs by result",
                "Check runs per second, by check and result.",
                "ops",
                vec![(
                    format!(r#"sum by (check, result) (rate(probe_check_runs_total{{{}, kubernetes_namespace=~"$namespace", kubernetes_pod=~"$pod"}}[$__rate_interval]))"#, probe_server()),
                    "{{check}} {{result}}",
                )],
            ),
            timeseries(
                "Check duration p99",
                "99th percentile of one check run, over a minute.",
                "s",
                vec![(
                    "histogram_quantile(0.99, sum by (le, check) (check:probe_check_duration_seconds_bucket:rate1m))".into(),
                    "{{check}}",
                )],
            ),
            timeseries(
                "Answers to the kubelet",
                "Probe answers per second, by probe and status code.",
                "reqps",
                vec![(
                    format!(r#"sum by (probe, code) (rate(probe_answers_total{{{}, kubernetes_namespace=~"$namespace", kubernetes_pod=~"$pod"}}[$__rate_interval]))"#, probe_server()),
                    "{{probe}} {{code}}",
                )],
            ),
            timeseries(
                "Container restarts",
                "Restarts of each container over the last hour.",
                "none",
                vec![(
                    format!(r#"sum by (namespace, pod, container) (increase(kube_pod_container_status_restarts_total{{{KSM}, namespace=~"$namespace", pod=~"$pod"}}[1h]))"#),
                    "{{pod}} {{container}}",
                )],
            ),
        ],
    })
}

pub fn failover() -> Dashboard {
    build(DashboardSpec {
        uid: "vigil-failover",
        title: "vigil / Failover",
        description: "The alerter: incidents, transitions, how fast a dead node is noticed and its pods are back, and where notices went.",
        variables: vec![node_variable()],
        panels: vec![
            timeseries(
                "Transitions",
                "Notices decided in the last 5 minutes, by kind: an incident is a bump of each kind it went through.",
                "none",
                vec![(
                    format!("sum by (kind) (increase(vigil_alerter_transitions_total{{{}}}[5m]))", alerter()),
                    "{{kind}}",
                )],
            ),
            timeseries(
                "Detection latency",
                "From a node's Ready condition changing to its node-down notice delivered, by sink: median and 99th percentile over the last hour.",
                "s",
                vec![
                    (
                        format!(
                            "histogram_quantile(0.5, sum by (le, sink) (increase(vigil_alerter_detection_latency_seconds_bucket{{{}}}[1h])))",
                            alerter()
                        ),
                        "{{sink}} p50",
                    ),
                    (
                        format!(
                            "histogram_quantile(0.99, sum by (le, sink) (increase(vigil_alerter_detection_latency_seconds_bucket{{{}}}[1h])))",
                            alerter()
                        ),
                        "{{sink}} p99",
                    ),
                ],
            ),
            timeseries(
                "Time to rescheduled",
                "From a node seen down to every owner of its pods Ready elsewhere: median over the last hour.",
                "s",
                vec![(
                    format!(
                        "histogram_quantile(0.5, sum by (le) (increase(vigil_alerter_time_to_rescheduled_seconds_bucket{{{}}}[1h])))",
                        alerter()
                    ),
                    "p50",
                )],
            ),
            timeseries(
                "Deliveries by sink and outcome",
                "Delivery attempts over the last hour: delivered, retried, expired, rejected.",
                "none",
                vec![("sink_outcome:vigil_alerter_deliveries:increase1h".into(), "{{sink}} {{outcome}}")],
            ),
            timeseries(
                "Open incidents and pending notices",
                "Incidents not resolved, and notices not delivered yet by sink (the leader's view).",
                "none",
                vec![
                    (format!("max(vigil_alerter_open_incidents{{{}}})", alerter()), "open incidents"),
                    (
                        format!("max by (sink) (vigil_alerter_pending_deliveries{{{}}})", alerter()),
                        "{{sink}} pending",
                    ),
                ],
            ),
            timeseries(
                "Nodes Ready",
                "1 while the node's Ready condition is True: the incidents' other side.",
                "none",
                vec![(
                    format!(
                        r#"max by (node) (kube_node_status_condition{{{KSM}, condition="Ready", status="true", node=~"$node"}})"#
                    ),
                    "{{node}}",
                )],
            ),
        ],
    })
}

/// Every dashboard, by file name.
pub fn all() -> Vec<(&'static str, Dashboard)> {
    vec![
        ("vigil-cluster.json", cluster()),
        ("vigil-workload.json", workload()),
        ("vigil-probes.json", probes()),
        ("vigil-failover.json", failover()),
    ]
}
