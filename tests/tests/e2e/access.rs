//! Who may use the addresses `vigil up` prints (issue 18, item 3), from the
//! host as an attacker on it would try:
//! - Alertmanager refuses a silence without credentials (401), and one with
//!   them from another origin (403), and no silence exists after either;
//!   with them and no foreign origin, it takes one (and lets it be expired);
//!   a preflight is refused and no answer allows another origin;
//! - Jaeger's OTLP receiver refuses a span without credentials and takes it
//!   with the span senders' own, which may do nothing else;
//! - Prometheus's query API answers 401 without credentials, 200 with;
//! - no LoadBalancer Service has a NodePort;
//! - the password file is the user's alone and holds the cluster's password.

use std::{os::unix::fs::PermissionsExt as _, time::Duration};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::{api::core::v1::Service, jiff::Timestamp};
use kube::{Api, api::ListParams};
use serde_json::{Value, json};
use vigil::addons::{alertmanager, credentials, jaeger};
use vigil_e2e::Cluster;

/// A tag of this run's own, so that a rerun on the same cluster never
/// finds an earlier run's silence or trace.
fn fresh(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{prefix}-{nanos:x}")
}

fn silence(tag: &str) -> Value {
    let now = Timestamp::now().as_second();
    let at = |s: i64| Timestamp::from_second(s).map(|t| t.to_string()).unwrap_or_default();
    json!({
        "matchers": [{"name": "alertname", "value": tag, "isRegex": false, "isEqual": true}],
        "startsAt": at(now),
        "endsAt": at(now + 3600),
        "createdBy": "vigil-e2e",
        "comment": tag,
    })
}

/// The silences whose comment is `tag`, as Alertmanager lists them (asked with credentials).
async fn silences_tagged(c: &Cluster, tag: &str) -> Result<Vec<Value>> {
    let url = format!("{}api/v2/silences", c.url(alertmanager::NAME)?);
    let all: Vec<Value> = c.http()?.get(&url).send().await?.error_for_status()?.json().await?;
    Ok(all.into_iter().filter(|s| s["comment"] == tag).collect())
}

pub async fn an_unauthenticated_silence_is_refused(c: &Cluster) -> Result<()> {
    let tag = fresh("unauthenticated");
    let url = format!("{}api/v2/silences", c.url(alertmanager::NAME)?);
    let answer = c.anonymous_http()?.post(&url).json(&silence(&tag)).send().await?;
    ensure!(answer.status() == 401, "POST {url} without credentials: {}", answer.status());
    let challenge =
        answer.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
    ensure!(challenge.starts_with("Basic realm=\"vigil\""), "no Basic challenge: {challenge:?}");
    let wrong =
        c.anonymous_http()?.post(&url).basic_auth("vigil", Some("not-the-password")).json(&silence(&tag));
    let wrong = wrong.send().await?;
    ensure!(wrong.status() == 401, "POST {url} with a wrong password: {}", wrong.status());
    let found = silences_tagged(c, &tag).await?;
    ensure!(found.is_empty(), "a refused silence exists: {found:?}");
    Ok(())
}

pub async fn a_cross_origin_silence_is_refused_even_with_credentials(c: &Cluster) -> Result<()> {
    let base = c.url(alertmanager::NAME)?;
    let url = format!("{base}api/v2/silences");
    let http = c.http()?;
    let tag = fresh("cross-origin");
    let answer = http.post(&url).header("origin", "http://evil.example").json(&silence(&tag)).send().await?;
    ensure!(answer.status() == 403, "POST {url} from http://evil.example: {}", answer.status());
    ensure!(silences_tagged(c, &tag).await?.is_empty(), "a cross-origin silence exists");
    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await?;
    let cors = |r: &reqwest::Response| {
        r.headers().keys().filter(|k| k.as_str().starts_with("access-control-")).count()
    };
    ensure!(preflight.status() == 403 && cors(&preflight) == 0, "preflight: {preflight:?}");
    let read = http.get(&url).header("origin", "http://evil.example").send().await?;
    ensure!(read.status() == 200 && cors(&read) == 0, "no answer lets another origin read it: {read:?}");
    // The same write from the address itself, with credentials, is taken; then expired.
    let origin = base.trim_end_matches('/');
    let created: Value = http
        .post(&url)
        .header("origin", origin)
        .json(&silence(&tag))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["silenceID"].as_str().with_context(|| format!("no silenceID in {created}"))?;
    ensure!(silences_tagged(c, &tag).await?.len() == 1, "the authenticated silence is not listed");
    // `vigil alerts` lists it, as Alertmanager's old UI would have.
    let listed = vigil::alerts::text(&vigil::alerts::fetch(&c.client).await?);
    let line = listed.lines().find(|l| l.starts_with(id));
    ensure!(
        line.is_some_and(|l| l.contains(&format!("{{alertname=\"{tag}\"}}, vigil-e2e: {tag}"))),
        "`vigil alerts` does not list silence {id}: {listed}"
    );
    http.delete(format!("{base}api/v2/silence/{id}")).send().await?.error_for_status()?;
    Ok(())
}

