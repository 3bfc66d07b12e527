//! The eBPF datapath against real sockets: programs loaded with aya and attached to a cgroup
//! made for each test, clients (`dcnet-lb-client`) started inside that cgroup and inside a
//! namespace of the test's own with no route out, backends listening on loopback addresses of
//! that namespace. A connect that is not translated fails locally (the VIP is unroutable).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dcnet_lb::datapath::Change;
use dcnet_lb::{Backend, Datapath, Protocol, Vip};
use dcnet_tests::cluster::require_root;
use dcnet_tests::lb::{self, Line};
use dcnet_tests::{TestCgroup, TestNamespace};

struct Setup {
    ns: TestNamespace,
    cgroup: TestCgroup,
    datapath: Datapath,
}

impl Setup {
    fn new(label: &str) -> Self {
        require_root().unwrap();
        let ns = TestNamespace::create(label).unwrap();
        let cgroup = TestCgroup::create(label).unwrap();
        assert_ne!(cgroup.path(), Path::new(dcnet_tests::cgroup::CGROUP2_ROOT));
        let mut datapath = Datapath::load().unwrap();
        datapath.attach(cgroup.path()).unwrap();
        Self {
            ns,
            cgroup,
            datapath,
        }
    }

    fn command(&self, args: &[&str], in_cgroup: bool) -> Command {
        let cgroup = in_cgroup.then_some(&self.cgroup);
        lb::client_command(self.ns.netns().name(), cgroup, args).unwrap()
    }

    /// Runs the client in the namespace (and the cgroup) and returns its lines.
    fn client(&self, args: &[&str], in_cgroup: bool) -> Vec<Line> {
        lb::run_client(self.command(args, in_cgroup)).unwrap()
    }

    /// `n` TCP backends on 127.0.0.(i+1), each greeting with its name `t<i>`.
    fn tcp_backends(&self, n: u8) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| {
                let addr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, i + 1), 0));
                lb::tcp_backend(self.ns.netns(), addr, &format!("t{i}")).unwrap()
            })
            .collect()
    }

    /// `n` UDP backends on 127.0.0.(i+1), each answering with its name `u<i>`.
    fn udp_backends(&self, n: u8) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| {
                let addr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, i + 1), 0));
                lb::udp_backend(self.ns.netns(), addr, &format!("u{i}")).unwrap()
            })
            .collect()
    }
}

fn vip(last: u8, port: u16, protocol: Protocol) -> Vip {
    Vip {
        addr: SocketAddr::from((Ipv4Addr::new(11, 0, 0, last), port)),
        protocol,
    }
}

fn weighted(addrs: &[SocketAddr], weight: u32) -> Vec<Backend> {
    addrs.iter().map(|&addr| Backend { addr, weight }).collect()
}

/// Responses per backend name, asserting every attempt succeeded with the VIP as its peer.
fn tally(lines: &[Line], vip: &Vip) -> BTreeMap<String, usize> {
    lb::tally(lines, &vip.addr.to_string()).unwrap()
}

#[test]
fn tcp_connects_spread_over_backends_and_show_the_vip() {
    let mut s = Setup::new("lbtcp");
    let backends = s.tcp_backends(3);
    let vip = vip(1, 80, Protocol::Tcp);
    assert_eq!(
        s.datapath.set_vip(vip, &weighted(&backends, 1)).unwrap(),
        Change::Added
    );
    assert_eq!(
        s.datapath.set_vip(vip, &weighted(&backends, 1)).unwrap(),
        Change::Unchanged
    );

    let lines = s.client(&["tcp", &vip.addr.to_string(), "300"], true);
    let counts = tally(&lines, &vip);
    eprintln!("300 connects: {counts:?}");
    assert_eq!(counts.len(), 3, "every backend used: {counts:?}");
    assert!(
        counts.values().all(|&c| c <= 200),
        "none more than twice its fair share of 100: {counts:?}"
    );

    // The counters saw every connect, per VIP and per backend.
    let counters = s.datapath.counters().unwrap();
    assert_eq!(counters.len(), 1);
    assert_eq!(counters[0].connections, 300);
    let per_backend: HashMap<SocketAddr, u64> = counters[0].backends.iter().copied().collect();
    for (i, b) in backends.iter().enumerate() {
        assert_eq!(
            per_backend[b] as usize,
            counts[&format!("t{i}")],
            "backend {b}'s counter"
        );
    }
    // Every client socket closed: sock_release emptied the TCP table.
    assert_eq!(s.datapath.open_tcp_sockets(), 0);
    let stats: HashMap<_, _> = s.datapath.stats().unwrap().into_iter().collect();
    assert_eq!(stats["translated"], 300);
    assert!(
        stats["reversed"] >= 300,
        "getpeername mapped back: {stats:?}"
    );

    // A connect to a backend's own address, from the cgroup, is left alone and shows the
    // backend: the VIP is remembered per socket, not per backend.
    let direct = s.client(&["tcp", &backends[0].to_string(), "1"], true);
    assert_eq!(
        direct[0],
        Line::Ok {
            peer: backends[0].to_string(),
            response: "t0".into()
        }
    );

    // Outside the cgroup the VIP is just an unroutable address.
    let outside = s.client(&["tcp", &vip.addr.to_string(), "1"], false);
    assert!(
        matches!(&outside[0], Line::Err { .. }),
        "untranslated outside the cgroup: {outside:?}"
    );

    // Removed: no translation in the cgroup either.
    assert!(s.datapath.remove_vip(&vip).unwrap());
    assert!(!s.datapath.remove_vip(&vip).unwrap());
    let after = s.client(&["tcp", &vip.addr.to_string(), "1"], true);
    assert!(matches!(&after[0], Line::Err { .. }), "{after:?}");
}

