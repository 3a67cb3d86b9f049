//! Delivery: one queue per sink, first in first out (a receiver sees an
//! incident's notices in order). The head is sent until it is delivered,
//! refused for good, or expired, retried after each failure with capped
//! exponential backoff and jitter. Nothing is dropped silently: every
//! outcome is a log line, a metric, and a record the controller keeps in
//! the incident's status. None of them holds a sink's URL (a webhook's
//! path or query is often its secret): failures are described without it,
//! and redirects, which would send the notice elsewhere, are not followed.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use rand::Rng;
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};
use tracing::Instrument as _;

use crate::{
    config::{DeliveryConfig, Sink},
    crd::{Delivery, DeliveryState},
    metrics::{DeliveryLabels, Metrics, SinkLabels},
    model::{Notice, NoticeKind},
    sinks,
};

/// A delivery's new state, for the incident's status.
#[derive(Debug, Clone)]
pub struct Record {
    pub incident: String,
    pub delivery: Delivery,
}

struct Item {
    notice: Notice,
    attempts: u32,
    next_at: Instant,
    expires_at: Instant,
}

struct Queue {
    sink: Sink,
    items: Mutex<VecDeque<Item>>,
    wake: Notify,
}

pub struct Outbox {
    queues: Vec<Arc<Queue>>,
    config: DeliveryConfig,
    generator_url: String,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    records: mpsc::UnboundedSender<Record>,
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Worth trying again: a 5xx, 408, 429, a timeout, no connection.
    Retry(String),
    /// The receiver refused it (another 4xx), or redirected it.
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

/// How an HTTP answer counts.
pub fn classify(status: reqwest::StatusCode) -> Attempt {
    match status.as_u16() {
        200..=299 => Attempt::Delivered,
        408 | 429 | 500..=599 => Attempt::Retry(format!("answered {status}")),
        // Following it would send the notice (and its signature) where the
        // sink's URL does not say; the Location is not shown, it may hold a token.
        300..=399 => Attempt::Refused(format!(
            "answered {status}, a redirect, which is not followed: set the sink's URL to the final one"
        )),
        _ => Attempt::Refused(format!("answered {status}")),
    }
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

impl Outbox {
    pub fn new(
        sinks: Vec<Sink>,
        config: DeliveryConfig,
        generator_url: String,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Record>) {
        let (records, receiver) = mpsc::unbounded_channel();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain client builds");
        metrics.initialize(&sinks.iter().map(|s| s.name.clone()).collect::<Vec<_>>());
        let queues = sinks
            .into_iter()
            .map(|sink| Arc::new(Queue { sink, items: Mutex::default(), wake: Notify::new() }))
            .collect();
        (Arc::new(Outbox { queues, config, generator_url, http, metrics, records }), receiver)
    }

    pub fn sink_names(&self) -> Vec<String> {
        self.queues.iter().map(|q| q.sink.name.clone()).collect()
    }

    /// Queues `notice` for `sink` (or every sink), with `attempts` made before
    /// (by an earlier leader) and the time it expires.
    pub fn enqueue(&self, sink: Option<&str>, notice: &Notice, attempts: u32, expires_in: Duration) {
        for queue in self.queues.iter().filter(|q| sink.is_none_or(|s| s == q.sink.name)) {
            let item = Item {
                notice: notice.clone(),
                attempts,
                next_at: Instant::now(),
                expires_at: Instant::now() + expires_in,
            };
            queue.items.lock().expect("not poisoned").push_back(item);
            self.metrics.pending.get_or_create(&SinkLabels { sink: queue.sink.name.clone() }).inc();
            queue.wake.notify_one();
        }
    }

    /// The time a new notice may take to be delivered.
    pub fn expiry(&self) -> Duration {
        self.config.expire_after
    }

    /// Forgets every queued notice (this replica stopped leading; the new
    /// leader takes them over from the incidents' status).
    pub fn clear(&self) {
        for queue in &self.queues {
            let dropped = std::mem::take(&mut *queue.items.lock().expect("not poisoned"));
            self.metrics
                .pending
                .get_or_create(&SinkLabels { sink: queue.sink.name.clone() })
                .dec_by(dropped.len() as i64);
        }
    }

    /// Delivers, sink by sink, until the process ends.
    pub async fn run(self: Arc<Self>) {
        let tasks = self.queues.iter().cloned().map(|queue| tokio::spawn(self.clone().drain(queue)));
        futures::future::join_all(tasks).await;
    }

    async fn drain(self: Arc<Self>, queue: Arc<Queue>) {
        loop {
            let head = queue.items.lock().expect("not poisoned").front().map(|i| i.next_at);
            match head {
                None => queue.wake.notified().await,
                Some(due) if due > Instant::now() => {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = queue.wake.notified() => {}
                    }
                }
                Some(_) => self.attempt(&queue).await,
            }
        }
    }

    async fn attempt(&self, queue: &Queue) {
        let Some((notice, attempts, expires_at)) = queue
            .items
            .lock()
            .expect("not poisoned")
            .front()
            .map(|i| (i.notice.clone(), i.attempts + 1, i.expires_at))
        else {
            return;
        };
        let sink = &queue.sink.name;
        let span = crate::trace::delivery(&notice, sink, attempts);
        let outcome = if Instant::now() > expires_at {
            None
        } else {
            let request = sinks::request(&queue.sink, &notice, Timestamp::now(), &self.generator_url);
            // The receiver can continue the incident's trace.
            let mut builder = self
                .http
                .post(request.url.clone())
                .headers(span.in_scope(vigil_telemetry::trace_http::current_headers))
                .body(request.body);
            for (name, value) in &request.headers {
                builder = builder.header(*name, value);
            }
            if let Some(auth) = &request.basic_auth {
                builder = builder.basic_auth(&auth.username, Some(auth.password()));
            }
            Some(match builder.send().instrument(span.clone()).await {
                Ok(response) => {
                    span.record("http.response.status_code", response.status().as_u16());
                    classify(response.status())
                }
                Err(e) => Attempt::Retry(failure(e, &request.url)),
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
        let mut delivery = Delivery {
            sink: sink.clone(),
            notice: notice.kind,
            key: notice.id.clone(),
            state: DeliveryState::Pending,
            attempts,
            last_error: None,
            delivered_at: None,
        };
        let done = match outcome {
            Some(Attempt::Delivered) => {
                count("delivered");
                tracing::info!(sink = %sink, key = %notice.id, attempts, "delivered");
                delivery.state = DeliveryState::Delivered;
                let now = Timestamp::now();
                delivery.delivered_at = Some(now.to_string());
                if notice.kind == NoticeKind::NodeDown
                    && let Some(since) =
                        notice.not_ready_since.as_deref().and_then(|t| t.parse::<Timestamp>().ok())
                {
                    let latency = now.duration_since(since).as_secs_f64().max(0.0);
                    self.metrics
                        .detection_latency
                        .get_or_create(&SinkLabels { sink: sink.clone() })
                        .observe(latency);
                }
                true
            }
            Some(Attempt::Refused(why)) => {
                count("rejected");
                tracing::error!(sink = %sink, key = %notice.id, attempts, error = %why, "the receiver refused the notice; not retried");
                delivery.state = DeliveryState::Rejected;
                delivery.last_error = Some(why);
                true
            }
            None => {
                count("expired");
                tracing::error!(sink = %sink, key = %notice.id, attempts = attempts - 1, "not delivered before it expired; given up");
                delivery.state = DeliveryState::Expired;
                delivery.attempts -= 1;
                true
            }
            Some(Attempt::Retry(why)) => {
                count("retried");
                let wait = backoff(&self.config, attempts, rand::rng().random());
                tracing::warn!(sink = %sink, key = %notice.id, attempts, error = %why, retry_in = ?wait, "delivery failed; retrying");
                delivery.last_error = Some(why);
                if let Some(head) = queue.items.lock().expect("not poisoned").front_mut() {
                    head.attempts = attempts;
                    head.next_at = Instant::now() + wait;
                }
                false
            }
        };
        if done {
            queue.items.lock().expect("not poisoned").pop_front();
            self.metrics.pending.get_or_create(&SinkLabels { sink: sink.clone() }).dec();
        }
        let _ = self.records.send(Record { incident: notice.incident.clone(), delivery });
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

    #[test]
    fn server_errors_are_retried_and_client_errors_are_not() {
        assert_eq!(classify(reqwest::StatusCode::NO_CONTENT), Attempt::Delivered);
        assert!(matches!(classify(reqwest::StatusCode::INTERNAL_SERVER_ERROR), Attempt::Retry(_)));
        assert!(matches!(classify(reqwest::StatusCode::TOO_MANY_REQUESTS), Attempt::Retry(_)));
        assert!(matches!(classify(reqwest::StatusCode::UNAUTHORIZED), Attempt::Refused(_)));
        let Attempt::Refused(why) = classify(reqwest::StatusCode::FOUND) else {
            panic!("a redirect is refused")
        };
        assert!(why.contains("redirect") && why.contains("not followed"), "{why}");
    }
}
