//! The container fast path (tc programs on the VTEP and the containers' veths) in a namespace
//! cluster: it carries container traffic across nodes and on one node with the semantics of
//! forwarding (TTL, MTU), the kernel holds exactly its links, links removed by hand come back
//! within a reconcile interval (1 s here, 5 s allowed), the links outlive a killed agent
//! (pinned) and a restarted one puts its programs into them; turned off, they go at the next
//! start.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_tests::container::Container;
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const OVERLAY: &str =
    "\n[overlay]\nenabled = true\nreconcile_interval = \"1s\"\nlease_settle = \"1s\"\n";

fn overlay_cluster(n: usize) -> Result<Cluster> {
    let mut options = ClusterOptions::nodes(n);
    for node in &mut options.nodes {
        *node = NodeSpec {
            extra_config: OVERLAY.into(),
            ..NodeSpec::default()
        };
    }
    Cluster::start(options)
}

fn fast_path(cluster: &Cluster, i: usize) -> Result<Value> {
    Ok(cluster.get::<Value>(i, "/v1/overlay")?["fast_path"].clone())
}

fn packets(cluster: &Cluster, i: usize, outcome: &str) -> Result<u64> {
    fast_path(cluster, i)?["packets"][outcome]
        .as_u64()
        .with_context(|| format!("node {}: no fast path counter {outcome:?}", i + 1))
}

/// The ids of the kernel's BPF links of program `prog_id` (links are global objects).
fn links_of(prog_id: u64) -> Result<Vec<u64>> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .context("running bpftool (apt install bpftool)")?;
    let links: Vec<Value> = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "bpftool link show: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok(links
        .iter()
        .filter(|l| l["prog_id"].as_u64() == Some(prog_id))
        .filter_map(|l| l["id"].as_u64())
        .collect())
}

fn program_id(status: &Value, name: &str) -> Result<u64> {
    status["programs"][name]
        .as_u64()
        .with_context(|| format!("no id of program {name} in {status}"))
}

/// Waits until node `i` has its programs at ingress of the VTEP and of `veths`, in its status
/// and in the kernel; returns the status.
fn wait_attached(cluster: &Cluster, i: usize, veths: &[&str]) -> Result<Value> {
    wait_until(
        &format!("node {}'s fast path on the VTEP and {veths:?}", i + 1),
        Duration::from_secs(10),
        || {
            let s = fast_path(cluster, i)?;
            if s["endpoints"] != veths.len() || s["interfaces"] != veths.len() + 1 {
                return Ok(None);
            }
            let from_container = program_id(&s, "fastpath_from_container")? as u32;
            let from_tunnel = program_id(&s, "fastpath_from_tunnel")? as u32;
            let attached = |interface: &str, id: u32| -> Result<bool> {
                let interface = interface.to_owned();
                let programs = cluster.nodes[i]
                    .netns
                    .run(move || dcnet_lb::fastpath::ingress_programs(&interface))??;
                Ok(programs.contains(&id))
            };
            let mut all = attached("vtep1024", from_tunnel)?;
            for veth in veths {
                all &= attached(veth, from_container)?;
            }
            Ok(all.then_some(s))
        },
    )
}

/// Sends `size` bytes over TCP (segments as large as the MTU allows, and GSO batches) and
/// checks the echo.
fn tcp_echo(from: &Container, to: impl Into<IpAddr>, size: usize) -> Result<()> {
    let to = to.into();
    let target = SocketAddr::from((to, 7000));
    let mut stream = from
        .ns
        .netns()
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(3)))??;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let payload: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let mut writer = stream.try_clone()?;
    let sent = payload.clone();
    let sender = std::thread::spawn(move || writer.write_all(&sent));
    let mut back = vec![0u8; payload.len()];
    stream
        .read_exact(&mut back)
        .with_context(|| format!("echo of {size} bytes from {to}"))?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    if back != payload {
        bail!("the echo from {to} differs from what was sent");
    }
    Ok(())
}

