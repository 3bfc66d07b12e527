//! Gossip members in one process, on loopback addresses of their own (127.77.x.y), talking
//! through the real authenticated UDP transport.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dcnet_agent::config::{GossipSettings, Secret};
use dcnet_agent::gossip::keyring::{Key, Keyring};
use dcnet_agent::gossip::transport::RejectReason;
use dcnet_agent::gossip::{AuthenticatedUdp, Event, Gossip, MembershipMetrics, TransportMetrics};
use dcnet_agent::identity::NodeIdentity;

const WAIT: Duration = Duration::from_secs(15);
const PORT: u16 = 62501;

fn settings(addr: IpAddr, seeds: &[IpAddr]) -> GossipSettings {
    GossipSettings {
        listen: SocketAddr::new(addr, PORT),
        advertise: SocketAddr::new(addr, PORT),
        seeds: seeds
            .iter()
            .map(|s| SocketAddr::new(*s, PORT).to_string())
            .collect(),
        secret: Secret::new(b"loopback-test-secret-0123456789".to_vec()),
        cluster: "test".into(),
        interval: Duration::from_millis(100),
        phi_threshold: 6.0,
        dead_node_grace: Duration::from_secs(3600),
        tombstone_grace: Duration::from_secs(600),
    }
}

async fn member(
    net: u8,
    host: u8,
    seed_hosts: &[u8],
    secret: Option<&[u8]>,
) -> (Gossip, TransportMetrics) {
    member_with(net, host, seed_hosts, |s| {
        if let Some(secret) = secret {
            s.secret = Secret::new(secret.to_vec());
        }
    })
    .await
}

async fn member_with(
    net: u8,
    host: u8,
    seed_hosts: &[u8],
    adjust: impl FnOnce(&mut GossipSettings),
) -> (Gossip, TransportMetrics) {
    let addr = IpAddr::from([127, 77, net, host]);
    let seeds: Vec<IpAddr> = seed_hosts
        .iter()
        .map(|h| IpAddr::from([127, 77, net, *h]))
        .collect();
    let mut s = settings(addr, &seeds);
    adjust(&mut s);
    let metrics = TransportMetrics::default();
    let keyring = Keyring::in_memory(Key::from_secret(&s.secret));
    let transport = AuthenticatedUdp::new(keyring, s.advertise, metrics.clone());
    let identity = NodeIdentity {
        id: format!("node-{net}-{host}"),
        generation: 1,
    };
    let gossip = Gossip::start(
        &s,
        &identity,
        (&transport, transport.max_message_len()),
        vec![],
        MembershipMetrics::default(),
    )
    .await
    .expect("gossip starts");
    (gossip, metrics)
}

#[tokio::test]
async fn keys_replicate_update_and_delete() {
    let (n1, _) = member(1, 1, &[], None).await;
    let (n2, _) = member(1, 2, &[1], None).await;
    let (n3, _) = member(1, 3, &[1], None).await;
    for n in [&n1, &n2, &n3] {
        assert!(
            n.wait_for(WAIT, |v| v.up_nodes().count() == 3)
                .await
                .is_some(),
            "{} sees 3 up",
            n.node_id()
        );
    }
    let mut events = n3.subscribe();

    n1.publish("color", "blue").await;
    assert!(
        n3.wait_for(WAIT, |v| v.get("node-1-1", "color") == Some("blue"))
            .await
            .is_some()
    );
    n1.publish("color", "red").await;
    assert!(
        n3.wait_for(WAIT, |v| v.get("node-1-1", "color") == Some("red"))
            .await
            .is_some()
    );
    n1.delete("color").await;
    assert!(
        n3.wait_for(WAIT, |v| v.get("node-1-1", "color").is_none())
            .await
            .is_some()
    );

    let mut seen = Vec::new();
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
    {
        if matches!(&event, Event::KeyAdded { key, .. } | Event::KeyUpdated { key, .. } | Event::KeyDeleted { key, .. } if key == "color")
        {
            seen.push(event);
        }
    }
    let node = "node-1-1".to_string();
    assert_eq!(
        seen,
        vec![
            Event::KeyAdded {
                node: node.clone(),
                key: "color".into(),
                value: "blue".into()
            },
            Event::KeyUpdated {
                node: node.clone(),
                key: "color".into(),
                value: "red".into()
            },
            Event::KeyDeleted {
                node,
                key: "color".into()
            },
        ]
    );
    for n in [n1, n2, n3] {
        n.shutdown().await;
    }
}

