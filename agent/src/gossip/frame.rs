//! The authenticated frame every gossip datagram travels in, and the reassembly of the rare
//! message that needs two.
//!
//! ```text
//! 0        format version (1)
//! 1        flags (bit 0: fragment)
//! 2..8     fragment header, only with the flag: message id (u32 LE), index, count
//! ...      payload: a chitchat envelope, or a slice of one
//! last 32  HMAC-SHA256(cluster secret, every byte before it)
//! ```
//!
//! The tag is checked in constant time before anything else is read, so bytes from outside the
//! cluster never reach a decoder or the reassembly buffer. chitchat fills envelopes up to the
//! largest UDP payload (its deltas are already compressed), so an envelope may not fit with the
//! tag; it is then split, each part tagged on its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::transport::RejectReason;
use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
const FORMAT_VERSION: u8 = 1;
const FLAG_FRAGMENT: u8 = 0b1;
const HEADER_LEN: usize = 2;
const FRAGMENT_HEADER_LEN: usize = 6;
const TAG_LEN: usize = 32;
/// At most this many fragments per message: enough for any envelope chitchat builds.
const MAX_FRAGMENTS: usize = 4;
/// Largest slice of a message carried by one fragment.
const FRAGMENT_CHUNK: usize = MAX_DATAGRAM - HEADER_LEN - FRAGMENT_HEADER_LEN - TAG_LEN;

/// What an authentic datagram carried.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    /// A whole message.
    Whole(&'a [u8]),
    /// Part `index` of `count` of message `id`.
    Fragment {
        id: u32,
        index: u8,
        count: u8,
        part: &'a [u8],
    },
}

/// Seals messages into datagrams and opens datagrams, with the cluster secret.
#[derive(Clone)]
pub struct FrameCodec {
    mac: HmacSha256,
}

impl FrameCodec {
    /// A codec keyed with `secret`.
    pub fn new(secret: &Secret) -> Self {
        Self {
            // HMAC takes keys of any length.
            mac: HmacSha256::new_from_slice(secret.as_bytes())
                .expect("HMAC accepts any key length"),
        }
    }

    /// The datagrams that carry `message` (one, unless it is too large); `id` tells apart the
    /// fragments of different messages from one sender. `None` if even fragments cannot carry it.
    pub fn seal(&self, message: &[u8], id: u32) -> Option<Vec<Vec<u8>>> {
        if message.len() + HEADER_LEN + TAG_LEN <= MAX_DATAGRAM {
            return Some(vec![self.tagged(&[FORMAT_VERSION, 0], message)]);
        }
        let count = message.len().div_ceil(FRAGMENT_CHUNK);
        if count > MAX_FRAGMENTS {
            return None;
        }
        let datagrams = message
            .chunks(FRAGMENT_CHUNK)
            .enumerate()
            .map(|(index, part)| {
                let mut header = vec![FORMAT_VERSION, FLAG_FRAGMENT];
                header.extend_from_slice(&id.to_le_bytes());
                header.extend_from_slice(&[index as u8, count as u8]);
                self.tagged(&header, part)
            })
            .collect();
        Some(datagrams)
    }

    fn tagged(&self, header: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut datagram = Vec::with_capacity(header.len() + payload.len() + TAG_LEN);
        datagram.extend_from_slice(header);
        datagram.extend_from_slice(payload);
        let mut mac = self.mac.clone();
        mac.update(&datagram);
        datagram.extend_from_slice(&mac.finalize().into_bytes());
        datagram
    }

    /// Verifies a datagram and returns what it carries.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<Opened<'a>, RejectReason> {
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(RejectReason::Auth);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let mut mac = self.mac.clone();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| RejectReason::Auth)?;

        let (header, rest) = signed.split_at(HEADER_LEN);
        if header[0] != FORMAT_VERSION {
            return Err(RejectReason::Malformed);
        }
        if header[1] & FLAG_FRAGMENT == 0 {
            return Ok(Opened::Whole(rest));
        }
        let Some((fragment, part)) = rest.split_first_chunk::<FRAGMENT_HEADER_LEN>() else {
            return Err(RejectReason::Malformed);
        };
        let id = u32::from_le_bytes([fragment[0], fragment[1], fragment[2], fragment[3]]);
        let (index, count) = (fragment[4], fragment[5]);
        if count < 2 || usize::from(count) > MAX_FRAGMENTS || index >= count {
            return Err(RejectReason::Malformed);
        }
        Ok(Opened::Fragment {
            id,
            index,
            count,
            part,
        })
    }
}

/// Collects fragments until a message is whole. Bounded in entries and age, and fed only
/// authentic fragments, so a peer that stops mid-message costs little and an outsider nothing.
#[derive(Default)]
pub struct Reassembly {
    partial: HashMap<(SocketAddr, u32), Partial>,
}

struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    started: Instant,
}

const MAX_PARTIAL: usize = 64;
const PARTIAL_TTL: Duration = Duration::from_secs(5);

impl Reassembly {
    /// Adds a fragment; returns the message once all its parts have arrived.
    pub fn add(
        &mut self,
        from: SocketAddr,
        id: u32,
        index: u8,
        count: u8,
        part: &[u8],
        now: Instant,
    ) -> Option<Vec<u8>> {
        self.partial
            .retain(|_, p| now.duration_since(p.started) < PARTIAL_TTL);
        if self.partial.len() >= MAX_PARTIAL && !self.partial.contains_key(&(from, id)) {
            let oldest = self
                .partial
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| *k)?;
            self.partial.remove(&oldest);
        }
        let entry = self.partial.entry((from, id)).or_insert_with(|| Partial {
            parts: vec![None; usize::from(count)],
            started: now,
        });
        if entry.parts.len() != usize::from(count) {
            // Same id, other shape: a restarted sender reusing ids. Start over.
            *entry = Partial {
                parts: vec![None; usize::from(count)],
                started: now,
            };
        }
        entry.parts[usize::from(index)] = Some(part.to_vec());
        if entry.parts.iter().all(Option::is_some) {
            let done = self.partial.remove(&(from, id))?;
            return Some(done.parts.into_iter().flatten().flatten().collect());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(key: &str) -> FrameCodec {
        FrameCodec::new(&Secret::new(key.as_bytes().to_vec()))
    }

    #[test]
    fn small_message_is_one_whole_datagram() {
        let c = codec("0123456789abcdef");
        let datagrams = c.seal(b"hello", 7).unwrap();
        assert_eq!(datagrams.len(), 1);
        assert_eq!(c.open(&datagrams[0]), Ok(Opened::Whole(&b"hello"[..])));
    }

    #[test]
    fn wrong_key_truncation_and_tampering_fail_authentication() {
        let ours = codec("0123456789abcdef");
        let theirs = codec("fedcba9876543210");
        let datagram = theirs.seal(b"hello", 1).unwrap().remove(0);
        assert_eq!(ours.open(&datagram), Err(RejectReason::Auth));
        let datagram = ours.seal(b"hello", 1).unwrap().remove(0);
        for i in 0..datagram.len() {
            let mut tampered = datagram.clone();
            tampered[i] ^= 0x40;
            assert_eq!(ours.open(&tampered), Err(RejectReason::Auth), "byte {i}");
        }
        assert_eq!(
            ours.open(&datagram[..datagram.len() - 1]),
            Err(RejectReason::Auth)
        );
        assert_eq!(ours.open(b""), Err(RejectReason::Auth));
    }

    #[test]
    fn authentic_but_unknown_format_is_malformed() {
        let c = codec("0123456789abcdef");
        let datagram = c.tagged(&[9, 0], b"x");
        assert_eq!(c.open(&datagram), Err(RejectReason::Malformed));
        let bad_fragment = c.tagged(&[FORMAT_VERSION, FLAG_FRAGMENT, 0, 0, 0, 0, 3, 2], b"x");
        assert_eq!(c.open(&bad_fragment), Err(RejectReason::Malformed));
    }

    #[test]
    fn a_full_size_message_is_split_and_reassembled_in_any_order() {
        let c = codec("0123456789abcdef");
        let message: Vec<u8> = (0..MAX_DATAGRAM).map(|i| (i % 251) as u8).collect();
        let datagrams = c.seal(&message, 42).unwrap();
        assert_eq!(datagrams.len(), 2);
        assert!(datagrams.iter().all(|d| d.len() <= MAX_DATAGRAM));
        let from: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let mut r = Reassembly::default();
        let now = Instant::now();
        let mut whole = None;
        for d in datagrams.iter().rev() {
            let Ok(Opened::Fragment {
                id,
                index,
                count,
                part,
            }) = c.open(d)
            else {
                panic!("not a fragment")
            };
            assert_eq!(id, 42);
            whole = r.add(from, id, index, count, part, now);
        }
        assert_eq!(whole.as_deref(), Some(&message[..]));
        assert!(r.partial.is_empty());
    }

    #[test]
    fn stale_fragments_expire() {
        let mut r = Reassembly::default();
        let from: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(r.add(from, 1, 0, 2, b"a", t0), None);
        // The second half arrives too late: the first has been dropped.
        assert_eq!(r.add(from, 1, 1, 2, b"b", t0 + PARTIAL_TTL * 2), None);
        assert_eq!(r.partial.len(), 1);
    }
}
