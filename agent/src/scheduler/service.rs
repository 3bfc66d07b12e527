//! The scheduler on a master node. The masters keep the apps and credentials by Raft
//! ([`super::replicated`]); the Raft leader is the scheduler that leads: while it can confirm
//! with a quorum that it still does, it runs the reconcile round and publishes its
//! assignments in gossip with its term. It serves Marathon's `/v2` API on its own listener,
//! where the masters' Raft messages arrive too.
//!
//! A new leader waits one settle period (ten gossip rounds) for the agents' task statuses to
//! reach it, adopts the running tasks, and only then publishes its set: agents never see a
//! leader's set before it holds their tasks, so a failover stops nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::credentials::{CredentialApi, Credentials};
use super::placement::Agent;
use super::plan::{self, Change, SchedState, World};
use super::replicated::{self, Replicated};
use super::store;
use crate::app::{self, App};
use crate::config::SchedulerSettings;
use crate::facts::launched::TaskStatus;
use crate::facts::scheduler::{self as facts, LEADER_KEY, LeaderFact, TASK_PREFIX};
use crate::facts::{Facts, FactsWatch};
use crate::gossip::Gossip;
use crate::lifecycle::{Services, Stage, Stopping};
use crate::state::StateDir;

/// How often the leader's round runs besides on every change.
const ROUND: Duration = Duration::from_millis(500);

/// What the loop and the API share.
struct Inner {
    gossip: Arc<Gossip>,
    /// For the API's reads (the loop has its own watch).
    facts: FactsWatch,
    dir: Arc<StateDir>,
    api_url: String,
    settle: Duration,
    replicated: Replicated,
    /// Calls to the leader (trusting the cluster CA).
    client: ureq::Agent,
    sched: Mutex<SchedState>,
    /// Whether this scheduler leads and has published its set.
    ready: Mutex<bool>,
    poke: Notify,
    /// The masters' credential store (`None` in insecure mode).
    credentials: Option<Arc<Credentials>>,
}

/// Routes of the scheduler served without a credential: Marathon's liveness check.
const OPEN_ROUTES: &[&str] = &["/ping"];

/// A running scheduler.
pub struct SchedulerService {
    inner: Arc<Inner>,
}

