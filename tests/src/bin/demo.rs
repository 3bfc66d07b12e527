//! `make demo`: a local dcnet cluster on this machine, running the example apps.
//!
//! Three nodes in two zones of one region, each a network namespace running `dcnet agent` on
//! an underlay bridge; node-1 also runs the scheduler. The demo deploys `examples/apps/web.json`
//! (3 instances behind the VIP `/web:80`) and `client.json` with the `dcnet` CLI, then shows
//! from inside the client's container: the DNS answers, the tasks' overlay addresses, and
//! connections through the VIP spread over the instances of the client's zone (the others are
//! spares while those are healthy). It kills node-3 as if the machine
//! died, shows the tasks placed again with DNS and the VIP following, and brings node-3 back.
//! Everything is torn down at the end (also on Ctrl-C); `--keep` leaves the cluster running
//! and prints how to explore and stop it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_agent::api::TaskRow;
use dcnet_agent::facts::launched::TaskState;
use dcnet_agent::launcher::process::netns_name;
use dcnet_agent::node::NodeState;
use dcnet_tests::lb::{self, Line};
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec};

const ZONES: [&str; 3] = ["zone-a", "zone-a", "zone-b"];
const STEPS: usize = 8;
/// The node killed and brought back: the only one in zone-b.
const VICTIM: usize = 2;
const WEB: &str = "/web";
const NAME: &str = "web.marathon.mesos";
const VIP_NAME: &str = "web.marathon.l4lb.thisdcos.directory";
const CONNECTIONS: usize = 30;

/// Set by SIGINT/SIGTERM: every wait stops and the cluster is torn down.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

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
    let handler = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_signal),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { nix::sys::signal::sigaction(signal, &handler) };
    }
    if let Err(e) = run(keep) {
        eprintln!("demo failed: {e:#}");
        std::process::exit(1);
    }
}

fn step(n: usize, text: &str) {
    println!("\n[{n}/{STEPS}] {text}");
}

fn indent(text: &str) {
    for line in text.lines() {
        println!("      {line}");
    }
}

fn run(keep: bool) -> Result<()> {
    let apps = apps_dir()?;
    step(
        1,
        "starting 3 nodes: network namespaces on an underlay bridge, one agent each",
    );
    let mut options = ClusterOptions::nodes(0);
    options.die_with_parent = !keep;
    options.nodes = ZONES
        .iter()
        .enumerate()
        .map(|(i, zone)| NodeSpec {
            region: Some("region-1".into()),
            zone: Some((*zone).into()),
            roles: if i == 0 {
                vec!["master".into(), "agent".into()]
            } else {
                vec!["agent".into()]
            },
            // Containers reach their node's DNS at their gateway address.
            dns_config: "listen = [\"0.0.0.0:53\"]\n".into(),
            extra_config: "\n[overlay]\nenabled = true\nlease_settle = \"1s\"\n\n[lb]\nenabled = true\ncgroup = \"{cgroup}\"\n".into(),
            ..NodeSpec::default()
        })
        .collect();
    let mut cluster = Cluster::start(options).context("starting the cluster")?;
    println!(
        "      cluster keys (CA, token signing key) in {}, an admin credential in {}:",
        cluster.pki_dir().display(),
        cluster.credentials_path().display()
    );
    println!(
        "      made as `dcnet auth init` makes them; every call below presents that credential"
    );
    for (node, zone) in cluster.nodes.iter().zip(ZONES) {
        let roles = if node.index == 0 {
            "master (scheduler) + agent"
        } else {
            "agent"
        };
        println!(
            "      {}  {:<11} {zone}  {roles:<27} namespace {}",
            node.name,
            node.address,
            node.netns.name()
        );
    }

    let result = demo(&mut cluster, &apps);
    // The logs go with the cluster: show their ends before it is torn down.
    if result.is_err() && !INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("\nthe agents' logs end with:\n{}", cluster.log_tails(30));
    }
    if keep && result.is_ok() {
        explain_keep(&mut cluster);
    } else {
        println!(
            "\ncleaning up: agents, tasks, namespaces, links, cgroups{}",
            if keep {
                ""
            } else {
                " (run with --keep to leave the cluster running)"
            }
        );
        drop(cluster);
        println!("done");
    }
    result
}

