//! The step list driven end to end without a machine: the fake provider
//! plays the nodes, a mocked API server (tower-test, the way
//! kube-rs/controller-rs tests its reconciler) plays the cluster.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use http::{Method, Request, Response};
use kube::{Client, client::Body};
use serde_json::{Value, json};

use super::*;
use crate::{
    cluster::ClusterSpec,
    progress::Progress,
    provider::{NodeProvider, NodeSpec, fake::FakeProvider},
};

/// A request the mocked API server saw: method and path with query.
type Seen = Arc<Mutex<Vec<(Method, String)>>>;

/// A mocked API server that answers every request with `answer(method,
/// path, body)`, recording what it was asked.
fn mock_api(answer: impl Fn(&Method, &str, &[u8]) -> (u16, Value) + Send + 'static) -> (Client, Seen) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.unwrap_or_default();
            let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let (status, json) = answer(&parts.method, &path, &body);
            record.lock().unwrap().push((parts.method, path));
            let response =
                Response::builder().status(status).body(Body::from(serde_json::to_vec(&json).unwrap()));
            send.send_response(response.unwrap());
        }
    });
    (Client::new(service, "default"), seen)
}

/// A request from `requester` (a node, in system:nodes) whose PEM is the
/// fixture `request` of `tests/fixtures/csr/`.
fn csr(name: &str, requester: &str, signer: &str, request: &str, approved: bool) -> Value {
    use base64::Engine as _;
    let conditions = if approved { json!([{"type": "Approved", "status": "True"}]) } else { json!(null) };
    let pem = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/csr").join(request),
    )
    .unwrap();
    json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem), "signerName": signer,
            "username": requester, "groups": ["system:nodes", "system:authenticated"],
            "usages": ["digital signature", "server auth"],
        },
        "status": {"conditions": conditions},
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {}, "items": items})
}

