//! The overlay across a namespace cluster: leases agreed through gossip, the VXLAN tunnel
//! programmed by every agent, containers attached through the agent's API.
//!
//! Bounds stated here (gossip interval 200 ms, reconcile interval 1 s, settle 1 s):
//! - a stopped node's neighbour, FDB entry, route and rule leave the other nodes within 10 s
//!   (failure detection, about 1-2 s at this interval, then one incremental pass);
//! - an FDB entry deleted by hand is back within 5 s (one reconcile interval, plus slack);
//! - a restarted agent keeps its VTEP, subnet and containers' addresses.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_tests::container::Container;
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const OVERLAY: &str =
    "\n[overlay]\nenabled = true\nreconcile_interval = \"1s\"\nlease_settle = \"1s\"\n";

fn overlay_cluster(n: usize, extra: &str) -> Result<Cluster> {
    overlay_cluster_with(ClusterOptions::nodes(n), extra)
}

fn overlay_cluster_with(mut options: ClusterOptions, extra: &str) -> Result<Cluster> {
    for node in &mut options.nodes {
        *node = NodeSpec {
            // Containers reach the node's DNS at their gateway.
            dns_config: "listen = [\"0.0.0.0:53\"]\n".into(),
            extra_config: format!("{OVERLAY}{extra}"),
            ..NodeSpec::default()
        };
    }
    Cluster::start(options)
}

fn status(cluster: &Cluster, i: usize) -> Result<Value> {
    cluster.get(i, "/v1/overlay")
}

/// Waits until every node holds its leases (of every network) and reaches every other node's
/// subnets of every network.
fn wait_formed(cluster: &Cluster) -> Result<Vec<Value>> {
    let n = cluster.nodes.len();
    (0..n)
        .map(|i| {
            wait_until(
                &format!("node {} to reach its peers", i + 1),
                Duration::from_secs(20),
                || {
                    let s = status(cluster, i)?;
                    let networks = s["networks"].as_array().map_or(0, Vec::len);
                    let ready = s["vtep"]["lease"] == "held"
                        && s["networks"]
                            .as_array()
                            .is_some_and(|n| n.iter().all(|n| n["lease"] == "held"))
                        && s["peers"].as_array().map_or(0, Vec::len) == n - 1
                        && s["peers"].as_array().is_some_and(|p| {
                            p.iter()
                                .all(|p| p["subnets"].as_array().map_or(0, Vec::len) >= networks)
                        });
                    Ok(ready.then_some(s))
                },
            )
        })
        .collect()
}

fn node_ip(cluster: &Cluster, i: usize, args: &[&str]) -> String {
    let out = cluster
        .run_in(i, std::path::Path::new("/usr/sbin/ip"), args)
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn node_fdb(cluster: &Cluster, i: usize) -> String {
    let out = cluster
        .run_in(
            i,
            std::path::Path::new("/usr/sbin/bridge"),
            &["fdb", "show", "dev", "vtep1024"],
        )
        .expect("bridge");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends a 1400-byte payload over TCP from `from` to `to` and checks the echo.
fn tcp_echo(from: &Container, to: impl Into<IpAddr>, port: u16) -> Result<()> {
    let to = to.into();
    let target = SocketAddr::from((to, port));
    let mut stream = from
        .ns
        .netns()
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(3)))??;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let payload: Vec<u8> = (0..1400u32).map(|i| (i * 7 % 251) as u8).collect();
    stream.write_all(&payload)?;
    let mut back = vec![0u8; payload.len()];
    stream.read_exact(&mut back)?;
    if back != payload {
        bail!("the echo from {to} differs from what was sent");
    }
    Ok(())
}

