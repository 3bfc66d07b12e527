//! Putting a container's network namespace on an overlay and taking it off again: a veth pair
//! from the node's bridge for that overlay into the namespace, the container's addresses (one
//! per family of the overlay), its default routes and MTU. The agent's API, the CNI plugin and
//! the task launcher all use this.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::RouteMessageBuilder;

use crate::vtep::Mac;
use crate::{Error, Netlink, Netns};

/// The node side of one overlay: a bridge holding the containers' gateway address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    /// Gateway addresses with their subnet's prefix (9.0.3.1/24, fd01:b:0:0:3::1/80), one per
    /// family, the first deciding the bridge's MAC.
    pub addresses: Vec<IpNetwork>,
    pub mtu: u32,
}

/// Creates the bridge if missing and sets its address, MTU and state. Returns whether anything
/// changed.
pub async fn ensure_bridge(nl: &Netlink, spec: &BridgeSpec) -> Result<bool, Error> {
    let mut changed = false;
    let link = match nl.link(&spec.name).await {
        Ok(link) => link,
        Err(Error::LinkNotFound(_)) => {
            nl.add_bridge(&spec.name).await?;
            changed = true;
            nl.link(&spec.name).await?
        }
        Err(e) => return Err(e),
    };
    let index = link.header.index;
    // A bridge without an address of its own takes the smallest of its ports' MACs, so a new
    // container could change the gateway's MAC under the others' ARP caches (their traffic to
    // the gateway, DNS included, is then lost until the entries expire). A fixed one never moves.
    let Some(first) = spec.addresses.first() else {
        return Err(Error::InvalidAddress(format!(
            "bridge {} has no gateway address",
            spec.name
        )));
    };
    let mac = gateway_mac(first.ip());
    let has_mac = link
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::Address(m) if m.as_slice() == mac));
    if !has_mac {
        nl.set_mac(&spec.name, mac).await?;
        changed = true;
    }
    let has_mtu = link
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::Mtu(m) if *m == spec.mtu));
    if !has_mtu {
        nl.set_mtu(&spec.name, spec.mtu).await?;
        changed = true;
    }
    for &address in &spec.addresses {
        changed |= nl.set_only_address(index, &spec.name, address).await?;
    }
    if !link
        .header
        .flags
        .contains(netlink_packet_route::link::LinkFlags::Up)
    {
        nl.set_up(&spec.name).await?;
        changed = true;
    }
    Ok(changed)
}

/// The bridge's MAC: locally administered, derived from the gateway address (as CNI's
/// `0a:58:` prefix does; an IPv6 gateway's low 32 bits), so it is the same on every start and
/// unique per subnet.
pub fn gateway_mac(gateway: IpAddr) -> [u8; 6] {
    let [a, b, c, d] = match gateway {
        IpAddr::V4(ip) => ip.octets(),
        IpAddr::V6(ip) => (u128::from(ip) as u32).to_be_bytes(),
    };
    [0x0a, 0x58, a, b, c, d]
}

/// What to attach.
#[derive(Debug, Clone)]
pub struct AttachSpec<'a> {
    /// Container id: names the host side of the veth, so a detach finds it again.
    pub container_id: &'a str,
    /// Interface name inside the container (`eth0`).
    pub ifname: &'a str,
    pub bridge: &'a str,
    /// The container's addresses with their subnet's prefix (9.0.3.7/24), each with its
    /// gateway: one per family of the overlay.
    pub addresses: Vec<(IpNetwork, IpAddr)>,
    pub mtu: u32,
}

/// What an attach made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// Host side of the veth pair, a port of the bridge.
    pub host_veth: String,
    /// The container interface's MAC.
    pub mac: Mac,
    /// The interface got the namespace's default routes of its families (it had none of
    /// them): a second interface in the same namespace leaves the first one's in place.
    pub default_route: bool,
}

/// Name of the host side of a container's veth: `dc` and 11 hex digits of a hash of the
/// container id and interface name (interface names have at most 15 characters).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let hash = [container_id.as_bytes(), b"/", ifname.as_bytes()]
        .concat()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("dc{:011x}", hash & 0xfff_ffff_ffff)
}

