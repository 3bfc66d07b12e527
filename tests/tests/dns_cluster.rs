//! DNS on every node of a cluster: node 1 reads task state from a fake master and publishes it
//! through gossip; every node answers from its own replica.
//!
//! Bounds stated here (gossip interval 200 ms, state refresh 1 s): a task published on node 1 is
//! answered on node 3 within 10 s of the master serving it (measured ~1-2 s: a refresh, gossip
//! propagation, a rebuild); a task removed from the state is NXDOMAIN on node 3 within 10 s.

use std::time::{Duration, Instant};

use dcnet_tests::cluster::node_address;
use dcnet_tests::{Cluster, ClusterOptions, FakeMaster, NodeSpec, wait_until};
use nix::sys::signal::Signal;

const FIXTURE: &str = include_str!("../../dns/tests/fixtures/mesos-dns-fake-state.json");

fn state(leader: &str, keep_liquor_store: bool) -> String {
    let mut state: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    state["leader"] = format!("master@{leader}").into();
    if !keep_liquor_store {
        for framework in state["frameworks"].as_array_mut().unwrap() {
            framework["tasks"].as_array_mut().unwrap().retain(|t| {
                t["name"] != "liquor.store" && t["name"] != "non-human-readable-liquor-store"
            });
        }
    }
    state.to_string()
}

