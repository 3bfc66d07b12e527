//! chitchat's transport hook, implemented over UDP with every datagram authenticated by the
//! cluster secret: envelopes are encoded by [`super::codec`], framed and tagged by
//! [`super::frame`], and received datagrams are verified before any decoding. Datagrams that fail
//! are dropped and counted by reason. Replays are harmless: chitchat ignores versions and
//! heartbeats it has already seen.

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

use super::codec::EnvelopeCodec;
use super::frame::{FrameCodec, MAX_DATAGRAM, Opened, Reassembly};
use crate::config::Secret;

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RejectReason {
    /// Too short or a tag that does not match: not from this cluster.
    Auth,
    /// Authentic, but not decodable (a peer of an incompatible version).
    Malformed,
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            RejectReason::Auth => "auth",
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
            "Gossip datagrams dropped: reason=auth failed the cluster-secret check, reason=malformed did not decode",
            self.rejected.clone(),
        );
        registry.register(
            "dcnet_gossip_messages_fragmented",
            "Gossip messages too large for one datagram once authenticated, sent in fragments",
            self.fragmented.clone(),
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

/// A chitchat transport over UDP that signs and verifies every datagram.
#[derive(Clone)]
pub struct AuthenticatedUdp {
    frames: FrameCodec,
    metrics: TransportMetrics,
}

impl AuthenticatedUdp {
    /// A transport keyed with the cluster secret, counting into `metrics`.
    pub fn new(secret: &Secret, metrics: TransportMetrics) -> Self {
        Self {
            frames: FrameCodec::new(secret),
            metrics,
        }
    }
}

#[async_trait]
impl Transport for AuthenticatedUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = bind_udp(listen_addr)
            .with_context(|| format!("cannot bind the gossip socket {listen_addr}/udp"))?;
        Ok(Box::new(AuthenticatedSocket {
            socket,
            codec: EnvelopeCodec::open().await?,
            frames: self.frames.clone(),
            reassembly: Reassembly::default(),
            next_message_id: rand::random(),
            metrics: self.metrics.clone(),
            buf: vec![0; MAX_DATAGRAM + 1].into_boxed_slice(),
        }))
    }
}

/// How long decoding over the loopback codec may take. Delivery there is immediate; only a
/// datagram chitchat refused to decode ever waits this long.
const DECODE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Receive buffer asked for the gossip socket. Full-size gossip datagrams are ~64 KiB, so the
/// kernel's usual 208 KiB holds only a few: when many nodes join at once (or tick in phase) the
/// rest are dropped (`RcvbufErrors` in /proc/net/snmp) and a cluster of hundreds never converges.
/// The kernel caps it at `net.core.rmem_max`.
const RECV_BUFFER: usize = 4 << 20;

fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        warn!(error = %e, "cannot enlarge the gossip receive buffer; bursts may be dropped");
    }
    debug!(
        asked = RECV_BUFFER,
        got = socket.recv_buffer_size().unwrap_or(0),
        "gossip receive buffer"
    );
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

struct AuthenticatedSocket {
    socket: tokio::net::UdpSocket,
    codec: EnvelopeCodec,
    frames: FrameCodec,
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
        let datagrams = match self.codec.encode(envelope).await {
            Ok(bytes) => self.frames.seal(bytes, id),
            Err(e) => {
                warn!(to = %to, error = %e, "gossip message not encoded; dropped");
                None
            }
        };
        let Some(datagrams) = datagrams else {
            self.metrics.unsendable.inc();
            return Ok(SendOutcome { num_bytes_sent: 0 });
        };
        if datagrams.len() > 1 {
            self.metrics.fragmented.inc();
        }
        let mut num_bytes_sent = 0;
        for datagram in &datagrams {
            let sent = self
                .socket
                .send_to(datagram, to)
                .await
                .with_context(|| format!("sending gossip to {to}"))?;
            self.metrics.sent.inc();
            self.metrics.sent_bytes.inc_by(sent as u64);
            num_bytes_sent += sent;
        }
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            // Bytes handed to the codec (now, or before an earlier call was cancelled) come
            // first. chitchat drops bytes it cannot decode without a word, so the wait is
            // bounded: otherwise one such datagram would stop this node's gossip for good.
            if let Some(submitted) = self.codec.oldest_pending() {
                let deadline = submitted + DECODE_TIMEOUT;
                match tokio::time::timeout_at(deadline, self.codec.next_decoded()).await {
                    Ok(decoded) => {
                        let (outcome, undecodable) = decoded?;
                        self.metrics.reject(RejectReason::Malformed, undecodable);
                        return Ok(outcome);
                    }
                    Err(_) => {
                        let abandoned = self.codec.abandon_pending();
                        self.metrics
                            .reject(RejectReason::Malformed, abandoned as u64);
                        debug!(abandoned, "authentic gossip that chitchat could not decode");
                        continue;
                    }
                }
            }
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
            let message = match self.frames.open(&self.buf[..len]) {
                Ok(Opened::Whole(message)) => Some(message.to_vec()),
                Ok(Opened::Fragment {
                    id,
                    index,
                    count,
                    part,
                }) => self
                    .reassembly
                    .add(from, id, index, count, part, Instant::now()),
                Err(reason) => {
                    self.metrics.reject(reason, 1);
                    debug!(from = %from, bytes = len, ?reason, "gossip datagram rejected");
                    continue;
                }
            };
            self.metrics.received.inc();
            self.metrics.received_bytes.inc_by(len as u64);
            if let Some(message) = message {
                // Losing one message is gossip's everyday weather; stopping the loop is not.
                if let Err(e) = self.codec.submit(from, &message) {
                    warn!(from = %from, error = %e, "gossip message not decoded; dropped");
                }
            }
        }
    }
}