#[test]
fn containers_on_three_nodes_reach_each_other_and_the_tunnel_heals() -> Result<()> {
    // Leases (and the tunnels to them) of a node gone this long are freed.
    let mut cluster = overlay_cluster(3, "lease_release = \"12s\"\n")?;
    let run = || -> Result<()> {
        let formed = wait_formed(&cluster)?;
        let vteps: Vec<&str> = formed
            .iter()
            .map(|s| s["vtep"]["address"].as_str().unwrap_or(""))
            .collect();
        let subnets: Vec<&str> = formed
            .iter()
            .map(|s| s["networks"][0]["subnet"].as_str().unwrap_or(""))
            .collect();
        let mut unique = vteps.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 3, "VTEP addresses {vteps:?}");
        let mut unique = subnets.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 3, "subnets {subnets:?}");
        for (i, s) in formed.iter().enumerate() {
            assert_eq!(
                s["kernel_objects"],
                14,
                "node {}: for each of 2 peers 4 objects, and 3 of IPv6 for dcos6",
                i + 1
            );
        }

        // Two containers per node.
        let mut containers = Vec::new();
        for node in 0..3 {
            for k in 0..2 {
                containers.push(Container::attach(
                    &cluster,
                    node,
                    &format!("n{}c{k}", node + 1),
                )?);
            }
        }
        for c in &containers {
            assert_eq!(c.attached.mtu, 1420);
            let subnet = subnets[c.node].split('/').next().unwrap_or("");
            assert!(c.attached.address.ends_with("/24"));
            assert_eq!(
                c.ip.octets()[..3],
                subnet.parse::<Ipv4Addr>()?.octets()[..3],
                "container address {} in its node's subnet {subnet}",
                c.ip
            );
            let link = c.ns.run("ip", &["-o", "link", "show", "eth0"])?;
            let link = String::from_utf8_lossy(&link.stdout);
            assert!(link.contains("mtu 1420"), "{link}");
            c.echo_server(7000)?;
        }

        // Every container reaches every other: ping at the full MTU without fragmentation
        // (1392 + 28 = 1420 bytes), and TCP with a 1400-byte payload.
        for a in &containers {
            for b in containers.iter().filter(|b| b.id != a.id) {
                assert!(
                    a.ping(b.ip, 1392)?,
                    "ping {} -> {} (1420-byte packets)",
                    a.id,
                    b.id
                );
                tcp_echo(a, b.ip, 7000).with_context(|| format!("TCP {} -> {}", a.id, b.id))?;
            }
        }

        // The container's resolv.conf points at the node's DNS, which answers through it.
        let c = &containers[0];
        assert_eq!(c.attached.nameservers, [IpAddr::V4(c.attached.gateway)]);
        let out =
            c.ns.exec("dig", &["+short", "+time=1", "+tries=2", "ready.spartan"])?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "127.0.0.1",
            "{out:?}"
        );

        // An FDB entry deleted by hand on node 1 comes back.
        let mac_of_node2 = format!(
            "70:b3:d5:{}",
            vteps[1]
                .split('/')
                .next()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                .map(|a| {
                    let [_, b, c, d] = a.octets();
                    format!("{b:02x}:{c:02x}:{d:02x}")
                })
                .unwrap_or_default()
        );
        assert!(node_fdb(&cluster, 0).contains(&mac_of_node2));
        let out = cluster.run_in(
            0,
            std::path::Path::new("/usr/sbin/bridge"),
            &[
                "fdb",
                "del",
                &mac_of_node2,
                "dev",
                "vtep1024",
                "dst",
                &cluster.nodes[1].address.to_string(),
                "self",
            ],
        )?;
        assert!(out.status.success(), "{out:?}");
        let deleted = Instant::now();
        assert!(!node_fdb(&cluster, 0).contains(&mac_of_node2));
        wait_until(
            "the deleted FDB entry to be restored",
            Duration::from_secs(5),
            || Ok(node_fdb(&cluster, 0).contains(&mac_of_node2).then_some(())),
        )?;
        eprintln!("FDB entry restored after {:?}", deleted.elapsed());
        let a = &containers[0];
        let b = &containers[2];
        assert!(a.ping(b.ip, 56)?, "ping after the repair");

        // A detached container's address is freed and its veth gone.
        let (status_code, body) = containers[5].detach(&cluster)?;
        assert_eq!(status_code, 200, "{body}");
        assert!(body.contains(&containers[5].ip.to_string()), "{body}");
        let links = node_ip(&cluster, 2, &["-o", "link", "show"]);
        assert!(
            !links.contains(&containers[5].attached.host_veth),
            "{links}"
        );
        let (status_code, body) = containers[5].detach(&cluster)?;
        assert_eq!(
            (status_code, body.as_str()),
            (200, "{\"detached\":null}"),
            "detach is idempotent"
        );

        // The agent can also create the namespace, and then deletes it on detach.
        let name = format!("dcn-{}-made", std::process::id());
        let body = serde_json::json!({ "container_id": "made", "netns": name, "create": true });
        let (status_code, text) = cluster.post(0, "/v1/overlay/attach", &body.to_string())?;
        assert_eq!(status_code, 200, "{text}");
        assert!(std::path::Path::new("/run/netns").join(&name).exists());
        let (status_code, text) =
            cluster.post(0, "/v1/overlay/detach", r#"{"container_id":"made"}"#)?;
        assert_eq!(status_code, 200, "{text}");
        assert!(
            !std::path::Path::new("/run/netns").join(&name).exists(),
            "deleted on detach"
        );
        Ok(())
    };
    let result = run();
    if let Err(e) = &result {
        eprintln!("{e:#}\n{}", cluster.log_tails(40));
    }
    result?;

    // Restarting node 2's agent keeps its leases and its containers' addresses.
    let c2 = Container::attach(&cluster, 1, "keep")?;
    let before = status(&cluster, 1)?;
    cluster.stop_agent(1, Signal::SIGTERM, Duration::from_secs(5));
    cluster.start_agent(1)?;
    // Back means its tunnel objects applied since the restart and its VXLAN filter letting
    // both peers in (the filter is loaded again at start), not only its leases.
    let after = wait_until(
        "node 2 back with its leases, its tunnels and its VXLAN filter",
        Duration::from_secs(20),
        || {
            let s = status(&cluster, 1).ok();
            Ok(s.filter(|s| {
                s["vtep"]["lease"] == "held"
                    && s["peers"].as_array().map_or(0, Vec::len) == 2
                    && s["last_reconcile"]["failed"] == 0
                    && s["vxlan_filter"]["peers"] == 2
            }))
        },
    )?;
    // And node 1 reaching node 2 again, as the ping below needs.
    wait_formed(&cluster)?;
    assert_eq!(after["vtep"]["address"], before["vtep"]["address"]);
    assert_eq!(
        after["networks"][0]["subnet"],
        before["networks"][0]["subnet"]
    );
    assert_eq!(
        after["networks"][0]["containers"],
        before["networks"][0]["containers"]
    );
    let c1 = Container::attach(&cluster, 0, "after")?;
    assert!(
        c1.ping(c2.ip, 56)?,
        "a container kept across the restart is reachable"
    );
    let c3 = Container::attach(&cluster, 1, "new")?;
    assert_ne!(c3.ip, c2.ip, "a new container does not get a kept address");

    // Killing node 3's agent keeps its objects on nodes 1 and 2 while its leases are reserved
    // (its containers may live on, and traffic for them must not leave by the default
    // route), and removes them once the leases are released.
    let vtep3 = status(&cluster, 2)?["vtep"]["address"]
        .as_str()
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    let subnet3 = status(&cluster, 2)?["networks"][0]["subnet"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(node_ip(&cluster, 0, &["neigh", "show", "dev", "vtep1024"]).contains(&vtep3));
    cluster.stop_agent(2, Signal::SIGKILL, Duration::from_secs(5));
    let stopped = Instant::now();
    wait_until("node 3 seen down", Duration::from_secs(10), || {
        let nodes: Vec<Value> = cluster.get(0, "/v1/nodes")?;
        Ok(nodes
            .iter()
            .any(|n| n["name"] == "node-3" && n["state"] != "up")
            .then_some(()))
    })?;
    assert!(
        node_ip(&cluster, 0, &["route", "show", "table", "42"]).contains(&subnet3),
        "node 3's route stays while it is down and its lease reserved"
    );
    for i in 0..2 {
        wait_until(
            &format!("node 3's objects gone from node {}", i + 1),
            Duration::from_secs(30),
            || {
                let neigh = node_ip(&cluster, i, &["neigh", "show", "dev", "vtep1024"]);
                let routes = node_ip(&cluster, i, &["route", "show", "table", "42"]);
                let rules = node_ip(&cluster, i, &["rule", "show"]);
                let fdb = node_fdb(&cluster, i);
                let gone = !neigh.contains(&vtep3)
                    && !routes.contains(&subnet3)
                    && !rules.contains(&subnet3)
                    && !fdb.contains(&cluster.nodes[2].address.to_string());
                Ok(gone.then_some(()))
            },
        )?;
    }
    eprintln!(
        "node 3's objects removed from nodes 1 and 2 after {:?}",
        stopped.elapsed()
    );
    Ok(())
}

