//! Nodes as local Docker containers, the way kind makes them, adapted to a
//! host where `--privileged` is refused. With the image build, the only
//! crate that names bollard: `engine` (the one connection to Docker
//! Engine), `network` (the node network), `container` (the node
//! container's flags), `exec` (the `docker exec` transport).
#![forbid(unsafe_code)]

mod container;
/// The one place vigil connects to Docker Engine (the build's image store and this provider).
pub mod engine;
mod exec;
mod network;

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use bollard::{
    Docker,
    query_parameters::{
        CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
        ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
        RemoveVolumeOptionsBuilder, StopContainerOptionsBuilder,
    },
};
pub use container::nested_runtime_host_config;
pub use exec::DockerNode;

use vigil_model::cluster::{ClusterSpec, Role};
use vigil_provider::{
    Error, Fault, MachineState, Node, NodeArtefact, NodeInfo, NodeProvider, NodeSpec, Power, ProviderInfo,
    Removed, Result, nodeutils,
};

/// The label on the node image naming the containerd state volume its
/// preloaded images are in (the build sets it, node containers mount it).
pub const STATE_VOLUME_LABEL: &str = "io.vigil.containerd-state";
/// The label on every container, volume and network of a cluster.
pub const CLUSTER_LABEL: &str = "io.vigil.cluster";
pub const ROLE_LABEL: &str = "io.vigil.role";
const PROVIDER: &str = "docker";

fn backend(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
    let what = what.into();
    move |source| Error::Backend { provider: PROVIDER, what, source: Box::new(source) }
}

