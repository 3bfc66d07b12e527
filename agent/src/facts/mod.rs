//! The gossip facts: every key a node publishes, defined once with its typed decode, decoded
//! once per change and shared by every service.
//!
//! ```text
//! node                      NodeInfo: name, address, roles, region/zone, resources   [node]
//! keyring                   KeyringFact: the ids of the gossip keys the node holds
//! auth/set                  the credential set a master signs (JWT)
//! kv/<key>                  an operator's value
//! dns/...                   a Mesos-state publisher's agents, frameworks, tasks      [mesos]
//! task/<task id>            TaskStatus of a task this node's launcher runs           [launched]
//! sched/leader, sched/task/ the leading scheduler and its assignments                [scheduler]
//! overlay/vtep, overlay/net/<name>  lease records                                    [overlay]
//! ```
//!
//! - [`decode`]: [`Facts`] and the [`Decoder`] that keeps them in step with gossip views,
//!   filing each change under a topic ([`Topics`]).
//! - [`cache`]: runs the decoder on the node's view and lets services wait for the topics
//!   they read ([`FactsWatch`]); a heartbeat wakes nobody.
//! - [`node`], [`mesos`], [`launched`], [`scheduler`], [`overlay`]: each kind's schema and
//!   what readers compute from the decoded facts; [`cluster`]: the Mesos-style cluster that
//!   DNS and the load balancer serve.

pub mod cache;
pub mod cluster;
pub mod decode;
pub mod launched;
pub mod mesos;
pub mod node;
pub mod overlay;
pub mod scheduler;

pub use cache::{Cache, FactsWatch};
pub use decode::{Decoder, Facts, MesosFacts, NodeFacts, Topics};

/// Gossip key under which each node publishes its gossip keyring's ids.
pub const KEYRING_KEY: &str = "keyring";
/// Gossip key under which masters publish the credential set they sign.
pub const CREDENTIAL_SET_KEY: &str = "auth/set";
/// Prefix of the operators' key-value pairs.
pub const KV_PREFIX: &str = "kv/";
