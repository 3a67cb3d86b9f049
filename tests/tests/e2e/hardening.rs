//! Safe to leave running (issue 18): Pod Security Admission refuses a
//! privileged pod where vigil enforces `restricted` while every pod of
//! vigil's runs there; Prometheus keeps its TSDB under a retention size and
//! bounds every scrape; and a pod in `default` that serves
//! kube-state-metrics' series under its job's name fires nothing.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, Namespace, Pod, PodSpec, Volume, VolumeMount,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};
use serde_json::Value;
use vigil::{
    addons::{self, node_exporter, pod_security, prometheus, web},
    poll::until_some,
};
use vigil_e2e::{Cluster, images};

/// Every call these checks make to Prometheus's HTTP API, in one place: a
/// GET of `path` (under the URL `up` printed) with `params`, its `data`.
async fn prometheus_get(c: &Cluster, path: &str, params: &[(&str, &str)]) -> Result<Value> {
    let http = c.http()?;
    let url = format!("{}{path}", c.prometheus_url()?);
    let body = http.get(&url).query(params).send().await?.error_for_status()?.text().await?;
    let answer: Value = serde_json::from_str(&body).with_context(|| format!("{url}: {body}"))?;
    ensure!(answer["status"] == "success", "{url} {params:?}: {answer}");
    Ok(answer["data"].clone())
}

async fn instant_query(c: &Cluster, promql: &str) -> Result<Vec<Value>> {
    let data = prometheus_get(c, "api/v1/query", &[("query", promql)]).await?;
    Ok(data["result"].as_array().cloned().unwrap_or_default())
}

/// A pod the restricted profile refuses on three counts: privileged, the
/// host's root filesystem, the host's network.
fn privileged_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vigil-e2e-privileged"},
        "spec": {
            "hostNetwork": true,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [{
                "name": "main", "image": images().base(), "imagePullPolicy": "Never",
                "command": ["sleep", "1"],
                "securityContext": {"privileged": true},
                "volumeMounts": [{"name": "root", "mountPath": "/host"}]
            }]
        }
    }))
    .expect("a pod")
}

