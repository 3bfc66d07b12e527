//! The overlay on a node: agrees the node's leases through gossip, keeps the VTEP, the bridges
//! and the tunnel objects of every peer in the kernel, and attaches containers.
//!
//! One task owns the leases and the kernel's tunnel state. It wakes when the overlay facts or
//! the nodes change, at the end of a lease's settle period, and every `reconcile_interval`.
//! On a change it
//! applies only the difference from what it applied last (a few netlink requests); on the
//! interval, or after anything failed, it reads the kernel back and repairs whatever differs,
//! so objects deleted or changed by hand come back within one interval.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime};

use dcnet_overlay::api::{AttachRequest, AttachResponse, DetachRequest, GcRequest};
use dcnet_overlay::container::{self, AttachSpec, BridgeSpec};
use dcnet_overlay::ipam::{Agreement, LeaseRecord, LeaseState, Observed, Outcome, Pool};
use dcnet_overlay::vtep::{self, Mac, TunnelState, VtepConfig, VtepLink};
use dcnet_overlay::{Netlink, Netns};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::Mutex;
use tracing::{debug, error, info, warn};

use super::store::{Attachment, Stored, StoredNetwork, attachment_key};
use crate::config::{OverlayNetwork, OverlaySettings};
use crate::error::error_chain;
use crate::facts::overlay::{self as facts, VTEP_KEY};
use crate::facts::{Facts, FactsWatch};
use crate::gossip::Gossip;
use crate::lifecycle::{Services, Stage, Stopping};
use crate::state::StateDir;

/// How often a running agent records that it is alive in its state file.
const RENEW_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    object: &'static str,
    op: &'static str,
}

/// What the overlay reports in `/metrics`.
#[derive(Default)]
struct Metrics {
    changes: Family<ChangeLabels, Counter>,
    change_failures: Counter,
    lease_conflicts: Counter,
    peers: Gauge,
    kernel_objects: Gauge,
    reconcile_seconds: Option<Histogram>,
    vxlan_dropped: Counter,
}

impl Metrics {
    fn new() -> Self {
        Self {
            reconcile_seconds: Some(Histogram::new(exponential_buckets(0.0001, 4.0, 9))),
            ..Self::default()
        }
    }

    /// Registers every metric under `dcnet_overlay_*`.
    fn register(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "dcnet_overlay_kernel_changes",
            "Tunnel objects the reconciler set or deleted, by object and operation",
            m.changes.clone(),
        );
        registry.register(
            "dcnet_overlay_kernel_change_failures",
            "Tunnel object changes the kernel refused (retried on the next pass)",
            m.change_failures.clone(),
        );
        registry.register(
            "dcnet_overlay_lease_conflicts",
            "Lease claims or leases given up to another agent",
            m.lease_conflicts.clone(),
        );
        registry.register(
            "dcnet_overlay_peers",
            "Remote agents the tunnel reaches",
            m.peers.clone(),
        );
        registry.register(
            "dcnet_overlay_kernel_objects",
            "Tunnel objects (neighbours, FDB entries, routes, rules) wanted in the kernel",
            m.kernel_objects.clone(),
        );
        registry.register(
            "dcnet_overlay_vxlan_dropped",
            "VXLAN datagrams dropped at the underlay interface: their source is no overlay peer",
            m.vxlan_dropped.clone(),
        );
        if let Some(h) = &m.reconcile_seconds {
            registry.register(
                "dcnet_overlay_reconcile_seconds",
                "Time of one reconcile pass (incremental or full)",
                h.clone(),
            );
        }
    }
}

