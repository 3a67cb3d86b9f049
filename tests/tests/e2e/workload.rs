//! The workload (issue 4): the load balancer reaches every replica from the
//! host; a hung workload is restarted through its liveness probe; a failing
//! dependency takes exactly one pod out of the Service while traffic goes on;
//! a deleted pod is replaced.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::{
    core::v1::{Event, Pod},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};
use vigil::{conditions::pod_ready, poll::until_some, provider::NodeProvider};
use vigil_e2e::Cluster;

const WEB_SELECTOR: &str = "app=web";

/// A client that opens a new connection per request, as separate curls do:
/// kube-proxy balances connections, not requests.
fn http() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(3))
        .build()?)
}

/// `count` GETs of the load balancer from the host; the hostnames that answered.
/// How long every kube-proxy may take to apply an endpoint change.
const KUBE_PROXY_SYNC: Duration = Duration::from_secs(15);

async fn curl_many(url: &str, count: usize) -> Result<Vec<String>> {
    let http = http()?;
    let mut seen = vec![];
    for i in 0..count {
        let body = http
            .get(url)
            .send()
            .await
            .with_context(|| format!("curl {i} of {count} to {url}"))?
            .text()
            .await?;
        let host = body.trim().strip_prefix("I'm ").with_context(|| format!("unexpected answer {body:?}"))?;
        seen.push(host.to_owned());
    }
    Ok(seen)
}

pub(crate) async fn web_pods(client: &Client) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    Ok(pods.list(&ListParams::default().labels(WEB_SELECTOR)).await?.items)
}

pub(crate) fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn restarts(pod: &Pod, container: &str) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == container))
        .map_or(0, |c| c.restart_count)
}

pub async fn load_balancer_reaches_every_pod(c: &Cluster) -> Result<()> {
    let url = c.web_url()?;
    let pods: BTreeSet<String> = web_pods(&c.client).await?.iter().map(name).collect();
    ensure!(pods.len() == 3, "expected 3 web pods, found {pods:?}");
    let seen: BTreeSet<String> = curl_many(url, 30).await?.into_iter().collect();
    ensure!(seen == pods, "30 curls to {url} reached {seen:?}, the pods are {pods:?}");
    let ip: std::net::Ipv4Addr =
        reqwest::Url::parse(url)?.host_str().context("no host in the URL")?.parse()?;
    let (first, last) = c.spec.load_balancer_range();
    ensure!(ip >= first && ip <= last, "LoadBalancer address {ip} is outside the pool {first}-{last}");
    Ok(())
}

/// The PID, as the node sees it, of `container` in `pod`.
async fn container_pid(provider: &dyn NodeProvider, pod: &Pod, container: &str) -> Result<(String, String)> {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).context("pod not scheduled")?;
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == container))
        .and_then(|c| c.container_id.clone())
        .context("no container id")?;
    let id = id.trim_start_matches("containerd://").to_owned();
    let tasks = provider.node(&node).run(&["ctr", "--namespace", "k8s.io", "tasks", "ls"], None).await?;
    let pid = tasks
        .stdout
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == id).then(|| f.next().map(str::to_owned)).flatten()
        })
        .with_context(|| format!("container {id} not among the tasks on {node}"))?;
    Ok((node, pid))
}

/// SIGSTOP freezes the web process: it is still there but answers nothing.
/// probe-server's liveness check times out, /livez fails, and the kubelet
/// restarts the web container (not the pod, not the sidecar).
pub async fn a_hung_workload_is_restarted_by_its_liveness_probe(c: &Cluster) -> Result<()> {
    let client = &c.client;
    let pod = web_pods(client).await?.into_iter().next().context("no web pod")?;
    let (pod_name, before) = (name(&pod), restarts(&pod, "web"));
    let sidecar_before = restarts(&pod, "probe-server");
    let (node, pid) = container_pid(c.provider.as_ref(), &pod, "web").await?;
    c.provider.node(&node).run(&["kill", "-STOP", &pid], None).await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let after =
        until_some(format!("web container of {pod_name} restarted"), Duration::from_secs(90), || async {
            let p = pods.get(&pod_name).await?;
            let n = restarts(&p, "web");
            Ok::<_, kube::Error>((n > before && pod_ready(&p)).then_some(p))
        })
        .await?;
    ensure!(restarts(&after, "probe-server") == sidecar_before, "the sidecar was restarted too");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let fields = format!("involvedObject.name={pod_name}");
    let liveness_failed = events.list(&ListParams::default().fields(&fields)).await?.items.iter().any(|e| {
        e.reason.as_deref() == Some("Unhealthy")
            && e.message.as_deref().is_some_and(|m| m.starts_with("Liveness probe failed"))
    });
    ensure!(liveness_failed, "the restart of {pod_name} was not caused by a failed liveness probe");
    Ok(())
}

