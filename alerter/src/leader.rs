//! Fenced leader election on a `coordination.k8s.io` Lease: the replica that
//! holds it acts, the other stands by and takes over once the holder stops
//! renewing. Updates carry the Lease's resourceVersion, so two replicas never
//! both win the same term.
//!
//! # Timings, from the lease duration D (`--lease-duration`, 8 s by default;
//! vigil sets 4 s on tuned clusters)
//!
//! - retry period D/4: the holder renews, and a standby looks, this often;
//! - request timeout D/4: each Lease request is abandoned after it, so a hung
//!   API server (or kube's own retries of 429/503/504) cannot hold a flag up;
//! - renew deadline 2D/3: the holder's authority ends 2D/3 after it *sent*
//!   the last renewal that succeeded ([`Leadership::leading`] checks the
//!   clock at each call, whether or not any request has returned);
//! - expiry D, in observed time: a standby takes over only when the Lease's
//!   record (holder, renewTime, leaseTransitions, resourceVersion) has not
//!   changed for D of its *own* monotonic clock (client-go's rule). No
//!   peer's timestamp is ever compared with the local clock, so skewed
//!   clocks neither steal nor freeze the Lease.
//!
//! Margin: the standby saw the record at or after the holder's renewal was
//! written, hence after it was sent, and waits D from then; the holder's
//! authority ended 2D/3 after that send. D/3 (2.7 s by default) separates
//! the old leader's last act from the new leader's first.

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::{sync::watch, time::Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "lease duration {0:?}: the Lease stores whole seconds; give a whole number of seconds, at least 1s (e.g. --lease-duration 8s)"
    )]
    Duration(Duration),
}

/// The election's timings, all derived from the lease duration (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// D: how long a standby waits, after it last saw the Lease change, before it takes it.
    pub lease_duration: Duration,
    /// 2D/3: how long a successful renewal's authority lasts, from the instant it was sent.
    pub renew_deadline: Duration,
    /// D/4: how often the holder renews and a standby looks.
    pub retry_period: Duration,
    /// D/4: how long any one Lease request may take.
    pub request_timeout: Duration,
}

impl Timings {
    pub fn for_lease_duration(lease_duration: Duration) -> Result<Self, Error> {
        if lease_duration < Duration::from_secs(1) || lease_duration.subsec_nanos() != 0 {
            return Err(Error::Duration(lease_duration));
        }
        Ok(Timings {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration / 4,
            request_timeout: lease_duration / 4,
        })
    }
}

/// Where this replica stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Someone else holds the Lease (named when seen), or nobody we know of.
    Following(Option<String>),
    /// We hold it, and our last renewal's authority has not run out.
    Leading,
    /// We held it at our last contact with the API server, the renewal is
    /// overdue, and we have not seen anyone else hold it: keep state, act on nothing.
    Paused,
}

/// How long our authority lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Authority {
    None,
    Until(Instant),
    /// [`Leadership::fixed`], for tests.
    Always,
}

/// What the elector publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Published {
    authority: Authority,
    /// The other holder last seen.
    holder: Option<String>,
    /// When the last Lease request got any answer from the API server.
    api_contact: Option<Instant>,
}

impl Published {
    fn standing(&self, now: Instant) -> Standing {
        match self.authority {
            Authority::Always => Standing::Leading,
            Authority::Until(until) if now < until => Standing::Leading,
            Authority::Until(_) => Standing::Paused,
            Authority::None => Standing::Following(self.holder.clone()),
        }
    }
}

/// The election's outcome as the controller and delivery see it; cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership {
    published: watch::Receiver<Published>,
    /// The standing [`Self::changed`] last returned on (or found at creation).
    seen: Standing,
}

impl Leadership {
    /// Whether this replica may act now: the fencing check before every send and status write.
    pub fn leading(&self) -> bool {
        self.standing() == Standing::Leading
    }

    pub fn standing(&self) -> Standing {
        self.published.borrow().standing(Instant::now())
    }

    /// Returns once [`Self::standing`] differs from the standing this handle
    /// last returned on (or was created with), including when the authority
    /// runs out with no request returning: no change is missed between calls.
    pub async fn changed(&mut self) {
        let mut elector_gone = false;
        loop {
            let expiry = match self.published.borrow().authority {
                Authority::Until(until) if Instant::now() < until => Some(until),
                _ => None,
            };
            tokio::select! {
                changed = self.published.changed(), if !elector_gone => elector_gone = changed.is_err(),
                () = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {}
                // Nothing left that could change it (a fixed Leadership, or the elector ended).
                () = std::future::pending(), if elector_gone && expiry.is_none() => {}
            }
            let standing = self.standing();
            if standing != self.seen {
                self.seen = standing;
                return;
            }
        }
    }