/// The overlay as `GET /v1/overlay` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub vtep: Option<VtepStatus>,
    pub networks: Vec<NetworkStatus>,
    pub peers: Vec<PeerStatus>,
    pub kernel_objects: usize,
    pub last_reconcile: Option<ReconcileStatus>,
    /// Changes made by this run's read-back (full) passes after its first: tunnel objects
    /// found changed or missing in the kernel and put back (drift repaired).
    pub drift_repairs: u64,
    /// The VXLAN source filter on the underlay interface; `None` until attached.
    pub vxlan_filter: Option<VxlanFilterStatus>,
    /// The container fast path; `None` unless loaded.
    pub fast_path: Option<super::fastpath::FastpathStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VxlanFilterStatus {
    pub interface: String,
    /// Underlay addresses VXLAN is accepted from.
    pub peers: usize,
    pub passed: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VtepStatus {
    pub name: String,
    pub address: Option<Ipv4Network>,
    /// Its IPv6 address, when a network has IPv6 subnets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Network>,
    pub mac: Option<String>,
    pub lease: Option<LeaseState>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkStatus {
    pub name: String,
    pub bridge: String,
    /// The agreed subnet (IPv4, or IPv6 on an IPv6-only network).
    pub subnet: Option<IpNetwork>,
    /// A dual-stack network's IPv6 subnet, paired with `subnet`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<IpNetwork>,
    pub lease: Option<LeaseState>,
    pub mtu: u32,
    pub containers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub node: String,
    pub vtep: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vtep6: Option<Ipv6Addr>,
    pub underlay: IpAddr,
    pub subnets: Vec<IpNetwork>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileStatus {
    /// `incremental` or `full`.
    pub kind: &'static str,
    pub changes: usize,
    pub failed: usize,
    pub micros: u128,
    pub at_ms: u64,
}

/// Why an attach, detach or check failed; [`AttachError::status`] maps it to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Full(String),
    #[error("{0}")]
    Kernel(String),
}

impl AttachError {
    /// The HTTP status code for this error.
    pub fn status(&self) -> u16 {
        match self {
            AttachError::BadRequest(_) => 400,
            AttachError::NotFound(_) => 404,
            AttachError::Full(_) => 409,
            AttachError::NotReady(_) => 503,
            AttachError::Kernel(_) => 500,
        }
    }
}

struct Inner {
    settings: OverlaySettings,
    node_id: String,
    underlay: IpAddr,
    gossip: Arc<Gossip>,
    dir: Arc<StateDir>,
    /// The reconciler's netlink session.
    netlink: Netlink,
    /// Attach and detach's own session: the kernel refuses a dump on a socket that is in the
    /// middle of another (EBUSY), so the API and the reconciler never share one. Attaches and
    /// detaches hold `stored` throughout, so they never overlap each other.
    api_netlink: Netlink,
    stored: Mutex<Stored>,
    status: StdMutex<Status>,
    metrics: Metrics,
    /// Where containers send DNS: addresses the node's DNS listens on.
    nameservers: Vec<Nameserver>,
    vxlan_filter: StdMutex<FilterState>,
    fastpath: super::fastpath::Keeper,
    egress: Mutex<EgressState>,
    /// When this run started: see [`STARTUP_HOLD`].
    started: Instant,
}

/// A node that just started may know only itself for a gossip round or two. Until it has
/// heard from another node (or this long has passed), the tunnel objects an earlier run left
/// for peers are not removed and the VXLAN filter is not narrowed: its containers keep
/// reaching the other nodes while the agent restarts.
const STARTUP_HOLD: Duration = Duration::from_secs(10);

/// The egress table as applied: the script, and the table as nft then listed it (what a
/// later listing is compared with to notice a hand edit).
#[derive(Default)]
struct EgressState {
    nft: Option<std::path::PathBuf>,
    applied: Option<(String, String)>,
    /// "No nft" was said.
    warned: bool,
}

/// The VXLAN source filter: attached once the VTEP exists, kept in step with the peers.
#[derive(Default)]
enum FilterState {
    #[default]
    NotYet,
    Attached {
        filter: Box<dcnet_lb::vxlan_filter::VxlanFilter>,
        interface: String,
        dropped: u64,
    },
    /// Attaching failed (said once in the log); VXLAN is accepted from any source.
    Unavailable,
}

/// The running overlay of this node.
pub struct OverlayService {
    inner: Arc<Inner>,
}

impl OverlayService {
    /// Loads the stored leases, publishes those still valid and starts the loop. `dns_listen`
    /// are the node's DNS listeners (for the containers' resolv.conf).
    pub async fn start(
        settings: OverlaySettings,
        gossip: Arc<Gossip>,
        facts: FactsWatch,
        dir: Arc<StateDir>,
        underlay: IpAddr,
        dns_listen: &[SocketAddr],
        (registry, services): (&mut Registry, &mut Services),
    ) -> Result<Self, crate::Error> {
        let stored = Stored::load(&dir)?;
        let netlink = Netlink::open().map_err(crate::Error::Overlay)?;
        let api_netlink = Netlink::open().map_err(crate::Error::Overlay)?;
        enable_forwarding(settings.networks.iter().any(OverlayNetwork::has_ipv6));
        let nameservers = dns_listen
            .iter()
            .filter(|a| a.port() == 53)
            .filter_map(|a| match a.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => Some(Nameserver::Gateway4),
                IpAddr::V6(ip) if ip.is_unspecified() => Some(Nameserver::Gateway6),
                ip if !ip.is_loopback() => Some(Nameserver::At(ip)),
                _ => None,
            })
            .collect();
        let inner = Arc::new(Inner {
            node_id: gossip.node_id().to_owned(),
            fastpath: super::fastpath::Keeper::new(
                settings.fast_path,
                &dir.path().join(crate::state::BPF_DIR),
            ),
            settings,
            underlay,
            gossip,
            dir,
            netlink,
            api_netlink,
            stored: Mutex::new(stored),
            status: StdMutex::new(Status::default()),
            metrics: {
                let metrics = Metrics::new();
                metrics.register(registry);
                metrics
            },
            nameservers,
            vxlan_filter: StdMutex::new(FilterState::NotYet),
            egress: Mutex::new(EgressState {
                nft: crate::nft::program(),
                ..EgressState::default()
            }),
            started: Instant::now(),
        });
        let stop = services.stopping(Stage::Data);
        services.spawn(Stage::Data, "overlay", inner.clone().run(facts, stop));
        Ok(Self { inner })
    }

    /// The overlay's current state.
    pub fn status(&self) -> Status {
        let mut status = self
            .inner
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        // Read now: counters move between reconcile passes.
        status.fast_path = self.inner.fastpath.status();
        status
    }

    /// The network namespaces (paths) of every attached container.
    pub async fn attached_namespaces(&self) -> Vec<PathBuf> {
        let stored = self.inner.stored.lock().await;
        let paths: std::collections::BTreeSet<PathBuf> = stored
            .networks
            .values()
            .flat_map(|n| n.attachments.values().map(|a| a.netns.clone()))
            .collect();
        paths.into_iter().collect()
    }

    /// Attaches a container namespace to an overlay network.
    pub async fn attach(&self, req: AttachRequest) -> Result<AttachResponse, AttachError> {
        self.inner.attach(req).await
    }

    /// Detaches a container interface; `Ok(None)` if it was not attached (nothing to do).
    pub async fn detach(&self, req: DetachRequest) -> Result<Option<Attachment>, AttachError> {
        self.inner.detach(req).await
    }

    /// Checks that an attached interface is still there with its address.
    pub async fn check(&self, req: DetachRequest) -> Result<AttachResponse, AttachError> {
        self.inner.check(req).await
    }

    /// Detaches every attachment of `req.origin` on `req.network` that `req.keep` does not
    /// list; returns those detached.
    pub async fn gc(&self, req: GcRequest) -> Result<Vec<Attachment>, AttachError> {
        self.inner.network(&req.network)?;
        let gone: Vec<(String, String)> = {
            let stored = self.inner.stored.lock().await;
            stored
                .networks
                .get(&req.network)
                .map(|n| {
                    n.attachments
                        .values()
                        .filter(|a| a.origin.as_deref() == Some(req.origin.as_str()))
                        .filter(|a| {
                            !req.keep
                                .iter()
                                .any(|k| k.container_id == a.container_id && k.ifname == a.ifname)
                        })
                        .map(|a| (a.container_id.clone(), a.ifname.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut detached = Vec::new();
        for (container_id, ifname) in gone {
            let req = DetachRequest {
                container_id,
                ifname,
                network: Some(req.network.clone()),
            };
            if let Some(a) = self.inner.detach(req).await? {
                detached.push(a);
            }
        }
        Ok(detached)
    }
}

/// One agreement per pool: the VTEP address, then each network's subnet.
struct Leases {
    vtep: Agreement,
    networks: Vec<(OverlayNetwork, Agreement)>,
    /// The last outcome was `Exhausted`, per key, to log it once.
    exhausted: BTreeMap<String, bool>,
}

impl Inner {
    /// Runs until `stop`. Kernel objects stay: traffic keeps flowing while the agent restarts.
    async fn run(self: Arc<Self>, mut facts: FactsWatch, stop: Stopping) {
        let mut leases = match self.start_leases().await {
            Ok(leases) => leases,
            Err(e) => {
                error!(error = %e, "overlay: cannot start lease agreement; the overlay stays off");
                return;
            }
        };
        let mut tick = tokio::time::interval(self.settings.reconcile_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew = tokio::time::interval(RENEW_EVERY.min(self.settings.lease_release / 4));
        let mut applied: Option<TunnelState> = None;
        loop {
            let deadline = [leases.vtep.deadline()]
                .into_iter()
                .chain(leases.networks.iter().map(|(_, a)| a.deadline()))
                .flatten()
                .min();
            let settle = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                changed = facts.changed() => if changed.is_err() { break },
                _ = tick.tick() => applied = None,
                _ = renew.tick() => self.renew().await,
                _ = settle => {}
            }
            let now = facts.current();
            if self.step_leases(&now, &mut leases).await {
                applied = None;
            }
            self.reconcile(&now, &leases, &mut applied).await;
        }
        debug!("overlay loop stopped");
    }

    /// Builds the agreements from the stored leases: a lease stored within the release time
    /// is resumed (and published at once); an older one only names the preferred slot.
    async fn start_leases(&self) -> Result<Leases, String> {
        let now = Instant::now();
        let now_ms = crate::unix_ms();
        let settle = self.settings.lease_settle;
        let stored = self.stored.lock().await.clone();
        let expired = now_ms.saturating_sub(stored.renewed_ms)
            > self.settings.lease_release.as_millis() as u64;
        let resume = |record: Option<LeaseRecord>| {
            record.map(|r| {
                if expired {
                    LeaseRecord {
                        state: LeaseState::Claimed,
                        ..r
                    }
                } else {
                    r
                }
            })
        };
        let vtep_pool = Pool::addresses(self.settings.vtep_range).map_err(|e| e.to_string())?;
        let vtep = Agreement::new(vtep_pool, &self.node_id, settle, now, resume(stored.vtep));
        let mut networks = Vec::new();
        for network in &self.settings.networks {
            let pool = network.pools().map_err(|e| e.to_string())?.agreed();
            let record = stored.networks.get(&network.name).and_then(|n| n.lease);
            let agreement = Agreement::new(pool, &self.node_id, settle, now, resume(record));
            networks.push((network.clone(), agreement));
        }
        {
            // A resumed lease of a network that became dual stack gets its IPv6 addresses.
            let mut stored = self.stored.lock().await;
            let mut changed = false;
            for (network, agreement) in &networks {
                if let (Some(lease), Some(entry)) =
                    (agreement.held(), stored.networks.get_mut(&network.name))
                {
                    changed |= container_addresses(entry, network, lease.net);
                }
            }
            if changed {
                self.save(&stored);
            }
        }
        if expired && stored.renewed_ms != 0 {
            warn!(
                "overlay: stored leases are older than the release time ({}); agreeing them again",
                humantime::format_duration(self.settings.lease_release)
            );
        }
        let leases = Leases {
            vtep,
            networks,
            exhausted: BTreeMap::new(),
        };
        if let Some(r) = leases.vtep.held() {
            self.publish(VTEP_KEY, &r).await;
            info!(vtep = %r.net.ip(), "overlay: VTEP lease resumed");
        }
        for (network, agreement) in &leases.networks {
            if let Some(r) = agreement.held() {
                self.publish(&facts::network_key(&network.name), &r).await;
                info!(network = %network.name, subnet = %r.net, "overlay: subnet lease resumed");
            }
        }
        self.renew().await;
        Ok(leases)
    }

    async fn publish(&self, key: &str, record: &LeaseRecord) {
        let value = serde_json::to_string(record).expect("a lease record serialises");
        self.gossip.publish(key, &value).await;
    }

    /// Steps every agreement; returns whether a held lease appeared or changed.
    async fn step_leases(&self, view: &Facts, leases: &mut Leases) -> bool {
        let now = Instant::now();
        let now_ms = crate::unix_ms();
        let release = self.settings.lease_release;
        let mut changed = false;

        let seen = facts::observed_records(view, None, SystemTime::now(), release);
        let outcome = leases.vtep.step(now, now_ms, &observed(&seen));
        changed |= self
            .handle_outcome(VTEP_KEY, None, outcome, &mut leases.exhausted)
            .await;
        for (network, agreement) in &mut leases.networks {
            let key = facts::network_key(&network.name);
            let seen =
                facts::observed_records(view, Some(&network.name), SystemTime::now(), release);
            let outcome = agreement.step(now, now_ms, &observed(&seen));
            changed |= self
                .handle_outcome(&key, Some(network), outcome, &mut leases.exhausted)
                .await;
        }
        changed
    }

    async fn handle_outcome(
        &self,
        key: &str,
        network: Option<&OverlayNetwork>,
        outcome: Outcome,
        exhausted: &mut BTreeMap<String, bool>,
    ) -> bool {
        let was_exhausted = exhausted.insert(key.to_owned(), false).unwrap_or(false);
        match outcome {
            Outcome::Unchanged => {
                exhausted.insert(key.to_owned(), was_exhausted);
                false
            }
            Outcome::Claimed { record, lost } => {
                self.publish(key, &record).await;
                let Some((net, winner)) = lost else {
                    debug!(%key, slot = %record.net, "overlay: lease claimed");
                    return false;
                };
                self.metrics.lease_conflicts.inc();
                let mut stored = self.stored.lock().await;
                let held_lost = match network {
                    None => stored.vtep.is_some_and(|r| r.net == net),
                    Some(n) => stored
                        .networks
                        .get(&n.name)
                        .and_then(|s| s.lease)
                        .is_some_and(|r| r.net == net),
                };
                if held_lost {
                    error!(%key, %net, %winner, next = %record.net,
                           "overlay: a held lease conflicts with an older one and is given up; containers on it must be attached again");
                    match network {
                        None => stored.vtep = None,
                        Some(n) => {
                            stored.networks.remove(&n.name);
                        }
                    }
                    self.save(&stored);
                    true
                } else {
                    info!(%key, %net, %winner, next = %record.net,
                          "overlay: claim lost a tie-break; claiming another slot");
                    false
                }
            }
            Outcome::Held(record) => {
                self.publish(key, &record).await;
                let mut stored = self.stored.lock().await;
                match network {
                    None => {
                        stored.vtep = Some(record);
                        info!(vtep = %record.net.ip(), "overlay: VTEP lease agreed");
                    }
                    Some(n) => {
                        let entry = stored.networks.entry(n.name.clone()).or_insert_with(|| {
                            StoredNetwork {
                                lease: None,
                                addresses: None,
                                addresses6: None,
                                attachments: BTreeMap::new(),
                            }
                        });
                        entry.lease = Some(record);
                        container_addresses(entry, n, record.net);
                        info!(network = %n.name, subnet = %record.net, "overlay: subnet lease agreed");
                    }
                }
                self.save(&stored);
                true
            }
            Outcome::Exhausted => {
                if !was_exhausted {
                    warn!(%key, "overlay: every slot of the pool is taken; waiting for one to be released");
                }
                exhausted.insert(key.to_owned(), true);
                false
            }
        }
    }

    fn save(&self, stored: &Stored) {
        if let Err(e) = stored.save(&self.dir) {
            error!(error = %e, "overlay: cannot persist the overlay state");
        }
    }

    /// Records that this agent is alive, so its leases count as valid after a restart.
    async fn renew(&self) {
        let mut stored = self.stored.lock().await;
        stored.renewed_ms = crate::unix_ms();
        self.save(&stored);
    }

    /// The VTEPs' IPv6 range, if some network has IPv6 subnets.
    fn vtep_range6(&self) -> Option<Ipv6Network> {
        self.settings
            .networks
            .iter()
            .any(OverlayNetwork::has_ipv6)
            .then_some(self.settings.vtep_subnet6)
    }

    fn vtep_config(&self, lease: LeaseRecord) -> VtepConfig {
        let vtep_ip = match lease.net.ip() {
            IpAddr::V4(ip) => ip,
            // The VTEP pool is the IPv4 vtep_range: never IPv6.
            IpAddr::V6(_) => self.settings.vtep_range.ip(),
        };
        VtepConfig {
            name: vtep::DEFAULT_NAME.into(),
            vni: vtep::DEFAULT_VNI,
            port: vtep::DEFAULT_PORT,
            local: self.underlay,
            address: Ipv4Network::new(vtep_ip, self.settings.vtep_range.prefix())
                .unwrap_or(self.settings.vtep_range),
            address6: self.vtep_range6().map(|range6| {
                Ipv6Network::new(vtep::address6(range6, vtep_ip), range6.prefix()).unwrap_or(range6)
            }),
            mtu: self.settings.vtep_mtu,
            table: vtep::DEFAULT_TABLE,
            rule_priority: vtep::DEFAULT_RULE_PRIORITY,
        }
    }

    /// Brings the kernel to the desired tunnel state. With `applied` known, only the difference
    /// from it; otherwise (first pass, interval, after a failure) the VTEP and bridges are
    /// ensured and the kernel is read back.
    async fn reconcile(&self, view: &Facts, leases: &Leases, applied: &mut Option<TunnelState>) {
        self.reconcile_egress(applied.is_none()).await;
        let networks: Vec<(String, dcnet_overlay::ipam::NetworkPools)> = self
            .settings
            .networks
            .iter()
            .filter_map(|n| Some((n.name.clone(), n.pools().ok()?)))
            .collect();
        let peers = facts::peers(
            view,
            self.underlay,
            &networks,
            self.vtep_range6(),
            (SystemTime::now(), self.settings.lease_release),
        );
        let desired = TunnelState::desired(&peers);
        self.metrics.peers.set(peers.len() as i64);
        self.metrics.kernel_objects.set(desired.len() as i64);
        let Some(vtep_lease) = leases.vtep.held() else {
            self.update_status(leases, &peers, desired.len(), None);
            return;
        };
        let started = Instant::now();
        let config = self.vtep_config(vtep_lease);
        let full = applied.is_none();
        let result = async {
            let (link, link_changed) = VtepLink::ensure(&self.netlink, &config).await?;
            if link_changed {
                info!(vtep = %config.name, address = %config.address, mac = %config.mac(),
                      "overlay: VTEP created or repaired");
            }
            let base = match applied.take() {
                Some(base) if !link_changed => base,
                _ => {
                    for (network, agreement) in &leases.networks {
                        if let Some(lease) = agreement.held() {
                            self.ensure_bridge(&self.netlink, network, lease.net)
                                .await?;
                        }
                    }
                    link.read(&self.netlink).await?
                }
            };
            Ok::<_, dcnet_overlay::Error>((link, base))
        }
        .await;
        let (link, base) = match result {
            Ok(ok) => ok,
            Err(e) => {
                warn!(error = %e, "overlay: reconcile failed; retrying on the next pass");
                self.update_status(leases, &peers, desired.len(), None);
                return;
            }
        };
        {
            let mut stored = self.stored.lock().await;
            self.sync_fastpath(&mut stored, Some(&config.name), full)
                .await;
        }
        let heard = view.nodes.values().any(|n| !n.is_self && n.is_up)
            || self.started.elapsed() > STARTUP_HOLD;
        if heard {
            self.filter_vxlan(&peers);
        }
        let mut changes = base.changes_to(&desired);
        if !heard {
            // Only additions until the cluster is heard from (see STARTUP_HOLD).
            changes.retain(|c| c.is_set());
        }
        let outcome = link.apply(&self.netlink, &changes).await;
        for change in &outcome.done {
            let op = if change.is_set() { "set" } else { "delete" };
            self.metrics
                .changes
                .get_or_create(&ChangeLabels {
                    object: change.object(),
                    op,
                })
                .inc();
        }
        if !changes.is_empty() {
            let kind = if full { "repair" } else { "update" };
            if changes.len() <= 16 {
                for change in &outcome.done {
                    info!(%change, "overlay: {kind}");
                }
            } else {
                info!(
                    changes = outcome.done.len(),
                    peers = peers.len(),
                    "overlay: {kind}"
                );
            }
        }
        for (change, e) in &outcome.failed {
            self.metrics.change_failures.inc();
            warn!(%change, error = %e, "overlay: kernel refused a change; retrying on the next pass");
        }
        *applied = (outcome.failed.is_empty() && heard).then_some(desired.clone());
        let micros = started.elapsed().as_micros();
        if let Some(h) = &self.metrics.reconcile_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        let report = ReconcileStatus {
            kind: if full { "full" } else { "incremental" },
            changes: changes.len(),
            failed: outcome.failed.len(),
            micros,
            at_ms: crate::unix_ms(),
        };
        self.update_status(leases, &peers, desired.len(), Some(report));
    }

    /// Keeps the egress table as the networks ask; with `read_back`, lists it and restores it
    /// if it was changed by hand.
    async fn reconcile_egress(&self, read_back: bool) {
        let networks = &self.settings.networks;
        // IPv4 only: IPv6 overlays use ULA space, and NAT66 is no default to impose.
        let egress: Vec<Ipv4Network> = networks
            .iter()
            .filter(|n| n.egress)
            .filter_map(|n| n.subnet)
            .collect();
        let internal: Vec<Ipv4Network> = networks
            .iter()
            .filter_map(|n| n.subnet)
            .chain([self.settings.vtep_range])
            .collect();
        let desired = super::egress::ruleset(&egress, &internal);
        let mut state = self.egress.lock().await;
        let Some(nft) = state.nft.clone() else {
            if !egress.is_empty() && !state.warned {
                warn!(
                    "overlay: nft not found (apt install nftables); containers reach nothing beyond the overlay"
                );
                state.warned = true;
            }
            return;
        };
        let list = || crate::nft::list(&nft, super::egress::FAMILY, super::egress::TABLE);
        let repair = match &state.applied {
            Some((script, _)) if *script != desired => false,
            None => false,
            Some((_, listed)) => {
                if !read_back {
                    return;
                }
                match list().await {
                    Ok(now) if now.as_deref().unwrap_or("") == listed => return,
                    Ok(_) => true,
                    Err(e) => {
                        warn!(error = %e, "overlay: cannot read the egress table back");
                        return;
                    }
                }
            }
        };
        let applied = match crate::nft::apply(&nft, "egress", &desired).await {
            Ok(()) => list().await.map(|l| l.unwrap_or_default()),
            Err(e) => Err(e),
        };
        match applied {
            Ok(listed) => {
                if repair {
                    self.metrics
                        .changes
                        .get_or_create(&ChangeLabels {
                            object: "egress_table",
                            op: "repair",
                        })
                        .inc();
                    warn!("overlay: the egress table was changed by hand; restored");
                } else {
                    info!(networks = ?egress, "overlay: egress masquerade set");
                }
                state.applied = Some((desired, listed));
            }
            Err(e) => {
                self.metrics.change_failures.inc();
                warn!(error = %e, "overlay: cannot set the egress table; retrying on the next pass");
                state.applied = None;
            }
        }
    }

    /// Brings the fast path to this node's attachments (see [`super::fastpath`]); `vtep` once
    /// it exists. Records of older agents get their container's MAC from the namespace.
    async fn sync_fastpath(&self, stored: &mut Stored, vtep: Option<&str>, full: bool) {
        if !self.settings.fast_path {
            return;
        }
        let mut endpoints = Vec::new();
        let mut learned = false;
        for entry in stored.networks.values_mut() {
            // The bridge's first address (the agreed subnet's gateway) gives it its MAC.
            let Some(gateway) = entry.addresses.as_ref().map(|a| a.gateway()) else {
                continue;
            };
            for attachment in entry.attachments.values_mut() {
                let mut mac = attachment
                    .mac
                    .as_deref()
                    .and_then(|m| m.parse::<Mac>().ok());
                if mac.is_none() {
                    mac = read_mac(&attachment.netns, &attachment.ifname).await;
                    attachment.mac = mac.map(|m| m.to_string());
                    learned |= mac.is_some();
                }
                let Some(mac) = mac else {
                    continue;
                };
                for address in attachment.addresses() {
                    endpoints.push(super::fastpath::LocalEndpoint {
                        host_veth: attachment.host_veth.clone(),
                        address,
                        mac,
                        gateway,
                    });
                }
            }
        }
        if learned {
            self.save(stored);
        }
        let pass = self.fastpath.sync(vtep, &endpoints, full);
        if pass.repairs > 0 {
            self.metrics
                .changes
                .get_or_create(&ChangeLabels {
                    object: "fast_path",
                    op: "repair",
                })
                .inc_by(pass.repairs);
        }
        if pass.failures > 0 {
            self.metrics.change_failures.inc_by(pass.failures);
        }
    }

    /// Ensures the bridge of `network` through `nl` (the reconciler's session or the API's).
    async fn ensure_bridge(
        &self,
        nl: &Netlink,
        network: &OverlayNetwork,
        subnet: IpNetwork,
    ) -> Result<(), dcnet_overlay::Error> {
        let spec = bridge_spec(network, subnet);
        if container::ensure_bridge(nl, &spec).await? {
            info!(bridge = %spec.name, addresses = ?spec.addresses, "overlay: bridge created or repaired");
        }
        Ok(())
    }

    /// Keeps the VXLAN source filter's peers those the tunnel reaches, attaching it to the
    /// underlay interface the first time.
    fn filter_vxlan(&self, peers: &[vtep::Peer]) {
        let Ok(mut state) = self.vxlan_filter.lock() else {
            return;
        };
        if matches!(*state, FilterState::NotYet) {
            *state = match underlay_interface(self.underlay) {
                None => {
                    warn!(underlay = %self.underlay, "overlay: no interface has the underlay address; VXLAN is accepted from any source");
                    FilterState::Unavailable
                }
                Some(interface) => {
                    match dcnet_lb::vxlan_filter::VxlanFilter::attach(
                        &interface,
                        vtep::DEFAULT_PORT,
                    ) {
                        Ok(filter) => {
                            info!(%interface, port = vtep::DEFAULT_PORT, "overlay: VXLAN accepted only from overlay peers");
                            FilterState::Attached {
                                filter: Box::new(filter),
                                interface,
                                dropped: 0,
                            }
                        }
                        Err(e) => {
                            warn!(%interface, error = %format!("{e:#}"), "overlay: cannot attach the VXLAN source filter; VXLAN is accepted from any source");
                            FilterState::Unavailable
                        }
                    }
                }
            };
        }
        let FilterState::Attached {
            filter, dropped, ..
        } = &mut *state
        else {
            return;
        };
        let wanted: std::collections::BTreeSet<IpAddr> = peers.iter().map(|p| p.underlay).collect();
        match filter.set_peers(&wanted) {
            Ok((0, 0)) => {}
            Ok((added, removed)) => debug!(added, removed, "overlay: VXLAN filter peers"),
            Err(e) => warn!(error = %e, "overlay: cannot update the VXLAN filter's peers"),
        }
        if let Ok(counters) = filter.counters() {
            for (stat, n) in counters {
                if stat == dcnet_lb::vxlan_filter::VxlanStat::Dropped && n > *dropped {
                    self.metrics.vxlan_dropped.inc_by(n - *dropped);
                    *dropped = n;
                }
            }
        }
    }

    fn vxlan_filter_status(&self) -> Option<VxlanFilterStatus> {
        let state = self.vxlan_filter.lock().ok()?;
        let FilterState::Attached {
            filter, interface, ..
        } = &*state
        else {
            return None;
        };
        let counters = filter.counters().ok()?;
        let get = |s| {
            counters
                .iter()
                .find(|(stat, _)| *stat == s)
                .map_or(0, |(_, n)| *n)
        };
        Some(VxlanFilterStatus {
            interface: interface.clone(),
            peers: filter.peer_count(),
            passed: get(dcnet_lb::vxlan_filter::VxlanStat::Passed),
            dropped: get(dcnet_lb::vxlan_filter::VxlanStat::Dropped),
        })
    }

    fn update_status(
        &self,
        leases: &Leases,
        peers: &[vtep::Peer],
        objects: usize,
        reconcile: Option<ReconcileStatus>,
    ) {
        let stored_counts: BTreeMap<String, usize> = self
            .stored
            .try_lock()
            .map(|s| {
                s.networks
                    .iter()
                    .map(|(n, s)| (n.clone(), s.attachments.len()))
                    .collect()
            })
            .unwrap_or_default();
        let vtep_record = leases.vtep.record();
        let vxlan_filter = self.vxlan_filter_status();
        let Ok(mut status) = self.status.lock() else {
            return;
        };
        status.vxlan_filter = vxlan_filter;
        status.vtep = Some(VtepStatus {
            name: vtep::DEFAULT_NAME.into(),
            address: vtep_record.map(|r| self.vtep_config(r).address),
            address6: vtep_record.and_then(|r| self.vtep_config(r).address6),
            mac: vtep_record.map(|r| self.vtep_config(r).mac().to_string()),
            lease: vtep_record.map(|r| r.state),
        });
        status.networks = leases
            .networks
            .iter()
            .map(|(n, a)| NetworkStatus {
                name: n.name.clone(),
                bridge: bridge_name(&n.name),
                subnet: a.record().map(|r| r.net),
                subnet6: a.record().and_then(|r| n.pools().ok()?.paired6(r.net)),
                lease: a.record().map(|r| r.state),
                mtu: n.mtu,
                containers: stored_counts
                    .get(&n.name)
                    .copied()
                    .or_else(|| {
                        status
                            .networks
                            .iter()
                            .find(|s| s.name == n.name)
                            .map(|s| s.containers)
                    })
                    .unwrap_or(0),
            })
            .collect();
        status.peers = peers
            .iter()
            .map(|p| PeerStatus {
                node: p.node.clone(),
                vtep: p.vtep_ip,
                vtep6: p.vtep_ip6,
                underlay: p.underlay,
                subnets: p.subnets.clone(),
            })
            .collect();
        status.kernel_objects = objects;
        if let Some(report) = reconcile {
            if report.kind == "full" && status.last_reconcile.is_some() {
                status.drift_repairs += report.changes as u64;
            }
            status.last_reconcile = Some(report);
        }
    }

    async fn attach(&self, req: AttachRequest) -> Result<AttachResponse, AttachError> {
        validate_id("container_id", &req.container_id)?;
        validate_ifname(&req.ifname)?;
        let network = self.network(&req.network)?;
        let (netns, created) = open_netns(&req.netns, req.create)?;
        let result = self.attach_to(&req, &network, &netns, created).await;
        if result.is_err() && created {
            // A namespace made for this attach goes again with it.
            let _ = netns.delete();
        }
        result
    }

    async fn attach_to(
        &self,
        req: &AttachRequest,
        network: &OverlayNetwork,
        netns: &Netns,
        created_netns: bool,
    ) -> Result<AttachResponse, AttachError> {
        let key = attachment_key(&req.container_id, &req.ifname);
        let mut stored = self.stored.lock().await;
        let entry = stored
            .networks
            .get_mut(&network.name)
            .filter(|n| n.lease.is_some_and(|l| l.state == LeaseState::Held))
            .ok_or_else(|| {
                AttachError::NotReady(format!(
                    "this node has no agreed subnet of network {:?} yet (it is agreed through gossip within seconds of start); retry shortly",
                    network.name
                ))
            })?;
        if let Some(existing) = entry.attachments.get(&key) {
            return Err(AttachError::BadRequest(format!(
                "container {:?} already has interface {:?} on network {:?} (address {}); detach it first",
                req.container_id, req.ifname, network.name, existing.address
            )));
        }
        let Some(addresses) = entry.addresses.as_mut() else {
            return Err(AttachError::NotReady(
                "container addresses not ready; retry".into(),
            ));
        };
        let subnet = addresses.subnet();
        let mut assigned = vec![allocate(addresses, &key)?];
        if let Some(addresses6) = entry.addresses6.as_mut() {
            match allocate(addresses6, &key) {
                Ok(pair) => assigned.push(pair),
                Err(e) => {
                    if let Some(a) = entry.addresses.as_mut() {
                        a.release(&key);
                    }
                    return Err(e);
                }
            }
        }
        // Persist before touching the kernel: after a crash the addresses are still taken.
        self.save(&stored);

        let bridge = bridge_name(&network.name);
        let made = async {
            self.ensure_bridge(&self.api_netlink, network, subnet)
                .await?;
            let spec = AttachSpec {
                container_id: &req.container_id,
                ifname: &req.ifname,
                bridge: &bridge,
                addresses: assigned.clone(),
                mtu: network.mtu,
            };
            container::attach(&self.api_netlink, netns, &spec).await
        }
        .await;
        let attached = match made {
            Ok(attached) => attached,
            Err(e) => {
                if let Some(entry) = stored.networks.get_mut(&network.name) {
                    for a in [entry.addresses.as_mut(), entry.addresses6.as_mut()]
                        .into_iter()
                        .flatten()
                    {
                        a.release(&key);
                    }
                }
                self.save(&stored);
                return Err(match e {
                    dcnet_overlay::Error::InterfaceExists { .. } => {
                        AttachError::BadRequest(e.to_string())
                    }
                    other => AttachError::Kernel(error_chain(&other)),
                });
            }
        };
        let families = Families::of(&assigned);
        let nameservers = self.container_nameservers(&families);
        let resolv_conf = netns
            .netns_name()
            .filter(|_| !nameservers.is_empty())
            .and_then(|name| write_resolv_conf(name, &nameservers));
        let record = Attachment {
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: netns.path().to_path_buf(),
            address: assigned[0].0.ip(),
            address6: families
                .address6
                .filter(|_| assigned.len() > 1)
                .map(|a| a.ip()),
            host_veth: attached.host_veth.clone(),
            mac: Some(attached.mac.to_string()),
            origin: req.origin.clone(),
            default_route: attached.default_route,
            created_netns,
            resolv_conf,
        };
        if let Some(entry) = stored.networks.get_mut(&network.name) {
            entry.attachments.insert(key, record);
        }
        self.save(&stored);
        self.sync_fastpath(&mut stored, None, false).await;
        if let Ok(mut status) = self.status.lock()
            && let Some(n) = status.networks.iter_mut().find(|n| n.name == network.name)
        {
            n.containers += 1;
        }
        let shown: Vec<String> = assigned.iter().map(|(a, _)| a.to_string()).collect();
        info!(container = %req.container_id, ifname = %req.ifname, network = %network.name,
              addresses = %shown.join(" "), "overlay: container attached");
        Ok(AttachResponse {
            network: network.name.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            address: families.address,
            gateway: families.gateway,
            address6: families.address6,
            gateway6: families.gateway6,
            mtu: network.mtu,
            mac: attached.mac.to_string(),
            host_veth: attached.host_veth,
            nameservers,
            default_route: attached.default_route,
        })
    }

    async fn detach(&self, req: DetachRequest) -> Result<Option<Attachment>, AttachError> {
        validate_id("container_id", &req.container_id)?;
        validate_ifname(&req.ifname)?;
        if let Some(name) = &req.network {
            self.network(name)?;
        }
        let key = attachment_key(&req.container_id, &req.ifname);
        let mut stored = self.stored.lock().await;
        let found = stored
            .networks
            .iter_mut()
            .filter(|(name, _)| req.network.as_ref().is_none_or(|n| n == *name))
            .find_map(|(name, entry)| {
                let attachment = entry.attachments.remove(&key)?;
                for a in [entry.addresses.as_mut(), entry.addresses6.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    a.release(&key);
                }
                Some((name.clone(), attachment))
            });
        // Out of the fast path first: nothing is delivered to an interface about to go.
        self.sync_fastpath(&mut stored, None, false).await;
        // The veth goes even if no record names it (an attach interrupted before it recorded).
        container::detach(&self.api_netlink, &req.container_id, &req.ifname)
            .await
            .map_err(|e| AttachError::Kernel(error_chain(&e)))?;
        let Some((network, attachment)) = found else {
            return Ok(None);
        };
        if let Some(path) = &attachment.resolv_conf {
            remove_resolv_conf(path);
        }
        if attachment.created_netns
            && let Err(e) = Netns::open_path(&attachment.netns).and_then(Netns::delete)
        {
            warn!(netns = %attachment.netns.display(), error = %e, "overlay: cannot delete the container's namespace");
        }
        self.save(&stored);
        if let Ok(mut status) = self.status.lock()
            && let Some(n) = status.networks.iter_mut().find(|n| n.name == network)
        {
            n.containers = n.containers.saturating_sub(1);
        }
        info!(container = %req.container_id, ifname = %req.ifname, %network,
              address = %attachment.address, "overlay: container detached");
        Ok(Some(attachment))
    }

    async fn check(&self, req: DetachRequest) -> Result<AttachResponse, AttachError> {
        validate_id("container_id", &req.container_id)?;
        validate_ifname(&req.ifname)?;
        let key = attachment_key(&req.container_id, &req.ifname);
        let stored = self.stored.lock().await;
        let (name, entry, attachment) = stored
            .networks
            .iter()
            .filter(|(name, _)| req.network.as_ref().is_none_or(|n| n == *name))
            .find_map(|(name, entry)| Some((name, entry, entry.attachments.get(&key)?)))
            .ok_or_else(|| {
                AttachError::NotFound(format!(
                    "container {:?} has no interface {:?} on this node's overlays",
                    req.container_id, req.ifname
                ))
            })?;
        let network = self.network(name)?;
        // Each address with its subnet's prefix and gateway.
        let assigned: Vec<(IpNetwork, IpAddr)> = attachment
            .addresses()
            .into_iter()
            .filter_map(|ip| {
                let pool = [entry.addresses.as_ref(), entry.addresses6.as_ref()]
                    .into_iter()
                    .flatten()
                    .find(|a| a.subnet().contains(ip))?;
                Some((
                    IpNetwork::new(ip, pool.subnet().prefix()).ok()?,
                    pool.gateway(),
                ))
            })
            .collect();
        if assigned.is_empty() {
            return Err(AttachError::NotReady(
                "container addresses not ready".into(),
            ));
        }
        let netns = Netns::open_path(&attachment.netns).map_err(|e| {
            AttachError::NotFound(format!(
                "the container's namespace is gone: {}",
                error_chain(&e)
            ))
        })?;
        let addresses: Vec<IpNetwork> = assigned.iter().map(|(a, _)| *a).collect();
        let default_via: Vec<IpAddr> = if attachment.default_route {
            assigned.iter().map(|(_, g)| *g).collect()
        } else {
            Vec::new()
        };
        container::check(&netns, &attachment.ifname, &addresses, &default_via)
            .await
            .map_err(|e| AttachError::NotFound(error_chain(&e)))?;
        let families = Families::of(&assigned);
        Ok(AttachResponse {
            network: network.name.clone(),
            container_id: attachment.container_id.clone(),
            ifname: attachment.ifname.clone(),
            address: families.address,
            gateway: families.gateway,
            address6: families.address6,
            gateway6: families.gateway6,
            mtu: network.mtu,
            mac: String::new(),
            host_veth: attachment.host_veth.clone(),
            nameservers: self.container_nameservers(&families),
            default_route: attachment.default_route,
        })
    }

    fn network(&self, name: &str) -> Result<OverlayNetwork, AttachError> {
        self.settings
            .networks
            .iter()
            .find(|n| n.name == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .settings
                    .networks
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect();
                AttachError::BadRequest(format!(
                    "no overlay network named {name:?} on this node; configured: {}",
                    known.join(", ")
                ))
            })
    }

    /// The nameservers a container of these families can reach.
    fn container_nameservers(&self, families: &Families) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for n in &self.nameservers {
            let ip = match n {
                Nameserver::Gateway4 => families.gateway.map(IpAddr::V4),
                Nameserver::Gateway6 => families.gateway6.map(IpAddr::V6),
                Nameserver::At(ip) => Some(*ip),
            };
            if let Some(ip) = ip
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
        out
    }
}

/// Where containers send DNS, from one of the node's DNS listeners.
#[derive(Debug, Clone, Copy)]
enum Nameserver {
    /// A wildcard IPv4 listener: the network's IPv4 gateway.
    Gateway4,
    /// A wildcard IPv6 listener: the network's IPv6 gateway.
    Gateway6,
    At(IpAddr),
}

/// A container interface's addresses (with prefix) and gateways, by family.
#[derive(Debug, Default)]
struct Families {
    address: Option<Ipv4Network>,
    gateway: Option<Ipv4Addr>,
    address6: Option<Ipv6Network>,
    gateway6: Option<Ipv6Addr>,
}

impl Families {
    fn of(assigned: &[(IpNetwork, IpAddr)]) -> Self {
        let mut f = Self::default();
        for pair in assigned {
            match *pair {
                (IpNetwork::V4(a), IpAddr::V4(g)) => (f.address, f.gateway) = (Some(a), Some(g)),
                (IpNetwork::V6(a), IpAddr::V6(g)) => (f.address6, f.gateway6) = (Some(a), Some(g)),
                _ => {}
            }
        }
        f
    }
}

/// An address of `pool` for the attachment `key`, with the subnet's prefix and the gateway.
fn allocate(
    pool: &mut dcnet_overlay::ipam::ContainerIps,
    key: &str,
) -> Result<(IpNetwork, IpAddr), AttachError> {
    let ip = pool
        .allocate(key)
        .map_err(|e| AttachError::Full(e.to_string()))?;
    let address = IpNetwork::new(ip, pool.subnet().prefix())
        .map_err(|e| AttachError::Kernel(e.to_string()))?;
    Ok((address, pool.gateway()))
}

/// Makes `entry`'s container address pools those of the lease `leased` of `network`: the
/// agreed subnet's and, on a dual-stack network, the paired IPv6 subnet's. Pools of the same
/// subnet are kept (with their allocations). Returns whether anything changed.
fn container_addresses(
    entry: &mut StoredNetwork,
    network: &OverlayNetwork,
    leased: IpNetwork,
) -> bool {
    use dcnet_overlay::ipam::ContainerIps;
    let mut changed = false;
    if entry.addresses.as_ref().map(ContainerIps::subnet) != Some(leased) {
        entry.addresses = Some(ContainerIps::new(leased));
        changed = true;
    }
    let paired = network.pools().ok().and_then(|p| p.paired6(leased));
    if entry.addresses6.as_ref().map(ContainerIps::subnet) != paired {
        entry.addresses6 = paired.map(ContainerIps::new);
        changed = true;
    }
    changed
}

fn observed(seen: &[(String, LeaseRecord)]) -> Vec<Observed<'_>> {
    seen.iter()
        .map(|(id, record)| Observed {
            node_id: id,
            record: *record,
        })
        .collect()
}

/// The bridge of overlay `name`, as dcos-overlay names the Mesos containerizer's.
/// The MAC of a container's interface, read in its namespace; `None` if it is gone.
async fn read_mac(netns: &Path, ifname: &str) -> Option<Mac> {
    let inside = Netns::open_path(netns).ok()?.open_netlink().ok()?;
    container::interface_mac(&inside, ifname)
        .await
        .ok()
        .filter(|m| !m.is_zero())
}

pub fn bridge_name(name: &str) -> String {
    format!("m-{name}")
}

/// The bridge of `network` on the node holding the lease `leased`: the gateway addresses of
/// the agreed subnet and its IPv6 pair.
fn bridge_spec(network: &OverlayNetwork, leased: IpNetwork) -> BridgeSpec {
    let subnets = match network.pools() {
        Ok(pools) => pools.subnets(leased),
        Err(_) => vec![leased],
    };
    let addresses = subnets
        .into_iter()
        .map(|subnet| {
            let gateway = dcnet_overlay::ipam::ContainerIps::new(subnet).gateway();
            IpNetwork::new(gateway, subnet.prefix()).unwrap_or(subnet)
        })
        .collect();
    BridgeSpec {
        name: bridge_name(&network.name),
        addresses,
        mtu: network.mtu,
    }
}

/// Opens the namespace `netns` (a name under /run/netns, or a path); with `create`, a name
/// that does not exist yet is created. Returns it and whether it was created.
fn open_netns(netns: &str, create: bool) -> Result<(Netns, bool), AttachError> {
    if netns.is_empty() {
        return Err(AttachError::BadRequest(
            "netns is empty: give a namespace name under /run/netns or a path such as /proc/<pid>/ns/net".into(),
        ));
    }
    if netns.contains('/') {
        if create {
            return Err(AttachError::BadRequest(format!(
                "create needs a namespace name, not the path {netns:?}"
            )));
        }
        return Netns::open_path(Path::new(netns))
            .map(|n| (n, false))
            .map_err(|e| AttachError::NotFound(error_chain(&e)));
    }
    let path = Path::new(dcnet_overlay::netns::NETNS_DIR).join(netns);
    if create && !path.exists() {
        let created = Netns::create(netns).map_err(|e| match e {
            dcnet_overlay::Error::InvalidNetnsName(_) => AttachError::BadRequest(e.to_string()),
            other => AttachError::Kernel(error_chain(&other)),
        })?;
        return Ok((created, true));
    }
    Netns::open_path(&path)
        .map(|n| (n, false))
        .map_err(|e| AttachError::NotFound(error_chain(&e)))
}

fn validate_id(what: &str, id: &str) -> Result<(), AttachError> {
    let ok =
        !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(())
    } else {
        Err(AttachError::BadRequest(format!(
            "{what} {id:?} is not valid: use 1 to 256 printable characters without spaces or '/'"
        )))
    }
}

fn validate_ifname(ifname: &str) -> Result<(), AttachError> {
    let ok = !ifname.is_empty()
        && ifname.len() <= 15
        && ifname != "."
        && ifname != ".."
        && ifname
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(AttachError::BadRequest(format!(
            "ifname {ifname:?} is not a valid interface name: use 1 to 15 characters without spaces, '/' or ':'"
        )))
    }
}

/// Writes `/etc/netns/<name>/resolv.conf`, which `ip netns exec` shows as /etc/resolv.conf.
fn write_resolv_conf(name: &str, nameservers: &[IpAddr]) -> Option<PathBuf> {
    let dir = Path::new("/etc/netns").join(name);
    let path = dir.join("resolv.conf");
    let mut text = String::from("# written by dcnet: the node's DNS\n");
    for ns in nameservers {
        text.push_str(&format!("nameserver {ns}\n"));
    }
    text.push_str("options timeout:1 attempts:3\n");
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text));
    match written {
        Ok(()) => Some(path),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "overlay: cannot write the container's resolv.conf");
            None
        }
    }
}

