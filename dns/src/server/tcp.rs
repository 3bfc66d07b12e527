//! TCP (RFC 7766): length-prefixed messages, several per connection and pipelined (each is
//! answered as it arrives, forwarded ones whenever their answer comes), and limits in Knot's
//! manner so that idle or stalling clients cannot keep others out:
//!
//! - at most [`MAX_CONNECTIONS`] connections, [`MAX_PER_CLIENT`] from one address (by
//!   default: see [`Limits`]);
//! - between messages a connection may be idle for the configured timeout, cut to
//!   [`PRESSED_IDLE`] while more than three quarters of the connections are taken;
//! - once a message's length has arrived, its bytes must follow within [`MESSAGE_TIMEOUT`]
//!   (a client that sends only a length prefix holds its slot for that long, not 10 s).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::{Forward, ServerMetrics, SharedSnapshot};
use crate::answer::{Outcome, Transport, answer};

/// Most TCP connections served at once, by default.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most TCP connections from one client address, by default.
pub const MAX_PER_CLIENT: usize = 64;

/// The limits of the TCP server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a connection may be idle between messages (unless pressed).
    pub idle: Duration,
    pub max_connections: usize,
    pub max_per_client: usize,
}
/// The idle timeout between messages while the server is pressed for connections.
pub const PRESSED_IDLE: Duration = Duration::from_secs(1);
/// How long the bytes of a message may take once its length has arrived.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections open, in all and per client.
struct Open {
    limits: Limits,
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl Open {
    /// Takes a place for `client`, or `None` if the server or the client is at its cap.
    fn admit(self: &Arc<Self>, client: IpAddr) -> Option<Place> {
        let mut per_client = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.limits.max_connections {
            return None;
        }
        let mine = per_client.entry(client).or_insert(0);
        if *mine >= self.limits.max_per_client {
            return None;
        }
        *mine += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Place {
            open: self.clone(),
            client,
        })
    }

    fn pressed(&self) -> bool {
        self.total.load(Ordering::Relaxed) * 4 > self.limits.max_connections * 3
    }
}

struct Place {
    open: Arc<Open>,
    client: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut per_client = self
            .open
            .per_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                per_client.remove(&self.client);
            }
        }
        self.open.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until `stop` changes.
pub async fn serve(
    listener: TcpListener,
    snapshot: SharedSnapshot,
    forward: Option<Arc<dyn Forward>>,
    metrics: Arc<ServerMetrics>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let idle = limits.idle;
    let open = Arc::new(Open {
        limits,
        total: AtomicUsize::new(0),
        per_client: Mutex::new(HashMap::new()),
    });
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    debug!(error = %e, "TCP accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Some(place) = open.admit(peer.ip()) else {
            metrics.tcp_refused.inc();
            debug!(peer = %peer, "too many TCP connections (in all or from this client); closing a new one");
            continue;
        };
        let (snapshot, forward, metrics, open) = (
            snapshot.clone(),
            forward.clone(),
            metrics.clone(),
            open.clone(),
        );
        tokio::spawn(async move {
            connection(stream, peer, snapshot, forward, metrics, idle, &open).await;
            drop(place);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    snapshot: SharedSnapshot,
    forward: Option<Arc<dyn Forward>>,
    metrics: Arc<ServerMetrics>,
    idle: Duration,
    open: &Open,
) {
    let (mut reader, mut writer) = stream.into_split();
    // Answers, ours and forwarded, are written in the order they become ready.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            let Ok(len) = u16::try_from(bytes.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&bytes);
            if writer.write_all(&framed).await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 2];
        let wait = if open.pressed() {
            idle.min(PRESSED_IDLE)
        } else {
            idle
        };
        match tokio::time::timeout(wait, reader.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => break, // idle, closed, or broken
        }
        let len = usize::from(u16::from_be_bytes(len));
        buf.resize(len, 0);
        match tokio::time::timeout(MESSAGE_TIMEOUT.min(idle), reader.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        metrics.queries_tcp.inc();
        let current = snapshot.load();
        match answer(&current, &buf, Transport::Tcp) {
            Outcome::Reply(bytes) => {
                if tx.send(bytes).is_err() {
                    break;
                }
            }
            Outcome::NotOurs(query) => match &forward {
                Some(forward) => {
                    let tx = tx.clone();
                    forward.forward(
                        *query,
                        peer,
                        Transport::Tcp,
                        Box::new(move |bytes| {
                            let _ = tx.send(bytes);
                        }),
                    );
                }
                None => {
                    if let Some(bytes) = super::refused(&query) {
                        let _ = tx.send(bytes);
                    }
                }
            },
            Outcome::Drop => {
                metrics.dropped.inc();
                break; // a client sending garbage over TCP gets closed
            }
        }
    }
    drop(tx);
    let _ = writer_task.await;
}
