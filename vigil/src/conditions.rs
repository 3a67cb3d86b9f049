//! What "ready" means for the objects vigil waits on, in one place: the
//! Ready condition of nodes and pods, a rollout that is complete, a claim
//! that is bound, a Service with a LoadBalancer address.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{Node, NodeCondition, PersistentVolumeClaim, Pod, Service},
};

/// Whether a condition list holds `type_` with status True.
fn is_true<'a>(mut conditions: impl Iterator<Item = (&'a str, &'a str)>, type_: &str) -> bool {
    conditions.any(|(t, status)| t == type_ && status == "True")
}

/// The node's Ready condition is True.
pub fn node_ready(node: &Node) -> bool {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    is_true(conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())), "Ready")
}

/// The node's Ready condition: Some(true/false), None when it has none yet.
pub fn node_ready_condition(node: &Node) -> Option<bool> {
    ready_condition(node).map(|c| c.status == "True")
}

/// The node's Ready condition itself (status, reason, transition time).
pub fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

/// How many Ready pods each node runs, by node name.
pub fn ready_pods_by_node(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut by_node = BTreeMap::new();
    for pod in pods.iter().filter(|p| pod_ready(p)) {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *by_node.entry(node).or_default() += 1;
        }
    }
    by_node
}

/// The pod's Ready condition is True (so it is running and passes its
/// readiness probes), and it is not being deleted: the alerter's own test,
/// so the CLI and the alerter never disagree on it.
pub use alerter_api::pod_ready;

/// The Deployment's current generation has `want` updated, ready replicas and no others.
pub fn deployment_rolled_out(deployment: Option<&Deployment>, want: i32) -> Result<(), String> {
    let d = deployment.ok_or("deployment not created yet")?;
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let (ready, updated) = (status.ready_replicas.unwrap_or(0), status.updated_replicas.unwrap_or(0));
    let current = status.observed_generation >= d.metadata.generation;
    if current && ready >= want && updated >= want && status.replicas.unwrap_or(0) == want {
        Ok(())
    } else {
        Err(format!("deployment {name}: {ready}/{want} ready, {updated} updated"))
    }
}

/// Every node the DaemonSet should run on has a ready pod of its current generation.
pub fn daemon_set_rolled_out(daemon_set: Option<&DaemonSet>) -> Result<(), String> {
    let ds = daemon_set.ok_or("daemonset not created yet")?;
    let name = ds.metadata.name.as_deref().unwrap_or_default();
    let status = ds.status.clone().unwrap_or_default();
    let current = status.observed_generation >= ds.metadata.generation;
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    if current && desired > 0 && status.number_ready == desired && updated == desired {
        Ok(())
    } else {
        Err(format!("daemonset {name}: {}/{desired} ready, {updated} updated", status.number_ready))
    }
}

pub fn claim_bound(claim: Option<&PersistentVolumeClaim>) -> Result<(), String> {
    let claim = claim.ok_or("claim not created yet")?;
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
    match phase {
        "Bound" => Ok(()),
        other => Err(format!(
            "PersistentVolumeClaim {}: {other:?}, not Bound",
            claim.metadata.name.as_deref().unwrap_or_default()
        )),
    }
}

/// The address MetalLB gave a Service, once it has one.
pub fn load_balancer_ip(service: &Service) -> Option<String> {
    service.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?.iter().find_map(|i| i.ip.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::{
        apps::v1::DeploymentStatus,
        core::v1::{NodeCondition, NodeStatus, PodCondition, PodStatus},
    };

    #[test]
    fn ready_means_the_ready_condition_is_true() {
        let node = |status: &str| Node {
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(node_ready(&node("True")));
        assert!(!node_ready(&node("Unknown")));
        assert_eq!(node_ready_condition(&node("False")), Some(false));
        assert_eq!(node_ready_condition(&Node::default()), None);
        let pod = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(pod_ready(&pod));
        assert!(!pod_ready(&Pod::default()));
    }

    #[test]
    fn a_rollout_of_an_old_generation_is_not_done() {
        let mut d = Deployment::default();
        d.metadata.name = Some("web".into());
        d.metadata.generation = Some(2);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(3),
            ready_replicas: Some(3),
            updated_replicas: Some(3),
            ..Default::default()
        });
        assert!(deployment_rolled_out(Some(&d), 3).is_err());
        d.status.as_mut().unwrap().observed_generation = Some(2);
        assert_eq!(deployment_rolled_out(Some(&d), 3), Ok(()));
        assert!(deployment_rolled_out(None, 3).is_err());
    }
}
