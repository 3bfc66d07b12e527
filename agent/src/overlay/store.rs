//! The overlay's state on disk (`overlay.json` in the state directory): this agent's leases,
//! its container addresses and attachments, so that a restarted agent keeps its subnet, VTEP
//! and containers' addresses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use dcnet_overlay::ipam::{ContainerIps, LeaseRecord};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::state::StateDir;

/// File name in the state directory.
pub const FILE: &str = "overlay.json";

/// Everything the overlay keeps across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<LeaseRecord>,
    #[serde(default)]
    pub networks: BTreeMap<String, StoredNetwork>,
    /// When the agent last confirmed it still runs (Unix ms): a lease older than the release
    /// time was freed by the others meanwhile and must be agreed again.
    #[serde(default)]
    pub renewed_ms: u64,
}

/// One overlay network's share of this agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredNetwork {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseRecord>,
    /// Container addresses, once the subnet is held; keyed like `attachments`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<ContainerIps>,
    /// A dual-stack network's IPv6 container addresses, in the subnet paired with the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses6: Option<ContainerIps>,
    /// `<container id>/<ifname>` → what was attached.
    #[serde(default)]
    pub attachments: BTreeMap<String, Attachment>,
}

/// Records of agents from before the field: every attachment then set the default route.
fn owns_default_route() -> bool {
    true
}

/// One container interface on an overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// The namespace as given (a path).
    pub netns: PathBuf,
    /// The address from the network's agreed subnet: IPv4, or IPv6 on an IPv6-only network.
    pub address: IpAddr,
    /// A dual-stack network's IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    pub host_veth: String,
    /// The container interface's MAC (for the fast path); absent in records of older agents,
    /// then read from the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Who attached it (`cni` for the CNI plugin; none for the API and the task launcher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The interface owns the namespace's default route (it had none when attached).
    #[serde(default = "owns_default_route")]
    pub default_route: bool,
    /// The agent created the namespace (and deletes it on detach).
    #[serde(default)]
    pub created_netns: bool,
    /// The resolv.conf written for the namespace, removed on detach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<PathBuf>,
}

impl Attachment {
    /// Every address of the interface, the agreed family's first.
    pub fn addresses(&self) -> Vec<IpAddr> {
        std::iter::once(self.address)
            .chain(self.address6.map(IpAddr::V6))
            .collect()
    }
}

/// The key of an attachment: CNI identifies one by container id and interface name.
pub fn attachment_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

impl Stored {
    /// Reads the stored state; a missing file is an empty state, a corrupt one an error (the
    /// operator must look rather than have leases silently forgotten).
    pub fn load(dir: &StateDir) -> Result<Self, Error> {
        match dir.read(FILE)? {
            None => Ok(Self::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| Error::OverlayStateCorrupt {
                path: dir.path().join(FILE),
                message: e.to_string(),
            }),
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, dir: &StateDir) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).expect("the overlay state serialises");
        dir.write(FILE, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_state_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        assert_eq!(Stored::load(&dir).unwrap(), Stored::default());
        let mut stored = Stored {
            vtep: Some(LeaseRecord {
                net: "44.128.0.9/32".parse().unwrap(),
                state: dcnet_overlay::ipam::LeaseState::Held,
                since_ms: 7,
            }),
            renewed_ms: 9,
            ..Stored::default()
        };
        let mut ips = ContainerIps::new("9.0.4.0/24".parse::<ipnetwork::IpNetwork>().unwrap());
        let address = ips.allocate("c1/eth0").unwrap();
        stored.networks.insert(
            "dcos".into(),
            StoredNetwork {
                lease: None,
                addresses: Some(ips),
                addresses6: None,
                attachments: BTreeMap::from([(
                    attachment_key("c1", "eth0"),
                    Attachment {
                        container_id: "c1".into(),
                        ifname: "eth0".into(),
                        netns: "/run/netns/c1".into(),
                        address,
                        address6: None,
                        host_veth: "dc0".into(),
                        mac: Some("0a:00:00:00:00:01".into()),
                        origin: None,
                        default_route: true,
                        created_netns: false,
                        resolv_conf: None,
                    },
                )]),
            },
        );
        stored.save(&dir).unwrap();
        assert_eq!(Stored::load(&dir).unwrap(), stored);

        dir.write(FILE, "{ not json").unwrap();
        let err = Stored::load(&dir).unwrap_err().to_string();
        assert!(err.contains("overlay.json"), "{err}");
    }
}
