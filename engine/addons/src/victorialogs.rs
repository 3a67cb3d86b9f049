//! VictoriaLogs, built from its Go module: the log store every pod's lines
//! are shipped to (by [`super::vlagent`]), searched with LogsQL in the web
//! UI its binary serves (`/select/vmui/`). One replica on the control plane,
//! which `vigil drill` never breaks, so the logs of a dead node's pods are
//! still there to read after the drill; its data on a PersistentVolumeClaim
//! there, bounded by disk size and age. It listens on loopback behind the
//! authenticating proxy (see [`super::auth_proxy`]): vigil's user reads and
//! writes, the log shippers' user may only `POST /insert/native` and
//! `/insert/journald/upload`.

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe, VolumeMount};
use kube::api::ObjectMeta;

use super::{
    Addon, Address, Check, ImageFrom, ImageRun, Input, Manifests, ROLLOUT, Rollout, UpstreamImage,
    auth_proxy, credentials, http_get_probe, local_path, locked_down, metallb,
    node_exporter::{self, NAMESPACE, monitoring_deployment, monitoring_meta, monitoring_selector},
    non_root_pod, on_control_plane, resources, roll_on_change, upstream,
};
use crate::apply::Object;
use vigil_model::cluster::ClusterSpec;
use vigil_model::versions;

pub const NAME: &str = "victorialogs";
/// Its HTTP port: the UI, LogsQL (`/select/logsql/query`), ingestion.
pub const PORT: u16 = 9428;
/// Its Service takes the fifth address of the LoadBalancer range.
pub const LOAD_BALANCER_INDEX: u32 = 4;
/// The PersistentVolumeClaim holding the logs.
pub const CLAIM: &str = "victorialogs-data";
/// As with Prometheus's claim, local-path does not enforce it: the disk
/// limit below is what keeps VictoriaLogs inside it.
pub const CLAIM_SIZE: &str = "1Gi";
/// The most the store may hold; past it, whole days are dropped, oldest
/// first. 324 MiB under the claim: a day's partition is merged in place.
pub const RETENTION_DISK: &str = "700MiB";
/// How long a line is kept, unless [`RETENTION_DISK`] is reached first.
pub const RETENTION_PERIOD: &str = "7d";
/// Where vlagent sends (its default, native, format).
pub const INSERT_PATH: &str = "/insert/native";
/// Where the journal shipper sends (the journal export format).
pub const JOURNALD_PATH: &str = "/insert/journald/upload";
/// The web UI, under the address.
pub const UI_PATH: &str = "select/vmui/";
/// vlagent's batches: at most 1 MiB before compression (`-remoteWrite.maxBlockSize`).
pub const INSERT_BODY_LIMIT: u64 = 4 << 20;
const DATA_DIR: &str = "/victoria-logs-data";
/// No user of the image's own: `nobody`.
const USER: i64 = 65534;

/// The log shippers: `POST /insert/native` (vlagent) and `POST
/// /insert/journald/upload` (the journal shipper), nothing else.
pub const LOGS_WRITER: auth_proxy::Writer = auth_proxy::Writer {
    user: credentials::LOGS_USER,
    secret: credentials::LOGS_SECRET,
    paths: &[INSERT_PATH, JOURNALD_PATH],
};

pub const ADDON: Addon = Addon {
    name: NAME,
    title: "VictoriaLogs: every pod's logs, searchable in its UI",
    crates: &[auth_proxy::CRATE],
    images: &[IMAGE],
    needs: &[local_path::NAME, metallb::NAME],
    installed_after: &[],
    namespace: Some(node_exporter::namespace),
    secrets: None,
    objects: addon_objects,
    after_rollout: None,
    rollout: &[Rollout::Deployment { namespace: NAMESPACE, name: NAME, replicas: 1 }],
    address: Some(Address {
        key: NAME,
        namespace: NAMESPACE,
        service: NAME,
        url: |ip| format!("http://{ip}:{PORT}/{UI_PATH}"),
        check: Check::Gated(""),
        hint: "VictoriaLogs UI: every pod's logs (LogsQL; the API at /select/logsql/query)",
        load_balancer_index: LOAD_BALANCER_INDEX,
    }),
    manifests: Manifests::Generated { dir: NAMESPACE },
    timeout: ROLLOUT,
};

pub const IMAGE: UpstreamImage = UpstreamImage {
    name: NAME,
    version: versions::VICTORIALOGS,
    replaces: None,
    from: ImageFrom::Scratch,
    binary: "victoria-logs",
    path: "/victoria-logs-prod",
    run: ImageRun::Entrypoint,
    extra: &[],
};

/// Where the cluster's pods reach the store (vlagent's remote write).
pub fn insert_url() -> String {
    format!("http://{NAME}.{NAMESPACE}.svc:{PORT}{INSERT_PATH}")
}

