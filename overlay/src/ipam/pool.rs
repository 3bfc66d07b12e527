//! A range of address space cut into equal slots: the /24s of an IPv4 overlay, the /80s of an
//! IPv6 one, or the single addresses of the VTEP range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

/// At most 2^32 slots per pool: an index is a `u32`.
const MAX_SLOT_BITS: u8 = 32;

/// Why a range cannot be used as a pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error(
        "{range} cannot be cut into /{prefix}s: the slot prefix must be at least the range's \
         (/{}), at most /{}, and at most 32 bits longer",
        range.prefix(),
        max_slot_prefix(range)
    )]
    SlotPrefix { range: IpNetwork, prefix: u8 },
    #[error("{0} is not the first address of its range (did you mean {1}?)")]
    NotNetworkAddress(IpNetwork, IpNetwork),
    #[error("{0} has no usable host address: use a range of /30 (IPv4) or /126 (IPv6) or larger")]
    TooSmall(IpNetwork),
    #[error("{0} has more than 2^32 addresses to number: use a range of /96 or smaller")]
    TooLarge(IpNetwork),
}

/// The longest slot prefix of a range's family: a slot holds a network, a gateway and one
/// container at least.
fn max_slot_prefix(range: &IpNetwork) -> u8 {
    bits(range) - 2
}

fn bits(net: &IpNetwork) -> u8 {
    match net {
        IpNetwork::V4(_) => 32,
        IpNetwork::V6(_) => 128,
    }
}

/// An address as a number, so both families share the arithmetic.
pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(ip) => u128::from(u32::from(ip)),
        IpAddr::V6(ip) => u128::from(ip),
    }
}

/// The address numbered `n` in the family of `like`.
pub(crate) fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Equal slots of a range, indexed from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    range: IpNetwork,
    /// Prefix length of a slot; 32 (or 128) for single addresses.
    slot_prefix: u8,
    /// Address pools leave out the range's first and last addresses.
    skip_ends: bool,
}

impl Pool {
    /// `range` cut into subnets of prefix `slot_prefix` (9.0.0.0/8 into /24s: 65,536 slots;
    /// fd01:b::/64 into /80s: 65,536 slots).
    pub fn subnets(range: impl Into<IpNetwork>, slot_prefix: u8) -> Result<Self, PoolError> {
        let range = range.into();
        check_network_address(range)?;
        if slot_prefix < range.prefix()
            || slot_prefix > max_slot_prefix(&range)
            || slot_prefix - range.prefix() > MAX_SLOT_BITS
        {
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
    pub fn addresses(range: impl Into<IpNetwork>) -> Result<Self, PoolError> {
        let range = range.into();
        check_network_address(range)?;
        if range.prefix() > max_slot_prefix(&range) {
            return Err(PoolError::TooSmall(range));
        }
        if bits(&range) - range.prefix() > MAX_SLOT_BITS {
            return Err(PoolError::TooLarge(range));
        }
        Ok(Self {
            range,
            slot_prefix: bits(&range),
            skip_ends: true,
        })
    }

    /// The whole range.
    pub fn range(&self) -> IpNetwork {
        self.range
    }

    /// The prefix of a slot.
    pub fn slot_prefix(&self) -> u8 {
        self.slot_prefix
    }

    /// Number of slots.
    pub fn len(&self) -> u32 {
        let all = 1u64 << (self.slot_prefix - self.range.prefix());
        (all - if self.skip_ends { 2 } else { 0 }).min(u64::from(u32::MAX)) as u32
    }

    /// Never true: every valid pool has at least one slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slot `index`, or `None` past the end.
    pub fn slot(&self, index: u32) -> Option<IpNetwork> {
        if index >= self.len() {
            return None;
        }
        let step = 1u128 << (bits(&self.range) - self.slot_prefix);
        let offset = u128::from(index) + u128::from(self.skip_ends);
        let base = to_u128(self.range.network()) + offset * step;
        IpNetwork::new(from_u128(self.range.ip(), base), self.slot_prefix).ok()
    }

    /// Index of `slot`, if it is exactly one of this pool's slots.
    pub fn index(&self, slot: IpNetwork) -> Option<u32> {
        if slot.prefix() != self.slot_prefix
            || slot.is_ipv4() != self.range.is_ipv4()
            || !self.range.contains(slot.network())
        {
            return None;
        }
        let offset = (to_u128(slot.ip()) - to_u128(self.range.network()))
            >> (bits(&self.range) - self.slot_prefix);
        let index = u32::try_from(offset)
            .ok()?
            .checked_sub(u32::from(self.skip_ends))?;
        (self.slot(index)? == slot).then_some(index)
    }
}

fn check_network_address(range: IpNetwork) -> Result<(), PoolError> {
    if range.ip() != range.network() {
        let fixed = IpNetwork::new(range.network(), range.prefix()).unwrap_or(range);
        return Err(PoolError::NotNetworkAddress(range, fixed));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
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
    fn dcos6_overlay_has_65536_slash_80s() {
        let pool = Pool::subnets(net("fd01:b::/64"), 80).unwrap();
        assert_eq!(pool.len(), 65_536);
        assert_eq!(pool.slot(0), Some(net("fd01:b::/80")));
        assert_eq!(pool.slot(1), Some(net("fd01:b::1:0:0:0/80")));
        assert_eq!(pool.slot(65_535), Some(net("fd01:b::ffff:0:0:0/80")));
        assert_eq!(pool.slot(65_536), None);
        assert_eq!(pool.index(net("fd01:b::7:0:0:0/80")), Some(7));
        assert_eq!(pool.index(net("9.0.7.0/24")), None, "another family");
        let addresses = Pool::addresses(net("fd01:a::/120")).unwrap();
        assert_eq!(addresses.len(), 254);
        assert_eq!(addresses.slot(0), Some(net("fd01:a::1/128")));
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
        assert!(matches!(
            Pool::subnets(net("fd01:b::/48"), 96),
            Err(PoolError::SlotPrefix { .. })
        ));
        assert!(matches!(
            Pool::addresses(net("fd01:a::/64")),
            Err(PoolError::TooLarge(_))
        ));
    }
}
