//! DNS on every node: the agent's side of the dcnet-dns crate.
//!
//! - [`service`]: the server, the replica that follows gossip, and the task-state publisher.
//! - [`resolv_conf`]: keeps the node's resolv.conf on the listeners that work.

pub mod resolv_conf;
pub mod service;

pub use service::DnsService;
