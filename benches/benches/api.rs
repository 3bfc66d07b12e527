//! API benchmark: what credentials and TLS cost the scheduler's `/v2` API.
//!
//! Two one-node clusters run side by side: one as shipped (TLS from the cluster CA, a
//! credential checked on every request) and one with `[auth] insecure = true` (plain HTTP, no
//! check). A client in each node's namespace makes back-to-back requests for `--seconds`,
//! the clusters alternating over `--rounds` rounds:
//! - `GET /v2/apps` on one kept-alive connection;
//! - `GET /v2/apps` on a new connection each time (a TCP and, secure, a TLS handshake each, as
//!   every `curl` or CLI call makes);
//! - `POST /v2/apps` of an app with no instances, each followed by its `DELETE` so the stored
//!   apps keep their size (latency of the POST; CPU per request over both);
//!
//! secure with a token (`Authorization: token=`) and with HTTP basic (Argon2-checked once,
//! then cached). Per row: p50 and p99 latency, requests per second, the agent's CPU per
//! request (its /proc counters over the run, less its idle rate measured beforehand) and the
//! client's; then secure ÷ insecure ratios. Medians over the rounds.
//!
//! Usage: `cargo bench -p dcnet-benches --bench api -- [--seconds 3] [--rounds 3]`

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_auth::Role;
use dcnet_benches::{print_table, process_cpu, quantile, thread_cpu};
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};

#[derive(clap::Parser)]
struct Options {
    /// Length of each measured run.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    // `cargo bench` passes --bench to every benchmark binary.
    #[arg(long, hide = true)]
    bench: bool,
}

const PASSWORD: &str = "benchmark password of some length";

/// One way of calling the API.
#[derive(Clone, Copy, PartialEq)]
enum Call {
    GetKeptAlive,
    GetNewConnection,
    PostDelete,
}

impl Call {
    const ALL: [Call; 3] = [Call::GetKeptAlive, Call::GetNewConnection, Call::PostDelete];

    fn name(self) -> &'static str {
        match self {
            Call::GetKeptAlive => "GET /v2/apps, kept alive",
            Call::GetNewConnection => "GET /v2/apps, new connection",
            Call::PostDelete => "POST /v2/apps (+DELETE)",
        }
    }
}

/// A cluster and how its client calls it.
struct Target {
    cluster: Cluster,
    base: String,
    auth: Option<String>,
    kept: ureq::Agent,
    fresh: ureq::Agent,
    /// The agent's CPU per second while nothing is asked of it.
    idle: f64,
}

