//! Nodes as local Docker containers, the way kind makes them, adapted to a
//! host where `--privileged` is refused (see `commonArgs` in kind's docker
//! provider for the flags this mirrors).

use std::{collections::HashMap, net::Ipv4Addr};

use bollard::{
    Docker,
    models::{
        ContainerCreateBody, DeviceMapping, EndpointIpamConfig, EndpointSettings, HostConfig,
        HostConfigCgroupnsModeEnum, Ipam, IpamConfig, Mount, MountType, NetworkCreateRequest,
        NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
    },
    query_parameters::{
        CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
        ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
        RemoveVolumeOptionsBuilder, StopContainerOptionsBuilder,
    },
};
use futures::StreamExt;
use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;

use super::{CommandError, Error, Fault, Node, NodeInfo, NodeProvider, Output, Removed};
use crate::cluster::{ClusterSpec, NodeSpec, Role};

pub const CLUSTER_LABEL: &str = "io.vigil.cluster";
pub const ROLE_LABEL: &str = "io.vigil.role";

fn docker_err(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
    let what = what.into();
    move |source| Error::Docker { what, source }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

#[derive(Clone)]
pub struct DockerProvider {
    docker: Docker,
}

impl DockerProvider {
    pub fn new(docker: Docker) -> Self {
        DockerProvider { docker }
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn volume_name(node: &str) -> String {
        format!("{node}-var")
    }

    /// Whether the cluster network exists; an existing one must be ours and match.
    async fn check_network(&self, spec: &ClusterSpec) -> Result<bool, Error> {
        let name = spec.network_name();
        match self.docker.inspect_network(&name, None).await {
            Ok(existing) => {
                let labels = existing.labels.unwrap_or_default();
                if labels.get(CLUSTER_LABEL) != Some(&spec.name) {
                    return Err(Error::NameTaken {
                        kind: "Docker network",
                        name,
                        cluster: spec.name.clone(),
                    });
                }
                let subnet = existing
                    .ipam
                    .and_then(|i| i.config)
                    .and_then(|c| c.into_iter().find_map(|c| c.subnet))
                    .unwrap_or_default();
                if subnet != spec.node_subnet.to_string() {
                    return Err(Error::NetworkMismatch { name, actual: subnet, wanted: spec.node_subnet });
                }
                Ok(true)
            }
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(docker_err(format!("inspect network {name}"))(e)),
        }
    }

    /// Creates the cluster network unless it exists (and is ours).
    async fn ensure_network(&self, spec: &ClusterSpec) -> Result<(), Error> {
        if self.check_network(spec).await? {
            return Ok(());
        }
        self.check_subnet_is_free(spec.node_subnet).await?;
        let name = spec.network_name();
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(spec.node_subnet.to_string()),
                    gateway: Some(spec.gateway().to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(HashMap::from([(CLUSTER_LABEL.into(), spec.name.clone())])),
            options: Some(HashMap::from([
                // The nodes' MTU must match the host's, or vxlan inside them fragments.
                ("com.docker.network.driver.mtu".into(), "1500".into()),
                ("com.docker.network.bridge.name".into(), bridge_name(&spec.name)),
            ])),
            ..Default::default()
        };
        self.docker.create_network(request).await.map_err(docker_err(format!("create network {name}")))?;
        Ok(())
    }

    /// Refuses a subnet that overlaps another Docker network or a host route.
    async fn check_subnet_is_free(&self, subnet: Ipv4Net) -> Result<(), Error> {
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().build()))
            .await
            .map_err(docker_err("list networks"))?;
        for network in networks {
            let subnets = network.ipam.and_then(|i| i.config).unwrap_or_default();
            for other in subnets.into_iter().filter_map(|c| c.subnet?.parse::<Ipv4Net>().ok()) {
                if overlaps(subnet, other) {
                    let name = format!("Docker network {}", network.name.clone().unwrap_or_default());
                    return Err(Error::SubnetClash { subnet, other: name, other_subnet: other });
                }
            }
        }
        if let Ok(routes) = std::fs::read_to_string("/proc/net/route") {
            for (iface, other) in parse_routes(&routes) {
                if other.prefix_len() > 0 && overlaps(subnet, other) {
                    return Err(Error::SubnetClash {
                        subnet,
                        other: format!("the host route via {iface}"),
                        other_subnet: other,
                    });
                }
            }
        }
        Ok(())
    }

    fn create_body(spec: &ClusterSpec, node: &NodeSpec, image: &str) -> ContainerCreateBody {
        let host_config = HostConfig {
            // containerd's root must not sit on overlayfs: /var is a volume,
            // named so that `down` can find it and a restarted node keeps its state.
            mounts: Some(vec![Mount {
                target: Some("/var".into()),
                source: Some(Self::volume_name(&node.name)),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            // A node stopped on purpose stays down; a host reboot brings the cluster back.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                ..Default::default()
            }),
            network_mode: Some(spec.network_name()),
            ..nested_runtime_host_config()
        };
        let endpoint = EndpointSettings {
            // A static address, so a restarted node keeps the one its certificates name.
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some(node.ip.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(image.into()),
            hostname: Some(node.name.clone()),
            labels: Some(HashMap::from([
                (CLUSTER_LABEL.into(), spec.name.clone()),
                (ROLE_LABEL.into(), node.role.as_str().into()),
            ])),
            env: Some(vec!["container=docker".into()]),
            tty: Some(true),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(spec.network_name(), endpoint)])),
            }),
            ..Default::default()
        }
    }

    /// The node's container if it exists; one with the node's name must be ours.
    async fn existing_node(
        &self,
        spec: &ClusterSpec,
        node: &NodeSpec,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, Error> {
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
            Err(e) => Err(docker_err(format!("inspect container {}", node.name))(e)),
        }
    }

    async fn ensure_node(&self, spec: &ClusterSpec, node: &NodeSpec, image: &str) -> Result<(), Error> {
        if let Some(existing) = self.existing_node(spec, node).await? {
            let running = existing.state.and_then(|s| s.running).unwrap_or(false);
            if !running {
                self.docker.start_container(&node.name, None).await.map_err(|source| Error::Node {
                    node: node.name.clone(),
                    step: "start",
                    source,
                })?;
            }
            return Ok(());
        }
        // Created first, labelled, so that `down` finds it by label like everything else.
        let volume = Self::volume_name(&node.name);
        self.docker
            .create_volume(bollard::models::VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(HashMap::from([(CLUSTER_LABEL.into(), spec.name.clone())])),
                ..Default::default()
            })
            .await
            .map_err(docker_err(format!("create volume {volume}")))?;
        let options = CreateContainerOptionsBuilder::default().name(&node.name).build();
        self.docker
            .create_container(Some(options), Self::create_body(spec, node, image))
            .await
            .map_err(|source| Error::Node { node: node.name.clone(), step: "create container", source })?;
        self.docker.start_container(&node.name, None).await.map_err(|source| Error::Node {
            node: node.name.clone(),
            step: "start container",
            source,
        })?;
        Ok(())
    }

    async fn cluster_containers(
        &self,
        cluster: &str,
    ) -> Result<Vec<bollard::models::ContainerSummary>, Error> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{CLUSTER_LABEL}={cluster}")])]);
        self.docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default().all(true).filters(&filters).build(),
            ))
            .await
            .map_err(docker_err("list containers"))
    }
}

