//! `make demo`: a local dcnet cluster on this machine.
//!
//! Three nodes (two zones of one region), each a network namespace running `dcnet agent`,
//! joined over an underlay bridge. It waits for the cluster to form, shows the membership table
//! with `dcnet nodes` run inside a node, shows a key replicating, DNS on every node, and a
//! container on each node reaching the others over the VXLAN overlay, then cleans up; with `--keep` it
//! leaves the cluster running and prints how to explore and stop it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dcnet_agent::node::NodeState;
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};

const NODES: usize = 3;

fn main() {
    let keep = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => false,
        [flag] if flag == "--keep" => true,
        _ => {
            eprintln!(
                "usage: dcnet-demo [--keep]\n  --keep  leave the cluster running and print how to explore and stop it"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = run(keep) {
        eprintln!("demo failed: {e:#}");
        std::process::exit(1);
    }
}

fn step(n: usize, total: usize, text: &str) {
    println!("[{n}/{total}] {text}");
}

fn run(keep: bool) -> Result<()> {
    let total = 6;
    step(
        1,
        total,
        "building 3 nodes: network namespaces on an underlay bridge, agents started",
    );
    let zones = ["zone-a", "zone-a", "zone-b"];
    let mut options = ClusterOptions::nodes(0);
    options.die_with_parent = !keep;
    options.nodes = zones
        .iter()
        .enumerate()
        .map(|(i, zone)| NodeSpec {
            region: Some("local".into()),
            zone: Some((*zone).into()),
            roles: if i == 0 {
                vec!["master".into(), "agent".into()]
            } else {
                vec!["agent".into()]
            },
            // Containers reach their node's DNS at their gateway address.
            dns_config: "listen = [\"0.0.0.0:53\"]\n".into(),
            extra_config: "\n[overlay]\nenabled = true\n".into(),
            ..NodeSpec::default()
        })
        .collect();
    let started = Instant::now();
    let mut cluster = Cluster::start(options).context("starting the cluster")?;
    for node in &cluster.nodes {
        println!(
            "      {}  {:<15}  namespace {}",
            node.name,
            node.address,
            node.netns.name()
        );
    }

    step(
        2,
        total,
        "waiting for every node to see every other through gossip",
    );
    for i in 0..NODES {
        wait_until(
            &format!("{} to see {NODES} nodes up", cluster.nodes[i].name),
            Duration::from_secs(30),
            || {
                let members = cluster.members(i)?;
                let up = members
                    .iter()
                    .filter(|m| m.state == NodeState::Up && m.name.is_some())
                    .count();
                Ok((up == NODES).then_some(()))
            },
        )?;
    }
    println!("      formed in {:.1?}", started.elapsed());

    step(
        3,
        total,
        "membership as node-1 sees it (`dcnet nodes`, run inside node-1's namespace):",
    );
    let out = cluster.run_in(0, cluster.dcnet(), &["nodes"])?;
    anyhow::ensure!(
        out.status.success(),
        "dcnet nodes failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("      {line}");
    }

    step(
        4,
        total,
        "a key published on node-1 (PUT /v1/kv/hello), read on node-3:",
    );
    cluster.put(0, "/v1/kv/hello", "world")?;
    let published = Instant::now();
    let entries: Vec<serde_json::Value> =
        wait_until("node-3 to read the key", Duration::from_secs(10), || {
            Ok(cluster
                .get::<Vec<serde_json::Value>>(2, "/v1/kv/hello")
                .ok())
        })?;
    println!(
        "      node-3 reads {} after {:.0?}",
        entries[0]["value"],
        published.elapsed()
    );

    step(
        5,
        total,
        "DNS on every node, answered from its gossip replica (dig inside each namespace):",
    );
    for i in 0..NODES {
        let dig = |name: &str| -> Result<String> {
            let out = cluster.run_in(
                i,
                std::path::Path::new("dig"),
                &["@127.0.0.1", "+short", "+time=1", name],
            )?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "))
        };
        println!(
            "      {}: thisnode.thisdcos.directory -> {:<12} master.dcos.thisdcos.directory -> {}",
            cluster.nodes[i].name,
            dig("thisnode.thisdcos.directory")?,
            dig("master.dcos.thisdcos.directory")?
        );
    }

    step(
        6,
        total,
        "the overlay: leases agreed through gossip, one container per node attached over the API",
    );
    let containers = overlay(&cluster)?;

    if keep {
        let mut stop = cluster.keep();
        stop.extend(
            containers
                .iter()
                .map(|c| format!("ip netns delete {c}; rm -rf /etc/netns/{c}")),
        );
        let ns1 = &cluster.nodes[0].netns.name().to_owned();
        println!("\nThe cluster keeps running. Explore it:");
        println!("  ip netns exec {ns1} {} nodes", cluster.dcnet().display());
        println!("  ip netns exec {ns1} curl -s 127.0.0.1:62080/metrics");
        println!("  ip netns exec {ns1} dig @127.0.0.1 ready.spartan");
        println!("  ip netns exec {ns1} curl -s 127.0.0.1:62080/v1/overlay");
        if let (Some(first), Some(last)) = (containers.first(), containers.last()) {
            println!("  ip netns exec {first} ip addr show eth0");
            println!("  ip netns exec {last} dig +short thisnode.thisdcos.directory");
        }
        println!(
            "  logs and configs: {}",
            cluster.nodes[0]
                .log_path
                .parent()
                .and_then(|p| p.parent())
                .map_or(String::new(), |p| p.display().to_string())
        );
        println!("Stop it:");
        for command in stop {
            println!("  {command}");
        }
    } else {
        println!(
            "\ncleaning up (namespaces, links, agents); run with --keep to leave the cluster running"
        );
        // A detach deletes the namespace the agent created, and its resolv.conf.
        for (i, c) in containers.iter().enumerate() {
            let body = serde_json::json!({ "container_id": c });
            if !matches!(
                cluster.post(i, "/v1/overlay/detach", &body.to_string()),
                Ok((200, _))
            ) {
                let _ = dcnet_overlay::Netns::delete_by_name(c);
                let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(c));
            }
        }
        drop(cluster);
        println!("done");
    }
    Ok(())
}

/// Waits for every node's overlay, attaches a container namespace on each (the agent creates
/// it), and shows them reaching each other. Returns the containers' namespace names.
fn overlay(cluster: &Cluster) -> Result<Vec<String>> {
    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..NODES {
        statuses.push(wait_until(
            &format!("{}'s overlay to reach its peers", cluster.nodes[i].name),
            Duration::from_secs(30),
            || {
                let s: serde_json::Value = cluster.get(i, "/v1/overlay")?;
                let ready = s["networks"][0]["lease"] == "held"
                    && s["peers"].as_array().map_or(0, Vec::len) == NODES - 1;
                Ok(ready.then_some(s))
            },
        )?);
    }
    println!("      agreed in {:.1?}", started.elapsed());
    let mut names = Vec::new();
    let mut addresses = Vec::new();
    for (i, s) in statuses.iter().enumerate() {
        let name = format!("{}-c{}", cluster.nodes[i].netns.name(), i + 1);
        let body = serde_json::json!({ "container_id": name, "netns": name, "create": true });
        let (status, text) = cluster.post(i, "/v1/overlay/attach", &body.to_string())?;
        anyhow::ensure!(
            status == 200,
            "attaching a container on {}: {text}",
            cluster.nodes[i].name
        );
        names.push(name.clone());
        let attached: serde_json::Value = serde_json::from_str(&text)?;
        let address = attached["address"].as_str().unwrap_or("?").to_owned();
        println!(
            "      {}: VTEP {:<16} subnet {:<14} container {name} eth0 {address}",
            cluster.nodes[i].name,
            s["vtep"]["address"].as_str().unwrap_or("?"),
            s["networks"][0]["subnet"].as_str().unwrap_or("?"),
        );
        addresses.push(address.split('/').next().unwrap_or("").to_owned());
    }
    for (j, to) in addresses.iter().enumerate().skip(1) {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &names[0], "ping", "-c", "3", "-i", "0.2", "-q", to,
            ])
            .output()
            .context("running ping (apt install iputils-ping, or scripts/setup.sh)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text.lines().last().unwrap_or("no reply");
        println!(
            "      ping {} -> {} on {}: {summary}",
            addresses[0], to, cluster.nodes[j].name
        );
    }
    let last = names.last().context("a container")?;
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            last,
            "dig",
            "+short",
            "+time=1",
            "thisnode.thisdcos.directory",
        ])
        .output()?;
    println!(
        "      DNS from {last} through its resolv.conf: thisnode.thisdcos.directory -> {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(names)
}