/// Attaches the namespace `target` (`host` is a session in the node's namespace). A leftover
/// pair of an earlier, interrupted attach of the same container is replaced. On failure
/// everything made so far is removed again.
pub async fn attach(
    host: &Netlink,
    target: &Netns,
    spec: &AttachSpec<'_>,
) -> Result<Attached, Error> {
    let host_veth = host_veth_name(spec.container_id, spec.ifname);
    match host.delete_link(&host_veth).await {
        Ok(()) | Err(Error::LinkNotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let inside = target.open_netlink()?;
    if inside.link(spec.ifname).await.is_ok() {
        return Err(Error::InterfaceExists {
            netns: target.name().to_owned(),
            ifname: spec.ifname.to_owned(),
        });
    }
    host.add_veth(&host_veth, spec.ifname, Some(target)).await?;
    let result = configure(host, &inside, &host_veth, spec).await;
    if result.is_err() {
        // Deleting one end deletes both.
        let _ = host.delete_link(&host_veth).await;
    }
    result
}

async fn configure(
    host: &Netlink,
    inside: &Netlink,
    host_veth: &str,
    spec: &AttachSpec<'_>,
) -> Result<Attached, Error> {
    host.set_mtu(host_veth, spec.mtu).await?;
    host.set_controller(host_veth, spec.bridge).await?;
    host.set_up(host_veth).await?;

    inside.set_mtu(spec.ifname, spec.mtu).await?;
    let index = inside.link_index(spec.ifname).await?;
    for &(address, _) in &spec.addresses {
        inside.set_only_address(index, spec.ifname, address).await?;
    }
    inside.set_up(spec.ifname).await?;
    inside.set_up("lo").await?;
    let mut default_route = true;
    for &(address, _) in &spec.addresses {
        default_route &= default_route_of(inside, address.is_ipv6()).await?.is_none();
    }
    if default_route {
        for &(_, gateway) in &spec.addresses {
            let any = match gateway {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let route = match RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(any, 0)
                .and_then(|b| b.gateway(gateway))
            {
                Ok(b) => b.output_interface(index).build(),
                Err(e) => return Err(Error::InvalidAddress(format!("gateway {gateway}: {e}"))),
            };
            inside
                .handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(|e| Error::netlink("add default route", format!("via {gateway}"), e))?;
        }
    }
    let mac = interface_mac(inside, spec.ifname).await?;
    Ok(Attached {
        host_veth: host_veth.to_owned(),
        mac,
        default_route,
    })
}

/// The IPv4 or (`ipv6`) IPv6 default route of the main table of the namespace `inside` is a
/// session in: its gateway (if any) and output interface index.
pub async fn default_route_of(
    inside: &Netlink,
    ipv6: bool,
) -> Result<Option<(Option<IpAddr>, u32)>, Error> {
    use futures::TryStreamExt as _;
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};
    let filter = if ipv6 {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    };
    let routes: Vec<netlink_packet_route::route::RouteMessage> = inside
        .handle
        .route()
        .get(filter)
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::netlink("list routes", "main", e))?;
    let main = u32::from(netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN);
    Ok(routes
        .iter()
        .filter(|r| r.header.destination_prefix_length == 0)
        .filter(|r| crate::netlink::route_table(r) == main)
        // The kernel lists an unreachable IPv6 default route (on lo) when there is none.
        .filter(|r| r.header.kind == netlink_packet_route::route::RouteType::Unicast)
        .find_map(|r| {
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })?;
            let gateway = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                _ => None,
            });
            Some((gateway, oif))
        }))
}

/// The MAC of interface `ifname` of the namespace `inside` is a session in (all zeros if it
/// has none).
pub async fn interface_mac(inside: &Netlink, ifname: &str) -> Result<Mac, Error> {
    let link = inside.link(ifname).await?;
    Ok(link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => Mac::from_slice(m),
            _ => None,
        })
        .unwrap_or(Mac([0; 6])))
}

/// Removes a container's veth pair (both ends), if present. Returns whether it was.
pub async fn detach(host: &Netlink, container_id: &str, ifname: &str) -> Result<bool, Error> {
    match host
        .delete_link(&host_veth_name(container_id, ifname))
        .await
    {
        Ok(()) => Ok(true),
        Err(Error::LinkNotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Checks that the container's interface is there with `addresses` and, when it owns the
/// namespace's default routes, that each of `default_via` is there via that gateway on it:
/// what CNI CHECK asks.
pub async fn check(
    target: &Netns,
    ifname: &str,
    addresses: &[IpNetwork],
    default_via: &[IpAddr],
) -> Result<(), Error> {
    let inside = target.open_netlink()?;
    let index = inside.link_index(ifname).await?;
    for &address in addresses {
        let present = inside.addresses(index, address.is_ipv6()).await?;
        if !present.contains(&address) {
            return Err(Error::AddressMissing {
                ifname: ifname.to_owned(),
                address,
            });
        }
    }
    for &gateway in default_via {
        if default_route_of(&inside, gateway.is_ipv6()).await? != Some((Some(gateway), index)) {
            return Err(Error::RouteMissing {
                ifname: ifname.to_owned(),
                gateway,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_fit_and_differ() {
        let a = host_veth_name("task-1", "eth0");
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("dc"));
        assert_eq!(a, host_veth_name("task-1", "eth0"));
        assert_ne!(a, host_veth_name("task-1", "eth1"));
        assert_ne!(a, host_veth_name("task-2", "eth0"));
    }
}
