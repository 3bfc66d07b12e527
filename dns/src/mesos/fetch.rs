//! Fetching `/master/state` as Mesos-DNS does: the masters are tried in configured order; a
//! master that is down or not answering is skipped; when the state a master returns names
//! another leader, the state is read again from that leader, so records always come from the
//! leading master's view.
//!
//! Masters are read over HTTP or HTTPS (a CA file, a client certificate), with no
//! authentication, HTTP basic credentials, or a DC/OS service-account login (IAM) whose token
//! is kept until a master refuses it: [`MasterAccess`] says how, [`MasterClient`] does it.
//!
//! Blocking (ureq): one request per refresh interval does not need an async client, and callers
//! run it on a blocking thread.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{debug, info};

use super::config::{MesosAuthentication, MesosDnsConfig};
use super::state::{State, split_pid};

/// How the masters are reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterAccess {
    /// `https://` instead of `http://`.
    pub https: bool,
    /// PEM file of the CAs that sign the masters' certificates; without it, Mozilla's public
    /// CAs (webpki-roots).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate (chain) and key presented to the masters.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub auth: MasterAuth,
}

/// How requests to the masters authenticate.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum MasterAuth {
    #[default]
    None,
    /// HTTP basic.
    Basic { principal: String, secret: String },
    /// A DC/OS service account: its JSON file (`uid`, `private_key`, `login_endpoint`).
    Iam(PathBuf),
}

impl std::fmt::Debug for MasterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterAuth::None => f.write_str("None"),
            MasterAuth::Basic { principal, .. } => write!(f, "Basic({principal}:******)"),
            MasterAuth::Iam(path) => write!(f, "Iam({})", path.display()),
        }
    }
}

impl MasterAccess {
    /// What a Mesos-DNS config asks for (`MesosHTTPSOn`, `CACertFile`, `CertFile`/`KeyFile`,
    /// `MesosAuthentication` with `MesosCredentials` or `IAMConfigFile`).
    pub fn of(config: &MesosDnsConfig) -> Self {
        let path = |p: &str| (!p.is_empty()).then(|| PathBuf::from(p));
        Self {
            https: config.mesos_https_on,
            ca_file: path(&config.ca_cert_file),
            client_cert: path(&config.cert_file).zip(path(&config.key_file)),
            auth: match config.mesos_authentication {
                MesosAuthentication::None => MasterAuth::None,
                MesosAuthentication::Basic => MasterAuth::Basic {
                    principal: config.mesos_credentials.principal.clone(),
                    secret: config.mesos_credentials.secret.clone(),
                },
                MesosAuthentication::Iam => MasterAuth::Iam(PathBuf::from(&config.iam_config_file)),
            },
        }
    }
}

/// Why a master client could not be made: a file it needs is missing or wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    #[error("{what} {path}: cannot read it ({source})")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path}: {problem}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
}

/// A DC/OS service account's login file, as Mesos-DNS reads it.
#[derive(Deserialize)]
struct ServiceAccount {
    uid: String,
    private_key: String,
    login_endpoint: String,
}

/// An IAM login: the account and the last token it got.
struct Iam {
    uid: String,
    key: jsonwebtoken::EncodingKey,
    login_endpoint: String,
    token: Mutex<Option<String>>,
}

/// Reads masters as [`MasterAccess`] says; made once, used for every poll (it keeps the TLS
/// setup and an IAM token).
pub struct MasterClient {
    agent: ureq::Agent,
    scheme: &'static str,
    basic: Option<String>,
    iam: Option<Iam>,
}

