//! Exhaustion from the underlay: an outsider opens 25,000 connections to the scheduler's port
//! that never finish a handshake or a request, and 1,100 idle DNS TCP connections, while the
//! cluster is used as usual. Asserted on what happens: the API answers every call within 1 s,
//! DNS answers over UDP and TCP, the master's agent keeps its file descriptors, and the
//! task's process is the same one, healthy, throughout.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_tests::cluster::in_netns;
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use serde_json::Value;

/// Connections of each of the two scheduler floods: 25,000 in all, in two processes since a
/// process here may hold 20,000 descriptors.
const FLOOD_N: usize = 12_500;

const ALIVE: &str = r#"{
  "id": "/alive",
  "cmd": "exec python3 -m http.server $PORT0",
  "instances": 1, "cpus": 0.01, "mem": 16,
  "portDefinitions": [{"port": 0}],
  "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0,
                    "gracePeriodSeconds": 10, "intervalSeconds": 1, "timeoutSeconds": 2,
                    "maxConsecutiveFailures": 3}]
}"#;

/// Opens `argv[3]` TCP connections to `argv[1]:argv[2]`, sends the first bytes of a TLS
/// record on every other one, holds them all for `argv[4]` seconds; prints how many connected.
const FLOOD: &str = r#"
import resource, socket, sys, time, errno
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
held = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((host, port))
    held.append(s)
time.sleep(0.5)
connected = 0
for i, s in enumerate(held):
    try:
        s.send(b"\x16\x03" if i % 2 == 0 else b"\x00")
        connected += 1
    except OSError:
        pass
print(connected, flush=True)
time.sleep(hold)
"#;

