//! Marathon's `/v2` API driven by a real Marathon client library (marathon-python, as users
//! script Marathon), through an agent's API and at the leading scheduler over TLS, in a
//! 4-node namespace cluster: node 1 is the master, nodes 2 and 3 run tasks (zones z1, z2),
//! node 4 is a public agent (`slave_public`), which only apps that accept it use.
//! Every call goes through the library's models, which fail on a key Marathon would not send;
//! what a call claims is checked against the tasks' cgroups on the agents (the processes that
//! really run).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_tests::clients::MarathonPy;
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use serde_json::Value;

const AGENTS: [usize; 3] = [1, 2, 3];
const PUBLIC: usize = 3;

fn start() -> Result<Cluster> {
    let mut options = ClusterOptions::nodes(4);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: vec![if i == 0 { "master" } else { "agent" }.into()],
            region: Some("r1".into()),
            zone: Some(format!("z{i}")),
            launcher_config: if i == PUBLIC {
                "role = \"slave_public\"\n".into()
            } else {
                String::new()
            },
            ..NodeSpec::default()
        };
    }
    Cluster::start(options)
}

/// The tasks that run on the agents, as their cgroups have them.
fn running(cluster: &Cluster) -> BTreeSet<String> {
    AGENTS
        .iter()
        .flat_map(|i| cluster.running_tasks(*i))
        .collect()
}

/// The tasks that run on the public agent.
fn public_tasks(cluster: &Cluster) -> BTreeSet<String> {
    cluster.running_tasks(PUBLIC)
}

/// Running task ids of `app` as the client lists them, once they are `n`, all running,
/// and the same set runs on the agents.
fn wait_tasks(cluster: &Cluster, py: &MarathonPy, app: &str, n: usize) -> Result<BTreeSet<String>> {
    wait_until(
        &format!("{n} running task(s) of {app}, listed and in the agents' cgroups"),
        Duration::from_secs(60),
        || {
            let tasks = py.step(&["tasks", app])?;
            let listed: BTreeSet<String> = tasks
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter_map(|t| t["id"].as_str().map(str::to_owned))
                .collect();
            // Task ids are the app id's path, `/` as `_`, then a dot.
            let prefix = format!("{}.", app.trim_start_matches('/').replace('/', "_"));
            let real: BTreeSet<String> = running(cluster)
                .into_iter()
                .filter(|id| id.starts_with(&prefix))
                .collect();
            Ok(
                (listed.len() == n && tasks.as_array().map(Vec::len) == Some(n) && listed == real)
                    .then_some(listed),
            )
        },
    )
}

/// Waits until no deployment is under way, as the client lists them.
fn no_deployment(py: &MarathonPy, what: &str, secs: u64) -> Result<()> {
    wait_until(what, Duration::from_secs(secs), || {
        Ok(py
            .step(&["deployments"])?
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(()))
    })
}

fn str_of<'v>(v: &'v Value, key: &str) -> Result<&'v str> {
    v[key]
        .as_str()
        .with_context(|| format!("no string {key:?} in {v}"))
}

