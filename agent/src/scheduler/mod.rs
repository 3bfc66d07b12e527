//! The thin scheduler: Marathon-style apps placed on the cluster's agents.
//!
//! Pure logic, tested without root: [`placement`] (which agent gets a task: constraints, fault
//! domains, roles), [`plan`] (each round's decisions: rollouts, zone by zone for zone-spread
//! apps, dependencies, backoff), [`deployments`] (changes under way, and their rollback) and
//! [`events`] (Marathon's event bus), over the app definitions of [`crate::app`]. [`store`]
//! keeps the apps kept on disk before Raft (imported once); [`replicated`] the state the
//! masters agree on by Raft (apps, versions, deployments, credentials, decommissioned nodes);
//! [`credentials`] the masters' credential store and its API; [`masters`] the quorum's API;
//! [`decommission`] taking nodes out of service; [`links`] linked clusters; [`policies`]
//! network policies; [`marathon`] the `/v2` API as Marathon's
//! clients know it; [`service`] runs the leader's loop and assembles the API. What schedulers
//! publish in gossip, and who leads, is [`crate::facts::scheduler`].

pub mod credentials;
pub mod decommission;
pub mod deployments;
pub mod events;
pub mod links;
pub mod marathon;
pub mod masters;
pub mod placement;
pub mod plan;
pub mod policies;
pub mod replicated;
pub mod service;
pub mod store;

pub use service::SchedulerService;
