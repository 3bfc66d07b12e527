//! Linked clusters: two 2-node clusters on one underlay (neighbouring datacenters), each with
//! its own keys. West links east with the `dcnet` CLI; east's names then resolve on west's
//! nodes as `<task>.<framework>.east.mesos` (asked of east's DNS), the CLI talks to east with
//! `--cluster` and after `cluster switch`, read-only callers never see the link's credential,
//! and unlinking stops it all. East's tasks come from a Mesos master (a fake one in east's
//! first node), so east's records are known exactly.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dcnet_tests::cluster::{API_PORT, node_address};
use dcnet_tests::{Browser, Cluster, ClusterOptions, FakeMaster, NodeSpec, wait_until};
use serde_json::{Value, json};

const EAST_TASK_IP: &str = "9.0.7.2";

/// East's Mesos state: one running `web` task of Marathon.
fn east_state(master: &str) -> String {
    json!({
        "leader": format!("master@{master}"),
        "slaves": [{"id": "S1", "hostname": node_address(11).to_string(),
                    "pid": format!("slave(1)@{}:5051", node_address(11))}],
        "frameworks": [{"name": "marathon", "pid": format!("scheduler@{master}"), "tasks": [{
            "id": "web.1", "name": "web", "slave_id": "S1", "state": "TASK_RUNNING",
            "statuses": [{"state": "TASK_RUNNING", "timestamp": 1.0,
                "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": EAST_TASK_IP}]}]}}],
            "discovery": {"name": "web", "ports": {"ports": [{"number": 8080, "protocol": "tcp", "name": "http"}]}},
        }]}],
    })
    .to_string()
}

fn two_nodes(extra_first: &str) -> ClusterOptions {
    let mut options = ClusterOptions::nodes(2);
    for (i, node) in options.nodes.iter_mut().enumerate() {
        *node = NodeSpec {
            roles: if i == 0 {
                vec!["master".into(), "agent".into()]
            } else {
                vec!["agent".into()]
            },
            dns_config: "listen = [\"0.0.0.0:53\"]\n".into(),
            extra_config: if i == 0 {
                extra_first.to_owned()
            } else {
                String::new()
            },
            ..NodeSpec::default()
        };
    }
    options
}

