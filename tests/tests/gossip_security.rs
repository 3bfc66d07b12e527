//! Gossip against a hostile underlay, with real agents in namespaces:
//!
//! - datagrams captured on a node's link (tcpdump) and sent again from an outsider on the
//!   underlay get no answer at all and are counted as replays; a KV value published during
//!   the capture is not readable in it;
//! - the cluster key is rotated with `dcnet keyring` (install everywhere, use everywhere,
//!   remove everywhere) while a sampler reads every node's membership: no node is ever seen
//!   down, a step in the wrong order is refused naming the nodes not ready, and a restarted
//!   node keeps the new key.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_agent::node::NodeState;
use dcnet_tests::cluster::{GOSSIP_PORT, in_netns};
use dcnet_tests::{Cluster, ClusterOptions, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const FORM: Duration = Duration::from_secs(20);

fn formed(cluster: &Cluster) -> Result<()> {
    for i in 0..cluster.nodes.len() {
        wait_until("every node to see every node up", FORM, || {
            let members = cluster.members(i)?;
            Ok((members.len() == cluster.nodes.len()
                && members.iter().all(|m| m.state == NodeState::Up))
            .then_some(()))
        })?;
    }
    Ok(())
}

/// `dcnet_gossip_datagrams_rejected_total{reason=...}` on node `i`.
fn rejected(cluster: &Cluster, i: usize, reason: &str) -> Result<f64> {
    let metrics = cluster.get_text(i, "/metrics")?;
    Ok(metrics
        .lines()
        .find(|l| {
            l.starts_with("dcnet_gossip_datagrams_rejected_total")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0))
}

type Payloads = Vec<Vec<u8>>;

/// The UDP payloads of unfragmented IPv4 packets to or from `host` and port `port` in a pcap
/// file (Ethernet): (to host, from host).
fn udp_payloads(pcap: &[u8], host: Ipv4Addr, port: u16) -> Result<(Payloads, Payloads)> {
    if pcap.len() < 24 || pcap[..4] != [0xd4, 0xc3, 0xb2, 0xa1] {
        bail!("not a little-endian pcap file ({} bytes)", pcap.len());
    }
    let (mut to, mut from) = (Vec::new(), Vec::new());
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into()?) as usize;
        let frame = pcap.get(at + 16..at + 16 + len).context("truncated pcap")?;
        at += 16 + len;
        let Some(ip) = frame.get(14..) else { continue };
        if frame[12..14] != [0x08, 0x00] || ip.len() < 28 || ip[9] != 17 {
            continue;
        }
        let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        if fragmented || udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != port {
            continue;
        }
        let payload = udp[8..].to_vec();
        if ip[16..20] == host.octets() {
            to.push(payload);
        } else if ip[12..16] == host.octets() {
            from.push(payload);
        }
    }
    Ok((to, from))
}

/// Sends each payload to `to` from the outsider and counts the datagrams that come back
/// within 2 s.
const REPLAYER: &str = r#"
import socket, sys
to = (sys.argv[1], int(sys.argv[2]))
payloads = [bytes.fromhex(l) for l in open(sys.argv[3]).read().split()]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[2])))
for p in payloads:
    s.sendto(p, to)
s.settimeout(2.0)
answers = 0
try:
    while True:
        s.recvfrom(70000)
        answers += 1
except socket.timeout:
    pass
print(answers)
"#;

