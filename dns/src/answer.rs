//! Authoritative answers: one query message in, one response out, from a [`Snapshot`].
//!
//! Parsing and building go through hickory-proto. Behaviour, by RFC:
//! - answers carry AA; the question and answer owners keep the client's letter case, so
//!   0x20-randomising resolvers accept them (names are matched case-insensitively);
//! - an unknown name is NXDOMAIN and a known name without the asked type NOERROR/NODATA, both
//!   with the zone's SOA in authority, TTL min(zone TTL, SOA minimum) (RFC 2308 §3, RFC 8020);
//! - SOA and NS at the apex are answered; SRV answers carry their targets' addresses as
//!   additional records (RFC 2782);
//! - EDNS (RFC 6891): an OPT in the query gets one in the response, its payload size bounds the
//!   UDP answer; a version above 0 gets BADVERS;
//! - an answer too large for UDP drops additional records, then is truncated with TC set;
//! - a malformed query gets FORMERR when its header is readable, otherwise nothing; responses and
//!   other opcodes are never answered as queries (FORMERR is not sent to a response, NOTIMP to
//!   other opcodes), so two servers cannot loop.
//!
//! Names outside every served zone come back as [`Outcome::NotOurs`] for the forwarder.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::zone::{Lookup, NameRecords, Snapshot, ZoneInfo};

/// Largest UDP response this server sends, whatever the client offers (RFC 6891 §6.2.5; the
/// DNS flag day 2020 value avoids fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Payload size advertised in our OPT record.
const ADVERTISED_PAYLOAD: u16 = MAX_UDP_PAYLOAD;

/// How the query arrived, which bounds the response size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a query.
#[derive(Debug)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not in any served zone: forward (the parsed query is handed on).
    NotOurs(Box<Message>),
    /// Say nothing (unparseable, or not a query).
    Drop,
}

/// Answers one DNS message received over `transport`.
pub fn answer(snapshot: &Snapshot, query: &[u8], transport: Transport) -> Outcome {
    let mut out = Vec::with_capacity(512);
    if crate::fast_path::answer_fast(snapshot, query, &mut out, transport).is_some() {
        return Outcome::Reply(out);
    }
    answer_general(snapshot, query, transport)
}

/// The hickory-proto path: every query the fast path does not take.
pub fn answer_general(snapshot: &Snapshot, query: &[u8], transport: Transport) -> Outcome {
    let request = match Message::from_vec(query) {
        Ok(message) => message,
        Err(_) => return formerr_from_header(query),
    };
    if request.metadata.message_type != MessageType::Query {
        return Outcome::Drop;
    }
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.queries = request.queries.clone();
    if let Some(edns) = &request.edns {
        let mut ours = our_edns();
        // The DO bit is echoed (RFC 3225 §3); the zones are not signed, so no RRSIG follows.
        ours.set_dnssec_ok(edns.flags().dnssec_ok);
        response.set_edns(ours);
        if edns.version() > 0 {
            return reply(response, ResponseCode::BADVERS, &request, transport);
        }
    }
    if request.metadata.op_code != OpCode::Query {
        return reply(response, ResponseCode::NotImp, &request, transport);
    }
    let [question] = request.queries.as_slice() else {
        return reply(response, ResponseCode::FormErr, &request, transport);
    };
    if question.query_class() != DNSClass::IN && question.query_class() != DNSClass::ANY {
        return reply(response, ResponseCode::Refused, &request, transport);
    }

    let lower = question.name().to_lowercase().to_ascii();
    let lower = if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    };
    let Some(parts) = resolve(snapshot, &lower, question.name(), question.query_type()) else {
        return Outcome::NotOurs(Box::new(request));
    };
    response.answers = parts.answers;
    response.authorities = parts.authorities;
    response.additionals = parts.additionals;
    response.metadata.authoritative = true;
    response.metadata.recursion_available = parts.recursion_available;
    reply_cut(
        response,
        parts.rcode,
        &request,
        transport,
        parts.truncate_bit,
    )
}

