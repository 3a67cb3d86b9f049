//! Helpers for vigil's end-to-end tests: a cluster created through vigil's
//! own `up`, shared by the checks as a [`Cluster`]; a client for it through
//! the merged kubeconfig context; the provider its nodes come from. Waits
//! use vigil's own poller (`vigil::poll`). Everything talks to real Docker
//! and a real API server.

pub mod browser;
pub mod ssh_hosts;

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Node, Pod},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use vigil::{
    addons::web,
    app::{Options, Target},
    cluster::ClusterSpec,
    conditions::{deployment_rolled_out, node_ready, pod_ready, ready_pods_by_node},
    images::ImageNames,
    poll::{until, until_some},
    progress::Progress,
    provider::{NodeProvider, NodeSpec},
    up::{Report, Scope},
};

/// Where the e2e's receivers listen on the host: the alerter's webhook, and
/// Alertmanager's. The cluster reaches the host at its node network's gateway.
pub const ALERTER_RECEIVER_PORT: u16 = 18787;
pub const ALERTMANAGER_RECEIVER_PORT: u16 = 18788;

/// The test cluster: its own name and node network, so it never touches a
/// cluster the user brought up with the defaults; its notices go to the
/// receivers the alerting checks run on the host. Tuned failover timings:
/// the drills would wait out upstream's five-minute tolerations otherwise.
pub fn test_spec() -> ClusterSpec {
    let node_subnet: ipnet::Ipv4Net = "172.29.250.0/24".parse().expect("valid");
    let host = node_subnet.hosts().next().expect("a gateway address");
    ClusterSpec {
        name: "vigil-e2e".into(),
        node_subnet,
        failover: vigil::cluster::Failover::Tuned,
        alerting: vigil::cluster::Alerting {
            webhook: Some(format!("http://{host}:{ALERTER_RECEIVER_PORT}/alerter")),
            alertmanager_webhook: Some(format!("http://{host}:{ALERTMANAGER_RECEIVER_PORT}/alertmanager")),
        },
        ..ClusterSpec::default()
    }
}

/// A kubeconfig file of the test's own, never the user's; in the user's
/// cache folder, not the shared temporary one, where anyone could plant a
/// link or a file of their own at a name known in advance.
pub fn test_kubeconfig() -> PathBuf {
    cache_dir().join("e2e").join("kubeconfig")
}

pub fn cache_dir() -> PathBuf {
    vigil::build::default_cache_dir()
}

/// The containers of the add-on table's pods on the test cluster, which
/// the checks expect to find (scraped, traced) without naming them.
pub fn addon_containers() -> Vec<vigil::addons::workloads::Container> {
    let spec = test_spec();
    let images = vigil::addons::crates().into_iter().map(|c| (c, images().version_tag(c))).collect();
    vigil::addons::workloads::containers(&vigil::addons::Input {
        spec: &spec,
        images: &images,
        api_server: None,
    })
}

/// The images the build produces, for the test cluster's repository.
pub fn images() -> ImageNames {
    ImageNames::new(test_spec().image_repository)
}

/// `vigil up` for `spec`, as the CLI runs it (cluster and every add-on).
pub async fn up(spec: &ClusterSpec) -> Result<Report> {
    up_on(spec, Target::containers(&spec.name)).await
}

/// `vigil up` of `spec` on the machines of `target`.
pub async fn up_on(spec: &ClusterSpec, target: Target) -> Result<Report> {
    let options =
        Options { cache: cache_dir(), kubeconfig: test_kubeconfig(), scope: Scope::Everything, target };
    vigil::app::up(spec, &options, &Progress::default()).await
}

pub async fn down(spec: &ClusterSpec) -> Result<()> {
    down_on(&Target::containers(&spec.name)).await.map(|_| ())
}

/// `vigil down` of the machines of `target`: what it removed and left.
pub async fn down_on(target: &Target) -> Result<vigil::provider::Removed> {
    vigil::app::down(target, &test_kubeconfig(), &cache_dir(), &Progress::default()).await
}

/// The provider `vigil` chooses on this machine.
pub async fn provider() -> Result<Arc<dyn NodeProvider>> {
    Ok(vigil::provider::connect(&vigil::provider::Machines::default()).await?)
}

