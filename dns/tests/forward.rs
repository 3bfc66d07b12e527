//! Forwarding on loopback: dcnet's own authoritative server plays the upstreams, a bound UDP
//! socket that never answers plays the broken one.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dcnet_dns::answer::build_query;
use dcnet_dns::forward::{ForwardMetrics, Forwarder, ForwarderConfig};
use dcnet_dns::records::RecordSet;
use dcnet_dns::server::{DnsServer, Forward, ServerConfig, ServerMetrics};
use dcnet_dns::zone::{Snapshot, Soa, ZoneData};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

fn zone(origin: &str, name: &str, ip: &str) -> Snapshot {
    let mut records = RecordSet::default();
    records.add_ip(name, ip.parse().unwrap());
    zone_with(origin, records)
}

fn zone_with(origin: &str, records: RecordSet) -> Snapshot {
    Snapshot::build(vec![ZoneData {
        origin: origin.into(),
        soa: Soa {
            mname: format!("ns.{origin}"),
            rname: format!("root.{origin}"),
            serial: 1,
            refresh: 60,
            retry: 60,
            expire: 60,
            minimum: 30,
        },
        ns: vec![],
        ttl: 300,
        srv_weight: 1,
        records,
    }])
}

async fn server(snapshot: Snapshot, forward: Option<Arc<dyn Forward>>) -> DnsServer {
    let mut config = ServerConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    config.udp_workers = 1;
    DnsServer::start(
        config,
        Arc::new(ArcSwap::from_pointee(snapshot)),
        forward,
        Arc::new(ServerMetrics::default()),
    )
    .await
    .unwrap()
}

fn ask(server: SocketAddr, name: &str) -> (Message, Duration) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    socket
        .send_to(&build_query(0x5151, name, RecordType::A, None), server)
        .unwrap();
    let mut buf = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buf).expect("an answer within 5 s");
    (Message::from_vec(&buf[..len]).unwrap(), started.elapsed())
}

/// Asks `name` (A) with an OPT carrying the DO bit.
fn ask_dnssec_ok(server: SocketAddr, name: &str) -> Message {
    let mut query = Message::query();
    query.metadata.id = 0x5252;
    query.metadata.recursion_desired = true;
    query.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii(name).unwrap(),
        RecordType::A,
    ));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(true);
    query.set_edns(edns);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(&query.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buf).expect("an answer within 5 s");
    Message::from_vec(&buf[..len]).unwrap()
}

struct Setup {
    front: DnsServer,
    upstream: Option<DnsServer>,
    _corp: DnsServer,
    _blackhole: UdpSocket,
    metrics: Arc<ForwardMetrics>,
}

