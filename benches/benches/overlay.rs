//! Overlay benchmark, two parts in one run.
//!
//! **Datapath.** Two two-node namespace clusters with the overlay on, one with the eBPF fast
//! path (the default) and one with `fast_path = false`; one container attached on each node.
//! The same measurements run between the containers over each overlay (VXLAN), between the
//! first cluster's containers routed without the tunnel, and between its two nodes'
//! namespaces over the plain underlay (veth + bridge), alternating; ratios to node to node:
//! - TCP throughput, `iperf3` (one stream, `--seconds` long);
//! - request/response latency: one TCP connection, a 64-byte request answered by a 64-byte
//!   response, back to back; p50/p99 and transactions per second.
//!
//! "No tunnel" (both nodes route the other's container subnet over the underlay) separates
//! the tunnel's cost from the container hop's. IPv6 rows: containers on `dcos6` (over the
//! same IPv4 underlay, with the fast path) against node to node over IPv6 addresses the bench
//! adds to the nodes' underlay interfaces.
//!
//! **Reconcile.** In a namespace of its own, the code the agent runs (`VtepLink::read`,
//! `TunnelState::changes_to`, `VtepLink::apply`) against the kernel: from nothing to N peers
//! (4 objects each); a periodic pass with nothing to do; one change (a peer re-pointed to a
//! new underlay address) applied incrementally as on a gossip change, and found by a full pass
//! as after drift; a peer added and removed; everything removed.
//!
//! Usage: `cargo bench -p dcnet-benches --bench overlay -- [--seconds 10] [--rounds 3]
//!        [--peers 10,100,1000] [--skip-datapath] [--skip-reconcile]`

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_benches::{median, netlink_in, print_table, quantile, spawn_in};
use dcnet_overlay::Netns;
use dcnet_overlay::vtep::{Peer, TunnelState, VtepConfig, VtepLink};
use dcnet_tests::cluster::in_netns;
use dcnet_tests::container::Container;
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, TestNamespace, wait_until};

/// The overlay benchmark: reconcile times, and containers over VXLAN vs without the tunnel.
#[derive(clap::Parser)]
struct Options {
    /// Length of each throughput run (request/response runs half of it).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Peer counts of the reconcile part.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    peers: Vec<u32>,
    #[arg(long)]
    skip_datapath: bool,
    #[arg(long)]
    skip_reconcile: bool,
    // `cargo bench` passes --bench to every benchmark binary.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let o = <Options as clap::Parser>::parse();
    if !o.skip_reconcile {
        reconcile(&o)?;
    }
    if !o.skip_datapath {
        datapath(&o)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reconcile

fn vtep_config() -> VtepConfig {
    VtepConfig {
        name: "vtep1024".into(),
        vni: 1024,
        port: 64000,
        local: Ipv4Addr::new(10, 77, 0, 1).into(),
        address: "44.128.0.1/20".parse().expect("literal"),
        address6: None,
        mtu: 1450,
        table: 42,
        rule_priority: 32000,
    }
}

fn peers(n: u32, underlay_offset: u32) -> Vec<Peer> {
    (0..n)
        .map(|i| {
            let k = i + 2;
            Peer {
                node: format!("node-{k}"),
                vtep_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(44, 128, 0, 0)) + k),
                vtep_ip6: None,
                underlay: Ipv4Addr::from(
                    u32::from(Ipv4Addr::new(10, 77, 0, 0)) + k + underlay_offset,
                )
                .into(),
                subnets: vec![
                    format!("9.{}.{}.0/24", k / 256, k % 256)
                        .parse()
                        .expect("valid"),
                ],
            }
        })
        .collect()
}

/// Times of the reconcile scenarios at one size.
#[derive(Default)]
struct ReconcileTimes {
    full_from_nothing: Vec<Duration>,
    noop_pass: Vec<Duration>,
    one_change_incremental: Vec<Duration>,
    one_change_full: Vec<Duration>,
    add_peer: Vec<Duration>,
    remove_peer: Vec<Duration>,
    remove_all: Vec<Duration>,
}