/// Docker's container states, as the rest of vigil reads them.
fn machine_state(state: Option<bollard::models::ContainerSummaryStateEnum>) -> MachineState {
    use bollard::models::ContainerSummaryStateEnum as Docker;
    match state {
        Some(Docker::RUNNING) => MachineState::Running,
        Some(Docker::CREATED | Docker::EXITED | Docker::DEAD) => MachineState::Stopped,
        Some(other) => MachineState::Other(other.to_string()),
        None => MachineState::Other("unknown".into()),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

#[derive(Clone)]
pub struct DockerProvider {
    docker: Docker,
    /// Held while the node network is made: the control plane's and the
    /// workers' provisioning run at once, and Docker would make two
    /// networks of one name.
    network: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl DockerProvider {
    pub fn new(docker: Docker) -> Self {
        DockerProvider { docker, network: Default::default() }
    }

    /// The node's container if it exists; one with the node's name must be ours.
    async fn existing_node(
        &self,
        spec: &ClusterSpec,
        node: &NodeSpec,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>> {
        match self.docker.inspect_container(&node.name, None).await {
            Ok(existing) => {
                let labels = existing.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
                if labels.get(CLUSTER_LABEL) != Some(&spec.name) {
                    return Err(Error::NameTaken {
                        kind: "container",
                        name: node.name.clone(),
                        cluster: spec.name.clone(),
                    });
                }
                Ok(Some(existing))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend(format!("inspect container {}", node.name))(e)),
        }
    }

    fn node_error(node: &str, step: &'static str) -> impl FnOnce(bollard::errors::Error) -> Error {
        let node = node.to_owned();
        move |source| Error::Node {
            log_hint: format!("`docker logs {node}`"),
            node,
            step,
            source: Box::new(source),
        }
    }

    async fn ensure_node(&self, spec: &ClusterSpec, node: &NodeSpec, image: &str) -> Result<()> {
        if let Some(existing) = self.existing_node(spec, node).await? {
            let running = existing.state.and_then(|s| s.running).unwrap_or(false);
            if !running {
                tracing::debug!(node = %node.name, "starting the stopped node container");
                self.docker
                    .start_container(&node.name, None)
                    .await
                    .map_err(Self::node_error(&node.name, "start"))?;
            }
            return Ok(());
        }
        // Created first, labelled, so that `down` finds it by label like everything else.
        let volume = container::volume_name(&node.name);
        self.docker
            .create_volume(bollard::models::VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(HashMap::from([(CLUSTER_LABEL.into(), spec.name.clone())])),
                ..Default::default()
            })
            .await
            .map_err(backend(format!("create volume {volume}")))?;
        if let Some(state) = self.preloaded_state(image).await? {
            tracing::debug!(node = %node.name, %state, "linking containerd's preloaded state into /var");
            let volumes_dir = format!("{}/volumes", self.docker_root().await?);
            let body = container::populate_body(&node.name, image, &state, &volumes_dir);
            let (populated, output) =
                crate::engine::run_to_end(&self.docker, &format!("{}-populate", node.name), body)
                    .await
                    .map_err(Self::node_error(&node.name, "populating /var"))?;
            if !populated {
                return Err(Error::Node {
                    node: node.name.clone(),
                    step: "populating /var with containerd's preloaded state",
                    log_hint: format!("its output:\n{output}"),
                    source: "the helper container failed".into(),
                });
            }
        }
        tracing::debug!(node = %node.name, ip = %node.ip, image, "creating the node container");
        let options = CreateContainerOptionsBuilder::default().name(&node.name).build();
        self.docker
            .create_container(Some(options), container::create_body(spec, node, image))
            .await
            .map_err(Self::node_error(&node.name, "create container"))?;
        self.docker
            .start_container(&node.name, None)
            .await
            .map_err(Self::node_error(&node.name, "start container"))?;
        Ok(())
    }

    /// The volume of containerd's preloaded state the node image names.
    async fn preloaded_state(&self, image: &str) -> Result<Option<String>> {
        let inspect =
            self.docker.inspect_image(image).await.map_err(backend(format!("inspect image {image}")))?;
        Ok(inspect.config.and_then(|c| c.labels).and_then(|l| l.get(STATE_VOLUME_LABEL).cloned()))
    }

    /// Docker's data directory, where its volumes live.
    async fn docker_root(&self) -> Result<String> {
        let info = self.docker.info().await.map_err(backend("docker info"))?;
        Ok(info.docker_root_dir.unwrap_or_else(|| "/var/lib/docker".into()))
    }

    async fn cluster_containers(&self, cluster: &str) -> Result<Vec<bollard::models::ContainerSummary>> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{CLUSTER_LABEL}={cluster}")])]);
        self.docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default().all(true).filters(&filters).build(),
            ))
            .await
            .map_err(backend("list containers"))
    }
}