/// Four agents start at the same moment, with exactly four subnets and six VTEP addresses to
/// share: every round must end with four distinct leases of each kind.
#[test]
fn concurrent_joins_never_share_a_lease() -> Result<()> {
    let extra = "vtep_range = \"44.128.0.0/29\"\nlease_release = \"2s\"\n\n[[overlay.networks]]\nname = \"dcos\"\nsubnet = \"9.0.0.0/22\"\nprefix = 24\n";
    let mut cluster = overlay_cluster(4, extra)?;
    let mut conflicts = 0;
    for round in 0..8 {
        let started = Instant::now();
        let formed = wait_formed(&cluster)
            .with_context(|| format!("round {round}\n{}", cluster.log_tails(30)))?;
        let mut vteps: Vec<String> = formed
            .iter()
            .map(|s| s["vtep"]["address"].to_string())
            .collect();
        let mut subnets: Vec<String> = formed
            .iter()
            .map(|s| s["networks"][0]["subnet"].to_string())
            .collect();
        eprintln!(
            "round {round}: agreed in {:?}: {vteps:?} {subnets:?}",
            started.elapsed()
        );
        vteps.sort();
        vteps.dedup();
        subnets.sort();
        subnets.dedup();
        assert_eq!(vteps.len(), 4, "round {round}: duplicate VTEP lease");
        assert_eq!(subnets.len(), 4, "round {round}: duplicate subnet lease");
        for i in 0..4 {
            conflicts += lease_conflicts(&cluster, i)?;
        }
        // Next round: all agents forget their state and start at once again.
        for i in 0..4 {
            cluster.stop_agent(i, Signal::SIGKILL, Duration::from_secs(5));
        }
        for i in 0..4 {
            let _ = std::fs::remove_dir_all(&cluster.nodes[i].state_dir);
        }
        for i in 0..4 {
            cluster.start_agent(i)?;
        }
    }
    // With 4 agents drawing from 4 subnets, tie-breaks happen in most rounds; the test is
    // only meaningful if they did.
    eprintln!("claims that lost a tie-break over 8 rounds: {conflicts}");
    assert!(conflicts > 0, "no round raced");
    Ok(())
}

