//! Real agents in network namespaces forming a cluster over the authenticated gossip.
//!
//! Bounds stated here (gossip interval 200 ms, phi threshold 6): a cluster forms within 15 s,
//! a key replicates within 5 s, a killed node is reported down within 10 s (expected ≈ 6 × 200 ms
//! of silence plus a round; the bound leaves room for a loaded CI machine).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dcnet_agent::node::{Member, NodeState};
use dcnet_tests::{Cluster, ClusterOptions, NodeSpec, wait_until};
use nix::sys::signal::Signal;

const FORM: Duration = Duration::from_secs(15);
const REPLICATE: Duration = Duration::from_secs(5);
const DETECT_DOWN: Duration = Duration::from_secs(10);

fn states(members: &[Member]) -> BTreeMap<String, NodeState> {
    members
        .iter()
        .filter_map(|m| Some((m.name.clone()?, m.state)))
        .collect()
}

fn all_up(cluster: &Cluster, i: usize, n: usize) -> anyhow::Result<Option<Vec<Member>>> {
    let members = cluster.members(i)?;
    let up = members
        .iter()
        .filter(|m| m.state == NodeState::Up && m.name.is_some())
        .count();
    Ok((up == n).then_some(members))
}

#[test]
fn three_nodes_form_a_cluster_and_replicate_keys() {
    let mut options = ClusterOptions::nodes(3);
    options.nodes[0].region = Some("region-1".into());
    options.nodes[0].zone = Some("zone-a".into());
    options.nodes[0].roles = vec!["master".into(), "agent".into()];
    let cluster = Cluster::start(options).unwrap();
    for i in 0..3 {
        wait_until(&format!("node {} to see 3 nodes up", i + 1), FORM, || {
            all_up(&cluster, i, 3)
        })
        .unwrap();
    }

    // Every node knows every other's self-description.
    let members = cluster.members(2).unwrap();
    let node1 = members
        .iter()
        .find(|m| m.name.as_deref() == Some("node-1"))
        .unwrap();
    assert_eq!(node1.address, Some("10.200.0.1".parse().unwrap()));
    assert_eq!(node1.region.as_deref(), Some("region-1"));
    assert_eq!(node1.zone.as_deref(), Some("zone-a"));
    assert_eq!(node1.roles, vec!["master", "agent"]);
    assert!(members.iter().filter(|m| m.is_self).count() == 1);

    // A key published on node 1 is read on node 3.
    cluster
        .put(0, "/v1/kv/greeting", "hello from node 1")
        .unwrap();
    let started = Instant::now();
    let entries: Vec<serde_json::Value> =
        wait_until("node 3 to read node 1's key", REPLICATE, || {
            let entries: Vec<serde_json::Value> = match cluster.get(2, "/v1/kv/greeting") {
                Ok(entries) => entries,
                Err(_) => return Ok(None),
            };
            Ok((!entries.is_empty()).then_some(entries))
        })
        .unwrap();
    eprintln!("key visible on node 3 after {:?}", started.elapsed());
    assert_eq!(entries[0]["node"], node1.id.as_str());
    assert_eq!(entries[0]["value"], "hello from node 1");

    // Metrics are served and count authentic traffic.
    let metrics = cluster.get_text(1, "/metrics").unwrap();
    assert!(metrics.contains("dcnet_cluster_nodes_up 3"), "{metrics}");
    assert!(
        metrics.contains("dcnet_gossip_datagrams_received_total"),
        "{metrics}"
    );
}

#[test]
fn a_killed_node_is_reported_down_and_rejoins_with_its_id() {
    let mut cluster = Cluster::start(ClusterOptions::nodes(3)).unwrap();
    for i in 0..3 {
        wait_until("3 nodes up", FORM, || all_up(&cluster, i, 3)).unwrap();
    }
    let before = cluster.members(0).unwrap();
    let node3 = before
        .iter()
        .find(|m| m.name.as_deref() == Some("node-3"))
        .unwrap()
        .clone();

    cluster.stop_agent(2, Signal::SIGKILL, Duration::from_secs(5));
    let killed = Instant::now();
    for i in 0..2 {
        wait_until(
            &format!("node {} to report node-3 down", i + 1),
            DETECT_DOWN,
            || {
                Ok(
                    (states(&cluster.members(i)?).get("node-3") == Some(&NodeState::Down))
                        .then_some(()),
                )
            },
        )
        .unwrap();
    }
    eprintln!(
        "node-3 reported down on nodes 1 and 2 after {:?}",
        killed.elapsed()
    );

    cluster.start_agent(2).unwrap();
    for i in 0..3 {
        wait_until("node-3 back up everywhere", FORM, || all_up(&cluster, i, 3)).unwrap();
    }
    let after = cluster.members(0).unwrap();
    let back = after
        .iter()
        .find(|m| m.name.as_deref() == Some("node-3"))
        .unwrap();
    assert_eq!(back.id, node3.id, "same node id after restart");
    assert!(
        back.generation > node3.generation,
        "a new generation: {} then {}",
        node3.generation,
        back.generation
    );
    assert_eq!(
        after.len(),
        3,
        "the old generation is not listed as a fourth node"
    );
}

#[test]
fn a_node_with_the_wrong_secret_never_joins() {
    let mut options = ClusterOptions::nodes(3);
    options.nodes.push(NodeSpec {
        secret: Some("not-the-cluster-secret-at-all".into()),
        ..NodeSpec::default()
    });
    let cluster = Cluster::start(options).unwrap();
    for i in 0..3 {
        wait_until("the 3 genuine nodes up", FORM, || all_up(&cluster, i, 3)).unwrap();
    }
    // The intruder seeds through node 1 every round; give it a few seconds of trying.
    wait_until("node 1 to count rejected datagrams", FORM, || {
        let metrics = cluster.get_text(0, "/metrics")?;
        Ok(rejected_auth(&metrics).filter(|n| *n >= 5.0))
    })
    .unwrap();
    for i in 0..3 {
        let names: Vec<String> = cluster
            .members(i)
            .unwrap()
            .into_iter()
            .filter_map(|m| m.name)
            .collect();
        assert!(
            !names.contains(&"node-4".to_owned()),
            "node {} lists the intruder: {names:?}",
            i + 1
        );
        assert_eq!(names.len(), 3);
    }
    let intruder_view = cluster.members(3).unwrap();
    assert_eq!(
        intruder_view.len(),
        1,
        "the intruder learned nothing: {intruder_view:?}"
    );
}

fn rejected_auth(metrics: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("dcnet_gossip_datagrams_rejected_total") && l.contains("reason=\"auth\"")
        })?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}
