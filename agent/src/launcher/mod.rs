//! The task launcher: runs the tasks the leading scheduler assigns to this node, each in its
//! own network namespace on an overlay (or on the host network), and reports them.
//!
//! [`facts`] is what it publishes in gossip, which DNS and the load balancer read too.

pub mod facts;
