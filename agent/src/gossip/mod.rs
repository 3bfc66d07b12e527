//! Cluster membership and replicated per-node state, over chitchat (scuttlebutt anti-entropy and
//! a phi-accrual failure detector).
//!
//! Each node writes only its own keys ([`Gossip::publish`], [`Gossip::delete`]) and reads every
//! node's through a [`ClusterView`] snapshot ([`Gossip::view`], [`Gossip::watch`]) or a stream of
//! [`Event`]s ([`Gossip::subscribe`]). Readers never take chitchat's lock: an observer task
//! samples chitchat whenever a key changes, the live set changes, or a second passes, builds the
//! next view (see [`view`]) and publishes it.
//!
//! Choices that follow chitchat's known limits: the compressed V1 digest (the V0 digest outgrows
//! a datagram past a few hundred nodes); short dead-node and tombstone grace periods, which keep
//! the digest small under churn; deletions found by diffing snapshots, since chitchat's events
//! omit them. Every datagram is authenticated ([`transport`]).

pub mod frame;
pub mod keyring;
pub mod transport;
pub mod view;

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chitchat::transport::Transport;
use chitchat::{
    Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ListenerHandle,
    ProtocolVersion,
};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Mutex, Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info};

pub use transport::{AuthenticatedUdp, TransportMetrics};
pub use view::{ClusterView, Event, NodeView};

use crate::Error;
use crate::config::GossipSettings;
use crate::identity::NodeIdentity;

/// Events buffered per subscriber; one that falls further behind gets `Lagged` and should
/// resynchronise from [`Gossip::view`].
const EVENT_BUFFER: usize = 4096;
/// The observer refreshes `last_heard` and liveness at least this often, and sees nodes that
/// are known but not judged yet (they change no key and no live set) by then.
const OBSERVE_EVERY: Duration = Duration::from_secs(1);
/// A sample that finds nothing but heartbeats moved (every node as the view has it otherwise)
/// makes a new view, for `last_heard`, only this long after the last one: at 1,000 members a
/// view costs a third of a millisecond to make, every second, for nothing else.
const HEARTBEATS_EVERY: Duration = Duration::from_secs(5);
/// Live peers told of this node's change at once (as many as a gossip round reaches).
const PUSH_FANOUT: usize = 3;

/// Gauges of the membership as this node sees it.
#[derive(Debug, Clone, Default)]
pub struct MembershipMetrics {
    nodes_up: Gauge,
    nodes_down: Gauge,
}

impl MembershipMetrics {
    /// Registers the gauges under `dcnet_cluster_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dcnet_cluster_nodes_up",
            "Nodes the failure detector considers alive",
            self.nodes_up.clone(),
        );
        registry.register(
            "dcnet_cluster_nodes_down",
            "Known nodes considered dead, not yet forgotten",
            self.nodes_down.clone(),
        );
    }
}

/// A running gossip member.
pub struct Gossip {
    /// Taken by [`Gossip::shutdown`].
    handle: Arc<std::sync::Mutex<Option<ChitchatHandle>>>,
    chitchat: Arc<Mutex<Chitchat>>,
    self_id: String,
    view: watch::Receiver<Arc<ClusterView>>,
    events: broadcast::Sender<Event>,
    changed: Arc<Notify>,
    /// Wakes the pusher: this node changed its keys.
    published: Arc<Notify>,
    observer: JoinHandle<()>,
    pusher: JoinHandle<()>,
    _key_listener: ListenerHandle,
}

