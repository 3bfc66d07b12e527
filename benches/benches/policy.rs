//! Network-policy benchmark: connection rate and request/response between two tasks, with no
//! policy, and with 0, 100 and 1,000 policies over 10,000 identities enforced by dcnet's eBPF
//! programs, beside the same allow-lists written as iptables rules, in one run.
//!
//! Two pairs of namespaces, each a client "task" and a server "task" joined by a veth:
//! - the **dcnet** pair: client and server processes run in a cgroup of the bench where the
//!   policy programs are attached (the client's egress and the server's ingress are both
//!   decided, as on a node); the rules come from `dcnet_policy::Compiled` over 10,000 apps of
//!   one task each, N policies each isolating one app's ingress and allowing one other app on
//!   TCP 8080, the measured pair's policy among them. With 0 policies the hooks still run (every
//!   flow is looked up and cached). **No policy**: the same pair, client and server in another
//!   cgroup with no programs;
//! - the **iptables** pair: the same allow-lists as rules in the server namespace's INPUT
//!   chain, stateful as policy engines write them (`ESTABLISHED,RELATED` accepted first, then
//!   one ACCEPT per allowed (source, destination, port), the measured one last, then DROP for
//!   the isolated destinations).
//!
//! Every case runs in every round, in an order that rotates; ratios are medians of per-round
//! ratios to "no policy". The client (2 threads) runs on core 0 and the server on core 1.
//!
//! Usage: `cargo bench -p dcnet-benches --bench policy -- [--seconds 2] [--rounds 5]
//!        [--policies 100,1000] [--identities 10000]`

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use dcnet_benches::{Background, median, print_table};
use dcnet_lb::policy::{Enforcer, Rules};
use dcnet_policy::{Compiled, Policy, Task};
use dcnet_tests::cluster::in_netns;
use dcnet_tests::{TestCgroup, TestNamespace};

const LOAD: &str = env!("CARGO_BIN_EXE_dcnet-conn-load");
const CLIENT_CPU: &str = "0";
const SERVER_CPU: &str = "1";
const CONN_PORT: u16 = 8080;
const RR_PORT: u16 = 8081;

#[derive(clap::Parser)]
struct Options {
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    policies: Vec<usize>,
    #[arg(long, default_value_t = 10_000)]
    identities: usize,
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    NoPolicy,
    Dcnet(usize),
    Iptables(usize),
}

impl Case {
    fn name(self) -> String {
        match self {
            Case::NoPolicy => "no policy".into(),
            Case::Dcnet(n) => format!("dcnet eBPF, {n} policies"),
            Case::Iptables(n) => format!("iptables, {n} policies"),
        }
    }
}

/// A client and a server namespace joined by a veth (10.95.k.1 client, 10.95.k.2 server).
struct Pair {
    client: TestNamespace,
    server: TestNamespace,
    client_ip: Ipv4Addr,
    server_ip: Ipv4Addr,
}

