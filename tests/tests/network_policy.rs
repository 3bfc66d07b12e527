//! Network policies through the CLI and the scheduler's `/v2/policies`: stored by the
//! masters, listed with the apps they select, refused with reasons, changed by admins only,
//! compiled on every node from gossip (`GET /v1/policy`, read on the node that is no master),
//! and enforced: probes run in the tasks' own namespaces and cgroups, as the tasks, across
//! nodes and on one node, direct and through a VIP.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_agent::api::TaskRow;
use dcnet_agent::facts::launched::TaskState;
use dcnet_tests::cluster::{API_PORT, OVERLAY_AND_LB, TASKS_CGROUP};
use dcnet_tests::flows::Flows;
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use serde_json::{Value, json};

const APP: &str = r#"{"id": "/web", "cmd": "sleep 1000", "instances": 1, "cpus": 0.01, "mem": 1,
  "labels": {"tier": "front"}}"#;

const POLICY: &str = r#"{"id": "web-in", "selector": {"labels": {"tier": "front"}},
  "ingress": [{"from": [{"apps": ["/client"]}], "ports": [{"protocol": "tcp", "port": 80}]}]}"#;

#[test]
fn policies_are_added_listed_replaced_and_removed_by_admins_only() -> Result<()> {
    dcnet_tests::cluster::require_root()?;
    let mut options = ClusterOptions::nodes(2);
    options.nodes[0] = NodeSpec {
        roles: vec!["master".into(), "agent".into()],
        ..NodeSpec::default()
    };
    let cluster = Cluster::start(options)?;
    let result = policies(&cluster);
    cluster.explain(result, 40)
}

