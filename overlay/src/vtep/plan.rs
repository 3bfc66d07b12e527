//! The tunnel objects wanted for a set of peers, and the changes that bring the kernel there.
//!
//! Objects are compared as sets of complete values, so a changed value (a peer back with a new
//! underlay address) shows up as a set of the new one and a delete of the old one. Changes are
//! ordered so that traffic never takes a half-built path: neighbours and FDB entries before the
//! routes and rules that lead to them on the way up, rules and routes first on the way down.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::Mac;

/// A remote agent as the tunnel needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// For logs.
    pub node: String,
    pub vtep_ip: Ipv4Addr,
    /// The VTEP's IPv6 address, when IPv6 overlays are configured.
    pub vtep_ip6: Option<Ipv6Addr>,
    /// The agent's underlay address, of the local underlay's family.
    pub underlay: IpAddr,
    /// The agent's subnets: one or two per overlay (IPv4, IPv6).
    pub subnets: Vec<IpNetwork>,
}

/// The tunnel objects of a node, wanted or read from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelState {
    /// Remote VTEP IP → VTEP MAC (permanent neighbours), both families.
    pub neighbours: BTreeSet<(IpAddr, Mac)>,
    /// VTEP MAC → remote underlay IP (FDB entries).
    pub fdb: BTreeSet<(Mac, IpAddr)>,
    /// Remote subnet → remote VTEP IP of the same family (routes in the overlay table).
    pub routes: BTreeSet<(IpNetwork, IpAddr)>,
    /// Remote subnets sent to the overlay table (policy rules).
    pub rules: BTreeSet<IpNetwork>,
}

impl TunnelState {
    /// What the kernel should hold for `peers`.
    pub fn desired<'a>(peers: impl IntoIterator<Item = &'a Peer>) -> Self {
        let mut state = Self::default();
        for peer in peers {
            let mac = Mac::for_vtep(peer.vtep_ip);
            state.neighbours.insert((IpAddr::V4(peer.vtep_ip), mac));
            if let Some(ip6) = peer.vtep_ip6 {
                state.neighbours.insert((IpAddr::V6(ip6), mac));
            }
            state.fdb.insert((mac, peer.underlay));
            for &subnet in &peer.subnets {
                let via = match subnet {
                    IpNetwork::V4(_) => IpAddr::V4(peer.vtep_ip),
                    // No IPv6 VTEP address here: no IPv6 overlay to route.
                    IpNetwork::V6(_) => match peer.vtep_ip6 {
                        Some(ip6) => IpAddr::V6(ip6),
                        None => continue,
                    },
                };
                state.routes.insert((subnet, via));
                state.rules.insert(subnet);
            }
        }
        state
    }

    /// Number of kernel objects.
    pub fn len(&self) -> usize {
        self.neighbours.len() + self.fdb.len() + self.routes.len() + self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The changes that turn `self` (what the kernel has) into `desired`, in a safe order.
    pub fn changes_to(&self, desired: &TunnelState) -> Vec<Change> {
        use Change::*;
        let mut changes = Vec::new();
        // Down: stop sending traffic before removing what it needs.
        changes.extend(self.rules.difference(&desired.rules).map(|&n| DelRule(n)));
        for &(net, via) in self.routes.difference(&desired.routes) {
            // A route whose destination stays is replaced below, not deleted.
            if !desired.routes.iter().any(|&(n, _)| n == net) {
                changes.push(DelRoute(net, via));
            }
        }
        for &(ip, mac) in self.neighbours.difference(&desired.neighbours) {
            if !desired.neighbours.iter().any(|&(i, _)| i == ip) {
                changes.push(DelNeighbour(ip, mac));
            }
        }
        changes.extend(
            self.fdb
                .difference(&desired.fdb)
                .map(|&(mac, dst)| DelFdb(mac, dst)),
        );
        // Up: neighbours and FDB entries first.
        changes.extend(
            desired
                .fdb
                .difference(&self.fdb)
                .map(|&(mac, dst)| SetFdb(mac, dst)),
        );
        changes.extend(
            desired
                .neighbours
                .difference(&self.neighbours)
                .map(|&(ip, mac)| SetNeighbour(ip, mac)),
        );
        changes.extend(
            desired
                .routes
                .difference(&self.routes)
                .map(|&(net, via)| SetRoute(net, via)),
        );
        changes.extend(desired.rules.difference(&self.rules).map(|&n| AddRule(n)));
        changes
    }
}

/// One kernel change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Add or replace the neighbour of this IP.
    SetNeighbour(IpAddr, Mac),
    DelNeighbour(IpAddr, Mac),
    /// Add this FDB destination (replacing another destination of the same MAC).
    SetFdb(Mac, IpAddr),
    DelFdb(Mac, IpAddr),
    /// Add or replace the route to this subnet.
    SetRoute(IpNetwork, IpAddr),
    DelRoute(IpNetwork, IpAddr),
    AddRule(IpNetwork),
    DelRule(IpNetwork),
}

