//! L4 load-balancing benchmark: short TCP connections through five datapaths, side by side in
//! one run, with the same client and server.
//!
//! One server namespace runs the server (`dcnet-conn-load serve`, 2 threads, core 1), which
//! answers a 64-byte request with 64 bytes and closes. The client (`dcnet-conn-load run`, 2
//! threads, core 0) loops connect, request, read to EOF, close, and reports connections per
//! second, the latency of whole connections and its own CPU time per connection. For each VIP
//! count (1, 1,000, 10,000, all to the same backend, the measured one in the middle), client
//! namespaces are joined to the server by veth pairs (no route anywhere else): one without
//! netfilter NAT for dcnet, HAProxy and direct, one for iptables and one for nftables (a NAT
//! table turns conntrack on for every connection of its namespace). The datapaths:
//! - **dcnet**: the eBPF socket hooks, attached to a cgroup made for the bench, which holds the
//!   client; the VIP is translated at connect time. Also **direct, in the cgroup**: what the
//!   hooks cost a connect that is not to a VIP;
//! - **iptables**: DNAT rules in the client namespace's `nat OUTPUT` chain (conntrack NAT,
//!   the class of kube-proxy's iptables mode and of dcos-l4lb's IPVS NAT mode), one per VIP;
//! - **nftables**: a verdict map from VIP to a chain per VIP that DNATs (kube-proxy's nftables
//!   mode);
//! - **haproxy**: HAProxy in TCP mode in the client namespace, one listener per VIP on
//!   127.0.0.1;
//! - **direct**: the client connects to the backend itself.
//!
//! Every datapath is installed at once and the runs alternate, round after round; ratios are
//! medians of per-round ratios. Shared machines drift (this one shows up to 40% CPU steal), so
//! an **interleaved** run follows: one client in dcnet's cgroup alternates its connections
//! between the VIP and the backend, and the ratio of their connection times is the datapath's
//! cost alone. Last, the **sustained** rate of one client thread to one VIP with only 2,000
//! ephemeral ports, to show there is no cap from port exhaustion (Minuteman's conntrack design
//! capped near 235/s). Then **IPv6**: named IPv6 VIPs (fd01:c::/64, as the agent computes them)
//! to an IPv6 backend through `connect6`, against that backend directly, in alternating rounds.
//!
//! Usage: `cargo bench -p dcnet-benches --bench lb -- [--seconds 2] [--rounds 5]
//!        [--vips 1,1000,10000] [--sustained-seconds 20] [--only-interleaved] [--only-ipv6]`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_benches::{Background, median, netlink_in, print_table, spawn_in};
use dcnet_lb::{Backend, Datapath, Protocol, Vip};
use dcnet_tests::cluster::in_netns;
use dcnet_tests::{TestCgroup, TestNamespace};

const LOAD: &str = env!("CARGO_BIN_EXE_dcnet-conn-load");
const HAPROXY_BASE_PORT: u16 = 10_000;
/// The client's ephemeral ports in the sustained run: 2,000.
const SUSTAINED_PORTS: &str = "40000 41999";
/// The client runs on one core and the server on the other, the same for every datapath, so
/// the scheduler's placement does not add noise to the comparison. HAProxy floats.
const CLIENT_CPU: &str = "0";
const SERVER_CPU: &str = "1";

/// The L4 load-balancing benchmark: dcnet's VIP against conntrack DNAT, HAProxy and direct.
#[derive(clap::Parser)]
struct Options {
    /// Length of each run of the alternating rounds.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// VIP counts to configure, each 1 to 30000.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000",
          value_parser = clap::value_parser!(u32).range(1..=30_000))]
    vips: Vec<u32>,
    #[arg(long, default_value_t = 20.0)]
    sustained_seconds: f64,
    /// Only the interleaved A/B run (for quick comparisons of datapath variants).
    #[arg(long)]
    only_interleaved: bool,
    /// Only the IPv6 section.
    #[arg(long)]
    only_ipv6: bool,
    // `cargo bench` passes --bench to every benchmark binary.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    Dcnet,
    /// The backend directly, from the client in dcnet's cgroup: what the hooks cost a connect
    /// that is not to a VIP, and what being in another cgroup costs.
    DirectInCgroup,
    Iptables,
    Nftables,
    Haproxy,
    Direct,
}