    /// When the last Lease request got any answer from the API server (409 and 404 included).
    pub fn api_contact(&self) -> Option<Instant> {
        self.published.borrow().api_contact
    }

    /// Whether we held the Lease when we last reached the API server (Paused, or Leading).
    pub fn led_when_contact_lost(&self) -> bool {
        matches!(self.standing(), Standing::Leading | Standing::Paused)
    }

    /// A Leadership that never changes: leading for good, or following nobody. For tests.
    pub fn fixed(leading: bool) -> Self {
        let authority = if leading { Authority::Always } else { Authority::None };
        let (_, published) = watch::channel(Published { authority, holder: None, api_contact: None });
        Leadership::new(published)
    }

    fn new(published: watch::Receiver<Published>) -> Self {
        let seen = published.borrow().standing(Instant::now());
        Leadership { published, seen }
    }
}

/// The Lease's record as a standby compares it between looks: any change
/// (a renewal, a new holder, any write at all) restarts the expiry clock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: String,
    renew_time: Option<Timestamp>,
    transitions: i32,
    resource_version: Option<String>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.unwrap_or_default(),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What a replica does with the Lease as it finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nobody holds it, or the holder's record has not changed for the lease duration: take it.
    Acquire,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it and renews it: stand by.
    Follow(String),
}

/// Observed time: the Lease's record as last seen (None: seen deleted),
/// and the local instant it last changed.
#[derive(Debug, Default)]
pub struct Observer {
    seen: Option<(Option<Record>, Instant)>,
}

impl Observer {
    /// The decision, from the Lease as just read at local instant `now`.
    /// The holder's lease duration is its own (`leaseDurationSeconds`),
    /// `fallback` when it states none.
    pub fn decide(
        &mut self,
        lease: Option<&Lease>,
        identity: &str,
        now: Instant,
        fallback: Duration,
    ) -> Action {
        let Some(lease) = lease else {
            // None ever seen (a first start): take it. Deleted under a
            // holder that may act until its renew deadline: a change like
            // any other, waited out for a lease duration.
            let gone_at = match &self.seen {
                None => return Action::Acquire,
                Some((None, at)) => *at,
                Some((Some(_), _)) => now,
            };
            self.seen = Some((None, gone_at));
            return if now.duration_since(gone_at) >= fallback {
                Action::Acquire
            } else {
                Action::Follow(String::new())
            };
        };
        let record = Record::of(lease);
        let changed_at = match &self.seen {
            Some((Some(seen), at)) if *seen == record => *at,
            _ => now,
        };
        self.seen = Some((Some(record.clone()), changed_at));
        if record.holder == identity {
            return Action::Renew;
        }
        if record.holder.is_empty() {
            return Action::Acquire;
        }
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .filter(|s| *s > 0)
            .map_or(fallback, |s| Duration::from_secs(s as u64));
        if now.duration_since(changed_at) >= duration {
            Action::Acquire
        } else {
            Action::Follow(record.holder)
        }
    }

    /// The Lease could not be read: a holder's renewals may have gone
    /// unseen meanwhile, so its silence is counted again from the next look.
    pub fn lost_sight(&mut self) {
        self.seen = None;
    }
}

/// How a Lease request ended.
enum Outcome<T> {
    Done(T),
    /// The API server answered with an error status.
    Refused(u16),
    /// No answer: timed out, or the connection failed.
    Unanswered,
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    observer: Observer,
    /// The Lease as our last successful write left it: the holder renews
    /// from it without reading first (one request per renewal, not two).
    ours: Option<Lease>,
    published: watch::Sender<Published>,
}

