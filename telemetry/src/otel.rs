//! Trace export over OTLP/HTTP, configured the way every OpenTelemetry SDK
//! is: by the standard environment variables, and off when none names an
//! endpoint. One place for every vigil binary.
//!
//! Spans leave the process through [`ExportQueue`], a bounded queue drained by
//! one thread: a trace store that is down or slow costs at most a full
//! queue, never a request. What is dropped, and why, is counted in
//! [`SpanCounters`] (served as `otel_spans_*` on each component's metrics).

pub use opentelemetry;
pub use tracing_opentelemetry::OpenTelemetrySpanExt;

use std::{
    cell::Cell,
    collections::HashMap,
    sync::{
        LazyLock, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    time::{Duration, Instant},
};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use opentelemetry_otlp::WithHttpConfig;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    propagation::TraceContextPropagator,
    trace::{
        IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SamplingResult, SdkTracerProvider,
        ShouldSample, SpanData, SpanExporter, SpanProcessor,
    },
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Settings {
    /// No endpoint named (or `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`).
    Off,
    On(Config),
}

/// What vigil checked of the standard variables, and what it adds. The
/// OpenTelemetry SDK reads the endpoint, headers, timeout and resource from
/// the environment itself; vigil reads them first only to refuse a bad
/// value with its fix, and to say where spans go.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The full URL spans are POSTed to (`.../v1/traces`), as the SDK resolves it.
    pub endpoint: String,
    /// A headers variable names headers (the SDK sends them).
    pub headers_from_environment: bool,
    /// Headers vigil adds to the environment's (the CLI's credentials for
    /// its cluster's own Jaeger).
    pub extra_headers: Vec<(String, String)>,
    /// The export's deadline, which vigil's HTTP client enforces.
    pub timeout: Duration,
    pub service_name: String,
    /// Neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names the
    /// service: the binary's name is given to the SDK.
    pub service_name_defaulted: bool,
    pub sampler: SamplerChoice,
    pub queue: usize,
    pub batch: usize,
    pub delay: Duration,
    /// Requests a second that callers may force into tracing with a sampled
    /// `traceparent` ([`CALLER_SAMPLED_VAR`]).
    pub caller_sampled_per_second: u32,
}

/// How many requests a second callers may force into tracing by sending a
/// sampled `traceparent`, per process. A caller's decision is followed up
/// to this rate; beyond it the request is sampled as if it came without
/// one (counted in `otel_caller_samples_refused_total`), so a client cannot
/// make a replica trace, and the trace store keep, every request it sends.
/// `0`: a caller's flag never forces a trace.
pub const CALLER_SAMPLED_VAR: &str = "VIGIL_TRACES_CALLER_SAMPLED_PER_SECOND";

/// A drill, a test or an engineer with curl sends a few traced requests a
/// second; a flood sends thousands.
pub const CALLER_SAMPLED_PER_SECOND: u32 = 10;

#[derive(Debug, Clone, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBased(Box<SamplerChoice>),
}

impl SamplerChoice {
    /// The decision for a request whose caller's context is `parent` (empty
    /// when it sent none), taken before any span exists. A sampled parent
    /// is followed as long as `callers` admits it.
    fn decide(&self, parent: &Context, callers: &RateCap) -> bool {
        match self {
            SamplerChoice::AlwaysOn => true,
            SamplerChoice::AlwaysOff => false,
            SamplerChoice::Ratio(ratio) => rand::random::<f64>() < *ratio,
            SamplerChoice::ParentBased(root) => {
                let span = parent.span();
                let context = span.span_context();
                if !context.is_valid() {
                    return root.decide(parent, callers);
                }
                if !context.is_sampled() {
                    return false;
                }
                if callers.admit() {
                    return true;
                }
                SPANS.caller_refused.inc();
                root.decide(parent, callers)
            }
        }
    }

    fn sampler(&self) -> Sampler {
        match self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::Ratio(r) => Sampler::TraceIdRatioBased(*r),
            SamplerChoice::ParentBased(root) => Sampler::ParentBased(Box::new(root.sampler())),
        }
    }
}

