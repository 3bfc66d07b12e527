//! The scheduler end to end, in a 4-node namespace cluster: node 1 is the master (scheduler
//! only), nodes 2-4 are agents in zones z1, z1, z2. Apps go in through the `dcnet` CLI on an
//! agent (forwarded to the leader); tasks are real processes (python3's HTTP server) in their
//! own namespaces on the overlay; the client is a container on node 2's overlay, inside
//! node 2's cgroup where the eBPF socket hooks act.
//!
//! Bounds stated here (gossip interval 200 ms):
//! - a new app's name resolves from the client container within 30 s of `dcnet app add`
//!   (placement, launch, the first passing health check, gossip);
//! - after an agent is killed, its tasks run elsewhere and DNS and the VIP have moved within
//!   30 s (failure detection, placement, launch, health);
//! - a removed app's name and VIP are gone within 15 s.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_agent::api::TaskRow;
use dcnet_agent::facts::launched::TaskState;
use dcnet_tests::cluster::OVERLAY_AND_LB;
use dcnet_tests::container::Container;
use dcnet_tests::lb::{self, Line};
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const WEB: &str = r#"{
  "id": "/web",
  "cmd": "echo $MESOS_TASK_ID > id && exec python3 -m http.server $PORT0",
  "instances": 3,
  "cpus": 0.1,
  "mem": 32,
  "networks": [{"mode": "container", "name": "dcos"}],
  "container": {"type": "MESOS", "portMappings": [
    {"containerPort": 80, "name": "http", "labels": {"VIP_0": "/web:80"}}
  ]},
  "healthChecks": [{"protocol": "HTTP", "path": "/id", "portIndex": 0,
                    "gracePeriodSeconds": 15, "intervalSeconds": 1, "timeoutSeconds": 2,
                    "maxConsecutiveFailures": 3}]
}"#;

const NAME: &str = "web.marathon.mesos";
const VIP_NAME: &str = "web.marathon.l4lb.thisdcos.directory";

fn start_cluster() -> Result<Cluster> {
    let zones = ["z0", "z1", "z1", "z2"];
    let mut options = ClusterOptions::nodes(4);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: vec![if i == 0 { "master" } else { "agent" }.into()],
            region: Some("r1".into()),
            zone: Some(zones[i].into()),
            dns_config: "listen = [\"0.0.0.0:53\"]\n".into(),
            extra_config: OVERLAY_AND_LB.into(),
            ..NodeSpec::default()
        };
    }
    let cluster = Cluster::start(options)?;
    cluster.wait_for_overlay(&[0, 1, 2, 3], 3)?;
    Ok(cluster)
}

/// The IPv4 addresses glibc resolves `name` to inside container `c` (empty if none).
fn resolve(c: &Container, name: &str) -> Result<BTreeSet<Ipv4Addr>> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            c.ns.netns().name(),
            "getent",
            "ahostsv4",
            name,
        ])
        .output()
        .context("running getent")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect())
}

/// The running, healthy tasks of `/web` as the agents report them, seen from node `i`.
fn healthy_tasks(cluster: &Cluster, i: usize) -> Result<Vec<TaskRow>> {
    let rows: Vec<TaskRow> = cluster.get(i, "/v1/tasks")?;
    Ok(rows
        .into_iter()
        .filter(|r| {
            r.status.app_id == "/web"
                && r.status.state == TaskState::TaskRunning
                && r.status.healthy == Some(true)
        })
        .collect())
}

fn task_ips(rows: &[TaskRow]) -> BTreeSet<Ipv4Addr> {
    rows.iter()
        .filter_map(|r| match r.status.ip {
            Some(std::net::IpAddr::V4(ip)) => Some(ip),
            _ => None,
        })
        .collect()
}

