//! The DNS server on loopback: UDP and pipelined TCP, snapshot swaps, refusal of a taken port,
//! and the TCP idle timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dcnet_dns::answer::build_query;
use dcnet_dns::records::RecordSet;
use dcnet_dns::server::{DnsServer, ServerConfig, ServerMetrics};
use dcnet_dns::zone::{Snapshot, Soa, ZoneData};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

fn snapshot(ip: &str) -> Snapshot {
    let mut records = RecordSet::default();
    records.add_ip("web.marathon.mesos.", ip.parse().unwrap());
    Snapshot::build(vec![ZoneData {
        origin: "mesos.".into(),
        soa: Soa {
            mname: "ns1.mesos.".into(),
            rname: "root.ns1.mesos.".into(),
            serial: 1,
            refresh: 60,
            retry: 600,
            expire: 86400,
            minimum: 60,
        },
        ns: vec![],
        ttl: 60,
        srv_weight: 1,
        records,
    }])
}

async fn start(shared: &Arc<ArcSwap<Snapshot>>) -> DnsServer {
    let mut config = ServerConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    config.udp_workers = 2;
    DnsServer::start(
        config,
        shared.clone(),
        None,
        Arc::new(ServerMetrics::default()),
    )
    .await
    .expect("server starts")
}

fn udp_ask(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket
        .send_to(&build_query(7, name, rtype, None), server)
        .unwrap();
    let mut buf = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buf).expect("a UDP answer");
    Message::from_vec(&buf[..len]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_pipelined_tcp_answer_and_follow_snapshot_swaps() {
    let shared = Arc::new(ArcSwap::from_pointee(snapshot("10.0.0.1")));
    let server = start(&shared).await;
    let addr = server.local_addrs()[0];

    let r =
        tokio::task::spawn_blocking(move || udp_ask(addr, "web.marathon.mesos.", RecordType::A))
            .await
            .unwrap();
    assert_eq!(r.answers[0].data.to_string(), "10.0.0.1");

    // Three queries in one write; three answers come back on the same connection.
    let answers = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut batch = Vec::new();
        for id in [1u16, 2, 3] {
            let q = build_query(id, "web.marathon.mesos.", RecordType::A, None);
            batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
            batch.extend_from_slice(&q);
        }
        stream.write_all(&batch).unwrap();
        (0..3)
            .map(|_| {
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).unwrap();
                let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                stream.read_exact(&mut buf).unwrap();
                Message::from_vec(&buf).unwrap()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let mut ids: Vec<u16> = answers.iter().map(|m| m.metadata.id).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3]);
    assert!(
        answers
            .iter()
            .all(|m| m.answers[0].data.to_string() == "10.0.0.1")
    );

    // A new snapshot changes every answer at once.
    shared.store(Arc::new(snapshot("10.0.0.2")));
    let r =
        tokio::task::spawn_blocking(move || udp_ask(addr, "web.marathon.mesos.", RecordType::A))
            .await
            .unwrap();
    assert_eq!(r.answers[0].data.to_string(), "10.0.0.2");

    // Without a forwarder, other names are refused.
    let r = tokio::task::spawn_blocking(move || udp_ask(addr, "example.com.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);

    // The port is taken: a second server must refuse to start rather than share it.
    let mut config = ServerConfig::new(vec![addr]);
    config.udp_workers = 1;
    let err = DnsServer::start(
        config,
        shared.clone(),
        None,
        Arc::new(ServerMetrics::default()),
    )
    .await
    .err()
    .expect("second server refused");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");

    server.shutdown().await;
}

/// Sends one query over `stream` and reads its answer.
fn tcp_ask(stream: &mut TcpStream, id: u16) -> Message {
    let query = build_query(id, "web.marathon.mesos", RecordType::A, None);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).unwrap();
    Message::from_vec(&answer).unwrap()
}

/// Whether the server closed `stream` (EOF) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_are_closed_and_busy_ones_kept() {
    let shared = Arc::new(ArcSwap::from_pointee(snapshot("10.0.0.1")));
    let mut config = ServerConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
    config.udp_workers = 1;
    config.tcp_idle = Duration::from_millis(300);
    let server = DnsServer::start(
        config,
        shared.clone(),
        None,
        Arc::new(ServerMetrics::default()),
    )
    .await
    .expect("server starts");
    let addr = server.local_addrs()[0];

    tokio::task::spawn_blocking(move || {
        // A client that asks every 100 ms outlives the 300 ms idle timeout many times over.
        let mut busy = TcpStream::connect(addr).unwrap();
        for id in 0..10 {
            assert_eq!(tcp_ask(&mut busy, id).metadata.id, id);
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            tcp_ask(&mut busy, 99).metadata.id,
            99,
            "still open after 1 s of queries"
        );
        // Silent after an answer: closed after the idle timeout, not before.
        let mut idle = TcpStream::connect(addr).unwrap();
        tcp_ask(&mut idle, 1);
        assert!(
            !closed_within(&mut idle, Duration::from_millis(150)),
            "closed before the idle timeout"
        );
        assert!(
            closed_within(&mut idle, Duration::from_secs(2)),
            "an idle connection stays open"
        );
        // Half a query (the length, then nothing): closed too, the slow-loris case.
        let mut partial = TcpStream::connect(addr).unwrap();
        partial.write_all(&[0, 40, 0]).unwrap();
        assert!(
            closed_within(&mut partial, Duration::from_secs(2)),
            "a half-sent query holds the connection"
        );
    })
    .await
    .unwrap();
    server.shutdown().await;
}

