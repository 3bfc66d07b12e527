//! Encoding and decoding chitchat envelopes, with chitchat's own code.
//!
//! chitchat 0.13 hands a transport typed envelopes but keeps their wire encoding crate-private
//! (and its `Digest` opaque), so a transport that must sign bytes cannot produce them itself. Its
//! public `UdpSocket` can: this codec owns one on 127.0.0.1 and a plain socket beside it, and
//! encodes by letting chitchat send the envelope to the plain socket, decodes by sending the
//! bytes the other way. It costs one loopback datagram per message and keeps the wire format
//! exactly chitchat's. Should chitchat expose its encoding, this module reduces to two calls.
//!
//! Both sockets accept datagrams only from each other: anything else (another local process
//! trying to skip authentication) is discarded. Decoding survives cancellation of the receive
//! future, as chitchat's server requires: the real senders of datagrams handed to chitchat wait
//! in `pending`, in order, until chitchat yields them. chitchat silently skips bytes it cannot
//! decode; the length of each pending datagram lets the codec tell which one it skipped, and the
//! transport bounds its wait for the last one ([`EnvelopeCodec::abandon_pending`]).

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use anyhow::Context as _;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, Socket, UdpSocket as ChitchatUdpSocket};
use tokio::time::Instant;

use super::frame::MAX_DATAGRAM;

/// A private loopback pair: chitchat's socket (the coder) and ours (the byte side).
pub struct EnvelopeCodec {
    coder: Box<dyn Socket>,
    coder_addr: SocketAddr,
    bytes: UdpSocket,
    bytes_addr: SocketAddr,
    buf: Box<[u8]>,
    /// Sender, length and submission time of each datagram handed to chitchat and not yet
    /// decoded.
    pending: VecDeque<(SocketAddr, usize, Instant)>,
}

impl EnvelopeCodec {
    /// Opens the loopback pair on ephemeral ports.
    pub async fn open() -> anyhow::Result<Self> {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let coder = ChitchatUdpSocket::open(loopback).await?;
        let coder_addr = coder.local_addr()?;
        let bytes = UdpSocket::bind(loopback).context("binding the gossip codec socket")?;
        bytes
            .set_nonblocking(true)
            .context("making the gossip codec socket non-blocking")?;
        let bytes_addr = bytes.local_addr().context("gossip codec socket address")?;
        Ok(Self {
            coder: Box::new(coder),
            coder_addr,
            bytes,
            bytes_addr,
            buf: vec![0; MAX_DATAGRAM + 1].into_boxed_slice(),
            pending: VecDeque::new(),
        })
    }

    /// The wire bytes of `envelope`.
    pub async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<&[u8]> {
        self.coder.send(self.bytes_addr, envelope).await?;
        // A loopback send queues the datagram on the receiving socket before it returns, so it
        // is there now; anything from elsewhere is dropped on the way.
        loop {
            match self.bytes.recv_from(&mut self.buf) {
                Ok((len, from)) if from == self.coder_addr => return Ok(&self.buf[..len]),
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    anyhow::bail!(
                        "the gossip codec lost an encoded envelope (loopback receive queue full)"
                    )
                }
                Err(e) => return Err(e).context("gossip codec receive"),
            }
        }
    }

    /// Hands authentic bytes received from `from` to chitchat for decoding; collect the result
    /// with [`Self::next_decoded`].
    pub fn submit(&mut self, from: SocketAddr, bytes: &[u8]) -> anyhow::Result<()> {
        self.bytes
            .send_to(bytes, self.coder_addr)
            .context("gossip codec send")?;
        self.pending.push_back((from, bytes.len(), Instant::now()));
        Ok(())
    }

    /// When the oldest submission still awaiting decoding was made, if any. Callers bound
    /// their wait from this instant, not from their own start: chitchat cancels and repeats
    /// `recv` every gossip round, and a per-call timeout would never expire.
    pub fn oldest_pending(&self) -> Option<Instant> {
        self.pending.front().map(|&(_, _, at)| at)
    }

    /// Gives up on every submission not yet decoded (chitchat dropped them without a word) and
    /// returns how many there were. An envelope for one that arrives later finds no pending
    /// entry and is discarded.
    pub fn abandon_pending(&mut self) -> usize {
        let n = self.pending.len();
        self.pending.clear();
        n
    }

    /// The next decoded envelope, attributed to the peer that sent it, and how many earlier
    /// submissions chitchat could not decode. Cancel-safe.
    pub async fn next_decoded(&mut self) -> anyhow::Result<(RecvOutcome, u64)> {
        loop {
            let mut outcome = self.coder.recv().await?;
            if outcome.from_addr != self.bytes_addr {
                continue;
            }
            let mut skipped = 0;
            while let Some((from, len, _)) = self.pending.pop_front() {
                if len == outcome.num_bytes_received {
                    outcome.from_addr = from;
                    return Ok((outcome, skipped));
                }
                skipped += 1;
            }
        }
    }
}
