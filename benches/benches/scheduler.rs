//! Scheduler benchmark: what agreeing by Raft costs a write, against etcd (Debian's
//! etcd-server 3.4) on the same namespaces, with one and with three members.
//!
//! Two namespace clusters: one master (node 1) and three masters (nodes 1-3) plus an agent
//! (node 4). etcd runs beside them in the same node namespaces (clients on :2379). Alternating
//! over `--rounds` rounds, for `--seconds` each:
//! - **write latency**: one client, back to back: dcnet `POST /v2/apps` of an app with no
//!   instances and its `DELETE` (each answered once committed on a majority) over TLS with a
//!   token, to the leader; etcd `PUT /v3/kv/put` to its leader. p50 and p99 per write;
//! - **throughput**: `--writers` clients at once, writes per second.
//!
//! Then **failover** with three members, `--failovers` times: the leader is killed (dcnet:
//! its agent, SIGKILL; etcd: its process) and the time to the first write committed by the
//! others is measured (dcnet through node 4's agent, which finds the new leader in gossip;
//! etcd on a surviving member), before the killed member is started again.
//!
//! Usage: `cargo bench -p dcnet-benches --bench scheduler -- [--seconds 3] [--rounds 3]
//!        [--writers 8] [--failovers 3]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use dcnet_benches::{Background, print_table, quantile, spawn_in};
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

#[derive(clap::Parser)]
struct Options {
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 8)]
    writers: usize,
    #[arg(long, default_value_t = 3)]
    failovers: usize,
    // `cargo bench` passes --bench to every benchmark binary.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A cluster of `masters` masters (nodes 1..) and, for three, an agent (node 4).
fn start(masters: usize) -> Result<Cluster> {
    let nodes = if masters == 1 { 1 } else { masters + 1 };
    let mut options = ClusterOptions::nodes(nodes);
    let list: Vec<String> = (1..=masters).map(|i| format!("10.200.0.{i}")).collect();
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = if i < masters {
            NodeSpec {
                roles: vec!["master".into()],
                extra_config: format!("\n[scheduler]\nmasters = {list:?}\n"),
                ..NodeSpec::default()
            }
        } else {
            NodeSpec::default()
        };
    }
    Cluster::start(options)
}

/// How a client talks to one system.
enum Target {
    Dcnet { client: ureq::Agent, token: String },
    Etcd { client: ureq::Agent },
}

impl Target {
    /// One committed write at `base` (the leader's URL); `n` makes it unique.
    fn write(&self, base: &str, n: u64) -> Result<()> {
        match self {
            Target::Dcnet { client, token } => {
                let id = format!("/bench-{n}");
                let app =
                    json!({"id": id, "cmd": "sleep 1", "instances": 0, "cpus": 0.01, "mem": 1});
                let status = client
                    .post(format!("{base}/v2/apps"))
                    .header("authorization", token)
                    .send_json(&app)?
                    .status()
                    .as_u16();
                if status != 201 {
                    bail!("POST answered {status}");
                }
                Ok(())
            }
            Target::Etcd { client } => {
                let b64 = base64::engine::general_purpose::STANDARD;
                let body =
                    json!({"key": b64.encode(format!("bench-{n}")), "value": b64.encode("v")});
                let status = client
                    .post(format!("{base}/v3/kv/put"))
                    .send_json(&body)?
                    .status()
                    .as_u16();
                if status != 200 {
                    bail!("put answered {status}");
                }
                Ok(())
            }
        }
    }

    /// Undoes write `n` (dcnet: the app's DELETE, itself a committed write; etcd: nothing).
    fn undo(&self, base: &str, n: u64) -> Result<bool> {
        match self {
            Target::Dcnet { client, token } => {
                let status = client
                    .delete(format!("{base}/v2/apps/bench-{n}"))
                    .header("authorization", token)
                    .call()?
                    .status()
                    .as_u16();
                if status != 200 {
                    bail!("DELETE answered {status}");
                }
                Ok(true)
            }
            Target::Etcd { .. } => Ok(false),
        }
    }
}

fn dcnet_target(cluster: &Cluster) -> Result<Target> {
    let token = dcnet_auth::credential::token_header(&cluster.token_with(
        dcnet_auth::Role::Admin,
        "bench",
        Duration::from_secs(3600),
    )?);
    Ok(Target::Dcnet {
        client: dcnet_agent::auth::client(Some(&cluster.ca_pem()?), Duration::from_secs(10), true)?,
        token,
    })
}

fn etcd_target() -> Result<Target> {
    Ok(Target::Etcd {
        client: dcnet_agent::auth::client(None, Duration::from_secs(10), true)?,
    })
}

