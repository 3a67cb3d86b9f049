//! Delivery of notices to sinks.
//!
//! **Queues.** Each sink has one first-in-first-out lane per incident: a
//! receiver sees one incident's notices in order, and incidents are
//! independent (a notice that keeps failing holds back only its own
//! incident's later notices, never another node's). At most one attempt per
//! incident and sink is on the way at a time; lanes of different incidents
//! are sent concurrently. An item is known by its id, the notice's
//! idempotency key (`incident/kind`), and by the queuing it belongs to: a
//! result is applied to that item only, never to "the head" after an await,
//! so a [`Outbox::clear`] (or anything queued meanwhile) during an attempt
//! is not touched by its outcome. An id already queued for a sink is not
//! queued again.
//!
//! **The gate.** Before every send (notices and re-sends alike) the
//! [`Gate`] is asked, immediately before the request goes out; while it
//! says no (this replica does not lead), nothing is sent, no attempt is
//! counted, and items wait, looked at again every [`GATE_POLL`].
//!
//! **Answers**, as the Standard Webhooks spec recommends, for every kind of sink:
//! - 2xx: delivered.
//! - Final, with a record (`Rejected`) and an error log line: 410 Gone (the
//!   receiver asks for no more) and 400, 413, 422 (the receiver refuses the
//!   notice itself: the same bytes sent again get the same answer).
//! - Everything else is retried until delivered or expired, the last error
//!   in the record: 5xx, 408, 429, timeouts and connections that fail, but
//!   also 401, 403 and 404 (a receiver being deployed, a credential being
//!   rotated) and redirects, which are never followed (they would send the
//!   notice and its signature where the sink's URL does not say; the record
//!   says to set the final URL, and a restarted alerter takes the notice
//!   over). A `Retry-After` (seconds or an HTTP date) is honoured: the next
//!   attempt is no sooner, nor later than the notice's expiry. Otherwise
//!   capped exponential backoff with jitter. One attempt's limit is
//!   `delivery.timeout`, 15 s by default.
//!
//! **Alertmanager** is told again of what is still firing: [`Outbox::firing`]
//! keeps each incident's latest notice, and every `delivery.resendInterval`
//! each Alertmanager sink gets that notice's firing alerts again with
//! `endsAt` four intervals ahead (as Prometheus does), unless a notice of
//! the incident is queued or on its way to that sink (it goes first, so a
//! re-send never overtakes a newer notice). Re-sends are counted
//! (`vigil_alerter_alertmanager_resends_total`), not kept in the incident.
//! Alertmanager replicas do not share the alerts they are sent, so each
//! replica is a sink of its own.
//!
//! **At least once.** A notice is sent until a receiver says it has it; an
//! answer lost on the way, or a new leader taking over a notice the old one
//! was sending, sends it again. Receivers deduplicate by `webhook-id` (the
//! notice's `id`, stable across attempts and leaders); Slack has no such key
//! and may show a notice twice.
//!
//! Nothing is dropped silently: every outcome is a log line, a metric, and
//! a record the controller keeps in the incident's status. None of them
//! holds a sink's URL (a webhook's path or query is often its secret).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::jiff::{Timestamp, fmt::rfc2822};
use rand::Rng;
use tokio::{
    sync::{Notify, mpsc},
    task::JoinSet,
    time::Instant,
};
use tracing::Instrument as _;

use crate::{
    config::{DeliveryConfig, Sink, Target},
    crd::{Delivery, DeliveryState},
    metrics::{DeliveryLabels, Metrics, SinkLabels},
    model::{Notice, NoticeKind},
    sinks,
};

/// Whether sending `notice` is allowed now (the controller passes "this
/// replica leads", or for a control-plane incident "it led when the API
/// server stopped answering"). Asked immediately before every request.
pub type Gate = Arc<dyn Fn(&Notice) -> bool + Send + Sync>;

/// How often a closed gate is asked again while items wait.
pub const GATE_POLL: Duration = Duration::from_millis(500);