impl Elector {
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        identity: impl Into<String>,
        timings: Timings,
    ) -> (Self, Leadership) {
        let (published, receiver) =
            watch::channel(Published { authority: Authority::None, holder: None, api_contact: None });
        let elector = Elector {
            api,
            name: name.into(),
            identity: identity.into(),
            timings,
            observer: Observer::default(),
            ours: None,
            published,
        };
        (elector, Leadership::new(receiver))
    }

    /// Takes part in the election until `release` resolves, then gives the
    /// Lease up (if held) so a standby takes over at once. Stop every use
    /// of the [`Leadership`] before `release` resolves.
    pub async fn run(mut self, release: impl Future<Output = ()>) {
        let mut release = std::pin::pin!(release);
        let mut cadence = tokio::time::interval(self.timings.retry_period);
        cadence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut release => break,
                _ = cadence.tick() => {}
            }
            tokio::select! {
                biased;
                () = &mut release => break,
                () = self.attempt() => {}
            }
        }
        self.release().await;
    }

    /// One renewal, or one look at the Lease and what follows from it.
    async fn attempt(&mut self) {
        if let Some(ours) = self.ours.clone() {
            match self.write(ours, false).await {
                // Renewed, or no answer / a server error: try again next period on the same footing.
                Outcome::Done(()) | Outcome::Unanswered | Outcome::Refused(500..) => return,
                // Deleted: whoever creates it next leads; stop acting now.
                Outcome::Refused(404) => self.lose(None),
                // 409: someone wrote it (or our last write landed unseen): read it and decide.
                Outcome::Refused(_) => self.ours = None,
            }
        }
        let current = match self.request(self.api.get_opt(&self.name)).await {
            Outcome::Done(current) => current,
            Outcome::Refused(_) | Outcome::Unanswered => {
                self.observer.lost_sight();
                return;
            }
        };
        if let Some(holder) = self.deposed_by(current.as_ref()) {
            // Somebody else held it since our last write: let the controller
            // see that (and drop what it built as leader) before we take it again.
            tracing::warn!(identity = %self.identity, holder = %holder.as_deref().unwrap_or(""), "deposed");
            self.lose(holder);
            return;
        }
        let fallback = self.timings.lease_duration;
        match self.observer.decide(current.as_ref(), &self.identity, Instant::now(), fallback) {
            Action::Follow(holder) => {
                tracing::debug!(%holder, "following");
                // An empty holder: the Lease was just deleted, holder unknown.
                self.lose((!holder.is_empty()).then_some(holder));
            }
            action => {
                let acquire = action == Action::Acquire;
                let lease = self.claim(current, acquire);
                if self.write(lease, acquire).await.is_done() && acquire {
                    tracing::info!(identity = %self.identity, "acquired the Lease");
                }
            }
        }
    }

    /// Another holder (or a release, not ours) was written since our last write.
    fn deposed_by(&self, current: Option<&Lease>) -> Option<Option<String>> {
        let ours = self.published.borrow().authority != Authority::None;
        let current = current.map(Record::of)?;
        if !ours || current.holder == self.identity {
            return None;
        }
        Some((!current.holder.is_empty()).then_some(current.holder))
    }

    /// The Lease as we write it to acquire or renew it.
    fn claim(&self, current: Option<Lease>, acquire: bool) -> Lease {
        let mut lease = current.unwrap_or_else(|| Lease {
            metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
            spec: None,
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if acquire {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(Timestamp::now()));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease
    }

    /// Writes `lease` as a renewal (create when it has no resourceVersion):
    /// on success our authority runs to the instant it was sent plus the renew deadline.
    async fn write(&mut self, mut lease: Lease, acquire: bool) -> Outcome<()> {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.lease_duration_seconds = Some(self.timings.lease_duration.as_secs() as i32);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let sent = Instant::now();
        // The resourceVersion makes a concurrent writer fail with 409.
        let written = if lease.metadata.resource_version.is_none() {
            self.request(self.api.create(&PostParams::default(), &lease)).await
        } else {
            self.request(self.api.replace(&self.name, &PostParams::default(), &lease)).await
        };
        match written {
            Outcome::Done(lease) => {
                self.ours = Some(lease);
                let until = sent + self.timings.renew_deadline;
                let was = self.published.borrow().standing(Instant::now());
                self.published.send_modify(|p| {
                    p.authority = Authority::Until(until);
                    p.holder = None;
                });
                if was != Standing::Leading && Instant::now() < until {
                    tracing::info!(identity = %self.identity, acquired = acquire, "leading");
                }
                Outcome::Done(())
            }
            Outcome::Refused(code) => {
                tracing::warn!(lease = %self.name, code, "leader election: the Lease write was refused");
                Outcome::Refused(code)
            }
            Outcome::Unanswered => Outcome::Unanswered,
        }
    }

    /// Someone else holds the Lease (or nobody, after a release not ours).
    fn lose(&mut self, holder: Option<String>) {
        self.ours = None;
        let was_ours = self.published.borrow().authority != Authority::None;
        self.published.send_if_modified(|p| {
            let changed = p.authority != Authority::None || p.holder != holder;
            p.authority = Authority::None;
            p.holder = holder.clone();
            changed
        });
        if was_ours {
            tracing::info!(identity = %self.identity, holder = ?holder, "no longer leading");
        }
    }

    /// One Lease request, bounded by the request timeout; records any answer as API contact.
    async fn request<T>(&self, request: impl Future<Output = kube::Result<T>>) -> Outcome<T> {
        let answered = match tokio::time::timeout(self.timings.request_timeout, request).await {
            Ok(Ok(value)) => Outcome::Done(value),
            Ok(Err(kube::Error::Api(status))) => Outcome::Refused(status.code),
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.name, error = %e, "leader election: no answer from the API server");
                Outcome::Unanswered
            }
            Err(_) => {
                tracing::warn!(lease = %self.name, timeout = ?self.timings.request_timeout, "leader election: a Lease request timed out");
                Outcome::Unanswered
            }
        };
        if !matches!(answered, Outcome::Unanswered) {
            let now = Instant::now();
            self.published.send_modify(|p| p.api_contact = Some(now));
        }
        answered
    }

    /// Gives the Lease up as client-go's ReleaseOnCancel does: holder
    /// cleared, a 1 s duration, guarded by the resourceVersion (a Lease
    /// someone else took meanwhile is left alone).
    async fn release(mut self) {
        let held = self.published.borrow().authority != Authority::None;
        // Nothing acts on our behalf from here on, whatever the request does.
        self.lose(None);
        if !held {
            return;
        }
        let mut lease = match self.ours.take() {
            Some(lease) => Some(lease),
            None => match self.request(self.api.get_opt(&self.name)).await {
                Outcome::Done(current) => current,
                _ => None,
            },
        };
        for _ in 0..2 {
            let Some(mut current) = lease.take() else { break };
            let spec = current.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                break;
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            match self.request(self.api.replace(&self.name, &PostParams::default(), &current)).await {
                Outcome::Done(_) => {
                    tracing::info!(identity = %self.identity, lease = %self.name, "released the Lease");
                    return;
                }
                // A renewal of ours we gave up on may have landed after all: read and retry once.
                Outcome::Refused(409) => {
                    if let Outcome::Done(current) = self.request(self.api.get_opt(&self.name)).await {
                        lease = current;
                    }
                }
                _ => break,
            }
        }
        tracing::warn!(identity = %self.identity, lease = %self.name, "could not release the Lease; the standby takes it once it expires");
    }
}

