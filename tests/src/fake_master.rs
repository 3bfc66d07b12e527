//! A stand-in for a Mesos master's `/master/state`, served by axum inside a test namespace.
//! Tests change the body it serves (another state, or garbage) and count the requests.
//!
//! A guarded master ([`MasterGuard`]) serves HTTPS (optionally requiring a client certificate
//! from a given CA) and wants HTTP basic credentials or a DC/OS IAM token, which its
//! `/acs/api/v1/auth/login` hands out for a service-account JWT (RS256) it verifies.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dcnet_agent::auth::tls::TlsListener;
use dcnet_overlay::Netns;

#[derive(Default)]
struct Shared {
    /// Shared with the responses in flight: a large state is not copied per request.
    body: Mutex<Bytes>,
    requests: AtomicUsize,
    last_request: Mutex<Option<Instant>>,
    guard: MasterGuard,
    /// Requests refused for missing or wrong credentials.
    refused: AtomicUsize,
    logins: AtomicUsize,
    /// The IAM token the login hands out now; changed by [`FakeMaster::expire_tokens`].
    token: Mutex<String>,
}

/// What a guarded fake master asks of its clients.
#[derive(Default, Clone)]
pub struct MasterGuard {
    /// HTTPS with this certificate (chain, leaf first) and key, PEM.
    pub tls: Option<(String, String)>,
    /// With `tls`: clients must present a certificate signed by this CA (PEM).
    pub client_ca: Option<String>,
    /// HTTP basic: this principal and secret.
    pub basic: Option<(String, String)>,
    /// DC/OS IAM: a login by this uid, signed by the key whose public half (PEM) is given.
    pub iam: Option<(String, String)>,
}

/// A running fake master; stops when dropped.
pub struct FakeMaster {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeMaster {
    /// Serves `body` at `http://<addr>/master/state` inside `netns`.
    pub fn start(netns: &Netns, addr: SocketAddr, body: String) -> Result<Self> {
        Self::start_guarded(netns, addr, body, MasterGuard::default())
    }

    /// Serves `body` at `/master/state` inside `netns`, to clients that meet `guard`.
    pub fn start_guarded(
        netns: &Netns,
        addr: SocketAddr,
        body: String,
        guard: MasterGuard,
    ) -> Result<Self> {
        let listener = netns
            .run(|| std::net::TcpListener::bind(addr))?
            .with_context(|| format!("binding the fake master on {addr}"))?;
        listener.set_nonblocking(true)?;
        let tls = match &guard.tls {
            Some((chain, key)) => Some(server_tls(chain, key, guard.client_ca.as_deref())?),
            None => None,
        };
        let shared = Arc::new(Shared {
            body: Mutex::new(Bytes::from(body)),
            guard,
            token: Mutex::new("token-1".into()),
            ..Shared::default()
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = Router::new()
                    .route("/master/state", get(serve))
                    .route("/acs/api/v1/auth/login", axum::routing::post(login))
                    .with_state(state);
                let stopped = async {
                    let _ = stopped.await;
                };
                match tls {
                    None => {
                        let _ = axum::serve(listener, app)
                            .with_graceful_shutdown(stopped)
                            .await;
                    }
                    Some(config) => {
                        let Ok(listener) = TlsListener::new(listener, config) else {
                            return;
                        };
                        let _ = axum::serve(listener, app)
                            .with_graceful_shutdown(stopped)
                            .await;
                    }
                }
            });
        });
        Ok(Self {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Serves `body` from now on.
    pub fn set_body(&self, body: String) {
        *self.shared.body.lock().expect("not poisoned") = Bytes::from(body);
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Requests refused for their credentials.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// IAM logins accepted.
    pub fn logins(&self) -> usize {
        self.shared.logins.load(Ordering::Relaxed)
    }

    /// Makes every IAM token handed out so far invalid (as an expiry would).
    pub fn expire_tokens(&self) {
        let mut token = self.shared.token.lock().expect("not poisoned");
        let n: u32 = token.trim_start_matches("token-").parse().unwrap_or(0);
        *token = format!("token-{}", n + 1);
    }

    /// When the latest request arrived, if any has.
    pub fn last_request_at(&self) -> Option<Instant> {
        *self.shared.last_request.lock().expect("not poisoned")
    }
}

async fn serve(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    // The time first, so a reader that sees the new count sees this request's time.
    *shared.last_request.lock().expect("not poisoned") = Some(Instant::now());
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let wanted = if let Some((principal, secret)) = &shared.guard.basic {
        use base64::Engine as _;
        let pair = format!("{principal}:{secret}");
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    } else if shared.guard.iam.is_some() {
        Some(format!(
            "token={}",
            shared.token.lock().expect("not poisoned")
        ))
    } else {
        None
    };
    if wanted.is_some_and(|w| w != given) {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::UNAUTHORIZED, "authentication required").into_response();
    }
    let body = shared.body.lock().expect("not poisoned").clone();
    ([("content-type", "application/json")], body).into_response()
}

/// DC/OS's login: `{"uid", "token": <JWT signed by the account's key>}` → `{"token"}`.
async fn login(
    State(shared): State<Arc<Shared>>,
    axum::Json(request): axum::Json<serde_json::Value>,
) -> Response {
    let Some((uid, public_pem)) = &shared.guard.iam else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let valid = (|| {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes()).ok()?;
        let jwt = request.get("token")?.as_str()?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_required_spec_claims(&["exp"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation).ok()?;
        (request.get("uid")?.as_str()? == uid && claims.claims.get("uid")?.as_str()? == uid)
            .then_some(())
    })();
    if valid.is_none() {
        return (StatusCode::UNAUTHORIZED, "login refused").into_response();
    }
    shared.logins.fetch_add(1, Ordering::Relaxed);
    let token = shared.token.lock().expect("not poisoned").clone();
    axum::Json(serde_json::json!({ "token": token })).into_response()
}

/// rustls for the fake master: its certificate, and a client CA to require if given.
fn server_tls(
    chain_pem: &str,
    key_pem: &str,
    client_ca: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in dcnet_auth::tls::certificates(ca)? {
                roots.add(cert)?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let config = builder.with_single_cert(dcnet_auth::tls::certificates(chain_pem)?, key)?;
    Ok(Arc::new(config))
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