/// A rate limit that admits `per_second` events a second, in bursts of up
/// to a second's worth (the generic cell rate algorithm: one atomic, no lock).
#[derive(Debug)]
pub struct RateCap {
    /// Nanoseconds between two admitted events; 0: admit none.
    interval: u64,
    /// How far ahead of now the schedule may run: a burst of a second's
    /// worth, the first of which is not ahead.
    tolerance: u64,
    /// When the schedule next has room, in nanoseconds since `EPOCH`.
    next: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl RateCap {
    pub fn new(per_second: u32) -> Self {
        let interval = if per_second == 0 { 0 } else { 1_000_000_000 / u64::from(per_second) };
        let tolerance = interval * u64::from(per_second.saturating_sub(1));
        RateCap { interval, tolerance, next: AtomicU64::new(0) }
    }

    pub fn admit(&self) -> bool {
        self.admit_at(EPOCH.elapsed().as_nanos() as u64)
    }

    fn admit_at(&self, now: u64) -> bool {
        if self.interval == 0 {
            return false;
        }
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let start = next.max(now);
            if start - now > self.tolerance {
                return false;
            }
            match self.next.compare_exchange_weak(
                next,
                start + self.interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(current) => next = current,
            }
        }
    }
}

/// The configured sampling, once export is on; what [`traced`] applies.
struct Head {
    choice: SamplerChoice,
    callers: RateCap,
}

static HEAD: OnceLock<Head> = OnceLock::new();

/// Whether a request whose caller sent `parent` is traced. Decided before
/// its span exists, so an untraced request costs no span at all (the
/// tracing layer's work per span is most of export's cost); false while
/// export is off.
pub fn traced(parent: &Context) -> bool {
    HEAD.get().is_some_and(|head| head.choice.decide(parent, &head.callers))
}

/// The provider's sampler: the configured one, except for a server span,
/// which [`trace_http`](crate::trace_http) only creates for a request
/// [`traced`] already sampled (sampling it again would trace ratio² of
/// them), and a root started through [`start_with_ids`].
#[derive(Clone, Debug)]
struct Decided(Sampler);

impl ShouldSample for Decided {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        // A server span exists only because `traced` sampled its request; a
        // root started with chosen ids is an incident's, always traced.
        let decided = *kind == SpanKind::Server || NEXT_IDS.with(|n| n.get()).is_some();
        if decided {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: vec![],
                trace_state: TraceState::default(),
            };
        }
        self.0.should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

/// A variable that cannot be used, and what to set instead.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{variable}{}: {problem}; {fix}", shown(.value))]
pub struct ConfigError {
    pub variable: &'static str,
    /// None for a variable that carries credentials: its value is never
    /// repeated in an error, which ends up in logs and events.
    pub value: Option<String>,
    pub problem: String,
    pub fix: &'static str,
}

fn shown(value: &Option<String>) -> String {
    match value {
        Some(value) => format!("={value:?}"),
        None => " (value not shown: it carries credentials)".into(),
    }
}

/// The variables whose values are headers such as `authorization`.
fn secret(variable: &str) -> bool {
    variable.ends_with("_HEADERS")
}

const ENDPOINT_FIX: &str =
    "set an http:// URL such as http://jaeger.monitoring:4318, or unset it to turn export off";

fn bad(variable: &'static str, value: &str, problem: impl Into<String>, fix: &'static str) -> ConfigError {
    let value = (!secret(variable)).then(|| value.to_owned());
    ConfigError { variable, value, problem: problem.into(), fix }
}

