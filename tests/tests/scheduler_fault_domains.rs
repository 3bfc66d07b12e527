//! Fault domains as DC/OS 1.11 has them, in a 4-node namespace cluster: node 1 is the master
//! in region r1; nodes 2 and 3 are agents in r1 (zones z1, z2); node 4 is an agent whose
//! region (r2) and zone come from a fault-domain detect script. An app without an `@region`
//! constraint runs only in r1, also when its agents die or are decommissioned; an app with
//! `["@region", "IS", "r2"]` runs in r2; one with `["rack_id", "LIKE", ...]` only on the
//! agents whose configured attribute matches. The CLI's `task kill --scale`, `app restart`,
//! `app versions` and `deployment list` are used on the way. Where tasks run is read from the agents' task
//! cgroups (the processes), not only from the API.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_agent::api::TaskRow;
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use serde_json::Value;

const LOCAL: &str =
    r#"{"id": "/local", "cmd": "exec sleep 1000", "instances": 4, "cpus": 0.01, "mem": 1}"#;
const RACKED: &str = r#"{"id": "/racked", "cmd": "exec sleep 1002", "instances": 2, "cpus": 0.01, "mem": 1,
  "constraints": [["rack_id", "LIKE", "rack-[2-9]"]]}"#;
const REMOTE: &str = r#"{"id": "/remote", "cmd": "exec sleep 1001", "instances": 2, "cpus": 0.01, "mem": 1,
  "constraints": [["@region", "IS", "r2"]]}"#;

fn start(dir: &std::path::Path) -> Result<Cluster> {
    use std::os::unix::fs::PermissionsExt as _;
    let script = dir.join("fault-domain");
    std::fs::write(
        &script,
        "#!/bin/sh\necho '{\"fault_domain\":{\"region\":{\"name\":\"r2\"},\"zone\":{\"name\":\"r2a\"}}}'\n",
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let mut options = ClusterOptions::nodes(4);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: vec![if i == 0 { "master" } else { "agent" }.into()],
            ..NodeSpec::default()
        };
        if i == 3 {
            node.top_config = format!("fault_domain_detect = \"{}\"\n", script.display());
        } else {
            node.region = Some("r1".into());
            node.zone = Some(["z1", "z1", "z2"][i].into());
            node.top_config = format!("attributes = {{ rack_id = \"rack-{i}\" }}\n");
        }
    }
    Cluster::start(options)
}

/// Per node index, the apps (by task-id prefix) of the tasks running there.
fn running(cluster: &Cluster) -> BTreeMap<usize, Vec<String>> {
    (0..cluster.nodes.len())
        .map(|i| {
            let apps = cluster
                .running_tasks(i)
                .iter()
                .filter_map(|id| Some(id.split_once('.')?.0.to_owned()))
                .collect();
            (i, apps)
        })
        .collect()
}

fn count(on: &BTreeMap<usize, Vec<String>>, node: usize, app: &str) -> usize {
    on.get(&node)
        .map_or(0, |apps| apps.iter().filter(|a| *a == app).count())
}

/// Fails if an unconstrained task runs in r2 (node index 3).
fn never_remote(on: &BTreeMap<usize, Vec<String>>) -> Result<()> {
    if count(on, 3, "local") > 0 {
        bail!("a task of /local runs in the remote region: {on:?}");
    }
    Ok(())
}