/// Two named overlays: each node leases a subnet in both, containers of each network reach
/// their peers on the other node, and the networks route to each other through the one VTEP
/// (as DC/OS overlays do; they are address spaces, not isolation).
#[test]
fn two_overlays_each_get_a_subnet_and_carry_traffic() -> Result<()> {
    let extra = "\n[[overlay.networks]]\nname = \"dcos\"\nsubnet = \"9.0.0.0/8\"\n\n[[overlay.networks]]\nname = \"apps\"\nsubnet = \"172.31.0.0/16\"\nprefix = 26\nmtu = 1400\n";
    let cluster = overlay_cluster(2, extra)?;
    for i in 0..2 {
        wait_until(
            &format!(
                "node {} to lease both networks and see both of its peer's",
                i + 1
            ),
            Duration::from_secs(20),
            || {
                let s = status(&cluster, i)?;
                let held = s["networks"]
                    .as_array()
                    .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["lease"] == "held"));
                let peer_subnets = s["peers"][0]["subnets"].as_array().map_or(0, Vec::len);
                Ok((held && peer_subnets == 2).then_some(()))
            },
        )
        .with_context(|| cluster.log_tails(30))?;
    }
    let s = status(&cluster, 0)?;
    let apps = s["networks"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "apps"))
        .context("network apps in the status")?;
    assert!(
        apps["subnet"]
            .as_str()
            .is_some_and(|s| s.starts_with("172.31.") && s.ends_with("/26")),
        "{apps}"
    );

    let dcos = [
        Container::attach_to(&cluster, 0, "d1", "dcos")?,
        Container::attach_to(&cluster, 1, "d2", "dcos")?,
    ];
    let apps = [
        Container::attach_to(&cluster, 0, "a1", "apps")?,
        Container::attach_to(&cluster, 1, "a2", "apps")?,
    ];
    assert!(dcos[0].ip.octets()[0] == 9 && apps[0].ip.octets()[..2] == [172, 31]);
    assert_eq!(apps[0].attached.mtu, 1400);
    // The largest payload that fits each network's MTU crosses unfragmented.
    for (from, to, size) in [
        (&dcos[0], &dcos[1], 1392),
        (&dcos[1], &dcos[0], 1392),
        (&apps[0], &apps[1], 1372),
        (&apps[1], &apps[0], 1372),
        (&dcos[0], &apps[1], 1372),
    ] {
        let ok = wait_until("a ping across", Duration::from_secs(5), || {
            Ok(from.ping(to.ip, size)?.then_some(()))
        });
        assert!(
            ok.is_ok(),
            "{} -> {} ({size} bytes) failed\n{}",
            from.ip,
            to.ip,
            cluster.log_tails(20)
        );
    }
    Ok(())
}

