//! IP address management for the overlay, as pure logic (no I/O).
//!
//! - [`pool`]: a range cut into equal slots (an overlay's /24s, the VTEP addresses).
//! - [`lease`]: how agents agree through gossip on who holds which slot, without a coordinator.
//! - [`containers`]: container addresses inside one agent's subnet.

pub mod containers;
pub mod lease;
pub mod pool;

pub use containers::ContainerIps;
pub use lease::{Agreement, LeaseRecord, LeaseState, Observed, Outcome};
pub use pool::{Pool, PoolError};
