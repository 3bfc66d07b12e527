//! The thin scheduler: Marathon-style apps placed on the cluster's agents.
//!
//! Pure logic, tested without root: [`placement`] (which agent gets a task) and [`plan`] (each
//! round's decisions), over the app definitions of [`crate::app`]. [`store`] keeps the apps
//! kept on disk before Raft (imported once); [`replicated`] the state the masters agree on by
//! Raft (apps, versions, credentials); [`credentials`] the masters' credential store and its
//! API; [`service`] runs the leader's loop and serves the `/v2` API. What schedulers publish
//! in gossip, and who leads, is [`crate::facts::scheduler`].

pub mod credentials;
pub mod decommission;
pub mod deployments;
pub mod events;
pub mod marathon;
pub mod masters;
pub mod placement;
pub mod plan;
pub mod replicated;
pub mod service;
pub mod store;

pub use service::SchedulerService;
