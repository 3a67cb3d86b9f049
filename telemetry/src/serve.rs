//! The one way vigil's deployables serve HTTP: hyper's HTTP/1 connection
//! with its timer, so a client that connects and sends nothing, or sends its
//! head a byte at a time, is shed after [`HEADER_READ_TIMEOUT`]; a
//! connection that moves no byte for [`IDLE_TIMEOUT`] is closed; each
//! listener holds at most `max_connections`; request heads and bodies are
//! bounded; and a shutdown drains the requests in flight
//! (`axum::serve` sets none of this: it drops hyper's timer).
//!
//! At the cap a new connection displaces the oldest one that is waiting for
//! a request (it never sent one, or sits idle between two), rather than
//! waiting in the kernel's backlog or being turned away: a flood of silent
//! or slow connections is exactly that kind, so the kubelet's probe, which
//! sends its request at once, still gets through while the flood holds the
//! port. Only when every connection is in the middle of a request is the
//! new one closed at once: that is real overload, and a client that is
//! refused quickly can retry or go to another replica.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Request, Response, StatusCode, header},
};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::AbortHandle,
};

/// A client sends its whole request head in one packet, within
/// milliseconds; five seconds allow for a slow network and shed a silent
/// or byte-at-a-time connection quickly. hyper starts this clock whenever it
/// waits for a head, so it is also how long a kept-alive connection may sit
/// idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longer than any handler here takes to answer (node-exporter's collectors
/// give up at 3 s) and than a scraper waits (Prometheus's scrape timeout is
/// 10 s): only a peer that stopped reading its response or sending its body
/// trips it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// A data path's listener (web): each connection costs at most about
/// 20 KiB (its buffers are capped at [`BUFFER_BYTES`]), so 1024 of them stay
/// near 20 MiB, within web's 64 MiB limit, and far above what one replica
/// serves at once behind the load balancer.
pub const MAX_CONNECTIONS: usize = 1024;

/// Probe, admin and metrics ports: the kubelet's probes (a few a second,
/// each on its own connection), Prometheus's scrapes and port-forwards need
/// a handful at a time. The cap is also how many connections a flood must
/// open in the moment between a probe's connect and its request for the
/// probe to be displaced, so not smaller: 128 cost at most ~2.5 MiB.
pub const MAX_SMALL_CONNECTIONS: usize = 128;

/// The largest body any route reads is a log filter (`PUT /log-level`),
/// a few dozen bytes; web and the probes read none.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// Real request heads are well under 2 KiB; 8 KiB is what common proxies
/// accept. A larger head is answered 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// hyper's read and write buffers per connection (its default is ~400 KiB,
/// which a slow head could fill on every connection); 16 KiB holds the
/// largest head and streams any response.
pub const BUFFER_BYTES: usize = 16 * 1024;

/// On shutdown, how long requests in flight may take to finish: every
/// handler answers within a few seconds, and this stays inside the pods'
/// termination grace period; what is still open after it is a stalled client.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What one listener allows its clients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_body_bytes: usize,
    pub drain_timeout: Duration,
}

impl Limits {
    /// A data path's listener (web's port).
    pub const DATA: Limits = Limits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        idle_timeout: IDLE_TIMEOUT,
        max_connections: MAX_CONNECTIONS,
        max_body_bytes: MAX_BODY_BYTES,
        drain_timeout: DRAIN_TIMEOUT,
    };

    /// A probe, admin or metrics port.
    pub const SMALL: Limits = Limits { max_connections: MAX_SMALL_CONNECTIONS, ..Limits::DATA };

    /// Limits a server can run with: the error names the setting and a fix.
    pub fn check(&self) -> Result<(), LimitsError> {
        let (setting, fix) = if self.header_read_timeout.is_zero() {
            ("header read timeout", "give it a duration such as 5s")
        } else if self.idle_timeout.is_zero() {
            ("idle timeout", "give it a duration such as 15s")
        } else if self.max_connections == 0 {
            ("connection cap", "allow at least 1 connection, e.g. 1024")
        } else {
            return Ok(());
        };
        Err(LimitsError { setting, fix })
    }
}

/// A limit that would refuse every client.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("the {setting} is 0, which closes every connection: {fix}")]
pub struct LimitsError {
    pub setting: &'static str,
    pub fix: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    reason: &'static str,
}

/// Connections this process closed before their client did, by reason.
static SHED: LazyLock<Family<ShedLabels, Counter>> = LazyLock::new(|| {
    let family = Family::default();
    for reason in [HEADER_TIMEOUT, IDLE, EVICTED, REFUSED] {
        let _ = family.get_or_create(&ShedLabels { reason });
    }
    family
});

