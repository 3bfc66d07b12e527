//! The launcher and the agent's state after the worst stops: a launch cut short by SIGKILL,
//! and a restart with the state directory's disk full.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_agent::facts::launched::TaskState;
use dcnet_agent::facts::scheduler::Assignment;
use dcnet_agent::launcher::process::{self, Record};
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

fn one_node() -> Result<Cluster> {
    let mut options = ClusterOptions::nodes(1);
    options.nodes[0] = NodeSpec {
        roles: vec!["master".into(), "agent".into()],
        extra_config: "\n[overlay]\nenabled = true\nlease_settle = \"500ms\"\n".into(),
        ..NodeSpec::default()
    };
    let cluster = Cluster::start(options)?;
    wait_until("the overlay lease", Duration::from_secs(20), || {
        let s: Value = cluster.get(0, "/v1/overlay")?;
        Ok((s["networks"][0]["lease"] == "held").then_some(()))
    })?;
    Ok(cluster)
}

fn containers(cluster: &Cluster) -> Result<u64> {
    let s: Value = cluster.get(0, "/v1/overlay")?;
    Ok(s["networks"][0]["containers"].as_u64().unwrap_or(0))
}

/// The record of a task of app `/ghost` as the launcher writes it before anything runs.
fn ghost(cluster: &Cluster, uuid: &str) -> Result<Record> {
    let task_id = format!("ghost.{uuid}");
    let app = dcnet_agent::app::parse(
        &json!({"id": "/ghost", "cmd": "sleep 1000", "networks": [{"mode": "container", "name": "dcos"}]}),
        None,
        "2026-11-30T00:00:00Z",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .app;
    let cgroup = cluster.nodes[0]
        .cgroup
        .as_ref()
        .context("the node's cgroup")?
        .path()
        .join(dcnet_tests::cluster::TASKS_CGROUP)
        .join(&task_id);
    Ok(Record {
        netns: Some(process::netns_name(&cluster.task_netns_prefix(), &task_id)),
        assignment: Assignment {
            task_id,
            node_id: "whoever".into(),
            app,
            host_ports: vec![],
        },
        ip: None,
        ip6: None,
        pid: None,
        pid_start: None,
        cgroup: Some(cgroup),
        staged_ms: 1,
        started_ms: None,
        user: Some("nobody".into()),
    })
}

#[test]
fn a_launch_cut_short_is_cleaned_up_at_the_next_start() -> Result<()> {
    let mut cluster = one_node()?;
    let root = cluster.nodes[0].state_dir.join("tasks");
    // Killed after the overlay attached the task (namespace, veth, address recorded)...
    let attached = ghost(&cluster, "00000000-0000-4000-8000-00000000000a")?;
    let ns_a = attached.netns.clone().context("a namespace")?;
    let body = json!({"container_id": attached.assignment.task_id, "netns": ns_a,
                      "network": "dcos", "create": true});
    let (status, text) = cluster.post(0, "/v1/overlay/attach", &body.to_string())?;
    if status != 200 {
        bail!("attach: {status} {text}");
    }
    assert_eq!(containers(&cluster)?, 1);
    // ... and one killed after making its namespace, before the overlay recorded anything.
    let half = ghost(&cluster, "00000000-0000-4000-8000-00000000000b")?;
    let ns_b = half.netns.clone().context("a namespace")?;
    cluster.stop_agent(0, Signal::SIGKILL, Duration::from_secs(5));
    let out = Command::new("ip").args(["netns", "add", &ns_b]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for record in [&attached, &half] {
        std::fs::create_dir_all(process::sandbox(&root, &record.assignment.task_id))?;
        std::fs::create_dir_all(record.cgroup.as_ref().context("a cgroup")?)?;
        process::save(&root, record)?;
    }

    cluster.start_agent(0)?;
    let gone = |ns: &str| !Path::new("/run/netns").join(ns).exists();
    wait_until(
        "the cut-short launches to be cleaned up",
        Duration::from_secs(20),
        || {
            let cgroups_gone = [&attached, &half]
                .iter()
                .all(|r| r.cgroup.as_ref().is_some_and(|c| !c.exists()));
            Ok(
                (gone(&ns_a) && gone(&ns_b) && cgroups_gone && containers(&cluster)? == 0)
                    .then_some(()),
            )
        },
    )?;
    assert!(!Path::new("/etc/netns").join(&ns_a).exists());
    Ok(())
}

/// Whether `/keep`'s task runs, as the node reports it.
fn running(cluster: &Cluster) -> Result<Option<()>> {
    let tasks: Vec<dcnet_agent::api::TaskRow> = cluster.get(0, "/v1/tasks")?;
    Ok(tasks
        .iter()
        .any(|t| t.status.app_id == "/keep" && t.status.state == TaskState::TaskRunning)
        .then_some(()))
}

/// A tmpfs mounted over a directory, unmounted when dropped (also when the test fails).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn an_agent_starts_and_serves_with_its_state_disk_full() -> Result<()> {
    let mut cluster = one_node()?;
    cluster.add_app(
        0,
        &json!({"id": "/keep", "cmd": "exec sleep 1000", "cpus": 0.01, "mem": 1}).to_string(),
    )?;
    wait_until("the task to run", Duration::from_secs(30), || {
        running(&cluster)
    })?;

    // The same state, on a disk with no room left.
    cluster.stop_agent(0, Signal::SIGTERM, Duration::from_secs(10));
    let state = cluster.nodes[0].state_dir.clone();
    let saved = state.with_file_name("state.saved");
    // The agent's BPF filesystem is mounted in its state directory: not part of what moves.
    dcnet_lb::pins::unmount(&state.join(dcnet_agent::state::BPF_DIR))?;
    std::fs::rename(&state, &saved)?;
    std::fs::create_dir(&state)?;
    nix::mount::mount(
        Some("tmpfs"),
        &state,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=4m,mode=0700"),
    )?;
    let _mounted = Mounted(state.clone());
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", saved.display()))
        .arg(&state)
        .output()?;
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let filled = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}/filler", state.display()))
        .output()?;
    assert!(!filled.status.success(), "dd ends when the disk is full");

    cluster.start_agent(0)?;
    wait_until(
        "the agent to serve its task and app",
        Duration::from_secs(30),
        || {
            if running(&cluster)?.is_none() {
                return Ok(None);
            }
            let apps: Value = serde_json::from_str(&cluster.cli(0, &["app", "list", "--json"])?)?;
            Ok((apps[0]["id"] == "/keep").then_some(()))
        },
    )?;
    // It says what it cannot do, and leaves no temporary file behind.
    let log = std::fs::read_to_string(&cluster.nodes[0].log_path)?;
    assert!(
        log.contains("cannot record this start's generation"),
        "the full disk is logged"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&state)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    cluster.stop_agent(0, Signal::SIGTERM, Duration::from_secs(10));
    Ok(())
}

