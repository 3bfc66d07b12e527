//! What agents say about the overlay in gossip, and what a node reads from it: the lease
//! records other agents hold or claim, and the peers the tunnel must reach. Pure, so it is
//! unit-tested on facts decoded from hand-made views.
//!
//! Keys, one per agent and pool, each a [`LeaseRecord`] as JSON:
//! - `overlay/vtep`: the agent's VTEP address (a /32 of the VTEP range);
//! - `overlay/net/<name>`: the agent's subnet of overlay `<name>`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use dcnet_overlay::ipam::{LeaseRecord, LeaseState, NetworkPools};
use dcnet_overlay::vtep::{self, Peer};
use ipnetwork::Ipv6Network;

use super::decode::{Facts, NodeFacts};

/// Key of an agent's VTEP lease.
pub const VTEP_KEY: &str = "overlay/vtep";

/// Key of an agent's lease on overlay `network`.
pub fn network_key(network: &str) -> String {
    format!("{NETWORK_PREFIX}{network}")
}

/// Prefix of the keys under which agents hold subnets of an overlay network.
pub const NETWORK_PREFIX: &str = "overlay/net/";

/// The overlay networks some node holds a subnet lease of (or claims one).
pub fn networks(facts: &Facts) -> BTreeSet<String> {
    facts
        .nodes
        .values()
        .flat_map(|n| n.networks.keys())
        .cloned()
        .collect()
}

/// A node's record of the pool `network` names: its VTEP lease with `None`, its subnet of
/// that overlay network otherwise.
fn record(node: &NodeFacts, network: Option<&str>) -> Option<LeaseRecord> {
    match network {
        None => node.vtep,
        Some(name) => node.networks.get(name).copied(),
    }
}

/// The records other agents publish for the pool `network` names (see `record`) that still
/// count: from agents that are up, or down for less than `release` (their slots stay reserved
/// that long).
pub fn observed_records(
    facts: &Facts,
    network: Option<&str>,
    now: SystemTime,
    release: Duration,
) -> Vec<(String, LeaseRecord)> {
    facts
        .nodes
        .values()
        .filter(|n| !n.is_self)
        .filter(|n| n.is_up || now.duration_since(n.last_heard).unwrap_or_default() < release)
        .filter_map(|n| Some((n.id.clone(), record(n, network)?)))
        .collect()
}

/// The remote agents the tunnel must reach: up, or down for less than `release` (their leases
/// are still theirs: an agent restarting, or a node that may come back, keeps its routes, and
/// traffic for its subnets goes to its VTEP rather than out of the default route), with an
/// underlay address of the family of `underlay` (this node's: VXLAN runs over one family), a
/// held VTEP
/// lease, and held subnets of the `networks` this node has, each with its IPv6 pair on a
/// dual-stack network (subnets of overlays it does not know are left out). With `vtep6` (some
/// network has IPv6 subnets), each peer's VTEP has the IPv6 address its IPv4 one makes.
pub fn peers(
    facts: &Facts,
    underlay: IpAddr,
    networks: &[(String, NetworkPools)],
    vtep6: Option<Ipv6Network>,
    (now, release): (SystemTime, Duration),
) -> Vec<Peer> {
    facts
        .nodes
        .values()
        .filter(|n| !n.is_self)
        .filter(|n| n.is_up || now.duration_since(n.last_heard).unwrap_or_default() < release)
        .filter_map(|n| {
            let info = n.info.as_deref()?;
            if info.address.is_ipv4() != underlay.is_ipv4() {
                return None;
            }
            let IpAddr::V4(vtep_ip) = held(n.vtep)?.net.ip() else {
                return None;
            };
            let subnets = networks
                .iter()
                .filter_map(|(name, pools)| {
                    let lease = held(record(n, Some(name)))?;
                    // A record outside this node's pool (another configuration) is no route.
                    pools.agreed().index(lease.net)?;
                    Some(pools.subnets(lease.net))
                })
                .flatten()
                .collect();
            Some(Peer {
                node: info.name.clone(),
                vtep_ip,
                vtep_ip6: vtep6.map(|range| vtep::address6(range, vtep_ip)),
                underlay: info.address,
                subnets,
            })
        })
        .collect()
}

