//! The loop: read a batch after the saved position, deliver it until the
//! store takes it, save the position past it, and again. The journal is
//! the buffer: while the store is away nothing advances, and nothing is
//! held but the batch in hand. Entries journald drops (its own size
//! limits) before the store is back are the only ones lost.

use std::{
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

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

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot read the password file {path}: {source}")]
    Password { path: PathBuf, source: std::io::Error },
    #[error("the log store at {url} did not answer: {source}")]
    Unreachable { url: reqwest::Url, source: reqwest::Error },
    #[error("the log store at {url} refused the batch with {status}{hint}: {body:?}")]
    Refused { url: reqwest::Url, status: reqwest::StatusCode, hint: &'static str, body: String },
}

impl DeliveryError {
    fn outcome(&self) -> &'static str {
        match self {
            DeliveryError::Refused { .. } => "refused",
            DeliveryError::Unreachable { .. } | DeliveryError::Password { .. } => "unreachable",
        }
    }
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
        let answer = self
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
        let body = answer.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(300).collect();
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

/// Waits `wait`, or less if `shutdown` comes first; true if it came.
async fn pause(wait: Duration, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = shutdown => true,
    }
}

impl Shipper {
    fn fresh_start(&self) -> Start {
        Start::Since(epoch_usec(SystemTime::now() - self.start_window))
    }

    /// Ships until `shutdown`. Fails only when the position cannot be
    /// saved (the kubelet restarts the container, and the error says why).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), state::Error> {
        let shutdown = std::pin::pin!(shutdown);
        let mut shutdown = shutdown;
        let mut start = match state::load(&self.state_file)? {
            Some(cursor) => Start::After(cursor),
            None => self.fresh_start(),
        };
        tracing::info!(units = ?self.source.units, dirs = ?self.source.dirs, start = ?start, "shipping");
        loop {
            self.heartbeat.beat();
            let (source, from, limits) = (self.source.clone(), start.clone(), self.limits);
            let read = tokio::task::spawn_blocking(move || journal::read(&source, &from, &limits)).await;
            let (batch, cursor) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(e @ journal::Error::BadCursor { .. })) => {
                    start = self.fresh_start();
                    tracing::warn!(error = %e, restart = ?start, "starting again from the start window");
                    continue;
                }
                Ok(Err(e)) => {
                    self.metrics.read_errors.inc();
                    tracing::warn!(error = %e, "journal not read; trying again");
                    if pause(self.interval, &mut shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => {
                    self.metrics.read_errors.inc();
                    tracing::error!(error = %e, "the journal reader stopped; trying again");
                    if pause(self.interval, &mut shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            if batch.entries > 0 && !self.deliver(batch.body, batch.entries as u64, &mut shutdown).await {
                return Ok(());
            }
            if let Some(cursor) = cursor {
                state::save(&self.state_file, &cursor)?;
                start = Start::After(cursor);
            }
            if !batch.full && pause(self.interval, &mut shutdown).await {
                return Ok(());
            }
        }
    }

    /// Delivers `body` until the store takes it (true), or until shutdown
    /// (false). An attempt under way is let finish: cut, the store may
    /// have kept part of it, and the next pod would send that part again.
    async fn deliver(
        &self,
        body: Vec<u8>,
        entries: u64,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> bool {
        let mut wait = RETRY_FIRST;
        loop {
            self.heartbeat.beat();
            match self.store.deliver(body.clone()).await {
                Ok(()) => {
                    self.metrics.deliveries.get_or_create(&Outcome { outcome: "delivered" }).inc();
                    self.metrics.entries.inc_by(entries);
                    self.metrics.last_delivery.set(epoch_usec(SystemTime::now()) as f64 / 1e6);
                    tracing::debug!(entries, "delivered");
                    return true;
                }
                Err(e) => {
                    self.metrics.deliveries.get_or_create(&Outcome { outcome: e.outcome() }).inc();
                    tracing::warn!(error = %e, entries, retry_in = ?wait, "batch not delivered; it is sent again");
                    if pause(wait, shutdown).await {
                        return false;
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }
}