#[test]
fn connections_follow_the_weights_in_proportion() {
    let mut s = Setup::new("lbweight");
    let backends = s.tcp_backends(3);
    let vip = vip(7, 80, Protocol::Tcp);
    let set = [
        Backend {
            addr: backends[0],
            weight: 1,
        },
        Backend {
            addr: backends[1],
            weight: 3,
        },
        Backend {
            addr: backends[2],
            weight: 0,
        },
    ];
    s.datapath.set_vip(vip, &set).unwrap();
    let lines = s.client(&["tcp", &vip.addr.to_string(), "4000"], true);
    let counts = tally(&lines, &vip);
    eprintln!("4000 connects, weights 1:3:0: {counts:?}");
    // Binomial: 1000 ± 27 (one standard deviation) for weight 1; ± 5 deviations allowed.
    let t0 = counts.get("t0").copied().unwrap_or(0);
    let t1 = counts.get("t1").copied().unwrap_or(0);
    assert!((863..=1137).contains(&t0), "weight 1 of 4: {counts:?}");
    assert_eq!(t0 + t1, 4000, "weight 0 takes none: {counts:?}");

    // Reweighted 1:1: the same backends, now even.
    s.datapath
        .set_vip(vip, &weighted(&backends[..2], 5))
        .unwrap();
    let lines = s.client(&["tcp", &vip.addr.to_string(), "4000"], true);
    let counts = tally(&lines, &vip);
    eprintln!("4000 connects, weights 5:5: {counts:?}");
    let t0 = counts.get("t0").copied().unwrap_or(0);
    assert!((1842..=2158).contains(&t0), "even: {counts:?}");
}

#[test]
fn weight_zero_takes_no_new_connections_and_existing_ones_drain() {
    let mut s = Setup::new("lbdrain");
    let backends = s.tcp_backends(2);
    let vip = vip(2, 8080, Protocol::Tcp);
    // Only t0 first, so the held connection is on it.
    s.datapath
        .set_vip(vip, &weighted(&backends[..1], 1))
        .unwrap();
    let mut held = s
        .command(&["tcp-hold", &vip.addr.to_string()], true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = held.stdin.take().unwrap();
    let mut stdout = BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("ok {} t0", vip.addr));

    // t0 drains: weight 0; t1 takes the new connections.
    let change = s
        .datapath
        .set_vip(
            vip,
            &[
                Backend {
                    addr: backends[0],
                    weight: 0,
                },
                Backend {
                    addr: backends[1],
                    weight: 1,
                },
            ],
        )
        .unwrap();
    assert_eq!(change, Change::Updated);
    let counts = tally(&s.client(&["tcp", &vip.addr.to_string(), "50"], true), &vip);
    assert_eq!(
        counts.get("t0"),
        None,
        "no new connection to t0: {counts:?}"
    );
    assert_eq!(counts.get("t1"), Some(&50));

    // The held connection is the one TCP socket open through the VIP.
    assert_eq!(s.datapath.open_tcp_sockets(), 1);
    // The held connection still talks to t0.
    writeln!(stdin, "still-there").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "echo t0:still-there");
    drop(stdin);
    held.wait().unwrap();
}