impl Change {
    /// The kind of object, for metrics.
    pub fn object(&self) -> &'static str {
        match self {
            Change::SetNeighbour(..) | Change::DelNeighbour(..) => "neighbour",
            Change::SetFdb(..) | Change::DelFdb(..) => "fdb",
            Change::SetRoute(..) | Change::DelRoute(..) => "route",
            Change::AddRule(..) | Change::DelRule(..) => "rule",
        }
    }

    /// Whether this adds or replaces (rather than deletes).
    pub fn is_set(&self) -> bool {
        matches!(
            self,
            Change::SetNeighbour(..)
                | Change::SetFdb(..)
                | Change::SetRoute(..)
                | Change::AddRule(..)
        )
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::SetNeighbour(ip, mac) => write!(f, "set neighbour {ip} lladdr {mac}"),
            Change::DelNeighbour(ip, mac) => write!(f, "delete neighbour {ip} lladdr {mac}"),
            Change::SetFdb(mac, dst) => write!(f, "set fdb {mac} dst {dst}"),
            Change::DelFdb(mac, dst) => write!(f, "delete fdb {mac} dst {dst}"),
            Change::SetRoute(net, via) => write!(f, "set route {net} via {via}"),
            Change::DelRoute(net, via) => write!(f, "delete route {net} via {via}"),
            Change::AddRule(net) => write!(f, "add rule to {net}"),
            Change::DelRule(net) => write!(f, "delete rule to {net}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8, underlay: [u8; 4]) -> Peer {
        Peer {
            node: format!("node-{n}"),
            vtep_ip: Ipv4Addr::new(44, 128, 0, n),
            vtep_ip6: None,
            underlay: Ipv4Addr::from(underlay).into(),
            subnets: vec![format!("9.0.{n}.0/24").parse().unwrap()],
        }
    }

    #[test]
    fn an_ipv6_subnet_adds_a_neighbour_a_route_and_a_rule_but_no_fdb_entry() {
        let mut p = peer(1, [10, 0, 0, 1]);
        let vtep6: Ipv6Addr = "fd01:a::2c80:1".parse().unwrap();
        p.vtep_ip6 = Some(vtep6);
        p.subnets.push("fd01:b:0:0:1::/80".parse().unwrap());
        let s = TunnelState::desired(&[p.clone()]);
        assert_eq!(s.len(), 7);
        assert!(
            s.routes
                .contains(&("fd01:b:0:0:1::/80".parse().unwrap(), IpAddr::V6(vtep6)))
        );
        assert!(
            s.neighbours
                .contains(&(IpAddr::V6(vtep6), Mac::for_vtep(p.vtep_ip)))
        );
        p.vtep_ip6 = None;
        assert_eq!(
            TunnelState::desired(&[p]).len(),
            4,
            "without an IPv6 VTEP address the IPv6 subnet is left out"
        );
    }

    #[test]
    fn four_objects_per_peer() {
        let s = TunnelState::desired(&[peer(1, [10, 0, 0, 1]), peer(2, [10, 0, 0, 2])]);
        assert_eq!(s.len(), 8);
        assert!(s.fdb.contains(&(
            Mac::for_vtep(Ipv4Addr::new(44, 128, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
        )));
    }

    #[test]
    fn nothing_to_do_when_equal() {
        let s = TunnelState::desired(&[peer(1, [10, 0, 0, 1])]);
        assert!(s.changes_to(&s).is_empty());
    }

    #[test]
    fn from_nothing_neighbours_and_fdb_come_before_routes_and_rules() {
        let want = TunnelState::desired(&[peer(1, [10, 0, 0, 1])]);
        let changes = TunnelState::default().changes_to(&want);
        let kinds: Vec<&str> = changes.iter().map(Change::object).collect();
        assert_eq!(kinds, ["fdb", "neighbour", "route", "rule"]);
        assert!(changes.iter().all(Change::is_set));
    }

    #[test]
    fn a_departed_peer_is_removed_rules_first() {
        let have = TunnelState::desired(&[peer(1, [10, 0, 0, 1]), peer(2, [10, 0, 0, 2])]);
        let want = TunnelState::desired(&[peer(1, [10, 0, 0, 1])]);
        let changes = have.changes_to(&want);
        let kinds: Vec<&str> = changes.iter().map(Change::object).collect();
        assert_eq!(kinds, ["rule", "route", "neighbour", "fdb"]);
        assert!(!changes.iter().any(Change::is_set));
    }

    #[test]
    fn a_peer_with_a_new_underlay_address_is_repointed() {
        let have = TunnelState::desired(&[peer(1, [10, 0, 0, 1])]);
        let want = TunnelState::desired(&[peer(1, [10, 0, 0, 9])]);
        let mac = Mac::for_vtep(Ipv4Addr::new(44, 128, 0, 1));
        assert_eq!(
            have.changes_to(&want),
            [
                Change::DelFdb(mac, Ipv4Addr::new(10, 0, 0, 1).into()),
                Change::SetFdb(mac, Ipv4Addr::new(10, 0, 0, 9).into())
            ]
        );
    }

    #[test]
    fn a_changed_route_is_replaced_not_deleted() {
        let have = TunnelState::desired(&[peer(1, [10, 0, 0, 1])]);
        let mut moved = peer(3, [10, 0, 0, 1]);
        moved.subnets = peer(1, [0; 4]).subnets;
        let want = TunnelState::desired(&[moved]);
        let changes = have.changes_to(&want);
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, Change::DelRoute(..) | Change::DelRule(..))),
            "{changes:?}"
        );
        assert!(changes.iter().any(
            |c| matches!(c, Change::SetRoute(_, via) if *via == Ipv4Addr::new(44, 128, 0, 3))
        ));
    }
}
