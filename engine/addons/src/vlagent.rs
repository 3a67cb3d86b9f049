//! vlagent, VictoriaLogs' agent, built from the same Go module: a DaemonSet
//! on every node (control plane included) whose Kubernetes collector tails
//! each container's log file the kubelet keeps under `/var/log/pods` and
//! ships the lines to [`super::victorialogs`], with the pod's namespace,
//! name, container and node as fields. It reads the node's files through
//! read-only host paths, which no Pod Security level short of `privileged`
//! admits, so it has a namespace of its own (`logging`), which says why.
//!
//! What it may do, and nothing more:
//! - it runs as root with no capabilities: the log files are the root
//!   user's (mode 0640), readable by their owner without `CAP_DAC_*`;
//!   its root filesystem is read-only, its only writable directory is its
//!   own on the node (a hostPath, `/var/lib/vigil-vlagent`): its read
//!   offsets and the lines not yet delivered, bounded by
//!   [`PENDING_LIMIT`]. On the node rather than in an emptyDir, so that a
//!   replaced pod (a new image, an eviction) resumes from the offsets its
//!   predecessor saved, sending no line twice and losing none it had
//!   queued; the DaemonSet's rolling update stops the old pod before the
//!   new one starts, so one vlagent at a time writes there;
//! - its role: `get`/`list`/`watch` pods (its node's, by field selector),
//!   `get` nodes (its own, at start), `list` namespaces (their names);
//! - it writes only `POST /insert/native` on the store, as the log shippers'
//!   user, whose password is a file from its namespace's copy of the Secret;
//! - its own `/insert/*` endpoints are off (`-insert.disable`): otherwise
//!   any pod could send lines through it with its credentials. Its port
//!   serves only `/health` and `/metrics`.
//!
//! Its pod has a second container, [`JOURNAL_SHIPPER`] (a crate of this
//! workspace): vlagent has no journal reader, so the shipper reads the
//! node's journal files (read-only host paths) and posts the kubelet's and
//! containerd's entries to the store's journald endpoint as the same user,
//! in bounded batches, resuming after the last entry the store took (its
//! cursor in its own directory on the node, `/var/lib/vigil-journal-shipper`).
//! It runs as root with no capabilities for the same reason as vlagent
//! (the journal files are root's, mode 0640), and its admin port serves
//! `/live`, `/ready` and `/metrics` (`journal_shipper_*`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HostPathVolumeSource, KeyToPath, Namespace,
    PodSecurityContext, PodSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use kube::api::ObjectMeta;

use super::{
    Addon, ImageFrom, ImageRun, Input, Manifests, ROLLOUT, Rollout, UpstreamImage, cluster_identity,
    core_rule, credentials, http_get_probe,
    node_exporter::{monitoring_daemon_set, monitoring_labels},
    pod_security, resources, upstream, victorialogs,
};
use crate::apply::Object;
use vigil_model::cluster::ClusterSpec;
use vigil_model::versions;

pub const NAME: &str = "vlagent";
pub const NAMESPACE: &str = credentials::LOGS_NAMESPACE;
/// `/health` and `/metrics`.
pub const PORT: u16 = 9429;
/// The kubelet's log files, and the symlinks to them vlagent starts from.
const POD_LOGS: &str = "/var/log/pods";
const CONTAINER_LOGS: &str = "/var/log/containers";
/// Inside the container.
const STATE_DIR: &str = "/var/lib/vlagent";
/// On the node: vigil's alone, created by the kubelet if missing.
pub const NODE_STATE_DIR: &str = "/var/lib/vigil-vlagent";
const CREDENTIALS_DIR: &str = "/etc/vlagent/credentials";
/// Lines kept while the store is away, per node; older ones are dropped
/// past it (hours of vigil's pods). vlagent's smallest: it buffers in
/// files of about this size and rounds anything smaller up to it.
pub const PENDING_LIMIT: &str = "512MiB";
/// The longest wait between two tries to send a batch the store refused or
/// did not answer.
pub const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);
const POD_SECURITY_REASON: &str = "vlagent reads the kubelet's container log files from each node (hostPath /var/log/pods and /var/log/containers, read-only) and keeps its read offsets there (hostPath /var/lib/vigil-vlagent); its journal-shipper reads the node's journal (hostPath /var/log/journal and /run/log/journal, read-only) and keeps its cursor there (hostPath /var/lib/vigil-journal-shipper); baseline forbids host paths too";