fn ready_pod(namespace: &str) -> Value {
    json!({"metadata": {"name": "p", "namespace": namespace}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
}

const SERVING: &str = "kubernetes.io/kubelet-serving";

/// A cluster whose nodes are Ready, whose system pods run, and which holds
/// serving-certificate requests from its own nodes and from a stranger.
/// The bootstrap signer has signed cluster-info for the token `token_id`.
/// A bootstrap token created through the API is added to `nodes_state`'s
/// tokens, where `kubeadm token delete` on the fake control plane removes it.
fn healthy_cluster(
    nodes: Vec<NodeSpec>,
    token_id: String,
    nodes_state: Arc<Mutex<crate::provider::fake::State>>,
) -> impl Fn(&Method, &str, &[u8]) -> (u16, Value) + Send + 'static {
    move |method, path, body| {
        match (method.as_str(), path.split('?').next().unwrap_or_default()) {
        ("POST", "/api/v1/namespaces/kube-system/secrets") => {
            let secret: Value = serde_json::from_slice(body).unwrap_or(json!({}));
            if secret["type"] == "bootstrap.kubernetes.io/token" {
                let id = secret["stringData"]["token-id"].as_str().unwrap_or_default().to_owned();
                nodes_state.lock().unwrap().tokens.insert(id);
            }
            (201, secret)
        }
        ("GET", "/api/v1/namespaces/kube-public/configmaps") => (
            200,
            json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": "1"}, "items": [
                {"metadata": {"name": "cluster-info", "namespace": "kube-public"},
                 "data": {"kubeconfig": "", format!("jws-kubeconfig-{token_id}"): "signature"}}
            ]}),
        ),
        ("GET", "/apis/certificates.k8s.io/v1/certificatesigningrequests") => (
            200,
            list(
                "CertificateSigningRequest",
                vec![
                    csr("ours-pending", "system:node:vigil-worker", SERVING, "vigil-worker.pem", false),
                    csr("ours-decided", "system:node:vigil-worker2", SERVING, "other-node.pem", true),
                    csr("stranger", "system:node:someone-else", SERVING, "vigil-worker.pem", false),
                    csr("client-cert", "system:node:vigil-worker2", "kubernetes.io/kube-apiserver-client-kubelet", "other-node.pem", false),
                    // A node of this cluster asking for what is not its own.
                    csr("foreign-ip", "system:node:vigil-worker", SERVING, "foreign-ip.pem", false),
                    csr("foreign-dns", "system:node:vigil-worker", SERVING, "foreign-dns.pem", false),
                    csr("other-node", "system:node:vigil-worker", SERVING, "other-node.pem", false),
                ],
            ),
        ),
        ("GET", "/api/v1/nodes") => (
            200,
            list(
                "Node",
                nodes
                    .iter()
                    .map(|n| json!({"metadata": {"name": n.name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
                    .collect(),
            ),
        ),
        ("GET", path) if path.ends_with("/pods") => {
            let namespace = path.split('/').nth(4).unwrap_or_default();
            (200, list("Pod", vec![ready_pod(namespace)]))
        }
        // Server-side apply and approvals: the object as sent.
        ("PATCH", _) => (200, serde_json::from_slice(body).unwrap_or(json!({}))),
        (method, path) => (404, json!({"kind": "Status", "code": 404, "message": format!("{method} {path}")})),
    }
    }
}

struct Harness {
    provider: FakeProvider,
    dir: tempfile::TempDir,
    secrets: Mutex<Vec<String>>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            provider: FakeProvider::default(),
            dir: tempfile::tempdir().unwrap(),
            secrets: Mutex::default(),
        }
    }

    /// One `vigil up --cluster-only`, against a healthy mocked cluster.
    async fn up(&self) -> (Result<Report, Failed>, Seen) {
        let spec = ClusterSpec::default();
        let ctx = Context::new(
            spec.clone(),
            Arc::new(self.provider.clone()),
            Progress::default(),
            self.dir.path().join("logs"),
            self.dir.path().join("kubeconfig"),
            crate::provider::NodeArtefact { image: "node-image".into() },
            None,
        );
        let state = self.provider.state.clone();
        let (client, seen) = mock_api(healthy_cluster(ctx.nodes.clone(), ctx.token.id().to_owned(), state));
        ctx.set_client(client);
        let result = Plan::new(steps(Scope::ClusterOnly)).run(&ctx).await;
        self.secrets.lock().unwrap().push(ctx.token.to_string());
        (result, seen)
    }

    /// Every bootstrap token an `up` of this harness used, in full.
    fn tokens(&self) -> Vec<String> {
        self.secrets.lock().unwrap().clone()
    }

    /// Every file `up` wrote on the host, with its mode and contents.
    fn host_files(&self) -> Vec<(std::path::PathBuf, u32, String)> {
        use std::os::unix::fs::PermissionsExt;
        let mut found = vec![];
        let mut dirs = vec![self.dir.path().to_owned()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    dirs.push(path);
                } else {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    found.push((path, meta.permissions().mode() & 0o777, text));
                }
            }
        }
        found
    }
}

fn outcome<'a>(report: &'a Report, step: &str) -> &'a str {
    report.steps.iter().find(|s| s.name == step).map(|s| s.outcome).unwrap_or("not run")
}

#[tokio::test]
async fn the_cluster_comes_up_and_the_token_is_deleted_after_the_joins() {
    let harness = Harness::new();
    let (report, seen) = harness.up().await;
    let report = report.unwrap();
    assert_eq!(report.steps.len(), steps(Scope::ClusterOnly).len());
    assert!(report.steps.iter().all(|s| s.outcome == "done"), "{:?}", report.steps);
    assert!(report.join_token.is_some(), "the workers joined now");

    let p = &harness.provider;
    let delete = p.position("vigil-control-plane", "kubeadm token delete").expect("the token was deleted");
    for worker in ["vigil-worker", "vigil-worker2"] {
        let join = p.position(worker, "kubeadm join").expect("the worker joined");
        assert!(join < delete, "{worker} joined after the token was deleted");
    }
    assert!(p.state.lock().unwrap().tokens.is_empty(), "no bootstrap token outlives the joins");
    let kubeconfig = std::fs::read_to_string(harness.dir.path().join("kubeconfig")).unwrap();
    assert!(kubeconfig.contains("name: vigil\n"), "{kubeconfig}");

    // Only this cluster's pending serving certificate for its own names was
    // approved: not a stranger's, not one for another address, name or node.
    let approvals: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, path)| *m == Method::PATCH && path.contains("/approval"))
        .map(|(_, path)| path.clone())
        .collect();
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    let ready = report.steps.iter().find(|s| s.name == "nodes ready").unwrap();
    // The stranger's and the three asking for what is not their node's.
    assert!(
        ready.detail.ends_with("1 serving certificates approved, 4 requests refused (see the log)"),
        "{}",
        ready.detail
    );
    assert!(
        approvals[0]
            .starts_with("/apis/certificates.k8s.io/v1/certificatesigningrequests/ours-pending/approval")
    );
}