/// The dcnet leader's scheduler URL, from node 1.
fn dcnet_leader(cluster: &Cluster) -> Result<String> {
    wait_until("a dcnet leader", Duration::from_secs(30), || {
        let m: Value = serde_json::from_str(&cluster.cli(0, &["master", "list", "--json"])?)?;
        Ok(m["leader"]["url"].as_str().map(str::to_owned))
    })
}

/// etcd members in the cluster's first `n` node namespaces.
struct Etcd {
    members: Vec<Option<Background>>,
    dirs: Vec<tempfile::TempDir>,
    n: usize,
}

impl Etcd {
    fn start(cluster: &Cluster, n: usize) -> Result<Self> {
        let mut etcd = Self {
            members: Vec::new(),
            dirs: (0..n)
                .map(|_| tempfile::tempdir())
                .collect::<Result<_, _>>()?,
            n,
        };
        for i in 0..n {
            let member = etcd.member(cluster, i)?;
            etcd.members.push(Some(member));
        }
        let base = "http://10.200.0.1:2379";
        let probe = etcd_target()?;
        wait_until("etcd to take writes", Duration::from_secs(30), || {
            Ok(cluster.nodes[0].netns.run(|| probe.write(base, 0).ok())?)
        })?;
        Ok(etcd)
    }

