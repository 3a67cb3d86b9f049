//! `vigil status`: what the provider sees (containers) next to what the
//! cluster says (nodes, system pods), and the addresses of what vigil runs.

use k8s_openapi::api::core::v1::{Node as KubeNode, Pod};
use kube::{Api, Client, api::ListParams};
use serde::Serialize;

use crate::{addons, cluster::ClusterSpec, kubeadm, provider::NodeInfo};

#[derive(Debug, Serialize)]
pub struct Status {
    pub cluster: String,
    pub kubernetes_version: String,
    pub kube_context: String,
    pub addresses: Addresses,
    pub nodes: Vec<NodeStatus>,
    pub system_pods: Vec<PodStatus>,
    /// Why the API could not be asked, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Addresses {
    pub api_server: String,
    /// The web Service's LoadBalancer URL, once MetalLB has given it an address.
    pub web: Option<String>,
    /// Prometheus's UI, once its Service has an address.
    pub prometheus: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: String,
    pub container: String,
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

fn condition(node: &KubeNode, kind: &str) -> Option<bool> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind).map(|c| c.status == "True")
}

pub async fn collect(
    spec: &ClusterSpec,
    containers: Vec<NodeInfo>,
    client: Option<Result<Client, String>>,
) -> Status {
    let mut api_error = None;
    let mut kube_nodes = vec![];
    let mut pods = vec![];
    match client {
        Some(Ok(client)) => {
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
                ready: kube.and_then(|n| condition(n, "Ready")),
                kubelet_version: kube
                    .and_then(|n| Some(n.status.as_ref()?.node_info.as_ref()?.kubelet_version.clone())),
                name: c.name,
                role: c.role.as_str().into(),
                container: c.state,
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
                ready: status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
                restarts: containers.map(|c| c.iter().map(|c| c.restart_count).sum()).unwrap_or(0),
            }
        })
        .collect();
    Status {
        cluster: spec.name.clone(),
        kubernetes_version: spec.kubernetes_version.clone(),
        kube_context: spec.kube_context(),
        addresses: Addresses {
            api_server: format!("https://{}:{}", spec.control_plane().ip, kubeadm::API_SERVER_PORT),
            web: None,
            prometheus: None,
        },
        nodes,
        system_pods,
        api_error,
    }
}

impl Status {
    pub fn render(&self) -> String {
        let mut out = format!(
            "cluster {} (Kubernetes {}), API server {}, kubectl context {}{}\n\nNODE                     ROLE           CONTAINER  IP             READY\n",
            self.cluster,
            self.kubernetes_version,
            self.addresses.api_server,
            self.kube_context,
            self.addresses.web.as_deref().map(|u| format!(", web at {u}")).unwrap_or_default()
                + &self
                    .addresses
                    .prometheus
                    .as_deref()
                    .map(|u| format!(", Prometheus at {u}"))
                    .unwrap_or_default()
        );
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
                n.container,
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
