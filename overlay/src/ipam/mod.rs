//! IP address management for the overlay, as pure logic (no I/O).
//!
//! - [`pool`]: a range cut into equal slots (an overlay's /24s, the VTEP addresses).
//! - [`lease`]: how agents agree through gossip on who holds which slot, without a coordinator.
//! - [`network`]: the pools of one network (IPv4, IPv6 or both) and how they pair.
//! - [`containers`]: container addresses inside one agent's subnet.

pub mod containers;
pub mod lease;
pub mod network;
pub mod pool;

pub use containers::ContainerIps;
pub use lease::{Agreement, LeaseRecord, LeaseState, Observed, Outcome};
pub use network::{NetworkError, NetworkPools};
pub use pool::{Pool, PoolError};
