//! dcnet's DNS: record generation from task state (Mesos-DNS compatible), the authoritative
//! server for `mesos` and `thisdcos.directory`, and forwarding of every other name.
//!
//! - [`name`]: labels, domain fragments, task hashes and agent-id tails, as Mesos-DNS forms them.
//! - [`records`]: every Mesos-DNS record, generated from a normalized [`records::Cluster`].
//! - [`contributions`]: records by task, so a new cluster state costs what changed in it.
//! - [`dcos`]: the `thisdcos.directory` and `spartan` zones of dcos-dns, from the same cluster.
//! - [`forward`]: every other name, to upstreams (dual dispatch, health scores, cache, ACL).
//! - [`mesos`]: a Mesos master's `/master/state`, mapped onto that cluster.
//! - [`answer`]: one query in, one authoritative response out, from a snapshot.
//! - [`fast_path`]: the common queries answered in wire form straight from the snapshot.
//! - [`shards`]: the copy-on-write sharded map a snapshot's names live in.
//! - [`server`]: UDP workers (SO_REUSEPORT, one per core) and TCP, answering from a shared snapshot.
//! - [`zone`]: the immutable snapshot of every served zone, and how a name is looked up in it.
//!
//! Record generation, the server, the forwarder and the Mesos-DNS drop-in mode are being built
//! (see the DNS issue).

pub mod answer;
pub mod contributions;
pub mod dcos;
pub mod error;
pub mod fast_path;
pub mod forward;
pub mod linked;
pub mod mesos;
pub mod name;
pub mod records;
pub mod server;
pub mod shards;
pub mod zone;

pub use error::Error;

#[cfg(test)]
mod test_rng;
