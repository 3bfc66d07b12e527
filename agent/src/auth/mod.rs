//! Credentials on the agent's and the scheduler's HTTP APIs (the `dcnet-auth` crate has the
//! pure parts: keys, tokens, the credential store).
//!
//! - [`Auth`]: what a node loads at start from `[auth] pki_dir`: the token verifier and the
//!   cluster CA on every node; the token signer and a fresh server certificate on masters.
//! - [`http`]: the check in front of every route, and the audit of refusals.
//! - [`tls`]: the scheduler's TLS listener.
//!
//! The masters' credential set (revocations, basic users) reaches every node through gossip
//! (key [`crate::facts::CREDENTIAL_SET_KEY`], a JWT signed by the masters' key). Each node
//! keeps the newest set that verifies, also on disk, so a restarted node enforces revocations
//! before it hears gossip.

pub mod http;
pub mod tls;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dcnet_auth::{Authenticator, PkiDir, Signer};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::Error;
use crate::config::AuthSettings;
use crate::facts::FactsWatch;
use crate::lifecycle::{Services, Stage, settle};
use crate::state::StateDir;
use http::{Audit, Guard};

/// The newest set this node accepted, in its state directory.
const SET_FILE: &str = "auth-set.jwt";

/// An HTTP client that trusts only the CA of `ca_pem` for HTTPS (any CA it has not: plain
/// HTTP only), with `timeout` per call and, unless `pooled`, a new connection per request;
/// answers of any status are returned.
pub fn client(ca_pem: Option<&str>, timeout: Duration, pooled: bool) -> Result<ureq::Agent, Error> {
    build_client(ca_pem, Some(timeout), pooled)
}

/// A client for answers that do not end (server-sent events): only connecting and the
/// answer's head are timed (10 s each), not the body.
pub fn streaming_client(ca_pem: Option<&str>) -> Result<ureq::Agent, Error> {
    build_client(ca_pem, None, false)
}