fn remove_resolv_conf(path: &Path) {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        // Only if empty: the directory may hold other files of the namespace.
        let _ = std::fs::remove_dir(dir);
    }
}

/// Routing between the bridges and the VTEP needs forwarding on in this namespace; IPv6
/// forwarding only when a network has IPv6 subnets.
fn enable_forwarding(ipv6: bool) {
    enable_sysctl("/proc/sys/net/ipv4/ip_forward", "IPv4 forwarding");
    if !ipv6 {
        return;
    }
    const ALL: &str = "/proc/sys/net/ipv6/conf/all/forwarding";
    if std::fs::read_to_string(ALL).is_ok_and(|v| v.trim() == "1") {
        return;
    }
    // A forwarding node ignores router advertisements unless accept_ra is 2: an interface
    // that took its IPv6 address or default route from them would lose it when it expires.
    let interfaces = std::fs::read_dir("/proc/sys/net/ipv6/conf")
        .into_iter()
        .flatten();
    for dir in interfaces.flatten() {
        let name = dir.file_name();
        if ["all", "default", "lo"].iter().any(|n| name == *n) {
            continue;
        }
        let path = dir.path().join("accept_ra");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
            match std::fs::write(&path, "2") {
                Ok(()) => {
                    info!(interface = ?name, "overlay: accept_ra set to 2: router advertisements stay accepted with IPv6 forwarding on")
                }
                Err(e) => {
                    warn!(interface = ?name, error = %e, "overlay: cannot set accept_ra to 2; with IPv6 forwarding on, router advertisements are ignored on it")
                }
            }
        }
    }
    enable_sysctl(ALL, "IPv6 forwarding");
}