impl Path {
    const ALL: [Path; 6] = [
        Path::Dcnet,
        Path::DirectInCgroup,
        Path::Iptables,
        Path::Nftables,
        Path::Haproxy,
        Path::Direct,
    ];

    fn name(self) -> &'static str {
        match self {
            Path::Dcnet => "dcnet VIP (eBPF)",
            Path::DirectInCgroup => "direct, in the cgroup",
            Path::Iptables => "iptables DNAT",
            Path::Nftables => "nftables DNAT vmap",
            Path::Haproxy => "HAProxy (TCP)",
            Path::Direct => "direct",
        }
    }
}

/// The VIPs of a case: `n` addresses in 11.0.0.0/8, the measured one in the middle.
fn vips(n: u32) -> (Vec<SocketAddrV4>, usize) {
    let all = (0..n)
        .map(|i| SocketAddrV4::new(Ipv4Addr::from(0x0b00_0001 + i), 80))
        .collect();
    (all, n as usize / 2)
}

/// The server namespace and its server, shared by every client namespace of the run.
struct Server {
    ns: TestNamespace,
    _process: Background,
    next_link: u8,
}

impl Server {
    fn start() -> Result<Self> {
        let ns = TestNamespace::create("lbsrv")?;
        tune(&ns)?;
        let process = spawn_in(
            ns.netns(),
            "taskset",
            &["-c", SERVER_CPU, LOAD, "serve", "0.0.0.0:8080", "2"],
        )?;
        Ok(Self {
            ns,
            _process: process,
            next_link: 0,
        })
    }
}

/// Settings every namespace of the bench gets, whatever the datapath.
fn tune(ns: &TestNamespace) -> Result<()> {
    ns.netns().run(|| -> Result<()> {
        // More ephemeral ports than the default, the same for every datapath.
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "20000 65000")?;
        std::fs::write("/proc/sys/net/core/somaxconn", "4096")?;
        Ok(())
    })?
}

/// A client namespace with its own veth pair into the server's namespace (10.211.k.0/24): the
/// server is `backend` from here.
struct Client {
    ns: TestNamespace,
    backend: SocketAddrV4,
}

impl Client {
    fn new(server: &mut Server, label: &str) -> Result<Self> {
        let k = server.next_link;
        server.next_link += 1;
        let ns = TestNamespace::create(label)?;
        tune(&ns)?;
        let (here, there) = (format!("lbc{k}"), format!("lbs{k}"));
        let client_ip = Ipv4Addr::new(10, 211, k, 1);
        let server_ip = Ipv4Addr::new(10, 211, k, 2);
        let server_ns = server.ns.netns();
        let (h, t) = (here.clone(), there.clone());
        ns.netns().netlink(|nl| async move {
            nl.add_veth(&h, &t, Some(server_ns)).await?;
            nl.add_address(&h, client_ip.into(), 24).await?;
            nl.set_up(&h).await
        })?;
        server.ns.netns().netlink(|nl| async move {
            nl.add_address(&there, server_ip.into(), 24).await?;
            nl.set_up(&there).await
        })?;
        // The VIP range routed towards the server, as a node's default route would: conntrack
        // NAT needs a route before its OUTPUT hook runs (dcnet's hooks run before routing).
        add_route(ns.netns(), (Ipv4Addr::new(11, 0, 0, 0), 8), server_ip)?;
        let client = Self {
            ns,
            backend: SocketAddrV4::new(server_ip, 8080),
        };
        client.wait_for_backend()?;
        Ok(client)
    }