/// A delivery's new state, for the incident's status.
#[derive(Debug, Clone)]
pub struct Record {
    pub incident: String,
    pub delivery: Delivery,
}

struct Item {
    /// Which queuing this is: ids can be queued again after a `clear()`.
    seq: u64,
    notice: Notice,
    attempts: u32,
    next_at: Instant,
    expires_at: Instant,
    last_error: Option<String>,
}

/// One sink's lanes.
#[derive(Default)]
struct Lanes {
    /// By incident, each first in first out.
    by_incident: BTreeMap<String, VecDeque<Item>>,
    /// Incidents with an attempt or a re-send on its way to this sink.
    busy: BTreeSet<String>,
}

struct Queue {
    sink: Sink,
    lanes: Mutex<Lanes>,
    wake: Notify,
}

impl Queue {
    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().expect("not poisoned")
    }
}

pub struct Outbox {
    queues: Vec<Arc<Queue>>,
    config: DeliveryConfig,
    generator_url: String,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    records: mpsc::UnboundedSender<Record>,
    gate: Gate,
    /// Each incident's latest notice, while it has alerts firing.
    firing: Mutex<BTreeMap<String, Notice>>,
    next_seq: AtomicU64,
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Worth trying again, no sooner than `after` when the receiver said so.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// Refused for good: 410, 400, 413, 422.
    Refused(String),
}

/// Capped exponential backoff with equal jitter: half the step, plus up to
/// the other half at random.
pub fn backoff(config: &DeliveryConfig, attempts: u32, jitter: f64) -> Duration {
    let step = config
        .initial_backoff
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
        .min(config.max_backoff);
    step / 2 + step.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// How an HTTP answer counts; `retry_after` is its `Retry-After`, if any.
pub fn classify(status: reqwest::StatusCode, retry_after: Option<Duration>) -> Attempt {
    let retry = |why: String| Attempt::Retry { why, after: retry_after };
    match status.as_u16() {
        200..=299 => Attempt::Delivered,
        410 => Attempt::Refused(format!(
            "answered {status}: the receiver wants no more notices; remove the sink or restore the receiver"
        )),
        400 | 413 | 422 => Attempt::Refused(format!(
            "answered {status}: the receiver refuses the notice itself, which sending it again cannot change"
        )),
        // The Location is not shown: it may hold a token.
        300..=399 => retry(format!(
            "answered {status}, a redirect, which is not followed: set the sink's URL to the final one"
        )),
        401 | 403 => retry(format!(
            "answered {status}: the receiver does not take the alerter's credentials (yet); retried until it does"
        )),
        404 => retry(format!("answered {status}: nothing at the sink's URL (yet); retried until there is")),
        _ => retry(format!("answered {status}")),
    }
}

/// A `Retry-After` header's wait from `now`: delta-seconds or an HTTP date
/// (a date past is no wait). None when absent or unreadable.
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: Timestamp) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = rfc2822::DateTimeParser::new().parse_timestamp(value).ok()?;
    Some(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
}

/// A request that got no answer, as text for logs, the incident's status
/// and spans: what failed and its causes, without the URL reqwest puts in
/// its message, and with any part of `url` that a cause quotes blanked.
pub fn failure(error: reqwest::Error, url: &reqwest::Url) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "no answer"
    };
    let error = error.without_url();
    let mut text = what.to_owned();
    let mut cause: Option<&dyn std::error::Error> = Some(&error);
    while let Some(e) = cause {
        text += ": ";
        text += &e.to_string();
        cause = e.source();
    }
    let query = url.query().unwrap_or_default();
    let secrets = [url.as_str(), url.path(), query, url.username(), url.password().unwrap_or_default()];
    for secret in secrets.into_iter().filter(|s| s.len() > 1) {
        text = text.replace(secret, "<redacted>");
    }
    text
}

/// The head of a lane, as an attempt takes it.
struct Job {
    seq: u64,
    notice: Notice,
    /// Counting this one.
    attempts: u32,
    expires_at: Instant,
}