/// The journal shipper's destination.
pub fn journald_url() -> String {
    format!("http://{NAME}.{NAMESPACE}.svc:{PORT}{JOURNALD_PATH}")
}

fn meta(name: &str) -> ObjectMeta {
    monitoring_meta(NAME, name, true)
}

fn addon_objects(input: &Input) -> Result<Vec<Object>, upstream::Error> {
    Ok(objects(input.spec, &input.image(auth_proxy::CRATE)))
}

/// `proxy_image`: the authenticating proxy's.
pub fn objects(spec: &ClusterSpec, proxy_image: &str) -> Vec<Object> {
    let proxy = auth_proxy::sidecar(
        |name| meta(&format!("{NAME}-{name}")),
        proxy_image,
        &[auth_proxy::Listener {
            name: "http",
            port: PORT,
            body_limit: INSERT_BODY_LIMIT,
            // Its own limit on a query (`-search.maxQueryDuration`) is 30 s.
            upstream_timeout: std::time::Duration::from_secs(40),
            public: &["/health"],
            root: None,
            writer: Some(LOGS_WRITER),
        }],
    );
    let (claim, data_volume) = local_path::claim(meta(CLAIM), CLAIM_SIZE, "data");
    // Through the proxy, whose `/health` is public: the kubelet reaches the pod's address.
    let probe = Probe { period_seconds: Some(10), ..http_get_probe(PORT, "/health") };
    let container = Container {
        name: NAME.into(),
        image: Some(IMAGE.reference(&spec.image_repository)),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            // Loopback only: the proxy has this port on the pod's address.
            format!("-httpListenAddr=127.0.0.1:{PORT}"),
            format!("-storageDataPath={DATA_DIR}"),
            format!("-retentionPeriod={RETENTION_PERIOD}"),
            format!("-retention.maxDiskSpaceUsageBytes={RETENTION_DISK}"),
        ]),
        readiness_probe: Some(probe.clone()),
        liveness_probe: Some(Probe { initial_delay_seconds: Some(10), ..probe }),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..Default::default()
        }]),
        // It sizes its caches from the limit (60 %).
        resources: Some(resources(&[("cpu", "20m"), ("memory", "64Mi")], &[("memory", "256Mi")])),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    let (node_selector, tolerations) = on_control_plane();
    let mut deployment = monitoring_deployment(
        NAME,
        PodSpec {
            node_selector: Some(node_selector),
            tolerations: Some(tolerations),
            service_account_name: Some(NAME.into()),
            // It never talks to the API server.
            automount_service_account_token: Some(false),
            // Its group reads the proxy's password files.
            security_context: Some(non_root_pod(USER, Some(USER))),
            containers: vec![container, proxy.container],
            volumes: Some([data_volume].into_iter().chain(proxy.volumes).collect()),
            ..Default::default()
        },
    );
    local_path::one_writer(&mut deployment);
    roll_on_change(&mut deployment, &[&proxy.config]);
    let ip = spec.load_balancer_ip(LOAD_BALANCER_INDEX).to_string();
    let service = metallb::pinned_service(meta(NAME), &ip, monitoring_selector(NAME), &[("http", PORT)]);
    let account = k8s_openapi::api::core::v1::ServiceAccount {
        metadata: meta(NAME),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    vec![
        Object::typed(account),
        Object::typed(proxy.config),
        Object::typed(claim),
        Object::typed(deployment),
        Object::typed(service),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shippers_may_only_insert_and_the_store_listens_on_loopback() {
        let objects = objects(&ClusterSpec::default(), "proxy");
        let config = objects
            .iter()
            .find_map(|o| o.to_typed::<k8s_openapi::api::core::v1::ConfigMap>())
            .expect("the proxy's configuration");
        let config: ::auth_proxy::config::Config =
            serde_json::from_str(&config.data.unwrap()["config.json"]).unwrap();
        config.validate().unwrap();
        let route = &config.routes[0];
        assert_eq!(route.upstream.to_string(), "127.0.0.1:9428");
        let logs = route.grants.iter().find(|g| g.user == credentials::LOGS_USER).unwrap();
        assert!(logs.allows("POST", "/insert/native"));
        assert!(logs.allows("POST", "/insert/journald/upload"));
        assert!(!logs.allows("GET", "/insert/journald/upload"));
        assert!(!logs.allows("GET", "/select/logsql/query"));
        assert!(!logs.allows("POST", "/insert/jsonline"));
        let deployment =
            objects.iter().find_map(|o| o.to_typed::<k8s_openapi::api::apps::v1::Deployment>()).unwrap();
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        assert!(args.contains(&"-httpListenAddr=127.0.0.1:9428".to_owned()), "{args:?}");
        assert!(args.iter().any(|a| a.starts_with("-retention.maxDiskSpaceUsageBytes=")), "{args:?}");
    }
}