fn dig(cluster: &Cluster, node: usize, args: &[&str]) -> String {
    let mut all = vec!["@127.0.0.1", "+time=1", "+tries=1"];
    all.extend_from_slice(args);
    let dig = std::path::Path::new("/usr/bin/dig");
    let out = cluster
        .run_in(node, dig, &all)
        .expect("dig (apt install dnsutils, or scripts/setup.sh)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn records_published_on_one_node_are_answered_on_every_node() {
    let master_addr = format!("{}:5050", node_address(0));
    let mut options = ClusterOptions::nodes(3);
    options.nodes[0] = NodeSpec {
        roles: vec!["master".into(), "agent".into()],
        extra_config: format!(
            "\n[dns.mesos]\nmasters = [\"{master_addr}\"]\nrefresh = \"1s\"\nip_sources = [\"docker\", \"host\"]\n"
        ),
        ..NodeSpec::default()
    };
    let resolv_dir = tempfile::tempdir().unwrap();
    let resolv_conf = resolv_dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, "search corp.example\nnameserver 192.0.2.53\n").unwrap();
    options.nodes[1].dns_config = format!("resolv_conf = \"{}\"\n", resolv_conf.display());
    let mut cluster = Cluster::start(options).unwrap();
    let master = FakeMaster::start(
        &cluster.nodes[0].netns,
        master_addr.parse().unwrap(),
        state(&master_addr, true),
    )
    .unwrap();
    let started = Instant::now();

    // Node 3 answers from its replica what node 1 read and published.
    let answered = wait_until("node 3 to answer the task", Duration::from_secs(10), || {
        Ok(dig(&cluster, 2, &["+short", "liquor-store.marathon.mesos"])
            .contains("10.3.0.1")
            .then_some(()))
    });
    if let Err(e) = answered {
        panic!(
            "{e}\nnode 1 says:\n{}\nnode 3 says:\n{}",
            dig(&cluster, 0, &["liquor-store.marathon.mesos"]),
            dig(&cluster, 2, &["liquor-store.marathon.mesos"])
        );
    }
    eprintln!(
        "task answered on node 3 {:?} after the master came up",
        started.elapsed()
    );
    assert!(master.requests() > 0);

    // The dcos-dns zones, on node 2: it may hear of the task a gossip round after node 3.
    wait_until("node 2 to answer the task", Duration::from_secs(10), || {
        Ok(dig(&cluster, 1, &["+short", "liquor-store.marathon.mesos"])
            .contains("10.3.0.1")
            .then_some(()))
    })
    .unwrap();
    let a = dig(
        &cluster,
        1,
        &[
            "+short",
            "liquor-store.marathon.agentip.dcos.thisdcos.directory",
        ],
    );
    assert!(a.contains("1.2.3.11") && a.contains("1.2.3.12"), "{a}");
    let c = dig(
        &cluster,
        1,
        &[
            "+short",
            "liquor-store.marathon.containerip.dcos.thisdcos.directory",
        ],
    );
    assert!(c.contains("10.3.0.1"), "{c}");
    assert_eq!(
        dig(&cluster, 1, &["+short", "ready.spartan"]).trim(),
        "127.0.0.1"
    );
    assert_eq!(
        dig(&cluster, 1, &["+short", "thisnode.thisdcos.directory"]).trim(),
        node_address(1).to_string()
    );
    let masters = dig(&cluster, 1, &["+short", "master.dcos.thisdcos.directory"]);
    assert!(
        masters.contains(&node_address(0).to_string()),
        "node-1 has the master role: {masters}"
    );
    let ttl = dig(&cluster, 1, &["+noall", "+answer", "ready.spartan"]);
    assert!(
        ttl.split_whitespace().nth(1) == Some("5"),
        "dcos-dns TTL is 5: {ttl}"
    );
    // An empty l4lb zone is still ours: NXDOMAIN, not forwarded.
    let vip = dig(&cluster, 1, &["web.marathon.l4lb.thisdcos.directory"]);
    assert!(
        vip.contains("status: NXDOMAIN") && vip.contains(" aa"),
        "{vip}"
    );

    // Node 2 keeps its resolv.conf on the listener that answers ready.spartan, keeping the
    // search domain, and leaves the file alone while nothing changes.
    let text = wait_until(
        "node 2 to write its resolv.conf",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&resolv_conf)?;
            Ok(text.contains("nameserver 127.0.0.1").then_some(text))
        },
    )
    .unwrap();
    assert!(
        text.contains("search corp.example\n") && text.contains("options timeout:1 attempts:3\n"),
        "{text}"
    );
    assert!(!text.contains("192.0.2.53"), "{text}");
    let written = std::fs::metadata(&resolv_conf).unwrap().modified().unwrap();

    // A task that leaves the state leaves DNS everywhere.
    master.set_body(state(&master_addr, false));
    let removed = Instant::now();
    wait_until("node 3 to forget the task", Duration::from_secs(10), || {
        Ok(dig(&cluster, 2, &["liquor-store.marathon.mesos"])
            .contains("status: NXDOMAIN")
            .then_some(()))
    })
    .unwrap();
    eprintln!(
        "removed task NXDOMAIN on node 3 after {:?}",
        removed.elapsed()
    );
    assert!(dig(&cluster, 2, &["+short", "car-store.marathon.slave.mesos"]).contains("1.2.3.11"));

    // Over a manager period later (5 s), the unchanged file was not rewritten.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(removed.elapsed()));
    assert_eq!(
        std::fs::metadata(&resolv_conf).unwrap().modified().unwrap(),
        written,
        "resolv.conf rewritten without change"
    );

    // The publisher dies: every node keeps answering from its replica.
    cluster.stop_agent(0, Signal::SIGKILL, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    assert!(dig(&cluster, 2, &["+short", "car-store.marathon.slave.mesos"]).contains("1.2.3.11"));
}

