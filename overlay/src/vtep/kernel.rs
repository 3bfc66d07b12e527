//! The VTEP link and its tunnel objects in the kernel, over netlink.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{IpVersion, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::plan::{Change, TunnelState};
use super::{Mac, PROTOCOL, VtepConfig};
use crate::{Error, Netlink};

/// What applying a list of changes did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Changes the kernel accepted (deletes of objects already gone count as done).
    pub done: Vec<Change>,
    /// Changes the kernel refused, with why.
    pub failed: Vec<(Change, Error)>,
}

/// The local VTEP, as created or found.
#[derive(Debug, Clone)]
pub struct VtepLink {
    config: VtepConfig,
    index: u32,
}

impl VtepLink {
    /// Makes the VTEP exist exactly as `config` says: created if missing, recreated if its
    /// VXLAN parameters differ (the kernel cannot change them in place), its MAC, MTU and
    /// address set, and up. Returns the link and whether anything was changed.
    pub async fn ensure(nl: &Netlink, config: &VtepConfig) -> Result<(Self, bool), Error> {
        let mut changed = false;
        let existing = match nl.link(&config.name).await {
            Ok(link) => Some(link),
            Err(Error::LinkNotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let link = match existing {
            Some(link) if vxlan_matches(&link.attributes, config) => link,
            stale => {
                if stale.is_some() {
                    nl.delete_link(&config.name).await?;
                }
                let link = LinkVxlan::new(&config.name, config.vni).port(config.port);
                let link = match config.local {
                    IpAddr::V4(local) => link.local(local),
                    IpAddr::V6(local) => link.local6(local),
                };
                let message = link
                    .learning(false)
                    .address(config.mac().0.to_vec())
                    .mtu(config.mtu)
                    .up()
                    .build();
                nl.handle
                    .link()
                    .add(message)
                    .execute()
                    .await
                    .map_err(|e| Error::netlink("add vxlan link", &config.name, e))?;
                changed = true;
                nl.link(&config.name).await?
            }
        };
        let index = link.header.index;
        let mac = config.mac();
        let has_mac = link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Address(m) if m[..] == mac.0));
        let has_mtu = link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Mtu(m) if *m == config.mtu));
        let is_up = link
            .header
            .flags
            .contains(netlink_packet_route::link::LinkFlags::Up);
        if !(has_mac && has_mtu && is_up) {
            let set = LinkUnspec::new_with_index(index)
                .address(mac.0.to_vec())
                .mtu(config.mtu)
                .up()
                .build();
            nl.handle
                .link()
                .set(set)
                .execute()
                .await
                .map_err(|e| Error::netlink("configure vxlan link", &config.name, e))?;
            changed = true;
        }
        changed |= nl
            .set_only_address(index, &config.name, config.address.into())
            .await?;
        if let Some(address6) = config.address6 {
            changed |= nl
                .set_only_address(index, &config.name, address6.into())
                .await?;
        }
        Ok((
            Self {
                config: config.clone(),
                index,
            },
            changed,
        ))
    }

    /// The link's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn config(&self) -> &VtepConfig {
        &self.config
    }

    /// The tunnel objects the kernel holds now: permanent neighbours and FDB entries on the
    /// VTEP, routes in the overlay table, and dcnet's rules pointing at it.
    pub async fn read(&self, nl: &Netlink) -> Result<TunnelState, Error> {
        let mut state = TunnelState::default();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let neighbours: Vec<NeighbourMessage> = nl
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::netlink("list neighbours", &self.config.name, e))?;
            for n in neighbours.iter().filter(|n| {
                n.header.ifindex == self.index && n.header.state == NeighbourState::Permanent
            }) {
                if let (Some(ip), Some(mac)) = (neighbour_ip(n), neighbour_mac(n)) {
                    state.neighbours.insert((ip, mac));
                }
            }
        }
        let fdb: Vec<NeighbourMessage> = nl
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("list fdb", &self.config.name, e))?;
        for n in fdb.iter().filter(|n| n.header.ifindex == self.index) {
            if let (Some(dst), Some(mac)) = (neighbour_ip(n), neighbour_mac(n)) {
                // The all-zero MAC is the default destination, not a peer.
                if !mac.is_zero() {
                    state.fdb.insert((mac, dst));
                }
            }
        }
        let routes4 = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(self.config.table)
            .build();
        let routes6 = RouteMessageBuilder::<Ipv6Addr>::new()
            .table_id(self.config.table)
            .build();
        for filter in [routes4, routes6] {
            let routes: Vec<RouteMessage> = nl
                .handle
                .route()
                .get(filter)
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::netlink("list routes", self.config.table, e))?;
            for r in routes
                .iter()
                .filter(|r| crate::netlink::route_table(r) == self.config.table)
            {
                let dst = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                    _ => None,
                });
                let via = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                    _ => None,
                });
                if let (Some(dst), Some(via)) = (dst, via)
                    && let Ok(net) = IpNetwork::new(dst, r.header.destination_prefix_length)
                {
                    state.routes.insert((net, via));
                }
            }
        }
        for version in [IpVersion::V4, IpVersion::V6] {
            let rules: Vec<RuleMessage> = nl
                .handle
                .rule()
                .get(version)
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::netlink("list rules", self.config.table, e))?;
            for r in rules.iter().filter(|r| self.is_our_rule(r)) {
                let dst = r.attributes.iter().find_map(|a| match a {
                    RuleAttribute::Destination(ip) => Some(*ip),
                    _ => None,
                });
                if let Some(dst) = dst
                    && let Ok(net) = IpNetwork::new(dst, r.header.dst_len)
                {
                    state.rules.insert(net);
                }
            }
        }
        Ok(state)
    }

    /// Applies `changes` in order. A failed change does not stop the others: the next
    /// reconcile retries it.
    pub async fn apply(&self, nl: &Netlink, changes: &[Change]) -> Applied {
        let mut applied = Applied::default();
        for &change in changes {
            match self.apply_one(nl, change).await {
                Ok(()) => applied.done.push(change),
                Err(e) => applied.failed.push((change, e)),
            }
        }
        applied
    }

    async fn apply_one(&self, nl: &Netlink, change: Change) -> Result<(), Error> {
        let h = &nl.handle;
        let result = match change {
            Change::SetNeighbour(ip, mac) => {
                h.neighbours()
                    .add(self.index, ip)
                    .link_layer_address(&mac.0)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
            }
            Change::DelNeighbour(ip, _) => {
                let mut m = NeighbourMessage::default();
                m.header.ifindex = self.index;
                let (family, destination) = match ip {
                    IpAddr::V4(ip) => (AddressFamily::Inet, NeighbourAddress::Inet(ip)),
                    IpAddr::V6(ip) => (AddressFamily::Inet6, NeighbourAddress::Inet6(ip)),
                };
                m.header.family = family;
                m.attributes
                    .push(NeighbourAttribute::Destination(destination));
                absent_ok(h.neighbours().del(m).execute().await)
            }
            Change::SetFdb(mac, dst) => {
                h.neighbours()
                    .add_bridge(self.index, &mac.0)
                    .destination(dst)
                    .flags(NeighbourFlags::Own)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
            }
            Change::DelFdb(mac, dst) => {
                let mut m = NeighbourMessage::default();
                m.header.family = AddressFamily::Bridge;
                m.header.ifindex = self.index;
                m.header.flags = NeighbourFlags::Own;
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
                m.attributes
                    .push(NeighbourAttribute::Destination(match dst {
                        IpAddr::V4(ip) => NeighbourAddress::Inet(ip),
                        IpAddr::V6(ip) => NeighbourAddress::Inet6(ip),
                    }));
                absent_ok(h.neighbours().del(m).execute().await)
            }
            Change::SetRoute(net, via) => {
                h.route()
                    .add(self.route(net, via))
                    .replace()
                    .execute()
                    .await
            }
            Change::DelRoute(net, via) => {
                absent_ok(h.route().del(self.route(net, via)).execute().await)
            }
            Change::AddRule(net) => {
                let add = h
                    .rule()
                    .add()
                    .table_id(self.config.table)
                    .priority(self.config.rule_priority)
                    .action(RuleAction::ToTable);
                let ours = RuleAttribute::Protocol(RouteProtocol::Other(PROTOCOL));
                let result = match net {
                    IpNetwork::V4(n) => {
                        let mut req = add.v4().destination_prefix(n.network(), n.prefix());
                        req.message_mut().attributes.push(ours);
                        req.execute().await
                    }
                    IpNetwork::V6(n) => {
                        let mut req = add.v6().destination_prefix(n.network(), n.prefix());
                        req.message_mut().attributes.push(ours);
                        req.execute().await
                    }
                };
                // EEXIST: the same rule is there already (added by a concurrent pass).
                match result {
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {
                        Ok(())
                    }
                    other => other,
                }
            }
            Change::DelRule(net) => {
                let mut m = RuleMessage::default();
                m.header.family = if net.is_ipv6() {
                    AddressFamily::Inet6
                } else {
                    AddressFamily::Inet
                };
                m.header.dst_len = net.prefix();
                m.header.action = RuleAction::ToTable;
                m.attributes.push(RuleAttribute::Destination(net.network()));
                m.attributes.push(RuleAttribute::Table(self.config.table));
                m.attributes
                    .push(RuleAttribute::Priority(self.config.rule_priority));
                absent_ok(h.rule().del(m).execute().await)
            }
        };
        result.map_err(|e| Error::netlink("apply", change, e))
    }

    fn route(&self, net: IpNetwork, via: IpAddr) -> RouteMessage {
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(net.network(), net.prefix())
            .and_then(|b| b.gateway(via));
        match builder {
            Ok(b) => b
                .output_interface(self.index)
                .table_id(self.config.table)
                .protocol(RouteProtocol::Other(PROTOCOL))
                .kind(RouteType::Unicast)
                .onlink()
                .build(),
            // The plan pairs each subnet with a gateway of its family; this is unreachable,
            // and a route without destination is refused by the kernel rather than misrouted.
            Err(_) => RouteMessage::default(),
        }
    }

    fn is_our_rule(&self, r: &RuleMessage) -> bool {
        let table = r
            .attributes
            .iter()
            .find_map(|a| match a {
                RuleAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(r.header.table));
        let priority = r.attributes.iter().find_map(|a| match a {
            RuleAttribute::Priority(p) => Some(*p),
            _ => None,
        });
        table == self.config.table && priority == Some(self.config.rule_priority)
    }
}

