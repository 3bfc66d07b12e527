//! Who may call dcnet's HTTP APIs, and how they prove it.
//!
//! - [`pki`]: the cluster's key material: a CA (masters issue their own TLS certificates with
//!   it) and the Ed25519 key pair that signs tokens.
//! - [`token`]: JWTs as DC/OS issued them (`Authorization: token=<jwt>`), with a subject, a
//!   role, an id and an expiry.
//! - [`password`]: Argon2id hashes for HTTP basic users (Marathon's `--http_credentials`).
//! - [`store`]: the masters' record of tokens, revocations and users, signed for gossip.
//! - [`credential`]: the `Authorization` header; [`authn`]: from a header to an [`Identity`],
//!   and whether its [`Role`] allows a method.
//! - [`tls`]: rustls configurations; [`client`]: where the CLI finds its credential.
//!
//! No HTTP server or network here: the agent wires these into its listeners.

pub mod authn;
pub mod client;
pub mod credential;
pub mod error;
pub mod password;
pub mod pki;
pub mod role;
pub mod store;
pub mod tls;
pub mod token;

pub use authn::{Authenticator, Identity, Refusal, authorize};
pub use error::AuthError;
pub use pki::PkiDir;
pub use role::Role;
pub use store::Store;
pub use token::{Signer, Verifier};
