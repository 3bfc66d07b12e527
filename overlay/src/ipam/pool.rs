//! A range of IPv4 space cut into equal slots: the /24s of an overlay network, or the single
//! addresses of the VTEP range.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// Why a range cannot be used as a pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error(
        "{range} cannot be cut into /{prefix}s: the slot prefix must be at least the range's \
         (/{}) and at most /30",
        range.prefix()
    )]
    SlotPrefix { range: Ipv4Network, prefix: u8 },
    #[error("{0} is not the first address of its range (did you mean {1}?)")]
    NotNetworkAddress(Ipv4Network, Ipv4Network),
    #[error("{0} has no usable host address: use a range of /30 or larger")]
    TooSmall(Ipv4Network),
}

/// Equal slots of a range, indexed from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    range: Ipv4Network,
    /// Prefix length of a slot; 32 for single addresses.
    slot_prefix: u8,
    /// Address pools leave out the range's network and broadcast addresses.
    skip_ends: bool,
}

impl Pool {
    /// `range` cut into subnets of prefix `slot_prefix` (9.0.0.0/8 into /24s: 65,536 slots).
    pub fn subnets(range: Ipv4Network, slot_prefix: u8) -> Result<Self, PoolError> {
        check_network_address(range)?;
        if slot_prefix < range.prefix() || slot_prefix > 30 {
            return Err(PoolError::SlotPrefix {
                range,
                prefix: slot_prefix,
            });
        }
        Ok(Self {
            range,
            slot_prefix,
            skip_ends: false,
        })
    }

    /// The host addresses of `range` (44.128.0.0/20: 4,094 slots, network and broadcast
    /// addresses left out).
    pub fn addresses(range: Ipv4Network) -> Result<Self, PoolError> {
        check_network_address(range)?;
        if range.prefix() > 30 {
            return Err(PoolError::TooSmall(range));
        }
        Ok(Self {
            range,
            slot_prefix: 32,
            skip_ends: true,
        })
    }

    /// The whole range.
    pub fn range(&self) -> Ipv4Network {
        self.range
    }

    /// Number of slots.
    pub fn len(&self) -> u32 {
        let all = 1u64 << (self.slot_prefix - self.range.prefix());
        (all - if self.skip_ends { 2 } else { 0 }) as u32
    }

    /// Never true: every valid pool has at least one slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slot `index`, or `None` past the end.
    pub fn slot(&self, index: u32) -> Option<Ipv4Network> {
        if index >= self.len() {
            return None;
        }
        let step = 1u64 << (32 - self.slot_prefix);
        let offset = u64::from(index) + u64::from(self.skip_ends);
        let base = u64::from(u32::from(self.range.network())) + offset * step;
        Ipv4Network::new(Ipv4Addr::from(base as u32), self.slot_prefix).ok()
    }

    /// Index of `slot`, if it is exactly one of this pool's slots.
    pub fn index(&self, slot: Ipv4Network) -> Option<u32> {
        if slot.prefix() != self.slot_prefix || !self.range.contains(slot.network()) {
            return None;
        }
        let offset =
            (u32::from(slot.ip()) - u32::from(self.range.network())) >> (32 - self.slot_prefix);
        let index = offset.checked_sub(u32::from(self.skip_ends))?;
        (self.slot(index)? == slot).then_some(index)
    }
}

fn check_network_address(range: Ipv4Network) -> Result<(), PoolError> {
    if range.ip() != range.network() {
        let fixed = Ipv4Network::new(range.network(), range.prefix()).unwrap_or(range);
        return Err(PoolError::NotNetworkAddress(range, fixed));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn dcos_overlay_has_65536_slash_24s() {
        let pool = Pool::subnets(net("9.0.0.0/8"), 24).unwrap();
        assert_eq!(pool.len(), 65_536);
        assert_eq!(pool.slot(0), Some(net("9.0.0.0/24")));
        assert_eq!(pool.slot(1), Some(net("9.0.1.0/24")));
        assert_eq!(pool.slot(256), Some(net("9.1.0.0/24")));
        assert_eq!(pool.slot(65_535), Some(net("9.255.255.0/24")));
        assert_eq!(pool.slot(65_536), None);
        assert_eq!(pool.index(net("9.1.0.0/24")), Some(256));
        assert_eq!(pool.index(net("9.1.0.0/25")), None);
        assert_eq!(pool.index(net("10.0.0.0/24")), None);
    }

    #[test]
    fn vtep_range_leaves_out_network_and_broadcast() {
        let pool = Pool::addresses(net("44.128.0.0/20")).unwrap();
        assert_eq!(pool.len(), 4094);
        assert_eq!(pool.slot(0), Some(net("44.128.0.1/32")));
        assert_eq!(pool.slot(4093), Some(net("44.128.15.254/32")));
        assert_eq!(pool.slot(4094), None);
        assert_eq!(pool.index(net("44.128.0.1/32")), Some(0));
        assert_eq!(pool.index(net("44.128.0.0/32")), None);
        assert_eq!(pool.index(net("44.128.15.255/32")), None);
    }

    #[test]
    fn every_slot_maps_back_to_its_index() {
        for pool in [
            Pool::subnets(net("10.10.0.0/20"), 26).unwrap(),
            Pool::addresses(net("192.168.7.0/28")).unwrap(),
        ] {
            for i in 0..pool.len() {
                assert_eq!(
                    pool.index(pool.slot(i).unwrap()),
                    Some(i),
                    "{pool:?} slot {i}"
                );
            }
        }
    }

    #[test]
    fn bad_ranges_are_refused_with_the_fix() {
        assert_eq!(
            Pool::subnets(net("9.0.0.1/8"), 24).unwrap_err().to_string(),
            "9.0.0.1/8 is not the first address of its range (did you mean 9.0.0.0/8?)"
        );
        assert!(matches!(
            Pool::subnets(net("9.0.0.0/24"), 16),
            Err(PoolError::SlotPrefix { .. })
        ));
        assert!(matches!(
            Pool::addresses(net("9.0.0.0/31")),
            Err(PoolError::TooSmall(_))
        ));
    }
}