#[test]
fn unconstrained_apps_stay_home_and_constrained_ones_go_remote() -> Result<()> {
    dcnet_tests::cluster::require_root()?;
    let dir = tempfile::tempdir()?;
    let mut cluster = start(dir.path())?;

    // Node 4's region and zone came from its script.
    wait_until(
        "node 4's fault domain in gossip",
        Duration::from_secs(30),
        || {
            let nodes: Vec<Value> = cluster.get(1, "/v1/nodes")?;
            Ok(nodes
                .iter()
                .any(|n| {
                    n["name"] == cluster.nodes[3].name && n["region"] == "r2" && n["zone"] == "r2a"
                })
                .then_some(()))
        },
    )?;

    cluster.add_app(1, LOCAL)?;
    cluster.add_app(1, REMOTE)?;
    let on = wait_until("both apps placed", Duration::from_secs(60), || {
        let on = running(&cluster);
        never_remote(&on)?;
        let local = count(&on, 1, "local") + count(&on, 2, "local");
        Ok((local == 4 && count(&on, 3, "remote") == 2).then_some(on))
    })?;
    eprintln!("placed: {on:?}");
    // Agent attributes from the config: only node 3's rack matches.
    cluster.add_app(1, RACKED)?;
    wait_until("/racked on node 3's rack", Duration::from_secs(60), || {
        let on = running(&cluster);
        never_remote(&on)?;
        if count(&on, 1, "racked") > 0 {
            bail!("a task of /racked runs on rack-1: {on:?}");
        }
        Ok((count(&on, 2, "racked") == 2).then_some(()))
    })?;
    assert_eq!(
        count(&on, 1, "remote") + count(&on, 2, "remote"),
        0,
        "{on:?}"
    );
    // Tasks say where they run.
    let rows: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
    for r in rows.iter().filter(|r| r.status.app_id == "/remote") {
        assert_eq!(
            (r.region.as_deref(), r.zone.as_deref()),
            (Some("r2"), Some("r2a")),
            "{r:?}"
        );
    }

    // The CLI's task and app calls: a task killed with --scale is gone for good (3 left),
    // a restart replaces every task, the versions are listed, nothing stays under way.
    let rows: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
    let victim = rows
        .iter()
        .find(|r| r.status.app_id == "/local")
        .context("a task of /local")?
        .status
        .task_id
        .clone();
    cluster.cli(1, &["task", "kill", &victim, "--scale"])?;
    let local_ids = |on_nodes: &[usize]| -> std::collections::BTreeSet<String> {
        on_nodes
            .iter()
            .flat_map(|i| cluster.running_tasks(*i))
            .filter(|id| id.starts_with("local."))
            .collect()
    };
    let three = wait_until(
        "the killed task gone, none replacing it",
        Duration::from_secs(30),
        || {
            let ids = local_ids(&[1, 2]);
            Ok((ids.len() == 3 && !ids.contains(&victim)).then_some(ids))
        },
    )?;
    cluster.cli(1, &["app", "restart", "/local"])?;
    wait_until(
        "every task of /local replaced",
        Duration::from_secs(60),
        || {
            let ids = local_ids(&[1, 2]);
            never_remote(&running(&cluster))?;
            Ok((ids.len() == 3 && ids.is_disjoint(&three)).then_some(()))
        },
    )?;
    let versions = cluster.cli(1, &["app", "versions", "/local"])?;
    assert_eq!(
        versions.lines().count(),
        2,
        "the first and the restart: {versions}"
    );
    wait_until("no deployment under way", Duration::from_secs(30), || {
        let listed = cluster.cli(1, &["deployment", "list", "--json"])?;
        Ok((listed.trim() == "[]").then_some(()))
    })?;

    // Node 2 dies: its tasks are replaced in r1 (node 3), never in r2, though r2 has room.
    cluster.kill_node(1);
    wait_until(
        "node 2's tasks replaced on node 3",
        Duration::from_secs(60),
        || {
            let on = running(&cluster);
            never_remote(&on)?;
            Ok((count(&on, 2, "local") == 3).then_some(()))
        },
    )?;

    // Node 3 is decommissioned: its tasks stop and nothing of /local runs anywhere, because
    // its only region has no agent left; the app says why.
    let name = cluster.nodes[2].name.clone();
    let said = cluster.cli(3, &["node", "decommission", &name])?;
    assert!(said.contains("decommissioned"), "{said}");
    let listed = cluster.cli(3, &["node", "decommissioned", "--json"])?;
    assert!(listed.contains(&name), "{listed}");
    let why = wait_until(
        "/local to wait for a home-region agent",
        Duration::from_secs(60),
        || {
            let on = running(&cluster);
            never_remote(&on)?;
            if count(&on, 2, "local") > 0 {
                return Ok(None);
            }
            let apps: Value = serde_json::from_str(&cluster.cli(3, &["app", "list", "--json"])?)?;
            let local = apps
                .as_array()
                .and_then(|a| a.iter().find(|a| a["id"] == "/local"))
                .context("/local is listed")?;
            Ok(local["waiting"].as_str().map(str::to_owned))
        },
    )?;
    assert!(why.contains("remote region"), "{why}");
    // The remote app never moved.
    let on = running(&cluster);
    assert_eq!(count(&on, 3, "remote"), 2, "{on:?}");
    never_remote(&on)?;
    Ok(())
}
