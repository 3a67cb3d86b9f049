//! The elector against a mocked API server on loopback: the Lease's GET,
//! POST and PUT with resourceVersion checks and 409s, each client through a
//! front of its own whose delay and status the test scripts. Slow and
//! failing renewals end the leadership by the renew deadline though no
//! request returns; a peer with a skewed clock is never displaced, one that
//! stops is, after the lease duration and not before; a release hands over
//! at once.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use alerter::leader::{Elector, Leadership, Standing, Timings};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::api::ObjectMeta;
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};

const NAMESPACE: &str = "monitoring";
const NAME: &str = "vigil-alerter";
/// Slack for the scheduler of a busy test machine.
const SLACK: Duration = Duration::from_millis(150);

/// One accepted write to the Lease.
#[derive(Debug, Clone)]
struct Write {
    at: Instant,
    holder: Option<String>,
    duration_seconds: Option<i32>,
}

#[derive(Default)]
struct Store {
    lease: Option<Lease>,
    version: u64,
    writes: Vec<Write>,
}

impl Store {
    /// Stores `lease` as the next version.
    fn put(&mut self, mut lease: Lease) -> Lease {
        self.version += 1;
        lease.metadata.name = Some(NAME.into());
        lease.metadata.namespace = Some(NAMESPACE.into());
        lease.metadata.resource_version = Some(self.version.to_string());
        let spec = lease.spec.clone().unwrap_or_default();
        self.writes.push(Write {
            at: Instant::now(),
            holder: spec.holder_identity,
            duration_seconds: spec.lease_duration_seconds,
        });
        self.lease = Some(lease.clone());
        lease
    }
}

/// What a front does to each request before the store sees it.
#[derive(Debug, Clone, Copy, Default)]
struct Fault {
    delay: Duration,
    status: Option<u16>,
}

#[derive(Clone)]
struct Front {
    store: Arc<Mutex<Store>>,
    fault: Arc<Mutex<Fault>>,
    /// When each request was answered.
    answered: Arc<Mutex<Vec<Instant>>>,
}

fn status(code: u16, reason: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("mock: {reason}"), "reason": reason, "code": code,
    });
    (code, body)
}

