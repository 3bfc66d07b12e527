//! UDP: one SO_REUSEPORT socket and one thread per worker, so the kernel spreads queries over
//! cores with no shared queue. Each thread takes queued datagrams in batches ([`super::mmsg`]),
//! loads the current snapshot once per batch, answers, and sends the replies in one call;
//! queries for other zones go to the forwarder, which replies through a clone of the socket.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

use super::mmsg::{self, Batch};
use super::{Forward, ServerMetrics, SharedSnapshot};
use crate::answer::{Outcome, Transport, answer_general};
use crate::error::Error;
use crate::fast_path::answer_fast;

/// Largest datagram read; longer ones are truncated by the kernel and fail to parse.
const RECV_BUFFER: usize = 4096;
/// Datagrams taken per system call.
const BATCH: usize = 32;
/// How often an idle worker checks for shutdown.
const POLL: Duration = Duration::from_millis(200);

/// Binds `workers` sockets to `addr` with SO_REUSEPORT, after checking that nobody else serves
/// it: a second process on the same port would otherwise silently take a share of the queries.
pub fn bind(addr: SocketAddr, workers: usize) -> Result<Vec<UdpSocket>, Error> {
    let probe = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(
        |source| Error::Bind {
            addr,
            proto: "udp",
            source,
        },
    )?;
    if let Err(source) = probe.bind(&addr.into()) {
        return Err(Error::Bind {
            addr,
            proto: "udp",
            source,
        });
    }
    // The probe goes before the group binds (a SO_REUSEPORT group cannot join a socket
    // without it). A port the kernel chose for the probe can be taken in between by anyone
    // binding port 0: the group then fails with AddrInUse, and the caller asks for another.
    let mut sockets = Vec::with_capacity(workers);
    let bound_addr = probe
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    drop(probe);
    for _ in 0..workers.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|source| Error::Bind {
                addr,
                proto: "udp",
                source,
            })?;
        socket
            .set_reuse_port(true)
            .and_then(|()| socket.bind(&bound_addr.into()))
            .and_then(|()| socket.set_read_timeout(Some(POLL)))
            .map_err(|source| Error::Bind {
                addr: bound_addr,
                proto: "udp",
                source,
            })?;
        // Bursts queue here rather than being dropped.
        let _ = socket.set_recv_buffer_size(4 << 20);
        let socket: UdpSocket = socket.into();
        if bound_addr.ip().is_unspecified() {
            mmsg::enable_pktinfo(&socket, bound_addr.is_ipv6()).map_err(|source| Error::Bind {
                addr: bound_addr,
                proto: "udp",
                source,
            })?;
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Runs one worker per socket until `stop` is set.
pub fn spawn(
    sockets: Vec<UdpSocket>,
    snapshot: SharedSnapshot,
    forward: Option<Arc<dyn Forward>>,
    metrics: Arc<ServerMetrics>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let (snapshot, forward, metrics, stop) = (
                snapshot.clone(),
                forward.clone(),
                metrics.clone(),
                stop.clone(),
            );
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || serve(socket, snapshot, forward, metrics, stop))
                .map_err(Error::Thread)
        })
        .collect()
}

fn serve(
    socket: UdpSocket,
    snapshot: SharedSnapshot,
    forward: Option<Arc<dyn Forward>>,
    metrics: Arc<ServerMetrics>,
    stop: Arc<AtomicBool>,
) {
    let reply_socket = match socket.try_clone() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!(error = %e, "cannot clone the UDP socket for forwarded replies");
            return;
        }
    };
    let wildcard = socket.local_addr().is_ok_and(|a| a.ip().is_unspecified());
    let mut batch = Batch::new(BATCH, RECV_BUFFER, wildcard);
    let mut scratch = Vec::with_capacity(512);
    while !stop.load(Ordering::Relaxed) {
        let received = match batch.recv(&socket) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        metrics.queries_udp.inc_by(received as u64);
        let current = snapshot.load();
        for i in 0..received {
            // Plain queries: written from the snapshot into a reused buffer, no allocation.
            if answer_fast(&current, batch.datagram(i), &mut scratch, Transport::Udp).is_some() {
                batch.reply(i, &scratch);
                continue;
            }
            match answer_general(&current, batch.datagram(i), Transport::Udp) {
                Outcome::Reply(bytes) => batch.reply(i, &bytes),
                Outcome::NotOurs(query) => {
                    let Some(from) = batch.source(i) else {
                        continue;
                    };
                    match &forward {
                        Some(forward) => {
                            let reply_socket = reply_socket.clone();
                            let arrival = batch.arrival(i);
                            forward.forward(
                                *query,
                                from,
                                Transport::Udp,
                                Box::new(move |bytes: Vec<u8>| {
                                    let _ = mmsg::send_from(&reply_socket, &bytes, from, arrival);
                                }),
                            );
                        }
                        None => {
                            if let Some(bytes) = super::refused(&query) {
                                batch.reply(i, &bytes);
                            }
                        }
                    }
                }
                Outcome::Drop => {
                    metrics.dropped.inc();
                }
            }
        }
        let unsent = batch.flush(&socket);
        if unsent > 0 {
            debug!(unsent, "UDP replies dropped by the kernel");
        }
    }
}