fn flood(cluster: &Cluster, port: u16, n: usize, hold_secs: u32) -> Result<Child> {
    let outsider = cluster.outsider().context("the outsider")?;
    let mut command = Command::new("python3");
    command
        .args([
            "-c",
            FLOOD,
            &cluster.nodes[0].address.to_string(),
            &port.to_string(),
            &n.to_string(),
            &hold_secs.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    in_netns(&mut command, outsider, true);
    Ok(command.spawn()?)
}

/// The task cgroups with a process, on node `i`.
fn task_processes(cluster: &Cluster, i: usize) -> Vec<(String, String)> {
    let Some(cgroup) = cluster.nodes[i].cgroup.as_ref() else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir(cgroup.path().join(dcnet_tests::cluster::TASKS_CGROUP)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = dir
        .flatten()
        .filter_map(|e| {
            let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).ok()?;
            (!procs.trim().is_empty()).then(|| (e.file_name().to_string_lossy().into(), procs))
        })
        .collect();
    out.sort();
    out
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn floods_from_the_underlay_leave_the_apis_dns_and_tasks_alone() -> Result<()> {
    let mut options = ClusterOptions::nodes(2);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: vec![if i == 0 { "master" } else { "agent" }.into()],
            dns_config: "listen = [\"0.0.0.0:53\"]\n".into(),
            ..NodeSpec::default()
        };
    }
    let mut cluster = Cluster::start(options)?;
    cluster.add_outsider()?;
    let result = run(&cluster);
    if result.is_err() {
        eprintln!("{}", cluster.log_tails(40));
    }
    result
}

fn run(cluster: &Cluster) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let app = dir.path().join("alive.json");
    std::fs::write(&app, ALIVE)?;
    wait_until("the app to be added", Duration::from_secs(30), || {
        Ok(cluster
            .cli(1, &["app", "add", app.to_str().unwrap_or_default()])
            .ok())
    })?;
    wait_until("the task to be healthy", Duration::from_secs(40), || {
        let apps: Value = serde_json::from_str(&cluster.cli(1, &["app", "list", "--json"])?)?;
        Ok((apps[0]["tasksHealthy"] == 1).then_some(()))
    })?;
    let before = task_processes(cluster, 1);
    assert_eq!(before.len(), 1, "{before:?}");
    let master = cluster.nodes[0].pid().context("the master's agent")?;
    let fds_before = open_fds(master);

    let floods = [
        flood(cluster, 8080, FLOOD_N, 12)?,
        flood(cluster, 8080, FLOOD_N, 12)?,
        flood(cluster, 53, 1_100, 12)?,
    ];
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let (mut slowest, mut calls, mut most_fds) = (Duration::ZERO, 0, 0);
    while started.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        let out = cluster.cli(1, &["app", "list", "--json"])?;
        slowest = slowest.max(t.elapsed());
        calls += 1;
        let apps: Value = serde_json::from_str(&out)?;
        if apps[0]["tasksHealthy"] != 1 {
            bail!("the task is not healthy during the flood: {apps}");
        }
        for args in [
            vec!["+short", "+timeout=1", "+retry=0", "leader.mesos"],
            vec![
                "+tcp",
                "+short",
                "+timeout=1",
                "+retry=0",
                "alive.marathon.mesos",
            ],
        ] {
            let mut kdig = vec!["@".to_owned() + &cluster.nodes[0].address.to_string()];
            kdig.extend(args.iter().map(|a| (*a).to_owned()));
            let refs: Vec<&str> = kdig.iter().map(String::as_str).collect();
            let t = Instant::now();
            let out = cluster.run_in(1, std::path::Path::new("kdig"), &refs)?;
            if !out.status.success() || t.elapsed() > Duration::from_secs(1) {
                bail!(
                    "DNS ({}) took {:?}: {}",
                    args[0],
                    t.elapsed(),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        // A new TLS connection to the scheduler, as a client that has none open makes.
        let ca = cluster.pki_dir().join("ca.crt");
        let url = format!("https://{}:8080/ping", cluster.nodes[0].address);
        let t = Instant::now();
        let out = cluster.run_in(
            1,
            std::path::Path::new("curl"),
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
                "--cacert",
                ca.to_str().unwrap_or_default(),
                &url,
            ],
        )?;
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        slowest = slowest.max(t.elapsed());
        if code != "200" {
            let ss = cluster.run_in(0, std::path::Path::new("ss"), &["-ltn"])?;
            let ss2 = cluster.run_in(0, std::path::Path::new("ss"), &["-s"])?;
            let nst = cluster.run_in(
                0,
                std::path::Path::new("nstat"),
                &[
                    "-az",
                    "TcpExtListenOverflows",
                    "TcpExtListenDrops",
                    "TcpExtTCPReqQFullDrop",
                    "TcpExtSyncookiesSent",
                ],
            )?;
            eprintln!(
                "DEBUG {}\n{}\n{}",
                String::from_utf8_lossy(&ss.stdout),
                String::from_utf8_lossy(&ss2.stdout),
                String::from_utf8_lossy(&nst.stdout)
            );
            bail!(
                "a new connection to the scheduler got {code:?} after {:?}",
                t.elapsed()
            );
        }
        most_fds = most_fds.max(open_fds(master));
        std::thread::sleep(Duration::from_millis(300));
    }
    let connected: Vec<String> = floods
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output()?;
            if !out.status.success() {
                bail!("the flood failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .collect::<Result<_>>()?;
    eprintln!(
        "flood (connections the outsider held: scheduler {} + {}, DNS {}): {calls} API calls, slowest {slowest:?}; \
         master's agent fds {fds_before} before, at most {most_fds} during",
        connected[0], connected[1], connected[2]
    );
    assert!(
        slowest < Duration::from_secs(1),
        "an API call took {slowest:?}"
    );
    assert!(
        most_fds < fds_before + 1_000,
        "the master's agent held {most_fds} fds (from {fds_before})"
    );
    assert_eq!(
        task_processes(cluster, 1),
        before,
        "the task was replaced or doubled"
    );
    Ok(())
}
