//! dcnet's overlay network: the kernel objects it owns, programmed over netlink.
//!
//! - [`netns`]: named network namespaces (`/run/netns/<name>`, compatible with `ip netns`), and
//!   running code or a netlink session inside one.
//! - [`netlink`]: a route-netlink session bound to the namespace it was opened in.
//! - [`link`]: bridges, veth pairs, link state, MTU and bridge ports.
//! - [`address`]: interface addresses.
//! - [`api`]: the bodies of the agent's attach API, shared with the CNI plugin.
//! - [`container`]: attaching a container's namespace to an overlay bridge, and detaching it.
//! - [`vtep`]: the VXLAN tunnel endpoint and its per-peer neighbours, FDB, routes and rules.
//! - [`ipam`]: pools, leases agreed through gossip, container addresses (pure logic).
//!
//! Everything here talks to the kernel through netlink (rtnetlink), never by running `ip`.

pub mod address;
pub mod api;
pub mod container;
pub mod error;
pub mod ipam;
pub mod link;
pub mod netlink;
pub mod netns;
pub mod shaping;
pub mod vtep;

pub use error::Error;
pub use netlink::Netlink;
pub use netns::Netns;
