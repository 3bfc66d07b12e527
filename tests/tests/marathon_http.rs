//! The `/v2` API with plain HTTP, as scripts written from Marathon's REST reference call it:
//! every endpoint through an agent's API (which forwards changes to the leader), with the
//! status codes and error bodies Marathon documents — 201 with `Location` on create, 409 for
//! a second create, 404 with a `message` for what is not there, 422 with Marathon's `details`
//! for an invalid definition, 204 for a cleared launch delay. What a change claims is
//! checked against the tasks' cgroups on the agents. marathon-python drives the same API in
//! `marathon_api`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use serde_json::{Value, json};

const API: &str = "http://127.0.0.1:62080";

/// One call through node 2's agent: (status, headers, body).
fn call(
    cluster: &Cluster,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String, String)> {
    let url = format!("{API}{path}");
    let text = body.map(Value::to_string);
    let mut args = vec![
        "-D",
        "-",
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
    ];
    if let Some(text) = &text {
        args.extend(["-d", text.as_str()]);
    }
    args.extend(["-w", "\n%{http_code}", url.as_str()]);
    let out = cluster.curl(1, &args)?;
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, code) = all.rsplit_once('\n').context("curl printed no status")?;
    let status: u16 = code
        .trim()
        .parse()
        .with_context(|| format!("status {code:?}"))?;
    let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or(("", rest));
    Ok((status, headers.to_owned(), body.to_owned()))
}

fn json_of(body: &str) -> Result<Value> {
    serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))
}

/// Calls and checks the status; the body as JSON (null when empty).
fn expect(
    cluster: &Cluster,
    method: &str,
    path: &str,
    body: Option<&Value>,
    status: u16,
) -> Result<Value> {
    let (got, _, text) = call(cluster, method, path, body)?;
    if got != status {
        bail!("{method} {path}: {got}, expected {status}: {text}");
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    json_of(&text)
}

/// Task ids of `app` running in the agents' task cgroups.
fn running(cluster: &Cluster, app: &str) -> BTreeSet<String> {
    let prefix = format!("{}.", app.trim_start_matches('/').replace('/', "_"));
    (0..cluster.nodes.len())
        .flat_map(|i| cluster.running_tasks(i))
        .filter(|t| t.starts_with(&prefix))
        .collect()
}

fn wait_running(cluster: &Cluster, app: &str, n: usize) -> Result<BTreeSet<String>> {
    wait_until(
        &format!("{n} task(s) of {app} in the agents' cgroups"),
        Duration::from_secs(30),
        || {
            let listed = expect(cluster, "GET", &format!("/v2/apps{app}/tasks"), None, 200)?;
            let ids: BTreeSet<String> = listed["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter_map(|t| t["id"].as_str().map(str::to_owned))
                .collect();
            let kernel = running(cluster, app);
            Ok((ids.len() == n && ids == kernel).then_some(ids))
        },
    )
}

#[test]
fn every_endpoint_answers_as_marathon_documents() -> Result<()> {
    let mut options = ClusterOptions::nodes(3);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: vec![if i == 0 { "master" } else { "agent" }.into()],
            ..NodeSpec::default()
        };
    }
    let cluster = Cluster::start(options)?;
    let result = scenario(&cluster);
    cluster.explain(result, 60)
}