impl Front {
    /// Applies the fault, then `handle` over the store.
    async fn answer(&self, handle: impl FnOnce(&mut Store) -> (u16, serde_json::Value)) -> Response {
        let fault = *self.fault.lock().unwrap();
        tokio::time::sleep(fault.delay).await;
        let (code, body) = match fault.status {
            Some(code) => status(code, "InternalError"),
            None => handle(&mut self.store.lock().unwrap()),
        };
        self.answered.lock().unwrap().push(Instant::now());
        (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
    }
}

async fn get_lease(State(front): State<Front>, Path((_, name)): Path<(String, String)>) -> Response {
    front
        .answer(|store| match &store.lease {
            Some(lease) if name == NAME => (200, serde_json::to_value(lease).unwrap()),
            _ => status(404, "NotFound"),
        })
        .await
}

async fn create_lease(State(front): State<Front>, Json(lease): Json<Lease>) -> Response {
    front
        .answer(|store| {
            if store.lease.is_some() {
                return status(409, "AlreadyExists");
            }
            (201, serde_json::to_value(store.put(lease)).unwrap())
        })
        .await
}

async fn replace_lease(State(front): State<Front>, Json(lease): Json<Lease>) -> Response {
    front
        .answer(|store| {
            let Some(current) = &store.lease else { return status(404, "NotFound") };
            if lease.metadata.resource_version != current.metadata.resource_version {
                return status(409, "Conflict");
            }
            (200, serde_json::to_value(store.put(lease)).unwrap())
        })
        .await
}

/// A front on its own loopback port over `store`, and a client of it.
async fn front(store: &Arc<Mutex<Store>>) -> (kube::Client, Front) {
    let front = Front { store: store.clone(), fault: Arc::default(), answered: Arc::default() };
    let leases = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases";
    let app = Router::new()
        .route(&format!("{leases}/{{name}}"), get(get_lease).put(replace_lease))
        .route(leases, post(create_lease))
        .with_state(front.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    (client, front)
}

struct Replica {
    leadership: Leadership,
    release: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn timings(seconds: u64) -> Timings {
    Timings::for_lease_duration(Duration::from_secs(seconds)).unwrap()
}

fn start(client: kube::Client, identity: &str, timings: Timings) -> Replica {
    let (elector, leadership) =
        Elector::new(kube::Api::namespaced(client, NAMESPACE), NAME, identity, timings);
    let (release, released) = oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async {
        let _ = released.await;
    }));
    Replica { leadership, release: Some(release), task }
}

/// When `condition` first held, polled every 10 ms for at most `within`.
async fn when(within: Duration, condition: impl Fn() -> bool) -> Option<Instant> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn peer_lease(renewed: Timestamp, seconds: i32) -> Lease {
    Lease {
        metadata: ObjectMeta::default(),
        spec: Some(LeaseSpec {
            holder_identity: Some("peer".into()),
            renew_time: Some(MicroTime(renewed)),
            acquire_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(seconds),
            lease_transitions: Some(1),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn slow_renewals_end_the_leadership_by_the_renew_deadline_with_no_request_returning() {
    let store = Arc::new(Mutex::new(Store::default()));
    let (client, front) = front(&store).await;
    let t = timings(2);
    let a = start(client, "a", t);
    assert!(when(Duration::from_secs(2), || a.leadership.leading()).await.is_some(), "never led");
    tokio::time::sleep(t.retry_period * 2).await;
    // Every request from now on hangs far beyond the request timeout.
    *front.fault.lock().unwrap() = Fault { delay: Duration::from_secs(60), status: None };
    let faulted = Instant::now();
    let stopped = when(t.renew_deadline + SLACK, || !a.leadership.leading()).await;
    let stopped = stopped.expect("still leading after the renew deadline with every renewal hanging");
    assert!(stopped - faulted <= t.renew_deadline + SLACK, "{:?}", stopped - faulted);
    let late_answers = front.answered.lock().unwrap().iter().filter(|at| **at > faulted + SLACK).count();
    assert_eq!(late_answers, 0, "a request returned; the flag must fall without one");
    assert_eq!(a.leadership.standing(), Standing::Paused, "nobody else was seen: paused, not deposed");
    assert!(a.leadership.led_when_contact_lost());
}

#[tokio::test]
async fn failing_renewals_pause_then_lead_again_once_the_api_answers() {
    let store = Arc::new(Mutex::new(Store::default()));
    let (client, front) = front(&store).await;
    let t = timings(2);
    let a = start(client, "a", t);
    assert!(when(Duration::from_secs(2), || a.leadership.leading()).await.is_some(), "never led");
    let standings = Arc::new(Mutex::new(vec![]));
    let mut watched = a.leadership.clone();
    let recorder = {
        let standings = standings.clone();
        tokio::spawn(async move {
            loop {
                watched.changed().await;
                standings.lock().unwrap().push(watched.standing());
            }
        })
    };
    *front.fault.lock().unwrap() = Fault { delay: Duration::ZERO, status: Some(500) };
    let faulted = Instant::now();
    let stopped = when(t.renew_deadline + SLACK, || !a.leadership.leading()).await;
    assert!(stopped.is_some(), "still leading past the renew deadline while every renewal fails");
    assert_eq!(a.leadership.standing(), Standing::Paused);
    // 500s are answers: the API server is reachable, and the elector says so.
    tokio::time::sleep(t.retry_period * 2).await;
    assert!(a.leadership.api_contact().is_some_and(|at| at > faulted), "no API contact recorded");
    // 503s, which kube's client retries on its own, change nothing either.
    *front.fault.lock().unwrap() = Fault { delay: Duration::ZERO, status: Some(503) };
    tokio::time::sleep(t.lease_duration).await;
    assert_eq!(a.leadership.standing(), Standing::Paused);
    *front.fault.lock().unwrap() = Fault::default();
    let healed = Instant::now();
    let resumed = when(t.retry_period + t.request_timeout + SLACK, || a.leadership.leading()).await;
    assert!(resumed.is_some(), "not leading again {:?} after the API server answered", healed.elapsed());
    recorder.abort();
    let standings = standings.lock().unwrap().clone();
    // The clone starts from the handle's creation (Following nobody), so it first sees Leading.
    assert_eq!(
        standings,
        [Standing::Leading, Standing::Paused, Standing::Leading],
        "never deposed, so never Following"
    );
    let lease = store.lock().unwrap().lease.clone().unwrap().spec.unwrap();
    assert_eq!((lease.holder_identity.as_deref(), lease.lease_transitions), (Some("a"), Some(1)));
}

#[tokio::test]
async fn a_peer_with_a_skewed_clock_that_renews_is_never_displaced() {
    let store = Arc::new(Mutex::new(Store::default()));
    // Its clock is an hour behind ours; its renewals advance it every second.
    let behind = Timestamp::now() - SignedDuration::from_hours(1);
    store.lock().unwrap().put(peer_lease(behind, 3));
    let peer = {
        let store = store.clone();
        tokio::spawn(async move {
            for second in 1.. {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let renewed = behind + SignedDuration::from_secs(second);
                let mut store = store.lock().unwrap();
                let version = store.lease.clone().unwrap().metadata;
                let mut lease = peer_lease(renewed, 3);
                lease.metadata = version;
                store.put(lease);
            }
        })
    };
    let (client, _front) = front(&store).await;
    let t = timings(3);
    let a = start(client, "a", t);
    let watched = Instant::now();
    while watched.elapsed() < t.lease_duration * 2 {
        assert!(!a.leadership.leading(), "took the Lease of a peer that renews");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peer.abort();
    assert_eq!(a.leadership.standing(), Standing::Following(Some("peer".into())));
    let writes = store.lock().unwrap().writes.clone();
    assert!(writes.iter().all(|w| w.holder.as_deref() == Some("peer")), "{writes:?}");
}

#[tokio::test]
async fn a_peer_that_stops_is_replaced_after_the_lease_duration_and_not_before() {
    let store = Arc::new(Mutex::new(Store::default()));
    // Its last renewal claims to be an hour ahead of our clock.
    store.lock().unwrap().put(peer_lease(Timestamp::now() + SignedDuration::from_hours(1), 2));
    let (client, _front) = front(&store).await;
    let t = timings(2);
    let started = Instant::now();
    let a = start(client, "a", t);
    let led = when(t.lease_duration * 2, || a.leadership.leading()).await;
    let led = led.expect("never took the Lease of a peer that stopped");
    let taken = store.lock().unwrap().writes.iter().find(|w| w.holder.as_deref() == Some("a")).unwrap().at;
    assert!(taken - started >= t.lease_duration, "taken after {:?}", taken - started);
    assert!(
        led - started <= t.lease_duration + t.retry_period + t.request_timeout + SLACK,
        "taken only after {:?}",
        led - started
    );
    let lease = store.lock().unwrap().lease.clone().unwrap().spec.unwrap();
    assert_eq!(lease.lease_transitions, Some(2), "a takeover is a new term");
}

#[tokio::test]
async fn a_released_lease_is_taken_by_the_standby_at_once() {
    let store = Arc::new(Mutex::new(Store::default()));
    let t = timings(3);
    let (client_a, _front_a) = front(&store).await;
    let (client_b, _front_b) = front(&store).await;
    let mut a = start(client_a, "a", t);
    assert!(when(Duration::from_secs(2), || a.leadership.leading()).await.is_some(), "a never led");
    let b = start(client_b, "b", t);
    let following =
        when(Duration::from_secs(2), || b.leadership.standing() == Standing::Following(Some("a".into())));
    assert!(following.await.is_some(), "b does not follow a: {:?}", b.leadership.standing());
    a.release.take().unwrap().send(()).unwrap();
    (&mut a.task).await.unwrap();
    let released = Instant::now();
    assert!(!a.leadership.leading(), "a leads after releasing");
    let led = when(t.lease_duration, || b.leadership.leading()).await.expect("b never took over");
    // Without the release, b would wait out the lease duration (3 s) from a's last renewal.
    assert!(led - released <= t.retry_period + t.request_timeout + SLACK, "{:?}", led - released);
    let writes = store.lock().unwrap().writes.clone();
    let release = writes.iter().position(|w| w.holder.is_none()).expect("no release written");
    assert_eq!(writes[release].duration_seconds, Some(1), "{writes:?}");
    assert_eq!(writes[release + 1].holder.as_deref(), Some("b"), "{writes:?}");
}
