//! The load balancer on every node: the agent's side of the dcnet-lb crate.
//!
//! - [`desired`]: the VIPs and backends the cluster's task facts in gossip imply (pure);
//!   [`locality`]: which of them a node prefers, nearest zone first (pure).
//! - [`service`]: keeps the local eBPF datapath equal to them, tells DNS which named VIPs the
//!   datapath has, and reports VIPs and connection counts to the API and `/metrics`.

pub mod desired;
pub mod locality;
pub mod service;

pub use service::{LbService, VipStatus};
