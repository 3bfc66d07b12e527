//! The sealed frame every gossip datagram travels in, and the reassembly of the rare message
//! that needs two.
//!
//! ```text
//! 0        format version (2)                                     ┐
//! 1..5     key id: which keyring key sealed it                    │ in clear,
//! 5..21    sender: 16 random bytes the sender chose at its start  │ authenticated
//! 21..29   counter: u64 BE, one more for every datagram it seals  │
//! 29..37   sent at: unix ms, u64 BE                               ┘
//! ...      sealed (ChaCha20-Poly1305): flags (bit 0: fragment), the sender's gossip address
//!          (4|6, address, port), [fragment header: message id u32 LE, index, count], payload
//! last 16  Poly1305 tag
//! ```
//!
//! Each sender seals with its own key, derived from the keyring key and its sender bytes
//! (HKDF-SHA256), so its counter alone makes every nonce unique. A receiver opens a datagram only
//! if its key is installed, then drops it if it was sent more than [`FRESHNESS`] from now by this
//! node's clock (`stale`) or its counter was seen before (`replay`, a window of
//! [`REPLAY_WINDOW`] counters per sender). An authentic, fresh, first datagram is answered at the
//! address sealed inside it, never at the source address it came from: replaying or reflecting
//! gossip at a third party gets no answer at all.
//!
//! A message larger than one datagram (chitchat fills replies up to [`MAX_MESSAGE`] when a peer
//! is far behind: a node joining a cluster of 100,000 tasks catches up megabytes of compressed
//! state) is split into up to [`MAX_FRAGMENTS`] fragments, each sealed on its own.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

use super::keyring::{Key, KeyId, Keyring};
use super::transport::RejectReason;

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
const FORMAT_VERSION: u8 = 2;
const FLAG_FRAGMENT: u8 = 0b1;
/// Version, key id, sender, counter, sent at.
const HEADER_LEN: usize = 1 + 4 + 16 + 8 + 8;
const TAG_LEN: usize = 16;
const FRAGMENT_HEADER_LEN: usize = 6;
/// Flags and the longest address (family, IPv6, port).
const MAX_INNER_LEN: usize = 1 + 1 + 16 + 2;
/// At most this many fragments per message.
pub const MAX_FRAGMENTS: usize = 16;
/// Largest slice of a message carried by one fragment.
const FRAGMENT_CHUNK: usize =
    MAX_DATAGRAM - HEADER_LEN - MAX_INNER_LEN - FRAGMENT_HEADER_LEN - TAG_LEN;
/// The largest message a frame carries (about 1 MiB).
pub const MAX_MESSAGE: usize = MAX_FRAGMENTS * FRAGMENT_CHUNK;
/// The largest message that fits one datagram, unsplit.
pub const MAX_UNSPLIT: usize = MAX_DATAGRAM - HEADER_LEN - MAX_INNER_LEN - TAG_LEN;
/// How far from this node's clock a datagram's send time may be. Nodes need NTP, as DC/OS
/// required; a node further off is told so in the log and counted as `stale`.
pub const FRESHNESS: Duration = Duration::from_secs(30);
/// Counters remembered per sender: reordering deeper than this is dropped as a replay.
pub const REPLAY_WINDOW: u64 = 1024;
/// Senders remembered; only authentic senders are added, so this bounds restarts, not attacks.
const MAX_SENDERS: usize = 4096;