#[test]
fn no_usable_backend_refuses_at_once() {
    let mut s = Setup::new("lbrefuse");
    let backends = s.tcp_backends(1);
    let tcp = vip(3, 80, Protocol::Tcp);
    let udp = vip(3, 53, Protocol::Udp);
    s.datapath.set_vip(tcp, &weighted(&backends, 0)).unwrap();
    s.datapath.set_vip(udp, &[]).unwrap();
    for (mode, vip) in [("tcp", tcp), ("udp", udp), ("udp-connected", udp)] {
        let lines = s.client(&[mode, &vip.addr.to_string(), "3"], true);
        for line in &lines {
            match line {
                Line::Err { kind, micros } => {
                    assert_eq!(kind, "ConnectionRefused", "{mode}");
                    assert!(*micros < 100_000, "{mode}: refused after {micros} µs");
                }
                other => panic!("{mode}: {other:?}"),
            }
        }
        eprintln!("{mode}: {lines:?}");
    }
    let stats: HashMap<_, _> = s.datapath.stats().unwrap().into_iter().collect();
    assert!(stats["no_backend"] >= 7, "{stats:?}");
}

#[test]
fn udp_replies_come_from_the_vip_and_sockets_stick_to_a_backend() {
    let mut s = Setup::new("lbudp");
    let backends = s.udp_backends(3);
    let vip = vip(4, 53, Protocol::Udp);
    s.datapath.set_vip(vip, &weighted(&backends, 1)).unwrap();

    // Unconnected: sendto the VIP, recvfrom shows the VIP; one socket, one backend.
    let lines = s.client(&["udp", &vip.addr.to_string(), "20"], true);
    let counts = tally(&lines, &vip);
    assert_eq!(
        counts.len(),
        1,
        "one socket sticks to one backend: {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), 20);

    // Connected: getpeername and recv show the VIP.
    let lines = s.client(&["udp-connected", &vip.addr.to_string(), "5"], true);
    assert_eq!(tally(&lines, &vip).values().sum::<usize>(), 5);

    // Many sockets spread over the backends.
    let mut used = BTreeMap::new();
    for _ in 0..30 {
        let lines = s.client(&["udp", &vip.addr.to_string(), "1"], true);
        for (name, n) in tally(&lines, &vip) {
            *used.entry(name).or_insert(0) += n;
        }
    }
    assert_eq!(used.len(), 3, "30 sockets over 3 backends: {used:?}");
}

#[test]
fn backend_sets_swap_whole_while_clients_connect() {
    let mut s = Setup::new("lbswap");
    let backends = s.tcp_backends(4);
    let vip = vip(5, 80, Protocol::Tcp);
    let (a, b) = (&backends[..2], &backends[2..]);
    s.datapath.set_vip(vip, &weighted(a, 1)).unwrap();
    let client = s
        .command(&["tcp", &vip.addr.to_string(), "2000"], true)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut swaps = 0;
    while started.elapsed() < Duration::from_secs(30) {
        let set = if swaps % 2 == 0 { b } else { a };
        s.datapath.set_vip(vip, &weighted(set, 1)).unwrap();
        swaps += 1;
        std::thread::sleep(Duration::from_millis(2));
        if s.datapath.counters().unwrap()[0].connections >= 2000 {
            break;
        }
    }
    let out = client.wait_with_output().unwrap();
    let lines: Vec<Line> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Line::parse(l).unwrap())
        .collect();
    let counts = tally(&lines, &vip);
    eprintln!("{swaps} swaps during 2000 connects: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 2000);
    assert!(swaps > 20, "the sets were swapped while connecting");
    let stats: HashMap<_, _> = s.datapath.stats().unwrap().into_iter().collect();
    assert_eq!(stats["bad_slot"], 0, "no connect saw a torn set: {stats:?}");
}

#[test]
fn udp_sockets_connected_to_a_removed_backend_are_destroyed() {
    let mut s = Setup::new("lbdestroy");
    let backends = s.udp_backends(2);
    let vip = vip(6, 53, Protocol::Udp);
    s.datapath
        .set_vip(vip, &weighted(&backends[..1], 1))
        .unwrap();
    let hold = |target: SocketAddr| {
        lb::UdpHold::start(s.command(&["udp-hold", &target.to_string()], true)).unwrap()
    };
    let mut through_vip = hold(vip.addr);
    let mut direct = hold(backends[0]);
    let ok = |peer: &SocketAddr| Line::Ok {
        peer: peer.to_string(),
        response: "u0".into(),
    };
    assert_eq!(through_vip.ask("one").unwrap(), ok(&vip.addr));
    assert_eq!(direct.ask("one").unwrap(), ok(&backends[0]));

    // u0 leaves the VIP: the socket that reached it through the VIP is destroyed, the one
    // connected to u0 directly is not.
    s.datapath
        .set_vip(vip, &weighted(&backends[1..], 1))
        .unwrap();
    let removed = s.datapath.take_removed_udp();
    assert_eq!(removed.len(), 1);
    let peers = removed.iter().map(|(_, b)| *b).collect();
    let connected =
        s.ns.netns()
            .run(|| dcnet_lb::sockets::connected_udp(&peers))
            .unwrap()
            .unwrap();
    assert_eq!(
        connected.len(),
        2,
        "both clients are connected to u0: {connected:?}"
    );
    let stale = s.datapath.through_removed(connected, &removed);
    assert_eq!(stale.len(), 1);
    let destroyed =
        s.ns.netns()
            .run(|| dcnet_lb::sockets::destroy(&stale))
            .unwrap()
            .unwrap();
    assert_eq!(destroyed, 1);
    // The kernel aborts the socket (ECONNABORTED for a waiting receive) and disconnects it, so
    // its next send fails with EDESTADDRREQ.
    match through_vip.ask("two").unwrap() {
        Line::Err { micros: errno, .. } => assert!(
            [libc::EDESTADDRREQ as u64, libc::ECONNABORTED as u64].contains(&errno),
            "errno {errno}"
        ),
        other => panic!("the stale socket still works: {other:?}"),
    }
    assert_eq!(direct.ask("two").unwrap(), ok(&backends[0]));
    // A new socket reaches the remaining backend.
    let lines = s.client(&["udp-connected", &vip.addr.to_string(), "1"], true);
    assert_eq!(
        lines[0],
        Line::Ok {
            peer: vip.addr.to_string(),
            response: "u1".into()
        }
    );
}

#[test]
fn ipv6_vips_translate_tcp_and_udp_and_refuse_without_backends() {
    let mut s = Setup::new("lbv6");
    let ns = s.ns.netns();
    let loopback = |port| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let tcp: Vec<SocketAddr> = (0..2)
        .map(|i| lb::tcp_backend(ns, loopback(0), &format!("t{i}")).unwrap())
        .collect();
    let udp = lb::udp_backend(ns, loopback(0), "u0").unwrap();
    let vip6 = |port, protocol| Vip {
        addr: SocketAddr::from(("fd00:11::1".parse::<std::net::Ipv6Addr>().unwrap(), port)),
        protocol,
    };
    let (tcp_vip, udp_vip) = (vip6(80, Protocol::Tcp), vip6(53, Protocol::Udp));
    s.datapath.set_vip(tcp_vip, &weighted(&tcp, 1)).unwrap();
    s.datapath.set_vip(udp_vip, &weighted(&[udp], 1)).unwrap();
    // An IPv4 backend for an IPv6 VIP is refused with the reason.
    let mixed = s
        .datapath
        .set_vip(tcp_vip, &weighted(&["127.0.0.1:80".parse().unwrap()], 1));
    assert!(
        mixed.unwrap_err().to_string().contains("address family"),
        "a mixed set is refused"
    );

    let counts = tally(
        &s.client(&["tcp", &tcp_vip.addr.to_string(), "100"], true),
        &tcp_vip,
    );
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 100);
    let lines = s.client(&["udp", &udp_vip.addr.to_string(), "3"], true);
    assert_eq!(tally(&lines, &udp_vip).values().sum::<usize>(), 3);
    let lines = s.client(&["udp-connected", &udp_vip.addr.to_string(), "2"], true);
    assert_eq!(tally(&lines, &udp_vip).values().sum::<usize>(), 2);

    s.datapath.set_vip(tcp_vip, &[]).unwrap();
    let lines = s.client(&["tcp", &tcp_vip.addr.to_string(), "1"], true);
    assert!(
        matches!(&lines[0], Line::Err { kind, .. } if kind == "ConnectionRefused"),
        "{lines:?}"
    );
    let counters = s.datapath.counters().unwrap();
    let tcp_count = counters.iter().find(|c| c.vip == tcp_vip).unwrap();
    assert_eq!(tcp_count.connections, 100);
}
