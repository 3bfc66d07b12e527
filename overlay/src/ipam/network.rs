//! The pools of one overlay network. Agents agree on slots of one pool only: the IPv4 pool of
//! an IPv4 or dual-stack network, the IPv6 pool of an IPv6-only one. A dual-stack network pairs
//! each IPv4 slot with the IPv6 slot of the same index, so its IPv6 subnets need no agreement
//! of their own and every node derives a peer's from the peer's IPv4 lease.

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::{Pool, PoolError};

/// Why a network's ranges do not make a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("a network needs an IPv4 range, an IPv6 range or both")]
    NoRange,
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(
        "{range6} cut into /{prefix6}s has {len6} subnets, fewer than the {len4} of the IPv4 \
         range: every IPv4 subnet needs an IPv6 one (use a shorter IPv6 prefix or range)"
    )]
    Unpaired {
        range6: Ipv6Network,
        prefix6: u8,
        len6: u32,
        len4: u32,
    },
}

/// The agreed pool and, for a dual-stack network, the paired IPv6 pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkPools {
    agreed: Pool,
    paired6: Option<Pool>,
}

impl NetworkPools {
    /// The pools of a network with an IPv4 range cut into /`prefix`s, an IPv6 range cut into
    /// /`prefix6`s, or both.
    pub fn new(
        v4: Option<(Ipv4Network, u8)>,
        v6: Option<(Ipv6Network, u8)>,
    ) -> Result<Self, NetworkError> {
        let pool6 = v6
            .map(|(range, prefix)| Pool::subnets(range, prefix))
            .transpose()?;
        let Some((range, prefix)) = v4 else {
            let agreed = pool6.ok_or(NetworkError::NoRange)?;
            return Ok(Self {
                agreed,
                paired6: None,
            });
        };
        let agreed = Pool::subnets(range, prefix)?;
        if let (Some(pool6), Some((range6, prefix6))) = (pool6, v6)
            && pool6.len() < agreed.len()
        {
            return Err(NetworkError::Unpaired {
                range6,
                prefix6,
                len6: pool6.len(),
                len4: agreed.len(),
            });
        }
        Ok(Self {
            agreed,
            paired6: pool6,
        })
    }

    /// The pool agents agree on.
    pub fn agreed(&self) -> Pool {
        self.agreed
    }

    /// The IPv6 subnet that goes with the agreed slot `leased`, for a dual-stack network.
    pub fn paired6(&self, leased: IpNetwork) -> Option<IpNetwork> {
        self.paired6?.slot(self.agreed.index(leased)?)
    }

    /// Every subnet the holder of `leased` routes: the slot and its IPv6 pair, if any.
    pub fn subnets(&self, leased: IpNetwork) -> Vec<IpNetwork> {
        std::iter::once(leased)
            .chain(self.paired6(leased))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn a_dual_stack_network_pairs_slots_by_index() {
        let pools = NetworkPools::new(
            Some(("9.0.0.0/8".parse().unwrap(), 24)),
            Some(("fd01:e::/64".parse().unwrap(), 80)),
        )
        .unwrap();
        assert_eq!(pools.agreed().range(), net("9.0.0.0/8"));
        assert_eq!(
            pools.subnets(net("9.0.7.0/24")),
            [net("9.0.7.0/24"), net("fd01:e:0:0:7::/80")]
        );
        assert_eq!(pools.paired6(net("10.0.7.0/24")), None);
    }

    #[test]
    fn single_stack_networks_agree_on_their_own_range() {
        let v6 = NetworkPools::new(None, Some(("fd01:b::/64".parse().unwrap(), 80))).unwrap();
        assert_eq!(v6.agreed().range(), net("fd01:b::/64"));
        assert_eq!(v6.subnets(net("fd01:b::3:0:0:0/80")).len(), 1);
        let v4 = NetworkPools::new(Some(("9.0.0.0/8".parse().unwrap(), 24)), None).unwrap();
        assert_eq!(v4.paired6(net("9.0.7.0/24")), None);
        assert_eq!(NetworkPools::new(None, None), Err(NetworkError::NoRange));
    }

    #[test]
    fn an_ipv6_range_too_small_for_its_pair_is_refused() {
        let err = NetworkPools::new(
            Some(("9.0.0.0/8".parse().unwrap(), 24)),
            Some(("fd01:e::/64".parse().unwrap(), 72)),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "fd01:e::/64 cut into /72s has 256 subnets, fewer than the 65536 of the IPv4 range: \
             every IPv4 subnet needs an IPv6 one (use a shorter IPv6 prefix or range)"
        );
    }
}
