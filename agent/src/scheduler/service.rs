//! The scheduler on a master node. The masters keep the apps and credentials by Raft
//! ([`super::replicated`]); the Raft leader is the scheduler that leads: while it can confirm
//! with a quorum that it still does, it runs the reconcile round and publishes its
//! assignments in gossip with its term. It serves Marathon's `/v2` API ([`super::marathon`])
//! and dcnet's own (credentials, masters, decommissioned nodes) on its own listener, where
//! the masters' Raft messages arrive too.
//!
//! A new leader waits one settle period (ten gossip rounds) for the agents' task statuses to
//! reach it, adopts the running tasks, and only then publishes its set: agents never see a
//! leader's set before it holds their tasks, so a failover stops nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::credentials::Credentials;
use super::deployments;
use super::events;
use super::marathon::{
    ADOPTING_RETRY_AFTER_S, Refusal, not_found, now_version, refusal, require_leader,
};
use super::placement::Agent;
use super::plan::{self, Change, SchedState, Tracked, World};
use super::replicated::{self, Replicated};
use super::store;
use crate::app::App;
use crate::config::SchedulerSettings;
use crate::facts::launched::TaskStatus;
use crate::facts::scheduler::{LEADER_KEY, LeaderFact, TASK_PREFIX};
use crate::facts::{Facts, FactsWatch};
use crate::gossip::Gossip;
use crate::lifecycle::{Services, Stage, Stopping};
use crate::state::StateDir;

/// Events a slow `/v2/events` subscriber may fall behind by before it misses some.
const EVENT_BACKLOG: usize = 1024;

/// How often the leader's round runs besides on every change.
const ROUND: Duration = Duration::from_millis(500);

/// What the loop and the API share.
pub(super) struct Inner {
    gossip: Arc<Gossip>,
    /// For the API's reads (the loop has its own watch).
    pub(super) facts: FactsWatch,
    dir: Arc<StateDir>,
    pub(super) api_url: String,
    /// This master's region: the cluster's home region, where apps without an `@region`
    /// constraint run.
    pub(super) region: Option<String>,
    settle: Duration,
    replicated: Replicated,
    /// Calls to the leader (trusting the cluster CA).
    client: ureq::Agent,
    pub(super) sched: Mutex<SchedState>,
    /// Whether this scheduler leads and has published its set.
    pub(super) ready: Mutex<bool>,
    pub(super) poke: Notify,
    /// Held by a leader round from reading the apps to committing its task set, and by a
    /// change that must land in one round whole (killing tasks while scaling down).
    round: tokio::sync::Mutex<()>,
    /// Marathon's event bus (`/v2/events`): each subscriber holds a receiver.
    pub(super) events: tokio::sync::broadcast::Sender<Arc<events::Event>>,
    /// What the leader last saw of each task, for the task events; `None` until its first
    /// round (a new leader says nothing of the tasks it finds).
    seen: Mutex<Option<BTreeMap<String, events::Seen>>>,
    /// The masters' credential store (`None` in insecure mode).
    pub(super) credentials: Option<Arc<Credentials>>,
    /// This cluster's id and name, for `/v1/cluster` and the links.
    pub(super) cluster: crate::identity::ClusterIdentity,
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
        (dir, gossip_interval): (Arc<StateDir>, Duration),
        auth: &crate::auth::Auth,
        node: (&str, std::net::IpAddr, Option<&str>),
        (cluster, node_reads): (
            crate::identity::ClusterIdentity,
            Arc<std::sync::OnceLock<Router>>,
        ),
        (limits, serve_metrics): (crate::serve::Limits, crate::serve::ServeMetrics),
    ) -> Result<Self, crate::Error> {
        let (name, address, region) = node;
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
            region: region.map(str::to_owned),
            settle: gossip_interval * 10,
            replicated,
            client: auth.client(Duration::from_secs(10))?,
            sched: Mutex::new(SchedState::default()),
            ready: Mutex::new(false),
            poke: Notify::new(),
            round: tokio::sync::Mutex::new(()),
            events: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
            seen: Mutex::new(None),
            credentials,
            cluster,
        });
        let stop = services.stopping(Stage::Control);
        let api_stop = stop.clone();
        let router = router(inner.clone(), auth.guard("scheduler", OPEN_ROUTES))
            .merge(raft_routes)
            // The dashboard and its reads of this master's own node.
            .fallback(crate::dashboard::node_reads(node_reads));
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
        let stop_delivery = services.stopping(Stage::Control);
        services.spawn(
            Stage::Control,
            "event subscribers",
            super::marathon::subscriptions::deliver(inner.clone(), stop_delivery),
        );
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