/// The chain `isolate` jumps to first from INPUT, OUTPUT and FORWARD;
/// loopback stays open so the node's own services keep talking to each other.
const ISOLATE_SCRIPT: &str = "set -e
iptables -N VIGIL-ISOLATE 2>/dev/null || iptables -F VIGIL-ISOLATE
iptables -A VIGIL-ISOLATE -i lo -j RETURN
iptables -A VIGIL-ISOLATE -o lo -j RETURN
iptables -A VIGIL-ISOLATE -j DROP
for chain in INPUT OUTPUT FORWARD; do
  iptables -C $chain -j VIGIL-ISOLATE 2>/dev/null || iptables -I $chain 1 -j VIGIL-ISOLATE
done";

const RECONNECT_SCRIPT: &str = "set -e
for chain in INPUT OUTPUT FORWARD; do
  while iptables -D $chain -j VIGIL-ISOLATE 2>/dev/null; do :; done
done
iptables -F VIGIL-ISOLATE 2>/dev/null || true
iptables -X VIGIL-ISOLATE 2>/dev/null || true";

/// What a container needs to run systemd, containerd, runc and the kubelet
/// on this host. `--privileged` fails here ("unable to apply caps"): the
/// host's bounding set lacks CAP_SYS_RESOURCE. Everything else is granted one
/// by one. The node containers and the image preloader use it.
pub fn nested_runtime_host_config() -> HostConfig {
    let tmpfs = ["/tmp", "/run", "/run/lock"].iter().map(|p| ((*p).to_owned(), String::new())).collect();
    HostConfig {
        cap_add: Some(vec!["ALL".into()]),
        cap_drop: Some(vec!["SYS_RESOURCE".into()]),
        security_opt: Some(vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()]),
        // The CLI's `--security-opt systempaths=unconfined`: nothing in
        // /proc and /sys masked or read-only, for kubelet and kube-proxy.
        masked_paths: Some(vec![]),
        readonly_paths: Some(vec![]),
        // Nested containers need device nodes (and runc's cgroup device rules).
        device_cgroup_rules: Some(vec!["a *:* rwm".into()]),
        // kubelet reads /dev/kmsg (OOM watcher) and exits without it.
        devices: Some(vec![DeviceMapping {
            path_on_host: Some("/dev/kmsg".into()),
            path_in_container: Some("/dev/kmsg".into()),
            cgroup_permissions: Some("rwm".into()),
        }]),
        // The node sees its own cgroup as the root of each hierarchy.
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        // systemd wants /run and /tmp as tmpfs, as on a real machine.
        tmpfs: Some(tmpfs),
        ..Default::default()
    }
}