fn enable_sysctl(path: &str, what: &str) {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return;
    }
    match std::fs::write(path, "1") {
        Ok(()) => info!("overlay: {what} enabled"),
        Err(e) => {
            warn!(error = %e, "overlay: cannot enable {what}; containers will not reach other nodes")
        }
    }
}

/// The interface holding `address` (the one VXLAN from peers arrives on).
fn underlay_interface(address: IpAddr) -> Option<String> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .find(|a| {
            let Some(sa) = a.address.as_ref() else {
                return false;
            };
            match address {
                IpAddr::V4(ip) => sa.as_sockaddr_in().is_some_and(|sin| sin.ip() == ip),
                IpAddr::V6(ip) => sa.as_sockaddr_in6().is_some_and(|sin| sin.ip() == ip),
            }
        })
        .map(|a| a.interface_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_interface_names_are_checked() {
        assert!(validate_id("container_id", "task.1-abc").is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(257)] {
            assert!(validate_id("container_id", bad).is_err(), "{bad:?}");
        }
        assert!(validate_ifname("eth0").is_ok());
        for bad in ["", "a/b", "eth:0", "1234567890123456", ".."] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bridges_take_the_first_address() {
        let network = OverlayNetwork {
            name: "dcos".into(),
            subnet: Some("9.0.0.0/8".parse().unwrap()),
            prefix: 24,
            subnet6: None,
            prefix6: 80,
            mtu: 1420,
            egress: true,
        };
        let spec = bridge_spec(&network, "9.0.7.0/24".parse().unwrap());
        assert_eq!(spec.name, "m-dcos");
        assert_eq!(spec.addresses, ["9.0.7.1/24".parse().unwrap()]);
        let dual = OverlayNetwork {
            subnet6: Some("fd01:e::/64".parse().unwrap()),
            ..network
        };
        let spec = bridge_spec(&dual, "9.0.7.0/24".parse().unwrap());
        let shown: Vec<String> = spec.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["9.0.7.1/24", "fd01:e::7:0:0:1/80"]);
    }
}
