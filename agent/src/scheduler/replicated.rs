//! The scheduler's state on Raft ([`dcnet_consensus`]): the masters agree by quorum on the
//! apps, every version of them, and the credential store. Keys of the replicated data:
//!
//! ```text
//! apps/<id>                 App (JSON): the app as it is now
//! versions/<id>/<version>   App (JSON): each version the app has had
//! auth/store                the credential store (tokens, revocations, basic users)
//! tasks/<task id>           StoredTask: the leader's decision that this task runs there
//! backoff/<id>              [Backoff] (JSON): the app's slots waiting to be filled again
//! deployments/<id>          Deployment: a change of apps under way, with the apps before it
//! decommissioned/<node id>  a node taken out of service for good
//! links/<name>              Link (JSON): a linked cluster (see [`super::links`])
//! policies/<id>             Policy (JSON): a network policy (see [`super::policies`])
//! meta/imported             set once the files of a pre-Raft master were imported
//! meta/tasks                set once a leader kept its task set here
//! ```
//!
//! The leader commits its task set before any agent hears of a change to it, so a new leader
//! takes over exactly the tasks the old one decided on, each with its app version (an upgrade
//! half done goes on), and nothing an agent runs was unknown to the quorum.
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

use super::plan::{Backoff, Tracked};
use crate::Error;
use crate::app::App;
use crate::facts::scheduler::Assignment;

pub const APP_PREFIX: &str = "apps/";
pub const VERSION_PREFIX: &str = "versions/";
pub const CREDENTIALS_KEY: &str = "auth/store";
pub const IMPORTED_KEY: &str = "meta/imported";
pub const TASKS_PREFIX: &str = "tasks/";
pub const BACKOFF_PREFIX: &str = "backoff/";
pub const TASKS_KEPT_KEY: &str = "meta/tasks";

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

/// The values under `prefix` in `data` that decode as `T`, by key without the prefix.
pub fn prefixed<T: serde::de::DeserializeOwned>(data: &Data, prefix: &str) -> BTreeMap<String, T> {
    data.prefixed(prefix)
        .filter_map(|(k, v)| {
            Some((
                k[prefix.len()..].to_owned(),
                serde_json::from_value(v.clone()).ok()?,
            ))
        })
        .collect()
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

/// Every kept version of every app under group `group` (`/` for all): app id → its
/// versions, oldest first.
pub fn versions_under(data: &Data, group: &str) -> BTreeMap<String, Vec<String>> {
    let prefix = match group.trim_matches('/') {
        "" => VERSION_PREFIX.to_owned(),
        g => format!("{VERSION_PREFIX}{g}/"),
    };
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, _) in data.prefixed(&prefix) {
        // `versions/<id without its leading slash>/<version>`; versions hold no slash.
        if let Some((id, version)) = key[VERSION_PREFIX.len()..].rsplit_once('/') {
            out.entry(format!("/{id}"))
                .or_default()
                .push(version.to_owned());
        }
    }
    for list in out.values_mut() {
        list.sort();
    }
    out
}

/// The deployments under way in `data`, by their key.
pub fn deployments(data: &Data) -> BTreeMap<String, super::deployments::Deployment> {
    data.prefixed(super::deployments::PREFIX)
        .filter_map(|(k, v)| Some((k.clone(), serde_json::from_value(v.clone()).ok()?)))
        .collect()
}

/// App `id` as it was at `version`.
pub fn version(data: &Data, id: &str, version: &str) -> Option<App> {
    data.entries
        .get(&version_key(id, version))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
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

/// A task as kept in Raft: its app by id and version (each version is kept).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct StoredTask {
    node_id: String,
    app_id: String,
    version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    host_ports: Vec<u16>,
    created_ms: u64,
    #[serde(default)]
    failures: u32,
}

impl StoredTask {
    fn of(t: &Tracked) -> Self {
        Self {
            node_id: t.assignment.node_id.clone(),
            app_id: t.assignment.app.id.clone(),
            version: t.assignment.app.version.clone(),
            host_ports: t.assignment.host_ports.clone(),
            created_ms: t.created_ms,
            failures: t.failures,
        }
    }
}

/// Per app, its slots waiting to be filled again.
pub type Backoffs = BTreeMap<String, Vec<Backoff>>;