/// A client through the context `up` merged into the kubeconfig.
pub async fn client(spec: &ClusterSpec) -> Result<(Client, Config)> {
    let kubeconfig = Kubeconfig::read_from(test_kubeconfig()).context("reading the test kubeconfig")?;
    let options = KubeConfigOptions { context: Some(spec.kube_context()), ..Default::default() };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    Ok((Client::try_from(config.clone())?, config))
}

/// The cluster the end-to-end checks share: created once by `vigil up`
/// (after a `vigil down`, so every run starts from nothing).
pub struct Cluster {
    pub spec: ClusterSpec,
    /// What the first `up` reported: its addresses and its join token.
    pub report: Report,
    /// vigil's credentials for Prometheus, Alertmanager and Jaeger, from
    /// the password file `up` wrote on the host (and named in its report).
    pub credentials: vigil::addons::credentials::Credentials,
    pub client: Client,
    /// The admin client's configuration (for clients with other credentials).
    pub config: Config,
    pub provider: Arc<dyn NodeProvider>,
}

impl Cluster {
    pub async fn create() -> Result<Self> {
        let spec = test_spec();
        down(&spec).await.context("vigil down before the tests")?;
        Self::up_on(spec, Target::containers(&test_spec().name)).await
    }

    /// `vigil up` of `spec` on the machines of `target`, for the checks.
    pub async fn up_on(spec: ClusterSpec, target: Target) -> Result<Self> {
        let provider = vigil::provider::connect(&target.machines).await?;
        let report = up_on(&spec, target).await.context("vigil up")?;
        let (client, config) = client(&spec).await?;
        let host = report.credentials.clone().context("up reported no credentials")?;
        let password = vigil::password_file::read(&host.password_file)
            .with_context(|| format!("reading {}", host.password_file.display()))?;
        let credentials = vigil::addons::credentials::Credentials { username: host.username, password };
        Ok(Cluster { provider, spec, report, credentials, client, config })
    }

    /// The one client for Prometheus, Alertmanager and Jaeger: vigil's
    /// credentials on every request (marked sensitive), no proxy.
    pub fn http(&self) -> Result<reqwest::Client> {
        let mut authorization = reqwest::header::HeaderValue::from_str(&self.credentials.basic_header())?;
        authorization.set_sensitive(true);
        Ok(reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .default_headers(reqwest::header::HeaderMap::from_iter([(
                reqwest::header::AUTHORIZATION,
                authorization,
            )]))
            .build()?)
    }

    /// A client without credentials, to prove they are needed.
    pub fn anonymous_http(&self) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?)
    }

    /// The URL `up` reported for the add-on address `key`.
    pub fn url(&self, key: &str) -> Result<&str> {
        self.report
            .address(key)
            .with_context(|| format!("up reported no {key} address: {:?}", self.report.addresses))
    }

    pub fn web_url(&self) -> Result<&str> {
        self.url(vigil::addons::web::NAME)
    }

    pub fn prometheus_url(&self) -> Result<&str> {
        self.url(vigil::addons::prometheus::NAME)
    }

    /// The machines, as the provider planned them.
    pub fn nodes(&self) -> Vec<NodeSpec> {
        self.provider.plan(&self.spec)
    }

    /// VictoriaLogs' base URL: `up` prints its UI's, under it.
    pub fn logs_url(&self) -> Result<String> {
        let ui = self.url(vigil::addons::victorialogs::NAME)?;
        ui.strip_suffix(vigil::addons::victorialogs::UI_PATH)
            .map(str::to_owned)
            .with_context(|| format!("{ui} does not end in the UI's path"))
    }

    /// The lines LogsQL `query` finds (at most `limit`, newest first), each a
    /// JSON object of its fields, as `/select/logsql/query` returns them.
    pub async fn logs(&self, query: &str, limit: usize) -> Result<Vec<serde_json::Value>> {
        let url = format!("{}select/logsql/query", self.logs_url()?);
        let limit = limit.to_string();
        let answer = self.http()?.get(&url).query(&[("query", query), ("limit", &limit)]).send().await?;
        let status = answer.status();
        let text = answer.text().await?;
        anyhow::ensure!(status.is_success(), "{url} {query:?}: {status}: {text}");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("{url}: not a JSON line: {l}")))
            .collect()
    }

    pub fn jaeger_url(&self) -> Result<&str> {
        self.url(vigil::addons::jaeger::NAME)
    }

    /// The trace `id` as Jaeger's query API returns it (`data[0]`), once it
    /// holds spans that `enough` accepts; polled (exports are batched every
    /// few seconds) for up to `within`.
    pub async fn jaeger_trace(
        &self,
        id: &str,
        within: std::time::Duration,
        enough: impl Fn(&Trace) -> bool,
    ) -> Result<Trace> {
        let url = format!("{}api/traces/{id}", self.jaeger_url()?);
        let http = self.http()?;
        let last = std::sync::Mutex::new(None::<Trace>);
        let (http, url, last_ref, enough) = (&http, &url, &last, &enough);
        let found = vigil::poll::until_some(format!("trace {id} in Jaeger"), within, || async move {
            let answer = http.get(url.as_str()).send().await?;
            if answer.status() == 404 {
                return Ok::<_, anyhow::Error>(None);
            }
            let body: serde_json::Value = answer.error_for_status()?.json().await?;
            let trace = Trace(body["data"][0].clone());
            let ok = enough(&trace);
            *last_ref.lock().expect("not poisoned") = Some(trace.clone());
            Ok(ok.then_some(trace))
        })
        .await;
        let last = last.lock().expect("not poisoned").as_ref().map(Trace::summary);
        found.map_err(|e| anyhow::anyhow!("{e}; last seen: {last:?}"))
    }
}