impl Pair {
    fn new(k: u8) -> Result<Self> {
        let client = TestNamespace::create(&format!("polc{k}"))?;
        let server = TestNamespace::create(&format!("pols{k}"))?;
        let client_ip = Ipv4Addr::new(10, 95, k, 1);
        let server_ip = Ipv4Addr::new(10, 95, k, 2);
        let server_ns = server.netns();
        client.netns().netlink(|nl| async move {
            nl.add_veth("eth0", "eth0", Some(server_ns)).await?;
            nl.add_address("eth0", client_ip.into(), 24).await?;
            nl.set_up("eth0").await
        })?;
        server.netns().netlink(|nl| async move {
            nl.add_address("eth0", server_ip.into(), 24).await?;
            nl.set_up("eth0").await
        })?;
        for ns in [&client, &server] {
            ns.netns().run(|| -> Result<()> {
                std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "20000 65000")?;
                std::fs::write("/proc/sys/net/core/somaxconn", "4096")?;
                Ok(())
            })??;
        }
        Ok(Self {
            client,
            server,
            client_ip,
            server_ip,
        })
    }

    /// The servers (connections on 8080, request/response on 8081, each + `shift`) placed in
    /// `cgroup`, once they listen.
    fn serve(&self, cgroup: &TestCgroup, shift: u16) -> Result<[Background; 2]> {
        let spawn = |args: &[&str]| -> Result<Background> {
            let mut command = Command::new("taskset");
            command
                .args(["-c", SERVER_CPU, LOAD])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            in_netns(&mut command, self.server.netns(), true);
            cgroup.place(&mut command);
            Ok(Background(command.spawn().context("starting the server")?))
        };
        let conn = std::net::SocketAddr::from((self.server_ip, CONN_PORT + shift));
        let rr = std::net::SocketAddr::from((self.server_ip, RR_PORT + shift));
        let servers = [
            spawn(&["serve", &conn.to_string(), "2"])?,
            spawn(&["serve-rr", &rr.to_string()])?,
        ];
        for addr in [conn, rr] {
            dcnet_tests::wait_until(
                &format!("the server at {addr}"),
                std::time::Duration::from_secs(10),
                || {
                    Ok(self
                        .server
                        .netns()
                        .run(|| {
                            std::net::TcpStream::connect_timeout(
                                &addr,
                                std::time::Duration::from_millis(200),
                            )
                            .is_ok()
                        })?
                        .then_some(()))
                },
            )?;
        }
        Ok(servers)
    }

    /// One load run from the client namespace in `cgroup`: its JSON line.
    fn load(
        &self,
        cgroup: &TestCgroup,
        mode: &str,
        port: u16,
        seconds: f64,
    ) -> Result<serde_json::Value> {
        let mut command = Command::new("taskset");
        command.args([
            "-c",
            CLIENT_CPU,
            LOAD,
            mode,
            &format!("{}:{port}", self.server_ip),
            "2",
            &seconds.to_string(),
        ]);
        in_netns(&mut command, self.client.netns(), true);
        cgroup.place(&mut command);
        let out = command.stderr(Stdio::inherit()).output()?;
        if !out.status.success() {
            bail!("the {mode} client failed");
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

/// The address of app `i` of the synthetic cluster (the measured pair's are the pair's own).
fn app_address(i: usize) -> IpAddr {
    Ipv4Addr::new(
        10,
        128 + (i / 62_500) as u8,
        (i / 250 % 250) as u8,
        (i % 250 + 1) as u8,
    )
    .into()
}

/// `n` policies over `identities` apps: policy k isolates app k's ingress and allows app k+1 on
/// TCP 8080 and 8081; the measured pair (server = app 0, client = app 1) is one of them. The
/// apps' tasks, with the pair's own addresses for apps 0 and 1.
fn world(n: usize, identities: usize, pair: &Pair) -> (Vec<Policy>, Vec<Task>) {
    let tasks = (0..identities)
        .map(|i| Task {
            app: format!("/app-{i}"),
            labels: Default::default(),
            addresses: vec![match i {
                0 => pair.server_ip.into(),
                1 => pair.client_ip.into(),
                _ => app_address(i),
            }],
        })
        .collect();
    let policies = (0..n)
        .map(|k| {
            Policy::parse(&format!(
                r#"{{"id": "p{k}", "selector": {{"apps": ["/app-{k}"]}},
                    "ingress": [{{"from": [{{"apps": ["/app-{}"]}}],
                                 "ports": [{{"protocol": "tcp", "port": {CONN_PORT}}},
                                           {{"protocol": "tcp", "port": {RR_PORT}}}]}}]}}"#,
                (k + 1) % identities
            ))
            .expect("a well-formed policy")
        })
        .collect();
    (policies, tasks)
}

/// The same allow-lists as iptables rules for the server namespace (iptables-restore input).
fn iptables_rules(n: usize, pair: &Pair) -> String {
    let mut out =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    out.push_str("-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
    // The measured pair's rule last: the worst case of a linear list, which is where some
    // allowed flow always is.
    for k in (0..n).rev() {
        let (dst, src) = if k == 0 {
            (IpAddr::from(pair.server_ip), IpAddr::from(pair.client_ip))
        } else {
            (app_address(k), app_address(k + 1))
        };
        for port in [CONN_PORT, RR_PORT] {
            out.push_str(&format!(
                "-A INPUT -s {src}/32 -d {dst}/32 -p tcp -m tcp --dport {port} -j ACCEPT\n"
            ));
        }
    }
    for k in 0..n {
        let dst = if k == 0 {
            IpAddr::from(pair.server_ip)
        } else {
            app_address(k)
        };
        out.push_str(&format!("-A INPUT -d {dst}/32 -j DROP\n"));
    }
    out.push_str("COMMIT\n");
    out
}

fn iptables_restore(ns: &TestNamespace, rules: &str) -> Result<()> {
    let mut command = Command::new("iptables-restore");
    in_netns(&mut command, ns.netns(), true);
    let mut child = command
        .stdin(Stdio::piped())
        .spawn()
        .context("iptables-restore (apt install iptables)")?;
    std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, rules.as_bytes())?;
    if !child.wait()?.success() {
        bail!("iptables-restore refused the rules");
    }
    Ok(())
}

#[derive(Default)]
struct Samples {
    conn: Vec<f64>,
    rr: Vec<f64>,
    conn_p50: Vec<f64>,
    rr_p50: Vec<f64>,
}