/// What one run measured.
struct Run {
    latencies: Vec<Duration>,
    requests: u64,
    elapsed: Duration,
    server_cpu: Duration,
    client_cpu: Duration,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// A kept-alive client and one that connects anew for each request.
fn agents(ca: Option<&str>) -> Result<(ureq::Agent, ureq::Agent)> {
    let timeout = Duration::from_secs(10);
    Ok((
        dcnet_agent::auth::client(ca, timeout, true)?,
        dcnet_agent::auth::client(ca, timeout, false)?,
    ))
}

fn start(insecure: bool) -> Result<Cluster> {
    let mut options = ClusterOptions::nodes(1);
    options.insecure = insecure;
    options.nodes[0] = NodeSpec {
        roles: vec!["master".into()],
        ..NodeSpec::default()
    };
    let cluster = Cluster::start(options)?;
    // Thousands of new connections a second from one client leave its ports in TIME_WAIT;
    // without reuse, connect() soon spends milliseconds looking for a free port, whichever
    // server it calls. Per namespace, the same for both clusters.
    for (key, value) in [
        ("net.ipv4.tcp_tw_reuse", "1"),
        ("net.ipv4.ip_local_port_range", "1024 65000"),
    ] {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                cluster.nodes[0].netns.name(),
                "sysctl",
                "-qw",
            ])
            .arg(format!("{key}={value}"))
            .output()?;
        if !out.status.success() {
            bail!("sysctl {key}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(cluster)
}

fn call(
    agent: &ureq::Agent,
    auth: Option<&str>,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<u16> {
    let mut response = match (method, body) {
        ("GET", _) => match auth {
            Some(a) => agent.get(url).header("authorization", a).call(),
            None => agent.get(url).call(),
        },
        ("DELETE", _) => match auth {
            Some(a) => agent.delete(url).header("authorization", a).call(),
            None => agent.delete(url).call(),
        },
        (_, Some(body)) => {
            let request = agent.post(url).content_type("application/json");
            match auth {
                Some(a) => request.header("authorization", a).send(body),
                None => request.send(body),
            }
        }
        _ => bail!("{method} without a body"),
    }
    .with_context(|| format!("{method} {url}"))?;
    // Read the whole answer, as a client does.
    let _ = response.body_mut().read_to_vec()?;
    Ok(response.status().as_u16())
}

impl Target {
    fn new(cluster: Cluster, auth: Option<String>) -> Result<Self> {
        let secure = cluster.pki_dir().join("ca.crt").exists();
        let ca = if secure {
            Some(cluster.ca_pem()?)
        } else {
            None
        };
        let (kept, fresh) = agents(ca.as_deref())?;
        let base = format!(
            "{}://10.200.0.1:8080",
            if secure { "https" } else { "http" }
        );
        let target = Self {
            cluster,
            base,
            auth,
            kept,
            fresh,
            idle: 0.0,
        };
        let url = format!("{}/v2/apps", target.base);
        wait_until("the scheduler to lead", Duration::from_secs(30), || {
            let status =
                target.in_node(|t| call(&t.kept, t.auth.as_deref(), "GET", &url, None))??;
            Ok((status == 200).then_some(()))
        })?;
        Ok(target)
    }

    fn pid(&self) -> Result<u32> {
        self.cluster.nodes[0]
            .pid()
            .context("the agent is not running")
    }

    fn in_node<T: Send>(&self, f: impl FnOnce(&Self) -> T + Send) -> Result<T>
    where
        Self: Sync,
    {
        Ok(self.cluster.nodes[0].netns.run(|| f(self))?)
    }

    fn measure_idle(&mut self) -> Result<()> {
        let pid = self.pid()?;
        let cpu0 = process_cpu(pid)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        self.idle = (process_cpu(pid)? - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
        Ok(())
    }

    fn run(&self, what: Call, seconds: u64, round: usize) -> Result<Run> {
        let pid = self.pid()?;
        let apps = format!("{}/v2/apps", self.base);
        self.in_node(|t| -> Result<Run> {
            let auth = t.auth.as_deref();
            let mut latencies = Vec::new();
            let mut requests = 0;
            let (server0, client0, t0) = (process_cpu(pid)?, thread_cpu(), Instant::now());
            let mut i = 0u64;
            while t0.elapsed() < Duration::from_secs(seconds) {
                let started = Instant::now();
                match what {
                    Call::GetKeptAlive | Call::GetNewConnection => {
                        let agent = if what == Call::GetKeptAlive {
                            &t.kept
                        } else {
                            &t.fresh
                        };
                        let status = call(agent, auth, "GET", &apps, None)?;
                        if status != 200 {
                            bail!("GET {apps}: {status}");
                        }
                        latencies.push(started.elapsed());
                        requests += 1;
                    }
                    Call::PostDelete => {
                        let id = format!("/bench-{round}-{i}");
                        let body = format!(
                            r#"{{"id":"{id}","cmd":"sleep 1","instances":0,"cpus":0.01,"mem":1}}"#
                        );
                        let status = call(&t.kept, auth, "POST", &apps, Some(&body))?;
                        if status != 201 {
                            bail!("POST {apps}: {status}");
                        }
                        latencies.push(started.elapsed());
                        let status = call(&t.kept, auth, "DELETE", &format!("{apps}{id}"), None)?;
                        if status != 200 {
                            bail!("DELETE {id}: {status}");
                        }
                        requests += 2;
                    }
                }
                i += 1;
            }
            let elapsed = t0.elapsed();
            let server =
                (process_cpu(pid)? - server0).as_secs_f64() - t.idle * elapsed.as_secs_f64();
            Ok(Run {
                latencies,
                requests,
                elapsed,
                server_cpu: Duration::from_secs_f64(server.max(0.0)),
                client_cpu: thread_cpu() - client0,
            })
        })?
    }
}

fn micros(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}

/// Median of a figure over the runs.
fn median(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let o = <Options as clap::Parser>::parse();
    eprintln!("starting two one-node clusters (secure and insecure)...");
    let secure = start(false)?;
    let token = dcnet_auth::credential::token_header(&secure.token_with(
        Role::Admin,
        "bench",
        Duration::from_secs(3600),
    )?);
    let mut targets = vec![
        Target::new(start(true)?, None)?,
        Target::new(secure, Some(token.clone()))?,
    ];
    // A basic user on the secure cluster, then a second client of it presenting that user.
    let basic = dcnet_auth::credential::basic_header("bench", PASSWORD);
    {
        let t = &targets[1];
        let url = format!("{}/v1/auth/users/bench", t.base);
        let body = format!(r#"{{"role":"admin","password":"{PASSWORD}"}}"#);
        let status = t.in_node(|t| -> Result<u16> {
            let mut r = t
                .kept
                .put(&url)
                .header("authorization", &token)
                .content_type("application/json")
                .send(&body)?;
            let _ = r.body_mut().read_to_vec();
            Ok(r.status().as_u16())
        })??;
        if status != 200 {
            bail!("adding the basic user: {status}");
        }
    }
    let mut columns: Vec<(usize, Option<String>)> = vec![(0, None), (1, None), (1, Some(basic))];
    for t in &mut targets {
        t.measure_idle()?;
    }
    let labels = ["insecure", "token", "basic"];

    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for what in Call::ALL {
        let mut runs: Vec<Vec<Run>> = (0..columns.len()).map(|_| Vec::new()).collect();
        for round in 0..o.rounds {
            for (c, (t, auth)) in columns.iter_mut().enumerate() {
                let target = &mut targets[*t];
                let saved = auth.clone().map(|a| target.auth.replace(a));
                let run = target.run(what, o.seconds, round * 10 + c);
                if let Some(previous) = saved {
                    target.auth = previous;
                }
                runs[c].push(run?);
            }
        }
        let figures: Vec<[f64; 5]> = runs
            .iter()
            .map(|r| {
                [
                    median(r, |x| micros(quantile(&x.latencies, 0.5))),
                    median(r, |x| micros(quantile(&x.latencies, 0.99))),
                    median(r, Run::per_second),
                    median(r, |x| x.server_cpu.as_secs_f64() * 1e6 / x.requests as f64),
                    median(r, |x| x.client_cpu.as_secs_f64() * 1e6 / x.requests as f64),
                ]
            })
            .collect();
        for (c, f) in figures.iter().enumerate() {
            rows.push(vec![
                what.name().to_owned(),
                labels[c].to_owned(),
                format!("{:.0}", f[0]),
                format!("{:.0}", f[1]),
                format!("{:.0}", f[2]),
                format!("{:.1}", f[3]),
                format!("{:.1}", f[4]),
            ]);
        }
        for c in 1..figures.len() {
            let r = |i: usize| figures[c][i] / figures[0][i];
            ratios.push(vec![
                what.name().to_owned(),
                format!("{} ÷ insecure", labels[c]),
                format!("{:.2}", r(0)),
                format!("{:.2}", r(1)),
                format!("{:.2}", r(2)),
                format!("{:.2}", r(3)),
                format!("{:.2}", r(4)),
            ]);
        }
    }
    println!(
        "\nscheduler /v2 API, one node; medians of {} rounds of {} s; CPU per request (agent less its idle rate, and client)",
        o.rounds, o.seconds
    );
    print_table(
        &[
            "call",
            "mode",
            "p50 µs",
            "p99 µs",
            "req/s",
            "agent µs/req",
            "client µs/req",
        ],
        &rows,
    );
    println!();
    print_table(
        &[
            "call",
            "ratio",
            "p50",
            "p99",
            "req/s",
            "agent cpu",
            "client cpu",
        ],
        &ratios,
    );
    Ok(())
}