/// The sidecar that ships the node's kubelet and containerd journal entries.
pub const JOURNAL_SHIPPER: &str = "journal-shipper";
/// Its `/live`, `/ready` and `/metrics`.
pub const JOURNAL_SHIPPER_PORT: u16 = 9430;
/// The journal units it ships.
pub const JOURNAL_UNITS: [&str; 2] = ["kubelet.service", "containerd.service"];
/// The node's journal, persistent and volatile: journald writes to one of
/// them and, with the default `Storage=auto`, both exist (a node whose
/// journal has no persistent directory starts no pod of this DaemonSet,
/// and the rollout names it).
const JOURNAL_DIRS: [&str; 2] = ["/var/log/journal", "/run/log/journal"];
/// On the node: the shipper's cursor, vigil's alone.
pub const NODE_JOURNAL_STATE_DIR: &str = "/var/lib/vigil-journal-shipper";
const JOURNAL_STATE_DIR: &str = "/var/lib/journal-shipper";

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "vlagent: every node's container logs and kubelet and containerd journals into VictoriaLogs",
    crates: &[JOURNAL_SHIPPER],
    images: &[IMAGE],
    needs: &[victorialogs::NAME],
    // A vlagent that starts before its store answers can be left sending
    // every line to nothing that keeps it (seen: all of one node's lines
    // refused for minutes); started after, it ships from its first line.
    installed_after: &[victorialogs::NAME],
    namespace: Some(namespace),
    secrets: None,
    objects: addon_objects,
    after_rollout: None,
    rollout: &[Rollout::DaemonSet { namespace: NAMESPACE, name: NAME }],
    address: None,
    manifests: Manifests::Generated { dir: NAMESPACE },
    timeout: ROLLOUT,
};

pub const IMAGE: UpstreamImage = UpstreamImage {
    name: NAME,
    version: versions::VICTORIALOGS,
    replaces: None,
    from: ImageFrom::Scratch,
    binary: "vlagent",
    path: "/vlagent-prod",
    run: ImageRun::Entrypoint,
    extra: &[],
};

fn meta(name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespaced.then(|| NAMESPACE.into()),
        labels: Some(monitoring_labels(NAME)),
        ..Default::default()
    }
}

/// `logging`: `privileged` enforced (host paths), `restricted` warned and audited.
pub fn namespace() -> Object {
    let mut metadata = meta(NAMESPACE, false);
    metadata.labels.get_or_insert_default().extend(pod_security::labels(pod_security::Level::Privileged));
    metadata.annotations = Some(pod_security::reason(POD_SECURITY_REASON));
    Object::typed(Namespace { metadata, ..Default::default() })
}

fn addon_objects(input: &Input) -> Result<Vec<Object>, upstream::Error> {
    Ok(objects(input.spec, &input.image(JOURNAL_SHIPPER)))
}

