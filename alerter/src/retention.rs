//! How long closed `NodeIncident`s are kept. Each incident stays in the
//! cluster after it is resolved, so that `kubectl get nodeincidents` tells
//! the recent story; without a limit they grow forever, in etcd and in the
//! leader's memory (it reads them all when it takes over).
//!
//! Kept: every open incident (never deleted: it is owed notices and a
//! resolution), and the closed ones resolved within [`Retention::keep_for`],
//! at most [`Retention::keep_at_most`] of them, the newest.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api,
    api::{DeleteParams, ListParams, Preconditions},
};

use crate::crd::NodeIncident;

pub use alerter_api::config::{DEFAULT_KEEP_AT_MOST, DEFAULT_KEEP_FOR, Retention};

/// One closed incident: when it closed, and whether the cap may take it.
struct Closed<'a> {
    at: Timestamp,
    name: &'a str,
    /// Objects without a recorded incident go by age only: a leader creates
    /// the object, then writes its status; in between it must not be taken.
    cappable: bool,
}

/// Whether `incident` is closed (resolved, or its node deleted), and since
/// when. An incident closed without a time (never written so) counts from its creation;
/// with neither, as closed since ever.
fn closed(incident: &NodeIncident) -> Option<Closed<'_>> {
    let name = incident.metadata.name.as_deref()?;
    let created = incident.metadata.creation_timestamp.as_ref().map(|t| t.0);
    match incident.status.as_ref().and_then(|s| s.incident.as_ref()) {
        Some(i) if i.phase.closed() => {
            let closed_at = i.resolved_at.as_deref().or(i.deleted_at.as_deref());
            let resolved = closed_at.and_then(|t| t.parse().ok());
            Some(Closed { at: resolved.or(created).unwrap_or(Timestamp::MIN), name, cappable: true })
        }
        Some(_) => None,
        None => Some(Closed { at: created.unwrap_or(Timestamp::MIN), name, cappable: false }),
    }
}

/// The names of the incidents to delete, oldest first: closed ones resolved
/// more than `keep_for` before `now`, then, while more than `keep_at_most`
/// closed ones would remain, the oldest of those. Open incidents are never
/// named and do not count towards `keep_at_most`.
pub fn to_delete(
    incidents: &[NodeIncident],
    now: Timestamp,
    keep_for: Duration,
    keep_at_most: usize,
) -> Vec<String> {
    let mut closed: Vec<Closed> = incidents.iter().filter_map(closed).collect();
    closed.sort_by(|a, b| (a.at, a.name).cmp(&(b.at, b.name)));
    let expired = |c: &Closed| now.duration_since(c.at).unsigned_abs() > keep_for && c.at < now;
    let mut remaining = closed.iter().filter(|c| !expired(c)).count();
    let mut names = vec![];
    for c in &closed {
        if expired(c) {
            names.push(c.name.to_owned());
        } else if remaining > keep_at_most && c.cappable {
            names.push(c.name.to_owned());
            remaining -= 1;
        }
    }
    names
}

/// Lists the incidents and deletes what [`to_delete`] names, each only if
/// unchanged since listed (uid and resourceVersion preconditions: one
/// reopened or rewritten meanwhile stays). Returns the names deleted, for
/// the caller to forget. Only the leader calls it.
pub async fn sweep(
    api: &Api<NodeIncident>,
    retention: &Retention,
    now: Timestamp,
) -> Result<Vec<String>, kube::Error> {
    let list = api.list(&ListParams::default()).await?;
    let names = to_delete(&list.items, now, retention.keep_for, retention.keep_at_most);
    let mut deleted = vec![];
    for name in names {
        let Some(item) = list.items.iter().find(|i| i.metadata.name.as_deref() == Some(name.as_str())) else {
            continue;
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: item.metadata.uid.clone(),
                resource_version: item.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => deleted.push(name),
            // Gone already, or changed since listed: nothing to do now.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests;
