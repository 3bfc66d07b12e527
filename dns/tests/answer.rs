//! The authoritative answer path, query bytes in and response bytes out, checked by decoding
//! the responses with hickory-proto.

use dcnet_dns::answer::{Outcome, Transport, answer, build_query};
use dcnet_dns::records::RecordSet;
use dcnet_dns::zone::{Snapshot, Soa, ZoneData};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

fn snapshot() -> Snapshot {
    let mut mesos = RecordSet::default();
    mesos.add_ip("web.marathon.mesos.", "10.0.0.1".parse().unwrap());
    mesos.add_ip("web.marathon.mesos.", "10.0.0.2".parse().unwrap());
    mesos.add_ip("web.marathon.mesos.", "fd00::1".parse().unwrap());
    mesos.add_ip(
        "web-abcde-s1.marathon.slave.mesos.",
        "192.168.0.1".parse().unwrap(),
    );
    mesos.add_srv(
        "_web._tcp.marathon.mesos.",
        "web-abcde-s1.marathon.slave.mesos.",
        31000,
    );
    // Enough addresses that the A answer overflows 512 bytes.
    for i in 0..60u8 {
        mesos.add_ip(
            "big.marathon.mesos.",
            std::net::Ipv4Addr::new(10, 1, 0, i).into(),
        );
    }
    Snapshot::build(vec![ZoneData {
        origin: "mesos".into(),
        soa: Soa {
            mname: "ns1.mesos".into(),
            rname: "root.ns1.mesos".into(),
            serial: 7,
            refresh: 60,
            retry: 600,
            expire: 86400,
            minimum: 30,
        },
        ns: vec![],
        ttl: 60,
        srv_weight: 1,
        records: mesos,
    }])
}

fn ask(query: &[u8], transport: Transport) -> Message {
    match answer(&snapshot(), query, transport) {
        Outcome::Reply(bytes) => Message::from_vec(&bytes).expect("response decodes"),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn query(name: &str, rtype: RecordType) -> Message {
    ask(&build_query(0x1234, name, rtype, None), Transport::Udp)
}

#[test]
fn answers_are_authoritative_and_echo_the_question() {
    let r = query("web.marathon.mesos.", RecordType::A);
    assert_eq!(r.metadata.id, 0x1234);
    assert_eq!(r.metadata.message_type, MessageType::Response);
    assert!(r.metadata.authoritative);
    assert!(r.metadata.recursion_desired, "RD is copied");
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let mut ips: Vec<String> = r.answers.iter().map(|a| a.data.to_string()).collect();
    ips.sort();
    assert_eq!(ips, vec!["10.0.0.1", "10.0.0.2"]);
    assert!(r.answers.iter().all(|a| a.ttl == 60));

    let r = query("web.marathon.mesos.", RecordType::AAAA);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].data.to_string(), "fd00::1");
}

#[test]
fn mixed_case_is_matched_and_echoed() {
    let r = query("WeB.MaRaThOn.MeSoS.", RecordType::A);
    assert_eq!(r.answers.len(), 2);
    assert_eq!(r.queries[0].name().to_ascii(), "WeB.MaRaThOn.MeSoS.");
    assert_eq!(r.answers[0].name.to_ascii(), "WeB.MaRaThOn.MeSoS.");
}