#[tokio::test]
async fn every_node_and_the_cluster_hold_the_spec_it_was_made_with() {
    let harness = Harness::new();
    let (report, seen) = harness.up().await;
    report.unwrap();
    let saved = crate::saved_spec::Saved::of(&ClusterSpec::default());
    let state = harness.provider.state.lock().unwrap();
    for node in ["vigil-control-plane", "vigil-worker", "vigil-worker2"] {
        let text = &state.files[node][crate::saved_spec::NODE_PATH];
        assert_eq!(crate::saved_spec::Saved::from_json(text).unwrap(), saved, "{node}");
        assert_eq!(state.modes[&(node.to_owned(), crate::saved_spec::NODE_PATH.to_owned())], 0o600);
    }
    let applied = seen.lock().unwrap().iter().any(|(method, path)| {
        *method == Method::PATCH
            && path.starts_with("/api/v1/namespaces/kube-system/configmaps/vigil-cluster?")
    });
    assert!(applied, "the ConfigMap was not applied");
}

#[tokio::test]
async fn existing_prefers_the_saved_spec_and_skips_nodes_without_one() {
    let spec = ClusterSpec { pod_subnet: "10.50.0.0/16".parse().unwrap(), workers: 2, ..Default::default() };
    let provider = FakeProvider::with_machines(&spec);
    // Made by an older vigil: only what the machines tell.
    let discovered = crate::provider::existing(&provider, "vigil").await.unwrap();
    assert_eq!(discovered.pod_subnet, ClusterSpec::default().pod_subnet);

    // The control plane's copy is unreadable; a worker's answers.
    let cp = provider.node("vigil-control-plane");
    cp.copy_in(crate::saved_spec::NODE_PATH, b"{not json", 0o600).await.unwrap();
    let saved = crate::saved_spec::Saved::of(&spec).to_json();
    provider
        .node("vigil-worker2")
        .copy_in(crate::saved_spec::NODE_PATH, saved.as_bytes(), 0o600)
        .await
        .unwrap();
    assert_eq!(crate::provider::existing(&provider, "vigil").await.unwrap(), spec);
    assert!(crate::provider::existing(&provider, "other").await.is_err(), "no machine, no cluster");
}

#[tokio::test]
async fn a_failed_join_resumes_on_the_next_up() {
    let harness = Harness::new();
    let p = &harness.provider;
    p.fail_once("vigil-worker2", "kubeadm join");
    let (failed, _) = harness.up().await;
    let failed = failed.unwrap_err();
    assert_eq!(failed.step, "kubeadm join");
    let message = format!("{:#}", anyhow::Error::new(failed.source));
    assert!(message.contains("node vigil-worker2: kubeadm join failed"), "{message}");
    assert!(message.contains("vigil-worker2-kubeadm-join.log"), "the message names the log: {message}");
    assert!(failed.not_started.contains(&"nodes ready".to_owned()), "{:?}", failed.not_started);
    assert!(p.state.lock().unwrap().tokens.is_empty(), "the token is deleted even when a join fails");

    let (again, seen_again) = harness.up().await;
    let again = again.unwrap();
    assert_eq!(outcome(&again, "kubeadm init"), "skipped");
    assert_eq!(outcome(&again, "kubeadm join"), "done");
    let joins = |node: &str| p.commands(node).iter().filter(|c| c.starts_with("kubeadm join")).count();
    assert_eq!(joins("vigil-worker"), 1, "the worker that had joined is left alone");
    let worker2 = p.commands("vigil-worker2");
    let reset =
        worker2.iter().position(|c| c == "kubeadm reset --force").expect("the half-done join is reset");
    let second_join = worker2.iter().rposition(|c| c.starts_with("kubeadm join")).unwrap();
    assert!(reset < second_join, "{worker2:?}");
    let created: Vec<String> = seen_again
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, path)| *m == Method::POST && path.starts_with("/api/v1/namespaces/kube-system/secrets"))
        .map(|(_, path)| path.clone())
        .collect();
    assert_eq!(
        created.len(),
        1,
        "init did not run again, so join makes a token through the API: {created:?}"
    );
    assert!(p.state.lock().unwrap().tokens.is_empty(), "and deletes it after the joins");

    // A third `up` changes nothing.
    let (third, _) = harness.up().await;
    let third = third.unwrap();
    assert_eq!(outcome(&third, "kubeadm join"), "skipped");
    assert!(third.join_token.is_none());
}

