//! The agent's services at rest and at shutdown, in a 3-node namespace cluster running every
//! service (node 1 a master, nodes 2-3 agents with the overlay, the load balancer and DNS) and
//! an app with a VIP.
//!
//! - Idle: once the app runs and nothing changes, no service of any node wakes, and no gossip
//!   value is decoded, while gossip keeps exchanging heartbeats (`/metrics`:
//!   `dcnet_service_wakeups_total`, `dcnet_facts_decoded_total`).
//! - A change wakes the services that read it: a key-value pair put on one node wakes no
//!   service but the facts of every node change.
//! - SIGTERM: each agent exits 0 within the grace periods, with every service task stopped
//!   (none aborted, nothing "still referenced"), and its tasks keep running for the next start.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_agent::api::TaskRow;
use dcnet_agent::facts::launched::TaskState;
use dcnet_tests::cluster::OVERLAY_AND_LB;
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const APP: &str = r#"{
  "id": "/idle",
  "cmd": "exec sleep 100000",
  "instances": 2,
  "cpus": 0.1,
  "mem": 32,
  "networks": [{"mode": "container", "name": "dcos"}],
  "container": {"type": "MESOS", "portMappings": [
    {"containerPort": 80, "name": "http", "labels": {"VIP_0": "/idle:80"}}
  ]}
}"#;

/// How long a node must show no wake-up to count as idle: many gossip rounds (200 ms) and
/// observer ticks (1 s).
const QUIET: Duration = Duration::from_secs(4);

fn start_cluster() -> Result<Cluster> {
    let mut options = ClusterOptions::nodes(3);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: vec![if i == 0 { "master" } else { "agent" }.into()],
            extra_config: OVERLAY_AND_LB.into(),
            ..NodeSpec::default()
        };
    }
    let cluster = Cluster::start(options)?;
    cluster.wait_for_overlay(&[0, 1, 2], 2)?;
    Ok(cluster)
}

/// The counters of node `i` that say a service did work: wake-ups per service, values decoded.
fn work(cluster: &Cluster, i: usize) -> Result<BTreeMap<String, f64>> {
    let text = cluster.get_text(i, "/metrics")?;
    let counters: BTreeMap<String, f64> = text
        .lines()
        .filter(|l| {
            l.starts_with("dcnet_service_wakeups_total")
                || l.starts_with("dcnet_facts_decoded_total")
        })
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect();
    if !counters.keys().any(|k| k.contains("service=\"dns\"")) {
        bail!("node {i} reports no DNS wake-ups yet: {counters:?}");
    }
    Ok(counters)
}

/// The heartbeats node `i` received: proof that gossip went on while the services slept.
fn datagrams(cluster: &Cluster, i: usize) -> Result<f64> {
    let text = cluster.get_text(i, "/metrics")?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("dcnet_gossip_datagrams_received_total ")?
                .parse()
                .ok()
        })
        .ok_or_else(|| anyhow::anyhow!("no gossip datagram counter on node {i}"))
}

#[test]
fn idle_services_sleep_and_stop_cleanly() -> Result<()> {
    let mut cluster = start_cluster()?;
    let result = scenario(&mut cluster);
    if result.is_err() {
        eprintln!("{}", cluster.log_tails(80));
    }
    result
}

fn scenario(cluster: &mut Cluster) -> Result<()> {
    cluster.add_app(1, APP)?;
    wait_until(
        "2 running tasks on every node",
        Duration::from_secs(30),
        || {
            for i in 0..3 {
                let rows: Vec<TaskRow> = cluster.get(i, "/v1/tasks")?;
                let running = rows
                    .iter()
                    .filter(|r| r.status.state == TaskState::TaskRunning)
                    .count();
                if running != 2 {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )?;

    // Memory: the agent runs without transparent huge pages (dcnet_agent::memory), its tasks
    // with the system's policy.
    for i in 0..3 {
        let pid = cluster.nodes[i].pid().context("a running agent")?;
        assert_eq!(thp_enabled(pid), Some(false), "node {}'s agent", i + 1);
    }
    let tasks: Vec<u32> = (0..3)
        .filter_map(|i| cluster.nodes[i].cgroup.as_ref())
        .flat_map(|c| processes(&c.path().join(dcnet_tests::cluster::TASKS_CGROUP)))
        .collect();
    assert!(
        !tasks.is_empty(),
        "task processes in the nodes' task cgroups"
    );
    for pid in tasks {
        assert_eq!(thp_enabled(pid), Some(true), "task process {pid}");
    }

    // Idle: every node's counters stand still over a quiet period while gossip goes on.
    for i in 0..3 {
        let mut last: Option<BTreeMap<String, f64>> = None;
        let beats_before = datagrams(cluster, i)?;
        wait_until(
            &format!("node {} to sit idle for {QUIET:?}", i + 1),
            Duration::from_secs(40),
            || {
                let now = work(cluster, i)?;
                let idle = last.as_ref() == Some(&now);
                if !idle {
                    if let Some(before) = &last {
                        let moved: Vec<_> = now
                            .iter()
                            .filter(|(k, v)| before.get(*k) != Some(v))
                            .collect();
                        eprintln!("node {}: still working: {moved:?}", i + 1);
                    }
                    last = Some(now);
                    std::thread::sleep(QUIET);
                }
                Ok(idle.then_some(()))
            },
        )?;
        let beats = datagrams(cluster, i)? - beats_before;
        assert!(
            beats >= 10.0,
            "gossip went on meanwhile on node {}: {beats} datagrams",
            i + 1
        );
    }

    // A key-value pair is a change of its own topic: decoded once on every node, and no
    // service of the data or control plane wakes for it.
    let before: Vec<_> = (0..3).map(|i| work(cluster, i)).collect::<Result<_>>()?;
    cluster.put(0, "/v1/kv/greeting", "hello")?;
    for (i, before) in before.iter().enumerate() {
        wait_until("the pair to arrive", Duration::from_secs(10), || {
            let entries: Vec<Value> = cluster.get(i, "/v1/kv/greeting").unwrap_or_default();
            Ok((!entries.is_empty()).then_some(()))
        })?;
        let after = work(cluster, i)?;
        for (key, value) in &after {
            let was = before.get(key).copied().unwrap_or_default();
            if key.starts_with("dcnet_facts_decoded_total") {
                assert_eq!(*value, was + 1.0, "node {}: {key}", i + 1);
            } else {
                assert_eq!(*value, was, "node {}: {key} woke for a kv pair", i + 1);
            }
        }
    }

    // SIGTERM: every service stops within its grace period, none aborted; the tasks stay.
    for i in [1, 2, 0] {
        let status = cluster.stop_agent(i, Signal::SIGTERM, Duration::from_secs(25));
        let log = std::fs::read_to_string(&cluster.nodes[i].log_path)?;
        assert!(
            status.is_some_and(|s| s.success()),
            "node {} exits 0 on SIGTERM: {status:?}",
            i + 1
        );
        let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
        assert!(log.contains("stopped"), "node {}: {tail}", i + 1);
        for bad in ["aborted", "still referenced", "task failed"] {
            assert!(!log.contains(bad), "node {} logs {bad:?}: {tail}", i + 1);
        }
    }
    let cgroup = cluster.nodes[1]
        .cgroup
        .as_ref()
        .map(|c| c.path().to_owned());
    let procs = cgroup.as_deref().map(processes).unwrap_or_default();
    assert!(
        !procs.is_empty(),
        "node 2's task keeps running after its agent stopped"
    );
    Ok(())
}

/// The `THP_enabled` flag of process `pid` (`None` if it is gone).
fn thp_enabled(pid: u32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))?;
    Some(value.trim() == "1")
}

/// The processes in cgroup `path` and below.
fn processes(path: &std::path::Path) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(processes(&entry.path()));
        }
    }
    out
}