/// Reads the standard variables through `var` (the environment, or a map in
/// tests). `service` names the binary when `OTEL_SERVICE_NAME` does not.
pub fn settings(var: impl Fn(&str) -> Option<String>, service: &str) -> Result<Settings, ConfigError> {
    let var = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(Settings::Off);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(Settings::Off),
        Some(other) => {
            return Err(bad("OTEL_TRACES_EXPORTER", other, "not an exporter vigil has", "use otlp or none"));
        }
    }
    let (variable, endpoint) =
        match (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            // The per-signal URL is used as given; the general one is a base.
            (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url),
            (None, Some(base)) => {
                ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}/v1/traces", base.trim_end_matches('/')))
            }
            (None, None) => return Ok(Settings::Off),
        };
    let shown = var(variable).unwrap_or_default();
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return Err(bad(variable, &shown, "not a URL", ENDPOINT_FIX));
    };
    if scheme != "http" {
        return Err(bad(
            variable,
            &shown,
            format!("{scheme}:// is not built in (no TLS stack in every pod)"),
            "send to the collector's plain http:// port, e.g. http://jaeger.monitoring:4318, or unset it to turn export off",
        ));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = if authority.ends_with(']') {
        authority
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() || endpoint.parse::<http::Uri>().is_err() {
        return Err(bad(variable, &shown, "not a valid URL with a host", ENDPOINT_FIX));
    }
    // The per-signal variable wins over the general one.
    let protocol = ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]
        .into_iter()
        .find(|name| var(name).is_some());
    if let Some(protocol) = protocol
        && let Some(p) = var(protocol).filter(|p| p != "http/protobuf")
    {
        return Err(bad(
            protocol,
            &p,
            "only http/protobuf is built in (no gRPC stack in every pod)",
            "use http/protobuf and the collector's HTTP port (4318)",
        ));
    }
    // From a millisecond to an hour: 0 would spin the export thread, and
    // a huge value overflows the clock.
    let millis = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
        match var(name) {
            None => Ok(Duration::from_millis(default)),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|ms| (1..=3_600_000).contains(ms))
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    bad(
                        name,
                        &v,
                        "not a whole number of milliseconds from 1 to 3600000",
                        "use milliseconds, e.g. 10000",
                    )
                }),
        }
    };
    let count = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
        match var(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(name, &v, "not a positive whole number", "use a count such as 2048")),
        }
    };
    let timeout = match var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
        Some(_) => millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 10_000)?,
        None => millis("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
    };
    // The per-signal variable wins over the general one.
    let (headers_variable, headers_text) = match var("OTEL_EXPORTER_OTLP_TRACES_HEADERS") {
        Some(h) => ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", h),
        None => ("OTEL_EXPORTER_OTLP_HEADERS", var("OTEL_EXPORTER_OTLP_HEADERS").unwrap_or_default()),
    };
    let headers = pairs(headers_variable, &headers_text)?;
    let resource_text = var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let resource = pairs("OTEL_RESOURCE_ATTRIBUTES", &resource_text)?;
    let named = var("OTEL_SERVICE_NAME")
        .or_else(|| resource.iter().find(|(k, _)| *k == "service.name").map(|(_, v)| (*v).to_owned()));
    let service_name_defaulted = named.is_none();
    let service_name = named.unwrap_or_else(|| service.to_owned());
    let queue = count("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?;
    let batch = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.min(queue);
    Ok(Settings::On(Config {
        endpoint,
        headers_from_environment: !headers.is_empty(),
        extra_headers: vec![],
        timeout,
        service_name,
        service_name_defaulted,
        sampler: sampler(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG"))?,
        queue,
        batch,
        delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5000)?,
        caller_sampled_per_second: match var(CALLER_SAMPLED_VAR) {
            None => CALLER_SAMPLED_PER_SECOND,
            Some(v) => v.parse::<u32>().ok().filter(|n| *n <= 1_000_000).ok_or_else(|| {
                bad(
                    CALLER_SAMPLED_VAR,
                    &v,
                    "not a whole number of requests a second from 0 to 1000000",
                    "use e.g. 10, or 0 to never let a caller's traceparent force a trace",
                )
            })?,
        },
    }))
}

/// `k=v,k2=v2` (values still percent-encoded: the SDK decodes what it
/// sends). A bad pair of a secret variable is named by its position, not
/// its text.
fn pairs<'a>(variable: &'static str, text: &'a str) -> Result<Vec<(&'a str, &'a str)>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
        .map(|(i, pair)| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim(), v.trim())),
            _ => Err(bad(
                variable,
                text,
                if secret(variable) {
                    format!("entry {} is not key=value", i + 1)
                } else {
                    format!("{pair:?} is not key=value")
                },
                "use key=value pairs separated by commas, with a comma inside a value written %2C (e.g. authorization=Bearer%20TOKEN)",
            )),
        })
        .collect()
}

