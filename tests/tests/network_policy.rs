//! Network policies through the CLI and the scheduler's `/v2/policies` (issue 23's API; the
//! datapath that enforces them comes next): stored by the masters, listed with the apps they
//! select, refused with reasons, changed by admins only, and compiled on every node from
//! gossip (`GET /v1/policy`, read on the node that is no master).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use dcnet_tests::cluster::API_PORT;
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use serde_json::Value;

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