/// Readiness of `pod` in the web Service's EndpointSlices (None: not listed).
async fn endpoint_ready(client: &Client, pod: &str) -> Result<Option<bool>> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let list = slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await?;
    Ok(list.items.iter().flat_map(|s| &s.endpoints).find_map(|e| {
        let target = e.target_ref.as_ref()?.name.as_deref()?;
        (target == pod).then(|| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
    }))
}

/// DNS is the pod's readiness dependency. Blocking it inside one pod's
/// network namespace (iptables through nsenter, from its node) makes that
/// pod's probe-server report not ready: the pod leaves the Service while
/// the other two keep serving, and it is not restarted (liveness ignores
/// dependencies). Unblocking brings it back.
pub async fn a_failing_dependency_takes_one_pod_out_of_the_service(c: &Cluster) -> Result<()> {
    let (client, url) = (&c.client, c.web_url()?);
    let pod = web_pods(client).await?.into_iter().find(pod_ready).context("no ready web pod")?;
    let pod_name = name(&pod);
    let restarts_before = restarts(&pod, "web");
    let (node, pid) = container_pid(c.provider.as_ref(), &pod, "probe-server").await?;
    let node = c.provider.node(&node);
    let rule = |op: &'static str, proto: &'static str| {
        vec![
            "nsenter", "-t", &pid, "-n", "iptables", op, "OUTPUT", "-p", proto, "--dport", "53", "-j",
            "REJECT",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    for proto in ["udp", "tcp"] {
        let argv = rule("-I", proto);
        node.run(&argv.iter().map(String::as_str).collect::<Vec<_>>(), None).await?;
    }
    let left =
        until_some(format!("{pod_name} leaves the web endpoints"), Duration::from_secs(60), || async {
            Ok::<_, anyhow::Error>((endpoint_ready(client, &pod_name).await? != Some(true)).then_some(()))
        })
        .await;
    // Traffic through the load balancer goes on, served by the other two,
    // once every node's kube-proxy has written the endpoints' change into
    // its rules: asynchronous, at least a second apart (`minSyncPeriod`),
    // and slower on a loaded machine.
    let mut answered = BTreeSet::new();
    let served_by_the_others = async {
        left?;
        let deadline = tokio::time::Instant::now() + KUBE_PROXY_SYNC;
        loop {
            answered =
                curl_many(url, 30).await.context("curls while one pod was not ready")?.into_iter().collect();
            if !answered.contains(&pod_name) || tokio::time::Instant::now() > deadline {
                return Ok::<_, anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    .await;
    for proto in ["udp", "tcp"] {
        let argv = rule("-D", proto);
        node.run(&argv.iter().map(String::as_str).collect::<Vec<_>>(), None).await?;
    }
    served_by_the_others?;
    ensure!(
        !answered.contains(&pod_name),
        "{pod_name} still answered through the load balancer {KUBE_PROXY_SYNC:?} after it left the endpoints: {answered:?}"
    );
    ensure!(answered.len() == 2, "expected the two other pods to answer, got {answered:?}");

    until_some(format!("{pod_name} back in the web endpoints"), Duration::from_secs(60), || async {
        Ok::<_, anyhow::Error>((endpoint_ready(client, &pod_name).await? == Some(true)).then_some(()))
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let after = restarts(&pods.get(&pod_name).await?, "web");
    if after != restarts_before {
        bail!(
            "{pod_name} was restarted for a failing dependency ({restarts_before} -> {after}): liveness must not depend on it"
        );
    }
    Ok(())
}

pub async fn a_deleted_pod_is_replaced(c: &Cluster) -> Result<()> {
    let client = &c.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let victim = name(&web_pods(client).await?.into_iter().next().context("no web pod")?);
    pods.delete(&victim, &DeleteParams::default()).await?;
    until_some("3 ready web replicas again, the deleted one gone", Duration::from_secs(90), || async {
        let now = web_pods(client).await?;
        let ready_names: Vec<String> = now.iter().filter(|p| pod_ready(p)).map(name).collect();
        Ok::<_, anyhow::Error>((ready_names.len() == 3 && !ready_names.contains(&victim)).then_some(()))
    })
    .await?;
    Ok(())
}