fn sampler(name: Option<String>, arg: Option<String>) -> Result<SamplerChoice, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        match &arg {
            None => Ok(1.0),
            Some(a) => a.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| {
                bad("OTEL_TRACES_SAMPLER_ARG", a, "not a ratio between 0 and 1", "use e.g. 0.1")
            }),
        }
    };
    let parent_based = |root| SamplerChoice::ParentBased(Box::new(root));
    Ok(match name.as_deref() {
        None | Some("parentbased_always_on") => parent_based(SamplerChoice::AlwaysOn),
        Some("always_on") => SamplerChoice::AlwaysOn,
        Some("always_off") => SamplerChoice::AlwaysOff,
        Some("traceidratio") => SamplerChoice::Ratio(ratio()?),
        Some("parentbased_always_off") => parent_based(SamplerChoice::AlwaysOff),
        Some("parentbased_traceidratio") => parent_based(SamplerChoice::Ratio(ratio()?)),
        Some(other) => {
            return Err(bad(
                "OTEL_TRACES_SAMPLER",
                other,
                "not a sampler vigil has",
                "use always_on, always_off, traceidratio or their parentbased_ forms",
            ));
        }
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

/// What became of the spans this process ended.
#[derive(Clone, Default)]
pub struct SpanCounters {
    exported: Counter,
    dropped: Family<DropLabels, Counter>,
    /// Requests whose sampled `traceparent` was over [`CALLER_SAMPLED_VAR`]'s rate.
    caller_refused: Counter,
}

impl SpanCounters {
    pub fn exported(&self) -> u64 {
        self.exported.get()
    }

    /// Spans dropped because the queue was full (`queue_full`) or the
    /// endpoint refused or did not answer (`export_failed`).
    pub fn dropped(&self, reason: &'static str) -> u64 {
        self.dropped.get_or_create(&DropLabels { reason }).get()
    }

    /// Requests whose caller asked for a trace beyond the allowed rate.
    pub fn caller_refused(&self) -> u64 {
        self.caller_refused.get()
    }
}

/// This process's span counters (one exporter per process).
pub static SPANS: LazyLock<SpanCounters> = LazyLock::new(|| {
    let counters = SpanCounters::default();
    for reason in ["queue_full", "export_failed"] {
        let _ = counters.dropped.get_or_create(&DropLabels { reason });
    }
    counters
});

/// Adds telemetry's own metrics to a component's registry (every component
/// calls this): `otel_spans_exported_total`, `otel_spans_dropped_total{reason}`,
/// `otel_caller_samples_refused_total`, `log_lines_dropped_total` and
/// `http_connections_shed_total{reason}`.
pub fn register(registry: &mut Registry) {
    registry.register("otel_spans_exported", "Spans delivered to the OTLP endpoint", SPANS.exported.clone());
    registry.register(
        "otel_spans_dropped",
        "Spans not delivered: the export queue was full, or the endpoint failed",
        SPANS.dropped.clone(),
    );
    registry.register(
        "otel_caller_samples_refused",
        "Requests whose sampled traceparent was beyond the rate callers may force; sampled as if they had none",
        SPANS.caller_refused.clone(),
    );
    crate::register_log_metrics(registry);
    crate::serve::register(registry);
}

enum Message {
    Span(Box<SpanData>),
    /// Export everything queued, then answer.
    Flush(SyncSender<()>),
    /// What the spans come from (`service.name`, ...), set once by the provider.
    Resource(Box<Resource>),
}

/// A span processor with a bounded queue: `on_end` never waits. One thread
/// batches spans and exports them with the OTLP exporter on its own
/// single-threaded runtime, so the application's runtime never carries it.
#[derive(Debug)]
pub struct ExportQueue {
    queue: SyncSender<Message>,
    stopped: AtomicBool,
}

impl ExportQueue {
    pub fn new(
        exporter: opentelemetry_otlp::SpanExporter,
        queue: usize,
        batch: usize,
        delay: Duration,
    ) -> Self {
        let (sender, receiver) = mpsc::sync_channel(queue);
        // Detached: it runs as long as the process (the global provider
        // keeps the sender); a flush with a deadline is how spans leave at exit.
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || drain(exporter, receiver, batch, delay))
            .expect("a thread starts");
        ExportQueue { queue: sender, stopped: AtomicBool::new(false) }
    }
}

fn drain(
    mut exporter: opentelemetry_otlp::SpanExporter,
    queue: Receiver<Message>,
    batch: usize,
    delay: Duration,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    let mut spans: Vec<SpanData> = Vec::with_capacity(batch);
    let mut deadline = Instant::now() + delay;
    // One warning when exports start failing and one line when they work
    // again: a line per failed batch would flood the log.
    let failing = std::cell::Cell::new(false);
    let send = |exporter: &opentelemetry_otlp::SpanExporter, spans: &mut Vec<SpanData>| {
        if spans.is_empty() {
            return;
        }
        let n = spans.len() as u64;
        match runtime.block_on(exporter.export(std::mem::take(spans))) {
            Ok(()) => {
                SPANS.exported.inc_by(n);
                if failing.replace(false) {
                    tracing::info!(target: "otlp_export", "span export works again");
                }
            }
            Err(e) => {
                SPANS.dropped.get_or_create(&DropLabels { reason: "export_failed" }).inc_by(n);
                if !failing.replace(true) {
                    tracing::warn!(target: "otlp_export", error = %e, "span export failed; spans are dropped (counted in otel_spans_dropped_total) until the OTLP endpoint answers");
                }
            }
        }
    };
    loop {
        match queue.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Message::Span(span)) => {
                spans.push(*span);
                if spans.len() >= batch {
                    send(&exporter, &mut spans);
                    deadline = Instant::now() + delay;
                }
            }
            Ok(Message::Flush(done)) => {
                send(&exporter, &mut spans);
                let _ = done.send(());
            }
            Ok(Message::Resource(resource)) => exporter.set_resource(&resource),
            Err(RecvTimeoutError::Timeout) => {
                send(&exporter, &mut spans);
                deadline = Instant::now() + delay;
            }
            Err(RecvTimeoutError::Disconnected) => {
                send(&exporter, &mut spans);
                return;
            }
        }
    }
}

