//! The loop: read a batch after the saved position, deliver it until the
//! store takes it, save the position past it, and again. The journal is
//! the buffer: while the store is away nothing advances, and nothing is
//! held but the batch in hand. Lost, and counted: entries journald deletes
//! (its own size limits) before the store is back, and a batch the store
//! rejects for good (malformed, too large: no retry would change it).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::watch;
use vigil_telemetry::admin::Heartbeat;

use crate::{
    batch::Limits,
    journal::{self, Source, Start},
    metrics::{Metrics, Outcome},
    state,
};

/// The first wait after a failed delivery; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// What the store reads: the journal export format.
pub const CONTENT_TYPE: &str = "application/vnd.fdo.journal";
/// The most of a refusal's body read, for its message.
const REFUSAL_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot read the password file {path}: {source} (mount the log shippers' Secret there)")]
    Password { path: PathBuf, source: std::io::Error },
    #[error("the log store at {url} did not answer: {source}")]
    Unreachable { url: reqwest::Url, source: reqwest::Error },
    #[error("the log store at {url} refused the batch with {status}{hint}: {body:?}")]
    Refused { url: reqwest::Url, status: reqwest::StatusCode, hint: &'static str, body: String },
}

impl DeliveryError {
    fn outcome(&self) -> &'static str {
        match self {
            DeliveryError::Password { .. } => "password",
            DeliveryError::Unreachable { .. } => "unreachable",
            DeliveryError::Refused { status, .. } if permanent(*status) => "rejected",
            DeliveryError::Refused { .. } => "refused",
        }
    }

    /// Whether no retry of the same batch can succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::Refused { status, .. } if permanent(*status))
    }
}

/// A malformed or oversized batch: the same bytes would be refused again.
fn permanent(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 413)
}

/// What to do about a refusal, where the status says.
fn hint(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        401 => " (the password file must hold the log shippers' password: the Secret vigil-logs-credentials)",
        403 => " (the log shippers' user may not post there: the store's proxy must allow POST on this path)",
        413 => " (the batch is over the route's body limit: lower --max-bytes)",
        _ => "",
    }
}

/// The log store's journald endpoint, as the log shippers' user.
pub struct Store {
    url: reqwest::Url,
    user: String,
    password_file: PathBuf,
    http: reqwest::Client,
}

impl Store {
    pub fn new(
        url: reqwest::Url,
        user: String,
        password_file: PathBuf,
        timeout: Duration,
    ) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Store { url, user, password_file, http })
    }

    /// One attempt. The password is read each time: a replaced Secret is
    /// used from the next attempt on.
    pub async fn deliver(&self, body: Vec<u8>) -> Result<(), DeliveryError> {
        let password = tokio::fs::read_to_string(&self.password_file)
            .await
            .map_err(|source| DeliveryError::Password { path: self.password_file.clone(), source })?;
        let mut answer = self
            .http
            .post(self.url.clone())
            .basic_auth(&self.user, Some(password.trim()))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(|source| DeliveryError::Unreachable { url: self.url.clone(), source })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let mut body = Vec::new();
        while body.len() < REFUSAL_BYTES {
            match answer.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk[..chunk.len().min(REFUSAL_BYTES - body.len())])
                }
                Ok(None) | Err(_) => break,
            }
        }
        let body: String = String::from_utf8_lossy(&body).trim().chars().take(300).collect();
        Err(DeliveryError::Refused { url: self.url.clone(), status, hint: hint(status), body })
    }
}

pub struct Shipper {
    pub source: Source,
    pub limits: Limits,
    pub state_file: PathBuf,
    /// With nothing saved, how far back the first read starts.
    pub start_window: Duration,
    /// The wait between reads once the journal is read to its end.
    pub interval: Duration,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub heartbeat: Heartbeat,
}

fn epoch_usec(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Waits `wait`, or less if shutdown comes first; true if it came.
async fn pause(wait: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    };
    stopped || *shutdown.borrow()
}

/// How a batch ended.
enum Delivery {
    Delivered,
    /// Rejected for good: dropped, counted, and the position moves past it.
    Dropped,
    /// Shutdown came first: the position stays, the next pod sends it.
    Stopped,
}