#[test]
fn replayed_gossip_gets_no_answer_and_is_counted() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::nodes(3))?;
    formed(&cluster)?;
    cluster.add_outsider()?;
    let dir = tempfile::tempdir()?;
    let pcap = dir.path().join("gossip.pcap");
    let marker = "dcnet-cleartext-marker-7f3a9c";

    // Capture node 1's gossip for 3 s while node 2 publishes a value.
    let capture = std::thread::scope(|s| {
        let tcpdump = s.spawn(|| {
            cluster.run_in(
                0,
                std::path::Path::new("timeout"),
                &[
                    "3",
                    "tcpdump",
                    "-i",
                    "eth0",
                    "-U",
                    "-w",
                    pcap.to_str().unwrap_or_default(),
                    "udp",
                    "port",
                    &GOSSIP_PORT.to_string(),
                ],
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        let published = cluster.put(1, "/v1/kv/marker", marker);
        let captured = tcpdump.join();
        published.map(|()| captured)
    })?;
    drop(capture);
    let bytes = std::fs::read(&pcap).context("tcpdump wrote no capture")?;
    assert!(
        !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "the KV value is readable on the wire"
    );
    wait_until("node 1 to see the value", FORM, || {
        let entries: Vec<Value> = cluster.get(0, "/v1/kv/marker")?;
        Ok((!entries.is_empty()).then_some(()))
    })?;
    // Node 1's own datagrams come back as reflections, the others' as replays.
    let (to_node_1, from_node_1) = udp_payloads(&bytes, cluster.nodes[0].address, GOSSIP_PORT)?;
    assert!(
        to_node_1.len() >= 5 && from_node_1.len() >= 5,
        "only {} + {} gossip datagrams captured",
        to_node_1.len(),
        from_node_1.len()
    );
    let to_node_1: Vec<Vec<u8>> = to_node_1.into_iter().chain(from_node_1).collect();

    // Replayed from the outsider, claiming its own address as the source: no answer.
    let replays_before = rejected(&cluster, 0, "replay")?;
    let list = dir.path().join("payloads");
    let hex: Vec<String> = to_node_1
        .iter()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    std::fs::write(&list, hex.join("\n"))?;
    let outsider = cluster.outsider().context("the outsider")?;
    let mut command = std::process::Command::new("python3");
    command.args([
        "-c",
        REPLAYER,
        &cluster.nodes[0].address.to_string(),
        &GOSSIP_PORT.to_string(),
        list.to_str().unwrap_or_default(),
    ]);
    in_netns(&mut command, outsider, true);
    let out = command.output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: u32 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    assert_eq!(answers, 0, "node 1 answered a replay");
    // Node 1 heard every one of them before: all are replays, none stale or forged.
    let replays = wait_until("the replays to be counted", FORM, || {
        let n = rejected(&cluster, 0, "replay")? - replays_before;
        eprintln!("{n} of {} counted as replays", to_node_1.len());
        Ok((n >= to_node_1.len() as f64).then_some(n))
    })?;
    eprintln!(
        "{} captured datagrams replayed: {replays} counted as replays, {answers} answers",
        to_node_1.len()
    );
    assert_eq!(rejected(&cluster, 0, "auth")?, 0.0);
    formed(&cluster)?;
    Ok(())
}

fn keyring(cluster: &Cluster, i: usize) -> Result<Value> {
    Ok(serde_json::from_str(
        &cluster.cli(i, &["keyring", "list", "--json"])?,
    )?)
}

/// Whether node `i` sees every node's published keyring satisfy `ok`.
fn every_node(cluster: &Cluster, i: usize, ok: impl Fn(&Value) -> bool) -> Result<Option<()>> {
    let list = keyring(cluster, i)?;
    let nodes = list["nodes"].as_array().context("nodes")?;
    Ok(
        (nodes.len() == cluster.nodes.len() && nodes.iter().all(|n| ok(&n["keyring"])))
            .then_some(()),
    )
}

fn has(keyring: &Value, id: &str) -> bool {
    keyring["keys"]
        .as_array()
        .is_some_and(|k| k.iter().any(|k| k == id))
}

#[test]
fn a_key_rotation_keeps_every_node_up_throughout() -> Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::nodes(3))?;
    formed(&cluster)?;
    let old = keyring(&cluster, 0)?["keyring"]["primary"]
        .as_str()
        .context("a primary key")?
        .to_owned();
    let key = cluster.cli(0, &["keyring", "generate"])?.trim().to_owned();

    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        // Every 100 ms, every node's view: any node not up is a failure of the rotation.
        let sampler = s.spawn(|| {
            let mut samples = 0;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..3 {
                    let members = cluster.members(i)?;
                    if let Some(m) = members.iter().find(|m| m.state != NodeState::Up) {
                        bail!("node {} saw {:?} {:?}", i + 1, m.name, m.state);
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(samples)
        });
        let rotated = rotate(&cluster, &key, &old);
        stop.store(true, Ordering::Relaxed);
        let samples = sampler
            .join()
            .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
        rotated.and(samples)
    });
    let samples = result?;
    eprintln!("rotation sampled {samples} times on 3 nodes, every node up each time");
    for i in 0..3 {
        assert_eq!(rejected(&cluster, i, "auth")?, 0.0, "node {}", i + 1);
    }

    // The keyring file outlives a restart, and the node rejoins with the new key.
    cluster.stop_agent(2, Signal::SIGTERM, Duration::from_secs(10));
    cluster.start_agent(2)?;
    formed(&cluster)?;
    let id = keyring(&cluster, 2)?["keyring"]["primary"].clone();
    assert_eq!(keyring(&cluster, 0)?["keyring"]["primary"], id);
    assert_ne!(id, old.as_str());
    Ok(())
}

fn rotate(cluster: &Cluster, key: &str, old: &str) -> Result<()> {
    // Used before the others have it: refused, naming them.
    let refused = cluster
        .cli(0, &["keyring", "use", key])
        .expect_err("a key the others lack");
    let text = refused.to_string();
    assert!(
        text.contains("node-2") && text.contains("node-3") && text.contains("install it there"),
        "{text}"
    );

    let mut id = String::new();
    for i in 0..3 {
        let said = cluster.cli(i, &["keyring", "install", key])?;
        id = said
            .split_whitespace()
            .nth(2)
            .context("the key id")?
            .trim_end_matches(';')
            .to_owned();
    }
    wait_until("every node to publish the new key", FORM, || {
        every_node(cluster, 0, |k| has(k, &id))
    })?;
    for i in 0..3 {
        cluster.cli(i, &["keyring", "use", &id])?;
        if i == 0 {
            // The old key cannot go while others still send with it.
            let refused = cluster
                .cli(0, &["keyring", "remove", old])
                .expect_err("others still send with it");
            assert!(
                refused.to_string().contains("still send with key"),
                "{refused}"
            );
        }
    }
    for i in 0..3 {
        wait_until("every node to send with the new key", FORM, || {
            every_node(cluster, i, |k| k["primary"] == id.as_str())
        })?;
    }
    for i in 0..3 {
        cluster.cli(i, &["keyring", "remove", old])?;
    }
    wait_until("the old key gone everywhere", FORM, || {
        every_node(cluster, 0, |k| !has(k, old) && has(k, &id))
    })?;
    // Gossip still carries changes.
    cluster.put(2, "/v1/kv/after-rotation", "yes")?;
    wait_until("node 1 to see a value published after", FORM, || {
        let entries: Vec<Value> = cluster.get(0, "/v1/kv/after-rotation")?;
        Ok((!entries.is_empty()).then_some(()))
    })?;
    Ok(())
}
