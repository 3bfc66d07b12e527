//! The thin scheduler: Marathon-style apps placed on the cluster's agents.
//!
//! Pure logic, tested without root: [`app`] (the app JSON and its validation),
//! [`constraint`], [`placement`] (which agent gets a task) and [`plan`] (each round's
//! decisions). [`facts`] is what schedulers publish in gossip and who leads; [`store`] keeps
//! the apps kept on disk before Raft (imported once); [`replicated`] the state the masters agree
//! on by Raft (apps, versions, credentials); [`credentials`] the masters' credential store and its API; [`service`] runs the leader's loop and serves the `/v2` API.

pub mod app;
pub mod constraint;
pub mod credentials;
pub mod facts;
pub mod masters;
pub mod placement;
pub mod plan;
pub mod replicated;
pub mod service;
pub mod store;

pub use service::SchedulerService;