impl SpanProcessor for ExportQueue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() || self.stopped.load(Ordering::Relaxed) {
            return;
        }
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                SPANS.dropped.get_or_create(&DropLabels { reason: "queue_full" }).inc();
            }
            // The worker is gone: nothing will send this span.
            Err(TrySendError::Disconnected(_)) => {
                SPANS.dropped.get_or_create(&DropLabels { reason: "export_failed" }).inc();
            }
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Sent before any span: the provider sets it while it is built.
        let _ = self.queue.send(Message::Resource(Box::new(resource.clone())));
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush_within(FLUSH_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.stopped.swap(true, Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.flush_within(timeout)
    }
}

/// How long a flush asked for by the SDK may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl ExportQueue {
    /// Queues a flush behind the spans and waits for it, all within
    /// `timeout`: with a store that never answers and a full queue, a
    /// process that stops gives up on its spans rather than overrun its
    /// grace period.
    fn flush_within(&self, timeout: Duration) -> OTelSdkResult {
        let deadline = Instant::now() + timeout;
        let (done, wait) = mpsc::sync_channel(1);
        let mut message = Message::Flush(done);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return Err(OTelSdkError::AlreadyShutdown),
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return Err(OTelSdkError::Timeout(timeout)),
            }
        }
        wait.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

/// The OTLP exporter's HTTP client: one HTTP/1.1 connection per batch
/// (a batch every few seconds at most) on hyper, which axum already links.
/// Plain `http://` only: a TLS stack and a second HTTP client would double
/// web's and probe-server's binaries, and so their resident memory.
#[derive(Debug)]
struct Client {
    timeout: Duration,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        use http_body_util::BodyExt as _;
        let (mut parts, body) = request.into_parts();
        let host = parts.uri.host().ok_or("the endpoint has no host")?.to_owned();
        let port = parts.uri.port_u16().unwrap_or(80);
        let authority = parts.uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_else(|| host.clone());
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let exchange = async {
            let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            let connection = tokio::spawn(connection);
            parts.uri = path.parse()?;
            parts.headers.insert(http::header::HOST, http::HeaderValue::from_str(&authority)?);
            let response = sender
                .send_request(http::Request::from_parts(parts, http_body_util::Full::new(body)))
                .await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            connection.abort();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer from {authority} within {:?}", self.timeout))?
    }
}