/// A bridge name of at most 15 characters that says whose it is.
fn bridge_name(cluster: &str) -> String {
    format!("br-{}", cluster.chars().take(12).collect::<String>())
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Destination networks of /proc/net/route (hex, little-endian), by interface.
fn parse_routes(table: &str) -> Vec<(String, Ipv4Net)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let net =
                Ipv4Net::with_netmask(Ipv4Addr::from(dest.swap_bytes()), Ipv4Addr::from(mask.swap_bytes()))
                    .ok()?;
            Some((f[0].to_owned(), net))
        })
        .collect()
}

impl NodeProvider for DockerProvider {
    type Node = DockerNode;

    async fn preflight(&self, spec: &ClusterSpec) -> Result<(), Error> {
        let mut fresh = 0;
        for node in spec.nodes() {
            if self.existing_node(spec, &node).await?.is_none() {
                fresh += 1;
            }
        }
        if !self.check_network(spec).await? {
            self.check_subnet_is_free(spec.node_subnet).await?;
        }
        if fresh > 0 {
            let info = self.docker.info().await.map_err(docker_err("docker info"))?;
            let dir = info.docker_root_dir.unwrap_or_else(|| "/var/lib/docker".into());
            // Each new node's /var receives the unpacked preloaded images.
            let need_gib = 2 * fresh as u64;
            let free = crate::build::free_bytes(std::path::Path::new(&dir)).unwrap_or(u64::MAX);
            let free_gib = free as f64 / (1u64 << 30) as f64;
            if free_gib < need_gib as f64 {
                return Err(Error::Disk { dir, free_gib, need_gib });
            }
        }
        Ok(())
    }

    async fn provision(&self, spec: &ClusterSpec, node_image: &str) -> Result<(), Error> {
        self.ensure_network(spec).await?;
        let nodes = spec.nodes();
        let results =
            futures::future::join_all(nodes.iter().map(|n| self.ensure_node(spec, n, node_image))).await;
        results.into_iter().collect()
    }

    async fn list_nodes(&self, cluster: &str) -> Result<Vec<NodeInfo>, Error> {
        let mut nodes: Vec<NodeInfo> = self
            .cluster_containers(cluster)
            .await?
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                let role = if labels.get(ROLE_LABEL).map(String::as_str) == Some("control-plane") {
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
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    ip,
                }
            })
            .collect();
        nodes.sort_by(|a, b| {
            (a.role != Role::ControlPlane, &a.name).cmp(&(b.role != Role::ControlPlane, &b.name))
        });
        Ok(nodes)
    }

    fn node(&self, name: &str) -> DockerNode {
        DockerNode { docker: self.docker.clone(), name: name.into() }
    }

    async fn fault(&self, spec: &ClusterSpec, node: &str, fault: Fault) -> Result<(), Error> {
        if !spec.nodes().iter().any(|n| n.name == node) {
            let known = spec.nodes().iter().map(|n| n.name.clone()).collect::<Vec<_>>().join(", ");
            return Err(Error::UnknownNode { name: node.into(), cluster: spec.name.clone(), known });
        }
        let what = format!("{fault:?} {node}").to_lowercase();
        match fault {
            Fault::Stop => self
                .docker
                .stop_container(node, Some(StopContainerOptionsBuilder::default().t(30).build()))
                .await
                .map_err(docker_err(what)),
            Fault::Kill => self
                .docker
                .kill_container(node, Some(KillContainerOptionsBuilder::default().signal("SIGKILL").build()))
                .await
                .map_err(docker_err(what)),
            Fault::Start => self.docker.start_container(node, None).await.map_err(docker_err(what)),
            // A partition, not an unplugged cable: every packet in or out of
            // the node (and through it, for its pods) is dropped, while its
            // interface, address and routes stay as they are, so `reconnect`
            // restores exactly the network it had (flannel's VXLAN device
            // included, which a Docker disconnect/connect would orphan).
            Fault::Isolate => self
                .node(node)
                .run(&["sh", "-c", ISOLATE_SCRIPT], None)
                .await
                .map(|_| ())
                .map_err(|source| Error::Fault { node: node.into(), fault: "isolate", source }),
            Fault::Reconnect => self
                .node(node)
                .run(&["sh", "-c", RECONNECT_SCRIPT], None)
                .await
                .map(|_| ())
                .map_err(|source| Error::Fault { node: node.into(), fault: "reconnect", source }),
        }
    }

    async fn delete_cluster(&self, cluster: &str) -> Result<Removed, Error> {
        let mut removed = Removed::default();
        for c in self.cluster_containers(cluster).await? {
            let id = c.id.unwrap_or_default();
            let name = c.names.unwrap_or_default().first().cloned().unwrap_or(id.clone());
            self.docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()),
                )
                .await
                .map_err(docker_err(format!("remove container {name}")))?;
            removed.containers.push(name.trim_start_matches('/').to_owned());
        }
        let filters = HashMap::from([("label".to_owned(), vec![format!("{CLUSTER_LABEL}={cluster}")])]);
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filters).build()))
            .await
            .map_err(docker_err("list volumes"))?;
        for v in volumes.volumes.unwrap_or_default() {
            self.docker
                .remove_volume(&v.name, Some(RemoveVolumeOptionsBuilder::default().force(true).build()))
                .await
                .map_err(docker_err(format!("remove volume {}", v.name)))?;
            removed.volumes.push(v.name);
        }
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filters).build()))
            .await
            .map_err(docker_err("list networks"))?;
        for n in networks {
            let name = n.name.unwrap_or_default();
            self.docker.remove_network(&name).await.map_err(docker_err(format!("remove network {name}")))?;
            removed.networks.push(name);
        }
        Ok(removed)
    }
}