impl SchedulerService {
    /// Loads the stored apps and credentials, binds the API (TLS with a certificate issued
    /// now, unless insecure) and starts the loop.
    pub async fn start(
        settings: &SchedulerSettings,
        (gossip, facts, services): (Arc<Gossip>, FactsWatch, &mut Services),
        dir: Arc<StateDir>,
        gossip_interval: Duration,
        auth: &crate::auth::Auth,
        node: (&str, std::net::IpAddr),
        (limits, serve_metrics): (crate::serve::Limits, crate::serve::ServeMetrics),
    ) -> Result<Self, crate::Error> {
        let (name, address) = node;
        let reached = if settings.listen.ip().is_unspecified() {
            SocketAddr::new(address, settings.listen.port())
        } else {
            settings.listen
        };
        let replicated = Replicated::start(
            dir.path(),
            name,
            reached,
            &settings.masters,
            auth,
            dcnet_consensus::Timing::default(),
        )
        .await?;
        let credentials = match (auth.signer()?, &auth.authn) {
            (Some(signer), Some(authn)) => Some(Arc::new(Credentials::new(
                signer,
                authn.clone(),
                replicated.consensus().clone(),
            ))),
            _ => None,
        };
        let listener =
            crate::serve::bind(settings.listen).map_err(|source| crate::Error::ApiBind {
                listen: settings.listen,
                source,
            })?;
        // Clients reach a leader by its address (from gossip) or by the Mesos names.
        let names = [name, "leader.mesos", "master.mesos", "localhost"].map(str::to_owned);
        let mut ips = vec![address, std::net::IpAddr::from([127, 0, 0, 1])];
        if !settings.listen.ip().is_unspecified() {
            ips.push(settings.listen.ip());
        }
        let tls = auth.server_tls(&names, &ips)?;
        let api_url = api_url(auth.scheme(), settings.listen, address);
        info!(api = %api_url, "scheduler running; the Raft leader leads");
        let raft_routes = replicated.router(auth.authn.clone());
        let inner = Arc::new(Inner {
            gossip: gossip.clone(),
            facts: facts.clone(),
            dir,
            api_url: api_url.clone(),
            settle: gossip_interval * 10,
            replicated,
            client: auth.client(Duration::from_secs(10))?,
            sched: Mutex::new(SchedState::default()),
            ready: Mutex::new(false),
            poke: Notify::new(),
            credentials,
        });
        let stop = services.stopping(Stage::Control);
        let api_stop = stop.clone();
        let router = router(inner.clone(), auth.guard("scheduler", OPEN_ROUTES)).merge(raft_routes);
        let api = async move {
            let shutdown = async move { api_stop.cancelled().await };
            let served = match tls {
                Some(config) => match crate::auth::tls::TlsListener::new(listener, config) {
                    Ok(tls) => {
                        crate::serve::serve(
                            tls,
                            router,
                            "scheduler",
                            limits,
                            serve_metrics,
                            shutdown,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                },
                None => {
                    crate::serve::serve(
                        listener,
                        router,
                        "scheduler",
                        limits,
                        serve_metrics,
                        shutdown,
                    )
                    .await
                }
            };
            if let Err(e) = served {
                warn!(error = %e, "the scheduler API failed");
            }
        };
        services.spawn(Stage::Control, "scheduler API", api);
        services.spawn(Stage::Control, "scheduler", inner.clone().run(facts, stop));
        Ok(Self { inner })
    }

    /// Where this scheduler's API is reached.
    pub fn api_url(&self) -> &str {
        &self.inner.api_url
    }

    /// Stops Raft, once the loop and the API stopped with their stage. Tasks keep running;
    /// agents wait for the next leader.
    pub async fn shutdown(self) {
        self.inner.replicated.shutdown().await;
    }
}

/// What the facts tell the scheduler.
struct Parts {
    /// Live nodes that run tasks, for placement.
    agents: Vec<Agent>,
    /// Live nodes.
    up: std::collections::BTreeSet<String>,
    /// Task id → (node id, status), from live nodes.
    statuses: BTreeMap<String, (String, TaskStatus)>,
}

/// The placement agents, live nodes and task statuses of the facts.
fn world_parts(view: &Facts) -> Parts {
    let mut agents = Vec::new();
    let mut up = std::collections::BTreeSet::new();
    let mut all = BTreeMap::new();
    for node in view.up_nodes() {
        up.insert(node.id.clone());
        for s in node.launched.values() {
            all.insert(s.task_id.clone(), (node.id.clone(), (**s).clone()));
        }
        let Some(info) = node.info.as_deref() else {
            continue;
        };
        if let Some(r) = info.resources {
            agents.push(Agent {
                id: node.id.clone(),
                hostname: info.name.clone(),
                region: info.region.clone(),
                zone: info.zone.clone(),
                cpus: r.cpus,
                mem: r.mem,
                used_cpus: 0.0,
                used_mem: 0.0,
                used_ports: Default::default(),
            });
        }
    }
    Parts {
        agents,
        up,
        statuses: all,
    }
}

fn new_task_id(app: &App) -> String {
    format!(
        "{}.{}",
        app.id.trim_start_matches('/').replace('/', "_"),
        uuid::Uuid::new_v4()
    )
}

impl Inner {
    fn consensus(&self) -> &Arc<dcnet_consensus::Consensus> {
        self.replicated.consensus()
    }

    /// Whether this master leads by Raft (it may not know yet that it was deposed: rounds
    /// confirm with a quorum before acting).
    fn is_leader(&self) -> bool {
        self.consensus().is_leader()
    }

    /// The apps as applied here.
    fn apps(&self) -> BTreeMap<String, App> {
        replicated::apps(&self.consensus().data().borrow())
    }

    async fn run(self: Arc<Self>, mut facts: FactsWatch, stop: Stopping) {
        let mut data = self.consensus().data();
        // Woken at once when Raft elects or deposes this master.
        let mut role = self.consensus().roles();
        let mut leading_since: Option<Instant> = None;
        let mut published: BTreeMap<String, String> = BTreeMap::new();
        let mut last_purge = Instant::now();
        loop {
            let view = facts.current();
            let current = data.borrow_and_update().clone();
            if let Some(credentials) = &self.credentials {
                credentials.sync(&current);
            }
            // A leader acts only while a quorum confirms it still leads: a deposed one on the
            // minority side of a partition stops publishing within a round.
            let leading = self.is_leader() && self.consensus().confirm_leadership().await.is_ok();
            if leading {
                // Read again after the confirmation: it holds every committed write, the
                // task set kept by the last leader included.
                let current = data.borrow_and_update().clone();
                let since = *leading_since.get_or_insert_with(|| {
                    info!(
                        term = self.consensus().leader().1,
                        "this scheduler leads; waiting for the agents' task statuses"
                    );
                    Instant::now()
                });
                if since.elapsed() >= self.settle {
                    self.import_files(&current).await;
                    if last_purge.elapsed() >= Duration::from_secs(60)
                        && let Some(credentials) = &self.credentials
                    {
                        credentials.purge().await;
                        last_purge = Instant::now();
                    }
                }
                self.lead(
                    &view,
                    &current,
                    since.elapsed() >= self.settle,
                    &mut published,
                )
                .await;
            } else if leading_since.take().is_some() {
                info!("this scheduler no longer leads");
                *self.ready.lock().unwrap_or_else(|p| p.into_inner()) = false;
                *self.sched.lock().unwrap_or_else(|p| p.into_inner()) = SchedState::default();
                for key in std::mem::take(&mut published).keys() {
                    self.gossip.delete(key).await;
                }
            }
            tokio::select! {
                changed = facts.changed() => if changed.is_err() { return },
                changed = data.changed() => if changed.is_err() { return },
                changed = role.changed() => if changed.is_err() { return },
                () = self.poke.notified() => {}
                () = tokio::time::sleep(ROUND) => {}
                () = stop.cancelled() => {
                    for key in std::mem::take(&mut published).keys() {
                        self.gossip.delete(key).await;
                    }
                    return;
                }
            }
        }
    }

    /// Once, on a cluster that never had them: imports the apps and credentials a master
    /// kept in files before the scheduler's state moved to Raft, then renames the files.
    async fn import_files(&self, data: &dcnet_consensus::Data) {
        if data.entries.contains_key(replicated::IMPORTED_KEY) {
            return;
        }
        let apps = match store::load(&self.dir) {
            Ok(apps) => apps,
            Err(e) => {
                warn!(error = %e, "cannot read the apps to import");
                return;
            }
        };
        // Added beside what the cluster has: an app of the same id made since wins.
        let current = replicated::apps(data);
        let mut merged = current.clone();
        for (id, app) in &apps {
            merged.entry(id.clone()).or_insert_with(|| app.clone());
        }
        let mut command = replicated::apps_command(data, &current, &merged);
        command
            .expect
            .insert(replicated::IMPORTED_KEY.to_owned(), None);
        let credentials = self.dir.read(store::CREDENTIALS_FILE).ok().flatten();
        if let Some(text) = &credentials
            && let Ok(store) = serde_json::from_str::<serde_json::Value>(text)
        {
            command
                .set
                .insert(replicated::CREDENTIALS_KEY.to_owned(), Some(store));
        }
        command
            .set
            .insert(replicated::IMPORTED_KEY.to_owned(), Some(json!(true)));
        match self.consensus().write(command).await {
            Ok(reply) if reply.applied => {
                if !apps.is_empty() || credentials.is_some() {
                    info!(
                        apps = apps.len(),
                        credentials = credentials.is_some(),
                        "imported the apps and credentials of the files this master kept before Raft"
                    );
                }
                store::retire_files(&self.dir);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot import the stored apps yet"),
        }
    }

    /// One leader round. Before the settle period is over, only the leader fact (its API and
    /// term, no set yet); then adopt on the first round, reconcile, and publish what changed.
    async fn lead(
        &self,
        view: &Facts,
        data: &dcnet_consensus::Data,
        settled: bool,
        published: &mut BTreeMap<String, String>,
    ) {
        let term = self.consensus().leader().1;
        if !settled {
            let fact = LeaderFact {
                api: self.api_url.clone(),
                term,
                tasks: None,
            };
            let value = serde_json::to_string(&fact).unwrap_or_default();
            if published.get(LEADER_KEY) != Some(&value) {
                self.gossip.publish(LEADER_KEY, &value).await;
                published.insert(LEADER_KEY.to_owned(), value);
            }
            return;
        }
        let Parts {
            agents,
            up,
            statuses,
        } = world_parts(view);
        let apps = replicated::apps(data);
        let world = World {
            apps: &apps,
            agents,
            up,
            statuses,
            now_ms: crate::unix_ms(),
        };
        let (kept, wanted) = {
            let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
            let mut sched = self.sched.lock().unwrap_or_else(|p| p.into_inner());
            if !*ready {
                match replicated::tasks(data) {
                    Some((tasks, backoff)) => {
                        info!(
                            tasks = tasks.len(),
                            "took over the task set the last leader kept in Raft"
                        );
                        sched.tasks = tasks;
                        sched.backoff = backoff;
                    }
                    // A cluster whose leaders never kept one (before Raft): what runs.
                    None => {
                        sched.tasks = plan::adopt(&apps, &world);
                        info!(adopted = sched.tasks.len(), "adopted the running tasks");
                    }
                }
                *ready = true;
            }
            for change in plan::reconcile(&mut sched, &world, &mut new_task_id) {
                match change {
                    Change::Launched { task_id, node_id } => {
                        info!(task = %task_id, node = %node_id, "placed")
                    }
                    Change::Dropped { task_id, reason } => {
                        info!(task = %task_id, %reason, "dropped")
                    }
                }
            }
            let mut wanted = BTreeMap::new();
            for (id, t) in &sched.tasks {
                let value = serde_json::to_string(&t.assignment).unwrap_or_default();
                wanted.insert(format!("{TASK_PREFIX}{id}"), value);
            }
            if let Some(signed) = self.credentials.as_ref().and_then(|c| c.signed(data)) {
                wanted.insert(crate::facts::CREDENTIAL_SET_KEY.to_owned(), signed);
            }
            let fact = LeaderFact {
                api: self.api_url.clone(),
                term,
                tasks: Some(sched.tasks.len()),
            };
            wanted.insert(
                LEADER_KEY.to_owned(),
                serde_json::to_string(&fact).unwrap_or_default(),
            );
            (
                replicated::tasks_command(data, &sched.tasks, &sched.backoff),
                wanted,
            )
        };
        // Committed before any agent hears of it: a decision the quorum does not hold is
        // never acted on, and the next leader starts from it.
        if let Some(command) = kept {
            let keys = command.set.len();
            match self.consensus().write(command).await {
                Ok(_) => debug!(keys, "the task set is kept in Raft"),
                Err(e) => {
                    warn!(error = %e, "cannot commit the task set; the agents hear of no change until it is");
                    return;
                }
            }
        }
        // Assignments and apps first, the leader key (with the count) last.
        for (key, value) in wanted.iter().filter(|(k, _)| k.as_str() != LEADER_KEY) {
            if published.get(key) != Some(value) {
                self.gossip.publish(key, value).await;
            }
        }
        for key in published.keys().filter(|k| !wanted.contains_key(*k)) {
            self.gossip.delete(key).await;
        }
        if let Some(value) = wanted.get(LEADER_KEY)
            && published.get(LEADER_KEY) != Some(value)
        {
            self.gossip.publish(LEADER_KEY, value).await;
        }
        *published = wanted;
    }

    /// Applies a change to the apps by Raft: committed on a majority before it answers, on
    /// condition that the apps it changes are as they were read (read again and tried again
    /// a few times if another change came first). Nothing changes when `f` refuses.
    async fn change_apps<T>(
        &self,
        mut f: impl FnMut(&mut BTreeMap<String, App>) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        for _ in 0..3 {
            let data = self.consensus().data().borrow().clone();
            let before = replicated::apps(&data);
            let mut next = before.clone();
            let out = f(&mut next)?;
            let command = replicated::apps_command(&data, &before, &next);
            match self.consensus().write(command).await {
                Ok(reply) if reply.applied => {
                    self.poke.notify_one();
                    return Ok(out);
                }
                Ok(_) => continue,
                Err(e) => {
                    let (status, message) = consensus_failure(e);
                    return Err(Refusal {
                        retry_after: (status == StatusCode::SERVICE_UNAVAILABLE)
                            .then_some(ADOPTING_RETRY_AFTER_S),
                        ..refusal(status, message)
                    });
                }
            }
        }
        Err(refusal(
            StatusCode::CONFLICT,
            "the apps kept changing under this request; retry",
        ))
    }

    /// The app `id`, or 404.
    fn app(&self, id: &str) -> Result<App, Refusal> {
        self.apps().get(id).cloned().ok_or_else(|| not_found(id))
    }
}

/// What to answer when Raft refuses or cannot commit a write.
pub(crate) fn consensus_failure(e: dcnet_consensus::Error) -> (StatusCode, String) {
    use dcnet_consensus::Error as E;
    match e {
        E::NotLeader { leader } => (
            StatusCode::SERVICE_UNAVAILABLE,
            match leader {
                Some(m) => format!(
                    "this scheduler is not the leader; the leader is at {}",
                    m.url
                ),
                None => "no scheduler leads at the moment (an election is under way); retry".into(),
            },
        ),
        E::NoQuorum(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no quorum of masters answers, so nothing can be changed: {why}"),
        ),
        E::Membership(why) => (StatusCode::CONFLICT, why),
        other => (StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// The /v2 API

type Shared = Arc<Inner>;

fn router(inner: Shared, guard: crate::auth::http::Guard) -> Router {
    let credentials = super::credentials::router(CredentialApi {
        credentials: inner.credentials.clone(),
        require_leader: {
            let inner = inner.clone();
            Arc::new(move || require_leader(&inner).map_err(|r| Box::new(r.into_response())))
        },
        poke: {
            let inner = inner.clone();
            Arc::new(move || inner.poke.notify_one())
        },
    });
    Router::new()
        .route("/ping", get(|| async { "pong\n" }))
        .route("/v2/apps", get(list_apps).post(create_app))
        .route(
            "/v2/apps/{*id}",
            get(get_app).put(put_app).delete(delete_app),
        )
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/leader", get(get_leader))
        .with_state(inner.clone())
        .merge(credentials)
        .merge(super::masters::router(super::masters::MastersApi {
            consensus: inner.consensus().clone(),
            scheme: if inner.api_url.starts_with("https") {
                "https"
            } else {
                "http"
            },
        }))
        .route_layer(axum::middleware::from_fn_with_state(
            inner.clone(),
            forward_changes,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            guard,
            crate::auth::http::require_credential,
        ))
}

/// On a master that does not lead, a change (anything but a read, which it answers itself,
/// marked stale) goes to the leader, with the caller's credential, as Marathon's standbys
/// proxy to theirs. Runs after the credential check.
async fn forward_changes(
    State(s): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.method() == axum::http::Method::GET
        || request.headers().contains_key(crate::api::FORWARDED)
        || s.is_leader()
    {
        return next.run(request).await;
    }
    // Without a known leader other than itself, the call gets this master's own answer
    // (503 with Retry-After while an election runs).
    let consensus = s.consensus();
    let leader = match consensus.leader().0 {
        Some((id, leader)) if id != consensus.id() => leader,
        _ => return next.run(request).await,
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is over 1 MB",
        )
        .into_response();
    };
    crate::api::proxy(
        s.client.clone(),
        &leader.url,
        parts.method,
        &parts.uri,
        &parts.headers,
        body,
        true,
    )
    .await
}

/// An error answer: a status, Marathon's `{"message": ...}` body, and `Retry-After` when
/// waiting helps.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    body: Value,
    retry_after: Option<&'static str>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(seconds),
            );
        }
        response
    }
}

fn refusal(status: StatusCode, text: impl Into<String>) -> Refusal {
    Refusal {
        status,
        body: json!({"message": text.into()}),
        retry_after: None,
    }
}

/// How long a client should wait before retrying while a new leader adopts tasks.
const ADOPTING_RETRY_AFTER_S: &str = "2";

fn not_found(id: &str) -> Refusal {
    refusal(StatusCode::NOT_FOUND, format!("App '{id}' does not exist"))
}

/// Validates an app definition; Marathon's 422 with every problem if it is not valid. The
/// app's `user` must exist here: the nodes of a cluster share their users, and a task of a
/// user no node has could only fail. So must its overlay network among `overlays` (the ones
/// the agents have), when given.
fn validate(
    value: &Value,
    path_id: Option<&str>,
    overlays: Option<&BTreeSet<String>>,
) -> Result<app::Parsed, Refusal> {
    let unprocessable = |invalid: app::Invalid| Refusal {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        body: invalid.to_json(),
        retry_after: None,
    };
    let parsed = app::parse(value, path_id, &now_version()).map_err(unprocessable)?;
    if let (app::Network::Container(name), Some(overlays)) = (&parsed.app.network, overlays)
        && !overlays.contains(name)
    {
        let known = if overlays.is_empty() {
            "no agent has an overlay network (set `[overlay] enabled = true` on the agents)"
                .to_owned()
        } else {
            format!(
                "the agents' overlays are: {}",
                overlays.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        return Err(unprocessable(app::Invalid {
            details: vec![(
                "/networks/0/name".into(),
                format!("no agent has an overlay network named {name:?}: {known}"),
            )],
        }));
    }
    if let Some(user) = &parsed.app.user
        && nix::unistd::User::from_name(user).ok().flatten().is_none()
    {
        return Err(unprocessable(app::Invalid {
            details: vec![(
                "/user".into(),
                format!(
                    "there is no user {user:?} on the scheduler's node; create it on every node, or leave `user` out to run as the agents' default user"
                ),
            )],
        }));
    }
    Ok(parsed)
}

/// What Marathon answers to a change: its version and a deployment id.
fn deployment(version: &str) -> Value {
    json!({"version": version, "deploymentId": uuid::Uuid::new_v4().to_string()})
}

/// Refuses when this scheduler does not lead (the agents' API forwards to the one that does).
/// Refuses unless this scheduler leads by Raft. Enough for every call: Raft has the apps,
/// and a leader still adopting the running tasks shows the ones it is about to adopt.
fn require_leader(s: &Inner) -> Result<(), Refusal> {
    if s.is_leader() {
        return Ok(());
    }
    let leader = facts::leader(&s.facts.peek()).map(|l| l.api.to_owned());
    Err(refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        match leader {
            Some(url) => format!("this scheduler is not the leader; the leader is at {url}"),
            None => "no scheduler leads at the moment".to_owned(),
        },
    ))
}

fn now_version() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn parse_body(body: &Bytes) -> Result<Value, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        refusal(
            StatusCode::BAD_REQUEST,
            format!("Invalid JSON: {e}; send an app definition such as {{\"id\": \"/web\", \"cmd\": \"...\"}}"),
        )
    })
}