    fn wait_for_backend(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let backend = self.backend;
        while Instant::now() < deadline {
            let ok = self.ns.netns().run(|| {
                std::net::TcpStream::connect_timeout(&backend.into(), Duration::from_millis(200))
                    .is_ok()
            })?;
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the backend at {backend} did not answer")
    }

    /// Runs the load client here (and in `cgroup`).
    fn load(
        &self,
        target: impl Into<SocketAddr>,
        threads: usize,
        seconds: f64,
        cgroup: Option<&TestCgroup>,
    ) -> Result<LoadResult> {
        let target: SocketAddr = target.into();
        let mut command = Command::new("taskset");
        command.args([
            "-c",
            CLIENT_CPU,
            LOAD,
            "run",
            &target.to_string(),
            &threads.to_string(),
            &seconds.to_string(),
        ]);
        in_netns(&mut command, self.ns.netns(), true);
        if let Some(cgroup) = cgroup {
            cgroup.place(&mut command);
        }
        let out = command.stderr(Stdio::inherit()).output()?;
        if !out.status.success() {
            bail!("the load client to {target} failed");
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("client output {:?}", String::from_utf8_lossy(&out.stdout)))?;
        let connections = json["connections"].as_f64().unwrap_or_default();
        let errors: u64 = json["errors"]
            .as_object()
            .map(|e| e.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or_default();
        if errors > 0 {
            eprintln!("  errors to {target}: {}", json["errors"]);
        }
        Ok(LoadResult {
            per_second: connections / json["seconds"].as_f64().unwrap_or(seconds),
            p50_us: json["p50_us"].as_f64().unwrap_or_default(),
            p99_us: json["p99_us"].as_f64().unwrap_or_default(),
            errors,
            hook_ns: None,
            cpu_us: json["cpu_us_per_connection"].as_f64().unwrap_or(f64::NAN),
        })
    }
}

/// Adds a route to `dst` via `via` inside `netns` (a namespace of the bench's own).
fn add_route(netns: &dcnet_overlay::Netns, dst: (Ipv4Addr, u8), via: Ipv4Addr) -> Result<()> {
    netlink_in(netns, |handle| async move {
        let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.0, dst.1)
            .gateway(via)
            .build();
        handle.route().add(route).execute().await?;
        Ok(())
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct LoadResult {
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    /// Mean time of dcnet's connect4 program per call during this run (BPF run-time stats).
    hook_ns: Option<f64>,
    /// The client's CPU time per connection.
    cpu_us: f64,
}

/// What a datapath needs kept alive while it is measured.
enum Installed {
    Dcnet {
        datapath: Box<Datapath>,
        cgroup: TestCgroup,
    },
    Nothing,
    Haproxy {
        _proxy: Background,
        _config: tempfile::TempDir,
    },
}

impl Installed {
    /// The cgroup the client must run in, for dcnet.
    fn cgroup(&self) -> Option<&TestCgroup> {
        match self {
            Installed::Dcnet { cgroup, .. } => Some(cgroup),
            _ => None,
        }
    }
}

/// Sets `path` up for `n` VIPs in `pair`; returns what to keep and the address to connect to.
fn install(path: Path, client: &Client, n: u32) -> Result<(Installed, SocketAddrV4)> {
    let (all, measured) = vips(n);
    match path {
        Path::Direct | Path::DirectInCgroup => Ok((Installed::Nothing, client.backend)),
        Path::Dcnet => {
            let cgroup = TestCgroup::create("lbbench")?;
            let mut datapath = Datapath::load()?;
            datapath.attach(cgroup.path())?;
            let desired: BTreeMap<Vip, Vec<Backend>> = all
                .iter()
                .map(|&addr| {
                    (
                        Vip {
                            addr: addr.into(),
                            protocol: Protocol::Tcp,
                        },
                        vec![Backend {
                            addr: client.backend.into(),
                            weight: 1,
                        }],
                    )
                })
                .collect();
            let report = datapath.sync(&desired);
            if let Some((vip, e)) = report.failed.first() {
                bail!("programming {vip}: {e}");
            }
            Ok((
                Installed::Dcnet {
                    datapath: Box::new(datapath),
                    cgroup,
                },
                all[measured],
            ))
        }
        Path::Iptables => {
            let mut rules = String::from("*nat\n:OUTPUT ACCEPT [0:0]\n");
            for vip in &all {
                writeln!(
                    rules,
                    "-A OUTPUT -d {}/32 -p tcp -m tcp --dport {} -j DNAT --to-destination {}",
                    vip.ip(),
                    vip.port(),
                    client.backend
                )?;
            }
            rules.push_str("COMMIT\n");
            feed(client, "iptables-restore", &[], &rules)?;
            Ok((Installed::Nothing, all[measured]))
        }
        Path::Nftables => {
            let mut text = String::from("table ip dcnbench {\n");
            for i in 0..all.len() {
                writeln!(
                    text,
                    "  chain svc{i} {{ meta l4proto tcp dnat to {}:{}; }}",
                    client.backend.ip(),
                    client.backend.port()
                )?;
            }
            text.push_str(
                "  map services {\n    type ipv4_addr . inet_proto . inet_service : verdict\n",
            );
            let elements: Vec<String> = all
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{} . tcp . {} : goto svc{i}", v.ip(), v.port()))
                .collect();
            writeln!(text, "    elements = {{ {} }}\n  }}", elements.join(", "))?;
            text.push_str(
                "  chain output {\n    type nat hook output priority -100; policy accept;\n    \
                 ip daddr . meta l4proto . th dport vmap @services\n  }\n}\n",
            );
            feed(client, "nft", &["-f", "-"], &text)?;
            Ok((Installed::Nothing, all[measured]))
        }
        Path::Haproxy => {
            let dir = tempfile::tempdir()?;
            let mut cfg = String::from(
                "global\n  maxconn 4000\n  nbthread 2\n\ndefaults\n  mode tcp\n  \
                 timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\n",
            );
            for i in 0..all.len() {
                writeln!(
                    cfg,
                    "listen v{i}\n  bind 127.0.0.1:{}\n  server b {}\n",
                    HAPROXY_BASE_PORT as usize + i,
                    client.backend
                )?;
            }
            let path = dir.path().join("haproxy.cfg");
            std::fs::write(&path, cfg)?;
            let proxy = spawn_in(
                client.ns.netns(),
                "haproxy",
                &["-db", "-f", &path.to_string_lossy()],
            )?;
            let target = SocketAddrV4::new(
                Ipv4Addr::LOCALHOST,
                HAPROXY_BASE_PORT + u16::try_from(measured)?,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while !client.ns.netns().run(|| {
                std::net::TcpStream::connect_timeout(&target.into(), Duration::from_millis(200))
                    .is_ok()
            })? {
                if Instant::now() > deadline {
                    bail!("HAProxy did not listen on {target} within 30 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok((
                Installed::Haproxy {
                    _proxy: proxy,
                    _config: dir,
                },
                target,
            ))
        }
    }
}

/// One client process, in dcnet's cgroup, alternating its connections between the VIP and the
/// backend's own address: both halves meet the same machine at the same moments, so their
/// ratio is the datapath's cost alone, free of the drift that shared-machine rates carry.
fn ab_section(server: &mut Server, o: &Options) -> Result<()> {
    println!(
        "\n## Interleaved: one client alternating connections between dcnet's VIP and the backend \
         directly ({} s per VIP count, 2 threads)\n",
        o.seconds * o.rounds as f64
    );
    let mut rows = Vec::new();
    for &n in &o.vips {
        let setup = Setup::new(server, n)?;
        let (which, installed, vip) = &setup.paths[&Path::Dcnet];
        let client = &setup.clients[*which];
        let mut command = Command::new("taskset");
        command.args([
            "-c",
            CLIENT_CPU,
            LOAD,
            "ab",
            &vip.to_string(),
            &client.backend.to_string(),
            "2",
            &(o.seconds * o.rounds as f64).to_string(),
        ]);
        in_netns(&mut command, client.ns.netns(), true);
        if let Some(cgroup) = installed.cgroup() {
            cgroup.place(&mut command);
        }
        let out = command.stderr(Stdio::inherit()).output()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("ab output {:?}", String::from_utf8_lossy(&out.stdout)))?;
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        rows.push(vec![
            n.to_string(),
            format!("{:.1}", f(&json["a"]["mean_us"])),
            format!("{:.1}", f(&json["b"]["mean_us"])),
            format!("{:.1}", f(&json["a"]["p50_us"])),
            format!("{:.1}", f(&json["b"]["p50_us"])),
            format!("{:.3}", 1.0 / f(&json["mean_ratio"])),
            format!("{:.3}", 1.0 / f(&json["p50_ratio"])),
            json["errors"].to_string(),
        ]);
    }
    print_table(
        &[
            "VIPs",
            "VIP mean µs",
            "direct mean µs",
            "VIP p50 µs",
            "direct p50 µs",
            "rate VIP ÷ direct (mean)",
            "(p50)",
            "errors",
        ],
        &rows,
    );
    println!(
        "\n(a closed-loop client's rate is the inverse of its connection time, so the rate ratio \
         is direct time ÷ VIP time)"
    );
    Ok(())
}

/// Runs `program args` in the client's namespace with `input` on stdin.
fn feed(client: &Client, program: &str, args: &[&str], input: &str) -> Result<()> {
    use std::io::Write;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    in_netns(&mut command, client.ns.netns(), true);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {program} (scripts/setup.sh installs it)"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{program} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The client namespaces of one VIP count, every datapath installed: dcnet, direct and
/// HAProxy share a namespace without netfilter NAT (dcnet acts only on the cgroup's processes,
/// HAProxy only on its own ports); iptables and nftables each get one, because a NAT table
/// turns conntrack on for every connection of its namespace.
struct Setup {
    clients: Vec<Client>,
    paths: BTreeMap<Path, (usize, Installed, SocketAddrV4)>,
}

impl Setup {
    fn new(server: &mut Server, n: u32) -> Result<Self> {
        let clients = vec![
            Client::new(server, "lbplain")?,
            Client::new(server, "lbipt")?,
            Client::new(server, "lbnft")?,
        ];
        let mut paths = BTreeMap::new();
        for path in Path::ALL {
            let which = match path {
                Path::Iptables => 1,
                Path::Nftables => 2,
                _ => 0,
            };
            let (installed, target) = install(path, &clients[which], n)
                .with_context(|| format!("setting up {} with {n} VIPs", path.name()))?;
            paths.insert(path, (which, installed, target));
        }
        Ok(Self { clients, paths })
    }

    fn run(&self, path: Path, threads: usize, seconds: f64) -> Result<LoadResult> {
        let (which, installed, target) = &self.paths[&path];
        let cgroup = match path {
            Path::DirectInCgroup => self.paths[&Path::Dcnet].1.cgroup(),
            _ => installed.cgroup(),
        };
        let before = self.connect4_runs()?;
        let mut result = self.clients[*which].load(*target, threads, seconds, cgroup)?;
        if cgroup.is_some() {
            let after = self.connect4_runs()?;
            let runs = after.0.saturating_sub(before.0);
            result.hook_ns =
                (runs > 0).then(|| (after.1 - before.1).as_nanos() as f64 / runs as f64);
        }
        Ok(result)
    }

    /// Runs and run time of dcnet's connect4 so far.
    fn connect4_runs(&self) -> Result<(u64, Duration)> {
        let Installed::Dcnet { datapath, .. } = &self.paths[&Path::Dcnet].1 else {
            bail!("dcnet is not installed");
        };
        let runs = datapath.program_runs()?;
        let c = runs
            .iter()
            .find(|r| r.name == "connect4")
            .context("no connect4 program")?;
        Ok((c.runs, c.run_time))
    }
}

fn main() -> Result<()> {
    let o = <Options as clap::Parser>::parse();
    // Per-program run counts and times, for the cost of dcnet's hook itself.
    let _stats = dcnet_lb::datapath::enable_run_time_stats()?;
    println!("## Short TCP connections per second through each datapath (2 client threads)\n");
    let mut server = Server::start()?;
    if o.only_interleaved {
        return ab_section(&mut server, &o);
    }
    if o.only_ipv6 {
        return ipv6_section(&mut server, &o);
    }
    let mut results: BTreeMap<(u32, Path), Vec<LoadResult>> = BTreeMap::new();
    for &n in &o.vips {
        let setup = Setup::new(&mut server, n)?;
        for path in Path::ALL {
            setup.run(path, 2, 0.3)?; // warm-up: ARP, caches, HAProxy's first connections
        }
        for round in 0..o.rounds {
            // Rotate the order each round so no datapath always runs first.
            let mut order = Path::ALL.to_vec();
            order.rotate_left(round % Path::ALL.len());
            for path in order {
                let r = setup
                    .run(path, 2, o.seconds)
                    .with_context(|| format!("{} with {n} VIPs", path.name()))?;
                eprintln!(
                    "round {:>2} {n:>5} VIPs {:<20} {:>8.0} conn/s p50 {:.0} µs",
                    round + 1,
                    path.name(),
                    r.per_second,
                    r.p50_us
                );
                results.entry((n, path)).or_default().push(r);
            }
        }
    }
    // Ratios are taken within each round (the runs of a round are seconds apart, so CPU steal
    // hits both sides alike) and then the median over rounds.
    let ratio = |a: &[LoadResult], b: &[LoadResult], f: fn(&LoadResult) -> f64| {
        median(a.iter().zip(b).map(|(a, b)| f(a) / f(b)).collect())
    };
    let mut rows = Vec::new();
    for &n in &o.vips {
        let direct = &results[&(n, Path::Direct)];
        let iptables = &results[&(n, Path::Iptables)];
        for path in Path::ALL {
            let r = &results[&(n, path)];
            let of = |f: fn(&LoadResult) -> f64| median(r.iter().map(f).collect());
            let hook: Vec<f64> = r.iter().filter_map(|r| r.hook_ns).collect();
            rows.push(vec![
                n.to_string(),
                path.name().to_owned(),
                format!("{:.0}", of(|r| r.per_second)),
                format!("{:.0}", of(|r| r.p50_us)),
                format!("{:.0}", of(|r| r.p99_us)),
                format!("{:.3}", ratio(r, direct, |r| r.per_second)),
                format!("{:.3}", ratio(r, direct, |r| r.p50_us)),
                format!("{:.1}", of(|r| r.cpu_us)),
                format!("{:.3}", ratio(r, direct, |r| r.cpu_us)),
                format!("{:.2}", ratio(r, iptables, |r| r.per_second)),
                if hook.is_empty() {
                    "-".into()
                } else {
                    format!("{:.0}", median(hook))
                },
                r.iter().map(|r| r.errors).sum::<u64>().to_string(),
            ]);
        }
    }
    print_table(
        &[
            "VIPs",
            "datapath",
            "conn/s",
            "p50 µs",
            "p99 µs",
            "÷ direct",
            "p50 ÷ direct",
            "CPU µs/conn",
            "CPU ÷ direct",
            "÷ iptables",
            "connect4 ns",
            "errors",
        ],
        &rows,
    );
    println!(
        "\nconn/s and latencies: medians of {} rounds of {} s; ratios: medians of the per-round \
         ratios;\nCPU µs/conn: the client process's user+system time per connection (the hooks and \
         the kernel's connection work), which CPU steal does not inflate;\nconnect4 ns: the \
         kernel's mean run time of dcnet's connect4 program per call \
         (BPF_ENABLE_STATS).\ngoals: dcnet >= 0.97 x direct at every VIP count (in CPU per \
         connection: <= 1.03 x), >= 1.1 x iptables at one VIP",
        o.rounds, o.seconds
    );

    ab_section(&mut server, &o)?;

    println!(
        "\n## Sustained new connections from one client thread to one VIP, {} s\n",
        o.sustained_seconds
    );
    let setup = Setup::new(&mut server, 1)?;
    // Few ephemeral ports, so that the run makes many times more connections than there are
    // ports: any datapath that held a port after its connection closed would run out.
    for client in &setup.clients {
        client
            .ns
            .netns()
            .run(|| std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", SUSTAINED_PORTS))??;
    }
    let mut rows = Vec::new();
    for path in [Path::Dcnet, Path::Iptables, Path::Direct] {
        let r = setup.run(path, 1, o.sustained_seconds)?;
        let total = r.per_second * o.sustained_seconds;
        rows.push(vec![
            path.name().to_owned(),
            format!("{:.0}", r.per_second),
            format!("{total:.0}"),
            r.errors.to_string(),
        ]);
    }
    print_table(&["datapath", "conn/s", "connections", "errors"], &rows);
    println!(
        "\n(the client's ephemeral port range here holds 2,000 ports; many times more connections \
         than that without errors means no cap from port exhaustion)"
    );
    ipv6_section(&mut server, &o)
}

/// The IPv6 named VIPs of a case: `n` addresses of fd01:c::/64, the measured one in the middle.
fn vips6(n: u32) -> (Vec<SocketAddrV6>, usize) {
    let all = (0..n)
        .map(|i| {
            let ip =
                Ipv6Addr::from(u128::from(dcnet_lb::vip::NAMED_VIP6_NETWORK) | u128::from(i + 1));
            SocketAddrV6::new(ip, 80, 0, 0)
        })
        .collect();
    (all, n as usize / 2)
}

/// IPv6: a client namespace whose veth pair to the server also has IPv6 addresses, the server
/// serving on [::]:8081; dcnet's VIPs (each VIP count) against the backend directly, in and
/// out of the cgroup, alternating.
fn ipv6_section(server: &mut Server, o: &Options) -> Result<()> {
    println!(
        "\n## IPv6: short TCP connections per second to named IPv6 VIPs (connect6) and directly\n"
    );
    let _server6 = spawn_in(
        server.ns.netns(),
        "taskset",
        &["-c", SERVER_CPU, LOAD, "serve", "[::]:8081", "2"],
    )?;
    let client = Client::new(server, "lbsix")?;
    let k = server.next_link - 1;
    let client_ip = Ipv6Addr::new(0xfd00, 0x211, u16::from(k), 0, 0, 0, 0, 1);
    let server_ip = Ipv6Addr::new(0xfd00, 0x211, u16::from(k), 0, 0, 0, 0, 2);
    let (here, there) = (format!("lbc{k}"), format!("lbs{k}"));
    client
        .ns
        .netns()
        .netlink(|nl| async move { nl.add_address(&here, client_ip.into(), 64).await })?;
    server
        .ns
        .netns()
        .netlink(|nl| async move { nl.add_address(&there, server_ip.into(), 64).await })?;
    let backend = SocketAddrV6::new(server_ip, 8081, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !client.ns.netns().run(|| {
        std::net::TcpStream::connect_timeout(&backend.into(), Duration::from_millis(200)).is_ok()
    })? {
        if Instant::now() > deadline {
            bail!("the IPv6 backend at {backend} did not answer");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let cgroup = TestCgroup::create("lbbench6")?;
    let mut datapath = Datapath::load()?;
    datapath.attach(cgroup.path())?;
    let connect6 = |datapath: &Datapath| -> Result<(u64, Duration)> {
        let runs = datapath.program_runs()?;
        let c = runs
            .iter()
            .find(|r| r.name == "connect6")
            .context("no connect6 program")?;
        Ok((c.runs, c.run_time))
    };
    let mut rows = Vec::new();
    for &n in &o.vips {
        let (all, measured) = vips6(n);
        let desired: BTreeMap<Vip, Vec<Backend>> = all
            .iter()
            .map(|&addr| {
                (
                    Vip {
                        addr: addr.into(),
                        protocol: Protocol::Tcp,
                    },
                    vec![Backend {
                        addr: backend.into(),
                        weight: 1,
                    }],
                )
            })
            .collect();
        let report = datapath.sync(&desired);
        if let Some((vip, e)) = report.failed.first() {
            bail!("programming {vip}: {e}");
        }
        let vip = all[measured];
        let targets: [(&str, SocketAddr, Option<&TestCgroup>); 3] = [
            ("dcnet VIP (eBPF)", vip.into(), Some(&cgroup)),
            ("direct, in the cgroup", backend.into(), Some(&cgroup)),
            ("direct", backend.into(), None),
        ];
        for (_, target, cg) in &targets {
            client.load(*target, 2, 0.3, *cg)?; // warm-up
        }
        let mut results: Vec<Vec<LoadResult>> = vec![Vec::new(); targets.len()];
        let mut hook = Vec::new();
        for round in 0..o.rounds {
            for i in 0..targets.len() {
                let i = (i + round) % targets.len();
                let (name, target, cg) = targets[i];
                let before = connect6(&datapath)?;
                let r = client.load(target, 2, o.seconds, cg)?;
                if i == 0 {
                    let after = connect6(&datapath)?;
                    let runs = after.0.saturating_sub(before.0);
                    if runs > 0 {
                        hook.push((after.1 - before.1).as_nanos() as f64 / runs as f64);
                    }
                }
                eprintln!(
                    "round {:>2} {n:>5} IPv6 VIPs {name:<22} {:>8.0} conn/s p50 {:.0} µs",
                    round + 1,
                    r.per_second,
                    r.p50_us
                );
                results[i].push(r);
            }
        }
        let direct = &results[2];
        for (i, (name, _, _)) in targets.iter().enumerate() {
            let r = &results[i];
            let of = |f: fn(&LoadResult) -> f64| median(r.iter().map(f).collect());
            let ratio = |f: fn(&LoadResult) -> f64| {
                median(r.iter().zip(direct).map(|(a, b)| f(a) / f(b)).collect())
            };
            rows.push(vec![
                n.to_string(),
                (*name).to_owned(),
                format!("{:.0}", of(|r| r.per_second)),
                format!("{:.0}", of(|r| r.p50_us)),
                format!("{:.3}", ratio(|r| r.per_second)),
                format!("{:.1}", of(|r| r.cpu_us)),
                format!("{:.3}", ratio(|r| r.cpu_us)),
                if i == 0 && !hook.is_empty() {
                    format!("{:.0}", median(hook.clone()))
                } else {
                    "-".into()
                },
                r.iter().map(|r| r.errors).sum::<u64>().to_string(),
            ]);
        }
    }
    print_table(
        &[
            "VIPs",
            "datapath",
            "conn/s",
            "p50 µs",
            "÷ direct",
            "CPU µs/conn",
            "CPU ÷ direct",
            "connect6 ns",
            "errors",
        ],
        &rows,
    );
    println!(
        "\nIPv6 VIPs in fd01:c::/64 to one IPv6 backend; medians of {} rounds of {} s, ratios \
         medians of per-round ratios;\ngoal: dcnet >= 0.97 x direct, as for IPv4",
        o.rounds, o.seconds
    );
    Ok(())
}
