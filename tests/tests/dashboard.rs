//! The web dashboard in a real browser: Debian's Chromium, headless, driven by Playwright,
//! inside an agent's namespace (where an operator's SSH tunnel would land), against a
//! namespace cluster. Every view's content is checked against the API it reads, a scale
//! change must appear without a reload, and each view is saved as a screenshot under
//! `target/test-artifacts/dashboard/`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_agent::api::TaskRow;
use dcnet_agent::facts::launched::TaskState;
use dcnet_tests::clients::artifacts_dir;
use dcnet_tests::cluster::{API_PORT, OVERLAY_AND_LB, node_address};
use dcnet_tests::{Browser, Cluster, ClusterOptions, FakeMaster, NodeSpec, TestCgroup, wait_until};
use serde_json::{Value, json};

const WEB: &str = r#"{
  "id": "/web",
  "cmd": "echo $MESOS_TASK_ID > id && exec python3 -m http.server $PORT0",
  "instances": 1,
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

fn dashboard_url() -> String {
    format!("http://127.0.0.1:{API_PORT}/")
}

/// Node `i`'s healthy running `/web` tasks.
fn web_tasks(cluster: &Cluster, i: usize) -> Result<Vec<TaskRow>> {
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

/// Waits until node `i` has `n` healthy `/web` tasks and a VIP with `n` backends.
fn wait_for_web(cluster: &Cluster, i: usize, n: usize) -> Result<Vec<TaskRow>> {
    wait_until(
        &format!("{n} healthy /web tasks behind the VIP on node {}", i + 1),
        Duration::from_secs(60),
        || {
            let rows = web_tasks(cluster, i)?;
            let vips: Vec<Value> = cluster.get(i, "/v1/vips")?;
            let backends = vips
                .iter()
                .find(|v| v["name"] == "web.marathon.l4lb.thisdcos.directory")
                .map_or(0, |v| v["backends"].as_array().map_or(0, Vec::len));
            Ok((rows.len() == n && backends == n).then_some(rows))
        },
    )
}

/// Shows view `hash` and waits until it has drawn (its table `table` is there).
fn show(browser: &mut Browser, hash: &str, table: &str) -> Result<()> {
    browser.eval(&format!("location.hash = {}", json!(hash)))?;
    browser.wait(&format!("#view[data-view] {table}"))?;
    Ok(())
}

fn shot(browser: &mut Browser, name: &str) -> Result<()> {
    let path = artifacts_dir("dashboard")?.join(format!("{name}.png"));
    browser.screenshot(&path)?;
    println!("screenshot: {}", path.display());
    Ok(())
}

/// The rows of `table` in the browser, waiting until `ok` accepts them (the page redraws
/// every 2 s; the API may have moved on since the last draw).
fn wait_for_rows(
    browser: &mut Browser,
    what: &str,
    table: &str,
    mut ok: impl FnMut(&[Vec<String>]) -> Result<bool>,
) -> Result<Vec<Vec<String>>> {
    wait_until(what, Duration::from_secs(30), || {
        let rows = browser.table(table)?;
        Ok(ok(&rows)?.then_some(rows))
    })
}

fn column(rows: &[Vec<String>], i: usize) -> BTreeSet<String> {
    rows.iter().filter_map(|r| r.get(i).cloned()).collect()
}

#[test]
fn every_view_shows_what_the_api_says_and_follows_a_scale_change() -> Result<()> {
    dcnet_tests::cluster::require_root()?;
    let zones = ["z0", "z1", "z2"];
    let mut options = ClusterOptions::nodes(3);
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
    let result = views(&cluster);
    cluster.explain(result, 40)
}

fn views(cluster: &Cluster) -> Result<()> {
    cluster.wait_for_overlay(&[0, 1, 2], 2)?;
    cluster.add_app(1, WEB)?;
    let rows = wait_for_web(cluster, 1, 1)?;

    // The page and its assets are open; the data is not.
    let page = cluster.run_in(
        1,
        Path::new("/usr/bin/curl"),
        &["-s", "-i", &format!("{}dashboard/", dashboard_url())],
    )?;
    let page = String::from_utf8_lossy(&page.stdout).to_lowercase();
    assert!(page.starts_with("http/1.1 200"), "{page}");
    assert!(page.contains("content-security-policy: default-src 'none'; script-src 'self'"));
    for path in [
        "/v1/dns/lookup?name=web.marathon.mesos",
        "/v1/mesos/tasks",
        "/v1/tasks",
    ] {
        let url = format!("http://127.0.0.1:{API_PORT}{path}");
        assert_eq!(
            cluster.http_status(1, &[&url])?,
            "401",
            "{path} without a credential"
        );
    }

    // A read-only viewer: a token, and a user with a password.
    let token = cluster.token_with(
        dcnet_auth::Role::Read,
        "viewer-token",
        Duration::from_secs(3600),
    )?;
    cluster.put(
        1,
        "/v1/auth/users/viewer",
        r#"{"role": "read", "password": "correct horse"}"#,
    )?;

    let mut browser = Browser::start(cluster, 1)?;
    let loaded = Instant::now();
    browser.goto(&dashboard_url())?;
    browser.wait("#login")?;
    println!("login page shown {:?} after goto began", loaded.elapsed());
    assert_eq!(browser.eval("location.pathname")?, "/dashboard/");
    assert_eq!(
        browser.eval("document.querySelectorAll('#view table').length")?,
        0
    );
    shot(&mut browser, "login")?;

    // A wrong token is refused with the API's words; the right one opens the overview.
    browser.fill("#login-token", "e30.e30.c2ln")?;
    browser.click("#login-form button[type=submit]")?;
    wait_until("the refusal to show", Duration::from_secs(10), || {
        Ok((!browser.text("#login-error")?.is_empty()).then_some(()))
    })?;
    browser.fill("#login-token", &token)?;
    browser.click("#login-form button[type=submit]")?;
    browser.wait("#view table#nodes")?;
    assert_eq!(browser.text("#who")?, "viewer-token (read)");

    // Overview: the membership table as /v1/nodes has it.
    let members = cluster.members(1)?;
    let nodes = wait_for_rows(
        &mut browser,
        "the nodes table to list every node up",
        "#nodes",
        |rows| Ok(rows.len() == members.len() && rows.iter().all(|r| r[5] == "up")),
    )?;
    let names: BTreeSet<String> = members.iter().filter_map(|m| m.name.clone()).collect();
    assert_eq!(column(&nodes, 0), names);
    let zones: BTreeSet<String> = members.iter().filter_map(|m| m.zone.clone()).collect();
    assert_eq!(column(&nodes, 3), zones);
    shot(&mut browser, "overview")?;

    // Apps and tasks.
    show(&mut browser, "#/apps", "table#tasks")?;
    let app = |rows: &[Vec<String>]| rows.iter().find(|r| r[0] == "/web").cloned();
    let apps = wait_for_rows(
        &mut browser,
        "/web with one running task",
        "#apps",
        |rows| Ok(app(rows).is_some_and(|r| r[1] == "1" && r[2] == "1")),
    )?;
    assert_eq!(apps.len(), 1, "{apps:?}");
    let tasks = browser.table("#tasks")?;
    let ids: BTreeSet<String> = rows.iter().map(|r| r.status.task_id.clone()).collect();
    assert_eq!(column(&tasks, 1), ids);
    assert_eq!(
        column(&tasks, 4),
        rows.iter().map(|r| r.node.clone()).collect()
    );
    shot(&mut browser, "apps")?;

    // A scale change from the CLI appears without a reload.
    browser.eval("window.dcnetNotReloaded = true")?;
    cluster.cli(1, &["app", "scale", "/web", "2"])?;
    let rows = wait_for_web(cluster, 1, 2)?;
    let ids: BTreeSet<String> = rows.iter().map(|r| r.status.task_id.clone()).collect();
    let shown = wait_for_rows(
        &mut browser,
        "two /web tasks on the page",
        "#tasks",
        |tasks| Ok(column(tasks, 1) == ids),
    )?;
    assert_eq!(
        browser.eval("window.dcnetNotReloaded === true")?,
        true,
        "the page reloaded"
    );
    let ips: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.status.ip.map(|ip| ip.to_string()))
        .collect();
    assert_eq!(column(&shown, 6), ips);
    wait_for_rows(
        &mut browser,
        "/web with two running tasks",
        "#apps",
        |rows| Ok(app(rows).is_some_and(|r| r[1] == "2" && r[2] == "2")),
    )?;
    shot(&mut browser, "apps-scaled")?;

    // VIPs: the VIP, its backends with their zones, as /v1/vips on this node.
    let vips: Vec<Value> = cluster.get(1, "/v1/vips")?;
    let web = vips
        .iter()
        .find(|v| v["name"] == "web.marathon.l4lb.thisdcos.directory")
        .context("no web VIP")?;
    let backends: BTreeSet<String> = web["backends"]
        .as_array()
        .context("backends")?
        .iter()
        .map(|b| format!("→ {}", b["addr"].as_str().unwrap_or_default()))
        .collect();
    show(&mut browser, "#/vips", "table#vips")?;
    let vip_rows = wait_for_rows(&mut browser, "the VIP and both backends", "#vips", |rows| {
        Ok(column(rows, 0).is_superset(&backends))
    })?;
    let vip_row = vip_rows
        .iter()
        .find(|r| r[0] == web["vip"].as_str().unwrap_or_default())
        .context("the VIP's row")?;
    assert_eq!(vip_row[1], "tcp");
    assert_eq!(vip_row[2], "web.marathon.l4lb.thisdcos.directory");
    for b in web["backends"].as_array().context("backends")? {
        let shown = vip_rows
            .iter()
            .find(|r| r[0] == format!("→ {}", b["addr"].as_str().unwrap_or_default()))
            .context("a backend's row")?;
        assert_eq!(shown[1], b["state"].as_str().unwrap_or_default());
        assert_eq!(
            shown[2],
            format!("r1 / {}", b["zone"].as_str().unwrap_or_default())
        );
        assert_eq!(shown[5], format!("weight {}", b["weight"]));
    }
    shot(&mut browser, "vips")?;

    // Overlay: this node's subnets and its peers.
    let overlay: Value = cluster.get(1, "/v1/overlay")?;
    show(&mut browser, "#/overlay", "table#peers")?;
    let networks = browser.table("#networks")?;
    let dcos = overlay["networks"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "dcos"))
        .context("no dcos network")?;
    let row = networks
        .iter()
        .find(|r| r[0] == "dcos")
        .context("dcos row")?;
    assert_eq!(row[1], dcos["subnet"].as_str().unwrap_or_default());
    let peers = browser.table("#peers")?;
    let peer_underlays: BTreeSet<String> = overlay["peers"]
        .as_array()
        .context("peers")?
        .iter()
        .map(|p| p["underlay"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(column(&peers, 1), peer_underlays);
    assert_eq!(peers.len(), 2);

    // A peer's route deleted by hand is put back, and the page counts the repair.
    let repairs = |browser: &mut Browser| -> Result<u64> {
        let card = browser.text("#drift-repairs b")?;
        card.parse()
            .with_context(|| format!("drift repairs {card:?}"))
    };
    let before = repairs(&mut browser)?;
    let subnet = overlay["peers"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|p| p["underlay"] == node_address(2).to_string())
        })
        .and_then(|p| p["subnets"][0].as_str())
        .context("node 3's subnet")?
        .to_owned();
    let ip = |args: &[&str]| -> Result<String> {
        let out = cluster.run_in(1, Path::new("/usr/sbin/ip"), args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert!(ip(&["route", "show", "table", "42"])?.contains(&subnet));
    ip(&["route", "del", &subnet, "table", "42"])?;
    wait_until(
        "the route put back and counted on the page",
        Duration::from_secs(30),
        || {
            let api: Value = cluster.get(1, "/v1/overlay")?;
            let shown = repairs(&mut browser)?;
            Ok((ip(&["route", "show", "table", "42"])?.contains(&subnet)
                && shown > before
                && api["drift_repairs"].as_u64() == Some(shown))
            .then_some(()))
        },
    )?;
    shot(&mut browser, "overlay")?;

    // DNS: a name looked up, and the app's records.
    show(
        &mut browser,
        "#/dns?name=web.marathon.mesos",
        "table#dns-answer",
    )?;
    let answer = browser.table("#dns-answer")?;
    let a: BTreeSet<String> = answer
        .iter()
        .filter(|r| r[0] == "A")
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(
        a, ips,
        "web.marathon.mesos's A records are the tasks' addresses"
    );
    let looked: Value = cluster.get(1, "/v1/dns/lookup?name=web.marathon.mesos")?;
    assert_eq!(looked["answer"], "records");
    assert_eq!(looked["zone"], "mesos.");
    let from_api: BTreeSet<String> = looked["a"]
        .as_array()
        .context("a")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(a, from_api);
    // Through the form, as a person would.
    browser.fill(
        "#dns-lookup input[name=name]",
        "nothing-here.marathon.mesos",
    )?;
    browser.click("#dns-lookup button")?;
    wait_until("the NXDOMAIN answer", Duration::from_secs(10), || {
        Ok(browser
            .text("#view")?
            .contains("does not exist in mesos.")
            .then_some(()))
    })?;
    shot(&mut browser, "dns-lookup")?;
    show(&mut browser, "#/dns?app=/web", "table#dns-records")?;
    let records = browser.table("#dns-records")?;
    for ip in &ips {
        for name in [
            "web.marathon.mesos.",
            "web.marathon.containerip.dcos.thisdcos.directory.",
        ] {
            assert!(
                records
                    .iter()
                    .any(|r| r[0] == name && r[1] == "A" && &r[2] == ip),
                "{name} A {ip} missing from {records:?}"
            );
        }
    }
    assert!(
        records
            .iter()
            .any(|r| r[0].starts_with("_web._tcp.marathon.mesos") && r[1] == "SRV")
    );
    shot(&mut browser, "dns-app")?;

    // Log out; a user and password work as well.
    browser.click("#logout")?;
    browser.wait("#login")?;
    browser.fill("#login-user", "viewer")?;
    browser.fill("#login-password", "correct horse")?;
    browser.click("#login-form button[type=submit]")?;
    wait_until("the user's login", Duration::from_secs(10), || {
        Ok((browser.text("#who")? == "viewer (read)").then_some(()))
    })?;

    let errors: Vec<String> = browser
        .console()?
        .into_iter()
        .filter(|m| m.starts_with("pageerror") || m.starts_with("console.error"))
        // The wrong token's 401 is logged by Chromium as a failed resource.
        .filter(|m| !m.contains("401"))
        .collect();
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");
    Ok(())
}

/// A Mesos state of `n` running tasks on node 2, each with a VIP of its own.
fn big_state(master: &str, n: usize) -> String {
    let tasks: Vec<Value> = (0..n)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(9, 0, 0, 0)) + 256 + i as u32);
            json!({
                "id": format!("svc{i}.{i}"),
                "name": format!("svc{i}"),
                "slave_id": "S1",
                "state": "TASK_RUNNING",
                "statuses": [{
                    "state": "TASK_RUNNING",
                    "timestamp": 1.0,
                    "healthy": true,
                    "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": ip.to_string()}]}]},
                }],
                "discovery": {"name": format!("svc{i}"), "ports": {"ports": [
                    {"number": 8080, "protocol": "tcp", "name": "http",
                     "labels": {"labels": [{"key": "VIP_0", "value": format!("/svc{i}:80")}]}},
                ]}},
            })
        })
        .collect();
    json!({
        "leader": format!("master@{master}"),
        "slaves": [{"id": "S1", "hostname": node_address(1).to_string(),
                    "pid": format!("slave(1)@{}:5051", node_address(1))}],
        "frameworks": [{"name": "marathon", "pid": format!("scheduler@{master}"), "tasks": tasks}],
    })
    .to_string()
}