#[test]
fn the_apps_of_a_master_from_before_raft_are_imported_once() -> Result<()> {
    let mut cluster = one_node()?;
    let state = cluster.nodes[0].state_dir.clone();
    cluster.stop_agent(0, Signal::SIGTERM, Duration::from_secs(10));
    // The state of a master as it was before Raft: its apps in a file, no Raft store.
    std::fs::remove_file(state.join("raft.redb"))?;
    let app = dcnet_agent::app::parse(
        &json!({"id": "/legacy", "cmd": "sleep 1000", "instances": 0}),
        None,
        "2026-11-01T00:00:00Z",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .app;
    std::fs::write(
        state.join("scheduler-apps.json"),
        serde_json::to_string(&vec![app])?,
    )?;
    cluster.start_agent(0)?;
    wait_until("the old apps imported", Duration::from_secs(30), || {
        let apps: Value = serde_json::from_str(&cluster.cli(0, &["app", "list", "--json"])?)?;
        Ok((apps[0]["id"] == "/legacy").then_some(()))
    })?;
    assert!(!state.join("scheduler-apps.json").exists());
    assert!(state.join("scheduler-apps.json.imported").exists());
    // Once: an app removed after the import does not come back with the next start.
    cluster.cli(0, &["app", "remove", "/legacy"])?;
    cluster.stop_agent(0, Signal::SIGTERM, Duration::from_secs(10));
    cluster.start_agent(0)?;
    wait_until("the scheduler back", Duration::from_secs(30), || {
        Ok(cluster.cli(0, &["app", "list", "--json"]).ok())
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let apps: Value = serde_json::from_str(&cluster.cli(0, &["app", "list", "--json"])?)?;
    assert_eq!(apps, json!([]), "imported once only");
    Ok(())
}