/// An app with its task counts, as Marathon lists it.
fn app_json(s: &Inner, app: &App, view: &Facts, with_tasks: bool) -> Value {
    let tasks = tasks_json(s, view, Some(&app.id));
    let count = |pred: &dyn Fn(&Value) -> bool| tasks.iter().filter(|t| pred(t)).count();
    let running = count(&|t| t["state"] == "TASK_RUNNING");
    let staged = count(&|t| t["state"] == "TASK_STAGING");
    let healthy = count(&|t| {
        t["healthCheckResults"]
            .as_array()
            .is_some_and(|r| !r.is_empty() && r.iter().all(|c| c["alive"] == true))
    });
    let unhealthy = count(&|t| {
        t["healthCheckResults"]
            .as_array()
            .is_some_and(|r| r.iter().any(|c| c["alive"] == false))
    });
    let mut v = app.to_marathon();
    v["tasksRunning"] = json!(running);
    v["tasksStaged"] = json!(staged);
    v["tasksHealthy"] = json!(healthy);
    v["tasksUnhealthy"] = json!(unhealthy);
    let waiting = s
        .sched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .waiting
        .get(&app.id)
        .cloned();
    if let Some(w) = waiting {
        v["waiting"] = json!(w);
    }
    if with_tasks {
        v["tasks"] = json!(tasks);
    }
    v
}

