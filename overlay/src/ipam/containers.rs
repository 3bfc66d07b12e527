//! Container addresses inside one agent's subnet: the first host address is the bridge's (the
//! containers' gateway), the rest go to containers, one each, never two at once. The same
//! for both families; an IPv6 subnet numbers at most 2^32 containers.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::pool::{from_u128, to_u128};
use serde::{Deserialize, Serialize};

/// Why an address could not be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerIpError {
    #[error("all {capacity} container addresses of {subnet} are in use; detach a container first")]
    Full { subnet: IpNetwork, capacity: u32 },
}

/// The containers of one subnet and their addresses. Serialisable, so the agent persists it
/// and an address survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerIps {
    subnet: IpNetwork,
    /// Container id → address.
    containers: BTreeMap<String, IpAddr>,
    /// Offset where the next search starts: freed addresses are reused last, which keeps stale
    /// ARP and connection-tracking entries elsewhere from pointing at a new container.
    next: u32,
}

impl ContainerIps {
    /// An empty allocation of `subnet` (at least a /30, or a /126).
    pub fn new(subnet: impl Into<IpNetwork>) -> Self {
        let subnet = subnet.into();
        Self {
            subnet,
            containers: BTreeMap::new(),
            next: 2,
        }
    }

    pub fn subnet(&self) -> IpNetwork {
        self.subnet
    }

    /// The bridge's address, which containers route through.
    pub fn gateway(&self) -> IpAddr {
        offset(self.subnet, 1)
    }

    /// How many containers fit.
    pub fn capacity(&self) -> u32 {
        self.last() - 1
    }

    /// The offset of the last container address: before the broadcast address (IPv4 keeps
    /// one; IPv6 leaves the last address out alike), at most 2^32 − 2.
    fn last(&self) -> u32 {
        let size = match self.subnet {
            IpNetwork::V4(n) => u128::from(n.size()),
            IpNetwork::V6(n) => n.size(),
        };
        size.saturating_sub(2).min(u128::from(u32::MAX - 1)) as u32
    }

    /// The address of `container`, allocating one if it has none (so a retried attach gets the
    /// same address).
    pub fn allocate(&mut self, container: &str) -> Result<IpAddr, ContainerIpError> {
        if let Some(&addr) = self.containers.get(container) {
            return Ok(addr);
        }
        let used: std::collections::BTreeSet<IpAddr> = self.containers.values().copied().collect();
        let (first, last) = (2, self.last());
        let span = last + 1 - first;
        let start = self.next.clamp(first, last);
        let found = (0..span)
            .map(|i| first + (start - first + i) % span)
            .find(|&o| !used.contains(&offset(self.subnet, o)));
        let Some(o) = found else {
            return Err(ContainerIpError::Full {
                subnet: self.subnet,
                capacity: self.capacity(),
            });
        };
        let addr = offset(self.subnet, o);
        self.containers.insert(container.to_owned(), addr);
        self.next = if o == last { first } else { o + 1 };
        Ok(addr)
    }

    /// Frees the address of `container`, returning it.
    pub fn release(&mut self, container: &str) -> Option<IpAddr> {
        self.containers.remove(container)
    }

    /// The address of `container`, if it has one.
    pub fn get(&self, container: &str) -> Option<IpAddr> {
        self.containers.get(container).copied()
    }

    /// Every container and its address.
    pub fn iter(&self) -> impl Iterator<Item = (&str, IpAddr)> {
        self.containers.iter().map(|(c, &a)| (c.as_str(), a))
    }
}

fn offset(subnet: IpNetwork, n: u32) -> IpAddr {
    from_u128(subnet.ip(), to_u128(subnet.network()) + u128::from(n))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ips(subnet: &str) -> ContainerIps {
        ContainerIps::new(subnet.parse::<IpNetwork>().unwrap())
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn an_ipv6_subnet_numbers_like_an_ipv4_one() {
        let mut c = ips("fd01:b::7:0:0:0/80");
        assert_eq!(c.gateway(), "fd01:b::7:0:0:1".parse::<IpAddr>().unwrap());
        assert_eq!(c.capacity(), u32::MAX - 2);
        assert_eq!(c.allocate("a").unwrap().to_string(), "fd01:b::7:0:0:2");
        assert_eq!(c.allocate("b").unwrap().to_string(), "fd01:b::7:0:0:3");
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("fd01:b:0:0:7::/80"), "{json}");
        assert_eq!(serde_json::from_str::<ContainerIps>(&json).unwrap(), c);
    }

    #[test]
    fn records_of_ipv4_only_agents_still_load() {
        let old = r#"{"subnet":"9.0.3.0/24","containers":{"a/eth0":"9.0.3.2"},"next":3}"#;
        let c: ContainerIps = serde_json::from_str(old).unwrap();
        assert_eq!(c.get("a/eth0"), Some(v4(9, 0, 3, 2)));
    }

    #[test]
    fn addresses_skip_network_gateway_and_broadcast() {
        let mut c = ips("9.0.3.0/24");
        assert_eq!(c.gateway(), v4(9, 0, 3, 1));
        assert_eq!(c.capacity(), 253);
        assert_eq!(c.allocate("a").unwrap(), v4(9, 0, 3, 2));
        assert_eq!(c.allocate("b").unwrap(), v4(9, 0, 3, 3));
        assert_eq!(c.allocate("a").unwrap(), v4(9, 0, 3, 2), "idempotent");
    }

    #[test]
    fn never_twice_and_full_is_an_error() {
        let mut c = ips("9.0.3.0/29"); // .2 to .6
        let got: Vec<IpAddr> = (0..5)
            .map(|i| c.allocate(&i.to_string()).unwrap())
            .collect();
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 5);
        assert_eq!(
            c.allocate("x").unwrap_err().to_string(),
            "all 5 container addresses of 9.0.3.0/29 are in use; detach a container first"
        );
        assert_eq!(c.release("2"), Some(v4(9, 0, 3, 4)));
        assert_eq!(c.allocate("x").unwrap(), v4(9, 0, 3, 4));
    }

    #[test]
    fn freed_addresses_are_reused_last_and_state_round_trips() {
        let mut c = ips("9.0.3.0/24");
        let a = c.allocate("a").unwrap();
        c.release("a");
        assert_ne!(c.allocate("b").unwrap(), a);
        let json = serde_json::to_string(&c).unwrap();
        let back: ContainerIps = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.get("b"), c.get("b"));
    }
}