/// The bootstrap token's secret half never reaches a command line (where
/// every user of the host sees it in the process list), a step's log or an
/// error; the files that carry it are root's alone on the node and gone
/// once the joins are over; the logs on the host are the user's alone.
#[tokio::test]
async fn the_bootstrap_token_stays_out_of_commands_and_logs() {
    let harness = Harness::new();
    let p = &harness.provider;
    // A failed join first: its error and log must not carry the token either.
    p.fail_once("vigil-worker", "kubeadm join");
    let (failed, _) = harness.up().await;
    let message = format!("{:#}", anyhow::Error::new(failed.unwrap_err().source));
    // The second `up` skips init and makes its token through the API.
    let (again, _) = harness.up().await;
    again.unwrap();

    let tokens = harness.tokens();
    assert_eq!(tokens.len(), 2);
    let state = p.state.lock().unwrap();
    for token in &tokens {
        let secret = token.split_once('.').unwrap().1;
        for (node, command) in &state.log {
            assert!(!command.contains(secret), "on {node}, `{command}` holds the token");
        }
        assert!(!message.contains(secret), "the error holds the token: {message}");
    }
    // The files that carried a token were written 0600, and the workers'
    // join configs are gone.
    let mut carried = 0;
    for ((node, path), mode) in &state.modes {
        let text = state.files[node].get(path).cloned().unwrap_or_default();
        let had_token = path == crate::up::init::KUBEADM_CONFIG;
        if had_token {
            carried += 1;
            assert_eq!(*mode, 0o600, "{node}:{path}");
            if node != "vigil-control-plane" {
                assert!(!state.files[node].contains_key(path), "{node} keeps {path}: {text}");
            }
        }
    }
    assert!(carried >= 3, "the init config and two join configs: {:?}", state.modes);
    drop(state);

    let files = harness.host_files();
    let logs: Vec<_> =
        files.iter().filter(|(path, ..)| path.extension().is_some_and(|e| e == "log")).collect();
    assert!(logs.len() >= 4, "kubeadm's steps left their logs: {files:?}");
    for (path, mode, text) in &files {
        assert_eq!(*mode, 0o600, "{}", path.display());
        for token in &tokens {
            let secret = token.split_once('.').unwrap().1;
            assert!(!text.contains(secret), "{} holds the token", path.display());
        }
    }
    let logs_dir = harness.dir.path().join("logs");
    let dir_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&logs_dir).unwrap().permissions());
    assert_eq!(dir_mode & 0o777, 0o700);
}

/// A step of the runner's own tests: waits for `wait_for` (when given), then opens `opens`.
struct Toy {
    name: &'static str,
    needs: Vec<String>,
    gate: Arc<tokio::sync::Notify>,
    waits: bool,
    fails: bool,
}

#[async_trait]
impl Step for Toy {
    fn name(&self) -> String {
        self.name.into()
    }
    fn needs(&self) -> Vec<String> {
        self.needs.clone()
    }
    fn title(&self, _: &Context) -> String {
        self.name.into()
    }
    async fn run(&self, _: &Context, _: &Line) -> Result<Outcome> {
        if self.waits {
            self.gate.notified().await;
        } else {
            self.gate.notify_one();
        }
        match self.fails {
            true => Err(Error::OutOfOrder("a test failure")),
            false => Ok(Outcome::done()),
        }
    }
}

fn toy_context(dir: &std::path::Path) -> Context {
    Context::new(
        ClusterSpec::default(),
        Arc::new(FakeProvider::default()),
        Progress::default(),
        dir.join("logs"),
        dir.join("kubeconfig"),
        crate::provider::NodeArtefact { image: String::new() },
        None,
    )
}