fn reconcile(o: &Options) -> Result<()> {
    println!("## Reconcile: the agent's read/diff/apply against the kernel, in a namespace\n");
    let mut rows = Vec::new();
    for &n in &o.peers {
        let ns = TestNamespace::create("recon")?;
        let mut t = ReconcileTimes::default();
        for _ in 0..o.rounds {
            ns.netns().netlink(|nl| {
                let t = &mut t;
                async move { reconcile_round(&nl, n, t).await }
            })?;
        }
        let med = |v: &[Duration]| {
            quantile(v, 0.5).map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64() * 1000.0))
        };
        rows.push(vec![
            n.to_string(),
            (n * 4).to_string(),
            med(&t.full_from_nothing),
            med(&t.noop_pass),
            med(&t.one_change_incremental),
            med(&t.one_change_full),
            med(&t.add_peer),
            med(&t.remove_peer),
            med(&t.remove_all),
        ]);
    }
    print_table(
        &[
            "peers",
            "objects",
            "full from nothing ms",
            "periodic pass, no drift ms",
            "one change, incremental ms",
            "one change, full pass ms",
            "add a peer ms",
            "remove a peer ms",
            "remove all ms",
        ],
        &rows,
    );
    println!(
        "\nmedians of {} rounds; goals: full reconcile of 1000 peers < 1000 ms, one change < 10 ms\n",
        o.rounds
    );
    Ok(())
}

