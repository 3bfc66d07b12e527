//! DNS on every node: the agent's side of the dcnet-dns crate.
//!
//! - [`service`]: the server, the loop that keeps the replica in step with gossip, and the
//!   task-state publisher.
//! - [`replica`]: this node's copy of the records, updated change by change.
//! - [`resolv_conf`]: keeps the node's resolv.conf on the listeners that work.
//! - [`mesos_api`]: Mesos-DNS's HTTP API over the replica.
//! - [`lookup`]: what the replica answers for a name or an app, for people.

pub mod lookup;
pub mod mesos_api;
pub mod replica;
pub mod resolv_conf;
pub mod service;

pub use service::DnsService;