/// One trace from Jaeger's query API.
#[derive(Clone, Debug)]
pub struct Trace(pub serde_json::Value);

/// One span of a [`Trace`]: its operation, service, and ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub operation: String,
    pub service: String,
    pub span_id: String,
    pub parent: Option<String>,
}

impl Trace {
    pub fn spans(&self) -> Vec<Span> {
        let processes = &self.0["processes"];
        self.0["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| Span {
                operation: s["operationName"].as_str().unwrap_or_default().to_owned(),
                service: processes[s["processID"].as_str().unwrap_or_default()]["serviceName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                span_id: s["spanID"].as_str().unwrap_or_default().to_owned(),
                parent: s["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .and_then(|r| r["spanID"].as_str())
                    .map(str::to_owned),
            })
            .collect()
    }

    /// `service: operation` of every span, for messages.
    pub fn summary(&self) -> Vec<String> {
        self.spans().iter().map(|s| format!("{}: {}", s.service, s.operation)).collect()
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: std::time::Instant,
    /// The status code it was answered with.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as sent (signatures cover these bytes).
    pub raw: Vec<u8>,
    pub body: serde_json::Value,
}

/// An HTTP receiver on the host (all addresses, so the cluster reaches it
/// through the node network's gateway) that keeps what it gets and answers
/// with the status codes it is told, in turn (then 200).
#[derive(Clone)]
pub struct Receiver {
    pub seen: Arc<std::sync::Mutex<Vec<Received>>>,
    pub script: Arc<std::sync::Mutex<Vec<u16>>>,
}

impl Receiver {
    pub async fn start(port: u16) -> Result<Self> {
        use axum::{extract::State, http::HeaderMap, routing::post};
        let receiver = Receiver { seen: Arc::default(), script: Arc::default() };
        async fn take(
            State(r): State<Receiver>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::http::StatusCode {
            let headers = headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let raw = body.to_vec();
            let body = serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
            let status = {
                let mut script = r.script.lock().expect("not poisoned");
                if script.is_empty() { 200 } else { script.remove(0) }
            };
            r.seen.lock().expect("not poisoned").push(Received {
                at: std::time::Instant::now(),
                status,
                headers,
                raw,
                body,
            });
            axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK)
        }
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .with_context(|| format!("listening on port {port} for the cluster's notices"))?;
        let app = axum::Router::new().fallback(post(take)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(receiver)
    }

    pub fn received(&self) -> Vec<Received> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Whether it was answered 2xx (delivered, for the sender).
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The nodes holding Ready `web` pods, and how many each.
pub async fn web_pods_by_node(client: &Client) -> Result<BTreeMap<String, usize>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), web::NAMESPACE);
    let list = pods.list(&ListParams::default().labels(&format!("app={}", web::NAME))).await?;
    Ok(ready_pods_by_node(&list.items))
}

/// The node running the Ready pod labelled `app.kubernetes.io/name=<name>`
/// in `namespace` (Prometheus, Alertmanager: single pods whose node a check
/// must or must not break).
pub async fn node_running(client: &Client, namespace: &str, name: &str) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("app.kubernetes.io/name={name}");
    until_some(format!("a Ready {name} pod"), Duration::from_secs(180), || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        Ok::<_, kube::Error>(
            list.items.into_iter().filter(pod_ready).find_map(|p| p.spec.and_then(|s| s.node_name)),
        )
    })
    .await
    .map_err(Into::into)
}

