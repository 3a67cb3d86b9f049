//! `vigil status`: what the provider sees (containers) next to what the
//! cluster says (nodes, system pods), and the addresses of what vigil runs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node as KubeNode, Pod, Service};
use kube::{Api, Client, api::ListParams};
use serde::Serialize;

use crate::{
    addons::{self, ADDONS},
    cluster::{ClusterSpec, Role},
    conditions::{load_balancer_ip, node_ready_condition, pod_ready},
    kubeadm,
    password_file::HostCredentials,
    provider::{NodeInfo, NodeSpec},
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub cluster: String,
    pub kubernetes_version: String,
    pub kube_context: String,
    pub addresses: Addresses,
    /// The user of the proxied addresses (Prometheus, Alertmanager, Jaeger)
    /// and the file its password is in; null until `vigil up` wrote it.
    pub credentials: Option<HostCredentials>,
    pub nodes: Vec<NodeStatus>,
    pub system_pods: Vec<PodStatus>,
    /// Why the API could not be asked, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Addresses {
    pub api_server: String,
    /// Each add-on's URL (`web`, `prometheus`, ...) once its Service has a
    /// LoadBalancer address.
    #[serde(flatten)]
    pub addons: BTreeMap<&'static str, Option<String>>,
}

#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: String,
    pub machine: crate::provider::MachineState,
    pub ip: Option<String>,
    /// The node's Ready condition as the API reports it (None: unknown).
    pub ready: Option<bool>,
    pub kubelet_version: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PodStatus {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub phase: Option<String>,
    pub ready: bool,
    pub restarts: i32,
}

/// The add-ons' URLs, from their Services' LoadBalancer addresses.
pub async fn addon_addresses(client: &Client) -> BTreeMap<&'static str, Option<String>> {
    let mut out = BTreeMap::new();
    for address in ADDONS.iter().filter_map(|a| a.address.as_ref()) {
        out.insert(address.key, url_of(client, address).await);
    }
    out
}

/// One add-on's URL (`key` as in `addresses`), if its Service has its address.
pub async fn addon_url(client: &Client, key: &str) -> Option<String> {
    let address = ADDONS.iter().filter_map(|a| a.address.as_ref()).find(|a| a.key == key)?;
    url_of(client, address).await
}

async fn url_of(client: &Client, address: &crate::addons::Address) -> Option<String> {
    let services: Api<Service> = Api::namespaced(client.clone(), address.namespace);
    let ip = services.get(address.service).await.ok().as_ref().and_then(load_balancer_ip);
    ip.map(|ip| (address.url)(&ip))
}

pub async fn collect(
    spec: &ClusterSpec,
    plan: &[NodeSpec],
    containers: Vec<NodeInfo>,
    client: Option<Result<Client, String>>,
    credentials: Option<HostCredentials>,
) -> Status {
    let mut api_error = None;
    let mut kube_nodes = vec![];
    let mut pods = vec![];
    let mut addresses = ADDONS.iter().filter_map(|a| Some((a.address.as_ref()?.key, None))).collect();
    match client {
        Some(Ok(client)) => {
            addresses = addon_addresses(&client).await;
            match Api::<KubeNode>::all(client.clone()).list(&ListParams::default()).await {
                Ok(list) => kube_nodes = list.items,
                Err(e) => api_error = Some(e.to_string()),
            }
            for namespace in ["kube-system", addons::flannel::NAMESPACE] {
                if let Ok(list) =
                    Api::<Pod>::namespaced(client.clone(), namespace).list(&ListParams::default()).await
                {
                    pods.extend(list.items);
                }
            }
        }
        Some(Err(e)) => api_error = Some(e),
        None => api_error = Some("the control plane is not running".into()),
    }
    let nodes = containers
        .into_iter()
        .map(|c| {
            let kube = kube_nodes.iter().find(|n| n.metadata.name.as_deref() == Some(&c.name));
            NodeStatus {
                ready: kube.and_then(node_ready_condition),
                kubelet_version: kube
                    .and_then(|n| Some(n.status.as_ref()?.node_info.as_ref()?.kubelet_version.clone())),
                name: c.name,
                role: c.role.as_str().into(),
                machine: c.state,
                ip: c.ip,
            }
        })
        .collect();
    let system_pods = pods
        .iter()
        .map(|p| {
            let status = p.status.as_ref();
            let containers = status.and_then(|s| s.container_statuses.as_ref());
            PodStatus {
                namespace: p.metadata.namespace.clone().unwrap_or_default(),
                name: p.metadata.name.clone().unwrap_or_default(),
                node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                phase: status.and_then(|s| s.phase.clone()),
                ready: pod_ready(p),
                restarts: containers.map(|c| c.iter().map(|c| c.restart_count).sum()).unwrap_or(0),
            }
        })
        .collect();
    let control_plane = plan.iter().find(|n| n.role == Role::ControlPlane);
    Status {
        cluster: spec.name.clone(),
        kubernetes_version: spec.kubernetes_version.clone(),
        kube_context: spec.kube_context(),
        addresses: Addresses {
            api_server: control_plane
                .map(|cp| format!("https://{}:{}", cp.ip, kubeadm::API_SERVER_PORT))
                .unwrap_or_default(),
            addons: addresses,
        },
        credentials,
        nodes,
        system_pods,
        api_error,
    }
}