fn held(record: Option<LeaseRecord>) -> Option<LeaseRecord> {
    record.filter(|r| r.state == LeaseState::Held)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use super::*;
    use crate::facts::decode::tests_support::decoded as facts;
    use crate::gossip::view::tests_support::view_with;

    fn info(name: &str, addr: &str) -> String {
        format!(r#"{{"name":"{name}","address":"{addr}","roles":["agent"],"version":"0"}}"#)
    }

    fn rec(net: &str, state: &str) -> String {
        format!(r#"{{"net":"{net}","state":"{state}","since_ms":1}}"#)
    }

    fn keys(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn peers_need_a_held_vtep_and_list_held_subnets_of_known_networks() {
        let view = view_with(&[
            (
                "a",
                keys(&[
                    ("node", info("node-a", "10.0.0.1")),
                    (VTEP_KEY, rec("44.128.0.1/32", "held")),
                    ("overlay/net/dcos", rec("9.0.1.0/24", "held")),
                    ("overlay/net/other", rec("10.1.0.0/24", "held")),
                ]),
            ),
            (
                "b",
                keys(&[
                    ("node", info("node-b", "10.0.0.2")),
                    (VTEP_KEY, rec("44.128.0.2/32", "claimed")),
                ]),
            ),
            (
                "c",
                keys(&[
                    ("node", info("node-c", "10.0.0.3")),
                    (VTEP_KEY, rec("44.128.0.3/32", "held")),
                    ("overlay/net/dcos", rec("9.0.3.0/24", "claimed")),
                ]),
            ),
            ("d", keys(&[(VTEP_KEY, "not json".into())])),
        ]);
        let dcos = NetworkPools::new(Some(("9.0.0.0/8".parse().unwrap(), 24)), None).unwrap();
        let local = IpAddr::from([10, 0, 0, 9]);
        let peers = peers(
            &facts(&view),
            local,
            &[("dcos".to_owned(), dcos)],
            None,
            (SystemTime::now(), Duration::from_secs(60)),
        );
        assert_eq!(peers.len(), 2, "{peers:?}");
        assert_eq!(peers[0].node, "node-a");
        assert_eq!(peers[0].vtep_ip, Ipv4Addr::new(44, 128, 0, 1));
        assert_eq!(peers[0].vtep_ip6, None);
        assert_eq!(peers[0].underlay, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(peers[0].subnets, ["9.0.1.0/24".parse().unwrap()]);
        assert_eq!(peers[1].node, "node-c");
        assert!(peers[1].subnets.is_empty(), "a claim is not routed to");
    }

    #[test]
    fn peers_of_ipv6_networks_have_an_ipv6_vtep_and_paired_subnets() {
        let view = view_with(&[(
            "a",
            keys(&[
                ("node", info("node-a", "10.0.0.1")),
                (VTEP_KEY, rec("44.128.0.1/32", "held")),
                ("overlay/net/dual", rec("9.0.1.0/24", "held")),
                ("overlay/net/dcos6", rec("fd01:b::5:0:0:0/80", "held")),
                ("overlay/net/stray", rec("fd01:b::6:0:0:0/80", "held")),
            ]),
        )]);
        let dual = NetworkPools::new(
            Some(("9.0.0.0/8".parse().unwrap(), 24)),
            Some(("fd01:e::/64".parse().unwrap(), 80)),
        )
        .unwrap();
        let dcos6 = NetworkPools::new(None, Some(("fd01:b::/64".parse().unwrap(), 80))).unwrap();
        let stray = NetworkPools::new(Some(("10.9.0.0/16".parse().unwrap(), 24)), None).unwrap();
        let networks = [
            ("dual".to_owned(), dual),
            ("dcos6".to_owned(), dcos6),
            ("stray".to_owned(), stray),
        ];
        let local = IpAddr::from([10, 0, 0, 9]);
        let peers = peers(
            &facts(&view),
            local,
            &networks,
            Some("fd01:a::/64".parse().unwrap()),
            (SystemTime::now(), Duration::from_secs(60)),
        );
        assert_eq!(peers[0].vtep_ip6, Some("fd01:a::2c80:1".parse().unwrap()));
        let subnets: Vec<String> = peers[0].subnets.iter().map(ToString::to_string).collect();
        assert_eq!(
            subnets,
            ["9.0.1.0/24", "fd01:e:0:0:1::/80", "fd01:b:0:0:5::/80"],
            "a record outside the pool is left out"
        );
    }

    #[test]
    fn records_of_long_gone_agents_are_released() {
        let mut facts = facts(&view_with(&[
            ("a", keys(&[(VTEP_KEY, rec("44.128.0.1/32", "held"))])),
            ("b", keys(&[(VTEP_KEY, rec("44.128.0.2/32", "held"))])),
        ]));
        let now = SystemTime::now();
        for (id, gone_for) in [("a", 30), ("b", 300)] {
            let node = facts.nodes.get_mut(id).unwrap();
            node.is_up = false;
            node.last_heard = now - Duration::from_secs(gone_for);
        }
        let seen = observed_records(&facts, None, now, Duration::from_secs(60));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "a");
    }

    #[test]
    fn a_peer_down_keeps_its_tunnel_until_its_leases_are_released() {
        let mut facts = facts(&view_with(&[
            (
                "a",
                keys(&[
                    ("node", info("node-a", "10.0.0.1")),
                    (VTEP_KEY, rec("44.128.0.1/32", "held")),
                ]),
            ),
            (
                "b",
                keys(&[
                    ("node", info("node-b", "10.0.0.2")),
                    (VTEP_KEY, rec("44.128.0.2/32", "held")),
                ]),
            ),
        ]));
        let now = SystemTime::now();
        for (id, gone_for) in [("a", 30), ("b", 300)] {
            let node = facts.nodes.get_mut(id).unwrap();
            node.is_up = false;
            node.last_heard = now - Duration::from_secs(gone_for);
        }
        let local = IpAddr::from([10, 0, 0, 9]);
        let peers = peers(&facts, local, &[], None, (now, Duration::from_secs(60)));
        let names: Vec<&str> = peers.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(
            names,
            ["node-a"],
            "restarting or briefly gone: still routed"
        );
    }
}
