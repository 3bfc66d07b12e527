//! The prepared fast path must answer exactly as the hickory-proto path: every name of the
//! fixture's records, every prepared type, both letter cases, with and without EDNS, plus
//! names that do not exist and names of other zones.

use dcnet_dns::answer::{Outcome, Transport, answer_general, build_query};
use dcnet_dns::fast_path::answer_fast;
use dcnet_dns::mesos::{self, literal_only, state::IpSource, state::State};
use dcnet_dns::name::LabelSpec;
use dcnet_dns::records::{self, RecordSet, Settings};
use dcnet_dns::zone::{Snapshot, Soa, ZoneData};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

fn snapshot() -> Snapshot {
    let mut state: State =
        serde_json::from_str(include_str!("fixtures/mesos-dns-fake-state.json")).unwrap();
    state.leader = "master@10.0.0.1:5050".into();
    let cluster = mesos::cluster(
        &state,
        &[IpSource::Netinfo, IpSource::Mesos, IpSource::Host],
        &literal_only,
    );
    let settings = Settings {
        domain: "mesos".into(),
        spec: LabelSpec::Rfc1123,
        masters: vec![],
        mname: "ns1.mesos".into(),
        listen_ips: vec!["127.0.0.1".parse().unwrap()],
    };
    let mesos = records::generate(&cluster, &settings);
    let mut other = RecordSet::default();
    other.add_ip(
        "web.marathon.l4lb.thisdcos.directory.",
        "11.0.0.7".parse().unwrap(),
    );
    let soa = Soa {
        mname: "ns1.mesos".into(),
        rname: "root.ns1.mesos".into(),
        serial: 3,
        refresh: 60,
        retry: 600,
        expire: 86400,
        minimum: 30,
    };
    Snapshot::build(vec![
        ZoneData {
            origin: "mesos".into(),
            soa: soa.clone(),
            ns: vec![],
            ttl: 60,
            srv_weight: 2,
            records: mesos,
        },
        ZoneData {
            origin: "l4lb.thisdcos.directory".into(),
            soa,
            ns: vec![],
            ttl: 5,
            srv_weight: 1,
            records: other,
        },
    ])
}

/// A canonical view of a message for comparison: header fields and sorted sections.
fn view(bytes: &[u8]) -> String {
    let m = Message::from_vec(bytes).expect("decodes");
    let md = &m.metadata;
    let mut out = format!(
        "id={} qr={:?} op={:?} aa={} tc={} rd={} ra={} rcode={}\n",
        md.id,
        md.message_type,
        md.op_code,
        md.authoritative,
        md.truncation,
        md.recursion_desired,
        md.recursion_available,
        u16::from(md.response_code)
    );
    for q in &m.queries {
        out += &format!(
            "Q {} {} {}\n",
            q.name().to_ascii(),
            q.query_type(),
            q.query_class()
        );
    }
    for (section, records) in [
        ("AN", &m.answers),
        ("NS", &m.authorities),
        ("AR", &m.additionals),
    ] {
        let mut lines: Vec<String> = records
            .iter()
            .map(|r| {
                format!(
                    "{section} {} {} {} {}",
                    r.name.to_ascii(),
                    r.ttl,
                    r.record_type(),
                    r.data
                )
            })
            .collect();
        lines.sort();
        out += &lines.join("\n");
        out.push('\n');
    }
    out += &format!(
        "edns={:?}\n",
        m.edns
            .as_ref()
            .map(|e| (e.version(), e.max_payload(), e.flags().dnssec_ok))
    );
    out
}

fn mixed_case(name: &str, salt: usize) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if (i + salt).is_multiple_of(3) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[test]
fn fast_path_matches_the_general_path() {
    check_paths_agree(&snapshot());
}

fn check_paths_agree(snapshot: &Snapshot) {
    let mut names: Vec<String> = snapshot.existing_names().map(|(n, _)| n).collect();
    names.sort();
    names.extend(
        [
            "missing.marathon.mesos.",
            "x.y.z.mesos.",
            "nothing.l4lb.thisdcos.directory.",
        ]
        .map(String::from),
    );
    let mut fast_answers = 0;
    for (i, name) in names.iter().enumerate() {
        for rtype in [RecordType::A, RecordType::AAAA, RecordType::SRV] {
            for qname in [name.clone(), mixed_case(name, i)] {
                for (edns, dnssec_ok) in [
                    (None, false),
                    (Some((0, 1232)), false),
                    (Some((0, 4096)), false),
                    (Some((0, 1232)), true),
                ] {
                    let mut query = build_query(i as u16, &qname, rtype, edns);
                    if dnssec_ok {
                        // The OPT is the last record: its flags' top byte is 4 from the end.
                        let at = query.len() - 4;
                        query[at] |= 0x80;
                    }
                    let mut fast = Vec::new();
                    if answer_fast(snapshot, &query, &mut fast, Transport::Udp).is_none() {
                        // Allowed only when the answer does not fit: the general path truncates.
                        let Outcome::Reply(general) =
                            answer_general(snapshot, &query, Transport::Udp)
                        else {
                            panic!("{qname} {rtype}: neither path answered");
                        };
                        let m = Message::from_vec(&general).unwrap();
                        assert!(
                            m.metadata.truncation || m.additionals.is_empty(),
                            "{qname} {rtype}: fast path declined a plain answer"
                        );
                        continue;
                    }
                    let Outcome::Reply(general) = answer_general(snapshot, &query, Transport::Udp)
                    else {
                        panic!("{qname} {rtype}: general path did not reply");
                    };
                    assert_eq!(
                        view(&fast),
                        view(&general),
                        "{qname} {rtype} {edns:?} DO {dnssec_ok}"
                    );
                    if dnssec_ok {
                        assert!(view(&fast).contains("true)"), "DO echoed: {}", view(&fast));
                    }
                    fast_answers += 1;
                }
            }
        }
    }
    assert!(
        fast_answers > 500,
        "the fast path answered only {fast_answers} queries"
    );
}

#[test]
fn fast_path_declines_what_it_does_not_prepare() {
    let snapshot = snapshot();
    let mut out = Vec::new();
    // (description, query)
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "other zone",
            build_query(1, "example.com.", RecordType::A, None),
        ),
        (
            "SOA at the apex",
            build_query(2, "mesos.", RecordType::SOA, None),
        ),
        (
            "TXT",
            build_query(3, "leader.mesos.", RecordType::TXT, None),
        ),
        (
            "EDNS version 1",
            build_query(4, "leader.mesos.", RecordType::A, Some((1, 1232))),
        ),
        (
            "truncated",
            build_query(5, "leader.mesos.", RecordType::A, None)[..20].to_vec(),
        ),
        ("a response", {
            let mut q = build_query(6, "leader.mesos.", RecordType::A, None);
            q[2] |= 0x80;
            q
        }),
        ("trailing garbage", {
            let mut q = build_query(7, "leader.mesos.", RecordType::A, None);
            q.push(0);
            q
        }),
    ];
    for (what, query) in cases {
        assert!(
            answer_fast(&snapshot, &query, &mut out, Transport::Udp).is_none(),
            "{what}"
        );
    }
}
