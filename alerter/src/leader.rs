//! Leader election on a `coordination.k8s.io` Lease: the replica that holds
//! it acts, the other stands by and takes over once the holder stops
//! renewing (its node died, say). Updates carry the Lease's resourceVersion,
//! so two replicas never both win the same term.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;

/// What a replica does with the Lease as it finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it and renews it: stand by.
    Follow(String),
}

/// The decision, from the Lease, the time and who we are.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Action {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return Action::Acquire;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Action::Renew;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
    let expired = renewed.is_none_or(|r| now.duration_since(r).as_secs_f64() > duration.as_secs_f64());
    if holder.is_empty() || expired { Action::Acquire } else { Action::Follow(holder) }
}

pub struct Elector {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    /// How long a holder's renewal counts.
    pub duration: Duration,
    /// How often the holder renews and the others look.
    pub retry: Duration,
}

impl Elector {
    /// Keeps `leading` true while this replica holds the Lease.
    pub async fn run(self, leading: watch::Sender<bool>) {
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            let held = match self.step().await {
                Ok(held) => {
                    last_renewal = held.then(tokio::time::Instant::now);
                    held
                }
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "leader election: Lease not updated");
                    // Lead on through a brief API hiccup, but stop well before
                    // the Lease lapses and another replica may take it.
                    last_renewal.is_some_and(|t| t.elapsed() < self.duration * 2 / 3)
                }
            };
            if held && leading.send_if_modified(|l| !std::mem::replace(l, true)) {
                tracing::info!(identity = %self.identity, "leading");
            }
            if !held && leading.send_if_modified(|l| std::mem::replace(l, false)) {
                tracing::info!(identity = %self.identity, "no longer leading");
            }
            tokio::time::sleep(self.retry).await;
        }
    }

    /// One look at the Lease; whether we hold it afterwards.
    async fn step(&self) -> kube::Result<bool> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let action = decide(current.as_ref(), &self.identity, now);
        if let Action::Follow(holder) = &action {
            tracing::debug!(%holder, "following");
            return Ok(false);
        }
        let mut lease = current.clone().unwrap_or_else(|| Lease {
            metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
            spec: None,
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if action == Action::Acquire {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(self.duration.as_secs() as i32);
        spec.renew_time = Some(MicroTime(now));
        // The resourceVersion read above makes a concurrent taker fail with 409.
        let written = match current {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(_) => self.api.replace(&self.name, &PostParams::default(), &lease).await,
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: &str, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(renewed.parse().unwrap())),
                lease_duration_seconds: Some(seconds),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_live_holder_is_followed_and_a_lapsed_one_replaced() {
        let now: Timestamp = "2026-01-01T00:00:20Z".parse().unwrap();
        assert_eq!(decide(None, "b", now), Action::Acquire);
        assert_eq!(
            decide(Some(&lease("a", "2026-01-01T00:00:15Z", 10)), "b", now),
            Action::Follow("a".into())
        );
        assert_eq!(decide(Some(&lease("a", "2026-01-01T00:00:05Z", 10)), "b", now), Action::Acquire);
        assert_eq!(decide(Some(&lease("b", "2026-01-01T00:00:05Z", 10)), "b", now), Action::Renew);
        assert_eq!(decide(Some(&lease("", "2026-01-01T00:00:19Z", 10)), "b", now), Action::Acquire);
    }
}
