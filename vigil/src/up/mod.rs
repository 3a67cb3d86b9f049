//! `vigil up` as an ordered list of steps, the shape of kind's create
//! actions: each step is one file with a name, the steps it needs, and a run
//! function. [`Plan::run`] starts every step whose needs are done, so steps
//! that do not depend on each other run at once (the workers boot while
//! `kubeadm init` runs; the add-ons install side by side), and records each
//! step's duration for the progress lines and `vigil up --json`.
//!
//! Every step finds its work already done and skips it, so a failed `up`
//! resumes where it stopped and a second `up` changes nothing. A new step is
//! a file here and one line in [`steps`].

mod addon;
mod cni;
pub mod context;
mod credentials;
pub mod csr;
mod dns;
mod images;
mod init;
mod join;
mod kubeconfig;
mod provision;
mod ready;
mod saved_spec;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    time::Instant,
};

use async_trait::async_trait;
pub use context::{Context, Deployables, client_for};
use futures::{StreamExt, stream::FuturesUnordered};
pub use init::ADMIN_CONF;
use serde::Serialize;
use tracing::Instrument as _;
pub use vigil_provider::ImageArchive;

use crate::{
    addons::{self, ADDONS},
    apply, poll,
    progress::Line,
    provider::{self, BoxError, CommandError},
    token::{self, BootstrapToken},
};

