//! Collection happens when Prometheus scrapes, never in the background:
//! every collector runs at once under its own timeout, and the result is
//! kept for a short time so concurrent or repeated scrapes share it. A
//! collector that fails or times out contributes no series that scrape
//! (and `scrape_success` says so); nothing older than the cache is ever
//! served, so a container that is gone leaves no stale series.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    collector::{Collector, Error, docker::DockerCollector, kubelet::Kubelet},
    sample::Samples,
};

/// The configured sources (an enum: the collector trait is static).
pub enum Source {
    Kubelet(Kubelet),
    Docker(DockerCollector),
}

impl Source {
    pub fn name(&self) -> &'static str {
        match self {
            Source::Kubelet(c) => c.name(),
            Source::Docker(c) => c.name(),
        }
    }

    async fn collect(&self) -> Result<Samples, Error> {
        match self {
            Source::Kubelet(c) => c.collect().await,
            Source::Docker(c) => c.collect().await,
        }
    }
}

/// One collector's part of one scrape.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub collector: &'static str,
    pub samples: Option<Samples>,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct Scrape {
    pub node: String,
    pub outcomes: Vec<Outcome>,
    /// Cumulative failures per (collector, error kind), for the counter.
    pub failures: BTreeMap<(&'static str, &'static str), u64>,
}

pub struct Scraper {
    node: String,
    sources: Vec<Source>,
    timeout: Duration,
    cache_for: Duration,
    cache: tokio::sync::Mutex<Option<(Instant, Arc<Scrape>)>>,
    failures: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Scraper {
    pub fn new(node: String, sources: Vec<Source>, timeout: Duration, cache_for: Duration) -> Self {
        Scraper { node, sources, timeout, cache_for, cache: Default::default(), failures: Default::default() }
    }

    pub async fn scrape(&self) -> Arc<Scrape> {
        // Held while collecting: a second scrape waits and gets this result.
        let mut cache = self.cache.lock().await;
        if let Some((at, scrape)) = cache.as_ref()
            && at.elapsed() < self.cache_for
        {
            return scrape.clone();
        }
        let runs = self.sources.iter().map(|source| async move {
            let started = Instant::now();
            let result = match tokio::time::timeout(self.timeout, source.collect()).await {
                Ok(result) => result.map_err(|e| (e.metric_label(), e.to_string())),
                Err(_) => Err((
                    "timeout",
                    format!(
                        "{}: no answer within {}",
                        source.name(),
                        humantime::format_duration(self.timeout)
                    ),
                )),
            };
            (source.name(), result, started.elapsed())
        });
        let mut outcomes = vec![];
        for (collector, result, duration) in futures::future::join_all(runs).await {
            let samples = match result {
                Ok(samples) => {
                    for problem in &samples.problems {
                        tracing::warn!(collector, error = %problem, "part of the collection failed");
                        *self
                            .failures
                            .lock()
                            .expect("not poisoned")
                            .entry((collector, problem.metric_label()))
                            .or_default() += 1;
                    }
                    Some(samples)
                }
                Err((kind, message)) => {
                    tracing::warn!(collector, error = %message, "collection failed");
                    *self.failures.lock().expect("not poisoned").entry((collector, kind)).or_default() += 1;
                    None
                }
            };
            outcomes.push(Outcome { collector, samples, duration });
        }
        let scrape = Arc::new(Scrape {
            node: self.node.clone(),
            outcomes,
            failures: self.failures.lock().expect("not poisoned").clone(),
        });
        *cache = Some((Instant::now(), scrape.clone()));
        scrape
    }
}