/// The scheduler's API: Marathon's `/v2`, and dcnet's own credentials, masters,
/// decommissioned nodes and linked clusters; changes go to the leader, every call needs a credential but `/ping`.
fn router(inner: Arc<Inner>, guard: crate::auth::http::Guard) -> Router {
    let credentials = super::credentials::router(super::credentials::CredentialApi {
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
    super::marathon::routes(inner.clone())
        .merge(super::decommission::routes(inner.clone()))
        .merge(super::links::routes(inner.clone()))
        .merge(super::policies::routes(inner.clone()))
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
    State(s): State<Arc<Inner>>,
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

/// What the facts tell the scheduler.
pub(super) struct Parts {
    /// Live nodes that run tasks, for placement.
    pub(super) agents: Vec<Agent>,
    /// Live nodes.
    pub(super) up: std::collections::BTreeSet<String>,
    /// Task id → (node id, status), from live nodes.
    pub(super) statuses: BTreeMap<String, (String, TaskStatus)>,
}

/// The placement agents, live nodes and task statuses of the facts. A decommissioned node
/// (by id in `data`) is neither: its tasks count as lost, and nothing is placed there.
pub(super) fn world_parts(view: &Facts, data: &dcnet_consensus::Data) -> Parts {
    let decommissioned = super::decommission::all(data);
    let mut agents = Vec::new();
    let mut up = std::collections::BTreeSet::new();
    let mut all = BTreeMap::new();
    for node in view
        .up_nodes()
        .filter(|n| !decommissioned.contains_key(&n.id))
    {
        up.insert(node.id.clone());
        for s in node.launched.values() {
            all.insert(s.task_id.clone(), (node.id.clone(), (**s).clone()));
        }
        let Some(info) = node.info.as_deref() else {
            continue;
        };
        if let Some(r) = &info.resources {
            agents.push(Agent {
                id: node.id.clone(),
                hostname: info.name.clone(),
                region: info.region.clone(),
                zone: info.zone.clone(),
                attributes: info.attributes.clone(),
                role: r.role.clone(),
                containers: r.containers.is_some(),
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

/// The nodes found down, with when they were last heard (unix ms).
fn down_since(view: &Facts) -> BTreeMap<String, u64> {
    view.nodes
        .values()
        .filter(|n| !n.is_up)
        .map(|n| {
            let ms = n
                .last_heard
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            (n.id.clone(), ms)
        })
        .collect()
}

fn new_task_id(app: &App) -> String {
    format!(
        "{}.{}",
        app.id.trim_start_matches('/').replace('/', "_"),
        uuid::Uuid::new_v4()
    )
}

impl Inner {
    pub(super) fn consensus(&self) -> &Arc<dcnet_consensus::Consensus> {
        self.replicated.consensus()
    }

    /// Whether this master leads by Raft (it may not know yet that it was deposed: rounds
    /// confirm with a quorum before acting).
    pub(super) fn is_leader(&self) -> bool {
        self.consensus().is_leader()
    }

    /// The apps as applied here.
    pub(super) fn apps(&self) -> BTreeMap<String, App> {
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
                let _round = self.round.lock().await;
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
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = None;
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
        } = world_parts(view, data);
        let apps = replicated::apps(data);
        // Decoded once a round: what the plan orders by, and what may have ended.
        let under_way = replicated::deployments(data);
        let world = World {
            apps: &apps,
            agents,
            up,
            statuses,
            now_ms: crate::unix_ms(),
            home_region: self.region.clone(),
            deploying: under_way
                .values()
                .flat_map(|d| d.apps.keys().cloned())
                .collect(),
            down_since: down_since(view),
        };
        let (kept, finished, wanted) = {
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
            {
                let host = |node: &str| {
                    view.nodes
                        .get(node)
                        .and_then(|n| n.info.as_deref())
                        .map_or_else(|| node.to_owned(), |i| i.address.to_string())
                };
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                let primed = seen.is_some();
                let said =
                    events::task_events(seen.get_or_insert_default(), &world.statuses, &host);
                if primed {
                    for event in said {
                        self.emit(event);
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
            for policy in super::policies::all(data).into_values() {
                wanted.insert(
                    format!("{}{}", crate::facts::scheduler::POLICY_PREFIX, policy.id),
                    serde_json::to_string(&policy).unwrap_or_default(),
                );
            }
            for link in super::links::all(data).into_values() {
                let fact = crate::facts::scheduler::LinkFact {
                    name: link.name.clone(),
                    id: link.id,
                    domain: link.domain,
                    dns: link.dns,
                };
                wanted.insert(
                    format!("{}{}", crate::facts::scheduler::LINK_PREFIX, link.name),
                    serde_json::to_string(&fact).unwrap_or_default(),
                );
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
            // Deployments whose apps now run as asked are over.
            let mut finished = dcnet_consensus::Command::default();
            for (key, d) in under_way {
                if deployments::done(&d, &apps, &sched.tasks, &world.statuses) {
                    self.emit(events::deployment_success(&d, &apps));
                    finished
                        .expect
                        .insert(key.clone(), data.entries.get(&key).cloned());
                    finished.set.insert(key, None);
                }
            }
            (
                replicated::tasks_command(data, &sched.tasks, &sched.backoff),
                finished,
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
        if !finished.set.is_empty() {
            let ids: Vec<&str> = finished
                .set
                .keys()
                .map(|k| k.trim_start_matches(deployments::PREFIX))
                .collect();
            info!(?ids, "deployment(s) finished");
            if let Err(e) = self.consensus().write(finished).await {
                warn!(error = %e, "cannot record the end of deployments yet");
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
    ///
    /// A change that changes anything is a deployment, committed with it
    /// ([`super::deployments`]); it supersedes the deployments under way for the same apps.
    /// Returns `f`'s answer and the deployment's id (a fresh one, kept nowhere, when nothing
    /// changed: Marathon answers every change with one).
    pub(super) async fn change_apps<T>(
        &self,
        mut f: impl FnMut(&mut BTreeMap<String, App>) -> Result<T, Refusal>,
    ) -> Result<(T, String), Refusal> {
        let id = uuid::Uuid::new_v4().to_string();
        for _ in 0..3 {
            let data = self.consensus().data().borrow().clone();
            let before = replicated::apps(&data);
            let mut next = before.clone();
            let out = f(&mut next)?;
            if let Some(cycle) = crate::app::dependency_cycle(&next) {
                return Err(refusal(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "the apps' dependencies would go round in a circle: {}; remove one of them",
                        cycle.join(" -> ")
                    ),
                ));
            }
            let mut command = replicated::apps_command(&data, &before, &next);
            let deployment = deployments::of_change(id.clone(), now_version(), &before, &next);
            if let Some(d) = &deployment {
                for (key, old) in replicated::deployments(&data) {
                    if old.apps.keys().any(|app| d.apps.contains_key(app)) {
                        command
                            .expect
                            .insert(key.clone(), data.entries.get(&key).cloned());
                        command.set.insert(key, None);
                    }
                }
                command.set.insert(
                    format!("{}{id}", deployments::PREFIX),
                    Some(serde_json::to_value(d).unwrap_or_default()),
                );
            }
            match self.consensus().write(command).await {
                Ok(reply) if reply.applied => {
                    self.poke.notify_one();
                    if let Some(d) = &deployment {
                        for app_id in d.apps.keys() {
                            self.emit(match next.get(app_id) {
                                Some(app) => events::api_post(app),
                                None => events::app_terminated(app_id),
                            });
                        }
                        self.emit(events::deployment_info(d, &next));
                    }
                    return Ok((out, id));
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

    /// Kills the tasks `ids` of the leader's set: they leave it in the next round, which
    /// commits the set and tells their agents. With `scale`, each app's `instances` goes
    /// down by as many of its tasks in the same round (no task replaces them, and no other
    /// is stopped as an extra); without, they are replaced like tasks that ended, without
    /// a backoff. Returns the tasks killed (ids not in the set are left out), and the
    /// deployment of the scale.
    pub(super) async fn kill_tasks(
        &self,
        ids: &BTreeSet<String>,
        scale: bool,
    ) -> Result<(Vec<Tracked>, Option<String>), Refusal> {
        if !*self.ready.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(Refusal {
                retry_after: Some(ADOPTING_RETRY_AFTER_S),
                ..refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the new leader is still adopting the running tasks; retry",
                )
            });
        }
        let _round = self.round.lock().await;
        let doomed: Vec<Tracked> = {
            let sched = self.sched.lock().unwrap_or_else(|p| p.into_inner());
            ids.iter()
                .filter_map(|id| sched.tasks.get(id).cloned())
                .collect()
        };
        let mut deployment = None;
        if scale && !doomed.is_empty() {
            let mut per_app: BTreeMap<String, u32> = BTreeMap::new();
            for t in &doomed {
                *per_app.entry(t.assignment.app.id.clone()).or_default() += 1;
            }
            let now = now_version();
            let ((), id) = self
                .change_apps(|apps| {
                    for (id, n) in &per_app {
                        if let Some(app) = apps.get_mut(id) {
                            app.instances = app.instances.saturating_sub(*n);
                            app.scaled_at = Some(now.clone());
                        }
                    }
                    Ok(())
                })
                .await?;
            deployment = Some(id);
        }
        let mut sched = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        for t in &doomed {
            sched.tasks.remove(&t.assignment.task_id);
            info!(task = %t.assignment.task_id, scale, "killed by request");
        }
        drop(sched);
        self.poke.notify_one();
        Ok((doomed, deployment))
    }

    /// Sends `event` to the `/v2/events` subscribers (none is fine).
    fn emit(&self, event: events::Event) {
        let _ = self.events.send(Arc::new(event));
    }

    /// Sends an event made elsewhere (`data` with its `eventType` and `timestamp`).
    pub(super) fn emit_raw(&self, kind: &'static str, data: serde_json::Value) {
        self.emit(events::Event { kind, data });
    }

    /// The app `id`, or 404.
    pub(super) fn app(&self, id: &str) -> Result<App, Refusal> {
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