/// The leader's tasks in Marathon's shape: assignments, with what their agents report.
fn tasks_json(s: &Inner, view: &Facts, app: Option<&str>) -> Vec<Value> {
    let Parts {
        agents,
        up,
        statuses,
    } = world_parts(view);
    let names: BTreeMap<&str, String> = view
        .nodes
        .values()
        .filter_map(|n| Some((n.id.as_str(), n.info.as_deref()?.name.clone())))
        .collect();
    // A leader still adopting shows the tasks it is about to adopt.
    let tracked = if *s.ready.lock().unwrap_or_else(|p| p.into_inner()) {
        s.sched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tasks
            .clone()
    } else {
        let apps = s.apps();
        let world = World {
            apps: &apps,
            agents,
            up,
            statuses: statuses.clone(),
            now_ms: crate::unix_ms(),
        };
        plan::adopt(&apps, &world)
    };
    tracked
        .values()
        .filter(|t| app.is_none_or(|a| t.assignment.app.id == a))
        .map(|t| {
            let a = &t.assignment;
            let status = statuses.get(&a.task_id).map(|(_, s)| s);
            let iso = |ms: u64| {
                humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
            };
            json!({
                "id": a.task_id,
                "appId": a.app.id,
                "host": names.get(a.node_id.as_str()).cloned().unwrap_or_else(|| a.node_id.clone()),
                "agentId": a.node_id,
                "state": status.map_or("TASK_STAGING", |s| s.state.as_str()),
                "ipAddresses": status.and_then(|s| s.ip).map(|ip| vec![json!({
                    "ipAddress": ip.to_string(),
                    "protocol": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
                })]).unwrap_or_default(),
                "ports": a.host_ports,
                "stagedAt": iso(t.created_ms),
                "startedAt": status.and_then(|s| s.started_ms).map(iso),
                "version": a.app.version,
                // Empty until a check has a result, as in Marathon: neither healthy nor
                // unhealthy while starting.
                "healthCheckResults": status
                    .filter(|s| !s.health_pending)
                    .and_then(|s| s.healthy)
                    .map(|h| vec![json!({"alive": h})])
                    .unwrap_or_default(),
                "message": status.and_then(|s| s.message.clone()),
            })
        })
        .collect()
}