/// `dig +short` of `name` at node `i`'s own DNS.
fn dig(cluster: &Cluster, i: usize, name: &str) -> Result<String> {
    let out = cluster.run_in(
        i,
        Path::new("/usr/bin/dig"),
        &["@127.0.0.1", "+short", "+time=1", "+tries=1", name],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The node addresses `dcnet nodes --json [args]` lists on node `i` of `cluster`.
fn node_addresses(cluster: &Cluster, i: usize, args: &[&str]) -> Result<Vec<String>> {
    let mut all = vec!["nodes", "--json"];
    all.extend_from_slice(args);
    let nodes: Vec<Value> = serde_json::from_str(&cluster.cli(i, &all)?)?;
    let mut addresses: Vec<String> = nodes
        .iter()
        .filter_map(|n| n["address"].as_str().map(str::to_owned))
        .collect();
    addresses.sort();
    Ok(addresses)
}

#[test]
fn a_linked_clusters_names_resolve_here_and_the_cli_switches_to_it() -> Result<()> {
    dcnet_tests::cluster::require_root()?;
    let west = Cluster::start(two_nodes(""))?;
    let master_addr = format!("{}:5050", node_address(10));
    let mut east_options = two_nodes(&format!(
        "\n[dns.mesos]\nmasters = [\"{master_addr}\"]\nrefresh = \"1s\"\n"
    ));
    east_options.underlay = Some(west.shared_underlay(10)?);
    let east = Cluster::start(east_options)?;
    let _master = FakeMaster::start(
        &east.nodes[0].netns,
        master_addr.parse()?,
        east_state(&master_addr),
    )?;
    let result = linked(&west, &east);
    east.explain(west.explain(result, 40), 40)
}

fn linked(west: &Cluster, east: &Cluster) -> Result<()> {
    // East answers its own name, on its node that reads it only through gossip.
    wait_until("east's DNS to have web", Duration::from_secs(30), || {
        Ok((dig(east, 1, "web.marathon.mesos")? == EAST_TASK_IP).then_some(()))
    })?;
    // The link lists east's DNS servers from east's members that are up: both, first.
    wait_until("east's nodes up", Duration::from_secs(30), || {
        let members = east.members(0)?;
        Ok((members.len() == 2
            && members
                .iter()
                .all(|m| m.state == dcnet_agent::node::NodeState::Up))
        .then_some(()))
    })?;
    // West's scheduler must lead before it takes a link.
    wait_until("west's scheduler", Duration::from_secs(30), || {
        Ok(west.cli(0, &["cluster", "list"]).ok().map(drop))
    })?;

    let east_url = format!("https://{}:8080", node_address(10));
    let east_ca = east.pki_dir().join("ca.crt");
    let east_ca = east_ca.to_str().context("path")?;
    let east_token = east.credentials_path();
    let east_token = east_token.to_str().context("path")?;

    // A cluster cannot link itself.
    let west_ca = west.pki_dir().join("ca.crt");
    let west_creds = west.credentials_path();
    let itself = west.cli(
        0,
        &[
            "cluster",
            "link",
            &format!("https://{}:8080", node_address(0)),
            "--name",
            "me",
            "--ca",
            west_ca.to_str().context("path")?,
            "--token-file",
            west_creds.to_str().context("path")?,
        ],
    );
    let refused = itself.err().context("linking to itself was accepted")?;
    assert!(
        refused.to_string().contains("linked to itself"),
        "{refused}"
    );
    // HTTPS without the other cluster's CA is refused before anything is asked.
    let no_ca = west.cli(0, &["cluster", "link", &east_url, "--name", "east"]);
    assert!(no_ca.is_err_and(|e| e.to_string().contains("--ca")));

    // The link, from west's node 1, through east's scheduler API (verified with east's CA).
    let said = west.cli(
        0,
        &[
            "cluster",
            "link",
            &east_url,
            "--name",
            "east",
            "--ca",
            east_ca,
            "--token-file",
            east_token,
        ],
    )?;
    println!("{said}");
    let east_id: Value = east.get(0, "/v1/cluster")?;
    let links: Value = west.get(1, "/cluster/v1/links")?;
    let link = &links["links"][0];
    assert_eq!(link["name"], "east");
    assert_eq!(link["id"], east_id["id"]);
    assert_ne!(links["cluster"]["id"], east_id["id"]);
    let dns: Vec<&str> = link["dns"]
        .as_array()
        .context("dns")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        dns,
        [
            format!("{}:53", node_address(10)),
            format!("{}:53", node_address(11))
        ]
    );
    assert!(link.get("token").is_some(), "an admin sees the credential");

    // A read-only caller sees the link without its credential, and cannot change links.
    let read = west.token_with(dcnet_auth::Role::Read, "viewer", Duration::from_secs(600))?;
    let header = format!("Authorization: token={read}");
    let url = format!("http://127.0.0.1:{API_PORT}/cluster/v1/links/east");
    let out = west.run_in(1, Path::new("/usr/bin/curl"), &["-s", "-H", &header, &url])?;
    let seen: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(seen["name"], "east");
    assert!(seen.get("token").is_none(), "{seen}");
    assert_eq!(seen["has_token"], true);
    assert_eq!(
        west.http_status(1, &["-X", "DELETE", "-H", &header, &url])?,
        "403"
    );

    // East's names resolve on west's nodes, the one that only hears of the link by gossip
    // included; west's own names are still west's.
    for i in [0, 1] {
        wait_until(
            &format!("web.marathon.east.mesos on west's node {}", i + 1),
            Duration::from_secs(20),
            || Ok((dig(west, i, "web.marathon.east.mesos")? == EAST_TASK_IP).then_some(())),
        )?;
    }
    let out = west.run_in(
        1,
        Path::new("/usr/bin/dig"),
        &[
            "@127.0.0.1",
            "+short",
            "-t",
            "SRV",
            "_web._tcp.marathon.east.mesos",
        ],
    )?;
    let srv_text = String::from_utf8_lossy(&out.stdout);
    assert!(
        srv_text.contains("8080 web-") && srv_text.trim_end().ends_with(".marathon.east.mesos."),
        "SRV {srv_text:?}"
    );
    assert_eq!(
        dig(west, 1, "web.marathon.mesos")?,
        "",
        "west has no web of its own"
    );
    // The CLI talks to east with --cluster, and after a switch without it.
    let west_nodes = node_addresses(west, 0, &[])?;
    let east_nodes = vec![node_address(10).to_string(), node_address(11).to_string()];
    assert_eq!(node_addresses(west, 0, &["--cluster", "east"])?, east_nodes);
    assert_ne!(west_nodes, east_nodes);
    west.cli(0, &["cluster", "switch", "east"])?;
    assert_eq!(node_addresses(west, 0, &[])?, east_nodes);
    let list = west.cli(0, &["cluster", "list"])?;
    let marked: Vec<&str> = list.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(marked.len(), 1, "{list}");
    assert!(marked[0].contains("east"), "{list}");
    west.cli(0, &["cluster", "switch", "--local"])?;
    assert_eq!(node_addresses(west, 0, &[])?, west_nodes);
    let bad = west.cli(0, &["cluster", "switch", "nowhere"]);
    assert!(bad.is_err_and(|e| e.to_string().contains("no cluster is linked as")));

    // East's scheduler API serves the dashboard and its node reads, never a change.
    let ca = east.pki_dir().join("ca.crt");
    let ca = ca.to_str().context("path")?;
    let east_header = format!(
        "Authorization: token={}",
        east.admin_token().context("east is secure")?
    );
    let curl = |args: &[&str]| -> Result<String> {
        let mut all = vec!["-s", "--cacert", ca, "-H", east_header.as_str()];
        all.extend_from_slice(args);
        let out = west.run_in(0, Path::new("/usr/bin/curl"), &all)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let page = curl(&[&format!("{east_url}/dashboard/")])?;
    assert!(page.contains("<title>dcnet</title>"), "{page}");
    let nodes: Vec<Value> = serde_json::from_str(&curl(&[&format!("{east_url}/v1/nodes")])?)?;
    assert_eq!(nodes.len(), 2);
    let attach = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-d",
        "{}",
        &format!("{east_url}/v1/overlay/attach"),
    ])?;
    assert_eq!(attach, "404", "a change through the scheduler's node reads");

    // The dashboard lists the link and points at east's own dashboard.
    let mut browser = Browser::start(west, 0)?;
    browser.goto(&format!("http://127.0.0.1:{API_PORT}/dashboard/#/clusters"))?;
    browser.wait("#login")?;
    browser.fill("#login-token", &read)?;
    browser.click("#login-form button[type=submit]")?;
    browser.wait("#view table#links")?;
    let rows = browser.table("#links")?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], "east");
    assert_eq!(rows[0][2], east_id["id"].as_str().unwrap_or_default());
    assert_eq!(rows[0][3], "*.east.mesos");
    let href = browser.eval("document.querySelector('#links a').href")?;
    assert_eq!(href, format!("{east_url}/dashboard/"));
    let shot = dcnet_tests::clients::artifacts_dir("dashboard")?.join("clusters.png");
    browser.screenshot(&shot)?;
    drop(browser);

    // Unlinked: the names go (NXDOMAIN from west's own zone), and so does the context.
    west.cli(0, &["cluster", "unlink", "east"])?;
    for i in [0, 1] {
        wait_until(
            &format!("east's names gone from west's node {}", i + 1),
            Duration::from_secs(20),
            || {
                let out = west.run_in(
                    i,
                    Path::new("/usr/bin/dig"),
                    &[
                        "@127.0.0.1",
                        "+time=1",
                        "+tries=1",
                        "web.marathon.east.mesos",
                    ],
                )?;
                let text = String::from_utf8_lossy(&out.stdout);
                Ok(text.contains("status: NXDOMAIN").then_some(()))
            },
        )?;
    }
    let gone = west.cli(0, &["nodes", "--cluster", "east"]);
    if gone.is_ok() {
        bail!("--cluster east still worked after the unlink");
    }
    Ok(())
}