impl Status {
    pub fn render(&self) -> String {
        let mut out = format!(
            "cluster {} (Kubernetes {}), API server {}, kubectl context {}{}\n",
            self.cluster,
            self.kubernetes_version,
            self.addresses.api_server,
            self.kube_context,
            self.addresses
                .addons
                .iter()
                .filter_map(|(key, url)| Some(format!(", {key} at {}", url.as_ref()?)))
                .collect::<String>()
        );
        out += &match &self.credentials {
            Some(c) => format!(
                "Prometheus, Alertmanager and Jaeger: user {}, password in {}\n",
                c.username,
                c.password_file.display()
            ),
            None => "Prometheus, Alertmanager and Jaeger: no password file (`vigil up` writes it)\n".into(),
        };
        out += "\nNODE                     ROLE           MACHINE    IP             READY\n";
        for n in &self.nodes {
            let ready = match n.ready {
                Some(true) => "Ready",
                Some(false) => "NotReady",
                None => "unknown",
            };
            out += &format!(
                "{:<24} {:<14} {:<10} {:<14} {}\n",
                n.name,
                n.role,
                n.machine.to_string(),
                n.ip.as_deref().unwrap_or("-"),
                ready
            );
        }
        if self.nodes.is_empty() {
            out += "(no node containers: `vigil up` creates them)\n";
        }
        out += "\nSYSTEM POD                                          NODE                     PHASE      READY  RESTARTS\n";
        for p in &self.system_pods {
            out += &format!(
                "{:<51} {:<24} {:<10} {:<6} {}\n",
                format!("{}/{}", p.namespace, p.name),
                p.node.as_deref().unwrap_or("-"),
                p.phase.as_deref().unwrap_or("-"),
                if p.ready { "yes" } else { "no" },
                p.restarts
            );
        }
        if let Some(e) = &self.api_error {
            out += &format!("\n(API not reachable: {e})\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_an_api_the_status_still_shows_the_machines_and_why() {
        let spec = ClusterSpec::default();
        let plan = crate::provider::numbered_plan(&spec);
        let machines = vec![NodeInfo {
            name: "vigil-control-plane".into(),
            role: Role::ControlPlane,
            state: crate::provider::MachineState::Stopped,
            ip: None,
        }];
        let credentials = HostCredentials {
            username: "vigil".into(),
            password_file: "/home/u/.config/vigil/vigil/api-password".into(),
        };
        let status = collect(&spec, &plan, machines, None, Some(credentials)).await;
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["credentials"],
            serde_json::json!({"username": "vigil", "password_file": "/home/u/.config/vigil/vigil/api-password"})
        );
        assert_eq!(json["addresses"]["api_server"], "https://172.29.0.2:6443");
        // Every add-on address is listed, unknown until its Service has one.
        assert_eq!(json["addresses"]["web"], serde_json::Value::Null);
        assert!(json["addresses"].as_object().unwrap().contains_key("prometheus"));
        assert_eq!(json["nodes"][0]["ready"], serde_json::Value::Null);
        assert_eq!(json["nodes"][0]["machine"], "stopped");
        let text = status.render();
        assert!(text.contains("user vigil, password in /home/u/.config/vigil/vigil/api-password"), "{text}");
        assert!(
            text.contains("vigil-control-plane      control-plane  stopped    -              unknown"),
            "{text}"
        );
        assert!(text.contains("(API not reachable: the control plane is not running)"), "{text}");
    }
}