fn build_client(
    ca_pem: Option<&str>,
    timeout: Option<Duration>,
    pooled: bool,
) -> Result<ureq::Agent, Error> {
    let head = Duration::from_secs(10);
    let mut config = ureq::Agent::config_builder()
        .timeout_global(timeout)
        .timeout_connect(Some(timeout.unwrap_or(head)))
        .timeout_recv_response(Some(timeout.unwrap_or(head)))
        .http_status_as_error(false);
    if !pooled {
        config = config
            .max_idle_connections(0)
            .max_idle_connections_per_host(0);
    }
    if let Some(ca) = ca_pem {
        let certs = dcnet_auth::tls::certificates(ca).map_err(auth_error)?;
        let certs: Vec<ureq::tls::Certificate<'static>> = certs
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    Ok(config.build().into())
}

/// A node's authentication material and checks.
pub struct Auth {
    /// `None` in insecure mode: no credential is asked for.
    pub authn: Option<Arc<Authenticator>>,
    pub audit: Arc<Audit>,
    pki: Option<PkiDir>,
    ca_pem: Option<String>,
    state: Arc<StateDir>,
}

fn auth_error(e: dcnet_auth::AuthError) -> Error {
    Error::Auth(e.to_string())
}

impl Auth {
    /// Loads what `settings` name, and the last credential set this node accepted.
    pub fn load(
        settings: &AuthSettings,
        state: Arc<StateDir>,
        registry: &mut Registry,
    ) -> Result<Self, Error> {
        let audit = Arc::new(Audit::default());
        audit.register(registry);
        if settings.insecure {
            warn!(
                "[auth] insecure = true: the APIs ask for no credential and the scheduler serves plain HTTP; anyone who reaches them can run commands on every node"
            );
            return Ok(Self {
                authn: None,
                audit,
                pki: None,
                ca_pem: None,
                state,
            });
        }
        let pki = PkiDir::new(&settings.pki_dir);
        let verifier = pki.verifier().map_err(auth_error)?;
        let ca_pem = pki.ca_pem().map_err(auth_error)?;
        let authn = Arc::new(Authenticator::new(Some(verifier)));
        if let Some(jwt) = state.read(SET_FILE)? {
            match authn.offer(jwt.trim()) {
                Ok(_) => info!(serial = authn.set().serial, "credential set loaded"),
                Err(p) => warn!(
                    file = SET_FILE,
                    problem = p.reason(),
                    "the stored credential set does not verify; waiting for the masters'"
                ),
            }
        }
        Ok(Self {
            authn: Some(authn),
            audit,
            pki: Some(pki),
            ca_pem: Some(ca_pem),
            state,
        })
    }

    /// Whether credentials are asked for.
    pub fn is_secure(&self) -> bool {
        self.authn.is_some()
    }

    /// The check for an API named `api`, with `open` routes needing no credential.
    pub fn guard(&self, api: &'static str, open: &'static [&'static str]) -> Guard {
        Guard {
            api,
            authn: self.authn.clone(),
            open,
            audit: self.audit.clone(),
        }
    }

    /// The cluster CA, PEM (`None` in insecure mode).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The scheme the scheduler serves: `https`, or `http` in insecure mode.
    pub fn scheme(&self) -> &'static str {
        if self.is_secure() { "https" } else { "http" }
    }

    /// An HTTP client that trusts the cluster CA only; answers of any status are returned.
    pub fn client(&self, timeout: Duration) -> Result<ureq::Agent, Error> {
        client(self.ca_pem.as_deref(), timeout, true)
    }

    /// [`streaming_client`] trusting the cluster CA.
    pub fn streaming_client(&self) -> Result<ureq::Agent, Error> {
        streaming_client(self.ca_pem.as_deref())
    }

    /// The token signer (masters; `None` in insecure mode).
    pub fn signer(&self) -> Result<Option<Signer>, Error> {
        self.pki
            .as_ref()
            .map(|p| p.signer().map_err(auth_error))
            .transpose()
    }

    /// A TLS server configuration with a certificate issued now for `names` and `ips`
    /// (masters; `None` in insecure mode).
    pub fn server_tls(
        &self,
        names: &[String],
        ips: &[IpAddr],
    ) -> Result<Option<Arc<rustls::ServerConfig>>, Error> {
        let Some(pki) = &self.pki else {
            return Ok(None);
        };
        let cert = pki.issue_server(names, ips).map_err(auth_error)?;
        dcnet_auth::tls::server_config(&cert.chain_pem, &cert.key_pem)
            .map(Some)
            .map_err(auth_error)
    }

    /// Follows the credential sets masters publish in gossip until the data stage stops.
    pub fn follow(&self, mut facts: FactsWatch, services: &mut Services) {
        let Some(authn) = self.authn.clone() else {
            return;
        };
        let state = self.state.clone();
        let stop = services.stopping(Stage::Data);
        services.spawn(Stage::Data, "credential follower", async move {
            let mut seen: HashMap<String, Arc<str>> = HashMap::new();
            while settle(&stop, async { facts.changed().await.is_ok() }, Duration::ZERO).await {
                let view = facts.current();
                for node in view.nodes.values() {
                    let Some(jwt) = node.credential_set.clone() else {
                        continue;
                    };
                    if seen.get(&node.id) == Some(&jwt) {
                        continue;
                    }
                    seen.insert(node.id.clone(), jwt.clone());
                    let jwt = &*jwt;
                    match authn.offer(jwt) {
                        Ok(true) => {
                            info!(node = %node.id, serial = authn.set().serial, "credential set updated");
                            if let Err(e) = state.write(SET_FILE, jwt) {
                                warn!(error = %e, "cannot keep the credential set on disk");
                            }
                        }
                        Ok(false) => {}
                        Err(p) => warn!(node = %node.id, problem = p.reason(),
                                        "a node publishes a credential set that does not verify; ignored"),
                    }
                }
            }
        });
    }
}