pub async fn a_privileged_pod_is_refused_where_vigil_enforces_restricted(c: &Cluster) -> Result<()> {
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let version = pod_security::version();
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    for namespace in [web::NAMESPACE, node_exporter::NAMESPACE] {
        let labels = namespaces.get(namespace).await?.metadata.labels.unwrap_or_default();
        ensure!(
            labels.get("pod-security.kubernetes.io/enforce").map(String::as_str) == Some("restricted")
                && labels.get("pod-security.kubernetes.io/enforce-version") == Some(&version),
            "namespace {namespace} does not enforce restricted:{version}: {labels:?}"
        );
        let pods: Api<Pod> = Api::namespaced(c.client.clone(), namespace);
        match pods.create(&dry_run, &privileged_pod()).await {
            Err(kube::Error::Api(status)) if status.code == 403 => {
                let wanted = format!("violates PodSecurity \"restricted:{version}\"");
                ensure!(
                    status.message.contains(&wanted),
                    "{namespace}: refused, but not by Pod Security: {}",
                    status.message
                );
                for count in ["privileged", "hostPath", "host namespaces"] {
                    ensure!(
                        status.message.contains(count),
                        "{namespace}: {count} not named: {}",
                        status.message
                    );
                }
            }
            Err(e) => bail!("{namespace}: the dry run failed otherwise: {e}"),
            Ok(_) => bail!("{namespace} admitted a privileged hostPath, hostNetwork pod"),
        }
    }
    // The namespaces that cannot enforce restricted still say so on every request.
    for namespace in ["kube-flannel", addons::local_path::NAMESPACE] {
        let namespace_object = namespaces.get(namespace).await?;
        let labels = namespace_object.metadata.labels.unwrap_or_default();
        ensure!(
            labels.get("pod-security.kubernetes.io/warn").map(String::as_str) == Some("restricted"),
            "{namespace} does not warn against restricted: {labels:?}"
        );
        let annotations = namespace_object.metadata.annotations.unwrap_or_default();
        ensure!(annotations.contains_key(pod_security::REASON_ANNOTATION), "{namespace} gives no reason");
    }
    // Every pod of vigil's runs under it: each Deployment and DaemonSet there is complete.
    until_some("every pod in default and monitoring Running and ready", Duration::from_secs(90), || async {
        let mut waiting = vec![];
        for namespace in [web::NAMESPACE, node_exporter::NAMESPACE] {
            let pods: Api<Pod> = Api::namespaced(c.client.clone(), namespace);
            for pod in pods.list(&ListParams::default()).await?.items {
                if !vigil::conditions::pod_ready(&pod) {
                    waiting.push(format!("{namespace}/{}", pod.metadata.name.unwrap_or_default()));
                }
            }
        }
        if !waiting.is_empty() {
            println!("not ready yet: {waiting:?}");
        }
        Ok::<_, anyhow::Error>(waiting.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

/// Prometheus's `--storage.tsdb.retention.size` is in force and every
/// scrape job it runs carries its limits.
pub async fn prometheus_bounds_its_tsdb_and_every_scrape(c: &Cluster) -> Result<()> {
    let flags = prometheus_get(c, "api/v1/status/flags", &[]).await?;
    let size = flags["storage.tsdb.retention.size"].as_str().unwrap_or_default();
    ensure!(size.starts_with("700"), "retention size {size:?}, not {}", prometheus::RETENTION_SIZE);
    let limit = instant_query(
        c,
        &format!("prometheus_tsdb_retention_limit_bytes{{job=\"{}\"}}", prometheus::PROMETHEUS_JOB),
    )
    .await?;
    let bytes = limit.first().and_then(|s| s["value"][1].as_str()).unwrap_or_default();
    ensure!(bytes == (700u64 << 20).to_string(), "prometheus_tsdb_retention_limit_bytes is {bytes:?}");

    let config = prometheus_get(c, "api/v1/status/config", &[]).await?;
    let config: serde_yaml::Value = serde_yaml::from_str(config["yaml"].as_str().unwrap_or_default())?;
    let jobs = config["scrape_configs"].as_sequence().context("no scrape_configs")?;
    ensure!(jobs.len() == 4, "{} scrape jobs", jobs.len());
    for job in jobs {
        let name = job["job_name"].as_str().unwrap_or_default();
        for limit in ["sample_limit", "label_limit", "label_name_length_limit", "label_value_length_limit"] {
            let value = job[limit].as_u64().unwrap_or(0);
            ensure!(value > 0, "job {name} runs without {limit}");
        }
        ensure!(job["honor_labels"].as_bool() != Some(true), "job {name} honours its targets' labels");
    }
    Ok(())
}

const IMPOSTOR: &str = "vigil-e2e-impostor";
const IMPOSTOR_NODE: &str = "vigil-e2e-impostor-node";
const IMPOSTOR_PORT: u16 = 9100;

/// A pod in `default`, annotated for scraping, that serves kube-state-
/// metrics' series for a node it says is not Ready, and an alerter's
/// pending notice, each under the job and namespace of the real source.
/// socat hands each connection to a shell that reads the request's headers
/// (closing with them unread would reset the connection), then answers.
fn impostor_pod() -> Pod {
    let metrics = format!(
        "# TYPE kube_node_status_condition gauge\n\
         kube_node_status_condition{{job=\"kube-state-metrics\",condition=\"Ready\",status=\"true\",node=\"{IMPOSTOR_NODE}\"}} 0\n\
         # TYPE vigil_alerter_pending_deliveries gauge\n\
         vigil_alerter_pending_deliveries{{job=\"kubernetes-pods\",kubernetes_namespace=\"monitoring\",kubernetes_container=\"alerter\",sink=\"{IMPOSTOR}\"}} 1\n"
    );
    let serve = "while read -r line; do [ ${#line} -le 1 ] && break; done\n\
                 printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n'\n\
                 cat /tmp/metrics\n";
    let script = format!(
        "printf '%s' \"$METRICS\" > /tmp/metrics\n\
         printf '%s' \"$SERVE\" > /tmp/serve\n\
         exec socat TCP-LISTEN:{IMPOSTOR_PORT},fork,reuseaddr 'SYSTEM:sh /tmp/serve'\n"
    );
    let env = |name: &str, value: String| k8s_openapi::api::core::v1::EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(IMPOSTOR.into()),
            labels: Some([("app".to_owned(), IMPOSTOR.to_owned())].into()),
            annotations: Some([("prometheus.io/scrape".to_owned(), "true".to_owned())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            // It passes `restricted`: only its claims are hostile.
            security_context: Some(addons::non_root_pod(65534, None)),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: IMPOSTOR.into(),
                image: Some(images().base()),
                image_pull_policy: Some("Never".into()),
                command: Some(vec!["sh".into(), "-c".into(), script]),
                env: Some(vec![env("METRICS", metrics), env("SERVE", serve.into())]),
                ports: Some(vec![ContainerPort {
                    name: Some("metrics".into()),
                    container_port: IMPOSTOR_PORT.into(),
                    ..Default::default()
                }]),
                security_context: Some(addons::locked_down()),
                volume_mounts: Some(vec![VolumeMount {
                    name: "tmp".into(),
                    mount_path: "/tmp".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            volumes: Some(vec![Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn a_pod_in_default_cannot_fire_vigils_alerts(c: &Cluster) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), web::NAMESPACE);
    let _ = pods.delete(IMPOSTOR, &DeleteParams::default()).await;
    until_some("an old impostor pod gone", Duration::from_secs(60), || async {
        Ok::<_, kube::Error>(pods.get_opt(IMPOSTOR).await?.is_none().then_some(()))
    })
    .await?;
    pods.create(&PostParams::default(), &impostor_pod()).await.context("creating the impostor pod")?;
    let outcome = impostor_fires_nothing(c).await;
    let _ = pods.delete(IMPOSTOR, &DeleteParams::default()).await;
    outcome
}

async fn impostor_fires_nothing(c: &Cluster) -> Result<()> {
    // Scraped (every 15 s), and stored under its own job and namespace.
    let selector = format!("kube_node_status_condition{{node=\"{IMPOSTOR_NODE}\"}}");
    let series = until_some("the impostor's series in Prometheus", Duration::from_secs(90), || async {
        let found = instant_query(c, &selector).await?;
        Ok::<_, anyhow::Error>((!found.is_empty()).then_some(found))
    })
    .await?;
    let seen_at = Instant::now();
    let labels = &series[0]["metric"];
    ensure!(
        labels["job"] == prometheus::ANNOTATED_PODS_JOB
            && labels["exported_job"] == "kube-state-metrics"
            && labels["kubernetes_namespace"] == web::NAMESPACE,
        "the impostor's series kept the job it claimed: {labels}"
    );
    // Two evaluations of the alerting rules after it was first seen: a rule
    // that matched it would have made it pending (ALERTS, alertstate="pending").
    let rules = prometheus_get(c, "api/v1/rules", &[("type", "alert")]).await?;
    let group = rules["groups"].as_array().into_iter().flatten().find(|g| g["name"] == "vigil.alerts");
    let interval = group.and_then(|g| g["interval"].as_f64()).context("no rule group vigil.alerts")?;
    let two_evaluations = Duration::from_secs_f64(2.0 * interval + 1.0);
    tokio::time::sleep(two_evaluations.saturating_sub(seen_at.elapsed())).await;
    let alerts = instant_query(
        c,
        &format!("ALERTS{{node=\"{IMPOSTOR_NODE}\"}} or ALERTS{{sink=\"{IMPOSTOR}\"}} or ALERTS{{kubernetes_pod=\"{IMPOSTOR}\"}}"),
    )
    .await?;
    ensure!(alerts.is_empty(), "a pod in default fired vigil's alerts: {alerts:?}");
    Ok(())
}