    fn member(&self, cluster: &Cluster, i: usize) -> Result<Background> {
        let ip = format!("10.200.0.{}", i + 1);
        let initial: Vec<String> = (1..=self.n)
            .map(|m| format!("e{m}=http://10.200.0.{m}:2380"))
            .collect();
        let args = [
            "--name".to_owned(),
            format!("e{}", i + 1),
            "--data-dir".into(),
            self.dirs[i].path().display().to_string(),
            "--listen-client-urls".into(),
            format!("http://{ip}:2379"),
            "--advertise-client-urls".into(),
            format!("http://{ip}:2379"),
            "--listen-peer-urls".into(),
            format!("http://{ip}:2380"),
            "--initial-advertise-peer-urls".into(),
            format!("http://{ip}:2380"),
            "--initial-cluster".into(),
            initial.join(","),
            "--initial-cluster-state".into(),
            "new".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_in(&cluster.nodes[i].netns, "etcd", &args)
    }

    /// The index of etcd's leader.
    fn leader(&self, cluster: &Cluster) -> Result<usize> {
        let client = dcnet_agent::auth::client(None, Duration::from_secs(2), true)?;
        wait_until("an etcd leader", Duration::from_secs(20), || {
            for i in 0..self.n {
                if self.members[i].is_none() {
                    continue;
                }
                let url = format!("http://10.200.0.{}:2379/v3/maintenance/status", i + 1);
                let status: Option<Value> = cluster.nodes[i].netns.run(|| {
                    let mut r = client.post(&url).send_json(json!({})).ok()?;
                    r.body_mut().read_json().ok()
                })?;
                let Some(status) = status else { continue };
                let me = status["header"]["member_id"].as_str().unwrap_or_default();
                if !me.is_empty() && status["leader"].as_str() == Some(me) {
                    return Ok(Some(i));
                }
            }
            Ok(None)
        })
    }
}

/// Back-to-back writes for `seconds` from node `from`: latencies of each write.
fn latency(
    cluster: &Cluster,
    from: usize,
    target: &Target,
    base: &str,
    seconds: u64,
    next: &AtomicU64,
) -> Result<Vec<Duration>> {
    cluster.nodes[from].netns.run(|| -> Result<Vec<Duration>> {
        let mut out = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(seconds) {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let t = Instant::now();
            target.write(base, n)?;
            out.push(t.elapsed());
            let t = Instant::now();
            if target.undo(base, n)? {
                out.push(t.elapsed());
            }
        }
        Ok(out)
    })?
}

/// Writes per second from `writers` clients at once.
fn throughput(
    cluster: &Cluster,
    from: usize,
    target: &Target,
    base: &str,
    seconds: u64,
    writers: usize,
    next: &AtomicU64,
) -> Result<f64> {
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for _ in 0..writers {
            handles.push(scope.spawn(|| -> Result<()> {
                cluster.nodes[from].netns.run(|| -> Result<()> {
                    while start.elapsed() < Duration::from_secs(seconds) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        target.write(base, n)?;
                        done.fetch_add(1, Ordering::Relaxed);
                        if target.undo(base, n)? {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })?
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(())
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.2}", d.as_secs_f64() * 1000.0),
    )
}

fn main() -> Result<()> {
    let o = <Options as clap::Parser>::parse();
    eprintln!("starting a 1-master and a 3-master cluster, and etcd beside each...");
    let one = start(1)?;
    let three = start(3)?;
    let etcd_one = Etcd::start(&one, 1)?;
    let mut etcd_three = Etcd::start(&three, 3)?;
    let next = AtomicU64::new(1);

    struct System<'a> {
        name: &'static str,
        members: usize,
        cluster: &'a Cluster,
        target: Target,
        base: String,
    }
    let etcd_three_leader = etcd_three.leader(&three)?;
    let mut systems = [
        System {
            name: "dcnet",
            members: 1,
            cluster: &one,
            target: dcnet_target(&one)?,
            base: dcnet_leader(&one)?,
        },
        System {
            name: "dcnet",
            members: 3,
            cluster: &three,
            target: dcnet_target(&three)?,
            base: dcnet_leader(&three)?,
        },
        System {
            name: "etcd",
            members: 1,
            cluster: &one,
            target: etcd_target()?,
            base: "http://10.200.0.1:2379".into(),
        },
        System {
            name: "etcd",
            members: 3,
            cluster: &three,
            target: etcd_target()?,
            base: format!("http://10.200.0.{}:2379", etcd_three_leader + 1),
        },
    ];
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); systems.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    for round in 0..o.rounds {
        eprintln!("round {}/{}", round + 1, o.rounds);
        for (i, s) in systems.iter_mut().enumerate() {
            latencies[i].extend(latency(s.cluster, 0, &s.target, &s.base, o.seconds, &next)?);
            rates[i].push(throughput(
                s.cluster, 0, &s.target, &s.base, o.seconds, o.writers, &next,
            )?);
        }
    }
    let rows: Vec<Vec<String>> = systems
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                s.name.to_owned(),
                s.members.to_string(),
                ms(quantile(&latencies[i], 0.5)),
                ms(quantile(&latencies[i], 0.99)),
                format!(
                    "{:.0}",
                    latencies[i].len() as f64 / (o.rounds as f64 * o.seconds as f64)
                ),
                format!("{:.0}", median(rates[i].clone())),
            ]
        })
        .collect();
    println!(
        "\ncommitted writes, medians of {} rounds of {} s",
        o.rounds, o.seconds
    );
    print_table(
        &[
            "system",
            "members",
            "p50 ms",
            "p99 ms",
            "writes/s (1 client)",
            &format!("writes/s ({} clients)", o.writers),
        ],
        &rows,
    );
    drop(etcd_one);
    drop(one);

    // Failover with three members.
    let mut dcnet_failover = Vec::new();
    let mut etcd_failover = Vec::new();
    let mut three = three;
    let through_agent = "http://127.0.0.1:62080";
    let dcnet = dcnet_target(&three)?;
    for f in 0..o.failovers {
        eprintln!("failover {}/{}", f + 1, o.failovers);
        let url = dcnet_leader(&three)?;
        let leader = three
            .nodes
            .iter()
            .position(|n| url.contains(&format!("{}:", n.address)))
            .context("the leader is a node")?;
        three.stop_agent(leader, Signal::SIGKILL, Duration::from_secs(5));
        let killed = Instant::now();
        wait_until(
            "a write after the failover",
            Duration::from_secs(30),
            || {
                let n = next.fetch_add(1, Ordering::Relaxed);
                Ok(three.nodes[3]
                    .netns
                    .run(|| dcnet.write(through_agent, n).ok())?)
            },
        )?;
        dcnet_failover.push(killed.elapsed().as_secs_f64());
        three.start_agent(leader)?;
        std::thread::sleep(Duration::from_secs(3));

        let leader = etcd_three.leader(&three)?;
        etcd_three.members[leader] = None;
        let killed = Instant::now();
        let survivor = (leader + 1) % 3;
        let base = format!("http://10.200.0.{}:2379", survivor + 1);
        let etcd = etcd_target()?;
        wait_until(
            "an etcd write after the failover",
            Duration::from_secs(30),
            || {
                let n = next.fetch_add(1, Ordering::Relaxed);
                Ok(three.nodes[survivor]
                    .netns
                    .run(|| etcd.write(&base, n).ok())?)
            },
        )?;
        etcd_failover.push(killed.elapsed().as_secs_f64());
        etcd_three.members[leader] = Some(etcd_three.member(&three, leader)?);
        std::thread::sleep(Duration::from_secs(3));
    }
    println!(
        "\nfailover, three members: leader killed → first committed write, {} times",
        o.failovers
    );
    print_table(
        &["system", "median s", "max s"],
        &[
            vec![
                "dcnet".into(),
                format!("{:.2}", median(dcnet_failover.clone())),
                format!("{:.2}", dcnet_failover.iter().copied().fold(0.0, f64::max)),
            ],
            vec![
                "etcd".into(),
                format!("{:.2}", median(etcd_failover.clone())),
                format!("{:.2}", etcd_failover.iter().copied().fold(0.0, f64::max)),
            ],
        ],
    );
    drop(etcd_three);
    Ok(())
}