impl std::fmt::Debug for MasterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterClient")
            .field("scheme", &self.scheme)
            .field("basic", &self.basic.is_some())
            .field("iam", &self.iam.as_ref().map(|i| &i.uid))
            .finish()
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, AccessError> {
    std::fs::read(path).map_err(|source| AccessError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

impl MasterClient {
    /// Reads the files `access` names and sets up TLS; `timeout` bounds each request.
    pub fn new(access: &MasterAccess, timeout: Duration) -> Result<Self, AccessError> {
        use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
        let invalid = |what, path: &Path, problem: String| AccessError::Invalid {
            what,
            path: path.to_path_buf(),
            problem,
        };
        let mut tls = TlsConfig::builder();
        if let Some(path) = &access.ca_file {
            let pem = read_file("CA file", path)?;
            let mut roots = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(PemItem::Certificate(cert)) => roots.push(cert),
                    Ok(_) => {}
                    Err(e) => return Err(invalid("CA file", path, format!("not PEM: {e}"))),
                }
            }
            if roots.is_empty() {
                return Err(invalid(
                    "CA file",
                    path,
                    "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
                ));
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&roots));
        }
        if let Some((cert_path, key_path)) = &access.client_cert {
            let pem = read_file("client certificate", cert_path)?;
            let chain = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<Certificate<'static>>, _>>()
                .map_err(|e| invalid("client certificate", cert_path, format!("not PEM: {e}")))?;
            if chain.is_empty() {
                return Err(invalid(
                    "client certificate",
                    cert_path,
                    "holds no PEM certificate".into(),
                ));
            }
            let key = read_file("client key", key_path)?;
            let key = PrivateKey::from_pem(&key)
                .map_err(|e| invalid("client key", key_path, format!("no PEM private key: {e}")))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .user_agent("dcnet (Mesos-DNS compatible)")
            .tls_config(tls.build())
            // Statuses are read here, to say what a 401 means.
            .http_status_as_error(false)
            .build()
            .into();
        let basic = match &access.auth {
            MasterAuth::Basic { principal, secret } => {
                use data_encoding::BASE64;
                Some(format!(
                    "Basic {}",
                    BASE64.encode(format!("{principal}:{secret}").as_bytes())
                ))
            }
            _ => None,
        };
        let iam = match &access.auth {
            MasterAuth::Iam(path) => {
                let text = read_file("IAM config file", path)?;
                let account: ServiceAccount = serde_json::from_slice(&text).map_err(|e| {
                    invalid(
                        "IAM config file",
                        path,
                        format!("expected {{\"uid\", \"private_key\", \"login_endpoint\"}}: {e}"),
                    )
                })?;
                if account.uid.is_empty() || account.login_endpoint.is_empty() {
                    return Err(invalid(
                        "IAM config file",
                        path,
                        "`uid` and `login_endpoint` must not be empty".into(),
                    ));
                }
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes())
                    .map_err(|e| {
                    invalid(
                        "IAM config file",
                        path,
                        format!("`private_key` is not an RSA private key in PEM: {e}"),
                    )
                })?;
                Some(Iam {
                    uid: account.uid,
                    key,
                    login_endpoint: account.login_endpoint,
                    token: Mutex::new(None),
                })
            }
            _ => None,
        };
        Ok(Self {
            agent,
            scheme: if access.https { "https" } else { "http" },
            basic,
            iam,
        })
    }

    /// A plain-HTTP client without authentication (tests, and masters on a trusted network).
    pub fn plain(timeout: Duration) -> Self {
        match Self::new(&MasterAccess::default(), timeout) {
            Ok(client) => client,
            // Nothing is read without files: only a TLS setup that cannot fail.
            Err(e) => unreachable!("a plain client reads no file: {e}"),
        }
    }

    /// Logs in with the service account: a JWT (RS256, `uid`, an hour's `exp`) posted to the
    /// login endpoint, which answers the token the masters take (`Authorization: token=...`).
    fn login(&self, iam: &Iam) -> Result<String, String> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            uid: &'a str,
            exp: u64,
        }
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600;
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &Claims { uid: &iam.uid, exp },
            &iam.key,
        )
        .map_err(|e| format!("signing the IAM login token: {e}"))?;
        let body = serde_json::json!({ "uid": iam.uid, "token": jwt });
        let mut response = self
            .agent
            .post(&iam.login_endpoint)
            .send_json(&body)
            .map_err(|e| format!("IAM login at {}: {e}", iam.login_endpoint))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!(
                "IAM login at {} refused uid {:?}: HTTP {status}",
                iam.login_endpoint, iam.uid
            ));
        }
        #[derive(Deserialize)]
        struct Login {
            token: String,
        }
        let login: Login = response.body_mut().read_json().map_err(|e| {
            format!(
                "IAM login at {}: the answer has no token: {e}",
                iam.login_endpoint
            )
        })?;
        info!(uid = %iam.uid, endpoint = %iam.login_endpoint, "logged in to read the masters");
        Ok(login.token)
    }

    /// The IAM token, logged in for if there is none (or `fresh`).
    fn token(&self, iam: &Iam, fresh: bool) -> Result<String, String> {
        let mut token = iam.token.lock().unwrap_or_else(|p| p.into_inner());
        match &*token {
            Some(t) if !fresh => Ok(t.clone()),
            _ => {
                let t = self.login(iam)?;
                *token = Some(t.clone());
                Ok(t)
            }
        }
    }
}

/// Why no state could be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Every master failed; one reason per master, in order.
    #[error("no master returned a usable state: {}", .0.join("; "))]
    AllFailed(Vec<String>),
}

/// What a poll found.
#[derive(Debug)]
pub enum Fetched {
    /// The leading master's state, from `leader`, with what identifies its bytes.
    State { state: State, seen: Seen },
    /// The master of `seen` returned the same bytes again: nothing to parse.
    Unchanged(Seen),
}