#[test]
fn negative_answers_carry_the_zone_soa() {
    // (name, type, rcode)
    let cases = [
        (
            "nope.marathon.mesos.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        (
            "x.web.marathon.mesos.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        // Known name, other type: NODATA.
        (
            "web.marathon.mesos.",
            RecordType::TXT,
            ResponseCode::NoError,
        ),
        (
            "web.marathon.mesos.",
            RecordType::SRV,
            ResponseCode::NoError,
        ),
        // Empty non-terminal: NODATA, not NXDOMAIN.
        ("marathon.mesos.", RecordType::A, ResponseCode::NoError),
        ("slave.mesos.", RecordType::A, ResponseCode::NoError),
        ("mesos.", RecordType::A, ResponseCode::NoError),
    ];
    for (name, rtype, rcode) in cases {
        let r = query(name, rtype);
        assert_eq!(r.metadata.response_code, rcode, "{name} {rtype}");
        assert!(r.metadata.authoritative, "{name}");
        assert!(r.answers.is_empty(), "{name}");
        assert_eq!(r.authorities.len(), 1, "{name}");
        let soa = &r.authorities[0];
        assert_eq!(
            soa.name.to_ascii(),
            "mesos.",
            "{name}: SOA owner is the apex"
        );
        assert_eq!(soa.ttl, 30, "{name}: negative TTL = min(ttl, minimum)");
        let RData::SOA(data) = &soa.data else {
            panic!("not an SOA")
        };
        assert_eq!(data.mname.to_ascii(), "ns1.mesos.");
        assert_eq!(data.serial, 7);
    }
}

#[test]
fn soa_and_ns_at_the_apex_are_answered() {
    let r = query("mesos.", RecordType::SOA);
    assert_eq!(r.answers.len(), 1);
    assert!(matches!(r.answers[0].data, RData::SOA(_)));
    assert_eq!(r.answers[0].ttl, 60);
    assert!(r.authorities.is_empty());
    let r = query("MESOS.", RecordType::NS);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].data.to_string(), "ns1.mesos.");
    assert_eq!(r.answers[0].name.to_ascii(), "MESOS.");
}

#[test]
fn srv_answers_carry_target_addresses() {
    let r = query("_web._tcp.marathon.mesos.", RecordType::SRV);
    assert_eq!(r.answers.len(), 1);
    let RData::SRV(srv) = &r.answers[0].data else {
        panic!("not SRV")
    };
    assert_eq!((srv.priority, srv.weight, srv.port), (0, 1, 31000));
    assert_eq!(srv.target.to_ascii(), "web-abcde-s1.marathon.slave.mesos.");
    assert_eq!(r.additionals.len(), 1);
    assert_eq!(
        r.additionals[0].name.to_ascii(),
        "web-abcde-s1.marathon.slave.mesos."
    );
    assert_eq!(r.additionals[0].data.to_string(), "192.168.0.1");
}

#[test]
fn udp_answers_fit_or_are_truncated_and_tcp_carries_all() {
    let plain = ask(
        &build_query(1, "big.marathon.mesos.", RecordType::A, None),
        Transport::Udp,
    );
    assert!(plain.metadata.truncation, "60 A records exceed 512 bytes");
    // As many as fit, as Mesos-DNS cuts them (the client retries over TCP for all).
    assert!(
        (20..60).contains(&plain.answers.len()),
        "{}",
        plain.answers.len()
    );
    assert!(!plain.metadata.recursion_available);

    let edns = ask(
        &build_query(2, "big.marathon.mesos.", RecordType::A, Some((0, 4096))),
        Transport::Udp,
    );
    assert!(!edns.metadata.truncation, "fits in the EDNS payload");
    assert_eq!(edns.answers.len(), 60);
    let opt = edns.edns.as_ref().expect("OPT echoed");
    assert_eq!(opt.max_payload(), 1232);

    let tcp = ask(
        &build_query(3, "big.marathon.mesos.", RecordType::A, None),
        Transport::Tcp,
    );
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 60);
}

#[test]
fn unknown_edns_version_is_badvers() {
    let r = ask(
        &build_query(4, "web.marathon.mesos.", RecordType::A, Some((1, 1232))),
        Transport::Udp,
    );
    // RCODE 16 is BADVERS (RFC 6891) and, for TSIG, BADSIG (RFC 8945); hickory decodes the
    // number as BADSIG, so compare the number.
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert!(r.answers.is_empty());
    assert!(r.edns.is_some());
}

