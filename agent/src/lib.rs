//! The dcnet agent: one process per node that joins the cluster by gossip and runs the node's
//! share of DNS, overlay and load balancing.
//!
//! - [`config`]: the TOML file and flag overrides, validated at start.
//! - [`state`]: the state directory (locked, atomic writes); [`identity`]: the stable node id.
//! - [`gossip`]: membership and replicated per-node keys over chitchat, authenticated.
//! - [`facts`]: every gossip key's schema, decoded once per change; services wait on the
//!   topics they read. [`node`]: the membership table.
//! - [`app`]: Marathon app definitions; [`scheduler`] places them, [`launcher`] runs them.
//! - [`overlay`]: leases, the VXLAN tunnel's reconciler, container attachment and egress;
//!   [`nft`]: the nftables tables dcnet owns (host ports, egress).
//! - [`auth`]: credentials on every HTTP API, TLS for the scheduler's.
//! - [`policy`]: the network policies this node compiles from gossip.
//! - [`api`]: the local HTTP API; [`cli`]: operator commands that call it; [`dashboard`]: the
//!   web page that shows it.
//! - [`daemon`]: `dcnet agent`, the wiring of all of the above; [`memory`]: how its process
//!   holds memory.
//!
//! The binary (`src/main.rs`) only parses the command line and calls into this library.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod dns;
pub mod error;
pub mod facts;
pub mod fault_domain;
pub mod gossip;
pub mod identity;
pub mod launcher;
pub mod lb;
pub mod lifecycle;
pub mod log_budget;
pub mod memory;
pub mod nft;
pub mod node;
pub mod overlay;
pub mod policy;
pub mod scheduler;
pub mod serve;
pub mod state;

pub use error::Error;

/// Milliseconds since the Unix epoch: the timestamps the agent publishes in gossip and keeps
/// in its records (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
