//! What every vigil deployable sets up the same way: logging (tracing, with a
//! filter that can be changed at runtime), trace export (OTLP, from the
//! standard OpenTelemetry variables), its admin endpoints, the signals it
//! stops on, and the OpenMetrics encoding of its registry; and reading the
//! text format back.
#![forbid(unsafe_code)]

pub mod admin;
pub mod labels;
pub mod otel;
pub mod serve;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text_format;
pub mod trace_http;

use std::sync::OnceLock;

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};
use tracing_subscriber::{
    Layer, Registry as Subscriber, filter::Targets, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

const LOG_QUEUE_LINES: usize = 4096;

/// Changes the log filter of a running process (`PUT /log-level`).
pub type LogLevelHandle = reload::Handle<Targets, Subscriber>;

/// `info`, `debug`, `web=debug,info`: a default level and per-target levels.
/// (Targets rather than EnvFilter: no regex engine in every pod's binary.)
fn parse_filter(filter: &str) -> Result<Targets, String> {
    filter.trim().parse::<Targets>().map_err(|e| format!("log filter {filter:?}: {e}"))
}

/// Keeps the background log writer and the span exporter alive; what is
/// written after it is dropped is lost (dropping it flushes both).
pub struct Telemetry {
    pub log_level: LogLevelHandle,
    /// Why trace export is off although the environment asked for it.
    pub export_error: Option<String>,
    // Declared before the writer: it flushes spans, and may log, as it goes.
    _tracing: Option<otel::Tracing>,
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

/// Trace export as the environment asks: a tracing layer that hands spans
/// to the exporter, the exporter, and why export is off when a variable is
/// wrong. Spans of the exporter's own HTTP stack are never exported.
pub struct TraceExport<S> {
    pub layer: Option<Box<dyn Layer<S> + Send + Sync>>,
    pub tracing: Option<otel::Tracing>,
    /// A configuration or start-up error: export stays off, the component runs.
    pub error: Option<String>,
    /// What to log once the subscriber is installed.
    pub summary: Option<String>,
}

pub fn trace_export<S>(service: &'static str) -> TraceExport<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span> + Send + Sync,
{
    trace_export_from(otel::settings(|name| std::env::var(name).ok(), service), "")
}

/// [`trace_export`] from settings the caller read (and may have amended,
/// as the CLI adds its cluster's credentials); `note` ends the summary line.
pub fn trace_export_from<S>(settings: Result<otel::Settings, otel::ConfigError>, note: &str) -> TraceExport<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span> + Send + Sync,
{
    let off = |error: Option<String>| TraceExport { layer: None, tracing: None, error, summary: None };
    let config = match settings {
        Ok(otel::Settings::Off) => return off(None),
        Ok(otel::Settings::On(config)) => config,
        Err(e) => return off(Some(e.to_string())),
    };
    let tracing = match otel::start(&config) {
        Ok(t) => t,
        Err(e) => return off(Some(e)),
    };
    use opentelemetry::trace::TracerProvider as _;
    let tracer = tracing.provider.tracer(config.service_name.clone());
    let quiet = ["otlp_export", "h2", "hyper", "hyper_util", "reqwest", "rustls", "tower", "opentelemetry"];
    let targets = quiet.iter().fold(Targets::new().with_default(tracing::Level::INFO), |t, target| {
        t.with_target(*target, tracing_subscriber::filter::LevelFilter::OFF)
    });
    // No source locations, thread ids or busy/idle times on every span: noise
    // in the trace store, and work on every request.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(targets);
    TraceExport {
        layer: Some(Box::new(layer)),
        tracing: Some(tracing),
        error: None,
        summary: Some(format!(
            "exporting spans to {}{note} as service {} (sampler {:?}, queue {})",
            config.endpoint, config.service_name, config.sampler, config.queue
        )),
    }
}

impl<S> TraceExport<S> {
    /// Logs what export does, or why it is off; call once logging is up.
    pub fn report(&self) {
        if let Some(error) = &self.error {
            tracing::error!("OpenTelemetry trace export is off: {error}");
        } else if let Some(summary) = &self.summary {
            tracing::info!("{summary}");
        }
    }
}

/// Ends the process on a bad command line, configuration or address: one
/// line, `<program>: <message>` (the program as it was invoked), and exit
/// status 64 (EX_USAGE), which the e2e's bad-input checks look for.
pub fn usage_error(message: impl std::fmt::Display) -> ! {
    let program = std::env::args_os()
        .next()
        .and_then(|p| std::path::Path::new(&p).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    eprintln!("{program}: {message}");
    std::process::exit(64)
}

/// An error and its causes, as one line (`a: b: c`): what a log line or a
/// report shows when the outer message alone ("error sending request")
/// hides the cause.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

/// Installs the global subscriber for `service` (the default
/// `service.name`). `filter` uses tracing's syntax (`info`,
/// `web=debug,tower=warn`) and applies to log lines only; spans are exported
/// at info whatever the log level. Lines go to stdout through a background
/// writer, so logging a request never waits on the terminal or the pipe.
pub fn init(service: &'static str, filter: &str) -> Result<Telemetry, String> {
    let (filter, log_level) = reload::Layer::new(parse_filter(filter)?);
    let (writer, guard) = log_writer(std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()));
    let _ = DROPPED_LINES.set(writer.error_counter());
    let mut export = trace_export(service);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_target(false)
                .with_ansi(false)
                .with_filter(filter),
        )
        .with(export.layer.take())
        .try_init()
        .map_err(|e| e.to_string())?;
    export.report();
    Ok(Telemetry { log_level, export_error: export.error, _tracing: export.tracing, _writer: guard })
}

/// The background writer log lines go through. The default queue holds
/// 128 000 lines, allocated up front (about 4 MiB resident per process); a
/// few thousand absorb any burst a sidecar or a hostname server produces.
/// When the queue is full (stdout is not read fast enough) a line is
/// dropped and counted, never waited for: waiting would stall the tokio
/// worker that logs, and with it every request on that worker. The writer
/// thread batches lines into one write (it flushes whenever the queue runs
/// empty), so it keeps up under load.
fn log_writer<W: std::io::Write + Send + 'static>(
    out: W,
) -> (tracing_appender::non_blocking::NonBlocking, tracing_appender::non_blocking::WorkerGuard) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(out)
}