type Answer = Result<Response, Refusal>;

/// A read: served by any master from what it has applied, marked `X-Dcnet-Stale: true`
/// unless this master leads with a quorum's recent acknowledgement (a follower, or a leader
/// cut off on the minority side of a partition, may be behind).
fn read(s: &Inner, body: Value) -> Answer {
    let mut response = axum::Json(body).into_response();
    if !s.consensus().leads_recently(Duration::from_secs(1)) {
        response.headers_mut().insert(
            axum::http::HeaderName::from_static("x-dcnet-stale"),
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

async fn list_apps(State(s): State<Shared>) -> Answer {
    let view = s.facts.peek();
    let apps = s.apps();
    let list: Vec<Value> = apps
        .values()
        .map(|a| app_json(&s, a, &view, false))
        .collect();
    read(&s, json!({"apps": list}))
}

async fn create_app(State(s): State<Shared>, body: Bytes) -> Answer {
    require_leader(&s)?;
    let overlays = crate::facts::overlay::networks(&s.facts.peek());
    let parsed = validate(&parse_body(&body)?, None, Some(&overlays))?;
    let id = parsed.app.id.clone();
    s.change_apps(|apps| {
        if apps.contains_key(&id) {
            return Err(refusal(
                StatusCode::CONFLICT,
                format!(
                    "An app with id [{id}] already exists; change it with PUT /v2/apps{id} or `dcnet app remove {id}` first"
                ),
            ));
        }
        apps.insert(id.clone(), parsed.app.clone());
        Ok(())
    })
    .await?;
    info!(app = %id, ignored = ?parsed.ignored, "app created");
    let mut v = parsed.app.to_marathon();
    if !parsed.ignored.is_empty() {
        v["ignoredFields"] = json!(parsed.ignored);
    }
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

async fn get_app(State(s): State<Shared>, Path(id): Path<String>) -> Answer {
    let id = app::absolute_id(&id);
    // Marathon's `GET /v2/apps/{id}/versions`, unless an app is named so.
    if let Some(app_id) = id.strip_suffix("/versions")
        && s.app(&id).is_err()
    {
        s.app(app_id)?;
        let versions = replicated::versions(&s.consensus().data().borrow(), app_id);
        return read(&s, json!({"versions": versions}));
    }
    let app = s.app(&id)?;
    let view = s.facts.peek();
    read(&s, json!({"app": app_json(&s, &app, &view, true)}))
}

/// PUT: a whole definition or only some fields (`{"instances": 5}`), laid over the current
/// one. A change of anything but `instances` is a new version, whose tasks replace the old.
async fn put_app(State(s): State<Shared>, Path(id): Path<String>, body: Bytes) -> Answer {
    require_leader(&s)?;
    let id = app::absolute_id(&id);
    let Value::Object(patch) = parse_body(&body)? else {
        return Err(refusal(StatusCode::BAD_REQUEST, "expected a JSON object"));
    };
    // A change of network is checked against the agents' overlays; a scale is not (an app
    // whose overlay went away can still be scaled down).
    let overlays = crate::facts::overlay::networks(&s.facts.peek());
    // Laid over the app as it is when the change is committed, not as it was read first.
    let (app, existed) = s
        .change_apps(|apps| {
            let current = apps.get(&id);
            let mut merged = current.map_or_else(|| json!({}), App::to_marathon);
            for (k, v) in &patch {
                merged[k] = v.clone();
            }
            let check = (current.is_none() || patch.contains_key("networks")).then_some(&overlays);
            let mut app = validate(&merged, Some(&id), check)?.app;
            if let Some(old) = current
                && !old.runs_differently(&app)
            {
                app.version = old.version.clone();
            }
            let existed = current.is_some();
            apps.insert(id.clone(), app.clone());
            Ok((app, existed))
        })
        .await?;
    info!(app = %id, instances = app.instances, version = %app.version, "app changed");
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(deployment(&app.version))).into_response())
}

async fn delete_app(State(s): State<Shared>, Path(id): Path<String>) -> Answer {
    require_leader(&s)?;
    let id = app::absolute_id(&id);
    s.change_apps(|apps| apps.remove(&id).map(drop).ok_or_else(|| not_found(&id)))
        .await?;
    info!(app = %id, "app removed");
    Ok(axum::Json(deployment(&now_version())).into_response())
}

async fn list_tasks(State(s): State<Shared>) -> Answer {
    let view = s.facts.peek();
    read(&s, json!({"tasks": tasks_json(&s, &view, None)}))
}

async fn get_leader(State(s): State<Shared>) -> Answer {
    let view = s.facts.peek();
    let leader = facts::leader(&view)
        .ok_or_else(|| refusal(StatusCode::NOT_FOUND, "no scheduler leads at the moment"))?;
    // Marathon answers `host:port`, without the scheme.
    let address = leader
        .api
        .split_once("://")
        .map_or(leader.api, |(_, rest)| rest)
        .to_owned();
    Ok(axum::Json(json!({"leader": address})).into_response())
}

/// Where this scheduler's API is reached: `scheme://listen`, with the node's address for a
/// wildcard listen address.
pub fn api_url(scheme: &str, listen: SocketAddr, address: std::net::IpAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        address
    } else {
        listen.ip()
    };
    format!("{scheme}://{}", SocketAddr::new(ip, listen.port()))
}
