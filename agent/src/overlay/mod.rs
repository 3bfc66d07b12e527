//! The overlay on every node: the agent's side of the dcnet-overlay crate.
//!
//! - lease records and peers in gossip are [`crate::facts::overlay`].
//! - [`store`]: leases, container addresses and attachments in the state directory.
//! - [`service`]: the lease agreement, the reconciler that keeps the kernel's tunnel objects
//!   right, and container attach/detach for the API and the CNI plugin.
//! - [`egress`]: containers reaching beyond the overlay through their node, masqueraded.
//! - [`fastpath`]: the eBPF container fast path, attached and kept in step with the attachments.

pub mod egress;
pub mod fastpath;
pub mod service;
pub mod store;

pub use dcnet_overlay::api::{AttachRequest, AttachResponse, DetachRequest};
pub use service::{AttachError, OverlayService};
