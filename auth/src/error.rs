//! Errors of the auth crate: reading and writing key material, issuing and signing.
//!
//! A refused request is not an error of this kind: it is a [`crate::Refusal`], which says why
//! in words a client can act on and carries a short reason for the audit counters.

use std::path::PathBuf;

/// What went wrong while handling keys, certificates or the credential store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A key or certificate file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key or certificate file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `init` found key material already there and will not overwrite it.
    #[error(
        "{path} already exists: the cluster's keys were made before; keep them, or remove the directory to start a new cluster CA (every credential and certificate made with the old one stops working)"
    )]
    Exists { path: PathBuf },
    /// A file holds something that is not the expected key or certificate.
    #[error("{path} is not a valid {what}: {detail}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    /// Making a key, certificate or signature failed.
    #[error("{action} failed: {detail}")]
    Crypto {
        action: &'static str,
        detail: String,
    },
    /// A request to the credential store that cannot be carried out.
    #[error("{0}")]
    Store(String),
}

impl AuthError {
    pub(crate) fn crypto(action: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> Self {
        move |e| AuthError::Crypto {
            action,
            detail: e.to_string(),
        }
    }
}