#[async_trait]
impl NodeProvider for DockerProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    /// kind's adaptations: containers on the host's kernel, the kubelet in a
    /// cgroup of its own that the node entrypoint makes.
    fn info(&self) -> ProviderInfo {
        ProviderInfo::node_containers()
    }

    /// The node network is a Docker network vigil makes: it gives each
    /// container the address planned for it.
    fn plan(&self, spec: &ClusterSpec) -> Vec<NodeSpec> {
        vigil_provider::numbered_plan(spec)
    }

    async fn preflight(&self, spec: &ClusterSpec) -> Result<()> {
        let mut fresh = 0;
        for node in self.plan(spec) {
            if self.existing_node(spec, &node).await?.is_none() {
                fresh += 1;
            }
        }
        if !network::check(&self.docker, spec).await? {
            network::check_subnet_is_free(&self.docker, spec.node_subnet).await?;
        }
        if fresh > 0 {
            let info = self.docker.info().await.map_err(backend("docker info"))?;
            let dir = info.docker_root_dir.unwrap_or_else(|| "/var/lib/docker".into());
            // Each new node's /var receives the unpacked preloaded images.
            // Docker's directory may be on another host (DOCKER_HOST): unknown is not short.
            let here = std::path::Path::new(&dir).exists();
            let checked = vigil_host::disk::check(
                std::path::Path::new(&dir),
                2 * fresh as u64,
                "making the new nodes",
                |_| format!("Docker's data directory {dir}"),
                |_| "free some space (`docker system prune`)".into(),
            );
            if let (true, Ok(Err(low))) = (here, checked) {
                return Err(Error::Disk(low));
            }
        }
        Ok(())
    }

    async fn provision(
        &self,
        spec: &ClusterSpec,
        nodes: &[NodeSpec],
        artefact: &NodeArtefact,
        _line: &vigil_host::progress::Line,
    ) -> Result<()> {
        {
            let _making = self.network.lock().await;
            network::ensure(&self.docker, spec).await?;
        }
        let results =
            futures::future::join_all(nodes.iter().map(|n| self.ensure_node(spec, n, &artefact.image))).await;
        results.into_iter().collect()
    }

    async fn list_nodes(&self, cluster: &str) -> Result<Vec<NodeInfo>> {
        let mut nodes: Vec<NodeInfo> = self
            .cluster_containers(cluster)
            .await?
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                let role = if labels.get(ROLE_LABEL).map(String::as_str) == Some(Role::ControlPlane.as_str())
                {
                    Role::ControlPlane
                } else {
                    Role::Worker
                };
                let ip = c
                    .network_settings
                    .and_then(|n| n.networks)
                    .and_then(|n| n.get(cluster).and_then(|e| e.ip_address.clone()))
                    .filter(|ip| !ip.is_empty());
                NodeInfo {
                    name: c
                        .names
                        .unwrap_or_default()
                        .first()
                        .map(|n| n.trim_start_matches('/').to_owned())
                        .unwrap_or_default(),
                    role,
                    state: machine_state(c.state),
                    ip,
                }
            })
            .collect();
        nodes.sort_by(|a, b| {
            (a.role != Role::ControlPlane, &a.name).cmp(&(b.role != Role::ControlPlane, &b.name))
        });
        Ok(nodes)
    }

    async fn discover(&self, name: &str) -> Result<ClusterSpec> {
        let machines = self.list_nodes(name).await?;
        if machines.is_empty() {
            return Err(Error::NoSuchCluster(name.into()));
        }
        let mut spec = ClusterSpec { name: name.into(), ..ClusterSpec::default() };
        if let Some(subnet) = network::subnet_of(&self.docker, &network::name(&spec)).await? {
            spec.node_subnet = subnet;
        }
        spec.workers = machines.iter().filter(|n| n.role == Role::Worker).count().max(1);
        Ok(spec)
    }

    fn node(&self, name: &str) -> Arc<dyn Node> {
        Arc::new(DockerNode { docker: self.docker.clone(), name: name.into() })
    }

    async fn inspect(&self, node: &str) -> Result<String> {
        let inspect = self
            .docker
            .inspect_container(node, None)
            .await
            .map_err(backend(format!("inspect container {node}")))?;
        Ok(serde_json::to_string_pretty(&inspect).unwrap_or_default())
    }

    /// Power through Docker's API; the partition through `docker exec`,
    /// which does not use the node's network.
    async fn fault(&self, node: &str, fault: Fault) -> Result<()> {
        let as_fault =
            |source| Error::Fault { node: node.into(), fault: fault.name(), source: Box::new(source) };
        let power = match fault {
            Fault::Power(power) => power,
            Fault::Isolate => return nodeutils::isolate(self.node(node).as_ref()).await.map_err(as_fault),
            Fault::Reconnect => {
                return nodeutils::reconnect(self.node(node).as_ref()).await.map_err(as_fault);
            }
        };
        let what = format!("{power:?} {node}").to_lowercase();
        match power {
            Power::Stop => self
                .docker
                .stop_container(node, Some(StopContainerOptionsBuilder::default().t(30).build()))
                .await
                .map_err(backend(what)),
            Power::Kill => self
                .docker
                .kill_container(node, Some(KillContainerOptionsBuilder::default().signal("SIGKILL").build()))
                .await
                .map_err(backend(what)),
            Power::Start => self.docker.start_container(node, None).await.map_err(backend(what)),
        }
    }

    async fn delete_cluster(&self, cluster: &str) -> Result<Removed> {
        let mut removed = Removed::default();
        for c in self.cluster_containers(cluster).await? {
            let id = c.id.unwrap_or_default();
            let name = c.names.unwrap_or_default().first().cloned().unwrap_or(id.clone());
            let remove = || {
                self.docker.remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()),
                )
            };
            if let Err(first) = remove().await {
                // A node killed while its runc was updating a pod's cgroup
                // leaves that cgroup FROZEN (cgroup v1); its processes then
                // ignore SIGKILL and Docker cannot remove the node. Thawing
                // lets the kill finish.
                if thaw_frozen_cgroups(&id) == 0 {
                    return Err(backend(format!("remove container {name}"))(first));
                }
                tracing::info!(node = %name, "thawed frozen cgroups under the node; removing it again");
                remove().await.map_err(backend(format!("remove container {name}")))?;
            }
            removed.machines.push(name.trim_start_matches('/').to_owned());
        }
        let filters = HashMap::from([("label".to_owned(), vec![format!("{CLUSTER_LABEL}={cluster}")])]);
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filters).build()))
            .await
            .map_err(backend("list volumes"))?;
        for v in volumes.volumes.unwrap_or_default() {
            self.docker
                .remove_volume(&v.name, Some(RemoveVolumeOptionsBuilder::default().force(true).build()))
                .await
                .map_err(backend(format!("remove volume {}", v.name)))?;
            removed.volumes.push(v.name);
        }
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filters).build()))
            .await
            .map_err(backend("list networks"))?;
        for n in networks {
            let name = n.name.unwrap_or_default();
            self.docker.remove_network(&name).await.map_err(backend(format!("remove network {name}")))?;
            removed.networks.push(name);
        }
        Ok(removed)
    }
}

