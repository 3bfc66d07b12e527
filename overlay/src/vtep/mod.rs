//! The VXLAN tunnel endpoint and the per-peer kernel objects that route overlay traffic through
//! it.
//!
//! - [`plan`]: the objects wanted for a set of peers, and the changes from what the kernel
//!   has to what is wanted (pure).
//! - [`kernel`]: the VXLAN link itself, reading those objects back, and applying changes.
//!
//! Per remote agent the kernel holds four objects, all on the VTEP (design §3):
//! a permanent neighbour (remote VTEP IP → VTEP MAC), an FDB entry (VTEP MAC → remote underlay
//! IP), a route in the overlay table (remote subnet via remote VTEP IP, onlink) and a policy
//! rule that sends traffic to that subnet to the overlay table. With IPv6 overlays the VTEP
//! also has an IPv6 address ([`address6`]), and a peer adds an IPv6 neighbour and an IPv6
//! route and rule per IPv6 subnet; the FDB entry (one MAC per VTEP) serves both families.

pub mod kernel;
pub mod plan;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

pub use kernel::{Applied, VtepLink};
pub use plan::{Change, Peer, TunnelState};

/// Device name of the VTEP, as dcos-overlay names it.
pub const DEFAULT_NAME: &str = "vtep1024";
/// VXLAN network identifier.
pub const DEFAULT_VNI: u32 = 1024;
/// UDP port of the tunnel.
pub const DEFAULT_PORT: u16 = 64000;
/// Routing table holding the routes to remote subnets.
pub const DEFAULT_TABLE: u32 = 42;
/// Priority of the policy rules: before the main table (32766).
pub const DEFAULT_RULE_PRIORITY: u32 = 32000;
/// Route and rule protocol that marks objects dcnet owns (`ip route show proto 220`).
pub const PROTOCOL: u8 = 220;
/// VXLAN over IPv4 costs 50 bytes of the underlay MTU.
pub const VXLAN_OVERHEAD: u32 = 50;
/// VXLAN over IPv6 costs 70.
pub const VXLAN6_OVERHEAD: u32 = 70;

/// The IPv6 address of the VTEP whose IPv4 address is `vtep`: the IPv4 address in the low 32
/// bits of `range6` (fd01:a::/64 and 44.128.0.7 make fd01:a::2c80:7). Unique because the IPv4
/// address is, known to every node from the IPv4 lease alone, and readable by operators.
/// `range6` must be a /96 or shorter (the configuration checks it).
pub fn address6(range6: Ipv6Network, vtep: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(range6.network()) | u128::from(u32::from(vtep)))
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The VTEP MAC of a VTEP address: OUI 70:b3:d5 and the address's low 24 bits, so it never
    /// changes while the address does not.
    pub fn for_vtep(ip: Ipv4Addr) -> Self {
        let [_, a, b, c] = ip.octets();
        Mac([0x70, 0xb3, 0xd5, a, b, c])
    }

    /// From a netlink link-layer address attribute; `None` unless 6 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Mac)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl std::str::FromStr for Mac {
    type Err = String;

    /// `aa:bb:cc:dd:ee:ff`, as [`fmt::Display`] writes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().filter(|p| p.len() == 2);
            *byte = part
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        }
        Ok(Mac(mac))
    }
}

/// How the local VTEP is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepConfig {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// This node's underlay address: the tunnel's source (IPv4 or IPv6; peers of the other
    /// family cannot be reached).
    pub local: IpAddr,
    /// The VTEP address with the VTEP range's prefix (44.128.0.7/20).
    pub address: Ipv4Network,
    /// Its IPv6 address with the IPv6 VTEP range's prefix (fd01:a::2c80:7/64), when IPv6
    /// overlays are configured.
    pub address6: Option<Ipv6Network>,
    pub mtu: u32,
    pub table: u32,
    pub rule_priority: u32,
}

impl VtepConfig {
    /// The VTEP's MAC.
    pub fn mac(&self) -> Mac {
        Mac::for_vtep(self.address.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_read_back_as_written() {
        let mac = Mac([0x0a, 0x58, 9, 0, 3, 0xff]);
        assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
        for bad in [
            "",
            "0a:58:09:00:03",
            "0a:58:09:00:03:ff:00",
            "0a:58:09:00:03:fg",
            "a:58:9:0:3:ff",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ipv6_vtep_address_holds_the_ipv4_one() {
        let ip = address6("fd01:a::/64".parse().unwrap(), Ipv4Addr::new(44, 128, 0, 7));
        assert_eq!(ip.to_string(), "fd01:a::2c80:7");
    }

    #[test]
    fn vtep_mac_is_the_oui_and_the_low_24_bits() {
        let mac = Mac::for_vtep(Ipv4Addr::new(44, 128, 3, 7));
        assert_eq!(mac.to_string(), "70:b3:d5:80:03:07");
        assert_eq!(Mac::from_slice(&mac.0), Some(mac));
        assert_eq!(Mac::from_slice(&[1, 2, 3]), None);
    }
}