fn lease_conflicts(cluster: &Cluster, i: usize) -> Result<u64> {
    let metrics = cluster.get_text(i, "/metrics")?;
    Ok(metrics
        .lines()
        .find_map(|l| l.strip_prefix("dcnet_overlay_lease_conflicts_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// A VXLAN datagram carrying an Ethernet frame from `src_mac` to `dst_mac` with an IPv4/UDP
/// packet `src` → `dst`:`port` (VNI 1024, UDP checksum 0 as VXLAN senders do).
fn vxlan_datagram(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut d = vec![0x08, 0, 0, 0, 0, 0x04, 0x00, 0]; // flags I, VNI 1024
    d.extend_from_slice(&dst_mac);
    d.extend_from_slice(&src_mac);
    d.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    d.extend_from_slice(&ip);
    d.extend_from_slice(&5555u16.to_be_bytes());
    d.extend_from_slice(&port.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

fn mac(v: &Value) -> Result<[u8; 6]> {
    let text = v.as_str().context("a MAC")?;
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{text} is no MAC"))
}

/// Sends 20 VXLAN datagrams from the outsider to node 1's VTEP at `to`, each a frame node
/// 2's VTEP could send from container `b` to container `a`: none may reach `a`, and node 1
/// must count them dropped. Then the same frame from node 2, a peer, must be delivered (the
/// filter, nothing else, stopped the forged ones). Returns the drop count.
fn forged_dropped_and_genuine_delivered(
    cluster: &Cluster,
    formed: &[Value],
    (a, b): (&Container, &Container),
    to: SocketAddr,
) -> Result<u64> {
    let port = 7777;
    let a_ip = a.ip;
    let listener =
        a.ns.netns()
            .run(move || std::net::UdpSocket::bind((a_ip, port)))??;
    listener.set_read_timeout(Some(Duration::from_millis(300)))?;
    let frame = |payload: &[u8]| -> Result<Vec<u8>> {
        Ok(vxlan_datagram(
            mac(&formed[0]["vtep"]["mac"])?,
            mac(&formed[1]["vtep"]["mac"])?,
            b.ip,
            a.ip,
            port,
            payload,
        ))
    };
    let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let send = |netns: &dcnet_overlay::Netns, datagram: &[u8], times: usize| -> Result<()> {
        netns.run(|| -> Result<()> {
            let socket = std::net::UdpSocket::bind(any)?;
            for _ in 0..times {
                socket.send_to(datagram, to)?;
            }
            Ok(())
        })?
    };
    let received = |listener: &std::net::UdpSocket| -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while let Ok(n) = listener.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    };
    let outsider = cluster.outsider().context("the outsider")?;
    send(outsider, &frame(b"forged")?, 20)?;
    std::thread::sleep(Duration::from_millis(500));
    let got = received(&listener);
    assert!(got.is_empty(), "forged VXLAN delivered: {got:?}");
    let dropped = wait_until(
        "node 1 to count the dropped datagrams",
        Duration::from_secs(10),
        || {
            let n = status(cluster, 0)?["vxlan_filter"]["dropped"]
                .as_u64()
                .unwrap_or(0);
            Ok((n >= 20).then_some(n))
        },
    )?;
    let genuine = frame(b"from a peer")?;
    wait_until("a peer's frame", Duration::from_secs(10), || {
        send(&cluster.nodes[1].netns, &genuine, 1)?;
        Ok(received(&listener)
            .into_iter()
            .find(|p| p == b"from a peer"))
    })?;
    Ok(dropped)
}

#[test]
fn forged_vxlan_from_an_underlay_host_is_not_delivered() -> Result<()> {
    let mut cluster = overlay_cluster(2, "")?;
    let formed = wait_formed(&cluster)?;
    cluster.add_outsider()?;
    let a = Container::attach(&cluster, 0, "vx-a")?;
    let b = Container::attach(&cluster, 1, "vx-b")?;
    let to = SocketAddr::from((cluster.nodes[0].address, 64000));
    let dropped = forged_dropped_and_genuine_delivered(&cluster, &formed, (&a, &b), to)?;
    let metrics = cluster.get_text(0, "/metrics")?;
    assert!(
        metrics.contains("dcnet_overlay_vxlan_dropped_total"),
        "{metrics}"
    );
    eprintln!("forged: 0 of 20 delivered, {dropped} dropped; from a peer: delivered");
    Ok(())
}

/// With DNS on 0.0.0.0:53, a container that asks its node's underlay address (not its
/// gateway) gets the answer from that address; a resolver drops one from elsewhere.
#[test]
fn a_container_asking_its_nodes_underlay_address_is_answered_from_it() -> Result<()> {
    let cluster = overlay_cluster(1, "")?;
    wait_formed(&cluster)?;
    let c = Container::attach(&cluster, 0, "dns-src")?;
    let server = format!("@{}", cluster.nodes[0].address);
    let out =
        c.ns.run("kdig", &[&server, "+timeout=2", "+retry=0", "leader.mesos"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("status:"),
        "no answer from {server} in a container: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// What a server on the outsider saw as a client's address, connecting from `c` (`None`:
/// the connection did not get through within two seconds).
fn seen_from_outside(c: &Container, port: u16) -> Result<Option<String>> {
    let target = SocketAddr::from((dcnet_tests::cluster::OUTSIDER_ADDRESS, port));
    let connected =
        c.ns.netns()
            .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(2)))?;
    let Ok(mut stream) = connected else {
        return Ok(None);
    };
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut seen = String::new();
    stream.read_to_string(&mut seen)?;
    Ok(Some(seen))
}

/// Containers reach a server outside the overlay (an outsider on the underlay, which has no
/// route to the overlay) through their node, seen from its address; a network with
/// `egress = false` does not; the table removed by hand is put back.
#[test]
fn containers_reach_the_outside_through_their_node_masqueraded() -> Result<()> {
    let extra = "\n[[overlay.networks]]\nname = \"dcos\"\nsubnet = \"9.0.0.0/8\"\n\n[[overlay.networks]]\nname = \"closed\"\nsubnet = \"172.30.0.0/16\"\negress = false\n";
    let mut cluster = overlay_cluster(1, extra)?;
    let outsider = cluster.add_outsider()?;
    // The server answers with the address the connection came from, and closes.
    let port = 8088;
    let listener = outsider
        .run(move || TcpListener::bind((dcnet_tests::cluster::OUTSIDER_ADDRESS, port)))??;
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let peer = stream.peer_addr().map(|a| a.ip().to_string());
            let _ = stream.write_all(peer.unwrap_or_default().as_bytes());
        }
    });
    wait_until("both networks leased", Duration::from_secs(20), || {
        let s = status(&cluster, 0)?;
        Ok(s["networks"]
            .as_array()
            .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["lease"] == "held"))
            .then_some(()))
    })?;
    let open = Container::attach_to(&cluster, 0, "eg-open", "dcos")?;
    let closed = Container::attach_to(&cluster, 0, "eg-closed", "closed")?;
    let node = cluster.nodes[0].address.to_string();
    assert_eq!(seen_from_outside(&open, port)?, Some(node.clone()));
    assert_eq!(
        seen_from_outside(&closed, port)?,
        None,
        "egress = false: the outsider's answer has no way back"
    );
    let table = || -> Result<String> {
        let out = cluster.run_in(
            0,
            std::path::Path::new("/usr/sbin/nft"),
            &["list", "table", "ip", "dcnet_egress"],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let listed = table()?;
    assert!(
        listed.contains("ip saddr 9.0.0.0/8") && !listed.contains("172.30.0.0/16 ip daddr"),
        "{listed}"
    );

    // Removed by hand: the next reconcile (1 s here) puts it back.
    cluster.run_in(
        0,
        std::path::Path::new("/usr/sbin/nft"),
        &["delete", "table", "ip", "dcnet_egress"],
    )?;
    wait_until("the egress table restored", Duration::from_secs(10), || {
        Ok(table()?.contains("masquerade").then_some(()))
    })?;
    assert_eq!(seen_from_outside(&open, port)?, Some(node));
    // Counted once the restored table has been read back, a moment after it is there.
    wait_until("the repair counted", Duration::from_secs(5), || {
        let metrics = cluster.get_text(0, "/metrics")?;
        Ok(metrics
            .lines()
            .any(|l| {
                l.starts_with("dcnet_overlay_kernel_changes_total")
                    && l.contains("object=\"egress_table\"")
                    && l.contains("op=\"repair\"")
            })
            .then_some(()))
    })?;
    Ok(())
}

/// IPv6 overlays over the IPv4 underlay: `dcos6` (IPv6 only) and a dual-stack network.
/// Containers on two nodes ping with MTU-sized unfragmentable packets and talk TCP over both
/// families; the VTEP has its IPv6 address; an IPv6 route deleted by hand comes back; CHECK
/// finds a missing IPv6 default route.
#[test]
fn ipv6_and_dual_stack_containers_reach_each_other_across_nodes() -> Result<()> {
    let extra = "\n[[overlay.networks]]\nname = \"dcos6\"\n\n[[overlay.networks]]\nname = \"dual\"\nsubnet = \"172.30.0.0/16\"\nsubnet6 = \"fd01:e::/64\"\n";
    let cluster = overlay_cluster(2, extra)?;
    let formed = wait_formed(&cluster).with_context(|| cluster.log_tails(30))?;
    for s in &formed {
        let vtep4: Ipv4Addr = s["vtep"]["address"]
            .as_str()
            .and_then(|a| a.split('/').next()?.parse().ok())
            .context("VTEP address")?;
        let want6 = dcnet_overlay::vtep::address6("fd01:a::/64".parse()?, vtep4);
        assert_eq!(
            s["vtep"]["address6"].as_str(),
            Some(format!("{want6}/64").as_str()),
            "{s}"
        );
        let subnets = s["peers"][0]["subnets"].as_array().map_or(0, Vec::len);
        assert_eq!(subnets, 3, "dcos6's /80, dual's /24 and its /80: {s}");
    }

    let six = [
        Container::attach_to(&cluster, 0, "s1", "dcos6")?,
        Container::attach_to(&cluster, 1, "s2", "dcos6")?,
    ];
    let dual = [
        Container::attach_to(&cluster, 0, "d1", "dual")?,
        Container::attach_to(&cluster, 1, "d2", "dual")?,
    ];
    let ip6 = |c: &Container| {
        c.ip6
            .with_context(|| format!("{} has no IPv6 address", c.id))
    };
    for c in &six {
        assert!(c.attached.address.is_empty(), "IPv6 only: {:?}", c.attached);
        assert!(
            ip6(c)?.segments()[..4] == [0xfd01, 0xb, 0, 0],
            "{:?}",
            c.ip6
        );
    }
    for c in &dual {
        let v6 = ip6(c)?;
        assert_eq!(c.ip.octets()[..2], [172, 30]);
        assert_eq!(
            u32::from(v6.segments()[4]),
            u32::from(c.ip.octets()[2]),
            "the /80 is paired with the /24 of the same index: {} {v6}",
            c.ip
        );
        let routes =
            String::from_utf8_lossy(&c.ns.run("ip", &["-6", "route", "show", "default"])?.stdout)
                .into_owned();
        let gateway6 = c.attached.gateway6.context("gateway6")?;
        assert!(routes.contains(&format!("via {gateway6}")), "{routes}");
    }

    // MTU 1420: 1372 bytes of ICMPv6 payload fill an IPv6 packet, 1392 an IPv4 one.
    let crossings = [
        (&six[0], IpAddr::V6(ip6(&six[1])?), 1372),
        (&six[1], IpAddr::V6(ip6(&six[0])?), 1372),
        (&dual[0], IpAddr::V6(ip6(&dual[1])?), 1372),
        (&dual[1], IpAddr::V6(ip6(&dual[0])?), 1372),
        (&dual[0], IpAddr::V4(dual[1].ip), 1392),
        (&dual[1], IpAddr::V4(dual[0].ip), 1392),
    ];
    for (from, to, size) in crossings {
        let ok = wait_until("a ping across", Duration::from_secs(10), || {
            Ok(from.ping(to, size)?.then_some(()))
        });
        assert!(
            ok.is_ok(),
            "{} -> {to} ({size} bytes) failed\n{}",
            from.id,
            cluster.log_tails(20)
        );
        assert!(
            !from.ping(to, size + 1)?,
            "{} -> {to}: one byte more than the MTU must not pass unfragmented",
            from.id
        );
    }
    six[1].echo_server_on(IpAddr::V6(ip6(&six[1])?), 7000)?;
    tcp_echo(&six[0], ip6(&six[1])?, 7000)?;
    dual[1].echo_server_on(IpAddr::V6(ip6(&dual[1])?), 7001)?;
    tcp_echo(&dual[0], ip6(&dual[1])?, 7001)?;
    dual[1].echo_server(7002)?;
    tcp_echo(&dual[0], dual[1].ip, 7002)?;

    // An IPv6 route deleted by hand on node 1 comes back within a reconcile interval.
    let peer_subnet = format!(
        "{}/80",
        dcnet_overlay::ipam::ContainerIps::new(ipnetwork::IpNetwork::V6(
            ipnetwork::Ipv6Network::new(ip6(&six[1])?, 80)?
        ))
        .subnet()
        .network()
    );
    let routes = node_ip(&cluster, 0, &["-6", "route", "show", "table", "42"]);
    assert!(
        routes.contains(&peer_subnet),
        "{peer_subnet} missing from:\n{routes}"
    );
    node_ip(
        &cluster,
        0,
        &["-6", "route", "del", &peer_subnet, "table", "42"],
    );
    wait_until("the IPv6 route repaired", Duration::from_secs(10), || {
        let routes = node_ip(&cluster, 0, &["-6", "route", "show", "table", "42"]);
        Ok(routes.contains(&peer_subnet).then_some(()))
    })?;
    assert!(six[0].ping(ip6(&six[1])?, 1372)?);

    // CHECK verifies both addresses and both default routes.
    let check = |c: &Container| -> Result<(u16, String)> {
        let body = serde_json::json!({ "container_id": c.id, "network": "dual" });
        cluster.post(c.node, "/v1/overlay/check", &body.to_string())
    };
    let (code, text) = check(&dual[0])?;
    assert_eq!(code, 200, "{text}");
    let checked: Value = serde_json::from_str(&text)?;
    assert!(
        checked["address6"]
            .as_str()
            .is_some_and(|a| a.ends_with("/80")),
        "{checked}"
    );
    let out = dual[0].ns.run("ip", &["-6", "route", "del", "default"])?;
    assert!(out.status.success());
    let (code, text) = check(&dual[0])?;
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("default route via fd01:e:"), "{text}");
    Ok(())
}

/// An IPv6 underlay: the nodes advertise IPv6 addresses, gossip and VXLAN run over IPv6 (VTEP
/// source and FDB destinations), both overlays carry MTU-sized unfragmentable packets (the
/// VTEP's MTU is 1430: VXLAN over IPv6 costs 70 bytes), and forged VXLAN from an outsider's
/// IPv6 address is dropped while a peer's is delivered.
#[test]
fn an_ipv6_underlay_carries_both_overlays_and_forged_vxlan_is_dropped() -> Result<()> {
    let mut options = ClusterOptions::nodes(2);
    options.underlay6 = true;
    let mut cluster = overlay_cluster_with(options, "")?;
    let formed = wait_formed(&cluster).with_context(|| cluster.log_tails(30))?;
    let [node1, node2] = [0, 1].map(|i| cluster.nodes[i].address6.expect("an IPv6 underlay"));
    let vtep = node_ip(&cluster, 0, &["-d", "link", "show", "vtep1024"]);
    assert!(
        vtep.contains(&format!("local {node1}")) && vtep.contains("mtu 1430"),
        "{vtep}"
    );
    let fdb = node_fdb(&cluster, 0);
    assert!(
        fdb.contains(&format!("dst {node2} self permanent")),
        "{fdb}"
    );
    assert_eq!(formed[0]["vxlan_filter"]["peers"], 1, "{}", formed[0]);

    let a = Container::attach(&cluster, 0, "u6-a")?;
    let b = Container::attach(&cluster, 1, "u6-b")?;
    let s1 = Container::attach_to(&cluster, 0, "u6-s1", "dcos6")?;
    let s2 = Container::attach_to(&cluster, 1, "u6-s2", "dcos6")?;
    let s2_ip = s2.ip6.context("dcos6 address")?;
    for (from, to, size) in [
        (&a, IpAddr::V4(b.ip), 1392),
        (&b, IpAddr::V4(a.ip), 1392),
        (&s1, IpAddr::V6(s2_ip), 1372),
    ] {
        let ok = wait_until("a ping across", Duration::from_secs(10), || {
            Ok(from.ping(to, size)?.then_some(()))
        });
        assert!(ok.is_ok(), "{} -> {to} ({size} bytes) failed", from.id);
    }
    b.echo_server(7000)?;
    tcp_echo(&a, b.ip, 7000)?;

    // Forged VXLAN from the outsider's IPv6 address: dropped at node 1, counted.
    cluster.add_outsider()?;
    let outsider = cluster.outsider().context("the outsider")?;
    let mut command = std::process::Command::new("ip");
    command.args([
        "-6",
        "addr",
        "add",
        "fd00:dc::fa/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    dcnet_tests::cluster::in_netns(&mut command, outsider, true);
    assert!(command.status()?.success());
    let to = SocketAddr::from((node1, 64000));
    forged_dropped_and_genuine_delivered(&cluster, &formed, (&a, &b), to)?;
    Ok(())
}
