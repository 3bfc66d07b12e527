//! The scheduler's state on Raft ([`dcnet_consensus`]): the masters agree by quorum on the
//! apps, every version of them, and the credential store. Keys of the replicated data:
//!
//! ```text
//! apps/<id>                 App (JSON): the app as it is now
//! versions/<id>/<version>   App (JSON): each version the app has had
//! auth/store                the credential store (tokens, revocations, basic users)
//! meta/imported             set once the files of a pre-Raft master were imported
//! ```
//!
//! Masters are known to Raft by the address their scheduler is reached at (its id is derived
//! from it, [`raft_id`]) and exchange Raft's messages on the scheduler's own listener, at
//! `/raft/...`, with a peer token only masters can sign.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use dcnet_auth::{Authenticator, Signer, Store};
use dcnet_consensus::{Command, Consensus, Data, Master, Network, NodeId, Timing};
use serde_json::Value;
use tracing::info;

use super::app::App;
use crate::Error;

pub const APP_PREFIX: &str = "apps/";
pub const VERSION_PREFIX: &str = "versions/";
pub const CREDENTIALS_KEY: &str = "auth/store";
pub const IMPORTED_KEY: &str = "meta/imported";

/// Lifetime of the peer tokens a master signs itself (renewed at half of it).
const PEER_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A master's Raft id: its scheduler's address, `ip << 16 | port` for IPv4 (readable in
/// logs), a hash of it for IPv6.
pub fn raft_id(addr: SocketAddr) -> NodeId {
    match addr.ip() {
        IpAddr::V4(ip) => (u64::from(u32::from(ip)) << 16) | u64::from(addr.port()),
        IpAddr::V6(ip) => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (ip, addr.port()).hash(&mut h);
            // Above every IPv4 id.
            h.finish() | (1 << 63)
        }
    }
}

/// The data's key of app `id`.
pub fn app_key(id: &str) -> String {
    format!("{APP_PREFIX}{}", id.trim_start_matches('/'))
}

/// The data's key of version `version` of app `id`.
pub fn version_key(id: &str, version: &str) -> String {
    format!("{VERSION_PREFIX}{}/{version}", id.trim_start_matches('/'))
}

/// The apps in `data`.
pub fn apps(data: &Data) -> BTreeMap<String, App> {
    data.prefixed(APP_PREFIX)
        .filter_map(|(_, v)| serde_json::from_value::<App>(v.clone()).ok())
        .map(|a| (a.id.clone(), a))
        .collect()
}

/// The versions of app `id` in `data`, oldest first.
pub fn versions(data: &Data, id: &str) -> Vec<String> {
    let prefix = format!("{VERSION_PREFIX}{}/", id.trim_start_matches('/'));
    let mut out: Vec<String> = data
        .prefixed(&prefix)
        .map(|(k, _)| k[prefix.len()..].to_owned())
        .collect();
    out.sort();
    out
}

/// The credential store in `data` (empty if none was ever written).
pub fn credentials(data: &Data) -> Store {
    data.entries
        .get(CREDENTIALS_KEY)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// The command that turns `before` into `after`, on condition that the changed apps are
/// still as in `before`: a new version is kept beside the app, a removed app's versions go
/// with it.
pub fn apps_command(
    data: &Data,
    before: &BTreeMap<String, App>,
    after: &BTreeMap<String, App>,
) -> Command {
    let mut command = Command::default();
    let value = |app: &App| serde_json::to_value(app).unwrap_or(Value::Null);
    for (id, app) in after {
        if before.get(id) == Some(app) {
            continue;
        }
        let key = app_key(id);
        command
            .expect
            .insert(key.clone(), data.entries.get(&key).cloned());
        command.set.insert(key, Some(value(app)));
        let version = version_key(id, &app.version);
        if !data.entries.contains_key(&version) {
            command.set.insert(version, Some(value(app)));
        }
    }
    for id in before.keys().filter(|id| !after.contains_key(*id)) {
        let key = app_key(id);
        command
            .expect
            .insert(key.clone(), data.entries.get(&key).cloned());
        command.set.insert(key, None);
        for version in versions(data, id) {
            command.set.insert(version_key(id, &version), None);
        }
    }
    command
}

/// A master's peer token, signed by itself and renewed before it expires.
struct PeerToken {
    signer: Signer,
    subject: String,
    cached: Mutex<Option<(String, Instant)>>,
}

impl PeerToken {
    fn header(&self) -> Option<String> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, made)) = &*cached
            && made.elapsed() < PEER_TOKEN_TTL / 2
        {
            return Some(token.clone());
        }
        let now = crate::unix_ms() / 1000;
        let token = self
            .signer
            .issue_peer(&self.subject, PEER_TOKEN_TTL, now)
            .ok()?;
        let header = dcnet_auth::credential::token_header(&token);
        *cached = Some((header.clone(), Instant::now()));
        Some(header)
    }
}

/// This master's Raft.
pub struct Replicated {
    consensus: Arc<Consensus>,
}

