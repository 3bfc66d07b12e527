//! chitchat's transport hook, implemented over UDP with every datagram sealed (encrypted and
//! authenticated) with the gossip keyring: envelopes are encoded with chitchat's own wire format,
//! sealed by [`super::frame`] (split when larger than a datagram), and received datagrams are
//! opened, checked for freshness and repeats before any decoding. Datagrams that fail are
//! dropped and counted by reason.
//!
//! A replayed datagram is not harmless even though chitchat ignores old versions: a Syn is
//! answered with a SynAck hundreds of times its size, to whatever source the replayer claims.
//! So repeats are dropped, and answers go to the address sealed in the datagram.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context as _;
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::{debug, warn};

use super::frame::{Body, MAX_DATAGRAM, MAX_MESSAGE, MAX_UNSPLIT, Opener, Reassembly, Sealer};
use super::keyring::Keyring;
use crate::log_budget::LogBudget;

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RejectReason {
    /// Too short, a key this node does not have, or a tag that does not match.
    Auth,
    /// Authentic, but sent more than the freshness window from this node's clock.
    Stale,
    /// Authentic, but seen before: a replay.
    Replay,
    /// Authentic, but not decodable (a peer of an incompatible version).
    Malformed,
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            RejectReason::Auth => "auth",
            RejectReason::Stale => "stale",
            RejectReason::Replay => "replay",
            RejectReason::Malformed => "malformed",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: RejectReason,
}

/// Datagram counters of the gossip transport.
#[derive(Debug, Clone, Default)]
pub struct TransportMetrics {
    sent: Counter,
    sent_bytes: Counter,
    received: Counter,
    received_bytes: Counter,
    rejected: Family<RejectLabels, Counter>,
    unsendable: Counter,
    send_errors: Counter,
    fragmented: Counter,
}

impl TransportMetrics {
    /// Registers the counters under `dcnet_gossip_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dcnet_gossip_datagrams_sent",
            "Gossip datagrams sent",
            self.sent.clone(),
        );
        registry.register(
            "dcnet_gossip_sent_bytes",
            "Bytes of gossip datagrams sent",
            self.sent_bytes.clone(),
        );
        registry.register(
            "dcnet_gossip_datagrams_received",
            "Authentic gossip datagrams received",
            self.received.clone(),
        );
        registry.register(
            "dcnet_gossip_received_bytes",
            "Bytes of authentic gossip datagrams received",
            self.received_bytes.clone(),
        );
        registry.register(
            "dcnet_gossip_datagrams_rejected",
            "Gossip datagrams dropped: reason=auth did not open with any installed key, stale was sent too far from this node's clock, replay was seen before, malformed did not decode",
            self.rejected.clone(),
        );
        registry.register(
            "dcnet_gossip_messages_fragmented",
            "Gossip messages too large for one datagram once authenticated, sent in fragments",
            self.fragmented.clone(),
        );
        registry.register(
            "dcnet_gossip_send_errors",
            "Gossip datagrams the kernel refused to send (e.g. EPERM from a firewall, no route)",
            self.send_errors.clone(),
        );
        registry.register(
            "dcnet_gossip_messages_unsendable",
            "Gossip messages dropped before sending because they could not be encoded or framed",
            self.unsendable.clone(),
        );
    }

    /// Datagrams rejected for `reason` so far.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected.get_or_create(&RejectLabels { reason }).get()
    }

    /// Authentic datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.get()
    }

    /// Datagrams and bytes sent so far.
    pub fn sent(&self) -> (u64, u64) {
        (self.sent.get(), self.sent_bytes.get())
    }

    /// Messages sent in fragments so far.
    pub fn fragmented(&self) -> u64 {
        self.fragmented.get()
    }

    fn reject(&self, reason: RejectReason, n: u64) {
        self.rejected
            .get_or_create(&RejectLabels { reason })
            .inc_by(n);
    }
}

/// A chitchat transport over UDP that seals and opens every datagram.
#[derive(Clone)]
pub struct AuthenticatedUdp {
    keyring: Keyring,
    advertise: SocketAddr,
    metrics: TransportMetrics,
}

impl AuthenticatedUdp {
    /// A transport for a node that peers reach at `advertise`, keyed with `keyring`, counting
    /// into `metrics`.
    pub fn new(keyring: Keyring, advertise: SocketAddr, metrics: TransportMetrics) -> Self {
        Self {
            keyring,
            advertise,
            metrics,
        }
    }

    /// The largest message to build for this transport (`ChitchatConfig::max_message_len`):
    /// [`MAX_MESSAGE`], unless the receive buffer this node can get would not hold a few of
    /// them at once; then less, down to one datagram. A message is whole or lost, so one that
    /// overflows the receiver's buffer every time would never arrive.
    pub fn max_message_len(&self) -> usize {
        let usable = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .map(|probe| enlarge_recv_buffer(&probe))
            .unwrap_or(0);
        (usable / MESSAGES_BUFFERED).clamp(MAX_UNSPLIT, MAX_MESSAGE)
    }
}

#[async_trait]
impl Transport for AuthenticatedUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = bind_udp(listen_addr)
            .with_context(|| format!("cannot bind the gossip socket {listen_addr}/udp"))?;
        let sealer = Sealer::new(self.keyring.clone(), self.advertise);
        Ok(Box::new(AuthenticatedSocket {
            socket,
            send_buf: Vec::new(),
            opener: Opener::new(self.keyring.clone(), sealer.sender()),
            sealer,
            stale_warned: None,
            send_log: LogBudget::new(std::time::Duration::from_secs(10), 1),
            reassembly: Reassembly::default(),
            next_message_id: rand::random(),
            metrics: self.metrics.clone(),
            buf: vec![0; MAX_DATAGRAM + 1].into_boxed_slice(),
        }))
    }
}

