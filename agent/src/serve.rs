//! Serving an axum router with limits no client can get around: the agent's API and the
//! scheduler's both go through [`serve`].
//!
//! - **Connections**: at most [`Limits::max_connections`] at once, and
//!   [`Limits::max_per_client`] from one address. A connection over either cap is closed as
//!   soon as it is accepted (so the listen queue keeps moving for everyone else) and counted in
//!   `dcnet_http_connections_refused_total{api, reason}`.
//! - **Time**: a request's header must arrive within [`Limits::header_timeout`] (hyper's own
//!   timer), and a connection on which nothing is read or written for [`Limits::idle_timeout`]
//!   is closed (a body sent one byte a minute, an idle keep-alive).
//!
//! Without these, 25,000 half-sent requests on one port held 25,000 of the agent's file
//! descriptors for good: its APIs went silent, and health checks failed with EMFILE.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tower::ServiceExt as _;
use tracing::debug;

/// Listen queue asked for (the kernel caps it at `net.core.somaxconn`, 4096 by default). A
/// flood of connections refills a short queue faster than it is drained, and a new client's
/// handshake is then dropped with the flood's: 128, the usual default, is far too short.
pub const BACKLOG: i32 = 4096;

/// Binds a TCP listener on `addr` with a [`BACKLOG`] listen queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_client: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Limits {
    /// Defaults for a node: at most a quarter of the process's file descriptors per listener
    /// (so health checks, launches and the other listeners keep theirs), and 4096 at most.
    pub fn for_this_process() -> Self {
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        let max_connections = usize::try_from(nofile / 4).unwrap_or(4096).clamp(64, 4096);
        Self {
            max_connections,
            max_per_client: (max_connections / 8).max(16),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    api: &'static str,
    reason: &'static str,
}

/// Connection counters of the HTTP listeners.
#[derive(Debug, Clone, Default)]
pub struct ServeMetrics {
    refused: Family<RefusedLabels, Counter>,
    open: Family<ApiLabel, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    api: &'static str,
}

impl ServeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dcnet_http_connections_refused",
            "HTTP connections closed at accept: reason=per_client (one address holds too many) or total (the listener is full)",
            self.refused.clone(),
        );
        registry.register(
            "dcnet_http_connections_open",
            "HTTP connections open, by API",
            self.open.clone(),
        );
    }
}

/// Open connections, in all and per client address.
struct Tracker {
    limits: Limits,
    api: &'static str,
    metrics: ServeMetrics,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A connection's place; given back when the connection ends.
struct Slot {
    tracker: Arc<Tracker>,
    client: IpAddr,
}

impl Tracker {
    fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Slot, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= self.limits.max_connections {
            return Err("total");
        }
        let mine = open.1.entry(client).or_insert(0);
        if *mine >= self.limits.max_per_client {
            return Err("per_client");
        }
        *mine += 1;
        open.0 += 1;
        self.metrics
            .open
            .get_or_create(&ApiLabel { api: self.api })
            .inc();
        Ok(Slot {
            tracker: self.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.tracker.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.client);
            }
        }
        self.tracker
            .metrics
            .open
            .get_or_create(&ApiLabel {
                api: self.tracker.api,
            })
            .dec();
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then waits (at
/// most 5 s) for the requests in progress. Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    api: &'static str,
    limits: Limits,
    metrics: ServeMetrics,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
    let tracker = Arc::new(Tracker {
        limits,
        api,
        metrics,
        open: Mutex::new((0, HashMap::new())),
    });
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let slot = match tracker.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                tracker
                    .metrics
                    .refused
                    .get_or_create(&RefusedLabels { api, reason })
                    .inc();
                drop(io);
                continue;
            }
        };
        let router = router.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let io = IdleStream::new(io, limits.idle_timeout);
            let service = hyper::service::service_fn(move |mut request| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(Box::pin(io)), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(%peer, api, error = %e, "HTTP connection ended with an error");
                    }
                }
                () = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    let _ = stop.send(true);
    // Let the connections finish what they are doing (bounded).
    for _ in 0..50 {
        if tracker.open.lock().map_or(0, |o| o.0) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A connection whose pending read or write fails once nothing was read *or written* on it
/// for `idle`: a response that streams (server-sent events, with their keep-alives) keeps
/// its connection while the client sends nothing, and a client that neither sends nor reads
/// loses it. (A read timeout alone closed every event stream after a minute.)
struct IdleStream<S> {
    inner: std::pin::Pin<Box<S>>,
    idle: Duration,
    last: tokio::time::Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<S> IdleStream<S> {
    fn new(inner: S, idle: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            inner: Box::pin(inner),
            idle,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    /// For an operation that is pending: an error once the connection has been idle too long,
    /// else a wake-up at the moment it would be.
    fn poll_idle(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Error> {
        let deadline = self.last + self.idle;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "nothing read or written on the connection for the idle timeout",
            )),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

use std::future::Future as _;

impl<S: tokio::io::AsyncRead> tokio::io::AsyncRead for IdleStream<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match this.inner.as_mut().poll_read(cx, buf) {
            std::task::Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last = tokio::time::Instant::now();
                }
                std::task::Poll::Ready(result)
            }
            std::task::Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<S: tokio::io::AsyncWrite> tokio::io::AsyncWrite for IdleStream<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_write(cx, data) {
            std::task::Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.last = tokio::time::Instant::now();
                }
                std::task::Poll::Ready(Ok(n))
            }
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
            std::task::Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_flush(cx) {
            std::task::Poll::Pending => this.poll_idle(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.get_mut().inner.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn writing_keeps_a_connection_and_silence_ends_it() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (server, mut client) = tokio::io::duplex(1024);
        let mut server = IdleStream::new(server, Duration::from_secs(60));
        // The server streams a line every 15 s for 5 minutes while the client sends nothing
        // (its read stays pending, as hyper's does): the connection lives.
        let mut got = Vec::new();
        for _ in 0..20 {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(15), server.read(&mut byte)).await;
            assert!(read.is_err(), "nothing to read, and no idle error yet");
            server.write_all(b":\n").await.unwrap();
            let mut line = [0u8; 2];
            client.read_exact(&mut line).await.unwrap();
            got.push(line);
        }
        assert_eq!(got.len(), 20);
        // Then nothing either way: the pending read fails after the idle timeout.
        let mut byte = [0u8; 1];
        let err = server.read(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }

    fn tracker(total: usize, per_client: usize) -> Arc<Tracker> {
        Arc::new(Tracker {
            limits: Limits {
                max_connections: total,
                max_per_client: per_client,
                header_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
            },
            api: "test",
            metrics: ServeMetrics::default(),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    #[test]
    fn one_client_cannot_take_every_slot_and_slots_come_back() {
        let t = tracker(4, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = t.admit(a).unwrap();
        let _a2 = t.admit(a).unwrap();
        assert_eq!(t.admit(a).err(), Some("per_client"));
        let _b1 = t.admit(b).unwrap();
        let _b2 = t.admit(b).unwrap();
        assert_eq!(t.admit("10.0.0.3".parse().unwrap()).err(), Some("total"));
        drop(a1);
        assert!(t.admit(a).is_ok(), "a slot given back is free again");
    }
}