/// The master a state was read from and a digest of its bytes, to skip parsing the same
/// state again (at 100,000 tasks, parsing is most of a poll's CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub leader: SocketAddr,
    digest: u64,
}

/// Fetches the leading master's state, trying `masters` in order through `client`.
/// With `last`, a master that returns exactly the bytes it returned then is not parsed.
pub fn fetch_state(
    client: &MasterClient,
    masters: &[SocketAddr],
    last: Option<Seen>,
) -> Result<Fetched, FetchError> {
    let read = |master: SocketAddr| -> Result<Fetched, String> {
        let started = Instant::now();
        let body = client.fetch_body(master)?;
        let seen = Seen {
            leader: master,
            digest: DIGEST.hash_one(&body),
        };
        let read = started.elapsed();
        if last == Some(seen) {
            return Ok(Fetched::Unchanged(seen));
        }
        let state = serde_json::from_slice::<State>(&body)
            .map_err(|e| format!("the response is not a master state: {e}"))?;
        debug!(%master, bytes = body.len(), ?read, parsed = ?started.elapsed() - read,
               "master state read");
        Ok(Fetched::State { state, seen })
    };
    let mut failures = Vec::new();
    for &master in masters {
        let (state, seen) = match read(master) {
            Ok(Fetched::State { state, seen }) => (state, seen),
            Ok(unchanged) => return Ok(unchanged),
            Err(e) => {
                failures.push(format!("{master}: {e}"));
                continue;
            }
        };
        match leader_of(&state) {
            Some(leader) if leader != master => match read(leader) {
                Ok(Fetched::State { state, seen }) if leader_of(&state) == Some(leader) => {
                    return Ok(Fetched::State { state, seen });
                }
                Ok(Fetched::State { .. }) => failures.push(format!(
                    "{master} named leader {leader}, which does not say it leads"
                )),
                Ok(unchanged) => return Ok(unchanged),
                Err(e) => {
                    failures.push(format!("{master} named leader {leader}, which failed: {e}"))
                }
            },
            Some(_) => return Ok(Fetched::State { state, seen }),
            None => failures.push(format!(
                "{master}: the state names no leader (not elected yet?)"
            )),
        }
    }
    Err(FetchError::AllFailed(failures))
}

/// Fixed, so digests compare across polls.
const DIGEST: foldhash::quality::FixedState =
    foldhash::quality::FixedState::with_seed(0x6d65_736f_7373_7461);

impl MasterClient {
    /// The body of a master's `/master/state`.
    fn fetch_body(&self, master: SocketAddr) -> Result<Vec<u8>, String> {
        let url = format!("{}://{master}/master/state", self.scheme);
        let get = |fresh: bool| -> Result<ureq::http::Response<ureq::Body>, String> {
            let mut request = self.agent.get(&url);
            if let Some(basic) = &self.basic {
                request = request.header("Authorization", basic);
            } else if let Some(iam) = &self.iam {
                let token = self.token(iam, fresh)?;
                request = request.header("Authorization", &format!("token={token}"));
            }
            request.call().map_err(|e| e.to_string())
        };
        let mut response = get(false)?;
        // A kept token may have expired: log in again, once.
        if self.iam.is_some() && response.status() == 401 {
            response = get(true)?;
        }
        let status = response.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => match (&self.basic, &self.iam) {
                    (None, None) => ": the master wants credentials (MesosAuthentication)",
                    _ => ": the master refused these credentials",
                },
                _ => "",
            };
            return Err(format!("HTTP {status}{hint}"));
        }
        read_body(response)
    }
}

/// Reads a state response's body.
fn read_body(mut response: ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, String> {
    // A limit, not an unbounded read: 100,000 tasks make about 70 MB of state. Read whole,
    // then parsed from the bytes: serde_json through a reader goes byte by byte, about ten
    // times slower (at 100,000 tasks, most of a poll's CPU). Sized from the announced length
    // (within the limit): grown by doubling, a 70 MB body was copied and its pages faulted in
    // about twice, at every poll, changed or not.
    let announced = response.body().content_length().unwrap_or(0);
    let mut body = Vec::with_capacity(announced.min(MAX_STATE_BYTES) as usize);
    use std::io::Read as _;
    response
        .body_mut()
        .with_config()
        .limit(MAX_STATE_BYTES)
        .reader()
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the master state: {e}"))?;
    Ok(body)
}

/// The largest state read: several times that of 100,000 tasks.
const MAX_STATE_BYTES: u64 = 512 << 20;

/// The leader a state names, as an address.
fn leader_of(state: &State) -> Option<SocketAddr> {
    let (host, port) = split_pid(&state.leader)?;
    Some(SocketAddr::new(host.parse().ok()?, port))
}
