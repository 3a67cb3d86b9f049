//! What the alerter says: notices about one incident of one node, and the
//! per-owner verdict on its pods. These are the webhook's JSON payload (its
//! schema, `alerter-api/webhook.schema.json`, is generated from them) and
//! part of a `NodeIncident`'s status.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What controls a pod, as the alerter groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OwnerKind {
    /// Through its ReplicaSet.
    Deployment,
    StatefulSet,
    /// One pod per node by design: never rescheduled elsewhere.
    DaemonSet,
    /// A ReplicaSet without a Deployment.
    ReplicaSet,
    Job,
    /// No controller: nothing recreates it.
    Bare,
    /// A controller the alerter does not follow.
    Other,
}

impl OwnerKind {
    /// Whether its pods are expected to come back on other nodes.
    pub fn reschedules(self) -> bool {
        matches!(self, OwnerKind::Deployment | OwnerKind::StatefulSet | OwnerKind::ReplicaSet)
    }
}

/// A pod's owner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Owner {
    pub kind: OwnerKind,
    pub namespace: String,
    /// The owner's name; a bare pod's own name.
    pub name: String,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Where a pod of an owner runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Placement {
    pub pod: String,
    pub node: String,
}

/// Whether an owner's pods are back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Not yet: the deadline has not passed.
    Pending,
    /// As many Ready pods on other nodes as it wants.
    Rescheduled,
    /// The deadline passed first; `reason` says what was found.
    NotRescheduled,
    /// A DaemonSet's or a bare pod: not meant to move.
    NotApplicable,
}

/// One owner of pods the node held, and what became of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerVerdict {
    pub owner: Owner,
    /// Its pods on the node when it went down.
    pub pods: Vec<String>,
    /// The replicas it wants (Deployments and StatefulSets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<i32>,
    /// Its Ready pods on other nodes.
    pub ready_elsewhere: i32,
    pub verdict: Verdict,
    /// What was found in the cluster, when it is not (yet) back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where its Ready pods run now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<Placement>,
}

/// The kinds of notice, in the order an incident sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    /// The kubelet stopped renewing its Lease; the node controller has not acted yet.
    Suspect,
    /// The node's Ready condition is False or Unknown, or the node is gone.
    NodeDown,
    /// Every owner that reschedules is back to its replicas on other nodes.
    Rescheduled,
    /// The deadline passed with an owner short of its replicas.
    NotRescheduled,
    /// The node is Ready again, with a fresh Lease, and stayed so for the
    /// stated time; or, for a `control-plane-unreachable` incident, the API
    /// server answers again.
    Resolved,
    /// The node was deleted and its rescheduling verdict is in: the incident is closed.
    NodeDeleted,
    /// The API server has not answered (or a watch has not synced) for a
    /// while: node decisions are paused, nothing is said about the nodes.
    ControlPlaneUnreachable,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 7] = [
        NoticeKind::Suspect,
        NoticeKind::NodeDown,
        NoticeKind::Rescheduled,
        NoticeKind::NotRescheduled,
        NoticeKind::Resolved,
        NoticeKind::NodeDeleted,
        NoticeKind::ControlPlaneUnreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Suspect => "suspect",
            NoticeKind::NodeDown => "node-down",
            NoticeKind::Rescheduled => "rescheduled",
            NoticeKind::NotRescheduled => "not-rescheduled",
            NoticeKind::Resolved => "resolved",
            NoticeKind::NodeDeleted => "node-deleted",
            NoticeKind::ControlPlaneUnreachable => "control-plane-unreachable",
        }
    }
}

/// One notification: the webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: NoticeKind,
    /// The idempotency key: the incident and the kind. The Standard
    /// Webhooks `webhook-id` header carries it too; a receiver that sees a
    /// key twice has seen the same notice twice.
    pub id: String,
    /// The `NodeIncident` this belongs to (`kubectl get nodeincidents`).
    pub incident: String,
    pub cluster: String,
    /// The node; empty for a `control-plane-unreachable` incident.
    pub node: String,
    /// One line for people.
    pub summary: String,
    /// When the alerter decided this (RFC 3339).
    pub time: String,
    /// When the node's kubelet last renewed its Lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_renewed_at: Option<String>,
    /// When the node's Ready condition last changed (from True, for a node that is down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ready_since: Option<String>,
    /// When the alerter saw the node down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<String>,
    /// From detection to every owner back (rescheduled only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_to_rescheduled: Option<f64>,
    /// The pods the node held, by owner, with their verdicts.
    #[serde(default)]
    pub owners: Vec<OwnerVerdict>,
    /// How often the node came back and went down again within this
    /// incident (it is one incident until the node stays up).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flaps: u32,
    /// The incident's trace (W3C trace id, hex), derived from the incident's
    /// name: every span of the incident, whichever replica made it, is in it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
    /// The log store's UI showing the node's lines and those of the
    /// workloads it held (wherever they run now), from a minute before the
    /// node's last Lease renewal to this notice (ten minutes past it while
    /// the incident is open). Absent when no log store is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_url: Option<String>,
}

/// An incident's trace id and its root span's id: the first 24 bytes of
/// SHA-256 over `vigil-incident/<name>`. Anyone holding the incident's name
/// (a notice, `kubectl get ni`, a drill report) can find its trace.
pub fn incident_trace(incident: &str) -> ([u8; 16], [u8; 8]) {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("vigil-incident/{incident}").as_bytes());
    let mut trace = [0; 16];
    let mut span = [0; 8];
    trace.copy_from_slice(&digest[..16]);
    span.copy_from_slice(&digest[16..24]);
    (trace, span)
}

/// [`incident_trace`]'s trace id as 32 hex digits.
pub fn incident_trace_id(incident: &str) -> String {
    incident_trace(incident).0.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Notice {
    pub fn key(incident: &str, kind: NoticeKind) -> String {
        format!("{incident}/{}", kind.as_str())
    }
}

/// The webhook payload's JSON Schema (`alerter-api/webhook.schema.json`).
pub fn webhook_schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(Notice)).expect("schemas serialize") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("webhook.schema.json");
        if std::env::var_os("VIGIL_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, webhook_schema()).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == webhook_schema(),
            "{} is stale: run `VIGIL_UPDATE_GOLDEN=1 cargo test -p alerter`",
            path.display()
        );
    }
}