thread_local! {
    /// The ids of the next root span started on this thread with [`start_with_ids`].
    static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except for a root span started through [`start_with_ids`].
#[derive(Debug, Default)]
struct Ids(RandomIdGenerator);

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS.with(|n| n.get()).map_or_else(|| self.0.new_trace_id(), |(trace, _)| trace)
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS.with(|n| n.get()).map_or_else(|| self.0.new_span_id(), |(_, span)| span)
    }
}

/// Starts a root span with the given ids through the OpenTelemetry API
/// (tracing's spans start lazily, on whatever thread, so they cannot be
/// given ids). How a long-lived thing with a name of its own, such as an
/// incident, becomes one trace whose id anyone can compute from that name.
pub fn start_with_ids(
    trace: TraceId,
    span: SpanId,
    start: impl FnOnce() -> opentelemetry::global::BoxedSpan,
) -> opentelemetry::global::BoxedSpan {
    /// Clears the ids however `start` returns (a panic included), so no
    /// later span on this thread takes them.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            NEXT_IDS.with(|n| n.set(None));
        }
    }
    NEXT_IDS.with(|n| n.set(Some((trace, span))));
    let _clear = Clear;
    start()
}

/// A parent for spans that belong to a trace started elsewhere or earlier.
pub fn remote_parent(trace: TraceId, span: SpanId) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        trace,
        span,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// The running exporter; flushes and stops when dropped.
pub struct Tracing {
    pub provider: SdkTracerProvider,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(10));
    }
}

/// Builds the exporter and provider for `config` and makes them global.
/// The SDK reads the endpoint, headers, timeout and resource from the
/// environment (the variables [`settings`] checked).
pub fn start(config: &Config) -> Result<Tracing, String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Client { timeout: config.timeout });
    if !config.extra_headers.is_empty() {
        exporter = exporter.with_headers(config.extra_headers.iter().cloned().collect::<HashMap<_, _>>());
    }
    let exporter = exporter.build().map_err(|e| format!("OTLP exporter for {}: {e}", config.endpoint))?;
    let resource = Resource::builder();
    let resource = if config.service_name_defaulted {
        resource.with_service_name(config.service_name.clone())
    } else {
        resource
    };
    let resource = resource.build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(ExportQueue::new(exporter, config.queue, config.batch, config.delay))
        .with_sampler(Decided(config.sampler.sampler()))
        .with_id_generator(Ids::default())
        .with_resource(resource)
        .build();
    let _ = HEAD.set(Head {
        choice: config.sampler.clone(),
        callers: RateCap::new(config.caller_sampled_per_second),
    });
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Tracing { provider })
}

/// The spans a [`recording_subscriber`] ended, in order.
#[derive(Clone, Debug, Default)]
pub struct Recorded(std::sync::Arc<std::sync::Mutex<Vec<SpanData>>>);

impl Recorded {
    pub fn spans(&self) -> Vec<SpanData> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl SpanProcessor for Recorded {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if let Ok(mut spans) = self.0.lock() {
            spans.push(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// A subscriber whose spans get OpenTelemetry ids and are kept in memory,
/// not exported: for tests of spans and propagation
/// (`tracing::subscriber::set_default`).
pub fn recording_subscriber() -> (impl tracing::Subscriber + Send + Sync, Recorded) {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    let recorded = Recorded::default();
    let tracer = SdkTracerProvider::builder().with_span_processor(recorded.clone()).build().tracer("test");
    (tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer)), recorded)
}

/// The W3C context of incoming request headers (none: an empty context).
pub fn extract(headers: &http::HeaderMap) -> Context {
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    // Only what the request carries: never the context this thread happens to be in.
    TraceContextPropagator::new().extract_with_context(&Context::new(), &Headers(headers))
}

/// Adds `traceparent` (and `tracestate`) for `context` to outgoing headers.
pub fn inject(context: &Context, headers: &mut http::HeaderMap) {
    struct Headers<'a>(&'a mut http::HeaderMap);
    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) =
                (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
            {
                self.0.insert(name, value);
            }
        }
    }
    TraceContextPropagator::new().inject_context(context, &mut Headers(headers));
}