/// One span of service `vigil-e2e-access` in trace `trace`, as OTLP/JSON.
fn span(trace: &str) -> Value {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "vigil-e2e-access"}}]},
        "scopeSpans": [{"scope": {"name": "vigil-e2e"}, "spans": [{
            "traceId": trace, "spanId": "00f067aa0ba902b7", "name": "access check", "kind": 1,
            "startTimeUnixNano": (now - 1_000_000).to_string(), "endTimeUnixNano": now.to_string(),
        }]}],
    }]})
}

fn trace_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:032x}", nanos ^ (u128::from(std::process::id()) << 64) ^ (0xacce55 << 96))
}

pub async fn otlp_takes_spans_only_with_the_senders_credentials(c: &Cluster) -> Result<()> {
    let query = c.jaeger_url()?;
    let host = reqwest::Url::parse(query)?.host_str().context("no host in Jaeger's URL")?.to_owned();
    let otlp = format!("http://{host}:{}/v1/traces", jaeger::OTLP_PORT);
    let senders = credentials::read(&c.client, credentials::OTLP_SECRET).await?;
    let refused_trace = trace_id();
    let answer = c.anonymous_http()?.post(&otlp).json(&span(&refused_trace)).send().await?;
    ensure!(answer.status() == 401, "POST {otlp} without credentials: {}", answer.status());
    let accepted_trace = trace_id();
    ensure!(accepted_trace != refused_trace);
    let as_sender = |r: reqwest::RequestBuilder| r.basic_auth(&senders.username, Some(&senders.password));
    let answer = as_sender(c.anonymous_http()?.post(&otlp)).json(&span(&accepted_trace)).send().await?;
    ensure!(answer.status().is_success(), "POST {otlp} as {}: {}", senders.username, answer.status());
    // The senders' user may send spans, and nothing else.
    let read = as_sender(c.anonymous_http()?.get(format!("{query}api/services"))).send().await?;
    ensure!(read.status() == 403, "the span senders' user read the query API: {}", read.status());
    c.jaeger_trace(&accepted_trace, Duration::from_secs(60), |t| {
        t.spans().iter().any(|s| s.service == "vigil-e2e-access")
    })
    .await?;
    let refused = c.http()?.get(format!("{query}api/traces/{refused_trace}")).send().await?;
    ensure!(refused.status() == 404, "the refused span's trace is in Jaeger: {}", refused.status());
    Ok(())
}

pub async fn prometheus_answers_queries_only_with_credentials(c: &Cluster) -> Result<()> {
    let base = c.prometheus_url()?;
    let url = format!("{base}api/v1/query");
    let anonymous = c.anonymous_http()?.get(&url).query(&[("query", "up")]).send().await?;
    ensure!(anonymous.status() == 401, "GET {url} without credentials: {}", anonymous.status());
    let answer: Value =
        c.http()?.get(&url).query(&[("query", "up")]).send().await?.error_for_status()?.json().await?;
    ensure!(answer["status"] == "success", "{answer}");
    // The kubelet's probe path stays open, for reads only.
    let ready = c.anonymous_http()?.get(format!("{base}-/ready")).send().await?;
    ensure!(ready.status() == 200, "GET -/ready without credentials: {}", ready.status());
    let write = c.anonymous_http()?.post(format!("{base}-/ready")).send().await?;
    ensure!(write.status() == 401, "POST -/ready without credentials: {}", write.status());
    Ok(())
}

pub async fn no_service_has_a_node_port(c: &Cluster) -> Result<()> {
    let services = Api::<Service>::all(c.client.clone()).list(&ListParams::default()).await?.items;
    let mut balanced = vec![];
    for service in &services {
        let name = format!(
            "{}/{}",
            service.metadata.namespace.as_deref().unwrap_or_default(),
            service.metadata.name.as_deref().unwrap_or_default()
        );
        let spec = service.spec.clone().unwrap_or_default();
        let node_ports: Vec<i32> = spec.ports.iter().flatten().filter_map(|p| p.node_port).collect();
        ensure!(node_ports.is_empty(), "Service {name} opens node ports {node_ports:?}");
        if spec.type_.as_deref() == Some("LoadBalancer") {
            ensure!(
                spec.allocate_load_balancer_node_ports == Some(false),
                "Service {name} allocates node ports"
            );
            balanced.push(name);
        }
    }
    balanced.sort();
    ensure!(
        balanced
            == [
                "default/web",
                "monitoring/alertmanager",
                "monitoring/jaeger",
                "monitoring/prometheus",
                "monitoring/victorialogs"
            ],
        "LoadBalancer Services: {balanced:?}"
    );
    Ok(())
}

pub async fn the_password_file_is_the_users_alone_and_the_clusters(c: &Cluster) -> Result<()> {
    let host = c.report.credentials.clone().context("up reported no credentials")?;
    let mode = std::fs::symlink_metadata(&host.password_file)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "{} has mode {mode:o}", host.password_file.display());
    let cluster = credentials::read_api(&c.client).await?;
    ensure!(cluster == c.credentials, "the password file does not hold the cluster's password");
    ensure!(cluster.password.len() >= 32, "a password of {} characters", cluster.password.len());
    Ok(())
}
