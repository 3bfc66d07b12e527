//! Errors of the DNS crate.

use std::net::SocketAddr;

/// What can fail when starting or running DNS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listen address could not be bound (taken, or not an address of this host).
    #[error(
        "cannot listen on {addr}/{proto}: {source} (is another DNS server running on it? choose another address or stop it)"
    )]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A worker thread could not be started.
    #[error("cannot start a DNS worker thread")]
    Thread(#[source] std::io::Error),
    /// ZooKeeper named no leading master in time (`zkDetectionTimeout`).
    #[error(
        "no leading Mesos master found in ZooKeeper {zk} within {waited:?} (zkDetectionTimeout): is ZooKeeper up, and do the masters register under that path?"
    )]
    NoLeader {
        zk: String,
        waited: std::time::Duration,
    },
    /// The masters cannot be read as configured (a TLS or login file is missing or wrong).
    #[error("reading the Mesos masters: {0}")]
    MasterAccess(#[from] crate::mesos::fetch::AccessError),
}