async fn setup(allowed: &str, blackhole_first: bool, timeout: Duration) -> Setup {
    let upstream = server(zone("example.", "www.example.", "192.0.2.10"), None).await;
    let corp = server(zone("corp.", "intranet.corp.", "192.0.2.20"), None).await;
    let blackhole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut upstreams = vec![upstream.local_addrs()[0]];
    if blackhole_first {
        upstreams.insert(0, blackhole.local_addr().unwrap());
    }
    let metrics = Arc::new(ForwardMetrics::default());
    let forwarder = Forwarder::new(
        ForwarderConfig {
            upstreams,
            zones: vec![("Corp".into(), vec![corp.local_addrs()[0]])],
            timeout,
            allowed: vec![allowed.parse().unwrap()],
            cache_entries: 100,
        },
        tokio::runtime::Handle::current(),
        metrics.clone(),
    );
    let front = server(
        zone("mesos.", "leader.mesos.", "10.0.0.1"),
        Some(Arc::new(forwarder)),
    )
    .await;
    Setup {
        front,
        upstream: Some(upstream),
        _corp: corp,
        _blackhole: blackhole,
        metrics,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_caches_and_routes_zones() {
    let mut s = setup("127.0.0.0/8", false, Duration::from_secs(2)).await;
    let front = s.front.local_addrs()[0];

    let (r, _) = blocking(move || ask(front, "www.example.")).await;
    assert_eq!(r.metadata.id, 0x5151);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.recursion_available);
    assert!(
        !r.metadata.authoritative,
        "the upstream's AA is not ours to pass on"
    );
    assert!(r.edns.is_none(), "no OPT for a query without one");
    assert_eq!(r.answers[0].data.to_string(), "192.0.2.10");
    assert_eq!(r.answers[0].ttl, 300);
    // Asked again with DO (answered from the cache): RA, no AA, DO echoed.
    let r = blocking(move || ask_dnssec_ok(front, "www.example.")).await;
    assert_eq!(r.metadata.id, 0x5252);
    assert!(r.metadata.recursion_available && !r.metadata.authoritative);
    assert!(
        r.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
        "DO echoed: {r:?}"
    );

    // Our own zone is still answered authoritatively, DO echoed there too.
    let (r, _) = blocking(move || ask(front, "leader.mesos.")).await;
    assert!(r.metadata.authoritative);
    let r = blocking(move || ask_dnssec_ok(front, "leader.mesos.")).await;
    assert!(r.metadata.authoritative);
    assert!(
        r.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
        "DO echoed: {r:?}"
    );

    // A per-zone forwarder, matched case-insensitively.
    let (r, _) = blocking(move || ask(front, "intranet.CORP.")).await;
    assert_eq!(r.answers[0].data.to_string(), "192.0.2.20");

    // With the upstream gone, the cached answer is still served, its TTL counted down.
    s.upstream.take().unwrap().shutdown().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (r, _) = blocking(move || ask(front, "www.example.")).await;
    assert_eq!(r.answers[0].data.to_string(), "192.0.2.10");
    assert!(
        r.answers[0].ttl < 300,
        "TTL {} not counted down",
        r.answers[0].ttl
    );
    assert_eq!(s.metrics.cache_hits.get(), 2, "the DO query and this one");

    s.front.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_does_not_delay_the_answer() {
    // The blackhole is first in the list; dual dispatch asks both at once.
    let s = setup("127.0.0.0/8", true, Duration::from_secs(3)).await;
    let front = s.front.local_addrs()[0];
    let (r, took) = blocking(move || ask(front, "www.example.")).await;
    assert_eq!(r.answers[0].data.to_string(), "192.0.2.10");
    assert!(
        took < Duration::from_secs(1),
        "answered after {took:?}: the silent upstream held it up"
    );
    s.front.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_when_no_upstream_answers_in_time() {
    let s = setup("127.0.0.0/8", true, Duration::from_millis(600)).await;
    // Stop the real upstream: only the silent one is left for example.
    let Setup {
        front,
        upstream,
        _corp,
        _blackhole,
        metrics,
    } = s;
    upstream.unwrap().shutdown().await;
    let addr = front.local_addrs()[0];
    let (r, took) = blocking(move || ask(addr, "other.example.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(metrics.servfail.get(), 1);
    front.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_outside_the_allowed_networks_are_refused() {
    let s = setup("10.0.0.0/8", false, Duration::from_secs(2)).await;
    let front = s.front.local_addrs()[0];
    let (r, _) = blocking(move || ask(front, "www.example.")).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(r.answers.is_empty());
    // Authoritative answers do not depend on the ACL.
    let (r, _) = blocking(move || ask(front, "leader.mesos.")).await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(s.metrics.refused.get(), 1);
    s.front.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_clusters_names_are_asked_under_its_domain_and_renamed_back() {
    // The linked cluster: its own `mesos.` with a task and its SRV record.
    let mut records = RecordSet::default();
    records.add_ip("web.marathon.mesos.", "9.0.7.2".parse().unwrap());
    records.add_ip("web-abcde-s1.marathon.mesos.", "9.0.7.2".parse().unwrap());
    records.add_srv(
        "_web._tcp.marathon.mesos.",
        "web-abcde-s1.marathon.mesos.",
        8080,
    );
    let remote = server(zone_with("mesos.", records), None).await;

    // This cluster: its own `mesos.`, the link `east` delegated to the forwarder, no upstreams.
    let metrics = Arc::new(ForwardMetrics::default());
    let forwarder = Forwarder::new(
        ForwarderConfig {
            upstreams: vec![],
            zones: vec![],
            timeout: Duration::from_secs(2),
            allowed: vec!["127.0.0.0/8".parse().unwrap()],
            cache_entries: 100,
        },
        tokio::runtime::Handle::current(),
        metrics.clone(),
    );
    forwarder.set_linked(vec![dcnet_dns::linked::LinkedZone {
        suffix: "east.mesos.".into(),
        remote: "mesos.".into(),
        servers: vec![remote.local_addrs()[0]],
    }]);
    let mut local = zone("mesos.", "web.marathon.mesos.", "9.0.0.9");
    local.set_delegated(&["east.mesos".into()]);
    let front = server(local, Some(Arc::new(forwarder))).await;
    let at = front.local_addrs()[0];

    let (a, _) = blocking(move || ask(at, "web.marathon.east.mesos.")).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    let ips: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(ips, ["9.0.7.2"], "the linked cluster's task, not ours");
    assert_eq!(a.answers[0].name.to_ascii(), "web.marathon.east.mesos.");
    assert_eq!(a.queries[0].name().to_ascii(), "web.marathon.east.mesos.");
    // Our own name is still ours.
    let (own, _) = blocking(move || ask(at, "web.marathon.mesos.")).await;
    assert_eq!(own.answers[0].data.to_string(), "9.0.0.9");
    // An SRV's target is renamed, so following it comes back here.
    let srv = blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
            .send_to(
                &build_query(7, "_web._tcp.marathon.east.mesos.", RecordType::SRV, None),
                at,
            )
            .unwrap();
        let mut buf = [0u8; 4096];
        let (len, _) = socket.recv_from(&mut buf).unwrap();
        Message::from_vec(&buf[..len]).unwrap()
    })
    .await;
    let target = match &srv.answers[0].data {
        hickory_proto::rr::RData::SRV(s) => s.target.to_ascii(),
        other => panic!("{other:?}"),
    };
    assert_eq!(target, "web-abcde-s1.marathon.east.mesos.");
    // A name the linked cluster does not have: its NXDOMAIN, renamed.
    let (nx, _) = blocking(move || ask(at, "nope.marathon.east.mesos.")).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    // Anything else, with no upstreams, is refused as before.
    let (other, _) = blocking(move || ask(at, "www.example.")).await;
    assert_eq!(other.metadata.response_code, ResponseCode::Refused);
    assert_eq!(metrics.forwarded.get(), 3);
}
