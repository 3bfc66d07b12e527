//! The bodies of the agent's container-attachment API (`POST /v1/overlay/attach`, `/detach`,
//! `/check`), shared by the agent that serves it and the `dcnet-cni` plugin that calls it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

/// An attach request (API and CNI plugin).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    pub container_id: String,
    /// A namespace name under /run/netns, or a path such as /proc/<pid>/ns/net.
    pub netns: String,
    #[serde(default = "default_ifname")]
    pub ifname: String,
    #[serde(default = "default_network")]
    pub network: String,
    /// Create the namespace (a name, not a path) if it does not exist; a detach then deletes
    /// it again. Runtimes that make their own namespaces (CNI) leave this off.
    #[serde(default)]
    pub create: bool,
    /// Who attaches (`cni` for the CNI plugin): a garbage collection of that origin only
    /// looks at its own attachments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// A garbage collection (CNI GC): every attachment of `origin` on `network` that `keep` does
/// not list is detached.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    pub network: String,
    pub origin: String,
    #[serde(default)]
    pub keep: Vec<Kept>,
}

/// An attachment to keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kept {
    pub container_id: String,
    #[serde(default = "default_ifname")]
    pub ifname: String,
}

/// A detach or check request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachRequest {
    pub container_id: String,
    #[serde(default = "default_ifname")]
    pub ifname: String,
    /// When absent, every network is searched.
    #[serde(default)]
    pub network: Option<String>,
}

fn default_ifname() -> String {
    "eth0".into()
}

fn default_network() -> String {
    "dcos".into()
}

/// What an attach made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachResponse {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// IPv4 address with the subnet's prefix; none on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 address with the subnet's prefix, on an IPv6-only or dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub mtu: u32,
    pub mac: String,
    pub host_veth: String,
    pub nameservers: Vec<IpAddr>,
    /// The interface owns the namespace's default routes (via `gateway` and `gateway6`); a
    /// second interface of a namespace that had them does not.
    #[serde(default = "yes")]
    pub default_route: bool,
}

fn yes() -> bool {
    true
}
