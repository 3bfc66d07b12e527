//! The fast path: the common queries answered in wire form straight from the snapshot.
//!
//! The common queries (A, AAAA or SRV, class IN, one question, at most an OPT record) are
//! answered without parsing into messages: [`answer_fast`] reads the header and question by
//! hand, looks the lower-cased name up, and writes the response as the query's header and
//! question (copied, so the client's letter case is kept) followed by the answer written from
//! the name's records: addresses as fixed-size records owned by a pointer to the question, SRV
//! records with each target name written once and pointed at by the target's addresses in the
//! additional section. The profile of the hickory path showed its parse and encode, not the
//! kernel, to be what separated it from Knot. Nothing is prepared per name, so a million names
//! cost their records only (see [`crate::zone`]).
//!
//! Negative answers (NODATA, NXDOMAIN, with the zone's SOA) are the same for every name of a
//! zone: they are prepared once per snapshot, encoded by hickory-proto without compression.
//!
//! Anything else returns `None` and takes the hickory path in [`crate::answer`], which also
//! handles truncation; `tests/fast_path.rs` checks both paths give the same answers.

use hickory_proto::rr::{RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use crate::answer::{MAX_UDP_PAYLOAD, Transport, soa_record};
use crate::records::SrvTarget;
use crate::zone::{Snapshot, ZoneInfo};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u8 = 3;

/// One prepared response body: the counts and bytes of its answer, authority and additional
/// sections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sections {
    pub rcode: u8,
    pub answers: u16,
    pub authorities: u16,
    pub additionals: u16,
    pub bytes: Box<[u8]>,
}

/// What every name of a zone shares: its negative answers (the SOA owner is the apex, so the
/// bytes do not depend on the question).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedZone {
    origin: Box<[u8]>,
    nodata: Sections,
    nxdomain: Sections,
}

/// The negative answers of `zone`; `None` if they cannot be encoded (the general path then
/// answers).
pub(crate) fn prepare_zone(zone: &ZoneInfo) -> Option<PreparedZone> {
    let soa = [soa_record(zone, true)];
    Some(PreparedZone {
        origin: wire_name(&zone.origin)?,
        nodata: encode_sections(0, &[], &soa, &[], 0, false)?,
        nxdomain: encode_sections(RCODE_NXDOMAIN, &[], &soa, &[], 0, false)?,
    })
}

/// Encodes `records` (answers, authorities, additionals) as prepared sections for a question
/// name of `qname_len` wire bytes. Answer owners become a pointer to the question. With
/// `compress` false names are written whole, so the bytes fit any question.
pub fn encode_sections(
    rcode: u8,
    answers: &[Record],
    authorities: &[Record],
    additionals: &[Record],
    qname_len: usize,
    compress: bool,
) -> Option<Sections> {
    // The sections start after the header (12), the question name, its type and class (4).
    // hickory writes at that index of the buffer, so compression pointers come out absolute;
    // the placeholder bytes before it hold no names, so nothing can point into them.
    let offset = 12 + qname_len + 4;
    let mut buf = vec![0u8; offset];
    {
        let mut encoder = BinEncoder::with_offset(&mut buf, u32::try_from(offset).ok()?);
        if !compress {
            encoder.set_name_encoding(NameEncoding::Uncompressed);
        }
        for record in answers {
            // Owner: a pointer to the question name at offset 12 (RFC 1035 §4.1.4).
            encoder.emit_u16(0xC00C).ok()?;
            encoder.emit_u16(u16::from(record.record_type())).ok()?;
            encoder.emit_u16(u16::from(record.dns_class)).ok()?;
            encoder.emit_u32(record.ttl).ok()?;
            emit_rdata(&mut encoder, &record.data)?;
        }
        for record in authorities.iter().chain(additionals) {
            record.emit(&mut encoder).ok()?;
        }
    }
    buf.drain(..offset);
    Some(Sections {
        rcode,
        answers: u16::try_from(answers.len()).ok()?,
        authorities: u16::try_from(authorities.len()).ok()?,
        additionals: u16::try_from(additionals.len()).ok()?,
        bytes: buf.into_boxed_slice(),
    })
}