impl Replicated {
    /// Opens this master's Raft store in `dir` and starts Raft. A master among `masters`
    /// makes them the first quorum (every one of them does the same, harmlessly); any other
    /// waits to be added.
    pub async fn start(
        dir: &std::path::Path,
        name: &str,
        reached: SocketAddr,
        masters: &[SocketAddr],
        auth: &crate::auth::Auth,
        timing: Timing,
    ) -> Result<Self, Error> {
        let consensus_error = |e: dcnet_consensus::Error| Error::Scheduler(format!("Raft: {e}"));
        let tls = match auth.ca_pem() {
            Some(ca) => Some(
                dcnet_auth::tls::client_config(ca)
                    .map_err(|e| Error::Auth(e.to_string()))?
                    .as_ref()
                    .clone(),
            ),
            None => None,
        };
        let credential: dcnet_consensus::network::Credential = match auth.signer()? {
            Some(signer) => {
                let token = PeerToken {
                    signer,
                    subject: format!("master:{name}"),
                    cached: Mutex::new(None),
                };
                Arc::new(move || token.header())
            }
            None => Arc::new(|| None),
        };
        let network = Network::new(tls, credential)
            .map_err(|e| Error::Scheduler(format!("Raft's HTTP client: {e}")))?;
        let id = raft_id(reached);
        let consensus = Consensus::open(id, dir, timing, network)
            .await
            .map_err(consensus_error)?;
        if masters.contains(&reached) {
            let members = masters
                .iter()
                .map(|m| {
                    (
                        raft_id(*m),
                        Master {
                            name: m.to_string(),
                            url: format!("{}://{m}", auth.scheme()),
                        },
                    )
                })
                .collect();
            consensus
                .initialize(members)
                .await
                .map_err(consensus_error)?;
            info!(raft_id = id, masters = ?masters, "Raft among the configured masters");
        } else {
            info!(
                raft_id = id,
                "this master is not among the configured ones: it waits to be added (`dcnet master add {reached}`)"
            );
        }
        Ok(Self {
            consensus: Arc::new(consensus),
        })
    }

    pub fn consensus(&self) -> &Arc<Consensus> {
        &self.consensus
    }

    /// Raft's routes, answering only masters (a peer token), or anyone when `authn` is
    /// `None` (insecure mode).
    pub fn router(&self, authn: Option<Arc<Authenticator>>) -> Router {
        dcnet_consensus::server::router(self.consensus.raft().clone())
            .route_layer(axum::middleware::from_fn_with_state(authn, require_peer))
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        self.consensus.shutdown().await;
    }
}

async fn require_peer(
    State(authn): State<Option<Arc<Authenticator>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(authn) = authn {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        if let Err(refusal) = authn.authenticate_peer(header.as_deref(), crate::unix_ms() / 1000) {
            return crate::auth::http::refusal_response(&refusal);
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn app(id: &str, version: &str, instances: u32) -> App {
        crate::scheduler::app::parse(
            &json!({"id": id, "cmd": "x", "instances": instances}),
            None,
            version,
        )
        .unwrap()
        .app
    }

    #[test]
    fn ids_are_addresses() {
        let id = raft_id("10.0.0.1:8080".parse().unwrap());
        assert_eq!(id, (0x0a00_0001 << 16) | 8080);
        assert_ne!(id, raft_id("10.0.0.1:8081".parse().unwrap()));
        assert!(raft_id("[fd00::1]:8080".parse().unwrap()) > id);
    }

    #[test]
    fn changes_keep_versions_and_check_what_they_change() {
        let mut data = Data::default();
        let v1 = BTreeMap::from([("/web".to_owned(), app("/web", "v1", 1))]);
        let c = apps_command(&data, &BTreeMap::new(), &v1);
        assert_eq!(c.expect[&app_key("/web")], None, "created only if absent");
        assert!(data.apply(&c, 1).applied);
        assert_eq!(apps(&data), v1);
        assert_eq!(versions(&data, "/web"), ["v1"]);

        // A scale keeps the version; a new version is kept beside it.
        let scaled = BTreeMap::from([("/web".to_owned(), app("/web", "v1", 3))]);
        assert!(data.apply(&apps_command(&data, &v1, &scaled), 2).applied);
        let v2 = BTreeMap::from([("/web".to_owned(), app("/web", "v2", 3))]);
        let change = apps_command(&data, &scaled, &v2);
        // Made from a stale read, the same change is refused.
        let stale = apps_command(&data, &v1, &v2);
        assert!(data.apply(&change, 3).applied);
        assert!(!data.apply(&stale, 4).applied);
        assert_eq!(versions(&data, "/web"), ["v1", "v2"]);

        // Removing the app removes its versions.
        assert!(
            data.apply(&apps_command(&data, &v2, &BTreeMap::new()), 5)
                .applied
        );
        assert!(data.entries.is_empty(), "{:?}", data.entries);
    }
}
