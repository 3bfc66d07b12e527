//! DNS benchmark: dcnet's authoritative path against Knot DNS, same records, same queries, in
//! one run.
//!
//! Each server gets core 0 (Knot: `taskset`; dcnet: this process pins itself, its server
//! threads inherit it) with one UDP worker; dnsperf runs on core 1. Everything is on loopback.
//! Reported: queries per second, server CPU per query (from /proc for knotd, getrusage for this
//! process), and dcnet/Knot ratios.
//!
//! Record sets: the Mesos-DNS fixture, and synthetic clusters of N tasks. Query mix, spread
//! evenly: task A, canonical-name A, task SRV (with additionals), agent A under `.slave.`, and
//! a name that does not exist (NXDOMAIN).
//!
//! With `--churn`, each size also runs while 1% of its tasks move every second: dcnet makes
//! the moved tasks' records again and applies the changed names to its snapshot (as its agent
//! and drop-in server do), Knot is given the rewritten zone file and `knotc zone-reload`; both
//! on core 0 beside their server. The updates each one managed per
//! second are reported with the rates.
//!
//! Usage: `cargo bench -p dcnet-benches --bench dns -- [--seconds 10] [--rounds 3] [--churn]
//!        [--sizes fixture,100000]`

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use dcnet_benches::{cpu_time, print_table, process_cpu};
use dcnet_dns::answer::build_query;
use dcnet_dns::contributions::Contributions;
use dcnet_dns::mesos::{self, literal_only, state::IpSource};
use dcnet_dns::name::LabelSpec;
use dcnet_dns::records::{self, AgentInfo, Cluster, FrameworkInfo, RecordSet, Settings, TaskInfo};
use dcnet_dns::server::{DnsServer, ServerConfig, ServerMetrics};
use dcnet_dns::zone::{NameRecords, Snapshot, Soa, ZoneData, ZoneInfo};
use hickory_proto::rr::RecordType;

// As in the `dcnet` binary, which this benchmark stands in for.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KNOT_PORT: u16 = 53531;
const FIXTURE: &str = include_str!("../../dns/tests/fixtures/mesos-dns-fake-state.json");

/// The DNS benchmark: dcnet's authoritative path against Knot DNS.
#[derive(clap::Parser)]
struct Options {
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also run while 1% of the tasks move every second.
    #[arg(long)]
    churn: bool,
    /// `fixture` or task counts.
    #[arg(long, value_delimiter = ',', default_value = "fixture,100000", value_parser = parse_size)]
    sizes: Vec<Size>,
    // `cargo bench` passes --bench to every benchmark binary.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A record set: the fixture (`None`) or that many synthetic tasks.
type Size = Option<usize>;

fn parse_size(text: &str) -> Result<Size, String> {
    match text.trim() {
        "fixture" => Ok(None),
        n => n
            .parse()
            .map(Some)
            .map_err(|_| "`fixture` or a task count".to_owned()),
    }
}

fn settings() -> Settings {
    Settings {
        domain: "mesos".into(),
        spec: LabelSpec::Rfc1123,
        masters: vec![("10.0.0.1".parse().unwrap(), 5050)],
        mname: "ns1.mesos".into(),
        listen_ips: vec!["127.0.0.1".parse().unwrap()],
    }
}

/// A synthetic cluster: `tasks` running tasks over 10 frameworks and 100 agents.
fn synthetic(tasks: usize) -> Cluster {
    let agents: Vec<AgentInfo> = (0..100u32)
        .map(|i| AgentInfo {
            id: format!("agent-s{i}"),
            ips: vec![std::net::Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 1) as u8).into()],
            port: Some(5051),
        })
        .collect();
    let frameworks = (0..10)
        .map(|f| FrameworkInfo {
            name: format!("framework{f}"),
            scheduler_ips: vec!["10.0.0.2".parse().unwrap()],
            scheduler_port: Some(25501),
            tasks: (0..tasks / 10)
                .map(|t| {
                    let n = (f * (tasks / 10) + t) as u32;
                    TaskInfo {
                        id: format!("app{t}.{f}-{n:08x}"),
                        name: format!("app{t}"),
                        agent_id: format!("agent-s{}", n % 100).into(),
                        is_running: true,
                        ips: vec![
                            std::net::Ipv4Addr::new(9, (n >> 16) as u8, (n >> 8) as u8, n as u8)
                                .into(),
                        ],
                        ports: vec![31000 + (n % 1000) as u16],
                        healthy: None,
                        discovery: None,
                    }
                })
                .map(Arc::new)
                .collect(),
        })
        .collect();
    Cluster {
        frameworks,
        agents,
        leader: Some(("10.0.0.1".parse().unwrap(), 5050)),
    }
}

