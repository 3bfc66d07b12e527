//! A property test over the query path (fast path and hickory path): 100,000 inputs, random
//! bytes and mutated valid queries (bit flips, truncations, splices, corrupted counts and label
//! lengths), deterministic so a failure reproduces. For every input: no panic, and any reply is
//! a well-formed DNS response carrying the query's ID.

use dcnet_dns::answer::{Outcome, Transport, answer, build_query};
use dcnet_dns::mesos::{self, literal_only, state::IpSource, state::State};
use dcnet_dns::name::LabelSpec;
use dcnet_dns::records::{self, Settings};
use dcnet_dns::zone::{Snapshot, Soa, ZoneData};
use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::RecordType;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn snapshot() -> Snapshot {
    let mut state: State =
        serde_json::from_str(include_str!("fixtures/mesos-dns-fake-state.json")).unwrap();
    state.leader = "master@10.0.0.1:5050".into();
    let cluster = mesos::cluster(
        &state,
        &[IpSource::Netinfo, IpSource::Docker, IpSource::Host],
        &literal_only,
    );
    let settings = Settings {
        domain: "mesos".into(),
        spec: LabelSpec::Rfc1123,
        masters: vec![],
        mname: "ns1.mesos".into(),
        listen_ips: vec![],
    };
    Snapshot::build(vec![ZoneData {
        origin: "mesos".into(),
        soa: Soa {
            mname: "ns1.mesos".into(),
            rname: "root.ns1.mesos".into(),
            serial: 1,
            refresh: 60,
            retry: 600,
            expire: 86400,
            minimum: 60,
        },
        ns: vec![],
        ttl: 60,
        srv_weight: 1,
        records: records::generate(&cluster, &settings),
    }])
}

fn seeds() -> Vec<Vec<u8>> {
    let names = [
        "liquor-store.marathon.mesos.",
        "_liquor-store._tcp.marathon.mesos.",
        "mesos.",
        "nope.mesos.",
        "example.com.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::SOA,
        RecordType::ANY,
        RecordType::TXT,
    ];
    let mut seeds = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for (j, rtype) in types.iter().enumerate() {
            let edns = [None, Some((0, 1232)), Some((1, 4096))][(i + j) % 3];
            seeds.push(build_query((i * 16 + j) as u16, name, *rtype, edns));
        }
    }
    seeds
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => bytes.truncate(rng.below(bytes.len() + 1)),
            2 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(other.len());
                bytes.extend_from_slice(&other[cut..]);
            }
            // Header counts: QD, AN, NS, AR.
            3 if bytes.len() >= 12 => {
                let field = 4 + 2 * rng.below(4);
                bytes[field + 1] = rng.next() as u8;
            }
            // A label length byte in the question, or a compression pointer where none belongs.
            4 if bytes.len() > 12 => {
                let i = 12 + rng.below(bytes.len() - 12);
                bytes[i] = [0, 63, 64, 0xC0, 0xFF][rng.below(5)];
            }
            5 => bytes.push(rng.next() as u8),
            _ => {
                let i = rng.below(bytes.len() + 1);
                bytes.insert(i, rng.next() as u8);
            }
        }
    }
    bytes
}

#[test]
fn the_query_path_survives_hostile_input() {
    let snapshot = snapshot();
    let seeds = seeds();
    let mut rng = Rng(0x0dcb_a987_6543_2101);
    let (mut replies, mut dropped, mut not_ours) = (0, 0, 0);
    for case in 0..100_000 {
        let input: Vec<u8> = if case % 4 == 0 {
            (0..rng.below(80)).map(|_| rng.next() as u8).collect()
        } else {
            mutate(&mut rng, &seeds)
        };
        let transport = if case % 2 == 0 {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        match answer(&snapshot, &input, transport) {
            Outcome::Reply(bytes) => {
                replies += 1;
                let reply = Message::from_vec(&bytes).unwrap_or_else(|e| {
                    panic!("case {case}: reply does not decode ({e}): input {input:02x?}")
                });
                assert_eq!(
                    reply.metadata.message_type,
                    MessageType::Response,
                    "case {case}"
                );
                assert_eq!(
                    reply.metadata.id.to_be_bytes(),
                    input[..2],
                    "case {case}: reply ID"
                );
                if transport == Transport::Udp {
                    assert!(
                        bytes.len() <= 4096,
                        "case {case}: {} bytes over UDP",
                        bytes.len()
                    );
                }
            }
            Outcome::Drop => dropped += 1,
            Outcome::NotOurs(_) => not_ours += 1,
        }
    }
    // The mix must exercise every outcome, or the test proves little.
    assert!(
        replies > 10_000 && dropped > 1_000 && not_ours > 100,
        "replies {replies}, dropped {dropped}, not ours {not_ours}"
    );
}