/// The value of an unlabelled counter or gauge in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A node whose masters are not up at its start (they often are not, on a cluster's first boot)
/// reads their state soon after they answer: failed polls are retried every second, not at the
/// next refresh (an hour here).
#[test]
fn masters_that_come_up_after_the_agent_are_read_before_the_next_refresh() {
    let master_addr = format!("{}:5050", node_address(0));
    let mut options = ClusterOptions::nodes(1);
    options.nodes[0] = NodeSpec {
        roles: vec!["master".into()],
        extra_config: format!(
            "\n[dns.mesos]\nmasters = [\"{master_addr}\"]\nrefresh = \"1h\"\nip_sources = [\"docker\", \"host\"]\n"
        ),
        ..NodeSpec::default()
    };
    let cluster = Cluster::start(options).unwrap();
    // Two failed polls: the first at start, and a retry (not the refresh an hour later).
    wait_until("two failed polls", Duration::from_secs(20), || {
        let text = cluster.get_text(0, "/metrics")?;
        let failures = metric(&text, "dcnet_dns_state_refresh_failures_total").unwrap_or(0.0);
        Ok((failures >= 2.0).then_some(()))
    })
    .unwrap();
    let _master = FakeMaster::start(
        &cluster.nodes[0].netns,
        master_addr.parse().unwrap(),
        state(&master_addr, true),
    )
    .unwrap();
    wait_until("the task to be answered", Duration::from_secs(20), || {
        Ok(dig(&cluster, 0, &["+short", "liquor-store.marathon.mesos"])
            .contains("10.3.0.1")
            .then_some(()))
    })
    .unwrap();
    let text = cluster.get_text(0, "/metrics").unwrap();
    assert_eq!(
        metric(&text, "dcnet_dns_facts_published_total"),
        Some(1.0),
        "{text}"
    );
}

