//! `NodeIncident`: one per incident, kept in the cluster rather than on a
//! node's disk, so that `kubectl get nodeincidents` tells the story and a
//! new leader continues where the last one stopped (what was decided, what
//! was delivered, what is still owed).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    incident::Incident,
    model::{Notice, NoticeKind},
};

pub const GROUP: &str = "vigil.local";

/// A node's incident: from suspect or down to resolved.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "vigil.local",
    version = "v1",
    kind = "NodeIncident",
    plural = "nodeincidents",
    shortname = "ni",
    status = "NodeIncidentStatus",
    printcolumn = r#"{"name": "Node", "type": "string", "jsonPath": ".spec.node"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.incident.phase"}"#,
    printcolumn = r#"{"name": "Down", "type": "string", "jsonPath": ".status.incident.downReason"}"#,
    printcolumn = r#"{"name": "Detected", "type": "string", "jsonPath": ".status.incident.detectedAt"}"#,
    printcolumn = r#"{"name": "Rescheduled", "type": "string", "jsonPath": ".status.incident.rescheduledAt"}"#,
    printcolumn = r#"{"name": "Resolved", "type": "string", "jsonPath": ".status.incident.resolvedAt"}"#
)]
pub struct NodeIncidentSpec {
    /// The node this incident is about.
    pub node: String,
}

/// Where a notice stands with one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeliveryState {
    /// Not delivered yet; retried until it is or it expires.
    Pending,
    Delivered,
    /// Not delivered within the expiry.
    Expired,
    /// The receiver refused it (a 4xx other than 408 and 429): retrying would not help.
    Rejected,
}

/// One notice to one sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub sink: String,
    pub notice: NoticeKind,
    /// The idempotency key (`webhook-id`).
    pub key: String,
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeIncidentStatus {
    pub incident: Option<Incident>,
    /// Every notice decided, as sent.
    #[serde(default)]
    pub notices: Vec<Notice>,
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn the_crd_is_cluster_scoped_with_a_status_subresource() {
        let crd = NodeIncident::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("nodeincidents.vigil.local"));
        assert_eq!(crd.spec.scope, "Cluster");
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let columns: Vec<&str> =
            version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert_eq!(columns, ["Node", "Phase", "Down", "Detected", "Rescheduled", "Resolved"]);
        let yaml = serde_yaml::to_string(&crd).unwrap();
        // Kubernetes wants structural schemas: no type lists, no `$ref`.
        assert!(!yaml.contains("$ref") && !yaml.contains("- 'null'"), "{yaml}");
    }
}