/// What an attempt that went ahead came to.
enum Outcome {
    Sent(Attempt),
    Expired,
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl Outbox {
    pub fn new(
        sinks: Vec<Sink>,
        config: DeliveryConfig,
        generator_url: String,
        metrics: Arc<Metrics>,
        gate: Gate,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Record>) {
        let (records, receiver) = mpsc::unbounded_channel();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain client builds");
        metrics.initialize(&sinks.iter().map(|s| s.name.clone()).collect::<Vec<_>>());
        metrics.initialize_resends(
            &sinks
                .iter()
                .filter(|s| matches!(s.target, Target::Alertmanager { .. }))
                .map(|s| s.name.clone())
                .collect::<Vec<_>>(),
        );
        let queues = sinks
            .into_iter()
            .map(|sink| Arc::new(Queue { sink, lanes: Mutex::default(), wake: Notify::new() }))
            .collect();
        let outbox = Outbox {
            queues,
            config,
            generator_url,
            http,
            metrics,
            records,
            gate,
            firing: Mutex::default(),
            next_seq: AtomicU64::new(0),
        };
        (Arc::new(outbox), receiver)
    }

    pub fn sink_names(&self) -> Vec<String> {
        self.queues.iter().map(|q| q.sink.name.clone()).collect()
    }

    /// Queues `notice` for `sink` (or every sink), with `attempts` made before
    /// (by an earlier leader) and the time it expires, behind its incident's
    /// notices queued before. A sink that has its id queued already is left
    /// as it is.
    pub fn enqueue(&self, sink: Option<&str>, notice: &Notice, attempts: u32, expires_in: Duration) {
        for queue in self.queues.iter().filter(|q| sink.is_none_or(|s| s == q.sink.name)) {
            let mut lanes = queue.lanes();
            let lane = lanes.by_incident.entry(notice.incident.clone()).or_default();
            if lane.iter().any(|i| i.notice.id == notice.id) {
                tracing::debug!(sink = %queue.sink.name, key = %notice.id, "queued already");
                continue;
            }
            let now = Instant::now();
            lane.push_back(Item {
                seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
                notice: notice.clone(),
                attempts,
                next_at: now,
                expires_at: now + expires_in,
                last_error: None,
            });
            drop(lanes);
            self.metrics.pending.get_or_create(&SinkLabels { sink: queue.sink.name.clone() }).inc();
            queue.wake.notify_one();
        }
    }

    /// The time a new notice may take to be delivered.
    pub fn expiry(&self) -> Duration {
        self.config.expire_after
    }

    /// Keeps `latest` as `incident`'s latest notice, whose firing alerts
    /// every Alertmanager sink is sent again each re-send interval; None (or
    /// a notice that leaves nothing firing, such as `resolved`) stops that.
    pub fn firing(&self, incident: &str, latest: Option<&Notice>) {
        let mut firing = self.firing.lock().expect("not poisoned");
        match latest {
            Some(notice) if !sinks::still_firing(notice.kind).is_empty() => {
                firing.insert(incident.to_owned(), notice.clone());
            }
            _ => {
                firing.remove(incident);
            }
        }
    }

    /// Forgets every queued notice and what is firing (this replica stopped
    /// leading; the new leader takes them over from the incidents' status),
    /// but a control-plane incident's resolved: only the replica that paged
    /// it while cut off knows of it. An attempt on its way finishes, and its
    /// outcome touches nothing.
    pub fn clear(&self) {
        let owed_by_us =
            |item: &Item| item.notice.node.is_empty() && item.notice.kind == NoticeKind::Resolved;
        for queue in &self.queues {
            let mut dropped = 0;
            queue.lanes().by_incident.retain(|_, lane| {
                let before = lane.len();
                lane.retain(owed_by_us);
                dropped += before - lane.len();
                !lane.is_empty()
            });
            self.metrics
                .pending
                .get_or_create(&SinkLabels { sink: queue.sink.name.clone() })
                .dec_by(dropped as i64);
        }
        self.firing.lock().expect("not poisoned").clear();
    }

    /// Delivers, sink by sink, until the process ends.
    /// Aborting it (or dropping it) stops every sink's attempts with it.
    pub async fn run(self: Arc<Self>) {
        let mut sinks = JoinSet::new();
        for queue in self.queues.iter().cloned() {
            sinks.spawn(self.clone().drive(queue));
        }
        while sinks.join_next().await.is_some() {}
    }

    /// One sink: starts an attempt for every incident whose head is due and
    /// has none on its way, and the re-sends when they are due.
    async fn drive(self: Arc<Self>, queue: Arc<Queue>) {
        let alertmanager = matches!(queue.sink.target, Target::Alertmanager { .. });
        let mut running = JoinSet::new();
        // Which incident each running task holds.
        let mut holding: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut resend_at = Instant::now() + self.config.resend_interval;
        // Firing incidents whose re-send came due while their gate was
        // closed: sent when it opens, not before the next interval for the rest.
        let mut deferred: HashSet<String> = HashSet::new();
        loop {
            let now = Instant::now();
            let mut wake_at = None;
            let mut gated = false;
            {
                let mut lanes = queue.lanes();
                let Lanes { by_incident, busy } = &mut *lanes;
                by_incident.retain(|_, lane| !lane.is_empty());
                for (incident, lane) in by_incident.iter() {
                    let Some(head) = lane.front().filter(|_| !busy.contains(incident)) else { continue };
                    if head.next_at > now {
                        wake_at = earliest(wake_at, head.next_at);
                    } else if !(self.gate)(&head.notice) {
                        gated = true;
                    } else {
                        let job = Job {
                            seq: head.seq,
                            notice: head.notice.clone(),
                            attempts: head.attempts + 1,
                            expires_at: head.expires_at,
                        };
                        busy.insert(incident.clone());
                        let task = running.spawn(self.clone().attempt(queue.clone(), job));
                        holding.insert(task.id(), incident.clone());
                    }
                }
                let due = resend_at <= now;
                if alertmanager && (due || !deferred.is_empty()) {
                    // Under the lanes' lock: a notice queued after this
                    // waits for the re-send, so it is never overtaken.
                    let firing = self.firing.lock().expect("not poisoned").clone();
                    if due {
                        deferred = firing.keys().cloned().collect();
                        resend_at = now + self.config.resend_interval;
                    }
                    deferred.retain(|incident| firing.contains_key(incident));
                    for (incident, latest) in firing {
                        if !deferred.contains(&incident) {
                            continue;
                        }
                        if !(self.gate)(&latest) {
                            gated = true;
                            continue;
                        }
                        deferred.remove(&incident);
                        if busy.contains(&incident) || by_incident.contains_key(&incident) {
                            continue;
                        }
                        busy.insert(incident.clone());
                        let task = running.spawn(self.clone().resend(queue.clone(), latest));
                        holding.insert(task.id(), incident);
                    }
                }
            }
            if alertmanager && resend_at > now {
                wake_at = earliest(wake_at, resend_at);
            }
            if gated {
                wake_at = earliest(wake_at, now + GATE_POLL);
            }
            tokio::select! {
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let task = match &done {
                        Ok((task, ())) => *task,
                        Err(e) => {
                            tracing::error!(sink = %queue.sink.name, error = %e, "a delivery task failed");
                            e.id()
                        }
                    };
                    if let Some(incident) = holding.remove(&task) {
                        queue.lanes().busy.remove(&incident);
                    }
                }
                () = queue.wake.notified() => {}
                () = tokio::time::sleep_until(wake_at.unwrap_or(now)), if wake_at.is_some() => {}
            }
        }
    }

