//! Gossip benchmark: how fast a key reaches every node, and how fast a dead node is noticed,
//! for clusters of N members.
//!
//! Every member is a full `dcnet_agent::gossip::Gossip` (chitchat, the view observer) on its own
//! loopback port, all in this process. Each size runs twice, side by side: with dcnet's sealed
//! transport (ChaCha20-Poly1305, freshness and replay checks) and with chitchat's plain UDP
//! transport (no encryption, no authentication), and the table ends with their ratio. Measured:
//!
//! - propagation: a random member publishes a key; per trial, the time until every other member's
//!   view holds it (reported as median and p99 over trials), and the per-member latencies;
//! - failure detection: a random member stops; the time until every other member's view marks it
//!   down (median and p99 over trials);
//! - CPU: process CPU time per member per gossip round at rest, which is what one node spends
//!   on its own core in a real cluster.
//!
//! All members share this machine's cores, so a large N is CPU-bound at a short interval (N ×
//! per-member cost exceeds the cores) and would measure the simulation, not the protocol. Each
//! size therefore has its own interval (`--intervals`), the table shows the simulation's load,
//! and every time is also given in gossip rounds, which carry over to the production interval.
//!
//! Usage: `cargo bench -p dcnet-benches --bench gossip -- [--nodes 10,100,1000]
//!        [--intervals 500ms,500ms,2s] [--phi 6] [--trials 20] [--transports sealed,plain]`

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chitchat::transport::{Transport, UdpTransport};
use dcnet_agent::config::{GossipSettings, Secret};
use dcnet_agent::gossip::keyring::{Key, Keyring};
use dcnet_agent::gossip::{AuthenticatedUdp, Gossip, MembershipMetrics, TransportMetrics};
use dcnet_agent::identity::NodeIdentity;
use dcnet_benches::{cpu_time, ms, print_table, quantile};
use rand::seq::IndexedRandom;

// The agent's allocator: chitchat and the observer allocate on every message and sample.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BASE_PORT: u16 = 20_000;
const SEEDS: usize = 3;

/// The gossip benchmark: propagation and failure detection at N members.
#[derive(clap::Parser)]
struct Options {
    /// Cluster sizes, each 2 to 5000.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000",
          value_parser = clap::value_parser!(u32).range(2..=5000))]
    nodes: Vec<u32>,
    /// One gossip interval per size, e.g. 500ms,500ms,2s (1,000 members at 2 s load two cores
    /// to about 70%).
    #[arg(long, value_delimiter = ',', default_value = "500ms,500ms,2s",
          value_parser = humantime::parse_duration)]
    intervals: Vec<Duration>,
    #[arg(long, default_value_t = 6.0)]
    phi: f64,
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Transports to run each size with: sealed (dcnet's), plain (chitchat's UDP).
    #[arg(long, value_delimiter = ',', default_value = "sealed,plain")]
    transports: Vec<Mode>,
    // `cargo bench` passes --bench to every benchmark binary.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Sealed,
    Plain,
}

fn parse_args() -> Result<Options> {
    let o = <Options as clap::Parser>::parse();
    if o.intervals.len() != o.nodes.len() {
        bail!(
            "--intervals needs one interval per --nodes value ({} given for {} sizes)",
            o.intervals.len(),
            o.nodes.len()
        );
    }
    Ok(o)
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, BASE_PORT + i as u16))
}

async fn start_member(
    i: usize,
    interval: Duration,
    o: &Options,
    secret: &Secret,
    mode: Mode,
    keyring: &Keyring,
    metrics: &TransportMetrics,
) -> Result<Gossip> {
    let settings = GossipSettings {
        listen: addr(i),
        advertise: addr(i),
        seeds: (0..SEEDS)
            .filter(|&s| s != i)
            .map(|s| addr(s).to_string())
            .collect(),
        secret: secret.clone(),
        cluster: "bench".into(),
        interval,
        phi_threshold: o.phi,
        dead_node_grace: Duration::from_secs(3600),
        tombstone_grace: Duration::from_secs(600),
    };
    let (transport, max_message_len): (Box<dyn Transport>, usize) = match mode {
        Mode::Sealed => {
            let sealed = AuthenticatedUdp::new(keyring.clone(), addr(i), metrics.clone());
            let max = sealed.max_message_len();
            (Box::new(sealed), max)
        }
        // chitchat's own transport carries one datagram.
        Mode::Plain => (Box::new(UdpTransport), 65_507),
    };
    let identity = NodeIdentity {
        id: format!("member-{i:04}"),
        generation: 1,
    };
    Ok(Gossip::start(
        &settings,
        &identity,
        (transport.as_ref(), max_message_len),
        vec![],
        MembershipMetrics::default(),
    )
    .await?)
}

