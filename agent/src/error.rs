//! Errors of the agent library: configuration, node identity, gossip and the local API.
//!
//! Configuration errors name where the bad value came from ([`Origin`]: a key of the config
//! file, or a flag) and what is expected, because an operator reads them at start-up and must be
//! able to fix the file from the message alone.

use std::fmt;
use std::path::PathBuf;

/// `e` and each of its sources, joined by `: ` (for logs of errors that are not `anyhow`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Where a configuration value came from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The config file, if one was given.
    pub file: Option<PathBuf>,
    /// Dotted key in the config file, e.g. `gossip.listen`.
    pub key: &'static str,
    /// The flag that overrides it, e.g. `--gossip-listen`; `Some` when the value came from it.
    pub flag: Option<&'static str>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.flag, &self.file) {
            (Some(flag), _) => write!(f, "flag {flag}"),
            (None, Some(file)) => write!(f, "config file {}, key `{}`", file.display(), self.key),
            (None, None) => write!(f, "setting `{}`", self.key),
        }
    }
}

/// Everything that can go wrong in the agent library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The gossip keyring could not be read or stored.
    #[error(transparent)]
    Keyring(#[from] crate::gossip::keyring::KeyringError),
    /// The config file could not be read.
    #[error(
        "config file {path}: cannot read it ({source}); pass an existing, readable TOML file to --config"
    )]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the expected shape (e.g. an unknown key).
    #[error("config file {path}: {message}")]
    ConfigParse { path: PathBuf, message: String },
    /// A setting has a value of the wrong form.
    #[error("{origin}: {value:?} is not valid: expected {expected}")]
    ConfigInvalid {
        origin: Origin,
        value: String,
        expected: String,
    },
    /// A required setting is absent.
    #[error("{origin} is required: {hint}")]
    ConfigMissing { origin: Origin, hint: &'static str },
    /// The cluster secret file could not be read.
    #[error(
        "{origin}: cannot read the cluster secret file {path} ({source}); every node needs a readable copy of the same secret"
    )]
    SecretRead {
        origin: Origin,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The cluster secret is too short to authenticate anything.
    #[error("{origin}: the cluster secret in {path} has {len} bytes, fewer than {min}; generate one with `(umask 077; head -c 32 /dev/urandom | base64 > {path})`", path = path.display())]
    SecretTooShort {
        origin: Origin,
        path: PathBuf,
        len: usize,
        min: usize,
    },
    /// A file holding a cluster key can be read by users other than its owner.
    #[error(
        "{origin}: {path} can be read by other users (mode {mode:o}): any of them, and any task, could act as the cluster with it; run `chmod 600 {path}`",
        path = path.display()
    )]
    KeyFileOpen {
        origin: Origin,
        path: PathBuf,
        mode: u32,
    },
    /// A file of the state directory could not be read or written.
    #[error("state directory: {action} {path} failed ({source})")]
    State {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of the state directory holds something this version cannot use.
    #[error(
        "state directory: {path} is corrupt ({problem}); move it away to start this node with a new identity"
    )]
    StateCorrupt { path: PathBuf, problem: String },
    /// The overlay's state file holds something this version cannot use.
    #[error(
        "state directory: {path} is corrupt ({message}); fix it, or move it away to have this node agree new overlay leases (its containers then need attaching again)"
    )]
    OverlayStateCorrupt { path: PathBuf, message: String },
    /// Setting up the overlay in the kernel failed.
    #[error("overlay: {0}")]
    Overlay(#[source] dcnet_overlay::Error),
    /// The load balancer's eBPF datapath could not be loaded or attached.
    #[error("load balancer: {0}")]
    Lb(#[source] dcnet_lb::Error),
    /// Another agent already uses this state directory.
    #[error(
        "state directory {path} is in use by another dcnet agent; stop it first, or give this one its own --state-dir"
    )]
    StateLocked { path: PathBuf },
    /// The gossip layer could not start.
    #[error("gossip could not start on {listen}: {message}")]
    GossipStart {
        listen: std::net::SocketAddr,
        message: String,
    },
    /// DNS could not start (its listen address is taken, usually).
    #[error("DNS: {0}")]
    Dns(#[source] dcnet_dns::Error),
    /// The local HTTP API could not bind its address.
    #[error(
        "the local API cannot listen on {listen} ({source}); is another agent running? choose another with --api-listen"
    )]
    ApiBind {
        listen: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The node's key material (`[auth] pki_dir`) is missing or unusable.
    #[error(
        "auth: {0}; make the cluster's keys once with `dcnet auth init` and copy them to every node (see the README), or set `[auth] insecure = true` for a test cluster"
    )]
    Auth(String),
    /// The scheduler's Raft could not start.
    #[error("scheduler: {0}")]
    Scheduler(String),
}
