//! One incident as the alerter keeps it and a `NodeIncident` stores it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{NoticeKind, OwnerVerdict};

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    Suspect,
    Down,
    Rescheduled,
    NotRescheduled,
    /// Closed: the node stayed Ready for the stated time, or the control plane answers again.
    Resolved,
    /// Closed: the node was deleted and its verdict is in.
    Deleted,
    /// A control-plane incident, open.
    Unreachable,
}

impl Phase {
    pub fn closed(self) -> bool {
        matches!(self, Phase::Resolved | Phase::Deleted)
    }
}

/// What an incident is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentKind {
    /// One node (incidents stored before kinds existed are these).
    #[default]
    Node,
    /// The alerter lost sight of the cluster: API server unreachable or watches not synced.
    ControlPlaneUnreachable,
}

/// One incident, as the tracker keeps it and a `NodeIncident` stores it
/// (times as RFC 3339).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// The `NodeIncident`'s name, from cluster-visible evidence so that
    /// either replica names an outage alike: the node and, in Unix
    /// milliseconds, its Lease's last renewTime (suspect) or its Ready
    /// condition's lastTransitionTime (down); never lower than the node's
    /// previous incident's. `control-plane-<ms>` for a control-plane one.
    pub name: String,
    #[serde(default)]
    pub kind: IncidentKind,
    /// The node; empty for a control-plane incident.
    pub node: String,
    pub phase: Phase,
    /// When the alerter opened it (a control-plane incident: when the feed was lost).
    pub started_at: String,
    /// NotReady, Unknown or Deleted, once down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_reason: Option<String>,
    /// The Lease's renewTime when it was last judged stale (the kubelet's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_renewed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<String>,
    /// When the rescheduling verdict is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescheduled_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// Since when the node has been Ready with its Lease renewed, without a
    /// break: it is resolved once that lasts `stableFor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<String>,
    /// How often the node came back and went down again within this incident.
    #[serde(default)]
    pub flaps: u32,
    /// When the alerter saw the node deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    #[serde(default)]
    pub owners: Vec<OwnerVerdict>,
    /// The notices decided so far, so none is decided twice (after a restart too).
    #[serde(default)]
    pub notices: Vec<NoticeKind>,
}