impl Gossip {
    /// Joins the cluster: binds the gossip socket through `transport` and starts gossiping with
    /// the seeds. `initial` keys are published before the first datagram goes out. Messages
    /// are built up to `max_message_len` bytes: what `transport` carries (see
    /// [`AuthenticatedUdp::max_message_len`]).
    pub async fn start(
        settings: &GossipSettings,
        identity: &NodeIdentity,
        (transport, max_message_len): (&dyn Transport, usize),
        initial: Vec<(String, String)>,
        metrics: MembershipMetrics,
    ) -> Result<Self, Error> {
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(
                identity.id.as_str(),
                identity.generation,
                settings.advertise,
            ),
            cluster_id: settings.cluster.clone(),
            gossip_interval: settings.interval,
            listen_addr: settings.listen,
            seed_nodes: settings.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: settings.phi_threshold,
                // The prior: before samples exist, assume heartbeats arrive once a round.
                initial_interval: settings.interval,
                // Gaps longer than this are not sampled; it must stay well above the round, or a
                // slow gossip interval would leave the detector without samples.
                max_interval: (settings.interval * 20).max(Duration::from_secs(10)),
                dead_node_grace_period: settings.dead_node_grace,
                // The detector's phi is the silence over the window's mean interval: the last
                // 100 intervals (40 s at the default round) make a steady mean, and the
                // default 1,000 cost 8 KB a peer (8 MB a node at 1,000 members).
                sampling_window_size: 100,
            },
            marked_for_deletion_grace_period: settings.tombstone_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V1,
            max_message_len,
        };
        let handle = chitchat::spawn_chitchat(config, initial, transport)
            .await
            .map_err(|e| Error::GossipStart {
                listen: settings.listen,
                message: format!("{e:#}"),
            })?;
        let chitchat = handle.chitchat();

        let changed = Arc::new(Notify::new());
        let key_listener = {
            let changed = changed.clone();
            // Called under chitchat's lock on every key insert or update: only signal.
            chitchat
                .lock()
                .await
                .subscribe_event("", move |_| changed.notify_one())
        };
        let (view_tx, view_rx) = watch::channel(Arc::new(ClusterView::default()));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let observer = tokio::spawn(observe(
            chitchat.clone(),
            changed.clone(),
            view_tx,
            events.clone(),
            metrics,
        ));
        let handle = Arc::new(std::sync::Mutex::new(Some(handle)));
        let published = Arc::new(Notify::new());
        let pusher = tokio::spawn(push(
            chitchat.clone(),
            handle.clone(),
            published.clone(),
            settings.interval / 4,
        ));
        info!(node_id = %identity.id, generation = identity.generation, listen = %settings.listen,
              advertise = %settings.advertise, seeds = ?settings.seeds, "gossip started");
        Ok(Self {
            handle,
            chitchat,
            self_id: identity.id.clone(),
            view: view_rx,
            events,
            changed,
            published,
            observer,
            pusher,
            _key_listener: key_listener,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.self_id
    }

    /// Sets one of this node's keys; peers see it within the propagation time.
    pub async fn publish(&self, key: &str, value: &str) {
        self.chitchat.lock().await.self_node_state().set(key, value);
        self.published.notify_one();
    }

    /// Sets (`Some` value) and deletes (`None`) several of this node's keys, in order, under
    /// one lock: a burst of changes wakes the observer once, instead of once per key with
    /// each wake-up taking the lock to read every key back.
    pub async fn publish_all<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) {
        let mut chitchat = self.chitchat.lock().await;
        let state = chitchat.self_node_state();
        for (key, value) in changes {
            match value {
                Some(value) => state.set(key, value),
                None => state.delete(key),
            }
        }
        drop(chitchat);
        self.changed.notify_one();
        self.published.notify_one();
    }

    /// Deletes one of this node's keys (a tombstone that peers learn of like any update).
    pub async fn delete(&self, key: &str) {
        self.chitchat.lock().await.self_node_state().delete(key);
        // Deletions do not fire chitchat's key events.
        self.changed.notify_one();
        self.published.notify_one();
    }

    /// The latest view of the cluster.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// A receiver that sees every new view.
    pub fn watch(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// A stream of changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Waits until `predicate` holds for the view, or `timeout` passes; returns the view that
    /// satisfied it.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut predicate: impl FnMut(&ClusterView) -> bool,
    ) -> Option<Arc<ClusterView>> {
        let mut rx = self.view.clone();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|v| predicate(v))).await;
        match waited {
            Ok(Ok(view)) => Some(view.clone()),
            _ => None,
        }
    }

    /// How this node's failure detector judges every peer it knows, for diagnosing a view
    /// that does not converge (the view only says up or down).
    pub async fn peer_liveness(&self) -> Vec<PeerLiveness> {
        let chitchat = self.chitchat.lock().await;
        let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
        let dead: HashSet<&ChitchatId> = chitchat.dead_nodes().collect();
        let this = chitchat.self_chitchat_id();
        chitchat
            .node_states()
            .iter()
            .filter(|(id, _)| *id != this)
            .map(|(id, state)| PeerLiveness {
                id: id.node_id.to_string(),
                generation: id.generation_id,
                heartbeat: state.heartbeat().into(),
                live: live.contains(id),
                dead: dead.contains(id),
                detection_timeout: chitchat.failure_detection_timeout(id),
            })
            .collect()
    }

    /// Stops gossiping (publishing after that is lost). Peers notice through their failure
    /// detectors. Watches of the view see it end.
    pub async fn shutdown(&self) {
        self.observer.abort();
        self.pusher.abort();
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle
            && let Err(e) = handle.shutdown().await
        {
            debug!(error = %e, "gossip server ended with an error");
        }
    }
}