#[tokio::test]
async fn independent_steps_run_at_once_and_a_failure_stops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = toy_context(dir.path());
    let gate = Arc::new(tokio::sync::Notify::new());
    let toy = |name, needs: &[&str], waits, fails| -> Box<dyn Step> {
        Box::new(Toy {
            name,
            needs: needs.iter().map(|s| s.to_string()).collect(),
            gate: gate.clone(),
            waits,
            fails,
        })
    };
    // `a` can only finish while `b` runs: a runner that ran them one after
    // the other would never get past `a`.
    let plan = Plan::new(vec![
        toy("a", &[], true, false),
        toy("b", &[], false, false),
        toy("c", &["a", "b"], false, true),
        toy("d", &["c"], false, false),
    ]);
    let failed = tokio::time::timeout(Duration::from_secs(5), plan.run(&ctx))
        .await
        .expect("a and b ran at once")
        .unwrap_err();
    assert_eq!(failed.step, "c");
    assert_eq!(failed.not_started, ["d"]);
    let mut finished: Vec<&str> = failed.finished.iter().map(|s| s.name.as_str()).collect();
    finished.sort();
    assert_eq!(finished, ["a", "b"]);
}

#[tokio::test]
async fn up_is_one_trace_with_a_span_per_step() {
    // Process-wide: tracing caches whether a callsite is enabled, and the
    // other tests' threads would race a thread-local subscriber. Their plans
    // are recorded too; this one is told apart by its steps' names.
    static RECORDED: std::sync::OnceLock<vigil_telemetry::otel::Recorded> = std::sync::OnceLock::new();
    let recorded = RECORDED.get_or_init(|| {
        let (subscriber, recorded) = vigil_telemetry::otel::recording_subscriber();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in unit tests");
        recorded
    });
    let dir = tempfile::tempdir().unwrap();
    let ctx = toy_context(dir.path());
    let gate = Arc::new(tokio::sync::Notify::new());
    let toy = |name, needs: &[&str], fails| -> Box<dyn Step> {
        let needs = needs.iter().map(|s| s.to_string()).collect();
        Box::new(Toy { name, needs, gate: gate.clone(), waits: false, fails })
    };
    let plan = Plan::new(vec![
        toy("traced-a", &[], false),
        toy("traced-b", &["traced-a"], true),
        toy("traced-c", &["traced-b"], false),
    ]);
    assert!(plan.run(&ctx).await.is_err());
    let spans = recorded.spans();
    let a = spans.iter().find(|s| s.name == "traced-a").expect("a span for step traced-a");
    let root = spans.iter().find(|s| s.span_context.span_id() == a.parent_span_id).expect("its parent");
    assert_eq!(root.name, "vigil up");
    let steps: Vec<(&str, bool)> = spans
        .iter()
        .filter(|s| s.parent_span_id == root.span_context.span_id())
        .map(|s| {
            (
                s.name.as_ref(),
                matches!(s.status, vigil_telemetry::otel::opentelemetry::trace::Status::Error { .. }),
            )
        })
        .collect();
    // One span per step that ran, the failed one marked as an error; none for `c`.
    assert_eq!(steps, [("traced-a", false), ("traced-b", true)], "{spans:?}");
    // Other tests' plans run meanwhile, each its own trace: only this plan's steps are compared.
    let ours = spans.iter().filter(|s| s.name.starts_with("traced-"));
    assert!(ours.clone().count() >= 2, "{spans:?}");
    assert!(ours.clone().all(|s| s.span_context.trace_id() == root.span_context.trace_id()), "{spans:?}");
}

#[test]
#[should_panic(expected = "needs \"later\", which does not come before it")]
fn a_step_may_only_need_an_earlier_one() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let step = Toy { name: "first", needs: vec!["later".into()], gate, waits: false, fails: false };
    Plan::new(vec![Box::new(step)]);
}

#[test]
fn every_addon_step_needs_what_its_addon_needs() {
    let plan = Plan::new(steps(Scope::Everything));
    let names = plan.names();
    for addon in ADDONS {
        assert!(names.contains(&format!("install {}", addon.name)));
        assert!(names.contains(&format!("{} ready", addon.name)));
    }
    // The cluster-only list is a prefix of the whole.
    let cluster = Plan::new(steps(Scope::ClusterOnly)).names();
    assert_eq!(names[..cluster.len()], cluster[..]);
}