impl Shipper {
    fn fresh_start(&self) -> Start {
        let since = SystemTime::now().checked_sub(self.start_window).unwrap_or(SystemTime::UNIX_EPOCH);
        Start::Since(epoch_usec(since))
    }

    /// Ships until `shutdown` turns true. Fails only when the position
    /// cannot be saved (the kubelet restarts the container, and the error
    /// says why).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), state::Error> {
        let mut start = match state::load(&self.state_file)? {
            Some(position) => Start::After(position),
            None => self.fresh_start(),
        };
        tracing::info!(units = ?self.source.units, dirs = ?self.source.dirs, start = ?start, "shipping");
        while !*shutdown.borrow() {
            self.heartbeat.beat();
            let (source, from, limits) = (self.source.clone(), start.clone(), self.limits);
            let read = tokio::task::spawn_blocking(move || journal::read(&source, &from, &limits)).await;
            let (batch, position) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(e @ journal::Error::BadCursor { .. })) => {
                    self.metrics.read_errors.inc();
                    start = self.fresh_start();
                    tracing::error!(error = %e, restart = ?start, "the saved position is unusable: starting from the start window");
                    continue;
                }
                Ok(Err(e)) => {
                    self.metrics.read_errors.inc();
                    tracing::warn!(error = %e, "journal not read; trying again");
                    pause(self.interval, &mut shutdown).await;
                    continue;
                }
                Err(e) => {
                    self.metrics.read_errors.inc();
                    tracing::error!(error = %e, "the journal reader stopped; trying again");
                    pause(self.interval, &mut shutdown).await;
                    continue;
                }
            };
            self.metrics.unreadable_entries.inc_by(batch.unreadable as u64);
            self.metrics.values_cut.inc_by(batch.cut as u64);
            if batch.entries > 0 {
                match self.deliver(batch.body, batch.entries as u64, &mut shutdown).await {
                    Delivery::Delivered | Delivery::Dropped => {}
                    Delivery::Stopped => break,
                }
            }
            if let Some(position) = position {
                let (path, saved) = (self.state_file.clone(), position.clone());
                tokio::task::spawn_blocking(move || state::save(&path, &saved))
                    .await
                    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
                start = Start::After(position);
            }
            if !batch.full {
                pause(self.interval, &mut shutdown).await;
            }
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Delivers `body` until the store takes it, rejects it for good, or
    /// shutdown comes. An attempt under way is let finish: cut, the store
    /// may have kept part of it, and the next pod would send that again.
    async fn deliver(&self, body: Vec<u8>, entries: u64, shutdown: &mut watch::Receiver<bool>) -> Delivery {
        let mut wait = RETRY_FIRST;
        loop {
            self.heartbeat.beat();
            match self.store.deliver(body.clone()).await {
                Ok(()) => {
                    self.metrics.deliveries.get_or_create(&Outcome { outcome: "delivered" }).inc();
                    self.metrics.entries_delivered.inc_by(entries);
                    self.metrics.last_delivery.set(epoch_usec(SystemTime::now()) as f64 / 1e6);
                    tracing::debug!(entries, "delivered");
                    return Delivery::Delivered;
                }
                Err(e) => {
                    self.metrics.deliveries.get_or_create(&Outcome { outcome: e.outcome() }).inc();
                    if e.is_permanent() {
                        self.metrics.entries_dropped.inc_by(entries);
                        tracing::error!(error = %e, entries, "batch rejected for good: dropped");
                        return Delivery::Dropped;
                    }
                    tracing::warn!(error = %e, entries, retry_in = ?wait, "batch not delivered; it is sent again");
                    if pause(wait, shutdown).await {
                        return Delivery::Stopped;
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// The longest a turn of the loop may take without beating the heartbeat:
/// a delivery's `timeout` and the longest wait between tries, twice, and
/// the wait between reads, with a minute to spare.
pub fn stale_after(timeout: Duration, interval: Duration) -> Duration {
    (timeout + RETRY_MAX) * 2 + interval + Duration::from_secs(60)
}