fn emit_rdata(encoder: &mut BinEncoder<'_>, data: &RData) -> Option<()> {
    // RDLENGTH first, filled in once the data is written.
    let place = encoder.place::<u16>().ok()?;
    data.emit(encoder).ok()?;
    let len = u16::try_from(encoder.len_since_place(&place)).ok()?;
    place.replace(encoder, len).ok()
}

/// The lower-case wire form of a fully qualified name in presentation form (no escapes: zone
/// names are generated from sanitised labels). `None` for an empty label or one over 63 bytes.
pub(crate) fn wire_name(name: &str) -> Option<Box<[u8]>> {
    let mut buf = Vec::with_capacity(name.len() + 2);
    write_name(name, &mut buf)?;
    Some(buf.into_boxed_slice())
}

/// The answer to a plain query, written into `out`, or `None` for the general path.
pub fn answer_fast(
    snapshot: &Snapshot,
    query: &[u8],
    out: &mut Vec<u8>,
    transport: Transport,
) -> Option<()> {
    let header = query.get(..12)?;
    // QR = 0 and OPCODE = QUERY, one question, nothing but possibly an OPT after it.
    if header[2] & 0xF8 != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    // The question name, lower-cased into a key; no compression in a question.
    let mut key = [0u8; 255];
    let mut pos = 12;
    let mut key_len = 0;
    loop {
        let len = usize::from(*query.get(pos)?);
        if len == 0 {
            break;
        }
        if len > 63 || key_len + 1 + len >= key.len() {
            return None;
        }
        let label = query.get(pos + 1..pos + 1 + len)?;
        key[key_len] = len as u8;
        for (k, &b) in key[key_len + 1..key_len + 1 + len].iter_mut().zip(label) {
            *k = b.to_ascii_lowercase();
        }
        key_len += 1 + len;
        pos += 1 + len;
    }
    key[key_len] = 0;
    key_len += 1;
    pos += 1;
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*query.get(pos + 2)?, *query.get(pos + 3)?]);
    let question_end = pos + 4;
    if qclass != CLASS_IN || !matches!(qtype, TYPE_A | TYPE_AAAA | TYPE_SRV) {
        return None;
    }

    // EDNS: a version-0 OPT without anything surprising; we echo our own.
    let has_edns = count(10) == 1;
    let mut udp_limit = 512;
    let mut dnssec_ok = false;
    if has_edns {
        let opt = query.get(question_end..question_end + 11)?;
        let rr_type = u16::from_be_bytes([opt[1], opt[2]]);
        let version = opt[6];
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if opt[0] != 0
            || rr_type != TYPE_OPT
            || version != 0
            || question_end + 11 + rdlen != query.len()
        {
            return None;
        }
        udp_limit = usize::from(u16::from_be_bytes([opt[3], opt[4]]).clamp(512, MAX_UDP_PAYLOAD));
        // The DO bit, the top bit of the OPT's flags: echoed (RFC 3225 §3).
        dnssec_ok = opt[7] & 0x80 != 0;
    } else if question_end != query.len() {
        return None;
    }
    let limit = match transport {
        Transport::Udp => udp_limit,
        Transport::Tcp => usize::from(u16::MAX),
    };

    let key = &key[..key_len];
    let mut reply = Reply {
        query,
        question_end,
        has_edns,
        dnssec_ok,
        limit,
        recursion_available: false,
    };
    // A linked cluster's names: the general path forwards them.
    if snapshot.is_delegated_wire(key) {
        return None;
    }
    let nodata = |zone: usize| Some(&snapshot.negative().get(zone)?.as_ref()?.nodata);
    let sections = match snapshot.entry(key).filter(|(_, e)| e.exists()) {
        Some((zone, entry)) => {
            reply.recursion_available = snapshot.zones().get(zone)?.recursion_available;
            match qtype {
                TYPE_A if !entry.a().is_empty() => {
                    let ttl = snapshot.zones().get(zone)?.ttl;
                    let a = entry.a().iter().map(|ip| ip.octets());
                    return reply.addresses(ttl, TYPE_A, a, out);
                }
                TYPE_AAAA if !entry.aaaa().is_empty() => {
                    let ttl = snapshot.zones().get(zone)?.ttl;
                    let aaaa = entry.aaaa().iter().map(|ip| ip.octets());
                    return reply.addresses(ttl, TYPE_AAAA, aaaa, out);
                }
                TYPE_SRV if !entry.srv().is_empty() => {
                    let zone = snapshot.zones().get(zone)?;
                    return reply.srv(snapshot, zone, entry.srv(), out);
                }
                _ => nodata(zone)?,
            }
        }
        // Not an existing name: NXDOMAIN if inside a zone, else the general path (forwarding).
        // Zones are most specific first; one whose answers could not be prepared sends every
        // such name to the general path.
        None => {
            let mut zones = snapshot.negative().iter().zip(snapshot.zones());
            loop {
                let (zone, info) = zones.next()?;
                let zone = zone.as_ref()?;
                if is_label_suffix(key, &zone.origin) {
                    reply.recursion_available = info.recursion_available;
                    break &zone.nxdomain;
                }
            }
        }
    };
    let counts = [sections.answers, sections.authorities, sections.additionals];
    reply.header(sections.rcode, counts, out);
    out.extend_from_slice(&sections.bytes);
    reply.finish(out)
}