/// The steps after the nodes are started.
fn demo(cluster: &mut Cluster, apps: &Path) -> Result<()> {
    step(
        2,
        "waiting for the cluster: membership over gossip, overlay subnets, the scheduler",
    );
    let n = cluster.nodes.len();
    watch("every node to see the others up", 30, || {
        let up: Vec<usize> = (0..n)
            .map(|i| {
                cluster.members(i).map_or(0, |m| {
                    m.iter()
                        .filter(|m| m.state == NodeState::Up && m.name.is_some())
                        .count()
                })
            })
            .collect();
        Ok((
            up.iter().all(|&u| u == n).then_some(()),
            format!("nodes up as each node sees it: {up:?}"),
        ))
    })?;
    watch("every node's overlay subnet and peers", 30, || {
        let mut subnets = Vec::new();
        for i in 0..n {
            let s: serde_json::Value = cluster.get(i, "/v1/overlay")?;
            if s["peers"].as_array().map_or(0, Vec::len) != n - 1
                || s["networks"][0]["lease"] != "held"
            {
                return Ok((
                    None,
                    format!("{} has no subnet lease or peers yet", cluster.nodes[i].name),
                ));
            }
            subnets.push(format!(
                "{} {}",
                cluster.nodes[i].name,
                s["networks"][0]["subnet"].as_str().unwrap_or("?")
            ));
        }
        Ok((Some(()), format!("overlay subnets: {}", subnets.join(", "))))
    })?;
    watch("the scheduler to lead", 30, || {
        let leader: serde_json::Value = cluster.get(1, "/v2/leader")?;
        let leader = leader["leader"].as_str().map(str::to_owned);
        let status = match &leader {
            Some(l) => format!("scheduler leading at {l}"),
            None => "no scheduler leads yet".into(),
        };
        Ok((leader, status))
    })?;
    println!("      `dcnet nodes` on node-2:");
    indent(&dcnet(cluster, 1, &["nodes"])?);
    println!("      the same without a credential is refused:");
    indent(&refused(cluster, 1, &["nodes"])?);

    step(
        3,
        "deploying the example apps with the CLI on node-2 (forwarded to the scheduler)",
    );
    for app in ["web.json", "client.json"] {
        let path = apps.join(app);
        let path = path.to_str().context("a UTF-8 path to the example apps")?;
        println!("      $ dcnet app add {path}");
        indent(&dcnet(cluster, 1, &["app", "add", path])?);
    }
    let deployed = Instant::now();
    let web = wait_for_web(cluster, 3, None)?;
    println!(
        "      3 web instances healthy and answered by DNS {:.1}s after `dcnet app add`",
        deployed.elapsed().as_secs_f64()
    );
    indent(&dcnet(cluster, 1, &["app", "list"])?);
    let reader = cluster
        .credentials_path()
        .with_file_name("dashboard-credentials");
    let reader = reader.to_str().context("a UTF-8 path")?;
    println!(
        "      $ dcnet auth token create --subject dashboard --role read --ttl 1h --save {reader}"
    );
    dcnet(
        cluster,
        1,
        &[
            "auth",
            "token",
            "create",
            "--subject",
            "dashboard",
            "--role",
            "read",
            "--ttl",
            "1h",
            "--save",
            reader,
        ],
    )?;
    println!("      $ dcnet app remove /web --credentials {reader}   # a read credential may not");
    match cluster.cli(1, &["app", "remove", "/web", "--credentials", reader]) {
        Ok(out) => bail!("a read credential removed an app: {out}"),
        Err(e) => indent(
            e.to_string()
                .split_once(" failed: ")
                .map_or("", |(_, stderr)| stderr),
        ),
    }

    step(
        4,
        "the tasks (`dcnet task list`): each a process in its own network namespace with an overlay IP",
    );
    indent(&dcnet(cluster, 1, &["task", "list"])?);
    let client = client_task(cluster, &tasks(cluster)?)?;
    println!(
        "      the client container: namespace {} on {}, eth0 {}",
        client.netns, cluster.nodes[client.node].name, client.ip
    );
    indent(&run_in_container(
        &client.netns,
        "ip",
        &["-4", "-br", "addr", "show", "eth0"],
    )?);

    step(
        5,
        "DNS asked from inside the client's container (dig through its resolv.conf)",
    );
    for (name, kind) in [
        (NAME, "A"),
        (VIP_NAME, "A"),
        ("_web._tcp.marathon.mesos", "SRV"),
    ] {
        let answer = dig(&client.netns, name, kind)?;
        println!("      {name} {kind}:");
        indent(&format!("  {}", answer.join("\n  ")));
    }
    println!("      `dcnet vips` on {}:", cluster.nodes[client.node].name);
    indent(&dcnet(cluster, client.node, &["vips"])?);

    step(
        6,
        &format!("{CONNECTIONS} connections from the client's container to {VIP_NAME}:80"),
    );
    show_spread(cluster, &client, &web)?;
    let log = cluster.nodes[client.node]
        .state_dir
        .join("tasks")
        .join(&client.task_id)
        .join("stdout");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let last: Vec<&str> = text.lines().rev().take(3).collect();
    println!(
        "      the client app's own log, {} (last lines):",
        log.display()
    );
    for line in last.iter().rev() {
        println!("        {line}");
    }

    step(
        7,
        &format!(
            "killing {} as if the machine died: its agent and every task on it",
            cluster.nodes[VICTIM].name
        ),
    );
    let victim = cluster.nodes[VICTIM].name.clone();
    let lost: Vec<&TaskRow> = web.iter().filter(|r| r.node == victim).collect();
    for r in &lost {
        println!("      lost: {} ({})", r.status.task_id, ip_of(r));
    }
    cluster.kill_node(VICTIM);
    let killed = Instant::now();
    let web = wait_for_web(cluster, 3, Some(&victim))?;
    println!(
        "      3 healthy instances again, none on {victim}, DNS following: {:.1}s after the kill",
        killed.elapsed().as_secs_f64()
    );
    indent(&dcnet(cluster, 0, &["task", "list"])?);
    let client = client_task(cluster, &tasks(cluster)?)?;
    let answer = dig(&client.netns, NAME, "A")?;
    println!(
        "      {NAME} from the client's container: {}",
        answer.join(" ")
    );
    show_spread(cluster, &client, &web)?;

    step(
        8,
        &format!(
            "bringing {victim} back, then scaling web to 4 (@zone GROUP_BY puts it in zone-b)"
        ),
    );
    cluster.start_agent(VICTIM)?;
    let back = Instant::now();
    watch(&format!("{victim} to rejoin"), 30, || {
        let members = cluster.members(0)?;
        let up = members
            .iter()
            .any(|m| m.name.as_deref() == Some(victim.as_str()) && m.state == NodeState::Up);
        Ok((up.then_some(()), format!("{victim} up: {up}")))
    })?;
    println!(
        "      {victim} up again {:.1}s after its restart; the tasks it ran died with it and are reported failed",
        back.elapsed().as_secs_f64()
    );
    indent(&dcnet(cluster, 0, &["app", "scale", WEB, "4"])?);
    let web = wait_for_web(cluster, 4, None)?;
    let on_victim: Vec<String> = web
        .iter()
        .filter(|r| r.node == victim)
        .map(|r| format!("{} ({})", r.status.task_id, ip_of(r)))
        .collect();
    println!(
        "      the 4th instance on {victim}: {}",
        on_victim.join(", ")
    );
    let client = client_task(cluster, &tasks(cluster)?)?;
    show_spread(cluster, &client, &web)?;
    Ok(())
}

