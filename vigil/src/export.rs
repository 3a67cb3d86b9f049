//! `vigil export logs`: what a person asks for when something went wrong,
//! in one dated folder (kind's command of the same name): each node's
//! kubelet and containerd journals and the provider's inspect output; each
//! pod's container logs, current and previous; the cluster's events;
//! `kubectl describe` of the nodes and of every pod that is not Ready; and
//! `index.md`, which says what each file holds and what could not be
//! collected, and why. A dead node or an unreachable API server costs only
//! what depends on it.
//!
//! Logs can hold secrets (an application's output, a node's environment in
//! its inspect output), so the folder is made new with mode 0700 and every
//! file in it 0600, through [`crate::private`]: a folder or symbolic link
//! already at the path makes the export fail instead of writing through it.

use std::path::{Path, PathBuf};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::{
    Api, Client,
    api::{ListParams, LogParams},
};

use crate::{
    cluster::ClusterSpec,
    conditions::pod_ready,
    private::PrivateDir,
    progress::Progress,
    provider::{MachineState, Node, NodeProvider},
    up::ADMIN_CONF,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Write(#[from] crate::private::Error),
    #[error("cannot list the machines of cluster {cluster}: {source}")]
    Machines { cluster: String, source: crate::provider::Error },
}

/// One file of the export.
#[derive(Debug, Clone, serde::Serialize)]
pub struct File {
    /// Relative to the export's folder.
    pub path: String,
    pub what: String,
    pub bytes: usize,
}

/// What an export holds, and what it could not get.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Export {
    pub folder: PathBuf,
    pub files: Vec<File>,
    pub missing: Vec<String>,
}

/// An export being written into its own folder.
struct Writer {
    dir: PrivateDir,
    export: Export,
}

impl Writer {
    fn write(&mut self, path: &str, what: impl Into<String>, text: &str) -> Result<(), Error> {
        self.dir.write_new(path, text.as_bytes())?;
        self.export.files.push(File { path: path.into(), what: what.into(), bytes: text.len() });
        Ok(())
    }

    fn missing(&mut self, why: String) {
        self.export.missing.push(why);
    }
}

impl Export {
    /// `index.md`: every file with what it holds, then what is missing.
    fn index(&self, cluster: &str, taken_at: &str) -> String {
        let mut out = format!(
            "# Logs of cluster {cluster}, taken {taken_at}\n\n| file | holds | bytes |\n|---|---|---|\n"
        );
        for f in &self.files {
            out.push_str(&format!("| [{0}]({0}) | {1} | {2} |\n", f.path, f.what, f.bytes));
        }
        if self.missing.is_empty() {
            out.push_str("\nEverything was collected.\n");
        } else {
            out.push_str("\n## Not collected\n\n");
            for m in &self.missing {
                out.push_str(&format!("- {m}\n"));
            }
        }
        out
    }
}

/// Journals and pod logs are cut to their last lines: a node up for days,
/// or web logging each request under a drill's load, has megabytes.
const JOURNAL_LINES: &str = "20000";
const POD_LOG_LINES: i64 = 20_000;
const POD_LOG_BYTES: i64 = 8 * 1024 * 1024;