/// Restarts `web` so that its pods spread over the workers again (after a
/// drill they all sit on the survivors), and waits for every node Ready and
/// exactly 3 `web` pods, all Ready.
pub async fn respread_web(client: &Client) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), web::NAMESPACE);
    let restart = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "vigil.dev/restarted-at": Timestamp::now().to_string()
    }}}}});
    deployments.patch(web::NAME, &PatchParams::default(), &Patch::Merge(&restart)).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    until(
        "every node Ready and web rolled out again",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            let listed = nodes.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            let not_ready: Vec<String> = listed
                .items
                .iter()
                .filter(|n| !node_ready(n))
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            if !not_ready.is_empty() {
                return Err(format!("not Ready: {not_ready:?}"));
            }
            let deployment = deployments.get_opt(web::NAME).await.map_err(|e| e.to_string())?;
            deployment_rolled_out(deployment.as_ref(), web::REPLICAS)?;
            // Old pods still terminating would be counted by the next
            // drill as pods the broken node held.
            let pods: Api<Pod> = Api::namespaced(client.clone(), web::NAMESPACE);
            let listed = pods
                .list(&ListParams::default().labels(&format!("app={}", web::NAME)))
                .await
                .map_err(|e| e.to_string())?;
            let ready = listed.items.iter().filter(|p| pod_ready(p)).count();
            if listed.items.len() != web::REPLICAS as usize || ready != web::REPLICAS as usize {
                return Err(format!("{} web pods, {ready} Ready", listed.items.len()));
            }
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// Creates a pod and waits until it has finished; returns (phase, logs).
pub async fn run_to_completion(
    client: &Client,
    namespace: &str,
    pod: Pod,
    limit: Duration,
) -> Result<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let name = pod.metadata.name.clone().context("pod needs a name")?;
    let _ = pods.delete(&name, &DeleteParams::default()).await;
    until_some(format!("old pod {name} gone"), Duration::from_secs(60), || async {
        Ok::<_, kube::Error>(pods.get_opt(&name).await?.is_none().then_some(()))
    })
    .await?;
    pods.create(&PostParams::default(), &pod).await?;
    let phase = until_some(format!("pod {name} finished"), limit, || async {
        let phase = pods.get(&name).await?.status.and_then(|s| s.phase).unwrap_or_default();
        Ok::<_, kube::Error>(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
    })
    .await?;
    let logs = pods.logs(&name, &LogParams::default()).await?;
    Ok((phase, logs))
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`); 0 when the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `docker ARGS`' output; its error output in the error.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("docker {args:?}"))?;
    anyhow::ensure!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every process in the node container `node` (its pods' too), as host
/// PIDs with their command lines.
pub fn host_processes(node: &str) -> Result<Vec<(u32, String)>> {
    let table = docker(&["top", node, "-eo", "pid,args"])?;
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (pid, args) = l.trim().split_once(' ')?;
            Some((pid.parse().ok()?, args.trim().to_owned()))
        })
        .collect())
}

/// The host PID of the process in `node` whose command line starts with `prefix`.
pub fn host_pid(node: &str, prefix: &str) -> Result<u32> {
    host_processes(node)?
        .into_iter()
        .find_map(|(pid, args)| args.starts_with(prefix).then_some(pid))
        .with_context(|| format!("no process `{prefix}` in {node}"))
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // USER_HZ: 100 on Linux x86_64, whatever the kernel's tick rate.
    Ok(ticks as f64 / 100.0)
}

/// The middle value (the upper one of an even count), for benchmark rounds.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