const HEADER_TIMEOUT: &str = "header_timeout";
const IDLE: &str = "idle_timeout";
const EVICTED: &str = "evicted";
const REFUSED: &str = "refused";

fn shed(reason: &'static str) {
    SHED.get_or_create(&ShedLabels { reason }).inc();
}

/// How many connections were shed for `reason` (`header_timeout`,
/// `idle_timeout`, `evicted`, `refused`).
pub fn shed_count(reason: &'static str) -> u64 {
    SHED.get_or_create(&ShedLabels { reason }).get()
}

/// Adds `http_connections_shed_total{reason}` to a component's registry.
pub fn register(registry: &mut Registry) {
    registry.register(
        "http_connections_shed",
        "Connections closed by this server: head not read in time, idle, displaced at the connection cap, or refused at it",
        SHED.clone(),
    );
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    run(listener, router, limits, false, shutdown).await
}

/// [`serve`], giving handlers the peer's address (`ConnectInfo<SocketAddr>`),
/// which the admin router needs to allow `PUT /log-level` from loopback only.
pub async fn serve_with_peer(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    run(listener, router, limits, true, shutdown).await
}

/// What a connection's task shares with the listener.
#[derive(Default)]
struct Shared {
    /// Bumped on every read or write that moved bytes.
    moved: AtomicU64,
    /// Requests handed to the router and not answered yet.
    in_flight: AtomicUsize,
}

struct Entry {
    shared: Arc<Shared>,
    task: Option<AbortHandle>,
    /// `moved` when the sweeper last saw it change, and when.
    seen: u64,
    quiet_since: Instant,
}

/// The open connections of one listener, oldest first.
#[derive(Default)]
struct Open {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
}

type Connections = Arc<Mutex<Open>>;

fn lock(connections: &Connections) -> std::sync::MutexGuard<'_, Open> {
    // A panic elsewhere while holding the lock leaves the map usable.
    connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Open {
    /// Makes room for one more connection: None when every connection is
    /// mid-request.
    fn admit(&mut self, cap: usize) -> Option<(u64, Arc<Shared>)> {
        if self.entries.len() >= cap {
            let oldest_waiting = self
                .entries
                .iter()
                .find(|(_, e)| e.shared.in_flight.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)?;
            if let Some(task) = self.entries.remove(&oldest_waiting).and_then(|e| e.task) {
                task.abort();
            }
            shed(EVICTED);
        }
        let id = self.next_id;
        self.next_id += 1;
        let shared = Arc::new(Shared::default());
        let entry = Entry { shared: shared.clone(), task: None, seen: 0, quiet_since: Instant::now() };
        self.entries.insert(id, entry);
        Some((id, shared))
    }

    /// Closes the connections that moved no byte for `idle`.
    fn sweep(&mut self, idle: Duration, now: Instant) {
        self.entries.retain(|_, entry| {
            let moved = entry.shared.moved.load(Ordering::Relaxed);
            if moved != entry.seen {
                entry.seen = moved;
                entry.quiet_since = now;
                return true;
            }
            if now.duration_since(entry.quiet_since) < idle {
                return true;
            }
            if let Some(task) = &entry.task {
                task.abort();
            }
            shed(IDLE);
            false
        });
    }
}

/// Removes a connection from its listener's map however its task ends
/// (finished, or aborted by eviction or the idle sweep).
struct Registered {
    connections: Connections,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.connections).entries.remove(&self.id);
    }
}