/// Collects everything into `<dir>/<cluster>-logs-<UTC time>/`; `client` is
/// the admin client, or why there is none.
pub async fn logs(
    provider: &dyn NodeProvider,
    spec: &ClusterSpec,
    client: Result<Client, String>,
    dir: &Path,
    progress: &Progress,
) -> Result<Export, Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let folder = PrivateDir::create_new(dir, &format!("{}-logs-{stamp}", spec.name))?;
    let mut export = Writer {
        export: Export { folder: folder.path().to_owned(), files: vec![], missing: vec![] },
        dir: folder,
    };

    let machines = provider
        .list_nodes(&spec.name)
        .await
        .map_err(|source| Error::Machines { cluster: spec.name.clone(), source })?;
    let line = progress.line(format!("journals and inspect output of {} nodes", machines.len()));
    for machine in &machines {
        let name = &machine.name;
        match provider.inspect(name).await {
            Ok(json) => export.write(
                &format!("nodes/{name}/inspect.json"),
                format!("{} inspect output", provider.name()),
                &json,
            )?,
            Err(e) => export.missing(format!("node {name}: inspect output: {e}")),
        }
        if machine.state != MachineState::Running {
            export.missing(format!(
                "node {name} is {}: its journals cannot be read until it runs",
                machine.state
            ));
            continue;
        }
        let node = provider.node(name);
        for unit in ["kubelet", "containerd"] {
            let argv =
                ["journalctl", "-u", unit, "--no-pager", "-o", "short-iso-precise", "-n", JOURNAL_LINES];
            match node.run(&argv, None).await {
                Ok(out) => export.write(
                    &format!("nodes/{name}/{unit}.log"),
                    format!("{unit} journal of {name}"),
                    &out.stdout,
                )?,
                Err(e) => export.missing(format!("node {name}: {unit} journal: {e}")),
            }
        }
    }
    line.done();

    let client = match client {
        Ok(client) => client,
        Err(why) => {
            export.missing(format!("everything from the API server (pod logs, events, describe): {why}"));
            return finish(export, spec, &now.to_string());
        }
    };
    let control_plane = crate::provider::control_plane(provider, spec);

    let line = progress.line("events, and describe of the nodes");
    match Api::<Event>::all(client.clone()).list(&ListParams::default()).await {
        Ok(list) => export.write(
            "cluster/events.txt",
            "every event in the cluster, oldest first",
            &events_text(list.items),
        )?,
        Err(e) => export.missing(format!("events: {e}")),
    }
    if let Some(cp) = &control_plane {
        match describe(cp.as_ref(), &["nodes"]).await {
            Ok(text) => export.write("cluster/describe-nodes.txt", "kubectl describe nodes", &text)?,
            Err(e) => export.missing(format!("kubectl describe nodes: {e}")),
        }
    }
    line.done();

    let pods = match Api::<Pod>::all(client.clone()).list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            export.missing(format!("pods and their logs: {e}"));
            return finish(export, spec, &now.to_string());
        }
    };
    let line = progress.line(format!("logs of {} pods", pods.len()));
    let jobs: Vec<(String, String, String, bool)> = pods
        .iter()
        .flat_map(|pod| {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
            pod.spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .map(move |c| {
                    let restarted = statuses.iter().any(|s| s.name == c.name && s.restart_count > 0);
                    (namespace.clone(), name.clone(), c.name.clone(), restarted)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut fetched = stream::iter(jobs)
        .map(|(namespace, pod, container, restarted)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            async move {
                let current = LogParams {
                    container: Some(container.clone()),
                    tail_lines: Some(POD_LOG_LINES),
                    limit_bytes: Some(POD_LOG_BYTES),
                    ..Default::default()
                };
                let previous = LogParams { previous: true, ..current.clone() };
                let now = api.logs(&pod, &current).await;
                let before = if restarted { Some(api.logs(&pod, &previous).await) } else { None };
                (namespace, pod, container, now, before)
            }
        })
        .buffer_unordered(8);
    // Written as they arrive: never every pod's log in memory at once.
    while let Some((namespace, pod, container, current, previous)) = fetched.next().await {
        let base = format!("pods/{namespace}/{pod}/{container}");
        match current {
            Ok(text) => export.write(
                &format!("{base}.log"),
                format!("log of {container} in {namespace}/{pod}"),
                &text,
            )?,
            Err(e) => export.missing(format!("log of {container} in {namespace}/{pod}: {}", e)),
        }
        match previous {
            Some(Ok(text)) => export.write(
                &format!("{base}.previous.log"),
                format!("log of {container}'s previous run in {namespace}/{pod}"),
                &text,
            )?,
            Some(Err(e)) => {
                export.missing(format!("previous log of {container} in {namespace}/{pod}: {}", e))
            }
            None => {}
        }
    }
    if let Some(cp) = &control_plane {
        for pod in pods.iter().filter(|p| !pod_ready(p)) {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            match describe(cp.as_ref(), &["pod", "-n", &namespace, &name]).await {
                Ok(text) => export.write(
                    &format!("pods/{namespace}/{name}/describe.txt"),
                    format!("kubectl describe of {namespace}/{name}, not Ready"),
                    &text,
                )?,
                Err(e) => export.missing(format!("kubectl describe pod {namespace}/{name}: {e}")),
            }
        }
    }
    line.done();
    finish(export, spec, &now.to_string())
}

fn finish(writer: Writer, spec: &ClusterSpec, taken_at: &str) -> Result<Export, Error> {
    let index = writer.export.index(&spec.name, taken_at);
    writer.dir.write_new("index.md", index.as_bytes())?;
    Ok(writer.export)
}

/// `kubectl describe`, run on the control plane with its admin credentials
/// (the node image carries kubectl).
async fn describe(cp: &dyn Node, what: &[&str]) -> Result<String, String> {
    let kubeconfig = format!("--kubeconfig={ADMIN_CONF}");
    let mut argv = vec!["kubectl", kubeconfig.as_str(), "describe"];
    argv.extend_from_slice(what);
    cp.run(&argv, None).await.map(|o| o.stdout).map_err(|e| e.to_string())
}

/// One line per event: when (last seen), type, reason, object, count, message.
fn events_text(mut events: Vec<Event>) -> String {
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()))
            .unwrap_or_default()
    };
    events.sort_by_key(when);
    events
        .iter()
        .map(|e| {
            let o = &e.involved_object;
            format!(
                "{} {} {} {}/{}/{} x{}: {}\n",
                when(e),
                e.type_.as_deref().unwrap_or("-"),
                e.reason.as_deref().unwrap_or("-"),
                o.kind.as_deref().unwrap_or("-"),
                o.namespace.as_deref().unwrap_or("-"),
                o.name.as_deref().unwrap_or("-"),
                e.count.unwrap_or(1),
                e.message.as_deref().unwrap_or("").trim(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_lists_files_and_what_is_missing() {
        let mut export = Export { folder: PathBuf::from("/x"), files: vec![], missing: vec![] };
        export.files.push(File {
            path: "nodes/w1/kubelet.log".into(),
            what: "kubelet journal of w1".into(),
            bytes: 10,
        });
        let complete = export.index("c", "t");
        assert!(
            complete
                .contains("| [nodes/w1/kubelet.log](nodes/w1/kubelet.log) | kubelet journal of w1 | 10 |")
        );
        assert!(complete.contains("Everything was collected."));
        export.missing.push("node w2 is stopped: its journals cannot be read until it runs".into());
        let partial = export.index("c", "t");
        assert!(partial.contains("## Not collected\n\n- node w2 is stopped"), "{partial}");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn an_export_is_readable_by_its_owner_only() {
        let spec = ClusterSpec::default();
        let provider = crate::provider::fake::FakeProvider::with_machines(&spec);
        let root = tempfile::tempdir().unwrap();
        let no_api = Err("no API server in this test".to_owned());
        let export = logs(&provider, &spec, no_api, root.path(), &Progress::default()).await.unwrap();
        assert_eq!(mode(&export.folder), 0o700);
        assert!(export.files.len() >= 3, "{:?}", export.files);
        for file in export.files.iter().map(|f| f.path.as_str()).chain(["index.md"]) {
            assert_eq!(mode(&export.folder.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&export.folder.join("nodes")), 0o700);
    }

    #[tokio::test]
    async fn a_link_planted_at_the_export_folder_is_refused() {
        let spec = ClusterSpec::default();
        let provider = crate::provider::fake::FakeProvider::with_machines(&spec);
        let root = tempfile::tempdir().unwrap();
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        // The folder's name is the cluster's and the second: plant a link
        // for this second and the next few.
        let now = k8s_openapi::jiff::Timestamp::now();
        for s in 0..5 {
            let at = now + k8s_openapi::jiff::SignedDuration::from_secs(s);
            let name = format!("{}-logs-{}", spec.name, at.strftime("%Y%m%dT%H%M%SZ"));
            std::os::unix::fs::symlink(&elsewhere, root.path().join(name)).unwrap();
        }
        let no_api = Err("no API server in this test".to_owned());
        let err = logs(&provider, &spec, no_api, root.path(), &Progress::default()).await.unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing written through the link");
    }
}