/// Where the example apps are: `examples/apps` under the current directory (the repository
/// root under `make demo`), else under the source tree this binary was built from.
fn apps_dir() -> Result<PathBuf> {
    let candidates = [
        std::env::current_dir()?.join("examples/apps"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps"),
    ];
    for dir in candidates {
        if dir.join("web.json").is_file() {
            return dir
                .canonicalize()
                .with_context(|| format!("resolving {}", dir.display()));
        }
    }
    bail!("examples/apps/web.json not found: run the demo from the repository root (`make demo`)")
}

/// Polls `check` every 200 ms until it returns a value, printing its status whenever it
/// changes; fails after `within_s` seconds with the last status, or when interrupted.
fn watch<T>(
    what: &str,
    within_s: u64,
    mut check: impl FnMut() -> Result<(Option<T>, String)>,
) -> Result<T> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted while waiting for {what}");
        }
        let (done, status) = match check() {
            Ok(r) => r,
            Err(e) => (None, format!("not yet: {e:#}")),
        };
        if status != last {
            println!("      {:>5.1}s  {status}", started.elapsed().as_secs_f64());
            last = status;
        }
        if let Some(value) = done {
            return Ok(value);
        }
        if started.elapsed() > Duration::from_secs(within_s) {
            bail!("{what} did not happen within {within_s} s; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `dcnet ARGS` inside node `i`: its stdout without the last newline.
fn dcnet(cluster: &Cluster, i: usize, args: &[&str]) -> Result<String> {
    Ok(cluster.cli(i, args)?.trim_end().to_owned())
}

/// `dcnet ARGS` in node `i` with no credential: its error message.
fn refused(cluster: &Cluster, i: usize, args: &[&str]) -> Result<String> {
    let mut command = Command::new(cluster.dcnet());
    command
        .args(args)
        .env_remove("DCNET_CREDENTIALS")
        .env_remove("DCNET_TOKEN")
        .env("HOME", "/nonexistent");
    dcnet_tests::cluster::in_netns(&mut command, &cluster.nodes[i].netns, true);
    let out = command.output().context("running dcnet")?;
    if out.status.success() {
        bail!("dcnet {} succeeded without a credential", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stderr).trim_end().to_owned())
}

fn run_in_container(netns: &str, program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .output()
        .with_context(|| format!("running {program} in {netns}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}

/// `dig +short` inside a container, through its resolv.conf.
fn dig(netns: &str, name: &str, kind: &str) -> Result<Vec<String>> {
    let text = run_in_container(netns, "dig", &["+short", "+time=1", "+tries=2", name, kind])?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    Ok(lines)
}

fn ip_of(row: &TaskRow) -> String {
    row.status.ip.map_or("-".into(), |ip| ip.to_string())
}

/// Every task, as node-1 lists them (tasks of nodes that are down are not listed).
fn tasks(cluster: &Cluster) -> Result<Vec<TaskRow>> {
    cluster.get(0, "/v1/tasks")
}

/// The running, healthy web tasks among `rows`.
fn healthy_web(rows: &[TaskRow]) -> Vec<TaskRow> {
    rows.iter()
        .filter(|r| {
            r.status.app_id == WEB
                && r.status.state == TaskState::TaskRunning
                && r.status.healthy == Some(true)
        })
        .cloned()
        .collect()
}

/// Waits until `n` web instances are healthy (none on `not_on`) and the client's container
/// resolves the name to exactly their addresses; prints progress.
fn wait_for_web(cluster: &Cluster, n: usize, not_on: Option<&str>) -> Result<Vec<TaskRow>> {
    watch(&format!("{n} healthy web instances in DNS"), 60, || {
        let rows = tasks(cluster)?;
        let web: Vec<&TaskRow> = rows.iter().filter(|r| r.status.app_id == WEB).collect();
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        for r in &web {
            let state = match (r.status.state, r.status.healthy) {
                (TaskState::TaskRunning, Some(true)) => "healthy".to_owned(),
                (TaskState::TaskRunning, _) if r.status.health_pending => {
                    "running, health check pending".to_owned()
                }
                (TaskState::TaskRunning, _) => "running, unhealthy".to_owned(),
                (state, _) => state.as_str().trim_start_matches("TASK_").to_lowercase(),
            };
            *states.entry(state).or_default() += 1;
        }
        let summary: Vec<String> = states.iter().map(|(s, c)| format!("{c} {s}")).collect();
        let mut status = format!(
            "web: {}",
            if summary.is_empty() {
                "no task yet".into()
            } else {
                summary.join(", ")
            }
        );
        let healthy = healthy_web(&rows);
        if healthy.len() != n || not_on.is_some_and(|v| healthy.iter().any(|r| r.node == v)) {
            return Ok((None, status));
        }
        let Ok(client) = client_task(cluster, &rows) else {
            return Ok((None, status + "; the client is not running"));
        };
        let want: BTreeSet<String> = healthy.iter().map(ip_of).collect();
        let got: BTreeSet<String> = dig(&client.netns, NAME, "A")?.into_iter().collect();
        if got != want {
            status += &format!("; DNS answers {} of them", got.intersection(&want).count());
            return Ok((None, status));
        }
        status += "; DNS answers all of them";
        Ok((Some(healthy), status))
    })
}

/// The running client task: its id, node, namespace and overlay address.
struct Client {
    task_id: String,
    node: usize,
    netns: String,
    ip: IpAddr,
}

/// The running client task among `rows`.
fn client_task(cluster: &Cluster, rows: &[TaskRow]) -> Result<Client> {
    let row = rows
        .iter()
        .find(|r| r.status.app_id == "/client" && r.status.state == TaskState::TaskRunning)
        .context("no running client task")?;
    let node = cluster
        .nodes
        .iter()
        .position(|n| n.name == row.node)
        .with_context(|| format!("the client runs on an unknown node {}", row.node))?;
    Ok(Client {
        task_id: row.status.task_id.clone(),
        node,
        netns: netns_name(&cluster.task_netns_prefix(), &row.status.task_id),
        ip: row.status.ip.context("the client task has no address")?,
    })
}

/// Opens [`CONNECTIONS`] connections to the VIP from the client's container (inside its
/// node's cgroup, where the socket hooks act) and shows which instance served each.
fn show_spread(cluster: &Cluster, client: &Client, web: &[TaskRow]) -> Result<()> {
    let cgroup = cluster.nodes[client.node]
        .cgroup
        .as_ref()
        .context("the client's node has a cgroup")?;
    let addr = format!("{VIP_NAME}:80");
    let count = CONNECTIONS.to_string();
    let lines = lb::run_client(lb::client_command(
        &client.netns,
        Some(cgroup),
        &["http", &addr, &count, "/"],
    )?)?;
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for line in lines {
        match line {
            Line::Ok { response, .. } => {
                let task = response.trim_start_matches("served by ").to_owned();
                *served.entry(task).or_default() += 1;
            }
            Line::Err { .. } => failed += 1,
        }
    }
    for row in web {
        let n = served.remove(&row.status.task_id).unwrap_or(0);
        println!(
            "      {n:>3} served by {} on {} ({})",
            row.status.task_id,
            row.node,
            ip_of(row)
        );
    }
    for (task, n) in served {
        println!("      {n:>3} served by {task} (not a healthy instance)");
    }
    if failed > 0 {
        bail!("{failed} of {CONNECTIONS} connections through the VIP failed");
    }
    Ok(())
}

/// Leaves the cluster running and prints how to look at it and how to stop it.
fn explain_keep(cluster: &mut Cluster) {
    let ns: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.netns.name().to_owned())
        .collect();
    let dcnet = cluster.dcnet().display().to_string();
    let client = tasks(cluster)
        .and_then(|rows| client_task(cluster, &rows))
        .ok();
    let dir = cluster.nodes[0]
        .log_path
        .parent()
        .and_then(Path::parent)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let credentials = cluster.credentials_path().display().to_string();
    let stop = cluster.keep();
    println!("\nThe cluster keeps running. Explore it (any node's namespace works):");
    println!("  export DCNET_CREDENTIALS={credentials}   # the admin credential the CLI presents");
    for args in [
        "nodes",
        "app list",
        "task list",
        "vips",
        "dns lookup web.marathon.mesos",
    ] {
        println!("  ip netns exec {} {dcnet} {args}", ns[1]);
    }
    println!("  ip netns exec {} {dcnet} app scale /web 5", ns[1]);
    println!(
        "  ip netns exec {} curl -s -H \"authorization: token=$(grep -o 'ey[^\\\"]*' {credentials})\" 127.0.0.1:62080/metrics",
        ns[0]
    );
    if let Some(c) = client {
        println!(
            "  ip netns exec {} dig web.marathon.mesos      # inside the client's container",
            c.netns
        );
        println!(
            "  tail -f {}/node-{}/state/tasks/{}/stdout   # the client's requests through the VIP",
            dir,
            c.node + 1,
            c.task_id
        );
    }
    println!("  logs, configs and task sandboxes: {dir}/node-N/");
    println!("Stop it:");
    for command in stop {
        println!("  {command}");
    }
}