/// Deleting something already gone is success: the goal is its absence.
fn absent_ok(result: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match result {
        Err(rtnetlink::Error::NetlinkError(e))
            if [-libc::ENOENT, -libc::ESRCH, -libc::ENODEV].contains(&e.raw_code()) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn vxlan_matches(attributes: &[LinkAttribute], config: &VtepConfig) -> bool {
    let Some(infos) = attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    }) else {
        return false;
    };
    let is_vxlan = infos
        .iter()
        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)));
    let Some(data) = infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(data)) => Some(data),
        _ => None,
    }) else {
        return false;
    };
    let has = |want: InfoVxlan| data.contains(&want);
    is_vxlan
        && has(InfoVxlan::Id(config.vni))
        && has(InfoVxlan::Port(config.port))
        && match config.local {
            IpAddr::V4(ip) => has(InfoVxlan::Local(ip)),
            IpAddr::V6(ip) => has(InfoVxlan::Local6(ip)),
        }
        && has(InfoVxlan::Learning(false))
}

fn neighbour_ip(n: &NeighbourMessage) -> Option<IpAddr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        // FDB entries (family AF_BRIDGE) carry their IP destination as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => match bytes.len() {
            4 => <[u8; 4]>::try_from(&bytes[..]).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(&bytes[..]).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

fn neighbour_mac(n: &NeighbourMessage) -> Option<Mac> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) => Mac::from_slice(mac),
        _ => None,
    })
}