/// A publisher that finds the leading master through ZooKeeper (`[dns.mesos] zk`), as DC/OS
/// agents would with real masters: it reads the leader's state and follows a new leader at
/// once, not at the next refresh (an hour here). ZooKeeper comes up after the agent.
#[test]
fn the_publisher_follows_the_leader_zookeeper_names() {
    use dcnet_tests::zookeeper::ZooKeeper;
    let a = format!("{}:5050", node_address(0));
    let b = "127.0.0.1:5051".to_owned();
    let mut options = ClusterOptions::nodes(1);
    options.nodes[0] = NodeSpec {
        roles: vec!["master".into()],
        extra_config: "\n[dns.mesos]\nzk = \"zk://127.0.0.1:2181/mesos\"\nrefresh = \"1h\"\nip_sources = [\"docker\", \"host\"]\n".into(),
        ..NodeSpec::default()
    };
    let cluster = Cluster::start(options).unwrap();
    let netns = &cluster.nodes[0].netns;
    let _master_a = FakeMaster::start(netns, a.parse().unwrap(), state(&a, true)).unwrap();
    let _master_b = FakeMaster::start(netns, b.parse().unwrap(), state(&b, false)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let zk = ZooKeeper::start(netns, dir.path(), 2181).unwrap();
    let node_a = zk.register_master("/mesos", a.parse().unwrap()).unwrap();
    zk.register_master("/mesos", b.parse().unwrap()).unwrap();
    wait_until("A's state to be published", Duration::from_secs(30), || {
        Ok(dig(&cluster, 0, &["+short", "liquor-store.marathon.mesos"])
            .contains("10.3.0.1")
            .then_some(()))
    })
    .unwrap();
    // A leaves: B (whose state has no liquor store) is read within seconds.
    zk.delete(&node_a).unwrap();
    wait_until("B's state to be published", Duration::from_secs(15), || {
        Ok(dig(&cluster, 0, &["liquor-store.marathon.mesos"])
            .contains("NXDOMAIN")
            .then_some(()))
    })
    .unwrap();
    assert!(dig(&cluster, 0, &["+short", "leader.mesos"]).contains("127.0.0.1"));
}

/// A node's Mesos domain as configured (`[dns]` ttl, SOA, rfc952, zone_resolvers), and
/// Mesos-DNS's HTTP API served from its replica: on `http_listen` without credentials (as
/// Mesos-DNS's port: read from an outsider on the underlay and from a container), and under
/// `/mesos_dns/` on the agent's API with them.
#[test]
fn agents_serve_mesos_dns_settings_and_its_http_api() -> anyhow::Result<()> {
    let master_addr = format!("{}:5050", node_address(0));
    let mut options = ClusterOptions::nodes(1);
    options.nodes[0] = NodeSpec {
        roles: vec!["master".into(), "agent".into()],
        // No upstreams: only `example` is forwarded, to Knot on the node's loopback.
        dns_config: format!(
            "listen = [\"0.0.0.0:53\"]\nupstreams = []\nttl = 30\nsoa_mname = \"dns.corp\"\n\
             soa_rname = \"hostmaster@corp.example\"\nsoa_minttl = 7\nrfc952 = true\n\
             http_listen = \"0.0.0.0:8123\"\n\
             zone_resolvers = {{ \"example\" = [\"{}:5353\"] }}\n",
            dcnet_tests::knot::ADDRESS
        ),
        extra_config: format!(
            "\n[dns.mesos]\nmasters = [\"{master_addr}\"]\nrefresh = \"1s\"\nip_sources = [\"docker\", \"host\"]\n\
             \n[overlay]\nenabled = true\nlease_settle = \"1s\"\n"
        ),
        ..NodeSpec::default()
    };
    let mut cluster = Cluster::start(options)?;
    let _master = FakeMaster::start(
        &cluster.nodes[0].netns,
        master_addr.parse()?,
        state(&master_addr, true),
    )?;
    let dir = tempfile::tempdir()?;
    let _knot = dcnet_tests::knot::start(&cluster.nodes[0].netns, dir.path(), 5353)?;
    wait_until("the task to be answered", Duration::from_secs(20), || {
        Ok(dig(&cluster, 0, &["+short", "liquor-store.marathon.mesos"])
            .contains("10.3.0.1")
            .then_some(()))
    })?;
    // TTL and SOA as configured; RFC 952 labels (the framework name cut to 24 characters).
    let a = dig(
        &cluster,
        0,
        &["+noall", "+answer", "liquor-store.marathon.mesos"],
    );
    assert!(a.contains(" 30\tIN\tA\t"), "{a}");
    let soa = dig(&cluster, 0, &["+short", "mesos", "SOA"]);
    assert!(
        soa.starts_with("dns.corp. hostmaster.corp.example. ") && soa.trim().ends_with(" 7"),
        "{soa}"
    );
    assert!(
        dig(
            &cluster,
            0,
            &["+short", "some-box.chronoswithaspaceandmixe.mesos"]
        )
        .contains("1.2.3.11")
    );
    // The zone's own forwarder; nothing else is forwarded.
    let forwarded = dig(&cluster, 0, &["+short", dcnet_tests::knot::NAME]);
    assert_eq!(forwarded.trim(), dcnet_tests::knot::ANSWER);

    // The API without credentials, from outside the cluster, on the node's address.
    let node = cluster.nodes[0].address;
    let outsider = cluster.add_outsider()?.name().to_owned();
    let get = |netns: &str, path: &str| -> anyhow::Result<serde_json::Value> {
        let url = format!("http://{node}:8123{path}");
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", netns, "curl", "-s", "-m", "5", &url])
            .output()?;
        serde_json::from_slice(&out.stdout)
            .map_err(|e| anyhow::anyhow!("{url}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let hosts = get(&outsider, "/v1/hosts/liquor-store.marathon.mesos")?;
    let mut ips: Vec<&str> = hosts
        .as_array()
        .map(|h| h.iter().filter_map(|r| r["ip"].as_str()).collect())
        .unwrap_or_default();
    ips.sort();
    assert_eq!(ips, ["10.3.0.1", "10.3.0.2"], "{hosts}");
    let config = get(&outsider, "/v1/config")?;
    assert_eq!(config["TTL"], 30, "{config}");
    assert_eq!(config["SOAMname"], "dns.corp.", "{config}");
    assert_eq!(config["EnforceRFC952"], true, "{config}");
    assert_eq!(config["Masters"][0], master_addr.as_str(), "{config}");
    assert_eq!(
        config["ZoneResolvers"]["example"][0], "127.0.0.2:5353",
        "{config}"
    );
    let enumeration = get(&outsider, "/v1/enumerate")?;
    let marathon = enumeration["frameworks"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "marathon"))
        .cloned()
        .unwrap_or_default();
    assert!(
        marathon["tasks"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "liquor.store")),
        "{enumeration}"
    );
    let axfr = get(&outsider, "/v1/axfr")?;
    assert_eq!(axfr["Domain"], "mesos", "{axfr}");
    assert!(
        axfr["Records"]["As"]["liquor-store.marathon.mesos."].is_array(),
        "{axfr}"
    );

    // From a container on the overlay too: it answers what DNS answers anyway.
    cluster.wait_for_overlay(&[0], 0)?;
    let client = wait_until("an attach to the overlay", Duration::from_secs(20), || {
        dcnet_tests::container::Container::attach(&cluster, 0, "api").map(Some)
    })?;
    let from_task = get(
        client.ns.netns().name(),
        "/v1/hosts/liquor-store.marathon.mesos",
    )?;
    assert_eq!(from_task, hosts);

    // The agent's API serves it under /mesos_dns/, behind its credentials.
    let through_agent: serde_json::Value =
        cluster.get(0, "/mesos_dns/v1/hosts/liquor-store.marathon.mesos")?;
    assert_eq!(through_agent, hosts);
    let anonymous = cluster.run_in(
        0,
        std::path::Path::new("/usr/bin/curl"),
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!(
                "http://127.0.0.1:{}/mesos_dns/v1/config",
                dcnet_tests::cluster::API_PORT
            ),
        ],
    )?;
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
    Ok(())
}

/// A container on the overlay recurses through its node by default (DC/OS's overlay,
/// 9.0.0.0/8, is no private range): a name the cluster does not serve is forwarded to the
/// node's upstream, Knot on the node's own loopback (port 5353: the node's DNS holds
/// `0.0.0.0:53`).
#[test]
fn containers_on_the_overlay_recurse_through_their_node() -> anyhow::Result<()> {
    use anyhow::Context;
    let mut options = ClusterOptions::nodes(1);
    options.nodes[0] = NodeSpec {
        dns_config: format!(
            "listen = [\"0.0.0.0:53\"]\nupstreams = [\"{}:5353\"]\n",
            dcnet_tests::knot::ADDRESS
        ),
        extra_config: "\n[overlay]\nenabled = true\nlease_settle = \"1s\"\n".into(),
        ..NodeSpec::default()
    };
    let cluster = Cluster::start(options)?;
    cluster.wait_for_overlay(&[0], 0)?;
    let dir = tempfile::tempdir()?;
    let _knot = dcnet_tests::knot::start(&cluster.nodes[0].netns, dir.path(), 5353)?;
    // The node's subnet is agreed within seconds of start; attach answers 503 until then.
    let client = wait_until("an attach to the overlay", Duration::from_secs(20), || {
        dcnet_tests::container::Container::attach(&cluster, 0, "rec").map(Some)
    })?;
    let server = client
        .attached
        .nameservers
        .first()
        .context("the attach names the node's DNS")?
        .to_string();
    let answer = wait_until(
        "the container's query to be forwarded",
        Duration::from_secs(20),
        || {
            let out = client.ns.run(
                "dig",
                &[
                    &format!("@{server}"),
                    "+time=2",
                    "+tries=1",
                    dcnet_tests::knot::NAME,
                ],
            )?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            Ok((!text.contains("status: SERVFAIL") && text.contains("status:")).then_some(text))
        },
    )?;
    assert!(answer.contains("status: NOERROR"), "{answer}");
    assert!(answer.contains(dcnet_tests::knot::ANSWER), "{answer}");
    Ok(())
}