/// Receive buffer asked for the gossip socket. Full-size gossip datagrams are ~64 KiB and a
/// catching-up peer's messages up to [`MAX_MESSAGE`], so the kernel's usual 208 KiB holds only a
/// few datagrams: when many nodes join at once (or tick in phase) the rest are dropped
/// (`RcvbufErrors` in /proc/net/snmp) and a cluster of hundreds never converges.
const RECV_BUFFER: usize = 8 << 20;
/// Largest messages the receive buffer should hold at once (a few peers answering together).
const MESSAGES_BUFFERED: usize = 4;

/// Asks for [`RECV_BUFFER`] on `socket`; returns the payload bytes it can hold. As root (the
/// agent is), `SO_RCVBUFFORCE` passes `net.core.rmem_max`; otherwise the kernel caps the size
/// at it.
fn enlarge_recv_buffer(socket: &socket2::Socket) -> usize {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &RECV_BUFFER).is_err()
        && let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER)
    {
        warn!(error = %e, "cannot enlarge the gossip receive buffer; bursts may be dropped");
    }
    // The kernel reports twice what it grants payload: the rest is its bookkeeping.
    socket.recv_buffer_size().unwrap_or(0) / 2
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let got = enlarge_recv_buffer(&socket);
    debug!(asked = RECV_BUFFER, got, "gossip receive buffer");
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

struct AuthenticatedSocket {
    socket: tokio::net::UdpSocket,
    /// The encoding of the message being sent, kept for its capacity.
    send_buf: Vec<u8>,
    sealer: Sealer,
    opener: Opener,
    /// When a clock-skew warning was last logged (at most one a minute).
    stale_warned: Option<Instant>,
    /// Failed sends are logged at most once per 10 s.
    send_log: LogBudget,
    reassembly: Reassembly,
    next_message_id: u32,
    metrics: TransportMetrics,
    buf: Box<[u8]>,
}

#[async_trait]
impl Socket for AuthenticatedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.socket
            .local_addr()
            .context("the gossip socket has no local address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let id = self.next_message_id;
        self.next_message_id = id.wrapping_add(1);
        self.send_buf.clear();
        envelope.serialize(&mut self.send_buf);
        let datagrams = self.sealer.seal(&self.send_buf, id, crate::unix_ms());
        if self.send_buf.capacity() > MAX_UNSPLIT {
            // A catch-up message (up to a megabyte) must not stay pinned for the node's life.
            self.send_buf = Vec::new();
        }
        let Some(datagrams) = datagrams else {
            self.metrics.unsendable.inc();
            return Ok(SendOutcome { num_bytes_sent: 0 });
        };
        if datagrams.len() > 1 {
            self.metrics.fragmented.inc();
        }
        let mut num_bytes_sent = 0;
        for datagram in &datagrams {
            // A failed send is gossip's weather (a peer's route gone, a firewall): counted and
            // logged within a budget, never returned to chitchat, which would log it every
            // time, and as an anyhow error that captures a backtrace when RUST_BACKTRACE is set.
            let sent = match self.socket.send_to(datagram, to).await {
                Ok(sent) => sent,
                Err(e) => {
                    self.metrics.send_errors.inc();
                    let admit = self.send_log.admit(Instant::now());
                    if admit.log {
                        warn!(to = %to, error = %e, suppressed = admit.suppressed,
                              "cannot send gossip (further failures within 10 s are only counted)");
                    }
                    break;
                }
            };
            self.metrics.sent.inc();
            self.metrics.sent_bytes.inc_by(sent as u64);
            num_bytes_sent += sent;
        }
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        // Cancel-safe, as chitchat requires: nothing is held across an await but the socket's
        // receive, and a message is returned the moment it is whole.
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(received) => received,
                // ICMP errors surfacing from earlier sends are not fatal to the socket.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e).context("the gossip socket failed to receive"),
            };
            let (from, message) = match self.opener.open(
                &mut self.buf[..len],
                crate::unix_ms(),
                Instant::now(),
            ) {
                Ok(opened) => {
                    let message = match opened.body {
                        Body::Whole(message) => Some(message.to_vec()),
                        Body::Fragment {
                            id,
                            index,
                            count,
                            part,
                        } => {
                            self.reassembly
                                .add(opened.from, id, index, count, part, Instant::now())
                        }
                    };
                    (opened.from, message)
                }
                Err(reason) => {
                    self.metrics.reject(reason, 1);
                    debug!(from = %from, bytes = len, ?reason, "gossip datagram rejected");
                    if reason == RejectReason::Stale
                        && self
                            .stale_warned
                            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60))
                    {
                        self.stale_warned = Some(Instant::now());
                        warn!(
                            from = %from,
                            "authentic gossip sent more than {} s from this node's clock was dropped: check NTP on both nodes",
                            super::frame::FRESHNESS.as_secs()
                        );
                    }
                    continue;
                }
            };
            self.metrics.received.inc();
            self.metrics.received_bytes.inc_by(len as u64);
            let Some(message) = message else { continue };
            match ChitchatEnvelope::deserialize(&mut &message[..]) {
                Ok(envelope) => {
                    return Ok(RecvOutcome {
                        from_addr: from,
                        envelope,
                        num_bytes_received: message.len(),
                    });
                }
                // Authentic but not chitchat's: a peer of an incompatible version.
                Err(e) => {
                    self.metrics.reject(RejectReason::Malformed, 1);
                    debug!(from = %from, error = %e, "authentic gossip that does not decode");
                }
            }
        }
    }
}