#[test]
fn names_outside_our_zones_are_for_the_forwarder() {
    let query = build_query(5, "example.com.", RecordType::A, None);
    match answer(&snapshot(), &query, Transport::Udp) {
        Outcome::NotOurs(message) => {
            assert_eq!(message.queries[0].name().to_ascii(), "example.com.")
        }
        other => panic!("expected NotOurs, got {other:?}"),
    }
}

#[test]
fn malformed_input_gets_formerr_or_nothing() {
    // Too short for a header: nothing.
    assert!(matches!(
        answer(&snapshot(), &[1, 2, 3], Transport::Udp),
        Outcome::Drop
    ));
    // A header claiming a question that is not there: FORMERR with the id.
    let mut bad = build_query(0x4242, "web.marathon.mesos.", RecordType::A, None);
    bad.truncate(14);
    let Outcome::Reply(bytes) = answer(&snapshot(), &bad, Transport::Udp) else {
        panic!("no FORMERR")
    };
    let r = Message::from_vec(&bytes).unwrap();
    assert_eq!(
        (r.metadata.id, r.metadata.response_code),
        (0x4242, ResponseCode::FormErr)
    );
    // A response is never answered.
    let mut response = build_query(9, "web.marathon.mesos.", RecordType::A, None);
    response[2] |= 0x80;
    assert!(matches!(
        answer(&snapshot(), &response, Transport::Udp),
        Outcome::Drop
    ));
    // Other opcodes: NOTIMP.
    let mut notify = Message::from_vec(&build_query(10, "mesos.", RecordType::SOA, None)).unwrap();
    notify.metadata.op_code = OpCode::Notify;
    let r = ask(&notify.to_vec().unwrap(), Transport::Udp);
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
}

#[test]
fn random_bytes_never_panic() {
    // A cheap property check; the fuzz target goes further.
    let snapshot = snapshot();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for len in 0..600usize {
        let bytes: Vec<u8> = (0..len % 300)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = answer(&snapshot, &bytes, Transport::Udp);
    }
}

/// The fixture's zones with RA on and TC off, as a Mesos-DNS config with `RecurseOn: true` and
/// `SetTruncateBit: false` makes them.
fn recurse_on_no_truncate_bit() -> Snapshot {
    let base = snapshot();
    let zones = base
        .zones()
        .iter()
        .map(|z| dcnet_dns::zone::ZoneInfo {
            recursion_available: true,
            truncate_bit: false,
            ..z.clone()
        })
        .collect();
    base.apply(zones, [])
}

#[test]
fn recurse_on_sets_ra_and_set_truncate_bit_off_cuts_without_tc() {
    let snapshot = recurse_on_no_truncate_bit();
    let ask = |name: &str, rtype, edns, transport| {
        let query = build_query(9, name, rtype, edns);
        match answer(&snapshot, &query, transport) {
            Outcome::Reply(bytes) => {
                assert!(bytes.len() <= 512 || transport == Transport::Tcp);
                Message::from_vec(&bytes).expect("response decodes")
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    };
    // RA on every answer of the zone, from both paths: fast (plain A, NXDOMAIN) and general
    // (SOA, and the cut answer).
    for (name, rtype) in [
        ("web.marathon.mesos.", RecordType::A),
        ("nothing.marathon.mesos.", RecordType::A),
        ("mesos.", RecordType::SOA),
        ("big.marathon.mesos.", RecordType::A),
    ] {
        let r = ask(name, rtype, None, Transport::Udp);
        assert!(r.metadata.recursion_available, "{name} {rtype}");
        assert!(r.metadata.authoritative, "{name} {rtype}");
    }
    let cut = ask("big.marathon.mesos.", RecordType::A, None, Transport::Udp);
    assert!(!cut.metadata.truncation, "SetTruncateBit off: no TC");
    assert!(
        (20..60).contains(&cut.answers.len()),
        "{}",
        cut.answers.len()
    );
    let all = ask("big.marathon.mesos.", RecordType::A, None, Transport::Tcp);
    assert_eq!(all.answers.len(), 60);
}