fn policies(cluster: &Cluster) -> Result<()> {
    cluster.add_app(1, APP)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("policy.json");
    std::fs::write(&file, POLICY)?;
    let file = file.to_str().context("path")?;

    let said = cluster.cli(1, &["policy", "add", file])?;
    assert!(said.contains("it selects /web"), "{said}");
    let again = cluster.cli(1, &["policy", "add", file]);
    assert!(again.is_err_and(|e| e.to_string().contains("--replace")));
    // The agent that is no master compiles it from gossip: /web's ingress is isolated there.
    let isolated = |cluster: &Cluster, want: bool| -> Result<()> {
        wait_until(
            &format!("/web's ingress isolated = {want} on node 2"),
            Duration::from_secs(20),
            || {
                let view: Value = cluster.get(1, "/v1/policy")?;
                let web = &view["apps"]["/web"];
                Ok((view["known"] == true
                    && web["ingress_isolated"] == want
                    && web["egress_isolated"] == false)
                    .then_some(()))
            },
        )
        .map(drop)
    };
    isolated(cluster, true)?;
    let list = cluster.cli(1, &["policy", "list"])?;
    assert!(
        list.lines()
            .any(|l| l.starts_with("web-in") && l.ends_with("/web")),
        "{list}"
    );

    // Mistakes are explained by the CLI before anything is sent, and by the API.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"id": "x", "ingress": [{"to": [{"cidr": "10.0.0.0/8"}]}]}"#,
    )?;
    let refused = cluster.cli(1, &["policy", "add", bad.to_str().context("path")?]);
    assert!(
        refused.is_err_and(|e| format!("{e:#}").contains("ingress rules name peers in `from`"))
    );
    let url = format!("http://127.0.0.1:{API_PORT}/v2/policies");
    let admin = format!(
        "Authorization: token={}",
        cluster.admin_token().context("secure")?
    );
    let out = cluster.run_in(
        1,
        Path::new("/usr/bin/curl"),
        &[
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            &admin,
            "-d",
            r#"{"id": "y"}"#,
            &url,
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("422") && text.contains("isolate nothing"),
        "{text}"
    );

    // A read-only credential sees them and changes nothing.
    let read = cluster.token_with(dcnet_auth::Role::Read, "viewer", Duration::from_secs(600))?;
    let reader = format!("Authorization: token={read}");
    let out = cluster.run_in(1, Path::new("/usr/bin/curl"), &["-s", "-H", &reader, &url])?;
    let seen: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(seen["policies"][0]["id"], "web-in");
    assert_eq!(seen["policies"][0]["selects"][0], "/web");
    let one = format!("{url}/web-in");
    assert_eq!(
        cluster.http_status(1, &["-X", "DELETE", "-H", &reader, &one])?,
        "403"
    );

    // Replaced: now it selects by id and isolates egress too.
    std::fs::write(
        file,
        r#"{"id": "web-in", "selector": {"apps": ["/nothing"]}, "ingress": [], "egress": []}"#,
    )?;
    let said = cluster.cli(1, &["policy", "add", "--replace", file])?;
    assert!(said.contains("selects no app now"), "{said}");
    let json: Value = serde_json::from_str(&cluster.cli(1, &["policy", "list", "--json"])?)?;
    assert_eq!(json["policies"][0]["egress"], serde_json::json!([]));

    // Replaced: it now selects no app, and the node's view follows.
    isolated(cluster, false)?;

    // Removed, from the other node's CLI (forwarded to the leader).
    cluster.cli(0, &["policy", "remove", "web-in"])?;
    wait_until("the policy gone", Duration::from_secs(10), || {
        let list: Value = serde_json::from_str(&cluster.cli(1, &["policy", "list", "--json"])?)?;
        Ok(list["policies"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(()))
    })?;
    let gone = cluster.cli(1, &["policy", "remove", "web-in"]);
    assert!(gone.is_err_and(|e| e.to_string().contains("no policy has the id")));
    Ok(())
}

/// A flows.py server app on the overlay, with a VIP on 8080.
fn server_app(id: &str, instances: usize, constraint: Value, labels: Value) -> String {
    json!({
        "id": id, "instances": instances, "cpus": 0.01, "mem": 64,
        "cmd": "exec python3 -c \"$FLOWS\" serve 0.0.0.0 8080 8081",
        "env": {"FLOWS": dcnet_tests::flows::SCRIPT},
        "labels": labels,
        "constraints": [constraint],
        "networks": [{"mode": "container", "name": "dcos"}],
        "container": {"type": "MESOS", "portMappings": [
            {"containerPort": 8080, "name": "flows",
             "labels": {"VIP_0": format!("{id}:8080")}}]},
    })
    .to_string()
}

/// A running task, and where a probe acts as it.
#[derive(Debug, Clone)]
struct Running {
    node: usize,
    ip: String,
    netns: String,
    cgroup: std::path::PathBuf,
}

impl Running {
    fn prober(&self) -> Result<Flows> {
        Flows::probe(&self.netns, &self.cgroup)
    }
}

fn running(cluster: &Cluster, app: &str, n: usize) -> Result<Vec<Running>> {
    wait_until(
        &format!("{n} running tasks of {app}"),
        Duration::from_secs(60),
        || {
            let rows: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
            let rows: Vec<&TaskRow> = rows
                .iter()
                .filter(|r| r.status.app_id == app && r.status.state == TaskState::TaskRunning)
                .collect();
            if rows.len() != n {
                return Ok(None);
            }
            let mut out = Vec::new();
            for row in rows {
                let Some(ip) = row.status.ip else {
                    return Ok(None);
                };
                let node: usize = row
                    .node
                    .strip_prefix("node-")
                    .and_then(|i| i.parse::<usize>().ok())
                    .context("a node name node-<n>")?
                    - 1;
                let cgroup = cluster.nodes[node]
                    .cgroup
                    .as_ref()
                    .context("the node's cgroup")?
                    .path()
                    .join(TASKS_CGROUP)
                    .join(&row.status.task_id);
                out.push(Running {
                    node,
                    ip: ip.to_string(),
                    netns: dcnet_agent::launcher::process::netns_name(
                        &cluster.task_netns_prefix(),
                        &row.status.task_id,
                    ),
                    cgroup,
                });
            }
            out.sort_by_key(|t| t.node);
            Ok(Some(out))
        },
    )
}

/// The named VIP of `app` on port 8080 as node `i` programs it, once it has `backends`.
fn vip_of(cluster: &Cluster, i: usize, app: &str, backends: usize) -> Result<String> {
    let name = format!(
        "{}.marathon.l4lb.thisdcos.directory",
        app.trim_start_matches('/')
    );
    wait_until(
        &format!("the VIP of {app} on node {i}"),
        Duration::from_secs(30),
        || {
            let vips: Value = cluster.get(i, "/v1/vips")?;
            Ok(vips.as_array().into_iter().flatten().find_map(|v| {
                let vip = v["vip"].as_str()?;
                (v["name"] == name.as_str()
                    && vip.ends_with(":8080")
                    && !vip.starts_with('[')
                    && v["backends"].as_array()?.len() == backends)
                    .then(|| vip.trim_end_matches(":8080").to_owned())
            }))
        },
    )
}

/// Tries until `attempt` says `want` (bounded); returns how long it took.
fn until(
    what: &str,
    prober: &mut Flows,
    (dst, proto, port): (&str, &str, u16),
    want: impl Fn(&str) -> bool,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let at = started.elapsed();
        let got = prober.attempt("-", dst, proto, port)?;
        if want(&got) {
            return Ok(at);
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("{what}: still {got:?} after 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn add_policy(cluster: &Cluster, dir: &Path, json: &str) -> Result<()> {
    let file = dir.join("p.json");
    std::fs::write(&file, json)?;
    cluster.cli(1, &["policy", "add", file.to_str().context("path")?])?;
    Ok(())
}

const DENIED: fn(&str) -> bool = |got| got != "ok";
const OK: fn(&str) -> bool = |got| got == "ok";

#[test]
fn only_what_policies_allow_reaches_or_leaves_an_isolated_app() -> Result<()> {
    dcnet_tests::cluster::require_root()?;
    let mut options = ClusterOptions::nodes(3);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: vec![if i == 0 { "master" } else { "agent" }.into()],
            extra_config: OVERLAY_AND_LB.into(),
            ..NodeSpec::default()
        };
    }
    let mut cluster = Cluster::start(options)?;
    let result = enforcement(&mut cluster);
    cluster.explain(result, 60)
}

/// The policy programs attached to `cgroup`, by name (bpftool's view).
fn policy_programs(cgroup: &Path) -> Result<Vec<String>> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()
        .context("bpftool (apt install bpftool, or scripts/setup.sh)")?;
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(list
        .iter()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| n.starts_with("policy_"))
        .map(str::to_owned)
        .collect())
}