/// The sections of an authoritative answer.
#[derive(Debug, Clone)]
pub struct Parts {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's RA and TC settings ([`ZoneInfo`]).
    pub recursion_available: bool,
    pub truncate_bit: bool,
}

/// What the snapshot answers for `lower` (lower-case, fully qualified) and `rtype`, with answer
/// owners written as `owner`; `None` if no served zone holds the name. The one place answers
/// are decided: both the general path and the prepared fast path use it.
pub fn resolve(snapshot: &Snapshot, lower: &str, owner: &Name, rtype: RecordType) -> Option<Parts> {
    let mut parts = Parts {
        rcode: ResponseCode::NoError,
        answers: Vec::new(),
        authorities: Vec::new(),
        additionals: Vec::new(),
        recursion_available: false,
        truncate_bit: true,
    };
    let zone = match snapshot.lookup(lower) {
        Lookup::NotAuthoritative => return None,
        Lookup::NxDomain { zone } => {
            parts.rcode = ResponseCode::NXDomain;
            zone
        }
        Lookup::Empty { zone, is_apex } => {
            if is_apex {
                add_apex_records(&mut parts, zone, owner, rtype);
            }
            zone
        }
        Lookup::Found {
            zone,
            records,
            is_apex,
        } => {
            if is_apex {
                add_apex_records(&mut parts, zone, owner, rtype);
            }
            add_name_records(&mut parts, snapshot, zone, &records, owner, rtype);
            zone
        }
    };
    if parts.answers.is_empty() {
        parts.authorities.push(soa_record(zone, true));
    }
    parts.recursion_available = zone.recursion_available;
    parts.truncate_bit = zone.truncate_bit;
    Some(parts)
}

fn our_edns() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(ADVERTISED_PAYLOAD);
    edns
}

/// Finishes `response` with `code` and encodes it within the transport's size limit.
fn reply(
    response: Message,
    code: ResponseCode,
    request: &Message,
    transport: Transport,
) -> Outcome {
    reply_cut(response, code, request, transport, true)
}

/// [`reply`], an answer too large cut as Mesos-DNS cuts it: additionals first, then answers
/// from the back until it fits, with TC set if `truncate_bit`.
fn reply_cut(
    mut response: Message,
    code: ResponseCode,
    request: &Message,
    transport: Transport,
    truncate_bit: bool,
) -> Outcome {
    response.metadata.response_code = code;
    if let Some(edns) = response.edns.as_mut() {
        // The high bits of extended codes (BADVERS = 16) travel in the OPT record.
        edns.set_rcode_high(code.high());
    }
    let limit = match transport {
        Transport::Udp => usize::from(request.max_payload().min(MAX_UDP_PAYLOAD)),
        Transport::Tcp => usize::from(u16::MAX),
    };
    let Ok(bytes) = response.to_vec() else {
        return Outcome::Drop;
    };
    if bytes.len() <= limit {
        return Outcome::Reply(bytes);
    }
    // Additional records are optional: drop them before the answers, without TC (RFC 2181
    // §9: nothing the client needs is missing).
    response.additionals.clear();
    if let Ok(bytes) = response.to_vec()
        && bytes.len() <= limit
    {
        return Outcome::Reply(bytes);
    }
    // The most answers that fit, found by halving (the encoding is what costs).
    response.metadata.truncation = truncate_bit;
    response.authorities.clear();
    let answers = std::mem::take(&mut response.answers);
    let fits = |response: &mut Message, n: usize| {
        response.answers = answers[..n].to_vec();
        response.to_vec().ok().filter(|b| b.len() <= limit)
    };
    let (mut low, mut high) = (0, answers.len());
    let Some(mut best) = fits(&mut response, 0) else {
        return Outcome::Drop;
    };
    while low < high {
        let mid = (low + high).div_ceil(2);
        match fits(&mut response, mid) {
            Some(bytes) => {
                best = bytes;
                low = mid;
            }
            None => high = mid - 1,
        }
    }
    Outcome::Reply(best)
}