/// The trace id a span context carries, as Jaeger and `traceparent` write it.
pub fn trace_id_hex(context: &Context) -> Option<String> {
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        settings(|name| vars.get(name).cloned(), "web")
    }

    #[test]
    fn off_unless_an_endpoint_is_named() {
        assert_eq!(read(&[]), Ok(Settings::Off));
        assert_eq!(
            read(&[("OTEL_SERVICE_NAME", "x"), ("OTEL_TRACES_SAMPLER", "always_on")]),
            Ok(Settings::Off)
        );
        assert_eq!(
            read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"), ("OTEL_SDK_DISABLED", "true")]),
            Ok(Settings::Off)
        );
        assert_eq!(
            read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"), ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(Settings::Off)
        );
    }

    #[test]
    fn the_per_signal_protocol_wins() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ];
        assert!(matches!(read(&vars), Ok(Settings::On(_))));
    }

    #[test]
    fn the_standard_variables_configure_export() {
        let Settings::On(c) = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318/")]).unwrap() else {
            panic!("export should be on")
        };
        assert_eq!(c.endpoint, "http://jaeger:4318/v1/traces");
        assert_eq!(c.service_name, "web");
        assert_eq!(c.sampler, SamplerChoice::ParentBased(Box::new(SamplerChoice::AlwaysOn)));
        assert_eq!((c.queue, c.batch, c.timeout), (2048, 512, Duration::from_secs(10)));
        let Settings::On(c) = read(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c.example:4318/custom"),
            ("OTEL_SERVICE_NAME", "web-eu"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t, x=1"),
            ("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=web-1"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ])
        .unwrap() else {
            panic!("export should be on")
        };
        assert_eq!(c.endpoint, "http://c.example:4318/custom");
        assert_eq!(c.service_name, "web-eu");
        assert_eq!(c.sampler, SamplerChoice::ParentBased(Box::new(SamplerChoice::Ratio(0.25))));
        assert!(c.headers_from_environment && c.extra_headers.is_empty());
        assert!(!c.service_name_defaulted);
        assert_eq!((c.queue, c.batch, c.timeout), (100, 100, Duration::from_millis(2500)));
    }

    #[test]
    fn bad_values_name_the_variable_and_the_fix() {
        for (vars, variable, words) in [
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "jaeger:4318")], "OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://j")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "ftp:// is not",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://j:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "no TLS",
            ),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://:4318")], "OTEL_EXPORTER_OTLP_ENDPOINT", "host"),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "4318",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"), ("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER",
                "traceidratio",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"),
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
                "between 0 and 1",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"), ("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
                "OTEL_BSP_MAX_QUEUE_SIZE",
                "positive",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"), ("OTEL_BSP_SCHEDULE_DELAY", "0")],
                "OTEL_BSP_SCHEDULE_DELAY",
                "from 1 to",
            ),
        ] {
            let err = read(&vars).unwrap_err();
            assert_eq!(err.variable, variable);
            let text = err.to_string();
            assert!(text.starts_with(variable) && text.contains(words), "{text}");
        }
    }

    #[test]
    fn a_request_is_traced_once_by_one_decision() {
        let parent = |flags: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "traceparent",
                format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}").parse().unwrap(),
            );
            extract(&headers)
        };
        let (sampled, unsampled) = (parent("01"), parent("00"));
        let never = SamplerChoice::ParentBased(Box::new(SamplerChoice::Ratio(0.0)));
        let callers = RateCap::new(1000);
        let never_ = |parent: &Context| never.decide(parent, &callers);
        assert!(never_(&sampled) && !never_(&unsampled) && !never_(&Context::new()));
        let always = SamplerChoice::ParentBased(Box::new(SamplerChoice::AlwaysOn));
        assert!(always.decide(&Context::new(), &callers) && !always.decide(&unsampled, &callers));
        // The provider samples a root server span (already decided) whatever the ratio,
        // and leaves every other span to the configured sampler.
        let decided = Decided(never.sampler());
        let sample = |kind: SpanKind, parent: Option<&Context>| {
            decided.should_sample(parent, TraceId::from_bytes([1; 16]), "s", &kind, &[], &[]).decision
        };
        assert_eq!(sample(SpanKind::Server, None), SamplingDecision::RecordAndSample);
        assert_eq!(sample(SpanKind::Server, Some(&sampled)), SamplingDecision::RecordAndSample);
        assert_eq!(sample(SpanKind::Internal, None), SamplingDecision::Drop);
        assert_eq!(sample(SpanKind::Client, Some(&unsampled)), SamplingDecision::Drop);
        assert_eq!(sample(SpanKind::Client, Some(&sampled)), SamplingDecision::RecordAndSample);
        // An incident's root, started with its ids, whatever the ratio.
        let ids = (TraceId::from_bytes([2; 16]), SpanId::from_bytes([3; 8]));
        NEXT_IDS.with(|n| n.set(Some(ids)));
        let incident = sample(SpanKind::Internal, None);
        NEXT_IDS.with(|n| n.set(None));
        assert_eq!(incident, SamplingDecision::RecordAndSample);
        // A plain ratio follows no parent: one draw, not two, decides.
        let plain = SamplerChoice::Ratio(0.0);
        assert!(!plain.decide(&sampled, &callers));
    }

    fn sampled_parent() -> Context {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
        );
        extract(&headers)
    }

    #[test]
    fn callers_force_a_trace_at_a_bounded_rate() {
        let never = SamplerChoice::ParentBased(Box::new(SamplerChoice::Ratio(0.0)));
        let callers = RateCap::new(5);
        let refused = SPANS.caller_refused();
        let parent = sampled_parent();
        let traced = (0..100).filter(|_| never.decide(&parent, &callers)).count();
        assert_eq!(traced, 5, "a second's worth of forced traces, then the root sampler (0 %) decides");
        assert!(SPANS.caller_refused() >= refused + 95);
        assert!(!never.decide(&sampled_parent(), &RateCap::new(0)), "0: a caller never forces one");
    }

    #[test]
    fn the_rate_cap_refills_with_time() {
        let cap = RateCap::new(2);
        let second = 1_000_000_000;
        assert!(cap.admit_at(10 * second) && cap.admit_at(10 * second));
        assert!(!cap.admit_at(10 * second), "burst of a second's worth");
        assert!(!cap.admit_at(10 * second + second / 4));
        assert!(cap.admit_at(10 * second + second / 2), "one more every half second");
        assert!(!cap.admit_at(10 * second + second / 2));
        assert!(cap.admit_at(20 * second) && cap.admit_at(20 * second) && !cap.admit_at(20 * second));
    }

    #[test]
    fn the_caller_rate_is_configured_or_named_when_bad() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318");
        let Settings::On(c) = read(&[endpoint]).unwrap() else { panic!("on") };
        assert_eq!(c.caller_sampled_per_second, CALLER_SAMPLED_PER_SECOND);
        let Settings::On(c) = read(&[endpoint, (CALLER_SAMPLED_VAR, "0")]).unwrap() else { panic!("on") };
        assert_eq!(c.caller_sampled_per_second, 0);
        let err = read(&[endpoint, (CALLER_SAMPLED_VAR, "lots")]).unwrap_err().to_string();
        assert!(
            err.starts_with(CALLER_SAMPLED_VAR) && err.contains("\"lots\"") && err.contains("e.g. 10"),
            "{err}"
        );
    }

    #[test]
    fn malformed_headers_are_not_echoed() {
        let secret = "Bearer%20sk-live-12345";
        for variable in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            let value = format!("x-ok=1,{secret}");
            let err =
                read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"), (variable, &value)]).unwrap_err();
            let (text, debug) = (err.to_string(), format!("{err:?}"));
            assert!(!text.contains("sk-live") && !debug.contains("sk-live"), "{text} / {debug}");
            assert!(
                text.starts_with(variable) && text.contains("entry 2") && text.contains("key=value"),
                "{text}"
            );
        }
        // Other variables still show what was wrong.
        let err =
            read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"), ("OTEL_RESOURCE_ATTRIBUTES", "oops")])
                .unwrap_err();
        assert!(err.to_string().contains("\"oops\""), "{err}");
    }

    #[test]
    fn traceparent_round_trips() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
        );
        let context = extract(&headers);
        assert_eq!(trace_id_hex(&context).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let mut out = http::HeaderMap::new();
        inject(&context, &mut out);
        assert_eq!(out["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(trace_id_hex(&extract(&http::HeaderMap::new())), None);
    }
}