/// Thaws every frozen cgroup v1 freezer under a Docker container (cgroupfs
/// or systemd driver layout) and returns how many it thawed; 0 when there is
/// no freezer hierarchy here (cgroup v2, remote Docker host).
fn thaw_frozen_cgroups(container_id: &str) -> usize {
    let roots = [
        format!("/sys/fs/cgroup/freezer/docker/{container_id}"),
        format!("/sys/fs/cgroup/freezer/system.slice/docker-{container_id}.scope"),
    ];
    let mut thawed = 0;
    let mut pending: Vec<std::path::PathBuf> = roots.iter().map(Into::into).collect();
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
        let state = dir.join("freezer.state");
        if std::fs::read_to_string(&state).is_ok_and(|s| s.trim() != "THAWED")
            && std::fs::write(&state, "THAWED").is_ok()
        {
            thawed += 1;
        }
    }
    thawed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_sit_below_the_load_balancer_range() {
        let spec = ClusterSpec::default();
        let plan: Vec<_> = vigil_provider::numbered_plan(&spec)
            .iter()
            .map(|n| (n.name.clone(), n.role, n.ip.to_string()))
            .collect();
        assert_eq!(
            plan,
            vec![
                ("vigil-control-plane".into(), Role::ControlPlane, "172.29.0.2".into()),
                ("vigil-worker".into(), Role::Worker, "172.29.0.3".into()),
                ("vigil-worker2".into(), Role::Worker, "172.29.0.4".into()),
            ]
        );
        let small =
            ClusterSpec { node_subnet: "10.50.0.0/27".parse().unwrap(), workers: 13, ..Default::default() };
        small.validate().unwrap();
        let (lb_first, _) = small.load_balancer_range();
        assert!(
            vigil_provider::numbered_plan(&small)
                .iter()
                .all(|n| n.ip < lb_first && n.ip > network::gateway(&small))
        );
    }
}