impl<T> Outcome<T> {
    fn is_done(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(8);

    fn lease(holder: &str, renewed: Timestamp, version: u64) -> Lease {
        Lease {
            metadata: ObjectMeta { resource_version: Some(version.to_string()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(D.as_secs() as i32),
                ..Default::default()
            }),
        }
    }

    fn hours(n: i64) -> Timestamp {
        Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(n)
    }

    #[test]
    fn a_skewed_peer_that_stops_expires_after_the_lease_duration_of_local_time() {
        for skew in [1, -1] {
            let mut observer = Observer::default();
            let frozen = lease("a", hours(skew), 7);
            let start = Instant::now();
            for elapsed in [0, 1, 4, 7] {
                let now = start + Duration::from_secs(elapsed);
                assert_eq!(
                    observer.decide(Some(&frozen), "b", now, D),
                    Action::Follow("a".into()),
                    "skew {skew} h, {elapsed} s"
                );
            }
            let late = start + D - Duration::from_millis(1);
            assert_eq!(observer.decide(Some(&frozen), "b", late, D), Action::Follow("a".into()));
            assert_eq!(observer.decide(Some(&frozen), "b", start + D, D), Action::Acquire, "skew {skew} h");
        }
    }

    #[test]
    fn a_peer_whose_record_changes_is_followed_however_old_its_clock() {
        let mut observer = Observer::default();
        let start = Instant::now();
        for second in 0..60u64 {
            // Its renewTime is a day behind ours, and advances each renewal.
            let renewed = hours(-24) + k8s_openapi::jiff::SignedDuration::from_secs(second as i64);
            let now = start + Duration::from_secs(second);
            assert_eq!(
                observer.decide(Some(&lease("a", renewed, second)), "b", now, D),
                Action::Follow("a".into()),
                "second {second}"
            );
        }
    }

    #[test]
    fn a_deleted_lease_is_waited_out_like_a_silent_holder() {
        let mut observer = Observer::default();
        let start = Instant::now();
        assert_eq!(
            observer.decide(Some(&lease("a", hours(0), 1)), "b", start, D),
            Action::Follow("a".into())
        );
        // `kubectl delete lease`: "a" may act until its renew deadline.
        let gone = start + Duration::from_secs(1);
        assert_eq!(observer.decide(None, "b", gone, D), Action::Follow(String::new()));
        assert_eq!(
            observer.decide(None, "b", gone + D - Duration::from_millis(1), D),
            Action::Follow(String::new())
        );
        assert_eq!(observer.decide(None, "b", gone + D, D), Action::Acquire);
    }

    #[test]
    fn a_failed_look_restarts_the_holders_clock() {
        let mut observer = Observer::default();
        let start = Instant::now();
        let frozen = lease("a", hours(0), 1);
        assert_eq!(observer.decide(Some(&frozen), "b", start, D), Action::Follow("a".into()));
        // The API server did not answer for longer than D: the holder's
        // renewals may have failed as ours did; its silence counts from now.
        observer.lost_sight();
        let back = start + 2 * D;
        assert_eq!(observer.decide(Some(&frozen), "b", back, D), Action::Follow("a".into()));
        assert_eq!(observer.decide(Some(&frozen), "b", back + D, D), Action::Acquire);
    }

    #[test]
    fn an_empty_holder_or_no_lease_is_taken_and_our_own_is_renewed() {
        let mut observer = Observer::default();
        let now = Instant::now();
        assert_eq!(observer.decide(None, "b", now, D), Action::Acquire);
        assert_eq!(observer.decide(Some(&lease("", hours(1), 1)), "b", now, D), Action::Acquire);
        assert_eq!(observer.decide(Some(&lease("b", hours(-1), 2)), "b", now, D), Action::Renew);
    }

    #[test]
    fn a_first_look_starts_the_clock_however_old_the_renewal() {
        // A replica that just started knows nothing of the holder's past: it waits D.
        let mut observer = Observer::default();
        let now = Instant::now();
        assert_eq!(
            observer.decide(Some(&lease("a", hours(-100), 3)), "b", now, D),
            Action::Follow("a".into())
        );
    }

    #[test]
    fn timings_follow_the_lease_duration_and_refuse_fractions() {
        let t = Timings::for_lease_duration(Duration::from_secs(6)).unwrap();
        assert_eq!(
            (t.renew_deadline, t.retry_period, t.request_timeout),
            (Duration::from_secs(4), Duration::from_millis(1500), Duration::from_millis(1500))
        );
        let e = Timings::for_lease_duration(Duration::from_millis(2500)).unwrap_err().to_string();
        assert!(e.contains("whole number of seconds"), "{e}");
        assert!(Timings::for_lease_duration(Duration::ZERO).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn authority_runs_out_at_the_deadline_with_no_request_returning() {
        let (tx, mut leadership) = {
            let (tx, rx) = watch::channel(Published {
                authority: Authority::Until(Instant::now() + Duration::from_secs(5)),
                holder: None,
                api_contact: Some(Instant::now()),
            });
            (tx, Leadership::new(rx))
        };
        assert!(leadership.leading() && leadership.led_when_contact_lost());
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert!(leadership.leading());
        let started = Instant::now();
        leadership.changed().await;
        assert_eq!(Instant::now().duration_since(started), Duration::from_millis(1));
        assert_eq!(leadership.standing(), Standing::Paused);
        assert!(!leadership.leading() && leadership.led_when_contact_lost());
        tx.send_modify(|p| {
            p.authority = Authority::None;
            p.holder = Some("a".into());
        });
        leadership.changed().await;
        assert_eq!(leadership.standing(), Standing::Following(Some("a".into())));
        assert!(!leadership.led_when_contact_lost());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_leadership_never_changes() {
        assert!(Leadership::fixed(true).leading());
        let mut following = Leadership::fixed(false);
        assert_eq!(following.standing(), Standing::Following(None));
        let waited = tokio::time::timeout(Duration::from_secs(3600), following.changed()).await;
        assert!(waited.is_err(), "changed() returned though nothing can change");
    }
}