/// A change is pushed to peers as it is made: with 30 s rounds (the first one, at start, forms
/// the cluster; the failure detector judges no one live before the next), a published key
/// still arrives well within the wait, which is half a round.
#[tokio::test]
async fn a_change_reaches_peers_before_the_next_round() {
    let slow = |s: &mut GossipSettings| s.interval = Duration::from_secs(30);
    let (n1, _) = member_with(8, 1, &[], slow).await;
    let (n2, _) = member_with(8, 2, &[1], slow).await;
    for n in [&n1, &n2] {
        assert!(
            n.wait_for(WAIT, |v| v.nodes.len() == 2).await.is_some(),
            "{} knows both after the first round",
            n.node_id()
        );
    }
    n1.publish("color", "blue").await;
    assert!(
        n2.wait_for(WAIT, |v| v.get("node-8-1", "color") == Some("blue"))
            .await
            .is_some(),
        "the key arrived before the next round"
    );
    n2.publish_all([("shape", Some("round"))]).await;
    assert!(
        n1.wait_for(WAIT, |v| v.get("node-8-2", "shape") == Some("round"))
            .await
            .is_some(),
        "a burst's keys arrive before the next round too"
    );
    for n in [n1, n2] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn state_larger_than_a_datagram_replicates() {
    let (n1, m1) = member(2, 1, &[], None).await;
    // 1.5 MiB of near-incompressible values: more than one largest message, so the newcomer
    // catches up through several deltas, each split into fragments.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut values = Vec::new();
    for i in 0..1500 {
        let value: String = (0..1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'!' + (seed % 90) as u8)
            })
            .collect();
        values.push((format!("blob/{i:04}"), value));
    }
    n1.publish_all(values.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))))
        .await;
    let (n2, m2) = member(2, 2, &[1], None).await;
    let complete = n2
        .wait_for(Duration::from_secs(60), |v| {
            v.nodes.get("node-2-1").is_some_and(|n| {
                n.keys.keys().filter(|k| k.starts_with("blob/")).count() == values.len()
            })
        })
        .await
        .expect("all 1.5 MiB arrived");
    let node = &complete.nodes["node-2-1"];
    assert!(
        values
            .iter()
            .all(|(k, v)| node.keys.get(k.as_str()).map(|x| &**x) == Some(v.as_str())),
        "every value arrived intact"
    );
    assert!(
        m1.fragmented() > 0,
        "deltas larger than a datagram were sent"
    );
    assert_eq!(m2.rejected(RejectReason::Auth), 0);
    assert_eq!(m2.rejected(RejectReason::Malformed), 0);
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn a_new_key_copies_only_itself_into_the_next_view() {
    let (n1, _) = member(7, 1, &[], None).await;
    let (n2, _) = member(7, 2, &[1], None).await;
    n1.publish("kept", "the same value in every view").await;
    let holds = |v: &dcnet_agent::gossip::ClusterView, key: &str| {
        v.nodes
            .get("node-7-1")
            .is_some_and(|n| n.keys.contains_key(key))
    };
    let first = n2
        .wait_for(WAIT, |v| holds(v, "kept"))
        .await
        .expect("kept arrives");
    n1.publish("new", "another").await;
    let second = n2
        .wait_for(WAIT, |v| holds(v, "new"))
        .await
        .expect("new arrives");
    // The views are different maps; the unchanged value is one copy shared by both.
    let value = |v: &dcnet_agent::gossip::ClusterView| v.nodes["node-7-1"].keys["kept"].clone();
    assert!(std::sync::Arc::ptr_eq(&value(&first), &value(&second)));
    assert!(!std::sync::Arc::ptr_eq(
        &first.nodes["node-7-1"].keys,
        &second.nodes["node-7-1"].keys
    ));
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn a_member_with_another_secret_never_joins_and_is_counted() {
    let (n1, m1) = member(3, 1, &[], None).await;
    let (n2, _) = member(3, 2, &[1], None).await;
    let (intruder, _) = member(3, 9, &[1], Some(b"some-other-secret-entirely")).await;
    assert!(
        n1.wait_for(WAIT, |v| v.up_nodes().count() == 2)
            .await
            .is_some()
    );
    // Give the intruder several gossip rounds to try.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !n1.view().nodes.contains_key("node-3-9"),
        "intruder must not appear"
    );
    assert!(
        !n2.view().nodes.contains_key("node-3-9"),
        "intruder must not appear"
    );
    assert!(
        intruder.view().nodes.len() == 1,
        "the intruder learns nothing either"
    );
    assert!(
        m1.rejected(RejectReason::Auth) > 0,
        "its datagrams were counted as rejected"
    );
    for n in [n1, n2, intruder] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_stopped_member_is_reported_down() {
    let (n1, _) = member(4, 1, &[], None).await;
    let (n2, _) = member(4, 2, &[1], None).await;
    assert!(
        n1.wait_for(WAIT, |v| v.up_nodes().count() == 2)
            .await
            .is_some()
    );
    let mut events = n1.subscribe();
    n2.shutdown().await;
    let down = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Event::NodeDown { node }) = events.recv().await {
                break node;
            }
        }
    })
    .await
    .expect("NodeDown within the bound");
    assert_eq!(down, "node-4-2");
    assert!(n1.view().nodes.get("node-4-2").is_some_and(|n| !n.is_up));
    n1.shutdown().await;
}