/// Pings and TCP among `a1`, `a2` (node 1) and `b` (node 2), as the fast path and the bridge
/// must both carry them.
fn traffic(cluster: &Cluster, a1: &Container, a2: &Container, b: &Container) -> Result<()> {
    // Across nodes: full-MTU pings without fragmentation (1392 + 28 = 1420), forwarded by
    // both nodes (TTL 64 - 2), and TCP both ways.
    assert_eq!(a1.ping_ttl(b.ip, 1392)?, Some(62), "a1 -> b");
    assert_eq!(b.ping_ttl(a2.ip, 1392)?, Some(62), "b -> a2");
    tcp_echo(a1, b.ip, 1 << 20)?;
    tcp_echo(b, a1.ip, 1 << 20)?;
    // One node, one subnet: bridged, the TTL untouched.
    assert_eq!(a1.ping_ttl(a2.ip, 1392)?, Some(64), "a1 -> a2");
    tcp_echo(a2, a1.ip, 1 << 20)?;
    // The container's own node: its gateway and its underlay address; the other node's
    // underlay address (routed by the node, not the tunnel).
    let gateway = a1.attached.gateway;
    assert_eq!(a1.ping_ttl(gateway, 1392)?, Some(64), "a1 -> its gateway");
    assert_eq!(
        a1.ping_ttl(cluster.nodes[0].address, 1392)?,
        Some(64),
        "a1 -> its node"
    );
    assert!(
        a1.ping_ttl(cluster.nodes[1].address, 56)?.is_some(),
        "a1 -> the other node"
    );
    Ok(())
}

/// The packets each node's fast path sent into the tunnel and into containers so far.
fn moved(cluster: &Cluster) -> Result<[u64; 4]> {
    Ok([
        packets(cluster, 0, "to_tunnel")?,
        packets(cluster, 0, "to_container")?,
        packets(cluster, 1, "to_tunnel")?,
        packets(cluster, 1, "to_container")?,
    ])
}

/// Every one of [`moved`]'s counters grew by at least 20 from `before` to `after`.
fn assert_moved(cluster: &Cluster, before: [u64; 4], after: [u64; 4]) -> Result<()> {
    for (k, what) in [
        "node 1 to the tunnel",
        "node 1 into containers",
        "node 2 to the tunnel",
        "node 2 into containers",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            after[k] >= before[k] + 20,
            "{what}: {} -> {} packets through the fast path; node 1: {}, node 2: {}",
            before[k],
            after[k],
            fast_path(cluster, 0)?,
            fast_path(cluster, 1)?
        );
    }
    Ok(())
}