fn main() -> Result<()> {
    let options: Options = clap::Parser::parse();
    dcnet_tests::cluster::require_root()?;
    let dcnet = Pair::new(1)?;
    let iptables = Pair::new(2)?;
    let enforced = TestCgroup::create("polbench")?;
    let plain = TestCgroup::create("polbench-plain")?;
    let mut enforcer = Enforcer::load()?;
    enforcer.attach(enforced.path())?;
    let _servers = [
        dcnet.serve(&enforced, 0)?,
        // The baseline: the dcnet pair, client and servers in a cgroup without programs.
        dcnet.serve(&plain, 100)?,
        iptables.serve(&plain, 0)?,
    ];

    println!(
        "compiling {} identities with {:?} policies...",
        options.identities, options.policies
    );
    let mut compiled: BTreeMap<usize, Rules> = BTreeMap::new();
    for &n in std::iter::once(&0).chain(&options.policies) {
        let started = Instant::now();
        let (policies, tasks) = world(n, options.identities, &dcnet);
        let c = Compiled::new(&policies, &tasks, &[]);
        let rules = Rules::new(&c);
        let took = started.elapsed();
        let applied = Instant::now();
        enforcer.apply(rules.clone())?;
        println!(
            "  {n} policies: compiled in {:.0} ms, programmed in {:.0} ms ({} identities, {} allow entries)",
            took.as_secs_f64() * 1e3,
            applied.elapsed().as_secs_f64() * 1e3,
            rules.identities.len(),
            rules.allow.len()
        );
        compiled.insert(n, rules);
    }
    let mut cases = vec![Case::NoPolicy, Case::Dcnet(0)];
    for &n in &options.policies {
        cases.push(Case::Dcnet(n));
        cases.push(Case::Iptables(n));
    }
    let mut samples: BTreeMap<Case, Samples> = BTreeMap::new();
    for round in 0..options.rounds {
        let mut order = cases.clone();
        order.rotate_left(round % cases.len());
        for case in order {
            let (pair, cgroup, port_shift) = match case {
                Case::NoPolicy => (&dcnet, &plain, 100),
                Case::Dcnet(n) => {
                    enforcer.apply(compiled[&n].clone())?;
                    (&dcnet, &enforced, 0)
                }
                Case::Iptables(n) => {
                    iptables_restore(&iptables.server, &iptables_rules(n, &iptables))?;
                    (&iptables, &plain, 0)
                }
            };
            let conn = pair.load(cgroup, "run", CONN_PORT + port_shift, options.seconds)?;
            let rr = pair.load(cgroup, "rr", RR_PORT + port_shift, options.seconds)?;
            let errors: u64 = conn["errors"]
                .as_object()
                .map(|e| e.values().filter_map(|v| v.as_u64()).sum())
                .unwrap_or_default();
            if errors > 0 {
                bail!(
                    "{}: {errors} connections failed: {}",
                    case.name(),
                    conn["errors"]
                );
            }
            let s = samples.entry(case).or_default();
            let rate = |v: &serde_json::Value, key: &str| {
                v[key].as_f64().unwrap_or_default() / v["seconds"].as_f64().unwrap_or(1.0)
            };
            s.conn.push(rate(&conn, "connections"));
            s.rr.push(rate(&rr, "transactions"));
            s.conn_p50.push(conn["p50_us"].as_f64().unwrap_or_default());
            s.rr_p50.push(rr["p50_us"].as_f64().unwrap_or_default());
        }
        eprintln!("round {} of {} done", round + 1, options.rounds);
    }
    let base = &samples[&Case::NoPolicy];
    let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    let rows: Vec<Vec<String>> = cases
        .iter()
        .map(|case| {
            let s = &samples[case];
            vec![
                case.name(),
                format!("{:.0}", median(s.conn.clone())),
                format!("{:.3}", ratio(&s.conn, &base.conn)),
                format!("{:.0}", median(s.conn_p50.clone())),
                format!("{:.0}", median(s.rr.clone())),
                format!("{:.3}", ratio(&s.rr, &base.rr)),
                format!("{:.1}", median(s.rr_p50.clone())),
            ]
        })
        .collect();
    println!(
        "\n{} identities; medians of {} rounds of {} s; ratios to no policy, per round",
        options.identities, options.rounds, options.seconds
    );
    print_table(
        &[
            "case",
            "conn/s",
            "x no policy",
            "conn p50 us",
            "req/resp /s",
            "x no policy",
            "rr p50 us",
        ],
        &rows,
    );
    let counters = enforcer.counters()?;
    println!("\ndcnet datapath counters: {counters:?}");
    Ok(())
}