/// Waits until `n` healthy tasks run and the client resolves exactly their addresses.
fn wait_for_tasks(
    cluster: &Cluster,
    client: &Container,
    n: usize,
    within: Duration,
) -> Result<Vec<TaskRow>> {
    wait_until(
        &format!("{n} healthy /web tasks, all in DNS"),
        within,
        || {
            let rows = healthy_tasks(cluster, 1)?;
            if rows.len() != n {
                bail!("{} healthy tasks", rows.len());
            }
            let resolved = resolve(client, NAME)?;
            if resolved != task_ips(&rows) {
                let dig = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        client.ns.netns().name(),
                        "dig",
                        "+tries=1",
                        "+time=1",
                        NAME,
                    ])
                    .output()?;
                bail!(
                    "DNS answers {resolved:?}, the tasks have {:?}; dig: {}",
                    task_ips(&rows),
                    String::from_utf8_lossy(&dig.stdout)
                );
            }
            // The client's node knows them too (its own zone's taking its connections): its
            // load balancer follows the same facts as its DNS, a moment later.
            let weighted = weighted_backends(cluster, 1)?;
            if weighted != n {
                bail!("node 2's VIP has {weighted} backends with weight, not {n}");
            }
            Ok(Some(rows))
        },
    )
}

/// Healthy backends of the VIPs that node `i`'s load balancer has programmed: those taking
/// its connections, and the spares of other zones.
fn weighted_backends(cluster: &Cluster, i: usize) -> Result<usize> {
    let vips: Vec<Value> = cluster.get(i, "/v1/vips")?;
    Ok(vips
        .iter()
        .flat_map(|v| v["backends"].as_array().into_iter().flatten())
        .filter(|b| b["state"] == "up" || b["state"] == "spare")
        .count())
}

/// `n` GETs of /id through the VIP from the client; every one must succeed through the VIP.
fn through_vip(cluster: &Cluster, client: &Container, n: usize) -> Result<BTreeSet<String>> {
    let cgroup = cluster.nodes[1]
        .cgroup
        .as_ref()
        .context("node 2 has a cgroup")?;
    let addr = format!("{VIP_NAME}:80");
    let count = n.to_string();
    let lines = lb::run_client(lb::client_command(
        client.ns.netns().name(),
        Some(cgroup),
        &["http", &addr, &count, "/id"],
    )?)?;
    let mut served = BTreeSet::new();
    for line in lines {
        match line {
            Line::Ok { response, .. } => {
                served.insert(response);
            }
            other => bail!("a request through the VIP failed: {other:?}"),
        }
    }
    Ok(served)
}

#[test]
fn apps_run_resolve_balance_survive_failures_and_go_away() -> Result<()> {
    let mut cluster = start_cluster()?;
    let result = lifecycle(&mut cluster);
    cluster.explain(result, 80)
}

/// `dig @127.0.0.1 +short args` on node `i`, one answer per line.
fn dig(cluster: &Cluster, i: usize, args: &[&str]) -> Result<Vec<String>> {
    let mut all = vec!["@127.0.0.1", "+time=2", "+tries=1", "+short"];
    all.extend_from_slice(args);
    let out = cluster.run_in(i, std::path::Path::new("/usr/bin/dig"), &all)?;
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    Ok(lines)
}

/// The scheduler is the cluster's master in DNS, and the names of an overlay app without
/// host ports point at the tasks themselves, never at agent ports nothing listens on.
fn own_cluster_names(cluster: &Cluster, rows: &[TaskRow]) -> Result<()> {
    let master = cluster.nodes[0].address.to_string();
    // Read on node 3, whose view of the leader comes through gossip.
    let names = wait_until(
        "the scheduler's names on node 3",
        Duration::from_secs(10),
        || {
            let leader = dig(cluster, 2, &["leader.mesos"])?;
            Ok((leader == std::slice::from_ref(&master)).then_some(()))
        },
    );
    names?;
    for name in [
        "master.mesos",
        "master0.mesos",
        "marathon.mesos",
        "leader.dcos.thisdcos.directory",
    ] {
        assert_eq!(
            dig(cluster, 2, &[name])?,
            std::slice::from_ref(&master),
            "{name}"
        );
    }
    let api = dig(cluster, 2, &["_framework._tcp.marathon.mesos", "SRV"])?;
    assert!(
        api.len() == 1 && api[0].ends_with(" marathon.mesos."),
        "{api:?}"
    );
    let leader_srv = dig(cluster, 2, &["_leader._tcp.mesos", "SRV"])?;
    assert!(
        leader_srv.len() == 1 && leader_srv[0].ends_with(" leader.mesos."),
        "{leader_srv:?}"
    );
    let tasks: Vec<String> = task_ips(rows).iter().map(|ip| ip.to_string()).collect();
    let mut tasks_sorted = tasks.clone();
    tasks_sorted.sort();
    assert_eq!(
        dig(cluster, 2, &["web.marathon.autoip.dcos.thisdcos.directory"])?,
        tasks_sorted,
        "no host ports: autoip is the tasks' own addresses"
    );
    assert!(
        dig(cluster, 2, &["_web._tcp.marathon.slave.mesos", "SRV"])?.is_empty(),
        "no host ports: nothing to find on the agents"
    );
    // Discovery SRV: the task's own address and container port.
    let srv = dig(cluster, 2, &["_web._tcp.marathon.mesos", "SRV"])?;
    assert_eq!(srv.len(), 3, "{srv:?}");
    assert!(
        srv.iter()
            .all(|l| l.split_whitespace().nth(2) == Some("80")),
        "{srv:?}"
    );
    Ok(())
}