/// The task set (with the slots waiting to be filled) a leader kept in `data`, or `None`
/// if none ever did. A task whose app version is gone (the app was removed) is left out,
/// so its agent stops it.
pub fn tasks(data: &Data) -> Option<(BTreeMap<String, Tracked>, Backoffs)> {
    if !data.entries.contains_key(TASKS_KEPT_KEY) {
        return None;
    }
    let tasks = data
        .prefixed(TASKS_PREFIX)
        .filter_map(|(key, value)| {
            let stored: StoredTask = serde_json::from_value(value.clone()).ok()?;
            let app = data
                .entries
                .get(&version_key(&stored.app_id, &stored.version))
                .and_then(|v| serde_json::from_value::<App>(v.clone()).ok())?;
            let task_id = key[TASKS_PREFIX.len()..].to_owned();
            Some((
                task_id.clone(),
                Tracked {
                    assignment: Assignment {
                        task_id,
                        node_id: stored.node_id,
                        app,
                        host_ports: stored.host_ports,
                    },
                    created_ms: stored.created_ms,
                    failures: stored.failures,
                },
            ))
        })
        .collect();
    let backoff = data
        .prefixed(BACKOFF_PREFIX)
        .filter_map(|(key, value)| {
            let slots = serde_json::from_value(value.clone()).ok()?;
            Some((format!("/{}", &key[BACKOFF_PREFIX.len()..]), slots))
        })
        .collect();
    Some((tasks, backoff))
}

/// The command that makes `data` keep `tasks` and `backoff`, or `None` when it already does.
pub fn tasks_command(
    data: &Data,
    tasks: &BTreeMap<String, Tracked>,
    backoff: &Backoffs,
) -> Option<Command> {
    let mut command = Command::default();
    let mut wanted: BTreeMap<String, Value> = BTreeMap::new();
    for (id, t) in tasks {
        let value = serde_json::to_value(StoredTask::of(t)).unwrap_or(Value::Null);
        wanted.insert(format!("{TASKS_PREFIX}{id}"), value);
    }
    for (app, slots) in backoff.iter().filter(|(_, slots)| !slots.is_empty()) {
        let value = serde_json::to_value(slots).unwrap_or(Value::Null);
        wanted.insert(
            format!("{BACKOFF_PREFIX}{}", app.trim_start_matches('/')),
            value,
        );
    }
    for prefix in [TASKS_PREFIX, BACKOFF_PREFIX] {
        for (key, _) in data.prefixed(prefix) {
            if !wanted.contains_key(key) {
                command.set.insert(key.clone(), None);
            }
        }
    }
    for (key, value) in wanted {
        if data.entries.get(&key) != Some(&value) {
            command.set.insert(key, Some(value));
        }
    }
    if !data.entries.contains_key(TASKS_KEPT_KEY) {
        command
            .set
            .insert(TASKS_KEPT_KEY.to_owned(), Some(Value::Bool(true)));
    }
    (!command.set.is_empty()).then_some(command)
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
        crate::app::parse(
            &json!({"id": id, "cmd": "x", "instances": instances}),
            None,
            version,
        )
        .unwrap()
        .app
    }

    fn tracked(id: &str, app: &App, node: &str) -> (String, Tracked) {
        (
            id.to_owned(),
            Tracked {
                assignment: Assignment {
                    task_id: id.to_owned(),
                    node_id: node.to_owned(),
                    app: app.clone(),
                    host_ports: vec![31000],
                },
                created_ms: 7,
                failures: 2,
            },
        )
    }

    #[test]
    fn the_task_set_comes_back_as_kept_with_each_tasks_version() {
        let mut data = Data::default();
        assert_eq!(tasks(&data), None, "never kept: the new leader adopts");
        let (v1, v2) = (app("/g/web", "v1", 2), app("/g/web", "v2", 2));
        let before = BTreeMap::new();
        let both = BTreeMap::from([("/g/web".to_owned(), v2.clone())]);
        let mut c = apps_command(
            &data,
            &before,
            &BTreeMap::from([("/g/web".to_owned(), v1.clone())]),
        );
        assert!(data.apply(&c, 1).applied);
        c = apps_command(
            &data,
            &BTreeMap::from([("/g/web".to_owned(), v1.clone())]),
            &both,
        );
        assert!(data.apply(&c, 2).applied);

        // Half-way through an upgrade: one task of each version, one slot backing off.
        let set = BTreeMap::from([tracked("a", &v1, "n1"), tracked("b", &v2, "n2")]);
        let backoff = BTreeMap::from([(
            "/g/web".to_owned(),
            vec![Backoff {
                failures: 3,
                not_before_ms: 99,
            }],
        )]);
        let c = tasks_command(&data, &set, &backoff).expect("a change");
        assert!(data.apply(&c, 3).applied);
        assert_eq!(tasks(&data), Some((set.clone(), backoff.clone())));
        assert_eq!(
            tasks_command(&data, &set, &backoff),
            None,
            "nothing to write"
        );

        // A task that ends and a slot filled: only those keys change.
        let fewer = BTreeMap::from([tracked("b", &v2, "n2")]);
        let c = tasks_command(&data, &fewer, &BTreeMap::new()).expect("a change");
        assert_eq!(c.set.len(), 2, "{c:?}");
        assert!(data.apply(&c, 4).applied);
        assert_eq!(tasks(&data), Some((fewer, BTreeMap::new())));

        // The app removed with its versions: its task is no longer kept.
        assert!(data.apply(&apps_command(&data, &both, &before), 5).applied);
        assert_eq!(tasks(&data), Some((BTreeMap::new(), BTreeMap::new())));
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