/// An authentic datagram that chitchat cannot decode (a peer of an incompatible version) is
/// counted as malformed, and the member keeps receiving gossip afterwards; the same datagram
/// sent again is a replay, and neither gets an answer.
#[tokio::test]
async fn an_authentic_but_undecodable_datagram_does_not_stop_gossip_and_is_not_replayed() {
    use dcnet_agent::gossip::frame::Sealer;
    let (n1, m1) = member(5, 1, &[], None).await;
    let (n2, _) = member(5, 2, &[1], None).await;
    assert!(
        n1.wait_for(WAIT, |v| v.up_nodes().count() == 2)
            .await
            .is_some()
    );

    let secret = settings(IpAddr::from([127, 77, 5, 1]), &[]).secret;
    let keyring = Keyring::in_memory(Key::from_secret(&secret));
    let mut sealer = Sealer::new(keyring, "127.77.5.9:62501".parse().unwrap());
    let junk = sealer
        .seal(b"not a chitchat envelope", 7, dcnet_agent::unix_ms())
        .unwrap();
    let socket = tokio::net::UdpSocket::bind("127.77.5.9:0").await.unwrap();
    for _ in 0..2 {
        for datagram in &junk {
            socket.send_to(datagram, "127.77.5.1:62501").await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(m1.rejected(RejectReason::Malformed), 1);
    assert_eq!(m1.rejected(RejectReason::Replay), 1);
    assert_eq!(m1.rejected(RejectReason::Auth), 0);
    let mut buf = [0; 64];
    assert!(
        socket.try_recv_from(&mut buf).is_err(),
        "the sender's socket got an answer"
    );

    n2.publish("after", "junk").await;
    assert!(
        n1.wait_for(WAIT, |v| v.get("node-5-2", "after") == Some("junk"))
            .await
            .is_some(),
        "gossip still flows after the undecodable datagram"
    );
    n1.shutdown().await;
    n2.shutdown().await;
}

/// A member dead for longer than the grace period is forgotten: its keys are reported deleted
/// and the node removed.
#[tokio::test]
async fn a_dead_member_is_forgotten_after_the_grace_period() {
    let grace = |s: &mut GossipSettings| s.dead_node_grace = Duration::from_secs(2);
    let (n1, _) = member_with(6, 1, &[], grace).await;
    let (n2, _) = member_with(6, 2, &[1], grace).await;
    n2.publish("mine", "v").await;
    // Up (two heartbeats seen), not merely known, so that going down is an event.
    let up_with_key = |v: &dcnet_agent::gossip::ClusterView| {
        v.get("node-6-2", "mine") == Some("v") && v.up_nodes().count() == 2
    };
    assert!(n1.wait_for(WAIT, up_with_key).await.is_some());
    let mut events = n1.subscribe();
    n2.shutdown().await;
    let mut seen = Vec::new();
    let removed = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e @ Event::NodeRemoved { .. }) => {
                    seen.push(e);
                    break;
                }
                Ok(e) => seen.push(e),
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(removed.is_ok(), "no NodeRemoved within {WAIT:?}: {seen:?}");
    let node = "node-6-2".to_string();
    assert!(
        seen.contains(&Event::NodeDown { node: node.clone() }),
        "{seen:?}"
    );
    assert!(
        seen.contains(&Event::KeyDeleted {
            node: node.clone(),
            key: "mine".into()
        }),
        "{seen:?}"
    );
    assert!(!n1.view().nodes.contains_key(&node));
    n1.shutdown().await;
}
