//! Errors of the overlay's kernel operations.

use std::path::PathBuf;

/// A failed kernel operation, with the object it concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A namespace name that cannot be a file name under /run/netns.
    #[error("invalid network namespace name {0:?}: use 1-64 characters of [A-Za-z0-9_.-]")]
    InvalidNetnsName(String),
    /// A namespace of this name already exists.
    #[error("network namespace {0:?} already exists (remove it with `ip netns delete {0}`)")]
    NetnsExists(String),
    /// A system call on a namespace failed.
    #[error("network namespace {name:?}: {action} failed")]
    Netns {
        name: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The netlink socket could not be opened.
    #[error("opening a route netlink socket failed")]
    Socket(#[source] std::io::Error),
    /// The kernel refused a netlink request.
    #[error("netlink: {action} {object:?} failed")]
    Netlink {
        action: &'static str,
        object: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// No link of this name exists in the namespace.
    #[error("no network interface named {0:?} in this namespace")]
    LinkNotFound(String),
    /// The container already has an interface of the name an attach wants to create.
    #[error(
        "network namespace {netns:?} already has an interface {ifname:?}: detach it first or choose another name"
    )]
    InterfaceExists { netns: String, ifname: String },
    /// A container interface lacks the address it was given.
    #[error("interface {ifname:?} does not have its address {address}")]
    AddressMissing {
        ifname: String,
        address: ipnetwork::IpNetwork,
    },
    /// A container interface that owns the namespace's default route lacks it.
    #[error("the default route via {gateway} on interface {ifname:?} is missing")]
    RouteMissing {
        ifname: String,
        gateway: std::net::IpAddr,
    },
    /// An address with a prefix longer than its family allows.
    #[error("{0} is not a valid address with prefix length")]
    InvalidAddress(String),
    /// A filesystem path needed for namespaces could not be used.
    #[error("{path:?}: {action} failed")]
    Path {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn netns(
        name: &str,
        action: &'static str,
        source: impl Into<std::io::Error>,
    ) -> Self {
        Error::Netns {
            name: name.to_owned(),
            action,
            source: source.into(),
        }
    }

    pub(crate) fn netlink(
        action: &'static str,
        object: impl ToString,
        source: rtnetlink::Error,
    ) -> Self {
        Error::Netlink {
            action,
            object: object.to_string(),
            source,
        }
    }
}