/// Names to ask, evenly over the five kinds.
fn query_mix(set: &RecordSet) -> Vec<(String, RecordType)> {
    let pick = |names: Vec<&String>, n: usize| -> Vec<String> {
        let step = (names.len() / n).max(1);
        names.into_iter().step_by(step).take(n).cloned().collect()
    };
    let n = 200;
    let a_names: Vec<&String> = set
        .a
        .keys()
        .filter(|k| !k.contains(".slave.") && k.matches('-').count() < 2)
        .collect();
    let canonical: Vec<&String> = set
        .a
        .keys()
        .filter(|k| !k.contains(".slave.") && k.matches('-').count() >= 2)
        .collect();
    let slave: Vec<&String> = set.a.keys().filter(|k| k.contains(".slave.")).collect();
    let srv: Vec<&String> = set.srv.keys().filter(|k| !k.contains(".slave.")).collect();
    let mut mix = Vec::new();
    let kinds = [
        (pick(a_names, n), RecordType::A),
        (pick(canonical, n), RecordType::A),
        (pick(srv, n), RecordType::SRV),
        (pick(slave, n), RecordType::A),
        (
            (0..n)
                .map(|i| format!("missing{i}.marathon.mesos."))
                .collect(),
            RecordType::A,
        ),
    ];
    let longest = kinds.iter().map(|(v, _)| v.len()).max().unwrap_or(0);
    for i in 0..longest {
        for (names, rtype) in &kinds {
            if let Some(name) = names.get(i % names.len().max(1)) {
                mix.push((name.clone(), *rtype));
            }
        }
    }
    mix
}

fn soa() -> Soa {
    Soa {
        mname: "ns1.mesos".into(),
        rname: "root.ns1.mesos".into(),
        serial: 1,
        refresh: 60,
        retry: 600,
        expire: 86400,
        minimum: 60,
    }
}

#[derive(Clone, Copy)]
struct Measured {
    qps: f64,
    cpu_us_per_query: f64,
    lost: f64,
}

/// Runs dnsperf on core 1 against `server` and returns queries/s and the lost fraction.
fn dnsperf(
    server: SocketAddr,
    queries: &Path,
    seconds: u64,
    netns: Option<&PrivateNet>,
) -> Result<(f64, f64, u64)> {
    let mut command = match netns {
        Some(net) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", net.path)).arg("taskset");
            c
        }
        None => Command::new("taskset"),
    };
    let out = command
        .args([
            "-c",
            "1",
            "dnsperf",
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .arg("-d")
        .arg(queries)
        .args([
            "-l",
            &seconds.to_string(),
            "-c",
            "4",
            "-q",
            "500",
            "-t",
            "2",
        ])
        .output()
        .context("running dnsperf (apt install dnsperf, or run scripts/setup.sh)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))?
            .split(':')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let qps =
        field("Queries per second").with_context(|| format!("dnsperf printed no rate:\n{text}"))?;
    let completed = field("Queries completed").unwrap_or(0.0);
    let lost = field("Queries lost").unwrap_or(0.0);
    let total = completed + lost;
    Ok((
        qps,
        if total > 0.0 { lost / total } else { 0.0 },
        completed as u64,
    ))
}

/// The run with the median rate (its CPU and loss figures go with it).
fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|a, b| a.qps.total_cmp(&b.qps));
    runs.swap_remove(runs.len() / 2)
}

fn wait_answering(server: SocketAddr) -> Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        socket.send_to(
            &build_query(1, "leader.mesos.", RecordType::A, None),
            server,
        )?;
        if socket.recv_from(&mut buf).is_ok() {
            return Ok(());
        }
    }
    bail!("{server} did not answer within 10 s")
}

