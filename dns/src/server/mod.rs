//! The DNS server: UDP workers ([`udp`]) and a TCP listener ([`tcp`]) per listen address,
//! answering from a shared snapshot that is swapped whole when records change.
//!
//! Queries outside the served zones go to a [`Forward`] implementation if one is given;
//! without one they are REFUSED (this server is then authoritative-only).

pub mod mmsg;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, ResponseCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::answer::Transport;
use crate::error::Error;
use crate::zone::Snapshot;

/// The snapshot every worker answers from; store a new one to change all answers at once.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// Sends a reply to the client that asked.
pub type Reply = Box<dyn FnOnce(Vec<u8>) + Send>;

/// Where queries for names outside the served zones go (the forwarder).
pub trait Forward: Send + Sync {
    /// Resolves `query` from `client` elsewhere and calls `reply` with the response bytes (or
    /// never, if it has nothing to say). Must not block: called on the serving threads.
    fn forward(&self, query: Message, client: SocketAddr, transport: Transport, reply: Reply);
}

/// Query counters of the server.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    pub queries_udp: Counter,
    pub queries_tcp: Counter,
    /// Messages that got no answer (unparseable, or responses).
    pub dropped: Counter,
    /// TCP connections closed at accept: the server or the client was at its cap.
    pub tcp_refused: Counter,
}

impl ServerMetrics {
    /// Registers the counters under `dcnet_dns_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dcnet_dns_queries_udp",
            "DNS queries received over UDP",
            self.queries_udp.clone(),
        );
        registry.register(
            "dcnet_dns_queries_tcp",
            "DNS queries received over TCP",
            self.queries_tcp.clone(),
        );
        registry.register(
            "dcnet_dns_dropped",
            "DNS messages dropped without an answer",
            self.dropped.clone(),
        );
        registry.register(
            "dcnet_dns_tcp_refused",
            "DNS TCP connections closed at accept: the server, or the client's address, was at its cap",
            self.tcp_refused.clone(),
        );
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    /// UDP sockets (and threads) per address; defaults to the number of cores.
    pub udp_workers: usize,
    /// How long a TCP connection may stay silent.
    pub tcp_idle: Duration,
    /// TCP connections at once, in all and from one client address.
    pub tcp_max_connections: usize,
    pub tcp_max_per_client: usize,
}

impl ServerConfig {
    /// Defaults for `listen`: one UDP worker per core, 10 s TCP idle timeout.
    pub fn new(listen: Vec<SocketAddr>) -> Self {
        Self {
            listen,
            udp_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tcp_idle: Duration::from_secs(10),
            tcp_max_connections: tcp::MAX_CONNECTIONS,
            tcp_max_per_client: tcp::MAX_PER_CLIENT,
        }
    }
}

/// A running server; [`DnsServer::shutdown`] stops it.
pub struct DnsServer {
    local_addrs: Vec<SocketAddr>,
    stop_udp: Arc<AtomicBool>,
    stop_tcp: watch::Sender<bool>,
    udp_threads: Vec<JoinHandle<()>>,
    tcp_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Tries at a port the kernel chooses (port 0) before giving up when its TCP twin is taken.
const KERNEL_PORT_ATTEMPTS: u32 = 8;

impl DnsServer {
    /// Binds every address (UDP and TCP) and starts serving. Must be called in a tokio runtime
    /// (TCP runs on it). Fails, binding nothing, if any address is taken.
    pub async fn start(
        config: ServerConfig,
        snapshot: SharedSnapshot,
        forward: Option<Arc<dyn Forward>>,
        metrics: Arc<ServerMetrics>,
    ) -> Result<Self, Error> {
        let mut udp_groups = Vec::new();
        let mut listeners = Vec::new();
        let mut local_addrs = Vec::new();
        for &addr in &config.listen {
            // A port the kernel chooses is chosen for UDP, and may be taken for TCP, or for
            // UDP itself between the probe and the group (see `udp::bind`): then another is
            // chosen, a few times.
            let attempts = if addr.port() == 0 {
                KERNEL_PORT_ATTEMPTS
            } else {
                1
            };
            let mut attempt = 0;
            let (sockets, bound, listener) = loop {
                attempt += 1;
                let sockets = match udp::bind(addr, config.udp_workers) {
                    Ok(sockets) => sockets,
                    Err(Error::Bind { source, .. })
                        if source.kind() == std::io::ErrorKind::AddrInUse && attempt < attempts =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let bound = sockets[0].local_addr().map_err(|source| Error::Bind {
                    addr,
                    proto: "udp",
                    source,
                })?;
                // TCP on the same port as UDP. A long listen queue: a flood of connections
                // would refill a short one faster than it drains, and new clients' handshakes
                // would be dropped with the flood's.
                match tcp_listener(bound) {
                    Ok(listener) => break (sockets, bound, listener),
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < attempts => {}
                    Err(source) => {
                        return Err(Error::Bind {
                            addr: bound,
                            proto: "tcp",
                            source,
                        });
                    }
                }
            };
            local_addrs.push(bound);
            udp_groups.push(sockets);
            listeners.push(listener);
        }
        let stop_udp = Arc::new(AtomicBool::new(false));
        let (stop_tcp, stop_rx) = watch::channel(false);
        let mut udp_threads = Vec::new();
        for sockets in udp_groups {
            udp_threads.extend(udp::spawn(
                sockets,
                snapshot.clone(),
                forward.clone(),
                metrics.clone(),
                stop_udp.clone(),
            )?);
        }
        let tcp_tasks = listeners
            .into_iter()
            .map(|listener| {
                tokio::spawn(tcp::serve(
                    listener,
                    snapshot.clone(),
                    forward.clone(),
                    metrics.clone(),
                    tcp::Limits {
                        idle: config.tcp_idle,
                        max_connections: config.tcp_max_connections,
                        max_per_client: config.tcp_max_per_client,
                    },
                    stop_rx.clone(),
                ))
            })
            .collect();
        Ok(Self {
            local_addrs,
            stop_udp,
            stop_tcp,
            udp_threads,
            tcp_tasks,
        })
    }

    /// The addresses actually bound (ports resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Stops accepting queries and waits for the workers.
    pub async fn shutdown(self) {
        self.stop_udp.store(true, Ordering::Relaxed);
        let _ = self.stop_tcp.send(true);
        for task in self.tcp_tasks {
            let _ = task.await;
        }
        let threads = self.udp_threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// REFUSED for a query this server will not resolve (recursion not available).
pub fn refused(query: &Message) -> Option<Vec<u8>> {
    let mut response = Message::error_msg(
        query.metadata.id,
        query.metadata.op_code,
        ResponseCode::Refused,
    );
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.queries = query.queries.clone();
    response.to_vec().ok()
}

fn tcp_listener(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    tokio::net::TcpListener::from_std(socket.into())
}
