//! Zone-aware VIPs: a node sends a VIP's new connections to the backends nearest to it, its
//! own zone first, then its region, then anywhere, spilling over to the next tier only when no
//! backend of the nearer one takes connections (all unhealthy, on down agents, or none there),
//! as Kubernetes' topology-aware routing and Cilium's service affinity do. Localities are the
//! nodes' fault domains (`--region`/`--zone`, or detected); a backend whose agent has none, or a
//! client node without one, is in no tier but "anywhere".
//!
//! A VIP opts out with the label `DCNET_VIP_LOCALITY=any` on the port that declares it: then
//! every healthy backend anywhere takes connections, as without fault domains.

use dcnet_lb::vip::Backend;

/// The port label that turns the preference off for the VIPs the port declares.
pub const LABEL: &str = "DCNET_VIP_LOCALITY";

/// Where a node is.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Locality {
    pub region: Option<String>,
    pub zone: Option<String>,
}

impl Locality {
    /// How far a backend at `other` is from a client here: 0 the same zone (of the same
    /// region), 1 the same region, 2 anywhere else or unknown.
    fn distance(&self, other: &Locality) -> u8 {
        match (&self.region, &other.region) {
            (Some(a), Some(b)) if a == b => match (&self.zone, &other.zone) {
                (Some(a), Some(b)) if a == b => 0,
                _ => 1,
            },
            _ => 2,
        }
    }
}

/// Whether a port's labels opt its VIPs out.
pub fn opted_out<'a>(mut labels: impl Iterator<Item = (&'a String, &'a String)>) -> bool {
    labels.any(|(k, v)| k == LABEL && v.eq_ignore_ascii_case("any"))
}

/// Keeps the weights of the nearest tier that has a backend taking connections; every farther
/// backend gets weight 0 (it stays listed, as a spare). Returns how many were spared.
pub fn prefer(client: &Locality, backends: &mut [(Backend, Locality)]) -> usize {
    let Some(nearest) = backends
        .iter()
        .filter(|(b, _)| b.weight > 0)
        .map(|(_, at)| client.distance(at))
        .min()
    else {
        return 0;
    };
    let mut spared = 0;
    for (backend, at) in backends.iter_mut() {
        if backend.weight > 0 && client.distance(at) > nearest {
            backend.weight = 0;
            spared += 1;
        }
    }
    spared
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(region: &str, zone: &str) -> Locality {
        Locality {
            region: (!region.is_empty()).then(|| region.into()),
            zone: (!zone.is_empty()).then(|| zone.into()),
        }
    }

    fn backends(list: &[(u16, u32, Locality)]) -> Vec<(Backend, Locality)> {
        list.iter()
            .map(|(port, weight, at)| {
                (
                    Backend {
                        addr: ([9, 0, 0, 1], *port).into(),
                        weight: *weight,
                    },
                    at.clone(),
                )
            })
            .collect()
    }

    fn weights(b: &[(Backend, Locality)]) -> Vec<u32> {
        b.iter().map(|(b, _)| b.weight).collect()
    }

    #[test]
    fn the_nearest_tier_with_a_usable_backend_takes_the_connections() {
        let client = at("r1", "z1");
        let mut b = backends(&[
            (1, 1, at("r1", "z1")),
            (2, 1, at("r1", "z2")),
            (3, 1, at("r2", "z1")),
            (4, 1, Locality::default()),
        ]);
        assert_eq!(prefer(&client, &mut b), 3);
        assert_eq!(weights(&b), [1, 0, 0, 0]);

        // The zone's backend is unhealthy: the region's take over.
        let mut b = backends(&[
            (1, 0, at("r1", "z1")),
            (2, 1, at("r1", "z2")),
            (3, 1, at("r2", "z1")),
        ]);
        prefer(&client, &mut b);
        assert_eq!(weights(&b), [0, 1, 0]);

        // Nothing in the region: anywhere, unknown localities included.
        let mut b = backends(&[(3, 1, at("r2", "z1")), (4, 1, Locality::default())]);
        assert_eq!(prefer(&client, &mut b), 0);
        assert_eq!(weights(&b), [1, 1]);

        // A zone name in another region is another zone.
        let mut b = backends(&[(1, 1, at("r2", "z1")), (2, 1, at("r1", "z9"))]);
        prefer(&client, &mut b);
        assert_eq!(weights(&b), [0, 1]);
    }

    #[test]
    fn a_client_without_a_fault_domain_prefers_nothing() {
        let mut b = backends(&[(1, 1, at("r1", "z1")), (2, 1, at("r2", "z2"))]);
        assert_eq!(prefer(&Locality::default(), &mut b), 0);
        assert_eq!(weights(&b), [1, 1]);
        // No usable backend at all: nothing changes.
        let mut b = backends(&[(1, 0, at("r1", "z1"))]);
        assert_eq!(prefer(&at("r1", "z1"), &mut b), 0);
    }

    #[test]
    fn the_label_opts_out() {
        let labels = [
            ("VIP_0".to_owned(), "/web:80".to_owned()),
            (LABEL.to_owned(), "ANY".to_owned()),
        ];
        assert!(opted_out(labels.iter().map(|(k, v)| (k, v))));
        assert!(!opted_out(labels[..1].iter().map(|(k, v)| (k, v))));
    }
}