/// Waits until every member sees all `n` members up; returns how long it took.
async fn wait_formed(members: &[Arc<Gossip>], n: usize, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let counts: Vec<usize> = members
            .iter()
            .map(|m| m.view().up_nodes().count())
            .collect();
        let formed = counts.iter().filter(|&&c| c == n).count();
        if formed == members.len() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!(
                "only {formed} of {n} members saw all {n} up within {timeout:?} (fewest seen: {:?})",
                counts.iter().min()
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  forming: {formed}/{n} members see everyone up, fewest seen {:?}",
                counts.iter().min()
            );
            // The last few stragglers: who they miss, and why by their failure detectors.
            if formed + 3 >= members.len() {
                explain_stragglers(members, n).await;
            }
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints, for members that do not see all `n` members up, the peers they miss and how their
/// failure detectors judge those peers.
async fn explain_stragglers(members: &[Arc<Gossip>], n: usize) {
    for m in members {
        let view = m.view();
        if view.up_nodes().count() == n {
            continue;
        }
        let liveness = m.peer_liveness().await;
        let missing: Vec<String> = members
            .iter()
            .map(|other| other.node_id())
            .filter(|id| !view.nodes.get(*id).is_some_and(|node| node.is_up))
            .map(|id| match liveness.iter().find(|p| p.id == id) {
                Some(p) => format!(
                    "{id} (heartbeat {}, live {}, dead {}, detection timeout {:?})",
                    p.heartbeat, p.live, p.dead, p.detection_timeout
                ),
                None => format!("{id} (unknown to its gossip state)"),
            })
            .take(3)
            .collect();
        eprintln!("    {} misses {}", m.node_id(), missing.join(", "));
        // What the others know of the first peer it misses: if they have seen its heartbeat
        // advance past this member's, digests carrying it do not reach this member, or are not
        // taken in.
        let Some(peer) = members
            .iter()
            .map(|other| other.node_id())
            .find(|id| !view.nodes.get(*id).is_some_and(|node| node.is_up))
        else {
            continue;
        };
        let mut heartbeats = Vec::new();
        let mut judged_up = 0;
        for other in members {
            if other.node_id() == m.node_id() {
                continue;
            }
            if let Some(p) = other
                .peer_liveness()
                .await
                .into_iter()
                .find(|p| p.id == peer)
            {
                heartbeats.push(p.heartbeat);
            }
            if other
                .view()
                .nodes
                .get(m.node_id())
                .is_some_and(|node| node.is_up)
            {
                judged_up += 1;
            }
        }
        heartbeats.sort_unstable();
        eprintln!(
            "      others' heartbeat of {peer}: min {:?}, median {:?}, max {:?}; {judged_up} others see {} up",
            heartbeats.first(),
            heartbeats.get(heartbeats.len() / 2),
            heartbeats.last(),
            m.node_id()
        );
    }
}

struct Row {
    n: usize,
    mode: Mode,
    interval: Duration,
    formed: Duration,
    prop_all: Vec<Duration>,
    prop_each: Vec<Duration>,
    detect_all: Vec<Duration>,
    detect_each: Vec<Duration>,
    /// CPU seconds per member per second at rest.
    cpu_per_member: f64,
    /// Datagrams and bytes one member sends per round at rest (sealed transport only).
    sent_per_member_round: (f64, f64),
}

async fn run(n: usize, interval: Duration, o: &Options, mode: Mode) -> Result<Row> {
    let secret = Secret::new(b"benchmark-cluster-secret-0123456789".to_vec());
    let keyring = Keyring::in_memory(Key::from_secret(&secret));
    let metrics = TransportMetrics::default();
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        members.push(Arc::new(
            start_member(i, interval, o, &secret, mode, &keyring, &metrics).await?,
        ));
    }
    let formed = wait_formed(&members, n, Duration::from_secs(60) + interval * 40).await?;

    // CPU at rest, per member, and what it sends.
    let (cpu0, wall0, sent0) = (cpu_time(), Instant::now(), metrics.sent());
    tokio::time::sleep(interval * 6).await;
    let wall = wall0.elapsed().as_secs_f64();
    let cpu_per_member = (cpu_time() - cpu0).as_secs_f64() / wall / n as f64;
    let sent = metrics.sent();
    let rounds = wall / interval.as_secs_f64();
    let sent_per_member_round = (
        (sent.0 - sent0.0) as f64 / n as f64 / rounds,
        (sent.1 - sent0.1) as f64 / n as f64 / rounds,
    );

    let mut rng = rand::rng();
    let timeout = Duration::from_secs(30) + interval * 30;
    let (mut prop_all, mut prop_each) = (Vec::new(), Vec::new());
    for trial in 0..o.trials {
        let origin = members.choose(&mut rng).expect("members").clone();
        let key = format!("bench/{trial}");
        let waiters: Vec<_> = members
            .iter()
            .filter(|m| m.node_id() != origin.node_id())
            .map(|m| {
                let (m, key, origin_id) = (m.clone(), key.clone(), origin.node_id().to_owned());
                tokio::spawn(async move {
                    m.wait_for(timeout, |v| v.get(&origin_id, &key).is_some())
                        .await
                        .map(|_| Instant::now())
                })
            })
            .collect();
        // Members started together tick in phase; publish at a random point of the round so
        // the figures are not biased by where trials fall relative to the ticks.
        let jitter = interval.mul_f64(rand::random::<f64>());
        tokio::time::sleep(jitter).await;
        let published = Instant::now();
        origin.publish(&key, "x").await;
        let mut slowest = Duration::ZERO;
        for w in waiters {
            let seen = w
                .await?
                .with_context(|| format!("trial {trial}: a member never saw the key"))?;
            let latency = seen.saturating_duration_since(published);
            slowest = slowest.max(latency);
            prop_each.push(latency);
        }
        prop_all.push(slowest);
    }

    // Failure detection: stop members one at a time (fewer trials: each shrinks the cluster).
    let (mut detect_all, mut detect_each) = (Vec::new(), Vec::new());
    for _ in 0..o.trials.clamp(1, 5) {
        let victim_index = (SEEDS..members.len())
            .collect::<Vec<_>>()
            .choose(&mut rng)
            .copied()
            .context("cluster too small")?;
        let victim = members.remove(victim_index);
        let victim_id = victim.node_id().to_owned();
        let waiters: Vec<_> = members
            .iter()
            .map(|m| {
                let (m, id) = (m.clone(), victim_id.clone());
                tokio::spawn(async move {
                    m.wait_for(timeout, |v| v.nodes.get(&id).is_some_and(|n| !n.is_up))
                        .await
                        .map(|_| Instant::now())
                })
            })
            .collect();
        tokio::time::sleep(interval.mul_f64(rand::random::<f64>())).await;
        let stopped = Instant::now();
        match Arc::try_unwrap(victim) {
            Ok(g) => g.shutdown().await,
            Err(_) => bail!("victim still shared"),
        }
        let mut slowest = Duration::ZERO;
        for w in waiters {
            let seen = w
                .await?
                .context("a member never noticed the stopped member")?;
            let latency = seen.saturating_duration_since(stopped);
            slowest = slowest.max(latency);
            detect_each.push(latency);
        }
        detect_all.push(slowest);
    }

    for m in members {
        if let Ok(g) = Arc::try_unwrap(m) {
            g.shutdown().await;
        }
    }
    Ok(Row {
        n,
        mode,
        interval,
        formed,
        prop_all,
        prop_each,
        detect_all,
        detect_each,
        cpu_per_member,
        sent_per_member_round,
    })
}