/// A node container; commands reach it through `docker exec`.
#[derive(Clone)]
pub struct DockerNode {
    docker: Docker,
    name: String,
}

impl Node for DockerNode {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, argv: &[&str], stdin: Option<Vec<u8>>) -> Result<Output, CommandError> {
        let command = argv.join(" ");
        let fail = |cause: String| CommandError {
            node: self.name.clone(),
            command: command.clone(),
            exit_code: None,
            output: String::new(),
            cause: Some(cause),
        };
        let exec = self
            .docker
            .create_exec(
                &self.name,
                bollard::models::ExecConfig {
                    cmd: Some(argv.iter().map(|s| (*s).to_owned()).collect()),
                    attach_stdin: Some(stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        let started = self.docker.start_exec(&exec.id, None).await.map_err(|e| fail(e.to_string()))?;
        let bollard::exec::StartExecResults::Attached { mut output, mut input } = started else {
            return Err(fail("exec started detached".into()));
        };
        if let Some(bytes) = stdin {
            input.write_all(&bytes).await.map_err(|e| fail(format!("writing stdin: {e}")))?;
            input.shutdown().await.map_err(|e| fail(format!("closing stdin: {e}")))?;
        }
        drop(input);
        let mut out = Output::default();
        while let Some(chunk) = output.next().await {
            match chunk.map_err(|e| fail(e.to_string()))? {
                bollard::container::LogOutput::StdErr { message } => {
                    out.stderr.push_str(&String::from_utf8_lossy(&message))
                }
                other => out.stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
            }
        }
        let inspect = self.docker.inspect_exec(&exec.id).await.map_err(|e| fail(e.to_string()))?;
        match inspect.exit_code {
            Some(0) => Ok(out),
            code => Err(CommandError {
                node: self.name.clone(),
                command,
                exit_code: code,
                output: format!("{}{}", out.stdout, out.stderr),
                cause: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_route_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let routes = parse_routes(table);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1], ("docker0".into(), "172.17.0.0/16".parse().unwrap()));
        assert!(overlaps("172.17.5.0/24".parse().unwrap(), routes[1].1));
        assert!(!overlaps("172.29.0.0/24".parse().unwrap(), routes[1].1));
    }

    #[test]
    fn container_flags_replace_privileged() {
        let spec = ClusterSpec::default();
        let body = DockerProvider::create_body(&spec, &spec.nodes()[1], "img");
        let host = body.host_config.unwrap();
        assert_eq!(host.privileged, None);
        assert_eq!(host.cap_drop.unwrap(), ["SYS_RESOURCE"]);
        assert_eq!(host.cgroupns_mode, Some(HostConfigCgroupnsModeEnum::PRIVATE));
        assert_eq!(host.mounts.unwrap()[0].source.as_deref(), Some("vigil-worker-var"));
        let labels = body.labels.unwrap();
        assert_eq!(labels[ROLE_LABEL], "worker");
        assert_eq!(labels[CLUSTER_LABEL], "vigil");
        assert_eq!(bridge_name("a-very-long-cluster-name"), "br-a-very-long-");
    }
}