/// The agent's resident memory, kB.
fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// With 1,000 tasks and 1,000 VIPs (from a Mesos master): each view's first paint and first
/// drawn data after a cold load, and what serving the dashboard adds to the agent's memory.
/// Measured and printed, not asserted (timings are the benchmarks' business).
#[test]
fn a_thousand_tasks_and_vips_are_listed_and_timed() -> Result<()> {
    dcnet_tests::cluster::require_root()?;
    const N: usize = 1000;
    let cgroups: Vec<TestCgroup> = (0..2)
        .map(|i| TestCgroup::create(&format!("dashnode{}", i + 1)))
        .collect::<Result<_>>()?;
    // Node 2 reads the master; node 1, where the browser is, has it all through gossip.
    let master_addr = format!("{}:5050", node_address(1));
    let cluster = Cluster::start(dcnet_tests::lb::two_nodes_reading_a_master(
        &cgroups,
        &master_addr,
        "",
    ))?;
    let _master = FakeMaster::start(
        &cluster.nodes[1].netns,
        master_addr.parse()?,
        big_state(&master_addr, N),
    )?;
    let result = thousands(&cluster, N);
    cluster.explain(result, 40)
}

fn thousands(cluster: &Cluster, n: usize) -> Result<()> {
    // Node 1, where the browser runs, has it all through gossip.
    wait_until(
        &format!("{n} Mesos tasks and VIPs on node 1"),
        Duration::from_secs(60),
        || {
            let tasks: Vec<Value> = cluster.get(0, "/v1/mesos/tasks")?;
            let vips: Vec<Value> = cluster.get(0, "/v1/vips")?;
            Ok((tasks.len() == n && vips.len() == n).then_some(()))
        },
    )?;
    let pid = cluster.nodes[0]
        .pid()
        .context("node 1's agent is not running")?;
    let before = rss_kb(pid)?;
    let token = cluster.token_with(dcnet_auth::Role::Read, "viewer", Duration::from_secs(3600))?;

    let mut browser = Browser::start(cluster, 0)?;
    browser.goto(&dashboard_url())?;
    browser.wait("#login")?;
    browser.fill("#login-token", &token)?;
    browser.click("#login-form button[type=submit]")?;
    browser.wait("#view table#nodes")?;

    let mut timings = Vec::new();
    for (view, table, rows) in [
        ("overview", "#nodes", 2),
        ("apps", "#mesos-tasks", n),
        ("vips", "#vips", 2 * n),
    ] {
        // A cold load of the view: a new document (the query makes it one; a changed hash
        // alone would not), the credential still in the tab's session storage.
        browser.goto(&format!(
            "{}dashboard/?load={view}#/{view}",
            dashboard_url()
        ))?;
        browser.wait(&format!("#view[data-view={view}] {table}"))?;
        let shown = browser.table(table)?;
        if shown.len() != rows {
            bail!("{view}: {} rows, not {rows}", shown.len());
        }
        let paint = browser
            .eval("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null")?;
        let data = browser
            .eval("performance.getEntriesByName('dcnet-first-data')[0]?.startTime ?? null")?;
        let requests = browser.eval(
            "performance.getEntriesByType('resource').map(e => `${e.name.replace(location.origin, '')} ${e.startTime.toFixed(0)}+${e.duration.toFixed(0)} ms`)",
        )?;
        println!("{view}: {requests}");
        timings.push((view, paint, data));
        shot(&mut browser, &format!("{view}-{n}"))?;
    }
    // Mesos tasks as the API lists them.
    let tasks: Vec<Value> = cluster.get(0, "/v1/mesos/tasks")?;
    let shown = browser.table("#vips")?;
    let vips: Vec<Value> = cluster.get(0, "/v1/vips")?;
    let api_vips: BTreeSet<String> = vips
        .iter()
        .map(|v| v["vip"].as_str().unwrap_or_default().to_owned())
        .collect();
    let page_vips: BTreeSet<String> = shown
        .iter()
        .filter(|r| !r[0].starts_with('→'))
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(page_vips, api_vips);
    assert_eq!(tasks.len(), n);

    // Polling for a while: what the agent holds once the views have been drawn many times.
    std::thread::sleep(Duration::from_secs(10));
    let after = rss_kb(pid)?;
    println!(
        "dashboard with {n} Mesos tasks and {n} VIPs, cold load of each view (ms since navigation):"
    );
    for (view, paint, data) in &timings {
        println!("  {view:<9} first contentful paint {paint}, data drawn {data}");
    }
    println!(
        "node 1's agent: {} kB before the browser, {} kB after 10 s of polling the VIPs ({:+} kB)",
        before,
        after,
        after as i64 - before as i64
    );
    Ok(())
}
