//! Container network policy, pure logic (no I/O): what operators write ([`model`]) and what it
//! compiles to against the running tasks ([`compile`]): identities per app, task addresses to
//! identities, and the allow entries a datapath looks up per new flow, with the reference
//! verdict it must agree with.

pub mod compile;
pub mod model;

pub use compile::{Compiled, Direction, Identity, Task, Vip};
pub use model::{Peer, Policy, PolicyError, PortSpec, Protocol, Rule, Selector};
