//! DNS on every node: the agent's side of the dcnet-dns crate.
//!
//! - [`facts`]: task facts in gossip, and the cluster rebuilt from the replica.
pub mod facts;