/// What a response to a query is written from: its header and question are echoed.
struct Reply<'q> {
    query: &'q [u8],
    question_end: usize,
    has_edns: bool,
    /// The query's OPT had the DO bit.
    dnssec_ok: bool,
    /// The most bytes the response may have.
    limit: usize,
    /// RA, as the answering zone says.
    recursion_available: bool,
}

impl Reply<'_> {
    /// The response header (with `counts` of answers, authorities and additionals, the OPT
    /// counted in) and the query's question, into `out`.
    fn header(&self, rcode: u8, [answers, authorities, additionals]: [u16; 3], out: &mut Vec<u8>) {
        let query = self.query;
        out.clear();
        out.extend_from_slice(&query[..2]);
        // QR, AA, and the client's RD; RA as the zone says; Z, AD, CD clear; the rcode.
        out.push(0x84 | (query[2] & 0x01));
        out.push(rcode | if self.recursion_available { 0x80 } else { 0 });
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&answers.to_be_bytes());
        out.extend_from_slice(&authorities.to_be_bytes());
        out.extend_from_slice(&(additionals + u16::from(self.has_edns)).to_be_bytes());
        out.extend_from_slice(&query[12..self.question_end]);
    }

    /// An answer of addresses of type `rtype`, each owned by the question name.
    fn addresses<const N: usize>(
        &self,
        ttl: u32,
        rtype: u16,
        addresses: impl ExactSizeIterator<Item = [u8; N]>,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let count = u16::try_from(addresses.len()).ok()?;
        self.header(0, [count, 0, 0], out);
        for address in addresses {
            // Owner: a pointer to the question name at offset 12 (RFC 1035 §4.1.4).
            record_head(out, 0xC00C, rtype, ttl);
            out.extend_from_slice(&(N as u16).to_be_bytes());
            out.extend_from_slice(&address);
        }
        self.finish(out)
    }

    /// An SRV answer (priority 0, the zone's weight) with each target's addresses as
    /// additionals, as the general path gives them: every target name written once, in the
    /// answer, and pointed at by its additionals.
    fn srv(
        &self,
        snapshot: &Snapshot,
        zone: &ZoneInfo,
        targets: &[SrvTarget],
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let count = u16::try_from(targets.len()).ok()?;
        self.header(0, [count, 0, 0], out);
        let first = out.len();
        for target in targets {
            record_head(out, 0xC00C, TYPE_SRV, zone.ttl);
            let rdlength_at = out.len();
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&0u16.to_be_bytes());
            out.extend_from_slice(&zone.srv_weight.to_be_bytes());
            out.extend_from_slice(&target.port.to_be_bytes());
            write_name(&target.target, out)?;
            let rdlength = u16::try_from(out.len() - rdlength_at - 2).ok()?;
            out[rdlength_at..rdlength_at + 2].copy_from_slice(&rdlength.to_be_bytes());
        }
        let mut additionals: u16 = 0;
        let mut key = [0u8; 255];
        // Each answer: owner pointer, type, class, TTL, RDLENGTH (12 bytes), then priority,
        // weight, port (6) and the target name to the end of its RDATA.
        let mut record = first;
        for _ in targets {
            let rdlength = usize::from(u16::from_be_bytes([out[record + 10], out[record + 11]]));
            let (start, end) = (record + 18, record + 12 + rdlength);
            record = end;
            // Compression pointers reach the first 16 KiB only.
            let pointer = 0xC000 | u16::try_from(start).ok().filter(|&p| p < 0x4000)?;
            let key = &mut key[..end - start];
            key.copy_from_slice(&out[start..end]);
            let Some((_, entry)) = snapshot.entry(key) else {
                continue;
            };
            for ip in entry.a() {
                record_head(out, pointer, TYPE_A, zone.ttl);
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
            for ip in entry.aaaa() {
                record_head(out, pointer, TYPE_AAAA, zone.ttl);
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
            let added = entry.a().len() + entry.aaaa().len();
            additionals = additionals.checked_add(u16::try_from(added).ok()?)?;
        }
        let with_opt = additionals.checked_add(u16::from(self.has_edns))?;
        out[10..12].copy_from_slice(&with_opt.to_be_bytes());
        self.finish(out)
    }

    /// Appends our OPT if the query had one; `None` when the response exceeds the limit (the
    /// general path truncates properly).
    fn finish(&self, out: &mut Vec<u8>) -> Option<()> {
        if self.has_edns {
            // OPT: root owner, type 41, our payload size, extended rcode 0, version 0, the
            // query's DO bit as the only flag, no options (RFC 6891 §6.1.2, RFC 3225 §3).
            out.extend_from_slice(&[0, 0, 41]);
            out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
            let flags = if self.dnssec_ok { 0x80 } else { 0 };
            out.extend_from_slice(&[0, 0, flags, 0, 0, 0]);
        }
        (out.len() <= self.limit).then_some(())
    }
}

