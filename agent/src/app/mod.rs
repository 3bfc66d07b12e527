//! Marathon app definitions, pure and shared: what the scheduler places, what a launcher runs,
//! what gossip carries in assignments.
//!
//! - [`definition`]: the app JSON users write, validated into an [`App`], and the names and
//!   ports derived from it.
//! - [`constraint`]: placement constraints (`["hostname", "UNIQUE"]`, ...).

pub mod constraint;
pub mod definition;

pub use definition::*;