#[test]
fn a_marathon_client_library_works_unchanged() -> Result<()> {
    dcnet_tests::cluster::require_root()?;
    let cluster = start()?;
    let via_agent = MarathonPy::new(&cluster, 1, "http://127.0.0.1:62080", None)?;

    // The scheduler itself.
    let server = wait_until("a leader", Duration::from_secs(30), || {
        Ok(via_agent.step(&["server"]).ok())
    })?;
    assert_eq!(server["ping"], "pong", "{server}");
    assert_eq!(server["leader"], server["info_leader"], "{server}");
    let leader = str_of(&server, "leader")?.to_owned();
    // The agent's metrics in Marathon's JSON shape (Prometheus text for scrapers).
    let metrics = via_agent.step(&["metrics"])?;
    assert_eq!(
        metrics["keys"],
        serde_json::json!([
            "counters",
            "gauges",
            "histograms",
            "meters",
            "timers",
            "version"
        ]),
        "{metrics}"
    );
    assert!(metrics["counters"].as_u64().unwrap_or(0) > 0, "{metrics}");

    // Create: the answer parses as an app with its deployment; tasks start on the agents.
    let created = via_agent.step(&["create", "/pyweb", "exec sleep 1001", "2", "web"])?;
    assert_eq!(created["instances"], 2, "{created}");
    assert_eq!(created["deployments"].as_array().map(Vec::len), Some(1));
    let first = wait_tasks(&cluster, &via_agent, "/pyweb", 2)?;
    let app = via_agent.step(&["app", "/pyweb"])?;
    assert_eq!(app["tasks_running"], 2, "{app}");
    for t in app["tasks"]
        .as_array()
        .context("get_app embeds the tasks")?
    {
        let host = str_of(t, "host")?;
        assert!(
            host.parse::<std::net::IpAddr>().is_ok(),
            "host is the agent's address: {t}"
        );
        assert!(t["started"] == true && t["staged"] == true, "{t}");
        assert_eq!(t["region"], "r1", "{t}");
        assert!(t["zone"] == "z1" || t["zone"] == "z2", "{t}");
        assert_eq!(t["health"], serde_json::json!([true]), "{t}");
    }

    // Filters and embeds.
    via_agent.step(&["create", "/pydb", "exec sleep 1002", "1", "db"])?;
    wait_tasks(&cluster, &via_agent, "/pydb", 1)?;
    let f = via_agent.step(&["filters"])?;
    assert_eq!(f["web"], serde_json::json!(["/pyweb"]), "{f}");
    assert_eq!(f["not_web"], serde_json::json!(["/pydb"]), "{f}");
    assert_eq!(f["in"].as_array().map(Vec::len), Some(2), "{f}");
    assert_eq!(f["id"], serde_json::json!(["/pyweb"]), "{f}");
    assert_eq!(f["cmd"], serde_json::json!(["/pyweb"]), "{f}");
    assert_eq!(f["embedded"]["/pyweb"], 2, "{f}");
    assert_eq!(f["plain"]["/pyweb"], 0, "tasks only when embedded: {f}");

    // Scale up by one, then kill one task scaling down: the same task set as before.
    via_agent.step(&["scale", "/pyweb", "1"])?;
    let three = wait_tasks(&cluster, &via_agent, "/pyweb", 3)?;
    let added: Vec<&String> = three.difference(&first).collect();
    let [added] = added[..] else {
        bail!("scaling up by one added {added:?}");
    };
    let killed = via_agent.step(&["kill-task", "/pyweb", added, "true"])?;
    assert!(killed["deploymentId"].is_string(), "{killed}");
    assert_eq!(wait_tasks(&cluster, &via_agent, "/pyweb", 2)?, first);
    assert_eq!(via_agent.step(&["app", "/pyweb"])?["instances"], 2);

    // PATCH through the agent (plain curl, as a script from Marathon's docs would).
    let out = cluster.curl(
        1,
        &[
            "-w",
            "\n%{http_code}",
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"instances": 2}"#,
            "http://127.0.0.1:62080/v2/apps/pyweb",
        ],
    )?;
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.ends_with("200") && answer.contains("deploymentId"),
        "{answer}"
    );
    assert_eq!(
        wait_tasks(&cluster, &via_agent, "/pyweb", 2)?,
        first,
        "a PATCH that changes nothing replaces nothing"
    );

    // Kill one without scaling: another replaces it.
    let victim = first.iter().next().context("a task")?.clone();
    let out = via_agent.step(&["kill-given", &victim, "false"])?;
    assert_eq!(out["ok"], true, "{out}");
    let replaced = wait_until(
        "the killed task to be replaced",
        Duration::from_secs(60),
        || {
            let now = wait_tasks(&cluster, &via_agent, "/pyweb", 2)?;
            Ok((!now.contains(&victim)).then_some(now))
        },
    )?;
    assert_eq!(replaced.intersection(&first).count(), 1, "{replaced:?}");
    let unknown = via_agent.step(&["kill-unknown"])?;
    assert_eq!(unknown["refused"], true, "{unknown}");
    assert_eq!(wait_tasks(&cluster, &via_agent, "/pyweb", 2)?, replaced);

    // A new command is a new version; versions list both, the first reads back; a rollback
    // brings its command back.
    let before = via_agent.step(&["app", "/pyweb"])?;
    via_agent.step(&["update", "/pyweb", "exec sleep 1003"])?;
    let updated = wait_until(
        "version 2's tasks to replace version 1's",
        Duration::from_secs(60),
        || {
            let now = wait_tasks(&cluster, &via_agent, "/pyweb", 2)?;
            Ok(now.is_disjoint(&replaced).then_some(now))
        },
    )?;
    let app = via_agent.step(&["app", "/pyweb"])?;
    assert_ne!(app["config_version"], before["config_version"], "{app}");
    let versions = via_agent.step(&["versions", "/pyweb"])?;
    assert_eq!(versions["first"]["cmd"], "exec sleep 1001", "{versions}");
    let first_version = versions["versions"][0]
        .as_str()
        .context("a version")?
        .to_owned();
    via_agent.step(&["rollback", "/pyweb", &first_version])?;
    let rolled = wait_until("the rollback's tasks", Duration::from_secs(60), || {
        let now = wait_tasks(&cluster, &via_agent, "/pyweb", 2)?;
        Ok(now.is_disjoint(&updated).then_some(now))
    })?;
    assert_eq!(
        via_agent.step(&["app", "/pyweb"])?["cmd"],
        "exec sleep 1001"
    );

    // A change no agent can take stays a deployment under way, with the app pointing at it;
    // deleting the deployment rolls it back (the tasks never stopped), forcing only forgets.
    no_deployment(&via_agent, "no deployment under way", 60)?;
    let stuck = via_agent.step(&["stuck", "/pyweb", "exec sleep 1004"])?;
    let stuck_id = str_of(&stuck, "deploymentId")?.to_owned();
    let listed = via_agent.step(&["deployments"])?;
    assert_eq!(
        listed,
        serde_json::json!([{"id": stuck_id, "apps": ["/pyweb"],
                            "actions": [["RestartApplication", "/pyweb"]], "steps": 1}]),
        "{listed}"
    );
    assert_eq!(
        via_agent.step(&["app", "/pyweb"])?["deployments"],
        serde_json::json!([stuck_id])
    );
    let back = via_agent.step(&["delete-deployment", &stuck_id, "false"])?;
    assert!(back["deploymentId"].is_string(), "{back}");
    no_deployment(&via_agent, "the rollback to finish", 60)?;
    assert_eq!(
        via_agent.step(&["app", "/pyweb"])?["cmd"],
        "exec sleep 1001"
    );
    assert_eq!(
        wait_tasks(&cluster, &via_agent, "/pyweb", 2)?,
        rolled,
        "a rollback of a change that never ran stops nothing"
    );
    let stuck = via_agent.step(&["stuck", "/pyweb", "exec sleep 1005"])?;
    via_agent.step(&["delete-deployment", str_of(&stuck, "deploymentId")?, "true"])?;
    assert_eq!(via_agent.step(&["deployments"])?, serde_json::json!([]));
    assert_eq!(
        via_agent.step(&["app", "/pyweb"])?["cmd"],
        "exec sleep 1005",
        "forced: the app stays as changed"
    );
    // Back to the first version: its tasks are the ones running.
    via_agent.step(&["rollback", "/pyweb", &first_version])?;
    no_deployment(&via_agent, "the app back at its first version", 60)?;
    assert_eq!(wait_tasks(&cluster, &via_agent, "/pyweb", 2)?, rolled);

    // Restart: every task replaced, same definition.
    via_agent.step(&["restart", "/pyweb"])?;
    wait_until("the restart's tasks", Duration::from_secs(60), || {
        let now = wait_tasks(&cluster, &via_agent, "/pyweb", 2)?;
        Ok(now.is_disjoint(&rolled).then_some(now))
    })?;

    // The event bus through the agent: a scale's deployment, the new task's status updates
    // and its first health result arrive as events the library parses.
    let seen = via_agent.step(&["events", "/pyweb"])?;
    let kinds: Vec<&str> = seen
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str())
        .collect();
    for kind in [
        "event_stream_attached",
        "api_post_event",
        "deployment_info",
        "status_update_event",
        "health_status_changed_event",
        "deployment_success",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {seen}");
    }
    assert!(
        seen.as_array()
            .into_iter()
            .flatten()
            .any(|e| e["status"] == "TASK_RUNNING" && e["app"] == "/pyweb"),
        "{seen}"
    );
    wait_tasks(&cluster, &via_agent, "/pyweb", 3)?;

    // HTTP callback subscribers: the leader posts the bus's events to a listener on node 2.
    let node2 = cluster.nodes[1].address.to_string();
    let hooks = via_agent.step(&["callbacks", "/pyweb", &node2])?;
    let url = str_of(&hooks, "url")?;
    assert_eq!(
        hooks["subscribed"]["eventType"], "subscribe_event",
        "{hooks}"
    );
    assert_eq!(hooks["listed"], serde_json::json!([url]), "{hooks}");
    let posted: Vec<&str> = hooks["received"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str())
        .collect();
    for kind in ["api_post_event", "deployment_info", "deployment_success"] {
        assert!(posted.contains(&kind), "{kind} posted: {hooks}");
    }
    assert_eq!(
        hooks["deleted"]["eventType"], "unsubscribe_event",
        "{hooks}"
    );
    assert_eq!(hooks["after"], serde_json::json!([]), "{hooks}");
    wait_tasks(&cluster, &via_agent, "/pyweb", 4)?;

    // At the leader over TLS: a batch change of both apps, read back as sent, then the queue.
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cluster.ca_pem()?)?;
    let at_leader = MarathonPy::new(&cluster, 1, &format!("https://{leader}"), Some(&ca))?;
    at_leader.step(&["batch", "/pyweb", "/pydb"])?;
    wait_tasks(&cluster, &at_leader, "/pyweb", 1)?;
    wait_tasks(&cluster, &at_leader, "/pydb", 1)?;
    let queue = at_leader.step(&["queue"])?;
    assert_eq!(queue, serde_json::json!([]), "nothing waits: {queue}");
    assert_eq!(at_leader.step(&["reset-delay", "/pyweb"])?["ok"], true);
    let all = at_leader.step(&["tasks"])?;
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");

    // Groups: the folders of app ids, created, read, scaled and removed as one.
    let made = via_agent.step(&["group-create", "/pygroup", "a", "b"])?;
    assert!(made["deploymentId"].is_string(), "{made}");
    wait_tasks(&cluster, &via_agent, "/pygroup/a", 1)?;
    wait_tasks(&cluster, &via_agent, "/pygroup/b", 1)?;
    let group = via_agent.step(&["group", "/pygroup"])?;
    assert_eq!(
        group["apps"],
        serde_json::json!([["/pygroup/a", 1], ["/pygroup/b", 1]]),
        "{group}"
    );
    assert_eq!(
        group["root_groups"],
        serde_json::json!(["/pygroup"]),
        "{group}"
    );
    // Group versions: a change of one app is a new version of the group; rolling the group
    // back to its first version puts that app's definition of then back.
    let rolled = via_agent.step(&["group-rollback", "/pygroup", "/pygroup/b"])?;
    assert_eq!(
        rolled["versions"].as_array().map(Vec::len),
        Some(2),
        "{rolled}"
    );
    assert!(rolled["rolled"]["deploymentId"].is_string(), "{rolled}");
    assert_eq!(
        rolled["cmd"], "exec sleep 1001",
        "b's first definition: {rolled}"
    );
    wait_until("b's rolled back task", Duration::from_secs(30), || {
        let app = via_agent.step(&["app", "/pygroup/b"])?;
        Ok(
            (app["tasks_running"] == 1 && app["deployments"] == serde_json::json!([]))
                .then_some(()),
        )
    })?;
    via_agent.step(&["group-scale", "/pygroup", "2"])?;
    wait_tasks(&cluster, &via_agent, "/pygroup/a", 2)?;
    wait_tasks(&cluster, &via_agent, "/pygroup/b", 2)?;
    via_agent.step(&["group-delete", "/pygroup"])?;
    wait_until("the group's tasks to stop", Duration::from_secs(30), || {
        Ok((!running(&cluster)
            .iter()
            .any(|id| id.starts_with("pygroup_")))
        .then_some(()))
    })?;

    // A readiness check holds the deployment until the task answers it (3 s after start).
    via_agent.step(&["create-readiness", "/pyready"])?;
    let ready_task = wait_tasks(&cluster, &via_agent, "/pyready", 1)?;
    let under_way = via_agent.step(&["deployments"])?;
    assert!(
        under_way.as_array().is_some_and(|d| d
            .iter()
            .any(|d| d["apps"] == serde_json::json!(["/pyready"]))),
        "running but not ready: still deploying: {under_way}"
    );
    no_deployment(&via_agent, "the readiness check to pass", 30)?;
    assert_eq!(wait_tasks(&cluster, &via_agent, "/pyready", 1)?, ready_task);
    via_agent.step(&["delete", "/pyready"])?;

    // Dependencies order a deployment: web is staged only once db runs and is healthy.
    let deps = via_agent.step(&["group-with-dependency", "/pydeps"])?;
    assert_eq!(
        deps["steps"],
        serde_json::json!([
            [["StartApplication", "/pydeps/db"]],
            [["StartApplication", "/pydeps/web"]]
        ]),
        "a step per dependency level: {deps}"
    );
    assert_eq!(
        (deps["current_step"].as_u64(), deps["total_steps"].as_u64()),
        (Some(1), Some(2)),
        "{deps}"
    );
    wait_tasks(&cluster, &via_agent, "/pydeps/db", 1)?;
    let web = wait_tasks(&cluster, &via_agent, "/pydeps/web", 1)?;
    let tasks = via_agent.step(&["tasks"])?;
    let find = |app: &str| {
        tasks
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["app_id"] == app)
            .cloned()
            .unwrap_or_default()
    };
    let (db, web_task) = (find("/pydeps/db"), find("/pydeps/web"));
    assert_eq!(db["health"], serde_json::json!([true]), "{db}");
    let db_started = str_of(&db, "started_at")?;
    let web_staged = str_of(&web_task, "staged_at")?;
    // 3 s of db's health check lie between them.
    assert!(
        web_staged > db_started,
        "web {web_staged} staged before db started {db_started}"
    );
    assert_eq!(web.len(), 1);
    via_agent.step(&["group-delete", "/pydeps"])?;

    // fetch: an archive extracted and a script made executable in the sandbox before the
    // task starts (its command needs both); a URI that cannot be fetched fails the task,
    // and the app says why.
    let files = tempfile::tempdir()?;
    std::fs::create_dir(files.path().join("content"))?;
    std::fs::write(files.path().join("content/data.txt"), "hello")?;
    std::fs::write(files.path().join("tool"), "#!/bin/sh\nexit 0\n")?;
    let tarball = files.path().join("bundle.tgz");
    let made = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(files.path().join("content"))
        .arg("data.txt")
        .status()?;
    assert!(made.success());
    let uri = |p: &std::path::Path| format!("file://{}", p.display());
    via_agent.step(&[
        "create-fetching",
        "/pyfetch",
        &uri(&tarball),
        &uri(&files.path().join("tool")),
    ])?;
    wait_tasks(&cluster, &via_agent, "/pyfetch", 1)?;
    via_agent.step(&[
        "create-fetching",
        "/pynofetch",
        "file:///nonexistent/bundle.tgz",
    ])?;
    let why = wait_until(
        "the failed fetch to be told",
        Duration::from_secs(60),
        || {
            Ok(via_agent.step(&["last-failure", "/pynofetch"])?["message"]
                .as_str()
                .map(str::to_owned))
        },
    )?;
    assert!(
        why.contains("fetching file:///nonexistent/bundle.tgz"),
        "{why}"
    );
    via_agent.step(&["delete", "/pyfetch"])?;
    via_agent.step(&["delete", "/pynofetch"])?;

    // Nothing so far ran on the public agent; an app that accepts only it runs there.
    assert!(
        public_tasks(&cluster).is_empty(),
        "a private app ran on the public agent: {:?}",
        public_tasks(&cluster)
    );
    via_agent.step(&["create-public", "/pypublic"])?;
    wait_tasks(&cluster, &via_agent, "/pypublic", 2)?;
    let on_public = public_tasks(&cluster);
    assert_eq!(on_public.len(), 2, "{on_public:?}");
    assert!(
        on_public.iter().all(|t| t.starts_with("pypublic.")),
        "{on_public:?}"
    );
    via_agent.step(&["delete", "/pypublic"])?;

    // Remove both: their tasks stop, and the app is gone for the client.
    at_leader.step(&["delete", "/pyweb"])?;
    via_agent.step(&["delete", "/pydb"])?;
    wait_until("every task to stop", Duration::from_secs(30), || {
        Ok(running(&cluster).is_empty().then_some(()))
    })?;
    assert_eq!(via_agent.step(&["missing", "/pyweb"])?["refused"], true);
    Ok(())
}