fn lifecycle(cluster: &mut Cluster) -> Result<()> {
    let client = Container::attach(cluster, 1, "cli")?;
    let dir = tempfile::tempdir()?;

    // Deploy through the CLI on node 2 (forwarded to the leader on node 1).
    let added = Instant::now();
    cluster.add_app(1, WEB)?;
    let rows = wait_for_tasks(cluster, &client, 3, Duration::from_secs(30))?;
    println!(
        "web resolves from a container with 3 instances {:.1} s after `dcnet app add`",
        added.elapsed().as_secs_f64()
    );
    let zones: BTreeSet<&str> = rows.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(zones.len(), 3, "spread over the three agents: {zones:?}");
    own_cluster_names(cluster, &rows)?;

    // The VIP spreads the client's connections over the instances of its own zone (z1: nodes
    // 2 and 3); node 4's, in z2, is a spare there.
    let served = through_vip(cluster, &client, 60)?;
    let zone_of = |node: &str| {
        let i = cluster.nodes.iter().position(|n| n.name == node);
        i.map(|i| ["z0", "z1", "z1", "z2"][i])
    };
    let near: BTreeSet<String> = rows
        .iter()
        .filter(|r| zone_of(&r.node) == Some("z1"))
        .map(|r| r.status.task_id.clone())
        .collect();
    assert_eq!(near.len(), 2, "{rows:?}");
    assert_eq!(
        served, near,
        "the client's zone's instances served through the VIP"
    );
    let vips: Value = cluster.get(1, "/v1/vips")?;
    let web_backends = vips
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|v| v["vip"].as_str().is_some_and(|a| a.ends_with(":80")))
        })
        .map(|v| v["backends"].clone())
        .context("the web VIP on node 2")?;
    let states: BTreeSet<(String, String)> = web_backends
        .as_array()
        .context("backends")?
        .iter()
        .map(|b| {
            (
                b["zone"].as_str().unwrap_or("-").to_owned(),
                b["state"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("z1".to_owned(), "up".to_owned()),
            ("z2".to_owned(), "spare".to_owned())
        ]
        .into_iter()
        .collect(),
        "{web_backends}"
    );
    let vip_ips = resolve(&client, VIP_NAME)?;
    assert!(vip_ips.iter().all(|ip| ip.octets()[0] == 11), "{vip_ips:?}");

    // Scale to 5.
    cluster.cli(1, &["app", "scale", "/web", "5"])?;
    let rows = wait_for_tasks(cluster, &client, 5, Duration::from_secs(30))?;
    let list = cluster.cli(1, &["app", "list"])?;
    assert!(list.contains("/web") && list.contains("5/5"), "{list}");

    // Kill node 4 (zone z2): its tasks go elsewhere, DNS and the VIP follow.
    let killed_id = cluster.nodes[3].name.clone();
    let lost: BTreeSet<Ipv4Addr> = task_ips(
        &rows
            .iter()
            .filter(|r| r.node == killed_id)
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert!(!lost.is_empty(), "node 4 ran some of the 5 tasks");
    let killed = Instant::now();
    cluster.kill_node(3);
    let rows = wait_until(
        "the lost tasks to run elsewhere",
        Duration::from_secs(30),
        || {
            let rows = healthy_tasks(cluster, 1)?;
            let elsewhere = rows.len() == 5 && rows.iter().all(|r| r.node != killed_id);
            if !elsewhere {
                return Ok(None);
            }
            Ok((resolve(&client, NAME)? == task_ips(&rows)).then_some(rows))
        },
    )?;
    println!(
        "5 instances again, without node 4, {:.1} s after it was killed",
        killed.elapsed().as_secs_f64()
    );
    let served = through_vip(cluster, &client, 60)?;
    let ids: BTreeSet<String> = rows.iter().map(|r| r.status.task_id.clone()).collect();
    assert!(
        served.is_subset(&ids) && served.len() >= 4,
        "{served:?} vs {ids:?}"
    );

    // Stop the scheduler: tasks, DNS and the VIP keep working.
    cluster.stop_agent(0, Signal::SIGTERM, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(healthy_tasks(cluster, 1)?.len(), 5);
    assert_eq!(resolve(&client, NAME)?, task_ips(&rows));
    assert!(through_vip(cluster, &client, 20)?.is_subset(&ids));
    let refused = cluster.cli(1, &["app", "list"]).unwrap_err().to_string();
    assert!(refused.contains("no scheduler"), "{refused}");

    // It comes back and adopts the running tasks: none is replaced.
    cluster.start_agent(0)?;
    wait_until(
        "the scheduler to adopt the tasks",
        Duration::from_secs(30),
        || {
            let Ok(list) = cluster.cli(1, &["app", "list", "--json"]) else {
                return Ok(None);
            };
            let apps: Value = serde_json::from_str(&list)?;
            Ok((apps[0]["tasksRunning"] == 5).then_some(()))
        },
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let after: BTreeSet<String> = healthy_tasks(cluster, 1)?
        .into_iter()
        .map(|r| r.status.task_id)
        .collect();
    assert_eq!(after, ids, "the same tasks, adopted");

    // A new version rolls out: new tasks start, old ones leave DNS and the VIP before they
    // are stopped, so connections through the VIP meanwhile all succeed.
    let v2 = dir.path().join("web-v2.json");
    let mut changed: Value = serde_json::from_str(WEB)?;
    changed["env"] = serde_json::json!({"GREETING": "v2"});
    changed["instances"] = 5.into();
    std::fs::write(&v2, changed.to_string())?;
    let cgroup = cluster.nodes[1]
        .cgroup
        .as_ref()
        .context("node 2's cgroup")?;
    let load = lb::client_command(
        client.ns.netns().name(),
        Some(cgroup),
        &["http", &format!("{VIP_NAME}:80"), "4000", "/id"],
    )?
    .stdout(std::process::Stdio::piped())
    .spawn()?;
    let rolled = Instant::now();
    let said = cluster.cli(1, &["app", "update", v2.to_str().unwrap_or_default()])?;
    assert!(said.contains("new tasks start"), "{said}");
    let new_ids = wait_until(
        "the new version to replace the old",
        Duration::from_secs(30),
        || {
            let rows = healthy_tasks(cluster, 1)?;
            let all: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
            let new: BTreeSet<String> = rows
                .iter()
                .filter(|r| !ids.contains(&r.status.task_id))
                .map(|r| r.status.task_id.clone())
                .collect();
            Ok(
                (new.len() == 5 && all.iter().filter(|r| r.status.app_id == "/web").count() == 5)
                    .then_some(new),
            )
        },
    )?;
    println!(
        "new version rolled out in {:.1} s",
        rolled.elapsed().as_secs_f64()
    );
    let out = load.wait_with_output()?;
    let lines: Vec<Line> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(Line::parse)
        .collect::<Result<_>>()?;
    let failed: Vec<&Line> = lines
        .iter()
        .filter(|l| matches!(l, Line::Err { .. }))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} connections through the VIP failed during the rollout: {:?}",
        failed.len(),
        lines.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(resolve(&client, NAME)?.len(), 5);
    assert!(through_vip(cluster, &client, 40)?.is_subset(&new_ids));

    // Remove: the name, the VIP and the tasks go.
    cluster.cli(1, &["app", "remove", "/web"])?;
    wait_until(
        "the app's name, VIP and tasks to go",
        Duration::from_secs(15),
        || {
            let tasks: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
            let vips: Value = cluster.get(1, "/v1/vips")?;
            Ok((tasks.is_empty()
                && resolve(&client, NAME)?.is_empty()
                && resolve(&client, VIP_NAME)?.is_empty()
                && vips.as_array().is_some_and(Vec::is_empty))
            .then_some(()))
        },
    )?;
    // The killed node comes back clean: its old tasks are reported lost, then forgotten.
    cluster.start_agent(3)?;
    wait_until(
        "node 4 to forget its dead tasks",
        Duration::from_secs(20),
        || {
            let tasks: Vec<TaskRow> = cluster.get(3, "/v1/tasks")?;
            Ok(tasks.is_empty().then_some(()))
        },
    )?;
    client.detach(cluster)?;
    Ok(())
}

#[test]
fn invalid_apps_and_constraints_are_explained() -> Result<()> {
    let mut cluster = start_cluster()?;
    let result = constraints(&mut cluster);
    cluster.explain(result, 80)
}

fn constraints(cluster: &mut Cluster) -> Result<()> {
    let cluster = &*cluster;
    let dir = tempfile::tempdir()?;
    let write = |name: &str, text: &str| -> Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.to_str().unwrap_or_default().to_owned())
    };

    // Not JSON: refused before any request.
    let bad = write("bad.json", "{\"id\": ")?;
    let err = cluster
        .cli(1, &["app", "add", &bad])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not valid JSON"), "{err}");
    // Invalid fields: every one named, with its path.
    let invalid = write(
        "invalid.json",
        r#"{"id": "Web", "cmd": "", "cpus": -1, "constraints": [["rack", "LIKE", "a("]]}"#,
    )?;
    let err = wait_until(
        "the scheduler to judge the app",
        Duration::from_secs(30),
        || match cluster.cli(1, &["app", "add", &invalid]) {
            Ok(out) => bail!("an invalid app was accepted: {out}"),
            Err(e)
                if e.to_string().contains("not the leader") || e.to_string().contains("retry") =>
            {
                Ok(None)
            }
            Err(e) => Ok(Some(e.to_string())),
        },
    )?;
    for needle in [
        "Object is not valid (422)",
        "/id:",
        "/cmd:",
        "/cpus:",
        "/constraints/0:",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }

    // Inputs that can never run: refused at the door, each with its path.
    let never = write(
        "never.json",
        r#"{"id": "/never", "cmd": "echo a\u0000b", "cpus": 1e308, "mem": 1}"#,
    )?;
    let err = cluster
        .cli(1, &["app", "add", &never])
        .unwrap_err()
        .to_string();
    for needle in [
        "/cmd: contains a NUL byte",
        "/cpus: expected a number above 0, at most",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    let lost = write(
        "lost.json",
        r#"{"id": "/lost", "cmd": "exec sleep 1000", "cpus": 0.01, "mem": 1,
            "networks": [{"mode": "container", "name": "no-such-overlay"}]}"#,
    )?;
    let err = cluster
        .cli(1, &["app", "add", &lost])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/networks/0/name: no agent has an overlay network named \"no-such-overlay\"")
            && err.contains("dcos"),
        "{err}"
    );
    // A method the scheduler has no use for is refused by the agent's forwarder, not 502.
    let url = format!(
        "http://127.0.0.1:{}/v2/apps",
        dcnet_tests::cluster::API_PORT
    );
    let status = cluster.nodes[1].netns.run(|| -> Result<u16> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Ok(cluster
            .authorized(agent.options(&url))
            .call()?
            .status()
            .as_u16())
    })??;
    assert_eq!(status, 405, "OPTIONS {url}");
    // A KV key of dots names nothing.
    let refused = cluster.put(1, "/v1/kv/...", "x").unwrap_err();
    assert!(format!("{refused:#}").contains("400"), "{refused:#}");

    // hostname UNIQUE with more instances than agents: three run, the app says why not four.
    let unique = write(
        "unique.json",
        r#"{"id": "/one-each", "cmd": "exec sleep 1000", "instances": 4, "cpus": 0.01, "mem": 1,
            "constraints": [["hostname", "UNIQUE"], ["@region", "IS", "r1"]]}"#,
    )?;
    cluster.cli(1, &["app", "add", &unique])?;
    let apps = wait_until(
        "three tasks, one per agent",
        Duration::from_secs(30),
        || {
            let apps: Value = serde_json::from_str(&cluster.cli(1, &["app", "list", "--json"])?)?;
            Ok((apps[0]["tasksRunning"] == 3).then_some(apps))
        },
    )?;
    let waiting = apps[0]["waiting"].as_str().unwrap_or_default();
    assert!(waiting.contains("UNIQUE"), "{waiting}");
    // The leader counts from its own replica; node 2's may not have heard every agent yet.
    let tasks = wait_until(
        "node 2 to hear of the three tasks",
        Duration::from_secs(15),
        || {
            let tasks: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
            let ours = tasks.iter().filter(|t| t.status.app_id == "/one-each");
            Ok((ours.count() == 3).then_some(tasks))
        },
    )?;
    let nodes: BTreeSet<&str> = tasks
        .iter()
        .filter(|t| t.status.app_id == "/one-each")
        .map(|t| t.node.as_str())
        .collect();
    assert_eq!(nodes.len(), 3, "one per agent: {nodes:?}");

    // @zone IS z2 on the host network: every instance on node 4, with Mesos-style ports.
    let pinned = write(
        "pinned.json",
        r#"{"id": "/pinned", "cmd": "echo $HOST $PORT0 > env && exec sleep 1000", "instances": 2,
            "cpus": 0.01, "mem": 1, "portDefinitions": [{"port": 0}],
            "constraints": [["@zone", "IS", "z2"]]}"#,
    )?;
    cluster.cli(1, &["app", "add", &pinned])?;
    let rows = wait_until("two pinned tasks", Duration::from_secs(30), || {
        let tasks: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
        let pinned: Vec<TaskRow> = tasks
            .into_iter()
            .filter(|t| t.status.app_id == "/pinned" && t.status.state == TaskState::TaskRunning)
            .collect();
        Ok((pinned.len() == 2).then_some(pinned))
    })?;
    assert!(
        rows.iter().all(|r| r.node == cluster.nodes[3].name),
        "{rows:?}"
    );
    let ports: BTreeSet<u16> = rows
        .iter()
        .flat_map(|r| r.status.host_ports.clone())
        .collect();
    assert_eq!(
        ports.len(),
        2,
        "distinct host ports on one agent: {ports:?}"
    );
    let sandbox = cluster.nodes[3]
        .state_dir
        .join("tasks")
        .join(&rows[0].status.task_id);
    let env = wait_until("the task's env file", Duration::from_secs(5), || {
        Ok(std::fs::read_to_string(sandbox.join("env")).ok())
    })?;
    let want = format!(
        "{} {}",
        cluster.nodes[3].address, rows[0].status.host_ports[0]
    );
    assert_eq!(env.trim(), want);
    assert!(Path::new(&sandbox.join("stdout")).exists());
    Ok(())
}