/// FORMERR for a message hickory could not parse, if at least its header is there and it is a
/// query.
fn formerr_from_header(query: &[u8]) -> Outcome {
    let Some(header) = query.get(..12) else {
        return Outcome::Drop;
    };
    let is_response = header[2] & 0x80 != 0;
    if is_response {
        return Outcome::Drop;
    }
    let id = u16::from_be_bytes([header[0], header[1]]);
    let op_code = OpCode::from_u8((header[2] >> 3) & 0x0f);
    let mut response = Message::error_msg(id, op_code, ResponseCode::FormErr);
    response.metadata.recursion_desired = header[2] & 0x01 != 0;
    match response.to_vec() {
        Ok(bytes) => Outcome::Reply(bytes),
        Err(_) => Outcome::Drop,
    }
}

fn name(text: &str) -> Name {
    // Zone data is generated from validated labels; a name that still fails is skipped by
    // callers through the root name, which never matches anything useful.
    Name::from_ascii(text).unwrap_or_else(|_| Name::root())
}

/// The zone's SOA; `negative` gives it the negative-caching TTL.
pub(crate) fn soa_record(zone: &ZoneInfo, negative: bool) -> Record {
    let soa = &zone.soa;
    let ttl = if negative {
        zone.ttl.min(soa.minimum)
    } else {
        zone.ttl
    };
    let data = SOA::new(
        name(&soa.mname),
        name(&soa.rname),
        soa.serial,
        clamp_i32(soa.refresh),
        clamp_i32(soa.retry),
        clamp_i32(soa.expire),
        soa.minimum,
    );
    Record::from_rdata(name(&zone.origin), ttl, RData::SOA(data))
}

fn clamp_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn add_apex_records(parts: &mut Parts, zone: &ZoneInfo, owner: &Name, rtype: RecordType) {
    if matches!(rtype, RecordType::SOA | RecordType::ANY) {
        let mut soa = soa_record(zone, false);
        soa.name = owner.clone();
        parts.answers.push(soa);
    }
    if matches!(rtype, RecordType::NS | RecordType::ANY) {
        for ns in &zone.ns {
            parts.answers.push(Record::from_rdata(
                owner.clone(),
                zone.ttl,
                RData::NS(NS(name(ns))),
            ));
        }
    }
}

fn add_name_records(
    parts: &mut Parts,
    snapshot: &Snapshot,
    zone: &ZoneInfo,
    records: &NameRecords,
    owner: &Name,
    rtype: RecordType,
) {
    let any = rtype == RecordType::ANY;
    if any || rtype == RecordType::A {
        for &ip in &records.a {
            parts
                .answers
                .push(Record::from_rdata(owner.clone(), zone.ttl, RData::A(A(ip))));
        }
    }
    if any || rtype == RecordType::AAAA {
        for &ip in &records.aaaa {
            parts.answers.push(Record::from_rdata(
                owner.clone(),
                zone.ttl,
                RData::AAAA(AAAA(ip)),
            ));
        }
    }
    if any || rtype == RecordType::SRV {
        for srv in &records.srv {
            let target = name(&srv.target);
            let data = SRV::new(0, zone.srv_weight, srv.port, target.clone());
            parts.answers.push(Record::from_rdata(
                owner.clone(),
                zone.ttl,
                RData::SRV(data),
            ));
            // The target's addresses save the client a round trip.
            if let Some(target_records) = snapshot.records(&srv.target) {
                for ip in target_records
                    .a
                    .iter()
                    .map(|&ip| IpAddr::V4(ip))
                    .chain(target_records.aaaa.iter().map(|&ip| IpAddr::V6(ip)))
                {
                    let data = match ip {
                        IpAddr::V4(v4) => RData::A(A(v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                    };
                    parts
                        .additionals
                        .push(Record::from_rdata(target.clone(), zone.ttl, data));
                }
            }
        }
    }
}

/// A query for `qname`/`qtype`, as bytes (for tests, benchmarks and health checks).
pub fn build_query(id: u16, qname: &str, qtype: RecordType, edns: Option<(u8, u16)>) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(qname), qtype));
    if let Some((version, payload)) = edns {
        let mut e = Edns::new();
        e.set_version(version);
        e.set_max_payload(payload);
        message.set_edns(e);
    }
    message.to_vec().expect("a simple query encodes")
}