/// Connects to `addr` from the local address `from` (any port).
fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: SocketAddr = format!("{from}:0").parse().map_err(std::io::Error::other)?;
    socket.bind(&local.into())?;
    socket.connect(&addr.into())?;
    Ok(socket.into())
}

/// 1,040 clients that connect and send only a length prefix, or nothing, from 20 addresses
/// (loopback only): UDP keeps answering, one client address cannot take more than its share,
/// and a new well-behaved TCP client is answered within 3 s (idle connections are cut short
/// while the server is pressed; a stalled message gets 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_clients_cannot_keep_others_out() {
    use dcnet_dns::server::tcp::{MAX_PER_CLIENT, MESSAGE_TIMEOUT};
    let shared = Arc::new(ArcSwap::from_pointee(snapshot("10.0.0.1")));
    let server = start(&shared).await;
    let addr = server.local_addrs()[0];
    tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        for i in 0..1040 {
            let from = format!("127.0.1.{}", 10 + i % 20);
            let Ok(mut stream) = connect_from(&from, addr) else {
                continue;
            };
            if i % 2 == 0 {
                let _ = stream.write_all(&[0, 40]);
            }
            held.push(stream);
        }
        // One address gets at most its share: the rest of its connections are closed at once.
        let mut mine = Vec::new();
        for _ in 0..MAX_PER_CLIENT + 8 {
            if let Ok(s) = connect_from("127.0.1.99", addr) {
                mine.push(s);
            }
        }
        let closed = mine[MAX_PER_CLIENT..]
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_millis(300)))
            .filter(|closed| *closed)
            .count();
        assert_eq!(
            closed, 8,
            "one client's connections past its share were not refused"
        );

        // UDP is untouched.
        let r = udp_ask(addr, "web.marathon.mesos.", RecordType::A);
        assert_eq!(r.answers[0].data.to_string(), "10.0.0.1");
        // A new, well-behaved client gets in and is answered.
        let started = std::time::Instant::now();
        let answered = loop {
            if let Ok(mut stream) = connect_from("127.0.2.1", addr) {
                stream
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let query = build_query(5, "web.marathon.mesos", RecordType::A, None);
                let mut framed = (query.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&query);
                let mut len = [0u8; 2];
                if stream.write_all(&framed).is_ok() && stream.read_exact(&mut len).is_ok() {
                    break started.elapsed();
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "no answer over TCP within 3 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        eprintln!("a new TCP client was answered after {answered:?} among 1,040 idle ones");
        // The prefix-only clients were cut after the message timeout.
        let cut = held
            .iter_mut()
            .step_by(2)
            .take(20)
            .map(|s| closed_within(s, MESSAGE_TIMEOUT * 2))
            .filter(|closed| *closed)
            .count();
        assert_eq!(cut, 20, "stalled messages hold their connections");
    })
    .await
    .unwrap();
    server.shutdown().await;
}

/// A server on `0.0.0.0` answers a query from the address it was sent to, even when routing
/// would pick another source (here: 127.0.0.3 asked, the loopback route's source is
/// 127.0.0.1). A connected client, as most resolvers use, drops an answer from elsewhere.
/// Runs in a network namespace of its own thread (no route out), made and gone with it.
#[test]
fn a_wildcard_server_answers_from_the_address_asked() {
    let answer = std::thread::spawn(|| -> Result<Message, String> {
        // SAFETY: unshare only moves this thread into a new, empty network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let up = std::process::Command::new("nsenter")
            .arg(format!(
                "--net=/proc/{}/task/{tid}/ns/net",
                std::process::id()
            ))
            .args(["ip", "link", "set", "lo", "up"])
            .status()
            .map_err(|e| e.to_string())?;
        if !up.success() {
            return Err("cannot bring lo up".into());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let shared = Arc::new(ArcSwap::from_pointee(snapshot("10.0.0.1")));
        let server = runtime.block_on(async {
            let mut config = ServerConfig::new(vec!["0.0.0.0:0".parse().unwrap()]);
            config.udp_workers = 1;
            DnsServer::start(config, shared, None, Arc::new(ServerMetrics::default()))
                .await
                .map_err(|e| e.to_string())
        })?;
        let port = server.local_addrs()[0].port();
        let socket = UdpSocket::bind("127.0.0.2:0").map_err(|e| e.to_string())?;
        socket
            .connect(("127.0.0.3", port))
            .map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        socket
            .send(&build_query(9, "web.marathon.mesos.", RecordType::A, None))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let len = socket
            .recv(&mut buf)
            .map_err(|e| format!("no answer from 127.0.0.3: {e}"))?;
        runtime.block_on(server.shutdown());
        Message::from_vec(&buf[..len]).map_err(|e| e.to_string())
    })
    .join()
    .expect("the namespace thread");
    let answer = answer.unwrap();
    assert_eq!(answer.answers[0].data.to_string(), "10.0.0.1");
}