const WEB6: &str = r#"{
  "id": "/web6",
  "cmd": "echo $MESOS_TASK_ID > id && exec python3 -m http.server --bind :: $PORT0",
  "instances": 2,
  "cpus": 0.1,
  "mem": 32,
  "constraints": [["hostname", "UNIQUE"]],
  "networks": [{"mode": "container", "name": "dual"}],
  "container": {"type": "MESOS", "portMappings": [
    {"containerPort": 80, "name": "http", "labels": {"VIP_0": "/web6:80"}}
  ]},
  "healthChecks": [{"protocol": "HTTP", "path": "/id", "portIndex": 0,
                    "gracePeriodSeconds": 15, "intervalSeconds": 1, "timeoutSeconds": 2,
                    "maxConsecutiveFailures": 3}]
}"#;

/// Tasks on a dual-stack overlay: both addresses in the agents' task facts, A and AAAA for
/// `<app>.marathon.mesos`, and a named VIP with an IPv6 address whose connections from a
/// container on node 2 reach both tasks, on two nodes, over the IPv6 overlay.
#[test]
fn tasks_on_a_dual_stack_overlay_have_aaaa_records_and_an_ipv6_vip() -> Result<()> {
    let mut options = ClusterOptions::nodes(3);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: vec![if i == 0 { "master" } else { "agent" }.into()],
            dns_config: "listen = [\"0.0.0.0:53\"]\n".into(),
            extra_config: format!(
                "{OVERLAY_AND_LB}\n[[overlay.networks]]\nname = \"dcos\"\n\n\
                 [[overlay.networks]]\nname = \"dual\"\nsubnet = \"172.30.0.0/16\"\n\
                 subnet6 = \"fd01:e::/64\"\n"
            ),
            ..NodeSpec::default()
        };
    }
    let cluster = Cluster::start(options)?;
    cluster.wait_for_overlay(&[0, 1, 2], 2)?;
    let result = dual_stack(&cluster);
    cluster.explain(result, 60)
}