async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    with_peer: bool,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let connections = Connections::default();
    let sweeper = tokio::spawn({
        let connections = connections.clone();
        // Checked four times per timeout: a quiet connection goes within 1¼ of it.
        let mut tick = tokio::time::interval((limits.idle_timeout / 4).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        async move {
            loop {
                tick.tick().await;
                lock(&connections).sweep(limits.idle_timeout, Instant::now());
            }
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(BUFFER_BYTES);
    // Each connection holds a receiver: `send(true)` asks them to finish,
    // and `closed()` resolves once every one has.
    let (stop, stopped) = watch::channel(false);
    let accepting = Accepting {
        connections: connections.clone(),
        router,
        limits,
        with_peer,
        http: Arc::new(http),
        stopped,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        accepting.start(stream, peer);
        // Let the new connection read the request it may already have sent
        // before accepting more: in a burst of accepts it would otherwise
        // still look like it waits, and a burst of `max_connections` more
        // would displace it.
        tokio::task::yield_now().await;
    }
    drop(listener);
    let _ = stop.send(true);
    drop(accepting);
    if tokio::time::timeout(limits.drain_timeout, stop.closed()).await.is_err() {
        let open = std::mem::take(&mut lock(&connections).entries);
        tracing::warn!(connections = open.len(), "requests still open after the drain timeout; closing them");
        open.values().filter_map(|e| e.task.as_ref()).for_each(AbortHandle::abort);
    }
    sweeper.abort();
    Ok(())
}

/// What a listener gives each connection it accepts.
struct Accepting {
    connections: Connections,
    router: Router,
    limits: Limits,
    with_peer: bool,
    http: Arc<hyper::server::conn::http1::Builder>,
    stopped: watch::Receiver<bool>,
}

impl Accepting {
    /// Serves the connection on a task of its own, or closes it at once
    /// when the cap is full of connections mid-request.
    fn start(&self, stream: TcpStream, peer: SocketAddr) {
        let mut open = lock(&self.connections);
        let Some((id, shared)) = open.admit(self.limits.max_connections) else {
            shed(REFUSED);
            return;
        };
        let service = ConnectionService {
            router: self.router.clone(),
            peer: self.with_peer.then_some(peer),
            max_body_bytes: self.limits.max_body_bytes,
            shared: shared.clone(),
        };
        let registered = Registered { connections: self.connections.clone(), id };
        let served = connection(stream, shared, service, self.http.clone(), self.stopped.clone(), registered);
        // Spawned under the lock: the task's own removal waits for this insert.
        let task = tokio::spawn(served);
        if let Some(entry) = open.entries.get_mut(&id) {
            entry.task = Some(task.abort_handle());
        }
    }
}

/// Errors about one connection (its peer gave up before it was accepted)
/// leave the listener serving; others (no file descriptors left) are
/// retried after a pause, so a full table does not spin the accept loop.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted) {
        return;
    }
    tracing::warn!("accepting a connection failed, retrying in 100 ms: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    service: ConnectionService,
    http: Arc<hyper::server::conn::http1::Builder>,
    mut stop: watch::Receiver<bool>,
    _registered: Registered,
) {
    let io = TokioIo::new(Metered { stream, shared });
    let connection = http.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    // Borrowed, not moved: the receiver lives as long as the connection,
    // which is what the listener's drain waits for.
    let stopping = async {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping => {
            // Finish the request in flight, take no other.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            shed(HEADER_TIMEOUT);
        } else {
            tracing::debug!("connection closed: {e}");
        }
    }
}

/// The stream, noting each read or write that moved bytes for the idle sweep.
struct Metered {
    stream: TcpStream,
    shared: Arc<Shared>,
}

impl Metered {
    fn moved<T>(&self, polled: &Poll<io::Result<T>>, bytes: impl FnOnce(&T) -> bool) {
        if let Poll::Ready(Ok(value)) = polled
            && bytes(value)
        {
            self.shared.moved.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let after = buf.filled().len();
        self.moved(&polled, |_| after > before);
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.moved(&polled, |n| *n > 0);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.moved(&polled, |n| *n > 0);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// One connection's view of the router: bodies bounded, the peer's address
/// attached when asked, requests in flight counted.
struct ConnectionService {
    router: Router,
    peer: Option<SocketAddr>,
    max_body_bytes: usize,
    shared: Arc<Shared>,
}

/// Decrements the connection's requests in flight when its answer is done
/// (or abandoned).
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

// Not boxed: the router's future lives inline, as it would in axum's own
// serve, rather than costing an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Routed {
        future: axum::routing::future::RouteFuture<Infallible>,
        _in_flight: InFlight,
    },
    /// A body declared larger than the limit, refused before it is read.
    TooLarge(usize),
}

impl Future for Answer {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Routed { future, .. } => Pin::new(future).poll(cx),
            Answer::TooLarge(limit) => Poll::Ready(Ok(too_large(*limit))),
        }
    }
}

fn too_large(limit: usize) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("request bodies here are at most {limit} bytes\n")));
    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    // The body was not read: the connection cannot carry another request.
    response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.max_body_bytes as u64) {
            return Answer::TooLarge(self.max_body_bytes);
        }
        // A chunked body is cut at the limit as it is read: axum's extractors answer 413.
        let mut request = request.map(|body| Limited::new(body, self.max_body_bytes));
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        let in_flight = InFlight(self.shared.clone());
        let future = tower_service::Service::call(&mut self.router.clone(), request);
        Answer::Routed { future, _in_flight: in_flight }
    }
}