fn scenario(cluster: &Cluster) -> Result<()> {
    // The scheduler itself.
    wait_until("a leader", Duration::from_secs(30), || {
        Ok((call(cluster, "GET", "/v2/leader", None)?.0 == 200).then_some(()))
    })?;
    let (status, _, pong) = call(cluster, "GET", "/ping", None)?;
    assert_eq!((status, pong.trim()), (200, "pong"));
    let info = expect(cluster, "GET", "/v2/info", None, 200)?;
    assert!(
        info["name"].is_string() && info["leader"].is_string(),
        "{info}"
    );

    // Apps: invalid, created, created twice, read, missing.
    let bad = expect(
        cluster,
        "POST",
        "/v2/apps",
        Some(&json!({"id": "/raw", "instances": -1})),
        422,
    )?;
    assert_eq!(bad["message"], "Object is not valid", "{bad}");
    let paths: Vec<&str> = bad["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert!(
        paths.contains(&"/cmd") && paths.contains(&"/instances"),
        "{bad}"
    );
    let app = json!({"id": "/raw/web", "cmd": "exec sleep 2001", "instances": 1, "cpus": 0.01, "mem": 8,
                     "labels": {"tier": "web"}});
    let (status, headers, body) = call(cluster, "POST", "/v2/apps", Some(&app))?;
    assert_eq!(status, 201, "{body}");
    assert!(
        headers.to_ascii_lowercase().contains("location: "),
        "{headers}"
    );
    assert!(
        json_of(&body)?["deployments"][0]["id"].is_string(),
        "{body}"
    );
    let again = expect(cluster, "POST", "/v2/apps", Some(&app), 409)?;
    assert!(
        again["message"]
            .as_str()
            .is_some_and(|m| m.contains("/raw/web")),
        "{again}"
    );
    let first = wait_running(cluster, "/raw/web", 1)?;
    let got = expect(
        cluster,
        "GET",
        "/v2/apps/raw/web?embed=app.tasks",
        None,
        200,
    )?;
    assert_eq!(got["app"]["id"], "/raw/web");
    assert_eq!(
        got["app"]["tasks"].as_array().map(Vec::len),
        Some(1),
        "{got}"
    );
    let missing = expect(cluster, "GET", "/v2/apps/raw/nothing", None, 404)?;
    assert!(
        missing["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "{missing}"
    );
    for (query, n) in [
        ("?id=raw", 1),
        ("?cmd=sleep%202001", 1),
        ("?label=tier==web", 1),
        ("?label=tier==db", 0),
    ] {
        let list = expect(cluster, "GET", &format!("/v2/apps{query}"), None, 200)?;
        assert_eq!(
            list["apps"].as_array().map(Vec::len),
            Some(n),
            "{query}: {list}"
        );
    }

    // Changes: scale by PUT and PATCH, versions, rollback, restart.
    let put = expect(
        cluster,
        "PUT",
        "/v2/apps/raw/web",
        Some(&json!({"instances": 2})),
        200,
    )?;
    assert!(put["deploymentId"].is_string(), "{put}");
    let two = wait_running(cluster, "/raw/web", 2)?;
    assert!(two.is_superset(&first), "a scale keeps the running task");
    expect(
        cluster,
        "PATCH",
        "/v2/apps/raw/web",
        Some(&json!({"cmd": "exec sleep 2002"})),
        200,
    )?;
    let versions = expect(cluster, "GET", "/v2/apps/raw/web/versions", None, 200)?;
    let list: Vec<&str> = versions["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(list.len(), 2, "{versions}");
    let oldest = list.iter().min().copied().context("a version")?.to_owned();
    let old = expect(
        cluster,
        "GET",
        &format!("/v2/apps/raw/web/versions/{oldest}"),
        None,
        200,
    )?;
    assert_eq!(old["cmd"], "exec sleep 2001", "{old}");
    expect(
        cluster,
        "GET",
        "/v2/apps/raw/web/versions/1999-01-01T00:00:00.000Z",
        None,
        404,
    )?;
    expect(
        cluster,
        "PUT",
        "/v2/apps/raw/web",
        Some(&json!({"version": oldest})),
        200,
    )?;
    wait_until("the rollback's tasks", Duration::from_secs(30), || {
        let got = expect(cluster, "GET", "/v2/apps/raw/web", None, 200)?;
        Ok(
            (got["app"]["cmd"] == "exec sleep 2001" && got["app"]["deployments"] == json!([]))
                .then_some(()),
        )
    })?;
    let before = wait_running(cluster, "/raw/web", 2)?;
    let restarted = expect(cluster, "POST", "/v2/apps/raw/web/restart", None, 200)?;
    assert!(restarted["deploymentId"].is_string(), "{restarted}");
    wait_until("every task replaced", Duration::from_secs(30), || {
        let now = wait_running(cluster, "/raw/web", 2)?;
        Ok(now.is_disjoint(&before).then_some(()))
    })?;

    // Deployments and the queue.
    let deployments = expect(cluster, "GET", "/v2/deployments", None, 200)?;
    assert!(deployments.is_array(), "{deployments}");
    expect(
        cluster,
        "DELETE",
        "/v2/deployments/no-such-deployment",
        None,
        404,
    )?;
    let queue = expect(cluster, "GET", "/v2/queue", None, 200)?;
    assert!(queue["queue"].is_array(), "{queue}");
    expect(cluster, "DELETE", "/v2/queue/raw/web/delay", None, 204)?;

    // Tasks: list, kill with scale, bulk delete refusing an unknown id.
    let tasks = expect(cluster, "GET", "/v2/tasks", None, 200)?;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(2), "{tasks}");
    let unknown = expect(
        cluster,
        "POST",
        "/v2/tasks/delete",
        Some(&json!({"ids": ["raw_web.nope"]})),
        404,
    )?;
    assert!(unknown["message"].is_string(), "{unknown}");
    let victim = wait_running(cluster, "/raw/web", 2)?
        .into_iter()
        .next()
        .context("a task")?;
    let killed = expect(
        cluster,
        "DELETE",
        &format!("/v2/apps/raw/web/tasks/{victim}?scale=true"),
        None,
        200,
    )?;
    assert!(killed["deploymentId"].is_string(), "{killed}");
    let left = wait_running(cluster, "/raw/web", 1)?;
    assert!(!left.contains(&victim));

    // Groups: create, conflict, read, versions, scale, remove.
    let group = json!({"id": "/rawg", "apps": [{"id": "a", "cmd": "exec sleep 2003", "cpus": 0.01, "mem": 8}]});
    expect(cluster, "POST", "/v2/groups", Some(&group), 201)?;
    expect(cluster, "POST", "/v2/groups", Some(&group), 409)?;
    let read = expect(cluster, "GET", "/v2/groups/rawg", None, 200)?;
    assert_eq!(read["apps"][0]["id"], "/rawg/a", "{read}");
    let gv = expect(cluster, "GET", "/v2/groups/rawg/versions", None, 200)?;
    assert_eq!(gv.as_array().map(Vec::len), Some(1), "{gv}");
    expect(cluster, "GET", "/v2/groups/nothing", None, 404)?;
    expect(
        cluster,
        "PUT",
        "/v2/groups/rawg",
        Some(&json!({"scaleBy": 2})),
        200,
    )?;
    wait_running(cluster, "/rawg/a", 2)?;
    expect(cluster, "DELETE", "/v2/groups/rawg", None, 200)?;

    // Events and subscribers.
    let subscribers = expect(cluster, "GET", "/v2/eventSubscriptions", None, 200)?;
    assert_eq!(subscribers, json!({"callbackUrls": []}));
    expect(
        cluster,
        "POST",
        "/v2/eventSubscriptions?callbackUrl=ftp://x/",
        None,
        422,
    )?;
    let header = "Accept: text/event-stream";
    let out = cluster.curl(
        1,
        &["-N", "-m", "2", "-H", header, &format!("{API}/v2/events")],
    )?;
    let stream = String::from_utf8_lossy(&out.stdout);
    assert!(
        stream.starts_with("event: event_stream_attached"),
        "{stream}"
    );

    // Removal: the app's tasks leave the agents.
    expect(cluster, "DELETE", "/v2/apps/raw/web", None, 200)?;
    expect(cluster, "DELETE", "/v2/apps/raw/web", None, 404)?;
    wait_until("the tasks to stop", Duration::from_secs(30), || {
        Ok(
            (running(cluster, "/raw/web").is_empty() && running(cluster, "/rawg/a").is_empty())
                .then_some(()),
        )
    })?;
    Ok(())
}