fn dual_stack(cluster: &Cluster) -> Result<()> {
    const NAME6: &str = "web6.marathon.mesos";
    const VIP6: &str = "web6.marathon.l4lb.thisdcos.directory";
    cluster.add_app(1, WEB6)?;
    let rows = wait_until("2 healthy /web6 tasks", Duration::from_secs(40), || {
        let rows: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
        let rows: Vec<TaskRow> = rows
            .into_iter()
            .filter(|r| r.status.app_id == "/web6" && r.status.healthy == Some(true))
            .collect();
        Ok((rows.len() == 2).then_some(rows))
    })?;
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for r in &rows {
        match (r.status.ip, r.status.ip6) {
            (Some(std::net::IpAddr::V4(ip)), Some(ip6)) => {
                assert_eq!(ip.octets()[..2], [172, 30], "{r:?}");
                assert_eq!(ip6.segments()[..4], [0xfd01, 0xe, 0, 0], "{r:?}");
                v4.insert(ip.to_string());
                v6.insert(ip6.to_string());
            }
            _ => bail!("a task on a dual-stack overlay needs both addresses: {r:?}"),
        }
    }
    let answers = |kind: &str, name: &str| -> Result<BTreeSet<String>> {
        Ok(dig(cluster, 1, &[kind, name])?.into_iter().collect())
    };
    wait_until("A and AAAA of the tasks", Duration::from_secs(10), || {
        Ok((answers("A", NAME6)? == v4 && answers("AAAA", NAME6)? == v6).then_some(()))
    })
    .with_context(|| format!("tasks have {v4:?} and {v6:?}"))?;
    // DC/OS's names for the task's own addresses (no host ports: autoip is the task's too).
    for kind in ["containerip", "autoip"] {
        let name = format!("web6.marathon.{kind}.dcos.thisdcos.directory");
        assert_eq!(answers("AAAA", &name)?, v6, "{name}");
        assert_eq!(answers("A", &name)?, v4, "{name}");
    }

    // The named VIP has an IPv6 address (fd01:c::/64) beside its IPv4 one.
    let vip6: std::net::Ipv6Addr = wait_until("the VIP's AAAA", Duration::from_secs(10), || {
        Ok(answers("AAAA", VIP6)?
            .into_iter()
            .next()
            .and_then(|a| a.parse().ok()))
    })?;
    assert_eq!(vip6.segments()[..4], [0xfd01, 0xc, 0, 0], "{vip6}");
    let client = Container::attach_to(cluster, 1, "cli6", "dual")?;
    let cgroup = cluster.nodes[1]
        .cgroup
        .as_ref()
        .context("node 2 has a cgroup")?;
    let target = format!("[{vip6}]:80");
    let served = wait_until(
        "both tasks serving through the IPv6 VIP",
        Duration::from_secs(15),
        || {
            let lines = lb::run_client(lb::client_command(
                client.ns.netns().name(),
                Some(cgroup),
                &["http", &target, "40", "/id"],
            )?)?;
            let mut served = BTreeSet::new();
            for line in lines {
                match line {
                    // The peer shows as the VIP (the socket hooks translate back).
                    Line::Ok { response, .. } => {
                        served.insert(response);
                    }
                    other => bail!("a request through the IPv6 VIP failed: {other:?}"),
                }
            }
            Ok((served.len() == 2).then_some(served))
        },
    )?;
    let ids: BTreeSet<String> = rows.iter().map(|r| r.status.task_id.clone()).collect();
    assert_eq!(served, ids);
    Ok(())
}