    /// The request's builder, carrying the span's trace context (the
    /// receiver can continue the incident's trace) and any credentials.
    fn post(&self, request: &sinks::Request, span: &tracing::Span) -> reqwest::RequestBuilder {
        let mut builder = self
            .http
            .post(request.url.clone())
            .headers(span.in_scope(vigil_telemetry::trace_http::current_headers))
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        if let Some(auth) = &request.basic_auth {
            builder = builder.basic_auth(&auth.username, Some(auth.password()));
        }
        builder
    }

    /// Sends `job` once, unless the gate is closed (then nothing happens and
    /// the item waits), and applies the outcome to its item, if still queued.
    async fn attempt(self: Arc<Self>, queue: Arc<Queue>, job: Job) {
        let notice = &job.notice;
        let sink = &queue.sink.name;
        let span = crate::trace::delivery(notice, sink, job.attempts);
        let request = sinks::request(
            &queue.sink,
            notice,
            Timestamp::now(),
            &self.generator_url,
            self.config.firing_for(),
        );
        if !(self.gate)(notice) {
            return;
        }
        let outcome = if Instant::now() >= job.expires_at {
            Outcome::Expired
        } else {
            Outcome::Sent(match self.post(&request, &span).send().instrument(span.clone()).await {
                Ok(response) => {
                    span.record("http.response.status_code", response.status().as_u16());
                    classify(response.status(), retry_after(response.headers(), Timestamp::now()))
                }
                Err(e) => Attempt::Retry { why: failure(e, &request.url), after: None },
            })
        };
        // Its log lines below are events of the attempt's span (no await follows).
        let _entered = span.enter();
        let count = |outcome: &'static str| {
            span.record("vigil.outcome", outcome);
            if outcome != "delivered" {
                span.record("otel.status_code", "error");
            }
            self.metrics.deliveries.get_or_create(&DeliveryLabels { sink: sink.clone(), outcome }).inc();
        };
        let (state, why, retry_in) = match outcome {
            Outcome::Sent(Attempt::Delivered) => {
                count("delivered");
                tracing::info!(sink = %sink, key = %notice.id, attempts = job.attempts, "delivered");
                (DeliveryState::Delivered, None, None)
            }
            Outcome::Sent(Attempt::Refused(why)) => {
                count("rejected");
                tracing::error!(sink = %sink, key = %notice.id, attempts = job.attempts, error = %why, "the receiver refused the notice for good; not retried");
                (DeliveryState::Rejected, Some(why), None)
            }
            Outcome::Expired => {
                count("expired");
                tracing::error!(sink = %sink, key = %notice.id, attempts = job.attempts - 1, "not delivered before it expired; given up");
                (DeliveryState::Expired, None, None)
            }
            Outcome::Sent(Attempt::Retry { why, after }) => {
                count("retried");
                let wait =
                    backoff(&self.config, job.attempts, rand::rng().random()).max(after.unwrap_or_default());
                tracing::warn!(sink = %sink, key = %notice.id, attempts = job.attempts, error = %why, retry_in = ?wait, "delivery failed; retrying");
                (DeliveryState::Pending, Some(why), Some(wait))
            }
        };
        let now = Instant::now();
        let mut delivery = Delivery {
            sink: sink.clone(),
            notice: notice.kind,
            key: notice.id.clone(),
            state,
            attempts: job.attempts,
            last_error: why,
            delivered_at: None,
        };
        {
            let mut lanes = queue.lanes();
            let lane = lanes.by_incident.get_mut(&notice.incident);
            let Some((at, item)) =
                lane.and_then(|l| l.iter_mut().enumerate().find(|(_, i)| i.seq == job.seq))
            else {
                tracing::info!(sink = %sink, key = %notice.id, "the notice was cleared during the attempt (no longer leading): its outcome is not recorded");
                return;
            };
            match retry_in {
                Some(wait) => {
                    item.attempts = job.attempts;
                    item.last_error = delivery.last_error.clone();
                    item.next_at = now.checked_add(wait).map_or(item.expires_at, |t| t.min(item.expires_at));
                }
                None => {
                    if state == DeliveryState::Expired {
                        delivery.attempts = item.attempts;
                        delivery.last_error = item.last_error.clone();
                    }
                    lanes.by_incident.get_mut(&notice.incident).expect("found above").remove(at);
                    self.metrics.pending.get_or_create(&SinkLabels { sink: sink.clone() }).dec();
                }
            }
        }
        if state == DeliveryState::Delivered {
            let delivered = Timestamp::now();
            delivery.delivered_at = Some(delivered.to_string());
            self.observe_detection(sink, notice, delivered);
        }
        let _ = self.records.send(Record { incident: notice.incident.clone(), delivery });
    }

    fn observe_detection(&self, sink: &str, notice: &Notice, delivered: Timestamp) {
        if notice.kind == NoticeKind::NodeDown
            && let Some(since) = notice.not_ready_since.as_deref().and_then(|t| t.parse::<Timestamp>().ok())
        {
            let latency = delivered.duration_since(since).as_secs_f64().max(0.0);
            self.metrics.detection_latency.get_or_create(&SinkLabels { sink: sink.into() }).observe(latency);
        }
    }

    /// Posts what `latest` leaves firing to an Alertmanager sink once more,
    /// unless the gate is closed; counted, not recorded (a failed re-send is
    /// retried by the next one).
    async fn resend(self: Arc<Self>, queue: Arc<Queue>, latest: Notice) {
        let sink = &queue.sink.name;
        let firing_for = self.config.firing_for();
        let Some(request) =
            sinks::resend(&queue.sink, &latest, Timestamp::now(), &self.generator_url, firing_for)
        else {
            return;
        };
        let span = tracing::debug_span!("resend", vigil.incident = %latest.incident, vigil.sink = %sink);
        if !(self.gate)(&latest) {
            return;
        }
        let failed = match self.post(&request, &span).send().instrument(span.clone()).await {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("answered {}", response.status())),
            Err(e) => Some(failure(e, &request.url)),
        };
        let outcome = match failed {
            None => {
                tracing::debug!(sink = %sink, incident = %latest.incident, "firing alerts sent again");
                "delivered"
            }
            Some(why) => {
                tracing::warn!(sink = %sink, incident = %latest.incident, error = %why, "could not send the firing alerts again; trying next interval");
                "failed"
            }
        };
        self.metrics.resends.get_or_create(&DeliveryLabels { sink: sink.clone(), outcome }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let config = DeliveryConfig::default();
        assert_eq!(backoff(&config, 1, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(&config, 1, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(&config, 3, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(&config, 30, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(&config, 30, 0.0), Duration::from_secs(15));
    }

    fn retried(attempt: Attempt) -> bool {
        matches!(attempt, Attempt::Retry { .. })
    }

    #[test]
    fn only_gone_and_a_refused_notice_are_final() {
        use reqwest::StatusCode as S;
        assert_eq!(classify(S::NO_CONTENT, None), Attempt::Delivered);
        for status in [S::GONE, S::BAD_REQUEST, S::PAYLOAD_TOO_LARGE, S::UNPROCESSABLE_ENTITY] {
            assert!(matches!(classify(status, None), Attempt::Refused(_)), "{status}");
        }
        for status in [
            S::INTERNAL_SERVER_ERROR,
            S::BAD_GATEWAY,
            S::SERVICE_UNAVAILABLE,
            S::TOO_MANY_REQUESTS,
            S::REQUEST_TIMEOUT,
            S::UNAUTHORIZED,
            S::FORBIDDEN,
            S::NOT_FOUND,
            S::METHOD_NOT_ALLOWED,
            S::CONFLICT,
        ] {
            assert!(retried(classify(status, None)), "{status}");
        }
        let Attempt::Retry { why, after } = classify(S::FOUND, Some(Duration::from_secs(3))) else {
            panic!("a redirect is retried")
        };
        assert!(why.contains("redirect") && why.contains("not followed"), "{why}");
        assert_eq!(after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let headers = |value: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            h
        };
        assert_eq!(retry_after(&headers("120"), now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after(&headers("Thu, 01 Jan 2026 00:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after(&headers("Wed, 31 Dec 2025 23:00:00 GMT"), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new(), now), None);
    }
}