/// A record's owner (a compression pointer), type, class IN and TTL.
fn record_head(out: &mut Vec<u8>, owner: u16, rtype: u16, ttl: u32) {
    out.extend_from_slice(&owner.to_be_bytes());
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
}

/// Writes `name` (fully qualified or not) in wire form, lower-case, uncompressed; `None` if it
/// has an empty or overlong label, or is too long.
fn write_name(name: &str, out: &mut Vec<u8>) -> Option<()> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let start = out.len();
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    (out.len() - start <= 255).then_some(())
}

/// Whether wire name `name` is `origin` or lies below it, at a label boundary.
pub(crate) fn is_label_suffix(name: &[u8], origin: &[u8]) -> bool {
    if origin.len() > name.len() {
        return false;
    }
    let start = name.len() - origin.len();
    if name[start..] != *origin {
        return false;
    }
    // Walk the labels to check that `start` is a label boundary.
    let mut pos = 0;
    while pos < start {
        pos += 1 + usize::from(name[pos]);
    }
    pos == start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_suffixes() {
        let name = wire_name("a.mesos.").unwrap();
        let origin = wire_name("mesos.").unwrap();
        assert!(is_label_suffix(&name, &origin));
        assert!(is_label_suffix(&origin, &origin));
        let fake = wire_name("amesos.").unwrap();
        assert!(!is_label_suffix(&fake, &origin));
        // "xmesos" ends with the bytes of a 5-letter label "mesos" only by accident.
        let tricky = wire_name("b.xmesos.").unwrap();
        assert!(!is_label_suffix(&tricky, &origin));
    }

    #[test]
    fn wire_names_are_lower_case() {
        assert_eq!(&*wire_name("Ab.C.").unwrap(), b"\x02ab\x01c\x00");
    }
}