async fn reconcile_round(
    nl: &dcnet_overlay::Netlink,
    n: u32,
    t: &mut ReconcileTimes,
) -> Result<(), dcnet_overlay::Error> {
    let (vtep, _) = VtepLink::ensure(nl, &vtep_config()).await?;
    let all = peers(n, 0);
    let desired = TunnelState::desired(&all);

    let full = |want: TunnelState| {
        let vtep = vtep.clone();
        async move {
            let started = Instant::now();
            let have = vtep.read(nl).await?;
            let changes = have.changes_to(&want);
            let applied = vtep.apply(nl, &changes).await;
            if let Some((change, e)) = applied.failed.first() {
                panic!("{change}: {e}");
            }
            Ok::<_, dcnet_overlay::Error>((started.elapsed(), changes.len()))
        }
    };
    let incremental = |from: &TunnelState, to: &TunnelState| {
        let changes = from.changes_to(to);
        let vtep = vtep.clone();
        async move {
            let started = Instant::now();
            let applied = vtep.apply(nl, &changes).await;
            assert!(
                applied.failed.is_empty(),
                "{:?}",
                applied.failed.first().map(|f| f.0)
            );
            started.elapsed()
        }
    };

    let (took, changes) = full(desired.clone()).await?;
    assert_eq!(changes, desired.len());
    t.full_from_nothing.push(took);
    let (took, changes) = full(desired.clone()).await?;
    assert_eq!(changes, 0);
    t.noop_pass.push(took);

    // One peer re-pointed (2 changes: FDB delete + set), as a gossip change applies it.
    let mut moved = all.clone();
    let k = (n / 2) as usize;
    moved[k].underlay = Ipv4Addr::new(10, 99, 0, 1).into();
    let moved_state = TunnelState::desired(&moved);
    t.one_change_incremental
        .push(incremental(&desired, &moved_state).await);
    // And back, found by a full pass (as drift is).
    let (took, changes) = full(desired.clone()).await?;
    assert_eq!(changes, 2);
    t.one_change_full.push(took);

    // A peer joins, then leaves.
    let mut grown = all.clone();
    grown.extend(peers(n + 1, 0).into_iter().skip(n as usize));
    let grown_state = TunnelState::desired(&grown);
    t.add_peer.push(incremental(&desired, &grown_state).await);
    t.remove_peer
        .push(incremental(&grown_state, &desired).await);

    t.remove_all
        .push(incremental(&desired, &TunnelState::default()).await);
    let left = vtep.read(nl).await?;
    assert!(left.is_empty(), "{} objects left", left.len());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Datapath

fn iperf3(
    client: &Netns,
    server: &Netns,
    server_ip: IpAddr,
    port: u16,
    seconds: u64,
) -> Result<f64> {
    let _server = spawn_in(server, "iperf3", &["-s", "-1", "-p", &port.to_string()])?;
    // The server needs a moment to listen.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut command = Command::new("iperf3");
        command.args([
            "-c",
            &server_ip.to_string(),
            "-p",
            &port.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ]);
        in_netns(&mut command, client, true);
        let out = command
            .output()
            .context("running iperf3 (apt install iperf3, or scripts/setup.sh)")?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = json["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps);
        }
        if Instant::now() > deadline {
            bail!(
                "iperf3 to {server_ip}:{port} failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Request/response over one TCP connection: returns per-transaction latencies.
fn request_response(
    client: &Netns,
    server: &Netns,
    server_ip: IpAddr,
    port: u16,
    seconds: u64,
) -> Result<Vec<Duration>> {
    let listener = server.run(move || TcpListener::bind((server_ip, port)))??;
    let server_thread = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        loop {
            if stream.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            stream.write_all(&buf)?;
        }
    });
    let target = SocketAddr::from((server_ip, port));
    let mut stream =
        client.run(move || TcpStream::connect_timeout(&target, Duration::from_secs(3)))??;
    stream.set_nodelay(true)?;
    let request = [7u8; 64];
    let mut response = [0u8; 64];
    let mut samples = Vec::with_capacity(200_000);
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        let started = Instant::now();
        stream.write_all(&request)?;
        stream.read_exact(&mut response)?;
        samples.push(started.elapsed());
    }
    drop(stream);
    let _ = server_thread.join();
    Ok(samples)
}

/// Routes `subnet` from `netns` over the plain underlay via `via`, ahead of the overlay's policy
/// rule (priority 31000 < 32000, table 43), or removes that route again. The agent's reconciler
/// leaves both alone: it owns only its own table and rule priority.
fn plain_route(netns: &Netns, subnet: (Ipv4Addr, u8), via: Ipv4Addr, on: bool) -> Result<()> {
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
    use rtnetlink::RouteMessageBuilder;
    const TABLE: u32 = 43;
    const PRIORITY: u32 = 31000;
    netlink_in(netns, |handle| async move {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(subnet.0, subnet.1)
            .gateway(via)
            .table_id(TABLE)
            .build();
        if on {
            handle.route().add(route).replace().execute().await?;
            handle
                .rule()
                .add()
                .v4()
                .destination_prefix(subnet.0, subnet.1)
                .table_id(TABLE)
                .priority(PRIORITY)
                .action(RuleAction::ToTable)
                .execute()
                .await?;
        } else {
            let mut rule = RuleMessage::default();
            rule.header.family = AddressFamily::Inet;
            rule.header.dst_len = subnet.1;
            rule.header.action = RuleAction::ToTable;
            rule.attributes
                .push(RuleAttribute::Destination(subnet.0.into()));
            rule.attributes.push(RuleAttribute::Table(TABLE));
            rule.attributes.push(RuleAttribute::Priority(PRIORITY));
            handle.rule().del(rule).execute().await?;
            handle.route().del(route).execute().await?;
        }
        Ok(())
    })
}

/// The /24 (the default lease size) a container address is in.
fn lease_of(ip: Ipv4Addr) -> (Ipv4Addr, u8) {
    (Ipv4Addr::from(u32::from(ip) & 0xffff_ff00), 24)
}

/// The same containers without the tunnel, for as long as it lives: both nodes route the other
/// node's container subnet straight over the underlay.
struct NoTunnel<'a> {
    routes: Vec<(&'a Netns, (Ipv4Addr, u8), Ipv4Addr)>,
}

impl<'a> NoTunnel<'a> {
    fn new(routes: Vec<(&'a Netns, (Ipv4Addr, u8), Ipv4Addr)>) -> Result<Self> {
        // Pushed one by one, so a failure half-way still removes what was added.
        let mut guard = Self { routes: Vec::new() };
        for (netns, subnet, via) in routes {
            plain_route(netns, subnet, via, true)?;
            guard.routes.push((netns, subnet, via));
        }
        Ok(guard)
    }
}

impl Drop for NoTunnel<'_> {
    fn drop(&mut self) {
        for (netns, subnet, via) in &self.routes {
            if let Err(e) = plain_route(netns, *subnet, *via, false) {
                eprintln!("removing the bench's plain route to {subnet:?}: {e:#}");
            }
        }
    }
}

/// Results of one path over all rounds.
#[derive(Default)]
struct PathResults {
    bits_per_second: Vec<f64>,
    transactions_per_second: Vec<f64>,
    p50: Vec<Duration>,
    p99: Vec<Duration>,
}

impl PathResults {
    fn measure(
        &mut self,
        client: &Netns,
        server: &Netns,
        server_ip: impl Into<IpAddr>,
        port: u16,
        seconds: u64,
    ) -> Result<()> {
        let server_ip = server_ip.into();
        self.bits_per_second
            .push(iperf3(client, server, server_ip, port, seconds)?);
        let rr_seconds = seconds.div_ceil(2);
        let samples = request_response(client, server, server_ip, port + 1000, rr_seconds)?;
        self.transactions_per_second
            .push(samples.len() as f64 / rr_seconds as f64);
        self.p50.push(quantile(&samples, 0.5).unwrap_or_default());
        self.p99.push(quantile(&samples, 0.99).unwrap_or_default());
        Ok(())
    }

    fn medians(&self) -> [f64; 4] {
        let micros = |d: &[Duration]| d.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        [
            median(self.bits_per_second.clone()) / 1e9,
            median(self.transactions_per_second.clone()),
            median(micros(&self.p50)),
            median(micros(&self.p99)),
        ]
    }
}

/// A two-node overlay cluster, with or without the fast path, and its formed overlay.
fn overlay_cluster(fast_path: bool) -> Result<Cluster> {
    let mut options = ClusterOptions::nodes(2);
    for node in &mut options.nodes {
        *node = NodeSpec {
            extra_config: format!(
                "\n[overlay]\nenabled = true\nlease_settle = \"1s\"\nfast_path = {fast_path}\n"
            ),
            ..NodeSpec::default()
        };
    }
    let cluster = Cluster::start(options)?;
    wait_until("the overlay to form", Duration::from_secs(30), || {
        let ready = (0..2).all(|i| {
            cluster
                .get::<serde_json::Value>(i, "/v1/overlay")
                .is_ok_and(|s| {
                    s["peers"].as_array().is_some_and(|p| {
                        p.len() == 1 && p[0]["subnets"].as_array().is_some_and(|s| !s.is_empty())
                    })
                })
        });
        Ok(ready.then_some(()))
    })?;
    Ok(cluster)
}

/// One table row per measure of [`PathResults::medians`]: the `paths`' values, then each of
/// `ratios` divided by `base`.
fn measure_rows(paths: &[[f64; 4]], ratios: &[[f64; 4]], base: [f64; 4]) -> Vec<Vec<String>> {
    let measures = [
        ("TCP throughput Gbit/s", 2),
        ("request/response per s", 0),
        ("latency p50 µs", 1),
        ("latency p99 µs", 1),
    ];
    measures
        .iter()
        .enumerate()
        .map(|(i, &(name, d))| {
            std::iter::once(name.to_owned())
                .chain(paths.iter().map(|p| format!("{:.d$}", p[i])))
                .chain(ratios.iter().map(|r| format!("{:.2}", r[i] / base[i])))
                .collect()
        })
        .collect()
}

fn datapath(o: &Options) -> Result<()> {
    println!("## Datapath: containers on two nodes, over the overlay and without the tunnel\n");
    // Two clusters side by side: the same overlay with the fast path and without programs.
    let fast = overlay_cluster(true)?;
    let slow = overlay_cluster(false)?;
    let a = Container::attach(&fast, 0, "bench-a")?;
    let b = Container::attach(&fast, 1, "bench-b")?;
    let c = Container::attach(&slow, 0, "bench-c")?;
    let d = Container::attach(&slow, 1, "bench-d")?;
    wait_until(
        "the fast path on both nodes",
        Duration::from_secs(10),
        || {
            let attached = (0..2).all(|i| {
                fast.get::<serde_json::Value>(i, "/v1/overlay")
                    .is_ok_and(|s| s["fast_path"]["endpoints"] == 1)
            });
            Ok(attached.then_some(()))
        },
    )?;
    let (node_a, node_b) = (&fast.nodes[0], &fast.nodes[1]);
    // IPv6: containers on dcos6, and the nodes' own IPv6 addresses on the underlay.
    let e = Container::attach_to(&fast, 0, "bench-e", "dcos6")?;
    let f = Container::attach_to(&fast, 1, "bench-f", "dcos6")?;
    let f6 = f.ip6.context("the dcos6 container has no IPv6 address")?;
    let g = Container::attach_to(&slow, 0, "bench-g", "dcos6")?;
    let h = Container::attach_to(&slow, 1, "bench-h", "dcos6")?;
    let h6 = h.ip6.context("the dcos6 container has no IPv6 address")?;
    let nodes6: [Ipv6Addr; 2] = ["fd00:dc0d::1".parse()?, "fd00:dc0d::2".parse()?];
    for (node, ip) in [node_a, node_b].into_iter().zip(nodes6) {
        let mut command = Command::new("ip");
        command.args([
            "-6",
            "addr",
            "add",
            &format!("{ip}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        in_netns(&mut command, &node.netns, true);
        let out = command.output()?;
        if !out.status.success() {
            bail!(
                "adding {ip} to {}: {}",
                node.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // Warm up ARP, neighbour discovery and the tunnels.
    let _ = a.ping(b.ip, 56);
    let _ = c.ping(d.ip, 56);
    wait_until("IPv6 across the overlay", Duration::from_secs(10), || {
        Ok((e.ping(f6, 56)? && g.ping(h6, 56)?).then_some(()))
    })?;

    let (mut overlay, mut programless, mut plain, mut nodes) = Default::default();
    let (mut overlay6, mut programless6, mut nodes6_results) = Default::default();
    for round in 0..o.rounds {
        let port = 5201 + round as u16 * 4;
        PathResults::measure(
            &mut overlay,
            a.ns.netns(),
            b.ns.netns(),
            b.ip,
            port,
            o.seconds,
        )?;
        PathResults::measure(
            &mut programless,
            c.ns.netns(),
            d.ns.netns(),
            d.ip,
            port + 1,
            o.seconds,
        )?;
        {
            let _no_tunnel = NoTunnel::new(vec![
                (&node_a.netns, lease_of(b.ip), node_b.address),
                (&node_b.netns, lease_of(a.ip), node_a.address),
            ])?;
            let _ = a.ping(b.ip, 56);
            PathResults::measure(
                &mut plain,
                a.ns.netns(),
                b.ns.netns(),
                b.ip,
                port + 2,
                o.seconds,
            )?;
        }
        PathResults::measure(
            &mut nodes,
            &node_a.netns,
            &node_b.netns,
            node_b.address,
            port + 3,
            o.seconds,
        )?;
        PathResults::measure(
            &mut overlay6,
            e.ns.netns(),
            f.ns.netns(),
            f6,
            port + 40,
            o.seconds,
        )?;
        PathResults::measure(
            &mut programless6,
            g.ns.netns(),
            h.ns.netns(),
            h6,
            port + 42,
            o.seconds,
        )?;
        PathResults::measure(
            &mut nodes6_results,
            &node_a.netns,
            &node_b.netns,
            nodes6[1],
            port + 41,
            o.seconds,
        )?;
        let gbit = |r: &PathResults| r.bits_per_second[round] / 1e9;
        eprintln!(
            "round {}: overlay {:.2} Gbit/s, without programs {:.2}, no tunnel {:.2}, node to node {:.2}",
            round + 1,
            gbit(&overlay),
            gbit(&programless),
            gbit(&plain),
            gbit(&nodes)
        );
    }
    eprintln!(
        "round {} IPv6: overlay (dcos6) {:.2} Gbit/s, node to node {:.2}",
        o.rounds,
        overlay6.bits_per_second.last().copied().unwrap_or_default() / 1e9,
        nodes6_results
            .bits_per_second
            .last()
            .copied()
            .unwrap_or_default()
            / 1e9
    );
    let fast_path: serde_json::Value = fast.get(0, "/v1/overlay")?;
    let (ov, np, pl, no) = (
        overlay.medians(),
        programless.medians(),
        plain.medians(),
        nodes.medians(),
    );
    let rows = measure_rows(&[ov, np, pl, no], &[ov, np], no);
    print_table(
        &[
            "measure",
            "overlay",
            "overlay without programs",
            "no tunnel",
            "node to node",
            "overlay/node to node",
            "without programs/node to node",
        ],
        &rows,
    );
    println!(
        "\noverlay: container to container through VXLAN with the eBPF fast path; without programs: \
         the same in a\nsecond cluster with `fast_path = false` (bridge and forwarding); no tunnel: \
         the first cluster's\ncontainers routed over the underlay; node to node: the nodes' \
         namespaces over the underlay.\nMedians of {} rounds of {} s (request/response: {} s); \
         goals: overlay/node to node >= 0.9 in throughput,\n>= 0.85 in request/response, p50 \
         latency <= 1.2x. Fast path counters on node 1: {}",
        o.rounds,
        o.seconds,
        o.seconds.div_ceil(2),
        fast_path["fast_path"]["packets"]
    );
    let (ov6, np6, no6) = (
        overlay6.medians(),
        programless6.medians(),
        nodes6_results.medians(),
    );
    let rows6 = measure_rows(&[ov6, np6, no6], &[ov6, np6], no6);
    println!("\n## IPv6: containers on dcos6 on two nodes, and the nodes over IPv6\n");
    print_table(
        &[
            "measure",
            "overlay IPv6",
            "without programs",
            "node to node IPv6",
            "overlay/node to node",
            "without programs/node to node",
        ],
        &rows6,
    );
    println!(
        "\noverlay IPv6: dcos6 containers through VXLAN over the IPv4 underlay, with the eBPF \
         fast path; node to node IPv6:\nthe nodes' namespaces over IPv6 addresses on the \
         underlay."
    );
    Ok(())
}