fn enforcement(cluster: &mut Cluster) -> Result<()> {
    let on = |node: &str| json!(["hostname", "IS", node]);
    let unique = json!(["hostname", "UNIQUE"]);
    cluster.add_app(
        1,
        &server_app("/web", 1, on("node-2"), json!({"tier": "front"})),
    )?;
    cluster.add_app(
        1,
        &server_app("/client", 2, unique.clone(), json!({"role": "client"})),
    )?;
    cluster.add_app(1, &server_app("/other", 2, unique, json!({})))?;
    let web = &running(cluster, "/web", 1)?[0];
    let clients = running(cluster, "/client", 2)?;
    let others = running(cluster, "/other", 2)?;
    // Index by node: [0] on node-2 (web's), [1] on node-3.
    assert_eq!((clients[0].node, others[1].node), (1, 2));
    let vip = vip_of(cluster, 1, "/web", 1)?;
    vip_of(cluster, 2, "/web", 1)?;
    let mut probes = Vec::new();
    for t in clients.iter().chain(&others) {
        probes.push(t.prober()?);
    }
    let [client2, client3, other2, other3] = &mut probes[..] else {
        bail!("four probes");
    };

    // No policy: everyone reaches /web, directly and through its VIP, TCP and UDP.
    for p in [&mut *client2, &mut *client3, &mut *other2, &mut *other3] {
        until("/web up", p, (&web.ip, "tcp", 8080), OK)?;
        assert_eq!(p.attempt("-", &web.ip, "udp", 8080)?, "ok");
        assert_eq!(p.attempt("-", &web.ip, "tcp", 8081)?, "ok");
        assert_eq!(p.attempt("-", &vip, "tcp", 8080)?, "ok");
    }

    // /web takes /client on 8080 (TCP and UDP) only.
    let dir = tempfile::tempdir()?;
    add_policy(
        cluster,
        dir.path(),
        r#"{"id": "web-in", "selector": {"labels": {"tier": "front"}},
            "ingress": [{"from": [{"apps": ["/client"]}],
                         "ports": [{"protocol": "tcp", "port": 8080}, {"protocol": "udp", "port": 8080}]}]}"#,
    )?;
    let took = until("web-in in force", other2, (&web.ip, "tcp", 8080), DENIED)?;
    println!(
        "web-in denied /other on node-2 {} ms after `policy add` returned",
        took.as_millis()
    );
    for (who, p) in [
        ("client on node-2", &mut *client2),
        ("client on node-3", &mut *client3),
    ] {
        assert_eq!(p.attempt("-", &web.ip, "tcp", 8080)?, "ok", "{who}");
        assert_eq!(p.attempt("-", &web.ip, "udp", 8080)?, "ok", "{who}");
        assert_eq!(
            p.attempt("-", &vip, "tcp", 8080)?,
            "ok",
            "{who} via the VIP"
        );
        assert_eq!(
            p.attempt("-", &web.ip, "tcp", 8081)?,
            "err timeout",
            "{who}, port 8081"
        );
    }
    for (who, p) in [
        ("other on node-2", &mut *other2),
        ("other on node-3", &mut *other3),
    ] {
        assert_eq!(
            p.attempt("-", &web.ip, "tcp", 8080)?,
            "err timeout",
            "{who}"
        );
        assert_eq!(
            p.attempt("-", &web.ip, "udp", 8080)?,
            "err timeout",
            "{who}"
        );
        assert_eq!(
            p.attempt("-", &vip, "tcp", 8080)?,
            "err timeout",
            "{who} via the VIP"
        );
    }
    // Counted where they were dropped (node-2, /web's node), and listed.
    let metrics = cluster.get_text(1, "/metrics")?;
    let denied: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dcnet_policy_denied_total{policy=\"web-in\"} "))
        .context("dcnet_policy_denied_total of web-in")?
        .parse()?;
    assert!(denied >= 6, "{denied}");
    wait_until(
        "the denials in the policy list",
        Duration::from_secs(20),
        || {
            let list: Value =
                serde_json::from_str(&cluster.cli(1, &["policy", "list", "--json"])?)?;
            Ok((list["policies"][0]["denied"].as_u64() >= Some(6)).then_some(()))
        },
    )?;
    let table = cluster.cli(1, &["policy", "list"])?;
    assert!(table.contains("DENIED"), "{table}");

    // node-2's agent killed: its tasks stay as isolated as they were. Restarted: the same
    // rules and flows (pinned), and the last run's programs detached.
    let tasks_cgroup = web.cgroup.parent().context("the tasks' cgroup")?.to_owned();
    assert_eq!(policy_programs(&tasks_cgroup)?.len(), 2);
    let (mut held, first) = Flows::hold(&clients[0].netns, &clients[0].cgroup, "-", &web.ip, 8080)?;
    assert_eq!(first, "ok hello 8080");
    cluster.stop_agent(1, nix::sys::signal::Signal::SIGKILL, Duration::from_secs(3));
    assert_eq!(
        other2.attempt("-", &web.ip, "tcp", 8080)?,
        "err timeout",
        "no agent"
    );
    assert_eq!(
        client2.attempt("-", &web.ip, "tcp", 8080)?,
        "ok",
        "no agent"
    );
    cluster.start_agent(1)?;
    wait_until(
        "node-2's agent back, one set of policy programs",
        Duration::from_secs(30),
        || {
            let view: Value = cluster.get(1, "/v1/policy")?;
            let programs = policy_programs(&tasks_cgroup)?;
            Ok((view["known"] == true && programs.len() == 2).then_some(programs))
        },
    )?;
    assert_eq!(
        other2.attempt("-", &web.ip, "tcp", 8080)?,
        "err timeout",
        "restarted"
    );
    assert_eq!(
        client2.attempt("-", &web.ip, "tcp", 8080)?,
        "ok",
        "restarted"
    );
    assert_eq!(held.echo("still there")?, "echo still there");
    drop(held);

    // node-2 cut off from the others: once it sees no scheduler leading, it keeps enforcing
    // what it had (on the node, /other stays refused and /client let through). Healed, it
    // follows the cluster again.
    cluster.partition(1, true)?;
    wait_until(
        "node-2 to see no scheduler",
        Duration::from_secs(30),
        || {
            let view: Value = cluster.get(1, "/v1/policy")?;
            Ok((view["known"] == false).then_some(()))
        },
    )?;
    assert_eq!(
        other2.attempt("-", &web.ip, "tcp", 8080)?,
        "err timeout",
        "partitioned"
    );
    assert_eq!(
        client2.attempt("-", &web.ip, "tcp", 8080)?,
        "ok",
        "partitioned"
    );
    cluster.partition(1, false)?;
    wait_until(
        "node-2 to see the scheduler again",
        Duration::from_secs(30),
        || {
            let view: Value = cluster.get(1, "/v1/policy")?;
            Ok((view["known"] == true).then_some(()))
        },
    )?;
    until(
        "client-3 across nodes again",
        client3,
        (&web.ip, "tcp", 8080),
        OK,
    )?;
    assert_eq!(
        other3.attempt("-", &web.ip, "tcp", 8080)?,
        "err timeout",
        "healed"
    );

    // /other may leave only to client-2's address, on TCP 8080: egress is checked on the
    // sender's node (node-3 for other-3). A refused datagram fails its send at once (EPERM);
    // a refused SYN is retried by TCP until the connect times out.
    add_policy(
        cluster,
        dir.path(),
        &json!({"id": "other-out", "selector": {"apps": ["/other"]},
                "egress": [{"to": [{"cidr": format!("{}/32", clients[0].ip)}],
                            "ports": [{"protocol": "tcp", "port": 8080}]}]})
        .to_string(),
    )?;
    let took = until(
        "other-out in force",
        other3,
        (&clients[1].ip, "tcp", 8080),
        DENIED,
    )?;
    println!(
        "other-out denied /other on node-3 {} ms after `policy add` returned",
        took.as_millis()
    );
    for (who, p) in [
        ("other on node-2", &mut *other2),
        ("other on node-3", &mut *other3),
    ] {
        assert_eq!(p.attempt("-", &clients[0].ip, "tcp", 8080)?, "ok", "{who}");
        assert_eq!(
            p.attempt("-", &clients[0].ip, "tcp", 8081)?,
            "err timeout",
            "{who}"
        );
        assert_eq!(
            p.attempt("-", &clients[0].ip, "udp", 8080)?,
            "err EPERM",
            "{who}"
        );
        assert_eq!(
            p.attempt("-", &clients[1].ip, "udp", 8080)?,
            "err EPERM",
            "{who}"
        );
        assert_eq!(
            p.attempt("-", &clients[1].ip, "tcp", 8080)?,
            "err timeout",
            "{who}"
        );
    }
    // Not isolated in egress, /client still reaches anyone.
    assert_eq!(client3.attempt("-", &others[0].ip, "udp", 8081)?, "ok");

    // A task is held to its policies from its first packet: /early may send nothing, and its
    // first connect, made the moment it starts, goes nowhere.
    add_policy(
        cluster,
        dir.path(),
        r#"{"id": "early-out", "selector": {"apps": ["/early"]}, "egress": []}"#,
    )?;
    wait_until("early-out on node-2", Duration::from_secs(20), || {
        let view: Value = cluster.get(1, "/v1/policy")?;
        Ok(view["policies"]
            .as_array()
            .is_some_and(|p| p.iter().any(|id| id == "early-out"))
            .then_some(()))
    })?;
    let first_connect = "import os, socket\n\
        s = socket.socket()\n\
        s.settimeout(1)\n\
        try:\n    s.connect((os.environ['TARGET'], 8080)); print('connected')\n\
        except OSError as e:\n    print('refused', e)\n";
    cluster.add_app(
        1,
        &json!({"id": "/early", "cpus": 0.01, "mem": 32,
                "cmd": "python3 -c \"$FIRST\" > first.txt; exec sleep 1000",
                "env": {"FIRST": first_connect, "TARGET": clients[0].ip},
                "constraints": [["hostname", "IS", "node-2"]],
                "networks": [{"mode": "container", "name": "dcos"}]})
        .to_string(),
    )?;
    let first = wait_until("/early's first connect", Duration::from_secs(60), || {
        let rows: Vec<TaskRow> = cluster.get(1, "/v1/tasks")?;
        let Some(row) = rows.iter().find(|r| r.status.app_id == "/early") else {
            return Ok(None);
        };
        let file = cluster.nodes[1]
            .state_dir
            .join("tasks")
            .join(&row.status.task_id)
            .join("first.txt");
        Ok(std::fs::read_to_string(file)
            .ok()
            .filter(|t| t.ends_with('\n')))
    })?;
    assert!(first.starts_with("refused"), "{first}");

    // Removed: open again, on every node.
    cluster.cli(1, &["policy", "remove", "other-out"])?;
    let took = until(
        "other-out removed",
        other3,
        (&clients[1].ip, "tcp", 8080),
        OK,
    )?;
    println!(
        "other-out removal reached node-3 in {} ms",
        took.as_millis()
    );
    assert_eq!(
        other2.attempt("-", &web.ip, "tcp", 8080)?,
        "err timeout",
        "web-in holds"
    );
    cluster.cli(1, &["policy", "remove", "web-in"])?;
    let took = until("web-in removed", other2, (&web.ip, "tcp", 8080), OK)?;
    println!("web-in removal reached node-2 in {} ms", took.as_millis());
    assert_eq!(other3.attempt("-", &web.ip, "udp", 8081)?, "ok");
    assert_eq!(other2.attempt("-", &vip, "tcp", 8080)?, "ok");
    Ok(())
}
