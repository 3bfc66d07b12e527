//! Container addresses inside one agent's subnet: the first host address is the bridge's (the
//! containers' gateway), the rest go to containers, one each, never two at once.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

/// Why an address could not be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerIpError {
    #[error("all {capacity} container addresses of {subnet} are in use; detach a container first")]
    Full { subnet: Ipv4Network, capacity: u32 },
}

/// The containers of one subnet and their addresses. Serialisable, so the agent persists it
/// and an address survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerIps {
    subnet: Ipv4Network,
    /// Container id → address.
    containers: BTreeMap<String, Ipv4Addr>,
    /// Offset where the next search starts: freed addresses are reused last, which keeps stale
    /// ARP and connection-tracking entries elsewhere from pointing at a new container.
    next: u32,
}

impl ContainerIps {
    /// An empty allocation of `subnet` (at least a /30).
    pub fn new(subnet: Ipv4Network) -> Self {
        Self {
            subnet,
            containers: BTreeMap::new(),
            next: 2,
        }
    }

    pub fn subnet(&self) -> Ipv4Network {
        self.subnet
    }

    /// The bridge's address, which containers route through.
    pub fn gateway(&self) -> Ipv4Addr {
        offset(self.subnet, 1)
    }

    /// How many containers fit.
    pub fn capacity(&self) -> u32 {
        self.subnet.size().saturating_sub(3)
    }

    /// The address of `container`, allocating one if it has none (so a retried attach gets the
    /// same address).
    pub fn allocate(&mut self, container: &str) -> Result<Ipv4Addr, ContainerIpError> {
        if let Some(&addr) = self.containers.get(container) {
            return Ok(addr);
        }
        let used: std::collections::BTreeSet<Ipv4Addr> =
            self.containers.values().copied().collect();
        let (first, last) = (2, self.subnet.size() - 2);
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
    pub fn release(&mut self, container: &str) -> Option<Ipv4Addr> {
        self.containers.remove(container)
    }

    /// The address of `container`, if it has one.
    pub fn get(&self, container: &str) -> Option<Ipv4Addr> {
        self.containers.get(container).copied()
    }

    /// Every container and its address.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.containers.iter().map(|(c, &a)| (c.as_str(), a))
    }
}

fn offset(subnet: Ipv4Network, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(subnet: &str) -> ContainerIps {
        ContainerIps::new(subnet.parse().unwrap())
    }

    #[test]
    fn addresses_skip_network_gateway_and_broadcast() {
        let mut c = ips("9.0.3.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(9, 0, 3, 1));
        assert_eq!(c.capacity(), 253);
        assert_eq!(c.allocate("a").unwrap(), Ipv4Addr::new(9, 0, 3, 2));
        assert_eq!(c.allocate("b").unwrap(), Ipv4Addr::new(9, 0, 3, 3));
        assert_eq!(
            c.allocate("a").unwrap(),
            Ipv4Addr::new(9, 0, 3, 2),
            "idempotent"
        );
    }

    #[test]
    fn never_twice_and_full_is_an_error() {
        let mut c = ips("9.0.3.0/29"); // .2 to .6
        let got: Vec<Ipv4Addr> = (0..5)
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
        assert_eq!(c.release("2"), Some(Ipv4Addr::new(9, 0, 3, 4)));
        assert_eq!(c.allocate("x").unwrap(), Ipv4Addr::new(9, 0, 3, 4));
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