struct Knot {
    child: Child,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_knot(dir: &Path, zone_file: &Path) -> Result<Knot> {
    let config = format!(
        "server:\n    listen: 127.0.0.1@{KNOT_PORT}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n    rundir: {dir}\n\
         database:\n    storage: {dir}\n\
         control:\n    listen: {dir}/knot.sock\n\
         acl:\n  - id: local-update\n    address: 127.0.0.1\n    action: update\n\
         zone:\n  - domain: mesos\n    file: {zone}\n    zonefile-load: whole\n    zonefile-sync: -1\n    journal-content: none\n    acl: local-update\n",
        dir = dir.display(),
        zone = zone_file.display()
    );
    let config_path = dir.join("knot.conf");
    std::fs::write(&config_path, config)?;
    let child = Command::new("taskset")
        .args(["-c", "0", "knotd", "-c"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting knotd (apt install knot, or run scripts/setup.sh)")?;
    Ok(Knot { child })
}

fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read/write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Moves 1% of the tasks every second (or as fast as `apply` allows) and hands each new
/// cluster to `apply`, on a thread of this process (core 0, beside the servers).
struct Churn {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
    started: Instant,
}

impl Churn {
    fn start(mut cluster: Cluster, mut apply: impl FnMut(&Cluster, u64) + Send + 'static) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut updates = 0u64;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let round = Instant::now();
                let tasks: Vec<&mut TaskInfo> = cluster
                    .frameworks
                    .iter_mut()
                    .flat_map(|f| f.tasks.iter_mut().map(Arc::make_mut))
                    .collect();
                for (i, task) in tasks.into_iter().enumerate() {
                    if (i + updates as usize).is_multiple_of(100) {
                        let k = (i as u32) ^ (updates as u32).rotate_left(16);
                        task.ips =
                            vec![std::net::Ipv4Addr::from(0xAC10_0000 | (k & 0xFFFF)).into()];
                    }
                }
                updates += 1;
                apply(&cluster, updates);
                if let Some(rest) = Duration::from_secs(1).checked_sub(round.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            updates
        });
        Self {
            stop,
            thread: Some(thread),
            started: Instant::now(),
        }
    }

    /// Stops and returns the updates applied per second.
    fn finish(mut self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let updates = self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0);
        updates as f64 / self.started.elapsed().as_secs_f64()
    }
}

fn run_size(
    size: Option<usize>,
    seconds: u64,
    rounds: usize,
    churn: bool,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<Vec<String>>> {
    let cluster = match size {
        None => {
            let mut state: dcnet_dns::mesos::state::State = serde_json::from_str(FIXTURE)?;
            state.leader = "master@10.0.0.1:5050".into();
            mesos::cluster(
                &state,
                &[IpSource::Netinfo, IpSource::Mesos, IpSource::Host],
                &literal_only,
            )
        }
        Some(n) => synthetic(n),
    };
    let started = Instant::now();
    let set = records::generate(&cluster, &settings());
    let generate_time = started.elapsed();
    let label = size.map_or("fixture".to_string(), |n| format!("{n} tasks"));
    let dir = tempfile::tempdir()?;

    // The same records for both servers.
    let zone_file = dir.path().join("mesos.zone");
    let mut zone = String::from(
        "$ORIGIN mesos.\n$TTL 60\n@\tIN\tSOA\tns1.mesos. root.ns1.mesos. 1 60 600 86400 60\n@\tIN\tNS\tns1.mesos.\n",
    );
    set.write_zone_file(&mut zone, 60, 1)?;
    std::fs::write(&zone_file, zone)?;
    let queries_path = dir.path().join("queries.txt");
    let mut queries = std::fs::File::create(&queries_path)?;
    for (name, rtype) in query_mix(&set) {
        writeln!(queries, "{name} {rtype}")?;
    }
    drop(queries);

    // Both servers stay up on core 0 (the idle one costs nothing); rounds alternate between
    // them and the medians are reported, since single runs vary by tens of percent.
    eprintln!("{label}: {} records", set.len());
    let knot = start_knot(dir.path(), &zone_file)?;
    let knot_addr: SocketAddr = ([127, 0, 0, 1], KNOT_PORT).into();
    wait_answering(knot_addr)?;
    let started = Instant::now();
    let built = mesos_snapshot(set);
    let build_time = started.elapsed();
    let snapshot = Arc::new(ArcSwap::from_pointee(built));
    let mut config = ServerConfig::new(vec!["127.0.0.1:0".parse()?]);
    config.udp_workers = 1;
    let server = runtime.block_on(DnsServer::start(
        config,
        snapshot.clone(),
        None,
        Arc::new(ServerMetrics::default()),
    ))?;
    let addr = server.local_addrs()[0];
    wait_answering(addr)?;

    let measure_knot = || -> Result<Measured> {
        let cpu0 = process_cpu(knot.child.id())?;
        let (qps, lost, done) = dnsperf(knot_addr, &queries_path, seconds, None)?;
        Ok(Measured {
            qps,
            cpu_us_per_query: (process_cpu(knot.child.id())? - cpu0).as_secs_f64() * 1e6
                / done.max(1) as f64,
            lost,
        })
    };
    // The same server bound to 0.0.0.0 (each reply sent from the address asked, with
    // IP_PKTINFO), in a network namespace of its own so that no wildcard listener ever
    // appears on this machine's interfaces.
    let private = PrivateNet::new()?;
    let wildcard = {
        let (snapshot, handle) = (snapshot.clone(), runtime.handle().clone());
        private.run(move || {
            let mut config = ServerConfig::new(vec!["0.0.0.0:0".parse().expect("an address")]);
            config.udp_workers = 1;
            handle.block_on(DnsServer::start(
                config,
                snapshot,
                None,
                Arc::new(ServerMetrics::default()),
            ))
        })??
    };
    let wildcard_addr = SocketAddr::from(([127, 0, 0, 1], wildcard.local_addrs()[0].port()));
    let measure_wildcard = || -> Result<Measured> {
        let cpu0 = cpu_time();
        let (qps, lost, done) = dnsperf(wildcard_addr, &queries_path, seconds, Some(&private))?;
        Ok(Measured {
            qps,
            cpu_us_per_query: (cpu_time() - cpu0).as_secs_f64() * 1e6 / done.max(1) as f64,
            lost,
        })
    };
    let measure_dcnet = || -> Result<Measured> {
        let cpu0 = cpu_time();
        let (qps, lost, done) = dnsperf(addr, &queries_path, seconds, None)?;
        Ok(Measured {
            qps,
            cpu_us_per_query: (cpu_time() - cpu0).as_secs_f64() * 1e6 / done.max(1) as f64,
            lost,
        })
    };
    let (mut knot_runs, mut dcnet_runs, mut wildcard_runs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("  round {round}/{rounds}: Knot, dcnet, dcnet on 0.0.0.0");
        knot_runs.push(measure_knot()?);
        dcnet_runs.push(measure_dcnet()?);
        wildcard_runs.push(measure_wildcard()?);
    }
    let (dcnet_median, wildcard_median) = (median(dcnet_runs.clone()), median(wildcard_runs));
    println!(
        "{label}: dcnet on 0.0.0.0 (replies from the address asked, IP_PKTINFO) / on 127.0.0.1: q/s {:.2}x, CPU per query {:.2}x ({:.0} vs {:.0} q/s, {:.2} vs {:.2} us/q)",
        wildcard_median.qps / dcnet_median.qps,
        wildcard_median.cpu_us_per_query / dcnet_median.cpu_us_per_query,
        wildcard_median.qps,
        dcnet_median.qps,
        wildcard_median.cpu_us_per_query,
        dcnet_median.cpu_us_per_query
    );
    runtime.block_on(wildcard.shutdown());
    let build = format!(
        "{:.0} + {:.0}",
        generate_time.as_secs_f64() * 1e3,
        build_time.as_secs_f64() * 1e3
    );
    let mut rows = vec![row(&label, median(knot_runs), median(dcnet_runs), build)];

    if churn {
        let (mut knot_runs, mut dcnet_runs, mut knot_rates, mut dcnet_rates) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut knot_ddns_runs, mut knot_ddns_rates) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            eprintln!("  churn round {round}/{rounds}: Knot reloading, Knot updated, then dcnet");
            let (zone_file, socket) = (zone_file.clone(), dir.path().join("knot.sock"));
            let churn = Churn::start(cluster.clone(), move |c, serial| {
                let set = records::generate(c, &settings());
                let mut zone = format!(
                    "$ORIGIN mesos.
$TTL 60
@	IN	SOA	ns1.mesos. root.ns1.mesos. {} 60 600 86400 60
@	IN	NS	ns1.mesos.
",
                    serial + 1
                );
                let _ = set.write_zone_file(&mut zone, 60, 1);
                let tmp = zone_file.with_extension("tmp");
                if std::fs::write(&tmp, zone)
                    .and_then(|()| std::fs::rename(&tmp, &zone_file))
                    .is_ok()
                {
                    let _ = Command::new("taskset")
                        .args(["-c", "0", "knotc", "-b", "-s"])
                        .arg(&socket)
                        .args(["zone-reload", "mesos"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            });
            knot_runs.push(measure_knot()?);
            knot_rates.push(churn.finish());

            // Knot's own incremental path: the changed names as DNS UPDATEs (RFC 2136), found
            // by the same record contributions dcnet uses (made in this process, so not
            // counted as Knot's CPU).
            let mut contributions = Contributions::default();
            let empty = Snapshot::default();
            let mut counted =
                contributions.update(&empty, vec![mesos_zone(1)], &cluster, &settings());
            let churn = Churn::start(cluster.clone(), move |c, _| {
                let (next, changes) =
                    contributions.update_listing(&counted, vec![mesos_zone(1)], c, &settings());
                counted = next;
                if let Err(e) = knot_update(knot_addr, &changes) {
                    eprintln!("  DNS UPDATE to Knot failed: {e:#}");
                }
            });
            knot_ddns_runs.push(measure_knot()?);
            knot_ddns_rates.push(churn.finish());

            // As the agent and the drop-in server do: only what changed is made again.
            let target = snapshot.clone();
            let mut contributions = Contributions::default();
            let zones = vec![mesos_zone(1)];
            let first = contributions.update(&Snapshot::default(), zones, &cluster, &settings());
            target.store(Arc::new(first));
            let churn = Churn::start(cluster.clone(), move |c, serial| {
                let zones = vec![mesos_zone(serial as u32 + 1)];
                let next = contributions.update(&target.load(), zones, c, &settings());
                target.store(Arc::new(next));
            });
            dcnet_runs.push(measure_dcnet()?);
            dcnet_rates.push(churn.finish());
        }
        let rate = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len().max(1) as f64;
        let dcnet = median(dcnet_runs);
        let updates = format!("{:.2} / {:.2} per s", rate(&knot_rates), rate(&dcnet_rates));
        rows.push(row(
            &format!("{label} +churn, Knot reloads"),
            median(knot_runs),
            dcnet,
            updates,
        ));
        let updates = format!(
            "{:.2} / {:.2} per s",
            rate(&knot_ddns_rates),
            rate(&dcnet_rates)
        );
        rows.push(row(
            &format!("{label} +churn, Knot DNS UPDATE"),
            median(knot_ddns_runs),
            dcnet,
            updates,
        ));
    }
    runtime.block_on(server.shutdown());
    drop(knot);
    Ok(rows)
}

/// Sends `changes` to Knot as DNS UPDATEs over TCP: each changed name's records deleted and
/// its new ones added, a few hundred names per message.
fn knot_update(server: SocketAddr, changes: &[(String, NameRecords)]) -> Result<()> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
    use hickory_proto::rr::rdata::{A, AAAA, SRV};
    use hickory_proto::rr::{DNSClass, Name, RData, Record};
    use std::io::Read as _;

    let origin = Name::from_ascii("mesos.")?;
    let mut stream = std::net::TcpStream::connect(server)?;
    for (id, chunk) in changes.chunks(200).enumerate() {
        let mut message = Message::new(id as u16, MessageType::Query, OpCode::Update);
        let mut zone = Query::new();
        zone.set_name(origin.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        message.add_zone(zone);
        for (name, records) in chunk {
            let owner = Name::from_ascii(name)?;
            let mut delete = Record::update0(owner.clone(), 0, RecordType::ANY);
            delete.dns_class = DNSClass::ANY;
            message.add_update(delete);
            let data = records
                .a
                .iter()
                .map(|ip| RData::A(A(*ip)))
                .chain(records.aaaa.iter().map(|ip| RData::AAAA(AAAA(*ip))))
                .chain(records.srv.iter().map(|t| {
                    RData::SRV(SRV::new(
                        0,
                        1,
                        t.port,
                        Name::from_ascii(&t.target).unwrap_or_default(),
                    ))
                }));
            for data in data {
                message.add_update(Record::from_rdata(owner.clone(), 60, data));
            }
        }
        let bytes = message.to_vec()?;
        stream.write_all(&u16::try_from(bytes.len())?.to_be_bytes())?;
        stream.write_all(&bytes)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply)?;
        let code = Message::from_vec(&reply)?.metadata.response_code;
        if code != ResponseCode::NoError {
            bail!("Knot refused an update: {code}");
        }
    }
    Ok(())
}

fn mesos_snapshot(records: RecordSet) -> Snapshot {
    Snapshot::build(vec![ZoneData {
        origin: "mesos".into(),
        soa: soa(),
        ns: vec![],
        ttl: 60,
        srv_weight: 1,
        records,
    }])
}

fn mesos_zone(serial: u32) -> ZoneInfo {
    ZoneInfo::new("mesos", Soa { serial, ..soa() }, vec![], 60, 1)
}

/// A table row: rates, CPU per query, ratios, losses and `last`.
fn row(label: &str, knot: Measured, dcnet: Measured, last: String) -> Vec<String> {
    vec![
        label.to_owned(),
        format!("{:.0}", knot.qps),
        format!("{:.2}", knot.cpu_us_per_query),
        format!("{:.0}", dcnet.qps),
        format!("{:.2}", dcnet.cpu_us_per_query),
        format!("{:.2}", dcnet.qps / knot.qps),
        format!("{:.2}", dcnet.cpu_us_per_query / knot.cpu_us_per_query),
        format!("{:.1}% / {:.1}%", knot.lost * 100.0, dcnet.lost * 100.0),
        last,
    ]
}

fn main() -> Result<()> {
    let o = <Options as clap::Parser>::parse();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("this benchmark needs 2 cores: the server on one, dnsperf on the other");
    }
    // Everything this process starts from here on (the dcnet server's threads) runs on core 0.
    pin_to_core(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    println!(
        "dns benchmark: one UDP worker each on core 0, dnsperf (4 clients, 500 in flight) on core 1, {} s per run, median of {} alternating rounds",
        o.seconds, o.rounds
    );
    let mut rows = Vec::new();
    for size in &o.sizes {
        rows.extend(run_size(*size, o.seconds, o.rounds, o.churn, &runtime)?);
    }
    print_table(
        &[
            "records",
            "knot q/s",
            "knot µs/q",
            "dcnet q/s",
            "dcnet µs/q",
            "q/s ratio",
            "cpu ratio",
            "lost k/d",
            "gen+build ms | updates k/d",
        ],
        &rows,
    );
    println!(
        "q/s ratio = dcnet/Knot (goal >= 1.0); cpu ratio = dcnet/Knot CPU per query (goal <= 1.0).\n\
         One dnsperf core saturates near 90-100k q/s: when both rates sit there, CPU per query is\n\
         the figure that tells the servers apart. gen+build: record generation and snapshot build\n\
         for dcnet, on core 0."
    );
    Ok(())
}

/// A network namespace of one thread of this process, made with `unshare` (loopback up, no
/// other interface, so nothing in it is reachable from outside), gone with the thread.
/// Closures run on that thread, so the sockets they make are in it.
struct PrivateNet {
    path: String,
    jobs: Option<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PrivateNet {
    fn new() -> Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let (ready, made) = std::sync::mpsc::channel::<Result<String, String>>();
        let thread = std::thread::spawn(move || {
            // SAFETY: moves only this thread into a new network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let _ = ready.send(Err(std::io::Error::last_os_error().to_string()));
                return;
            }
            // SAFETY: no preconditions.
            let tid = unsafe { libc::gettid() };
            let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
            let up = Command::new("nsenter")
                .arg(format!("--net={path}"))
                .args(["ip", "link", "set", "lo", "up"])
                .status();
            if !up.is_ok_and(|s| s.success()) {
                let _ = ready.send(Err("cannot bring lo up".into()));
                return;
            }
            let _ = ready.send(Ok(path));
            for job in queue {
                job();
            }
        });
        let path = made
            .recv()
            .context("the namespace thread ended")?
            .map_err(|e| anyhow::anyhow!("making a private network namespace: {e}"))?;
        Ok(Self {
            path,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Runs `f` on the namespace's thread and returns what it returned.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.jobs
            .as_ref()
            .context("the namespace is closed")?
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| anyhow::anyhow!("the namespace thread ended"))?;
        rx.recv().context("the namespace thread ended")
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