/// A kept cluster (the demo's `--keep`) belongs to someone although the process that made it is
/// gone: the next run's leftover sweep leaves it, and its printed stop commands remove it all,
/// the mark included. A cluster of a dead process without the mark is swept.
#[test]
fn the_leftover_sweep_leaves_kept_clusters_and_their_stop_commands_remove_them() -> Result<()> {
    use dcnet_tests::cluster::{KEPT_DIR, NETNS_PREFIX, sweep_leftovers};
    // A pid that no longer runs: as if the harness that made these had been killed.
    let mut gone = std::process::Command::new("true").spawn()?;
    gone.wait()?;
    let pid = gone.id();
    let (kept, abandoned) = (format!("{pid}-900"), format!("{pid}-901"));
    let kept_ns = dcnet_overlay::Netns::create(&format!("{NETNS_PREFIX}{kept}-u"))?;
    let abandoned_ns = format!("{NETNS_PREFIX}{abandoned}-u");
    dcnet_overlay::Netns::create(&abandoned_ns)?;
    let mark = std::path::Path::new(KEPT_DIR).join(&kept);
    std::fs::create_dir_all(KEPT_DIR)?;
    std::fs::write(&mark, b"")?;
    sweep_leftovers();
    let names = dcnet_overlay::Netns::list()?;
    let kept_survived = names.iter().any(|n| n == kept_ns.name());
    let abandoned_swept = !names.contains(&abandoned_ns);
    let _ = std::fs::remove_file(&mark);
    let _ = std::fs::remove_dir(KEPT_DIR); // only if empty: another kept cluster may be marked
    let _ = kept_ns.delete();
    let _ = dcnet_overlay::Netns::delete_by_name(&abandoned_ns);
    assert!(kept_survived, "the kept cluster's namespace was swept");
    assert!(abandoned_swept, "the abandoned namespace was left");

    // A real cluster kept, then stopped with the commands it printed (all of them run before
    // anything is asserted, so a failure leaves nothing behind).
    let mut cluster = Cluster::start(ClusterOptions::nodes(1))?;
    let stop = cluster.keep();
    let names = cluster.namespace_names();
    let dir = cluster.dir_path().to_path_buf();
    let marked = std::fs::read_dir(KEPT_DIR)?.flatten().any(|e| {
        stop.iter()
            .any(|c| c.contains(&e.path().display().to_string()))
    });
    drop(cluster);
    let mut failed = Vec::new();
    for command in &stop {
        // The agents are this process's children: reaped here, as init would for a user.
        if let Some(pid) = command
            .strip_prefix("kill ")
            .and_then(|rest| rest.split(';').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        let status = std::process::Command::new("sh")
            .args(["-c", command])
            .status()?;
        if !status.success() {
            failed.push(command.clone());
        }
    }
    assert!(marked, "the stop commands remove the mark: {stop:?}");
    assert!(failed.is_empty(), "stop commands failed: {failed:?}");
    let left = dcnet_overlay::Netns::list()?;
    assert!(
        names.iter().all(|n| !left.contains(n)),
        "namespaces left: {names:?}"
    );
    assert!(!dir.exists(), "{} left", dir.display());
    let marks_left = std::fs::read_dir(KEPT_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            stop.iter()
                .any(|c| c.contains(&e.path().display().to_string()))
        });
    assert!(!marks_left, "the mark is gone");
    Ok(())
}