/// A mocked API server that keeps Secrets (create, get, apply) and accepts
/// any other apply; what it holds, by `namespace/name`.
fn secret_store() -> (Client, Arc<Mutex<std::collections::BTreeMap<String, Value>>>) {
    use base64::Engine as _;
    let store: Arc<Mutex<std::collections::BTreeMap<String, Value>>> = Arc::default();
    let held = store.clone();
    let status = |code: u16, reason: &str| {
        (
            code,
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "code": code}),
        )
    };
    let (client, _) = mock_api(move |method, path, body| {
        let path = path.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.trim_start_matches("/api/v1/namespaces/").split('/').collect();
        let mut store = held.lock().unwrap();
        match (method.as_str(), parts.as_slice()) {
            ("POST", [ns, "secrets"]) => {
                let mut secret: Value = serde_json::from_slice(body).unwrap();
                let key = format!("{ns}/{}", secret["metadata"]["name"].as_str().unwrap());
                if store.contains_key(&key) {
                    return status(409, "AlreadyExists");
                }
                // What the API server does with stringData.
                if let Some(strings) = secret.as_object_mut().unwrap().remove("stringData") {
                    let data: serde_json::Map<String, Value> = strings
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| {
                            let encoded =
                                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap());
                            (k.clone(), Value::String(encoded))
                        })
                        .collect();
                    secret["data"] = Value::Object(data);
                }
                store.insert(key, secret.clone());
                (201, secret)
            }
            ("GET", [ns, "secrets", name]) => match store.get(&format!("{ns}/{name}")) {
                Some(secret) => (200, secret.clone()),
                None => status(404, "NotFound"),
            },
            ("PATCH", [ns, "secrets", name]) => {
                let secret: Value = serde_json::from_slice(body).unwrap();
                store.insert(format!("{ns}/{name}"), secret.clone());
                (200, secret)
            }
            ("PATCH", _) => (200, serde_json::from_slice(body).unwrap()),
            other => panic!("unexpected request {other:?}"),
        }
    });
    (client, store)
}

#[tokio::test]
async fn credentials_are_made_once_and_every_copy_matches_the_source_read_back() {
    use crate::addons::credentials::{self as creds, OTLP_SECRET};
    let dir = tempfile::tempdir().unwrap();
    let ctx = toy_context(dir.path());
    let (client, store) = secret_store();
    // An earlier `up` made the span senders' Secret: its password, not a new one, is what the copy carries.
    let earlier = creds::Credentials { username: "otlp".into(), password: "made-by-an-earlier-up".into() };
    let source = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": OTLP_SECRET, "namespace": "monitoring"},
        "data": {
            "username": "b3RscA==",
            "password": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "made-by-an-earlier-up"),
            "headers": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, creds::otlp_headers(&earlier)),
        },
    });
    store.lock().unwrap().insert(format!("monitoring/{OTLP_SECRET}"), source);
    ctx.set_client(client.clone());
    let step = credentials::Credentials { dir: dir.path().join("config") };
    let line = ctx.progress.line("credentials");
    let first = step.run(&ctx, &line).await.unwrap();
    assert!(matches!(first, Outcome::Done(_)));
    let held = store.lock().unwrap().clone();
    assert_eq!(
        held.keys().collect::<Vec<_>>(),
        [
            "default/vigil-otlp-credentials",
            "logging/vigil-logs-credentials",
            "monitoring/vigil-api-credentials",
            "monitoring/vigil-logs-credentials",
            "monitoring/vigil-otlp-credentials"
        ]
    );
    // The log shippers' copy carries the password their store's proxy checks.
    assert_eq!(
        held["logging/vigil-logs-credentials"]["data"]["password"],
        held["monitoring/vigil-logs-credentials"]["data"]["password"]
    );
    let copy = &held["default/vigil-otlp-credentials"]["data"]["headers"];
    let expected =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, creds::otlp_headers(&earlier));
    assert_eq!(copy, &Value::String(expected));
    let api = creds::read_api(&client).await.unwrap();
    let host = ctx.credentials().unwrap();
    assert_eq!(host.username, "vigil");
    assert_eq!(host.password_file, dir.path().join("config/vigil/api-password"));
    assert_eq!(crate::password_file::read(&host.password_file).unwrap(), api.password);
    // A second run generates nothing and changes nothing.
    let again = step.run(&ctx, &line).await.unwrap();
    assert!(matches!(again, Outcome::Skipped(_)));
    assert_eq!(creds::read_api(&client).await.unwrap(), api);
    line.done();
}