#[test]
fn the_fast_path_carries_container_traffic_and_is_repaired() -> Result<()> {
    let mut cluster = overlay_cluster(2)?;
    let run = |cluster: &mut Cluster| -> Result<()> {
        for i in 0..2 {
            wait_until(
                &format!("node {} to hold its subnet and know its peer", i + 1),
                Duration::from_secs(20),
                || {
                    let s = cluster.get::<Value>(i, "/v1/overlay")?;
                    let ready = s["networks"][0]["lease"] == "held"
                        && s["peers"].as_array().map_or(0, Vec::len) == 1;
                    Ok(ready.then_some(()))
                },
            )?;
        }
        let a1 = Container::attach(cluster, 0, "fa1")?;
        let a2 = Container::attach(cluster, 0, "fa2")?;
        let b = Container::attach(cluster, 1, "fb")?;
        for c in [&a1, &a2, &b] {
            c.echo_server(7000)?;
        }
        let veths1 = [
            a1.attached.host_veth.as_str(),
            a2.attached.host_veth.as_str(),
        ];
        let node1 = wait_attached(cluster, 0, &veths1)?;
        wait_attached(cluster, 1, &[b.attached.host_veth.as_str()])?;
        wait_until("the tunnel", Duration::from_secs(20), || {
            Ok(a1.ping_ttl(b.ip, 56)?.map(|_| ()))
        })?;

        let before = moved(cluster)?;
        traffic(cluster, &a1, &a2, &b)?;
        // 2 MiB each way across nodes is dozens of packets even in GSO batches of 64 KiB.
        assert_moved(cluster, before, moved(cluster)?)?;

        // Links removed by hand (a container's and the VTEP's) are attached again.
        let from_container = links_of(program_id(&node1, "fastpath_from_container")?)?;
        let from_tunnel = links_of(program_id(&node1, "fastpath_from_tunnel")?)?;
        for link in [from_container[0], from_tunnel[0]] {
            let out = std::process::Command::new("bpftool")
                .args(["link", "detach", "id", &link.to_string()])
                .output()?;
            assert!(out.status.success(), "bpftool link detach {link}: {out:?}");
        }
        let repaired = wait_until("both repairs", Duration::from_secs(5), || {
            let s = wait_attached(cluster, 0, &veths1)?;
            Ok((s["repairs"].as_u64() >= Some(2)).then_some(s))
        })?;
        eprintln!("repaired: {repaired}");
        let before = packets(cluster, 0, "to_tunnel")?;
        traffic(cluster, &a1, &a2, &b)?;
        assert!(packets(cluster, 0, "to_tunnel")? > before + 20);

        // Without its agent, node 1's links stay (pinned in its state directory) with the
        // last programs in them, and traffic goes on.
        let node1 = wait_attached(cluster, 0, &veths1)?;
        let old = program_id(&node1, "fastpath_from_container")?;
        let mut links_before = links_of(old)?;
        links_before.sort_unstable();
        assert_eq!(links_before.len(), 2, "one link per container veth");
        cluster.stop_agent(0, Signal::SIGKILL, Duration::from_secs(5));
        for veth in veths1 {
            let programs = cluster.nodes[0]
                .netns
                .run(|| dcnet_lb::fastpath::ingress_programs(veth))??;
            assert_eq!(programs, [old as u32], "the last program stays on {veth:?}");
        }
        traffic(cluster, &a1, &a2, &b)?;
        // A restarted agent puts its programs into the same links (no second attachment).
        cluster.start_agent(0)?;
        let restarted = wait_attached(cluster, 0, &veths1)?;
        let new = program_id(&restarted, "fastpath_from_container")?;
        assert_ne!(new, old);
        let mut links_after = links_of(new)?;
        links_after.sort_unstable();
        assert_eq!(links_after, links_before, "the same links, adopted");
        assert!(links_of(old)?.is_empty(), "the old program is in no link");
        for veth in veths1 {
            let programs = cluster.nodes[0]
                .netns
                .run(|| dcnet_lb::fastpath::ingress_programs(veth))??;
            assert_eq!(programs, [new as u32], "only the new program on {veth:?}");
        }
        let before = packets(cluster, 0, "to_tunnel")?;
        traffic(cluster, &a1, &a2, &b)?;
        assert!(packets(cluster, 0, "to_tunnel")? > before + 20);

        // Turned off: the pinned links go with the next start, and the bridge carries on.
        let config = &cluster.nodes[0].config_path;
        let text = std::fs::read_to_string(config)?;
        let off = text.replace(
            "[overlay]\nenabled = true\n",
            "[overlay]\nenabled = true\nfast_path = false\n",
        );
        assert_ne!(off, text, "the overlay section of {}", config.display());
        std::fs::write(config, off)?;
        cluster.stop_agent(0, Signal::SIGTERM, Duration::from_secs(5));
        cluster.start_agent(0)?;
        wait_until(
            "node 1 without the fast path",
            Duration::from_secs(10),
            || {
                let s = cluster.get::<Value>(0, "/v1/overlay")?;
                let mut bare = s["fast_path"].is_null();
                for interface in veths1.iter().copied().chain(["vtep1024"]) {
                    bare &= cluster.nodes[0]
                        .netns
                        .run(|| dcnet_lb::fastpath::ingress_programs(interface))??
                        .is_empty();
                }
                Ok(bare.then_some(()))
            },
        )?;
        assert!(links_of(new)?.is_empty(), "no link left");
        traffic(cluster, &a1, &a2, &b)?;
        Ok(())
    };
    let result = run(&mut cluster);
    if let Err(e) = &result {
        eprintln!("{e:#}\n{}", cluster.log_tails(40));
    }
    result
}