/// What an authentic datagram carried.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The gossip address of its sender, as sealed inside it.
    pub from: SocketAddr,
    pub body: Body<'a>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Body<'a> {
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

/// The key `sender` seals with under `key`.
fn sender_key(key: &Key, sender: &[u8; 16]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, sender).extract(key.as_bytes());
    let okm = prk
        .expand(&[b"dcnet gossip v2"], &CHACHA20_POLY1305)
        .expect("ChaCha20-Poly1305's key length is a valid HKDF output length");
    LessSafeKey::new(UnboundKey::from(okm))
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn encode_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn decode_addr(bytes: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let (&family, rest) = bytes.split_first()?;
    let (ip, rest): (IpAddr, &[u8]) = match family {
        4 => {
            let (ip, rest) = rest.split_first_chunk::<4>()?;
            (Ipv4Addr::from(*ip).into(), rest)
        }
        6 => {
            let (ip, rest) = rest.split_first_chunk::<16>()?;
            (Ipv6Addr::from(*ip).into(), rest)
        }
        _ => return None,
    };
    let (port, rest) = rest.split_first_chunk::<2>()?;
    Some((SocketAddr::new(ip, u16::from_be_bytes(*port)), rest))
}

/// Seals this node's messages with its keyring's primary key.
pub struct Sealer {
    keyring: Keyring,
    address: SocketAddr,
    sender: [u8; 16],
    counter: u64,
    key: Option<(KeyId, LessSafeKey)>,
}

impl Sealer {
    /// A sealer for a node reached at `address`, with a fresh random sender id.
    pub fn new(keyring: Keyring, address: SocketAddr) -> Self {
        Self {
            keyring,
            address,
            sender: rand::random(),
            counter: 0,
            key: None,
        }
    }

    /// The sender id this node seals with (its [`Opener`] refuses datagrams that carry it).
    pub fn sender(&self) -> [u8; 16] {
        self.sender
    }

    /// The datagrams that carry `message` (one, unless it is too large); `id` tells apart the
    /// fragments of different messages. `None` if even fragments cannot carry it.
    pub fn seal(&mut self, message: &[u8], id: u32, now_ms: u64) -> Option<Vec<Vec<u8>>> {
        let mut inner = vec![0];
        encode_addr(self.address, &mut inner);
        if HEADER_LEN + inner.len() + message.len() + TAG_LEN <= MAX_DATAGRAM {
            return Some(vec![self.sealed(&inner, message, now_ms)]);
        }
        let count = message.len().div_ceil(FRAGMENT_CHUNK);
        if count > MAX_FRAGMENTS {
            return None;
        }
        inner[0] = FLAG_FRAGMENT;
        let datagrams = message
            .chunks(FRAGMENT_CHUNK)
            .enumerate()
            .map(|(index, part)| {
                let mut header = inner.clone();
                header.extend_from_slice(&id.to_le_bytes());
                header.extend_from_slice(&[index as u8, count as u8]);
                self.sealed(&header, part, now_ms)
            })
            .collect();
        Some(datagrams)
    }

    fn sealed(&mut self, inner: &[u8], payload: &[u8], now_ms: u64) -> Vec<u8> {
        let primary = self.keyring.with(|k| k.primary.clone());
        let id = primary.id();
        if self.key.as_ref().map(|(k, _)| *k) != Some(id) {
            self.key = Some((id, sender_key(&primary, &self.sender)));
        }
        self.counter += 1;
        let mut datagram = Vec::with_capacity(HEADER_LEN + inner.len() + payload.len() + TAG_LEN);
        datagram.push(FORMAT_VERSION);
        datagram.extend_from_slice(&id.0);
        datagram.extend_from_slice(&self.sender);
        datagram.extend_from_slice(&self.counter.to_be_bytes());
        datagram.extend_from_slice(&now_ms.to_be_bytes());
        datagram.extend_from_slice(inner);
        datagram.extend_from_slice(payload);
        let (header, body) = datagram.split_at_mut(HEADER_LEN);
        let key = self.key.as_ref().map(|(_, k)| k).expect("set above");
        let tag = key
            .seal_in_place_separate_tag(nonce(self.counter), Aad::from(&*header), body)
            .expect("a datagram is far below ChaCha20-Poly1305's length limit");
        datagram.extend_from_slice(tag.as_ref());
        datagram
    }
}

/// The counters seen from one sender under one key.
struct Seen {
    key: LessSafeKey,
    highest: u64,
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
    last_heard: Instant,
}

impl Seen {
    /// Records `n`; false if it was seen before or is older than the window.
    fn first_time(&mut self, n: u64) -> bool {
        if n > self.highest {
            let gap = n - self.highest;
            if gap >= REPLAY_WINDOW {
                self.bits = [0; (REPLAY_WINDOW / 64) as usize];
            } else {
                for m in self.highest + 1..n {
                    self.clear(m);
                }
            }
            self.highest = n;
        } else if self.highest - n >= REPLAY_WINDOW || self.is_set(n) {
            return false;
        }
        self.set(n);
        true
    }

    fn slot(n: u64) -> (usize, u64) {
        let i = n % REPLAY_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn is_set(&self, n: u64) -> bool {
        let (w, b) = Self::slot(n);
        self.bits[w] & b != 0
    }

    fn set(&mut self, n: u64) {
        let (w, b) = Self::slot(n);
        self.bits[w] |= b;
    }

    fn clear(&mut self, n: u64) {
        let (w, b) = Self::slot(n);
        self.bits[w] &= !b;
    }
}

/// Opens datagrams with any installed key, dropping stale and repeated ones.
pub struct Opener {
    keyring: Keyring,
    /// This node's own sender id: its own datagrams, reflected back at it, are replays.
    own: [u8; 16],
    senders: HashMap<([u8; 16], KeyId), Seen>,
}

impl Opener {
    /// An opener for the node whose [`Sealer`] has sender id `own`.
    pub fn new(keyring: Keyring, own: [u8; 16]) -> Self {
        Self {
            keyring,
            own,
            senders: HashMap::new(),
        }
    }

    /// Opens `datagram` in place. `now_ms` is this node's clock (unix ms).
    pub fn open<'a>(
        &mut self,
        datagram: &'a mut [u8],
        now_ms: u64,
        now: Instant,
    ) -> Result<Opened<'a>, RejectReason> {
        if datagram.len() < HEADER_LEN + 1 + TAG_LEN || datagram[0] != FORMAT_VERSION {
            return Err(RejectReason::Auth);
        }
        let (header, body) = datagram.split_at_mut(HEADER_LEN);
        let key_id = KeyId(header[1..5].try_into().expect("4 bytes"));
        let sender: [u8; 16] = header[5..21].try_into().expect("16 bytes");
        let counter = u64::from_be_bytes(header[21..29].try_into().expect("8 bytes"));
        let sent_ms = u64::from_be_bytes(header[29..37].try_into().expect("8 bytes"));
        // Checked on every datagram, so a removed key stops at once; its senders' entries
        // age out with the others (a scan here would let forgeries cost a scan each).
        let Some(installed) = self.keyring.with(|k| k.get(key_id).cloned()) else {
            return Err(RejectReason::Auth);
        };
        let mut derived = None;
        let key = match self.senders.get(&(sender, key_id)) {
            Some(seen) => &seen.key,
            None => derived.insert(sender_key(&installed, &sender)),
        };
        let plain = key
            .open_in_place(nonce(counter), Aad::from(&*header), body)
            .map_err(|_| RejectReason::Auth)?;
        if sent_ms.abs_diff(now_ms) > FRESHNESS.as_millis() as u64 {
            return Err(RejectReason::Stale);
        }
        if sender == self.own {
            return Err(RejectReason::Replay);
        }
        if let Some(key) = derived {
            self.forget_some(now);
            self.senders.insert(
                (sender, key_id),
                Seen {
                    key,
                    highest: 0,
                    bits: [0; (REPLAY_WINDOW / 64) as usize],
                    last_heard: now,
                },
            );
        }
        let seen = self
            .senders
            .get_mut(&(sender, key_id))
            .expect("inserted above");
        if !seen.first_time(counter) {
            return Err(RejectReason::Replay);
        }
        seen.last_heard = now;

        let (&flags, rest) = plain.split_first().ok_or(RejectReason::Malformed)?;
        let (from, rest) = decode_addr(rest).ok_or(RejectReason::Malformed)?;
        if flags & FLAG_FRAGMENT == 0 {
            return Ok(Opened {
                from,
                body: Body::Whole(rest),
            });
        }
        let Some((fragment, part)) = rest.split_first_chunk::<FRAGMENT_HEADER_LEN>() else {
            return Err(RejectReason::Malformed);
        };
        let id = u32::from_le_bytes([fragment[0], fragment[1], fragment[2], fragment[3]]);
        let (index, count) = (fragment[4], fragment[5]);
        if count < 2 || usize::from(count) > MAX_FRAGMENTS || index >= count {
            return Err(RejectReason::Malformed);
        }
        Ok(Opened {
            from,
            body: Body::Fragment {
                id,
                index,
                count,
                part,
            },
        })
    }

    /// Makes room for one more sender. A sender silent for three freshness periods can be
    /// forgotten safely: anything it sent is stale by now, whatever its clock said.
    fn forget_some(&mut self, now: Instant) {
        if self.senders.len() < MAX_SENDERS {
            return;
        }
        self.senders
            .retain(|_, s| now.duration_since(s.last_heard) < FRESHNESS * 3);
        if self.senders.len() >= MAX_SENDERS
            && let Some(oldest) = self
                .senders
                .iter()
                .min_by_key(|(_, s)| s.last_heard)
                .map(|(k, _)| *k)
        {
            self.senders.remove(&oldest);
        }
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

impl Partial {
    fn bytes(&self) -> usize {
        self.parts.iter().flatten().map(Vec::len).sum()
    }
}

const MAX_PARTIAL: usize = 64;
/// Bytes held in unfinished messages at most: a largest message from each of many peers
/// answering at once (a node that is far behind hears from several in a round; evicting a
/// message before its last fragment arrives would lose it every round).
const MAX_PARTIAL_BYTES: usize = 16 * MAX_MESSAGE;
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
        let full = |partial: &HashMap<(SocketAddr, u32), Partial>| {
            (partial.len() >= MAX_PARTIAL && !partial.contains_key(&(from, id)))
                || partial.values().map(Partial::bytes).sum::<usize>() + part.len()
                    > MAX_PARTIAL_BYTES
        };
        // Oldest first, never the message this part belongs to.
        while full(&self.partial) {
            let oldest = self
                .partial
                .iter()
                .filter(|(k, _)| **k != (from, id))
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

    const NOW: u64 = 1_800_000_000_000;

    fn pair(key: &Key) -> (Sealer, Opener) {
        let ring = Keyring::in_memory(key.clone());
        (
            Sealer::new(ring.clone(), "10.0.0.1:7946".parse().unwrap()),
            Opener::new(ring, rand::random()),
        )
    }

    fn open(o: &mut Opener, d: &[u8], now_ms: u64) -> Result<Vec<u8>, RejectReason> {
        let mut copy = d.to_vec();
        match o.open(&mut copy, now_ms, Instant::now())?.body {
            Body::Whole(m) => Ok(m.to_vec()),
            Body::Fragment { part, .. } => Ok(part.to_vec()),
        }
    }

    #[test]
    fn a_message_is_sealed_and_opened_with_its_sender_address() {
        let (mut s, mut o) = pair(&Key::generate());
        let d = s.seal(b"hello", 7, NOW).unwrap();
        assert_eq!(d.len(), 1);
        assert!(
            !d[0].windows(5).any(|w| w == b"hello"),
            "the payload travels in clear"
        );
        let mut copy = d[0].clone();
        let opened = o.open(&mut copy, NOW, Instant::now()).unwrap();
        assert_eq!(opened.from, "10.0.0.1:7946".parse().unwrap());
        assert_eq!(opened.body, Body::Whole(&b"hello"[..]));
    }

    #[test]
    fn a_replay_or_a_stale_datagram_is_dropped_reordering_is_not() {
        let (mut s, mut o) = pair(&Key::generate());
        let d: Vec<Vec<u8>> = (0..3)
            .map(|i| s.seal(b"m", i, NOW).unwrap().remove(0))
            .collect();
        assert!(open(&mut o, &d[2], NOW).is_ok());
        assert!(open(&mut o, &d[0], NOW).is_ok(), "late, not repeated");
        assert_eq!(open(&mut o, &d[2], NOW), Err(RejectReason::Replay));
        assert_eq!(open(&mut o, &d[0], NOW), Err(RejectReason::Replay));
        assert!(open(&mut o, &d[1], NOW).is_ok());

        let old = s.seal(b"m", 9, NOW).unwrap().remove(0);
        for _ in 0..REPLAY_WINDOW {
            s.seal(b"m", 9, NOW).unwrap();
        }
        let newest = s.seal(b"m", 9, NOW).unwrap().remove(0);
        assert!(open(&mut o, &newest, NOW).is_ok());
        assert_eq!(
            open(&mut o, &old, NOW),
            Err(RejectReason::Replay),
            "older than the window"
        );

        let skew = FRESHNESS.as_millis() as u64 + 1;
        let early = s.seal(b"m", 9, NOW - skew).unwrap().remove(0);
        assert_eq!(open(&mut o, &early, NOW), Err(RejectReason::Stale));
        let ahead = s.seal(b"m", 9, NOW + skew).unwrap().remove(0);
        assert_eq!(open(&mut o, &ahead, NOW), Err(RejectReason::Stale));
        // Neither was recorded as seen: both were refused before.
        assert_eq!(open(&mut o, &early, NOW - skew), Ok(b"m".to_vec()));
    }

    #[test]
    fn a_node_refuses_its_own_datagrams_reflected_back() {
        let ring = Keyring::in_memory(Key::generate());
        let mut s = Sealer::new(ring.clone(), "10.0.0.1:1".parse().unwrap());
        let mut o = Opener::new(ring, s.sender());
        let d = s.seal(b"m", 1, NOW).unwrap().remove(0);
        assert_eq!(open(&mut o, &d, NOW), Err(RejectReason::Replay));
    }

    #[test]
    fn wrong_key_truncation_and_tampering_fail_authentication() {
        let key = Key::generate();
        let (mut theirs, _) = pair(&Key::generate());
        let (mut ours, mut o) = pair(&key);
        let d = theirs.seal(b"hello", 1, NOW).unwrap().remove(0);
        assert_eq!(open(&mut o, &d, NOW), Err(RejectReason::Auth));
        let d = ours.seal(b"hello", 1, NOW).unwrap().remove(0);
        for i in 0..d.len() {
            let mut tampered = d.clone();
            tampered[i] ^= 0x40;
            assert_eq!(
                open(&mut o, &tampered, NOW),
                Err(RejectReason::Auth),
                "byte {i}"
            );
        }
        assert_eq!(
            open(&mut o, &d[..d.len() - 1], NOW),
            Err(RejectReason::Auth)
        );
        assert_eq!(open(&mut o, b"", NOW), Err(RejectReason::Auth));
        assert!(open(&mut o, &d, NOW).is_ok(), "the original still opens");
    }

    #[test]
    fn a_rotation_keeps_both_sides_talking_and_a_removed_key_stops() {
        let old = Key::generate();
        let new = Key::generate();
        let a = Keyring::in_memory(old.clone());
        let b = Keyring::in_memory(old.clone());
        let mut seal_a = Sealer::new(a.clone(), "10.0.0.1:1".parse().unwrap());
        let mut open_b = Opener::new(b.clone(), rand::random());
        b.install(new.clone()).unwrap();
        a.install(new.clone()).unwrap();
        a.use_key(new.id()).unwrap();
        let d = seal_a.seal(b"x", 1, NOW).unwrap().remove(0);
        assert!(open(&mut open_b, &d, NOW).is_ok(), "b accepts the new key");
        b.use_key(new.id()).unwrap();
        a.use_key(old.id()).unwrap();
        let d = seal_a.seal(b"x", 1, NOW).unwrap().remove(0);
        assert!(open(&mut open_b, &d, NOW).is_ok(), "and still the old one");
        b.remove(old.id()).unwrap();
        let d = seal_a.seal(b"x", 1, NOW).unwrap().remove(0);
        assert_eq!(open(&mut open_b, &d, NOW), Err(RejectReason::Auth));
    }

    #[test]
    fn a_full_size_message_is_split_and_reassembled_in_any_order() {
        let (mut s, mut o) = pair(&Key::generate());
        let message: Vec<u8> = (0..MAX_DATAGRAM).map(|i| (i % 251) as u8).collect();
        let datagrams = s.seal(&message, 42, NOW).unwrap();
        assert_eq!(datagrams.len(), 2);
        assert!(datagrams.iter().all(|d| d.len() <= MAX_DATAGRAM));
        let mut r = Reassembly::default();
        let whole = reassemble(&mut o, &mut r, datagrams.iter().rev(), 42);
        assert_eq!(whole.as_deref(), Some(&message[..]));
        assert!(r.partial.is_empty());
    }

    /// Opens `datagrams` (fragments of message `id`) in the order given; the message once whole.
    fn reassemble<'a>(
        o: &mut Opener,
        r: &mut Reassembly,
        datagrams: impl Iterator<Item = &'a Vec<u8>>,
        id: u32,
    ) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut whole = None;
        for d in datagrams {
            let mut copy = d.clone();
            let opened = o.open(&mut copy, NOW, now).unwrap();
            let Body::Fragment {
                id: got,
                index,
                count,
                part,
            } = opened.body
            else {
                panic!("not a fragment")
            };
            assert_eq!(got, id);
            whole = r.add(opened.from, got, index, count, part, now);
        }
        whole
    }

    #[test]
    fn the_largest_message_travels_and_a_larger_one_is_refused() {
        let (mut s, mut o) = pair(&Key::generate());
        let message: Vec<u8> = (0..MAX_MESSAGE).map(|i| (i % 253) as u8).collect();
        let datagrams = s.seal(&message, 7, NOW).unwrap();
        assert_eq!(datagrams.len(), MAX_FRAGMENTS);
        let whole = reassemble(&mut o, &mut Reassembly::default(), datagrams.iter(), 7);
        assert_eq!(whole.map(|w| w == message), Some(true));
        assert_eq!(s.seal(&vec![0; MAX_MESSAGE + 1], 8, NOW), None);
    }

    #[test]
    fn unfinished_messages_are_bounded_in_bytes_oldest_dropped_first() {
        let mut r = Reassembly::default();
        let from: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let t0 = Instant::now();
        let part = vec![0u8; FRAGMENT_CHUNK];
        // Each message stops one fragment short of whole.
        let messages = MAX_PARTIAL_BYTES / ((MAX_FRAGMENTS - 1) * FRAGMENT_CHUNK) + 2;
        for id in 0..messages as u32 {
            let at = t0 + Duration::from_millis(u64::from(id));
            for index in 0..MAX_FRAGMENTS - 1 {
                assert_eq!(
                    r.add(from, id, index as u8, MAX_FRAGMENTS as u8, &part, at),
                    None
                );
            }
        }
        let held: usize = r.partial.values().map(Partial::bytes).sum();
        assert!(held <= MAX_PARTIAL_BYTES, "{held} bytes held");
        assert!(!r.partial.contains_key(&(from, 0)), "the oldest went first");
        let last = (messages - 1) as u32;
        let end = t0 + Duration::from_millis(u64::from(last));
        let done = r.add(
            from,
            last,
            (MAX_FRAGMENTS - 1) as u8,
            MAX_FRAGMENTS as u8,
            &part,
            end,
        );
        assert_eq!(done.map(|m| m.len()), Some(MAX_FRAGMENTS * FRAGMENT_CHUNK));
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