/// Seconds to seal and open one datagram of `len` payload bytes, timed over many.
fn crypto_cost(len: usize) -> f64 {
    use dcnet_agent::gossip::frame::{Opener, Sealer};
    let keyring = Keyring::in_memory(Key::generate());
    let mut sealer = Sealer::new(keyring.clone(), addr(0));
    let mut opener = Opener::new(keyring, rand::random());
    let message = vec![7u8; len];
    let rounds = (20_000_000 / len.max(1)).clamp(200, 100_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let started = Instant::now();
    for i in 0..rounds {
        for mut d in sealer.seal(&message, i as u32, now).unwrap_or_default() {
            let _ = std::hint::black_box(opener.open(&mut d, now, Instant::now()));
        }
    }
    started.elapsed().as_secs_f64() / rounds as f64
}

fn main() -> Result<()> {
    let o = parse_args()?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "gossip benchmark: chitchat 0.13, sealed (dcnet) and plain (chitchat UDP) transports, phi {}, {} trials, {cores} cores",
        o.phi, o.trials
    );
    let mut rows = Vec::new();
    for (&n, &interval) in o.nodes.iter().zip(&o.intervals) {
        for &mode in &o.transports {
            eprintln!("running N = {n} at interval {interval:?}, {mode:?} ...");
            rows.push(runtime.block_on(run(n as usize, interval, &o, mode))?);
            // Let sockets close before the next run reuses the ports.
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let both = |d: Option<Duration>| match d {
                Some(d) => format!(
                    "{} ({:.1}r)",
                    ms(Some(d)),
                    d.as_secs_f64() / r.interval.as_secs_f64()
                ),
                None => "-".into(),
            };
            let load = r.cpu_per_member * r.n as f64 / cores as f64;
            vec![
                r.n.to_string(),
                format!("{:?}", r.mode).to_lowercase(),
                format!("{:?}", r.interval),
                both(Some(r.formed)),
                both(quantile(&r.prop_all, 0.5)),
                both(quantile(&r.prop_all, 0.99)),
                both(quantile(&r.prop_each, 0.5)),
                both(quantile(&r.prop_each, 0.99)),
                both(quantile(&r.detect_each, 0.5)),
                both(quantile(&r.detect_each, 0.99)),
                both(quantile(&r.detect_all, 1.0)),
                format!(
                    "{:.2}",
                    r.cpu_per_member * r.interval.as_secs_f64() * 1000.0
                ),
                format!("{:.0}%", load * 100.0),
            ]
        })
        .collect();
    print_table(
        &[
            "N",
            "transport",
            "interval",
            "formed",
            "prop-all p50",
            "prop-all p99",
            "prop-each p50",
            "prop-each p99",
            "detect-each p50",
            "detect-each p99",
            "detect-all max",
            "cpu ms/round",
            "sim load",
        ],
        &table,
    );
    println!(
        "Times in ms, (r) = in gossip rounds. prop-all: publish -> visible on every member (per trial);\n\
         prop-each: per member; detect-each: stop -> a member marks it down; detect-all: -> every member has. cpu ms/round: CPU one member\n\
         spends per gossip round at rest. sim load: all members' share of this machine's cores (near 100%\n\
         the simulation, not the protocol, sets the times)."
    );
    for sealed in rows.iter().filter(|r| r.mode == Mode::Sealed) {
        // Encryption's own share: each datagram is sealed once and opened once.
        let (datagrams, bytes) = sealed.sent_per_member_round;
        if datagrams > 0.0 {
            let per_datagram = crypto_cost((bytes / datagrams) as usize);
            let crypto = per_datagram * datagrams;
            let cpu_round = sealed.cpu_per_member * sealed.interval.as_secs_f64();
            println!(
                "N = {}: a member sends {datagrams:.1} datagrams ({bytes:.0} bytes) a round; sealing and opening them costs {:.1} us, {:.1}% of its CPU per round",
                sealed.n,
                crypto * 1e6,
                crypto / cpu_round * 100.0
            );
        }
        let Some(plain) = rows
            .iter()
            .find(|r| r.mode == Mode::Plain && r.n == sealed.n)
        else {
            continue;
        };
        let p99 = |r: &Row| quantile(&r.prop_all, 0.99).map_or(f64::NAN, |d| d.as_secs_f64());
        println!(
            "N = {}: sealed / plain: cpu per member per round {:.2}x, prop-all p99 {:.2}x",
            sealed.n,
            sealed.cpu_per_member / plain.cpu_per_member,
            p99(sealed) / p99(plain)
        );
    }
    Ok(())
}