/// A step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Provider(#[from] provider::Error),
    /// A command on a node failed; where to look next is part of the message.
    #[error("node {node}: {step} failed; output saved in {}\n  {hint}", log.display())]
    NodeStep {
        node: String,
        step: &'static str,
        #[source]
        source: Box<CommandError>,
        log: PathBuf,
        hint: String,
    },
    /// The Kubernetes API refused or could not be reached.
    #[error("{step}: Kubernetes API error")]
    Kube {
        step: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Apply(#[from] apply::Error),
    /// A wait ran out of time; the hint says where to look.
    #[error("{source}\n  {hint}")]
    Timeout { source: poll::Timeout, hint: String },
    #[error(transparent)]
    Kubeconfig(#[from] crate::kubeconfig::Error),
    #[error(transparent)]
    Token(#[from] token::Error),
    #[error("kubeadm's admin kubeconfig cannot configure a client")]
    ClientConfig(#[source] kube::config::KubeconfigError),
    #[error(transparent)]
    Manifest(#[from] addons::upstream::Error),
    /// The images to load into the nodes could not be exported.
    #[error("exporting the deployables' images for the nodes")]
    Images(#[source] BoxError),
    /// The generated credentials could not be read back.
    #[error(transparent)]
    Credentials(#[from] addons::credentials::Error),
    #[error(transparent)]
    PasswordFile(#[from] crate::password_file::Error),
    /// A step ran before the step that provides what it uses: a bug in [`steps`].
    #[error("a step ran before {0} was there: the step list is out of order")]
    OutOfOrder(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A wait that ran out of time, with where to look next.
    pub fn timed_out(hint: impl Into<String>) -> impl FnOnce(poll::Timeout) -> Error {
        let hint = hint.into();
        move |source| Error::Timeout { source, hint }
    }
}

/// What a step reports when it ends well.
pub enum Outcome {
    Done(String),
    /// Nothing to do (already done by an earlier `up`), and why.
    Skipped(String),
}

impl Outcome {
    pub fn done() -> Self {
        Outcome::Done(String::new())
    }
}

/// One step of `up`.
#[async_trait]
pub trait Step: Send + Sync {
    /// Unique in the list; what other steps name in [`Step::needs`].
    fn name(&self) -> String;
    /// The steps that must have finished before this one starts.
    fn needs(&self) -> Vec<String>;
    /// The progress line's title.
    fn title(&self, ctx: &Context) -> String;
    /// Does the work, or finds it done. `line` takes progress details.
    async fn run(&self, ctx: &Context, line: &Line) -> Result<Outcome>;
}

/// What `vigil up` deploys besides the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    ClusterOnly,
    Everything,
}

/// `up`'s steps, in order: every step's needs come before it.
pub fn steps(scope: Scope) -> Vec<Box<dyn Step>> {
    let mut steps: Vec<Box<dyn Step>> = vec![
        Box::new(provision::Provision::ControlPlane),
        Box::new(provision::Provision::Workers),
        Box::new(init::KubeadmInit),
        Box::new(saved_spec::SaveSpec),
        Box::new(kubeconfig::MergeKubeconfig),
        Box::new(cni::PodNetwork),
        Box::new(join::KubeadmJoin),
        Box::new(ready::NodesReady),
        Box::new(dns::Dns),
    ];
    if scope == Scope::Everything {
        steps.push(Box::new(images::LoadImages));
        steps.push(Box::new(credentials::Credentials { dir: crate::password_file::default_dir() }));
        // An add-on installed only after others are ready comes after every Ready step.
        let (first, after) = ADDONS.iter().partition::<Vec<_>, _>(|a| a.installed_after.is_empty());
        for addon in &first {
            steps.push(Box::new(addon::Install(addon)));
        }
        for addon in &first {
            steps.push(Box::new(addon::Ready(addon)));
        }
        for addon in &after {
            steps.push(Box::new(addon::Install(addon)));
            steps.push(Box::new(addon::Ready(addon)));
        }
    }
    steps
}

/// One finished step, for the progress lines and `vigil up --json`.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub name: String,
    /// When it started, in seconds since `up` started.
    pub started: f64,
    pub seconds: f64,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// What `up` did, step by step, with timings (the benchmark reads these).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub cluster: String,
    pub seconds: f64,
    pub steps: Vec<StepRecord>,
    /// URLs of what `up` deployed, by add-on (`web`, `prometheus`, ...).
    pub addresses: BTreeMap<String, String>,
    /// The user of the proxied addresses and the file its password is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<crate::password_file::HostCredentials>,
    /// The token the workers joined with (deleted by now). Kept in memory
    /// only, so the end-to-end test can prove it no longer authenticates.
    #[serde(skip)]
    pub join_token: Option<BootstrapToken>,
}

impl Report {
    /// The URL of the add-on address `key`.
    pub fn address(&self, key: &str) -> Option<&str> {
        self.addresses.get(key).map(String::as_str)
    }
}

/// A step failed; the steps still running then were stopped.
#[derive(Debug, thiserror::Error)]
#[error("step {step} failed")]
pub struct Failed {
    pub step: String,
    #[source]
    pub source: Error,
    /// Steps that were running and were stopped, and steps that never started.
    pub stopped: Vec<String>,
    pub not_started: Vec<String>,
    /// What finished before.
    pub finished: Vec<StepRecord>,
}

/// An ordered list of steps, run as their needs allow.
pub struct Plan {
    steps: Vec<Box<dyn Step>>,
}

impl Plan {
    /// Panics when a step needs one that does not come before it: the list
    /// is code, and such a list is a bug.
    pub fn new(steps: Vec<Box<dyn Step>>) -> Self {
        let mut seen: HashSet<String> = HashSet::new();
        for step in &steps {
            for need in step.needs() {
                assert!(
                    seen.contains(&need),
                    "step {:?} needs {need:?}, which does not come before it",
                    step.name()
                );
            }
            assert!(seen.insert(step.name()), "two steps are named {:?}", step.name());
        }
        Plan { steps }
    }

    pub fn names(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.name()).collect()
    }

    /// Runs every step once its needs are done; stops at the first failure
    /// (steps still running are dropped, to be resumed by the next `up`).
    pub async fn run(&self, ctx: &Context) -> Result<Report, Failed> {
        let root = tracing::info_span!("up", otel.name = "vigil up", vigil.cluster = %ctx.spec.name);
        self.run_steps(ctx).instrument(root).await
    }

    async fn run_steps(&self, ctx: &Context) -> Result<Report, Failed> {
        let started = Instant::now();
        let mut done: HashSet<String> = HashSet::new();
        let mut launched = vec![false; self.steps.len()];
        let mut finished: Vec<StepRecord> = vec![];
        let mut running = FuturesUnordered::new();
        loop {
            for (i, step) in self.steps.iter().enumerate() {
                if !launched[i] && step.needs().iter().all(|n| done.contains(n)) {
                    launched[i] = true;
                    let span = tracing::info_span!(
                        "step",
                        otel.name = %step.name(),
                        otel.status_code = tracing::field::Empty
                    );
                    running.push(self.run_one(ctx, step.as_ref(), started).instrument(span));
                }
            }
            let Some((record, result)) = running.next().await else { break };
            match result {
                Ok(()) => {
                    done.insert(record.name.clone());
                    finished.push(record);
                }
                Err(source) => {
                    drop(running);
                    let stopped = self
                        .steps
                        .iter()
                        .enumerate()
                        .filter(|(i, s)| launched[*i] && !done.contains(&s.name()) && s.name() != record.name)
                        .map(|(_, s)| s.name())
                        .collect();
                    let not_started = self
                        .steps
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !launched[*i])
                        .map(|(_, s)| s.name())
                        .collect();
                    tracing::warn!(step = %record.name, error = %source, "step failed");
                    return Err(Failed { step: record.name, source, stopped, not_started, finished });
                }
            }
        }
        Ok(Report {
            cluster: ctx.spec.name.clone(),
            seconds: started.elapsed().as_secs_f64(),
            steps: finished,
            addresses: ctx.addresses(),
            credentials: ctx.credentials(),
            join_token: ctx.join_token(),
        })
    }

    async fn run_one(&self, ctx: &Context, step: &dyn Step, up_started: Instant) -> (StepRecord, Result<()>) {
        let name = step.name();
        let started = Instant::now();
        tracing::info!(step = %name, "start");
        let line = ctx.progress.line(step.title(ctx));
        let result = step.run(ctx, &line).await;
        let seconds = started.elapsed().as_secs_f64();
        let (outcome, detail) = match &result {
            Ok(Outcome::Done(detail)) => {
                line.done_with(detail);
                ("done", detail.clone())
            }
            Ok(Outcome::Skipped(why)) => {
                line.skipped(why);
                ("skipped", why.clone())
            }
            Err(e) => {
                line.failed();
                tracing::Span::current().record("otel.status_code", "error");
                tracing::error!(step = %name, error = %e, "step failed");
                ("failed", String::new())
            }
        };
        tracing::info!(step = %name, outcome, seconds, "end");
        let record = StepRecord {
            name,
            started: started.duration_since(up_started).as_secs_f64(),
            seconds,
            outcome,
            detail,
        };
        (record, result.map(|_| ()))
    }
}