/// One peer as this node's failure detector sees it (see [`Gossip::peer_liveness`]).
#[derive(Debug, Clone)]
pub struct PeerLiveness {
    pub id: String,
    pub generation: u64,
    /// The newest heartbeat heard of it.
    pub heartbeat: u64,
    /// Judged live at the last liveness update; neither live nor dead before the first.
    pub live: bool,
    pub dead: bool,
    /// The silence after its last heartbeat at which it is judged dead; `None` without
    /// heartbeat intervals sampled (none yet, or reset when it was judged dead).
    pub detection_timeout: Option<Duration>,
}

/// Tells a few live peers of this node's changes as they are made, not at the next gossip
/// round: a change reaches its first peers in a round trip instead of up to a round later.
/// Each is a handshake (chitchat's Syn, to which the peer answers with what it lacks, and this
/// node then with what the peer lacks): anti-entropy as in a round, only sooner. Changes within
/// `gap` of a push are pushed together after it, so a burst of publications costs one push per
/// `gap`; the rounds carry everything anyway.
async fn push(
    chitchat: Arc<Mutex<Chitchat>>,
    handle: Arc<std::sync::Mutex<Option<ChitchatHandle>>>,
    published: Arc<Notify>,
    gap: Duration,
) {
    loop {
        published.notified().await;
        let peers: Vec<std::net::SocketAddr> = {
            let chitchat = chitchat.lock().await;
            let this = chitchat.self_chitchat_id();
            let peers = |ids: &mut dyn Iterator<Item = &ChitchatId>| -> Vec<_> {
                ids.filter(|id| *id != this)
                    .map(|id| id.gossip_advertise_addr)
                    .collect()
            };
            // Live peers; before the failure detector has judged any (a node that just
            // joined), every known one.
            let mut peers = match peers(&mut chitchat.live_nodes()) {
                live if live.is_empty() => peers(&mut chitchat.node_states().keys()),
                live => live,
            };
            if !peers.is_empty() {
                let start = rand::random::<u64>() as usize % peers.len();
                peers.rotate_left(start);
            }
            peers.truncate(PUSH_FANOUT);
            peers
        };
        {
            let handle = handle.lock().unwrap_or_else(|p| p.into_inner());
            let Some(handle) = handle.as_ref() else {
                return;
            };
            for peer in peers {
                // Fails only once the server stopped.
                let _ = handle.gossip(peer);
            }
        }
        tokio::time::sleep(gap).await;
    }
}

/// Samples chitchat into views until the gossip server is gone.
async fn observe(
    chitchat: Arc<Mutex<Chitchat>>,
    changed: Arc<Notify>,
    view_tx: watch::Sender<Arc<ClusterView>>,
    events: broadcast::Sender<Event>,
    metrics: MembershipMetrics,
) {
    let mut live_nodes = chitchat.lock().await.live_versions_watcher();
    let mut tick = tokio::time::interval(OBSERVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current = Arc::new(ClusterView::default());
    let mut made = std::time::Instant::now();
    let mut states = 0;
    loop {
        // Whether only the clock woke it: then no key changed here and no live set changed.
        let ticked = tokio::select! {
            () = changed.notified() => false,
            changed = live_nodes.changed() => if changed.is_err() { return } else { false },
            _ = tick.tick() => true,
        };
        let started = std::time::Instant::now();
        let heartbeats_too = made.elapsed() >= HEARTBEATS_EVERY;
        let Some(observed) = sample(&chitchat, &current, heartbeats_too, ticked, &mut states).await
        else {
            continue;
        };
        made = started;
        let listened = events.receiver_count() > 0;
        let (next, new_events) =
            view::next_view_with(&current, observed, SystemTime::now(), listened);
        // Only slow samples are worth a line: most are a few microseconds.
        if started.elapsed() >= Duration::from_millis(5) {
            debug!(took = ?started.elapsed(), "gossip view sampled");
        }
        let up = next.up_nodes().count();
        metrics.nodes_up.set(up as i64);
        metrics.nodes_down.set((next.nodes.len() - up) as i64);
        if next != *current {
            current = Arc::new(next);
            view_tx.send_replace(current.clone());
        }
        for event in new_events {
            // No subscriber is not an error.
            let _ = events.send(event);
        }
    }
}

/// A digest of which node states chitchat holds (id, generation, address) and of their max
/// versions: not of heartbeats, not of liveness (a change of the live set or of a live node's
/// keys comes through chitchat's live-versions watcher). At 1,000 members, comparing every
/// node with the view once a second was a quarter of a member's CPU at rest; this walks the
/// states without a lookup.
fn states_digest(chitchat: &Chitchat) -> u64 {
    const SEED: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x5354_4154);
    let mut hasher = SEED.build_hasher();
    for (id, state) in chitchat.node_states() {
        (&*id.node_id, id.generation_id, id.gossip_advertise_addr).hash(&mut hasher);
        state.max_version().hash(&mut hasher);
    }
    hasher.finish()
}