fn host_path_volume(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource { path: path.into(), type_: Some(type_.into()) }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// A node's directory, read-only at the same path in the container.
fn host_path(name: &str, path: &str) -> (Volume, VolumeMount) {
    (host_path_volume(name, path, "Directory"), mount(name, path, true))
}

/// The node's journal directories, each read-only.
fn journal_dirs() -> impl Iterator<Item = (Volume, VolumeMount)> {
    JOURNAL_DIRS.iter().enumerate().map(|(i, dir)| host_path(&format!("journal-{i}"), dir))
}

/// vlagent's flags.
pub fn args() -> Vec<String> {
    vec![
        "-kubernetesCollector".into(),
        format!("-kubernetesCollector.logsPath={CONTAINER_LOGS}"),
        format!("-tmpDataPath={STATE_DIR}"),
        format!("-remoteWrite.url={}", victorialogs::insert_url()),
        format!("-remoteWrite.basicAuth.username={}", credentials::LOGS_USER),
        format!("-remoteWrite.basicAuth.passwordFile={CREDENTIALS_DIR}/{}", credentials::PASSWORD_KEY),
        format!("-remoteWrite.maxDiskUsagePerURL={PENDING_LIMIT}"),
        "-remoteWrite.maxBlockSize=1MiB".into(),
        // Its retries back off up to a minute by default: a store that was
        // away (starting after it, restarting) would wait that long for lines.
        format!("-remoteWrite.retryMaxTime={}s", RETRY_MAX.as_secs()),
        "-insert.disable".into(),
        format!("-httpListenAddr=:{PORT}"),
    ]
}

/// The journal shipper's container: the node's journal read-only, its
/// cursor in `state_volume`, the store's password from `credentials_volume`.
fn journal_shipper(image: &str, state_volume: &str, credentials_volume: &str) -> Container {
    let env =
        |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), ..Default::default() };
    let mut mounts: Vec<VolumeMount> = journal_dirs().map(|(_, mount)| mount).collect();
    mounts.push(mount(state_volume, JOURNAL_STATE_DIR, false));
    mounts.push(mount(credentials_volume, CREDENTIALS_DIR, true));
    let probe = |path: &str| Probe { period_seconds: Some(10), ..http_get_probe(JOURNAL_SHIPPER_PORT, path) };
    Container {
        name: JOURNAL_SHIPPER.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(vec![
            env("JOURNAL_DIRS", JOURNAL_DIRS.join(",")),
            env("JOURNAL_UNITS", JOURNAL_UNITS.join(",")),
            env("LOGS_URL", victorialogs::journald_url()),
            env("LOGS_USER", credentials::LOGS_USER.into()),
            env("LOGS_PASSWORD_FILE", format!("{CREDENTIALS_DIR}/{}", credentials::PASSWORD_KEY)),
            env("STATE_FILE", format!("{JOURNAL_STATE_DIR}/cursor")),
            env("ADMIN_LISTEN", format!("0.0.0.0:{JOURNAL_SHIPPER_PORT}")),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some(JOURNAL_ADMIN_PORT_NAME.into()),
            container_port: JOURNAL_SHIPPER_PORT.into(),
            ..Default::default()
        }]),
        readiness_probe: Some(probe("/ready")),
        liveness_probe: Some(Probe { initial_delay_seconds: Some(10), ..probe("/live") }),
        volume_mounts: Some(mounts),
        resources: Some(resources(&[("cpu", "5m"), ("memory", "16Mi")], &[("memory", "64Mi")])),
        security_context: Some(root_without_capabilities()),
        ..Default::default()
    }
}

/// Root for the files' owner bits, and nothing else of root's.
fn root_without_capabilities() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(0),
        run_as_group: Some(0),
        run_as_non_root: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        ..Default::default()
    }
}

/// The journal shipper's admin port, which Prometheus scrapes.
pub const JOURNAL_ADMIN_PORT_NAME: &str = "journal-admin";