/// The log lines this process dropped, once [`init`] has run.
static DROPPED_LINES: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

/// `log_lines_dropped_total`, read from the log writer when scraped.
#[derive(Debug, Clone, Copy)]
struct DroppedLines;

impl EncodeMetric for DroppedLines {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let dropped = DROPPED_LINES.get().map_or(0, |c| c.dropped_lines() as u64);
        encoder.encode_counter::<NoLabelSet, _, u64>(&dropped, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Adds `log_lines_dropped_total` to a component's registry (through
/// [`otel::register`], which every component calls).
fn register_log_metrics(registry: &mut Registry) {
    registry.register(
        "log_lines_dropped",
        "Log lines dropped because stdout was not read fast enough",
        DroppedLines,
    );
}

/// Sets a new filter; the error names what did not parse.
pub fn set_log_level(handle: &LogLevelHandle, filter: &str) -> Result<(), String> {
    handle.reload(parse_filter(filter)?).map_err(|e| e.to_string())
}

/// Resolves on SIGTERM (what the kubelet sends) or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// The content type Prometheus asks for and this encoding produces.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The classic Prometheus text format, for clients that do not ask for
/// OpenMetrics (promtool, curl, older scrapers).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}

/// Whether an `Accept` header offers OpenMetrics (Prometheus's does).
pub fn accepts_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The registry in the format the `Accept` header asks for: its content type and body.
pub fn encode_for(registry: &Registry, accept: Option<&str>) -> (&'static str, String) {
    negotiate(encode(registry), accept)
}

/// An OpenMetrics document as the client asked for it.
pub fn negotiate(openmetrics: String, accept: Option<&str>) -> (&'static str, String) {
    if accepts_openmetrics(accept) {
        (OPENMETRICS, openmetrics)
    } else {
        (PROMETHEUS_TEXT, openmetrics_to_text(&openmetrics))
    }
}

/// OpenMetrics text as Prometheus text 0.0.4: a counter family's metadata
/// names its `_total` samples (OpenMetrics names the family without the
/// suffix), `_created` samples, `# UNIT` and `# EOF` go.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.split_once(' ')
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let metadata =
            ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = metadata {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                continue;
            }
        } else {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            if name.strip_suffix("_created").is_some_and(|family| counters.contains(family)) {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_counters_become_classic_text() {
        let om = "# HELP req Requests.\n# TYPE req counter\n# UNIT req requests\nreq_total{a=\"1\"} 3\nreq_created{a=\"1\"} 1.7e9\n# HELP up Up.\n# TYPE up gauge\nup 1\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP req_total Requests.\n# TYPE req_total counter\nreq_total{a=\"1\"} 3\n# HELP up Up.\n# TYPE up gauge\nup 1\n"
        );
        assert_eq!(negotiate(om.into(), Some("application/openmetrics-text;version=1.0.0")).1, om);
        assert_eq!(negotiate(om.into(), None).0, PROMETHEUS_TEXT);
    }

    /// Stands for a stdout nobody reads: every write waits until the test ends.
    struct Stuck(std::sync::mpsc::Receiver<()>);

    impl std::io::Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_stdout_drops_lines_and_never_blocks_the_logger() {
        let (release, stuck) = std::sync::mpsc::channel();
        let (writer, guard) = log_writer(Stuck(stuck));
        let dropped = writer.error_counter();
        let (done_tx, done) = std::sync::mpsc::channel();
        let lines = 3 * LOG_QUEUE_LINES;
        std::thread::spawn(move || {
            let subscriber = tracing_subscriber::fmt().with_writer(writer).finish();
            tracing::subscriber::with_default(subscriber, || {
                for i in 0..lines {
                    tracing::info!(i, "a line");
                }
            });
            let _ = done_tx.send(());
        });
        let finished = done.recv_timeout(std::time::Duration::from_secs(5));
        drop(release);
        drop(guard);
        assert!(finished.is_ok(), "logging blocked on a stdout that does not drain");
        // The writer thread holds one line, the queue LOG_QUEUE_LINES: the rest are dropped.
        assert!(dropped.dropped_lines() >= lines - LOG_QUEUE_LINES - 1, "{}", dropped.dropped_lines());
        // What a component's /metrics shows (init installs its writer's counter the same way).
        assert!(DROPPED_LINES.set(dropped.clone()).is_ok(), "nothing else in this test binary sets it");
        let mut registry = Registry::with_prefix("web");
        register_log_metrics(&mut registry);
        let text = encode(&registry);
        assert!(text.contains(&format!("web_log_lines_dropped_total {}", dropped.dropped_lines())), "{text}");
    }

    #[test]
    fn filters_parse_or_name_the_problem() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("web=debug,info").is_ok());
        let err = parse_filter("web=loud").unwrap_err();
        assert!(err.contains("web=loud"), "{err}");
    }
}