/// Reads every node state under chitchat's lock, copying keys only where they changed; `None`
/// when nothing but heartbeats changed, unless `heartbeats_too`. `states` is the
/// [`states_digest`] of the last sample: when only the clock woke the observer (`ticked`) and
/// it is unchanged, nothing but heartbeats can have changed, which is told without comparing
/// every node with the view.
async fn sample(
    chitchat: &Mutex<Chitchat>,
    current: &ClusterView,
    heartbeats_too: bool,
    ticked: bool,
    states: &mut u64,
) -> Option<Vec<view::Observed>> {
    let chitchat = chitchat.lock().await;
    let digest = states_digest(&chitchat);
    if std::mem::replace(states, digest) == digest && ticked && !heartbeats_too {
        return None;
    }
    let self_id = chitchat.self_chitchat_id().clone();
    // Sampled every second and on every change: at 1,000 members SipHash and string searches
    // were most of its cost, so the set uses foldhash and the rest walks sorted sequences.
    let live: HashSet<&ChitchatId, foldhash::fast::RandomState> = chitchat.live_nodes().collect();
    let states = chitchat.node_states();
    // In (node id, generation) order: a node id's newest generation is the last of its run.
    let ids: Vec<&ChitchatId> = states.keys().collect();
    let is_newest = |i: usize| {
        ids.get(i + 1)
            .is_none_or(|next| next.node_id != ids[i].node_id)
    };
    let newest = || {
        states
            .iter()
            .enumerate()
            .filter(|(i, _)| is_newest(*i))
            .map(|(_, row)| row)
    };
    if !heartbeats_too && newest().count() == current.nodes.len() {
        let mut previous = current.nodes.iter().peekable();
        let unchanged = newest().all(|(id, state)| {
            view::previous_node(&mut previous, &id.node_id, |_, _| {}).is_some_and(|node| {
                node.is_as(
                    id.generation_id,
                    id.gossip_advertise_addr,
                    state.max_version(),
                    live.contains(id) || *id == self_id,
                )
            })
        });
        if unchanged {
            return None;
        }
    }
    let mut previous = current.nodes.iter().peekable();
    let rows = states
        .iter()
        .enumerate()
        .map(|(i, (id, state))| {
            let node_id = id.node_id.to_string();
            // Older generations of a restarted node are dropped by `next_view`: never copy
            // their keys.
            let keys = (is_newest(i)
                && view::needs_keys_of(
                    view::previous_node(&mut previous, &node_id, |_, _| {}),
                    id.generation_id,
                    state.max_version(),
                ))
            .then(|| {
                let live = state
                    .key_values_shared_including_deleted()
                    .filter(|(_, v)| !v.is_deleted());
                view::keys_of(live)
            });
            view::Observed {
                id: node_id,
                generation: id.generation_id,
                gossip_addr: id.gossip_advertise_addr,
                heartbeat: state.heartbeat().into(),
                max_version: state.max_version(),
                is_live: live.contains(id),
                is_self: *id == self_id,
                keys,
            }
        })
        .collect();
    Some(rows)
}