pub fn objects(spec: &ClusterSpec, journal_shipper_image: &str) -> Vec<Object> {
    let identity = cluster_identity(
        meta(NAME, true),
        meta("vigil:vlagent", false),
        vec![
            core_rule(&["pods"], &["get", "list", "watch"]),
            core_rule(&["nodes"], &["get"]),
            core_rule(&["namespaces"], &["list"]),
        ],
    );
    let (pods_volume, pods_mount) = host_path("pod-logs", POD_LOGS);
    let (containers_volume, containers_mount) = host_path("container-logs", CONTAINER_LOGS);
    let state = host_path_volume("state", NODE_STATE_DIR, "DirectoryOrCreate");
    let secret = Volume {
        name: "credentials".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(credentials::LOGS_SECRET.into()),
            items: Some(vec![KeyToPath {
                key: credentials::PASSWORD_KEY.into(),
                path: credentials::PASSWORD_KEY.into(),
                ..Default::default()
            }]),
            default_mode: Some(0o400),
            optional: Some(false),
        }),
        ..Default::default()
    };
    let probe = Probe { period_seconds: Some(10), ..http_get_probe(PORT, "/health") };
    let container = Container {
        name: NAME.into(),
        image: Some(IMAGE.reference(&spec.image_repository)),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args()),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: PORT.into(),
            ..Default::default()
        }]),
        readiness_probe: Some(probe.clone()),
        liveness_probe: Some(Probe { initial_delay_seconds: Some(10), ..probe }),
        volume_mounts: Some(vec![
            pods_mount,
            containers_mount,
            mount("state", STATE_DIR, false),
            mount("credentials", CREDENTIALS_DIR, true),
        ]),
        resources: Some(resources(&[("cpu", "10m"), ("memory", "32Mi")], &[("memory", "128Mi")])),
        security_context: Some(root_without_capabilities()),
        ..Default::default()
    };
    let journal_state = host_path_volume("journal-state", NODE_JOURNAL_STATE_DIR, "DirectoryOrCreate");
    let shipper = journal_shipper(journal_shipper_image, "journal-state", "credentials");
    let mut volumes = vec![pods_volume, containers_volume, state, secret, journal_state];
    volumes.extend(journal_dirs().map(|(volume, _)| volume));
    let daemon_set = monitoring_daemon_set(
        NAME,
        meta(NAME, true),
        Some(BTreeMap::from([("prometheus.io/scrape".into(), "true".into())])),
        PodSpec {
            service_account_name: Some(NAME.into()),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![container, shipper],
            volumes: Some(volumes),
            ..Default::default()
        },
    );
    let mut objects = Vec::from(identity);
    objects.push(Object::typed(daemon_set));
    objects
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSet;

    #[test]
    fn it_reads_the_node_read_only_and_takes_no_lines_from_pods() {
        let objects = objects(&ClusterSpec::default(), "vigil.local/journal-shipper:test");
        let ds = objects.iter().find_map(|o| o.to_typed::<DaemonSet>()).unwrap();
        let pod = ds.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        for mount in container.volume_mounts.iter().flatten() {
            let writable = mount.read_only != Some(true);
            assert_eq!(writable, mount.name == "state", "{}", mount.name);
        }
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert!(security.capabilities.as_ref().unwrap().add.is_none());
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert!(pod.host_network.is_none() && pod.host_pid.is_none());
        let args = container.args.as_ref().unwrap();
        assert!(args.contains(&"-insert.disable".to_owned()), "{args:?}");
        assert!(
            args.iter()
                .any(|a| a == "-remoteWrite.url=http://victorialogs.monitoring.svc:9428/insert/native")
        );
        assert!(!args.iter().any(|a| a.contains("basicAuth.password=")), "the password is a file");
        // The journal shipper: the journal read-only, only its cursor's
        // directory writable, the password a file, scraped by Prometheus.
        let shipper = pod.containers.iter().find(|c| c.name == JOURNAL_SHIPPER).unwrap();
        let writable: Vec<_> = shipper
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.read_only != Some(true))
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(writable, [JOURNAL_STATE_DIR]);
        for dir in JOURNAL_DIRS {
            assert!(
                shipper
                    .volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.mount_path == dir && m.read_only == Some(true))
            );
        }
        assert_eq!(shipper.security_context, container.security_context);
        let env: BTreeMap<_, _> = shipper
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["LOGS_URL"], "http://victorialogs.monitoring.svc:9428/insert/journald/upload");
        assert!(env["LOGS_PASSWORD_FILE"].starts_with(CREDENTIALS_DIR), "{env:?}");
        assert!(
            super::super::prometheus::METRICS_PORT_NAMES.split('|').any(|n| n == JOURNAL_ADMIN_PORT_NAME)
        );
        let role =
            objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::rbac::v1::ClusterRole>()).unwrap();
        let verbs: Vec<(String, Vec<String>)> =
            role.rules.unwrap().into_iter().map(|r| (r.resources.unwrap().join(","), r.verbs)).collect();
        assert_eq!(
            verbs,
            [
                ("pods".to_owned(), vec!["get".to_owned(), "list".into(), "watch".into()]),
                ("nodes".to_owned(), vec!["get".to_owned()]),
                ("namespaces".to_owned(), vec!["list".to_owned()]),
            ]
        );
    }
}