/// IPv6 containers (on dcos6) take the fast path too: across nodes the hop limit drops once per
/// node and MTU-sized packets cross unfragmented, one node's containers are bridged as they
/// are, the gateway and neighbour discovery take the stack's path, and both nodes count the
/// packets they moved.
#[test]
fn the_fast_path_carries_ipv6_containers() -> Result<()> {
    let cluster = overlay_cluster(2)?;
    for i in 0..2 {
        wait_until(
            &format!("node {} to hold its dcos6 subnet and know its peer", i + 1),
            Duration::from_secs(20),
            || {
                let s = cluster.get::<Value>(i, "/v1/overlay")?;
                let ready = s["networks"]
                    .as_array()
                    .is_some_and(|n| n.iter().all(|n| n["lease"] == "held"))
                    && s["peers"][0]["subnets"].as_array().map_or(0, Vec::len) == 2;
                Ok(ready.then_some(()))
            },
        )?;
    }
    let a1 = Container::attach_to(&cluster, 0, "six1", "dcos6")?;
    let a2 = Container::attach_to(&cluster, 0, "six2", "dcos6")?;
    let b = Container::attach_to(&cluster, 1, "six3", "dcos6")?;
    let ip6 = |c: &Container| c.ip6.context("a dcos6 address");
    let (a1_ip, a2_ip, b_ip) = (ip6(&a1)?, ip6(&a2)?, ip6(&b)?);
    for (c, ip) in [(&a1, a1_ip), (&a2, a2_ip), (&b, b_ip)] {
        c.echo_server_on(IpAddr::V6(ip), 7000)?;
    }
    let veths1 = [
        a1.attached.host_veth.as_str(),
        a2.attached.host_veth.as_str(),
    ];
    wait_attached(&cluster, 0, &veths1)?;
    wait_attached(&cluster, 1, &[b.attached.host_veth.as_str()])?;
    wait_until("the tunnel", Duration::from_secs(20), || {
        Ok(a1.ping_ttl(b_ip, 56)?.map(|_| ()))
    })?;
    let before = moved(&cluster)?;
    // 1372 + 48 = 1420, the network's MTU.
    assert_eq!(a1.ping_ttl(b_ip, 1372)?, Some(62), "a1 -> b");
    assert_eq!(b.ping_ttl(a2_ip, 1372)?, Some(62), "b -> a2");
    assert!(
        !a1.ping(b_ip, 1373)?,
        "one byte more does not fit unfragmented"
    );
    tcp_echo(&a1, b_ip, 1 << 20)?;
    tcp_echo(&b, a1_ip, 1 << 20)?;
    assert_eq!(a1.ping_ttl(a2_ip, 1372)?, Some(64), "a1 -> a2, bridged");
    tcp_echo(&a2, a1_ip, 1 << 20)?;
    let gateway6 = a1.attached.gateway6.context("gateway6")?;
    assert_eq!(a1.ping_ttl(gateway6, 1372)?, Some(64), "a1 -> its gateway");
    assert_moved(&cluster, before, moved(&cluster)?)?;
    let endpoints = fast_path(&cluster, 0)?["endpoints"].as_u64();
    assert_eq!(
        endpoints,
        Some(2),
        "one IPv6 endpoint per container of node 1"
    );
    Ok(())
}
