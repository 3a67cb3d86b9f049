//! A collector reads one source and returns [`Samples`]. Collectors are
//! chosen at start (`--collector.kubelet`, `--collector.docker`) and run
//! concurrently on every scrape.

pub mod cadvisor;
pub mod docker;
pub mod kubelet;

use crate::sample::Samples;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The source did not answer or refused.
    #[error("{source_name}: {message}")]
    Source { source_name: &'static str, message: String },
    /// The source answered something that does not parse.
    #[error("{source_name}: unexpected answer: {message}")]
    Parse { source_name: &'static str, message: String },
    /// The collector's credentials or configuration cannot be read.
    #[error("{source_name}: {message}")]
    Config { source_name: &'static str, message: String },
}

impl Error {
    /// A short value for the `error` label of the scrape-failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Source { .. } => "source",
            Error::Parse { .. } => "parse",
            Error::Config { .. } => "config",
        }
    }
}

pub trait Collector: Send + Sync {
    fn name(&self) -> &'static str;
    fn collect(&self) -> impl Future<Output = Result<Samples, Error>> + Send;
}
