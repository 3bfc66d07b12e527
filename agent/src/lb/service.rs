//! The agent's load-balancer service: loads the eBPF datapath, attaches it to the configured
//! cgroup, and keeps its VIPs equal to what the task facts in gossip imply ([`super::desired`]).
//!
//! Ordering with DNS: the named VIPs handed to the DNS service (`l4lb.thisdcos.directory`) are
//! only those the datapath has programmed, after the sync that programmed them, so a name never
//! resolves on a node before a connect to its address is translated there.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dcnet_lb::datapath::VipCounters;
use dcnet_lb::{Datapath, Vip, VipName, sockets};
use dcnet_overlay::Netns;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::desired::{Desired, Localities, desired};
use super::locality::Locality;
use crate::config::LbSettings;
use crate::facts::{Facts, FactsWatch};
use crate::lifecycle::{Services, Stage, Stopping, settle};
use crate::overlay::OverlayService;

/// A burst of gossip updates within this window costs one sync.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// A node that hears from nobody retires an earlier run's datapath after this long anyway.
const RETIRE_AFTER: Duration = Duration::from_secs(10);

/// Named VIPs the datapath has: DNS name → its addresses (IPv4, and IPv6 when its tasks have
/// IPv6 addresses). Read by the DNS service.
pub type NamedVips = BTreeMap<String, Vec<IpAddr>>;

/// A VIP as `GET /v1/vips` and `dcnet vips` show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct VipStatus {
    pub vip: SocketAddr,
    pub protocol: dcnet_lb::Protocol,
    /// `<name>.<framework>.l4lb.thisdcos.directory` for a named VIP.
    pub name: Option<String>,
    /// New connections since the VIP was programmed on this node.
    pub connections: u64,
    pub backends: Vec<BackendStatus>,
}

/// One backend of a [`VipStatus`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct BackendStatus {
    pub addr: SocketAddr,
    pub weight: u32,
    /// `up` (takes new connections), `spare` (healthy, but nearer backends take this node's
    /// connections) or `draining` (weight 0: unhealthy or going).
    pub state: String,
    pub connections: u64,
    /// Where it runs, if its agent has a fault domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

#[derive(Debug, Default)]
struct SyncMetrics {
    syncs: Counter,
    udp_destroyed: Counter,
    failures: Counter,
    label_errors: Counter,
    seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl SyncMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "dcnet_lb_syncs",
            "Times the datapath was brought in line with gossip",
            self.syncs.clone(),
        );
        registry.register(
            "dcnet_lb_sync_failures",
            "VIPs a sync could not program (see the log)",
            self.failures.clone(),
        );
        registry.register(
            "dcnet_lb_label_errors",
            "VIP labels of tasks that could not be used (see the log)",
            self.label_errors.clone(),
        );
        registry.register(
            "dcnet_lb_udp_sockets_destroyed",
            "Connected UDP sockets destroyed because their backend left the VIP",
            self.udp_destroyed.clone(),
        );
        registry.register(
            "dcnet_lb_sync_seconds",
            "Duration of the last sync",
            self.seconds.clone(),
        );
    }
}

/// What the service and the API share.
struct Shared {
    datapath: Mutex<Datapath>,
    names: Mutex<BTreeMap<Vip, (VipName, String)>>,
    /// Where the backends run, and those kept as spares (for the status).
    placement: Mutex<Placement>,
}

#[derive(Default)]
struct Placement {
    localities: BTreeMap<SocketAddr, Locality>,
    spares: BTreeSet<(Vip, SocketAddr)>,
}

impl Shared {
    fn datapath(&self) -> MutexGuard<'_, Datapath> {
        // A panic while holding the lock leaves the maps as the kernel has them; keep going.
        self.datapath.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running load balancer.
pub struct LbService {
    shared: Arc<Shared>,
}

impl LbService {
    /// Loads and attaches the datapath, then follows gossip. `named` receives the named VIPs
    /// the datapath has, for DNS.
    ///
    /// `overlay`: where the containers' namespaces are known, so that UDP sockets in them still
    /// connected to a removed backend can be destroyed (the node's own are always covered).
    ///
    /// The datapath stays attached while anything holds it (the API, the metrics collector):
    /// until the process ends.
    pub fn start(
        settings: &LbSettings,
        pins: &std::path::Path,
        facts: FactsWatch,
        named: watch::Sender<NamedVips>,
        overlay: Option<Arc<OverlayService>>,
        (registry, services): (&mut Registry, &mut Services),
    ) -> Result<Self, crate::Error> {
        // The socket tables are pinned: the next run's programs use them as they are. Without
        // pins (no BPF filesystem can be mounted, a full disk) VIPs work all the same; only
        // sockets connected before the next restart then show their backend to getpeername.
        let mut datapath = match Datapath::load_sharing(pins) {
            Ok((datapath, remade)) => {
                if !remade.is_empty() {
                    warn!(tables = ?remade, pins = %pins.display(), "load balancer: pinned socket tables of another layout were made anew; sockets connected before show their backend to getpeername");
                }
                datapath
            }
            Err(e) => {
                warn!(pins = %pins.display(), error = %crate::error::error_chain(&e), "load balancer: cannot pin the socket tables; this run's are its own");
                Datapath::load().map_err(crate::Error::Lb)?
            }
        };
        // Attached to outlive this process: while the agent restarts, VIPs keep working.
        datapath
            .attach_to_outlive(&settings.cgroup)
            .map_err(crate::Error::Lb)?;
        info!(cgroup = %settings.cgroup.display(), "load balancer attached");
        let shared = Arc::new(Shared {
            datapath: Mutex::new(datapath),
            names: Mutex::new(BTreeMap::new()),
            placement: Mutex::new(Placement::default()),
        });
        let metrics = Arc::new(SyncMetrics::default());
        metrics.register(registry);
        registry.register_collector(Box::new(CountersCollector(shared.clone())));

        let stop = services.stopping(Stage::Data);
        let follower = follow(
            facts,
            (shared.clone(), settings.cgroup.clone()),
            named,
            overlay,
            metrics,
            stop,
        );
        services.spawn(Stage::Data, "load balancer sync", follower);
        Ok(Self { shared })
    }

    /// Every VIP the datapath has, with backends and connection counts.
    pub fn status(&self) -> Result<Vec<VipStatus>, dcnet_lb::Error> {
        let datapath = self.shared.datapath();
        let counters: BTreeMap<Vip, VipCounters> = datapath
            .counters()?
            .into_iter()
            .map(|c| (c.vip, c))
            .collect();
        let names = self.shared.names.lock().unwrap_or_else(|e| e.into_inner());
        let placement = self
            .shared
            .placement
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Ok(datapath
            .vips()
            .map(|(vip, backends)| {
                let counts = counters.get(vip);
                let backend_count = |addr: &SocketAddr| {
                    counts
                        .and_then(|c| c.backends.iter().find(|(a, _)| a == addr))
                        .map_or(0, |(_, n)| *n)
                };
                VipStatus {
                    vip: vip.addr,
                    protocol: vip.protocol,
                    name: names.get(vip).map(|(_, dns)| dns.clone()),
                    connections: counts.map_or(0, |c| c.connections),
                    backends: backends
                        .iter()
                        .map(|b| {
                            let at = placement.localities.get(&b.addr);
                            let state = if b.weight > 0 {
                                "up"
                            } else if placement.spares.contains(&(*vip, b.addr)) {
                                "spare"
                            } else {
                                "draining"
                            };
                            BackendStatus {
                                addr: b.addr,
                                weight: b.weight,
                                state: state.into(),
                                connections: backend_count(&b.addr),
                                region: at.and_then(|l| l.region.clone()),
                                zone: at.and_then(|l| l.zone.clone()),
                            }
                        })
                        .collect(),
                }
            })
            .collect())
    }
}

/// Syncs the datapath whenever the task facts or the nodes change.
async fn follow(
    mut facts: FactsWatch,
    (shared, cgroup): (Arc<Shared>, PathBuf),
    named: watch::Sender<NamedVips>,
    overlay: Option<Arc<OverlayService>>,
    metrics: Arc<SyncMetrics>,
    stop: Stopping,
) {
    let mut reported: HashSet<String> = HashSet::new();
    // An earlier run's programs still translate its VIPs until this run's have them all: a
    // complete sync of facts that have heard from the cluster (a node that just started may
    // know only itself for a gossip round), or of whatever is known after a grace period.
    let mut earlier_retired = false;
    let started = Instant::now();
    loop {
        let now = facts.current();
        let heard =
            now.nodes.values().any(|n| !n.is_self && n.is_up) || started.elapsed() > RETIRE_AFTER;
        let want = desired_from_facts(&now);
        drop(now);
        // Each bad label is logged once while its task lasts; forgetting those of tasks that
        // are gone keeps this set from growing over a long uptime.
        let current: HashSet<String> = want
            .errors
            .iter()
            .map(|p| format!("task {}: {}", p.task, p.error))
            .collect();
        for text in current.difference(&reported) {
            metrics.label_errors.inc();
            warn!("{text}; the label is ignored");
        }
        reported = current;
        let shared_for_sync = shared.clone();
        let synced = tokio::task::spawn_blocking(move || sync(&shared_for_sync, want)).await;
        match synced {
            Ok((now_named, failures, elapsed)) => {
                if failures == 0 && heard && !earlier_retired {
                    earlier_retired = true;
                    match shared.datapath().retire_others(&cgroup) {
                        Ok(0) => {}
                        Ok(n) => info!(programs = n, "an earlier run's load balancer retired"),
                        Err(e) => warn!(error = %e, "cannot retire an earlier run's load balancer"),
                    }
                }
                metrics.syncs.inc();
                metrics.failures.inc_by(failures);
                metrics.seconds.set(elapsed.as_secs_f64());
                named.send_if_modified(|current| {
                    let changed = *current != now_named;
                    *current = now_named;
                    changed
                });
            }
            Err(e) => warn!(error = %e, "the load-balancer sync failed"),
        }
        let removed = shared.datapath().take_removed_udp();
        if !removed.is_empty() {
            let mut namespaces = vec![None];
            if let Some(overlay) = &overlay {
                namespaces.extend(overlay.attached_namespaces().await.into_iter().map(Some));
            }
            let shared = shared.clone();
            let destroyed = tokio::task::spawn_blocking(move || {
                destroy_stale_udp(&shared, &removed, &namespaces)
            })
            .await
            .unwrap_or_default();
            if destroyed > 0 {
                metrics.udp_destroyed.inc_by(destroyed as u64);
                info!(
                    sockets = destroyed,
                    "destroyed UDP sockets still connected to removed backends"
                );
            }
        }
        if !settle(&stop, async { facts.changed().await.is_ok() }, DEBOUNCE).await {
            return;
        }
    }
}

/// Programs `want`; returns the named VIPs now programmed, the failures and the time taken.
fn sync(shared: &Shared, want: Desired) -> (NamedVips, u64, Duration) {
    let started = Instant::now();
    let mut datapath = shared.datapath();
    let report = datapath.sync(&want.vips);
    for (vip, error) in &report.failed {
        warn!(%vip, error = %error, "VIP not programmed");
    }
    if report.added + report.updated + report.removed > 0 {
        info!(
            added = report.added,
            updated = report.updated,
            removed = report.removed,
            vips = want.vips.len(),
            "VIPs programmed"
        );
    }
    // Only what the datapath has goes to DNS.
    let programmed: BTreeMap<Vip, (VipName, String)> = want
        .names
        .into_iter()
        .filter(|(vip, _)| datapath.has_vip(vip))
        .collect();
    drop(datapath);
    let mut now_named = NamedVips::new();
    for (vip, (_, dns)) in &programmed {
        now_named
            .entry(dns.clone())
            .or_default()
            .push(vip.addr.ip());
    }
    for addresses in now_named.values_mut() {
        // A name with several ports has one address per family.
        addresses.sort();
        addresses.dedup();
    }
    *shared.names.lock().unwrap_or_else(|e| e.into_inner()) = programmed;
    *shared.placement.lock().unwrap_or_else(|e| e.into_inner()) = Placement {
        localities: want.localities,
        spares: want.spares,
    };
    (now_named, report.failed.len() as u64, started.elapsed())
}

/// Destroys, in this node's namespace (`None`) and each container namespace, the connected
/// UDP sockets that reached one of `removed`'s backends through its VIP. Returns how many.
fn destroy_stale_udp(
    shared: &Shared,
    removed: &BTreeSet<(Vip, SocketAddr)>,
    namespaces: &[Option<PathBuf>],
) -> usize {
    let peers: HashSet<SocketAddr> = removed.iter().map(|(_, b)| *b).collect();
    let mut destroyed = 0;
    for path in namespaces {
        let netns = match path.as_deref().map(Netns::open_path).transpose() {
            Ok(netns) => netns,
            // A container that went away in the meantime has no sockets left.
            Err(e) => {
                debug!(error = %e, "skipping a namespace");
                continue;
            }
        };
        let work = || -> Result<usize, dcnet_lb::Error> {
            let connected = sockets::connected_udp(&peers)?;
            let stale = shared.datapath().through_removed(connected, removed);
            sockets::destroy(&stale)
        };
        let result = match &netns {
            Some(ns) => ns
                .run(work)
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
            None => work().map_err(|e| e.to_string()),
        };
        match result {
            Ok(n) => destroyed += n,
            Err(e) => warn!(namespace = ?path, error = %e, "destroying stale UDP sockets failed"),
        }
    }
    destroyed
}

/// The desired VIPs of the facts: task facts, minus backends on agents gossip reports down,
/// the nearest to this node preferred.
pub(crate) fn desired_from_facts(facts: &Facts) -> Desired {
    let cluster = crate::facts::cluster::cluster(facts).unwrap_or_default();
    let down: HashSet<IpAddr> = facts
        .nodes
        .values()
        .filter(|n| !n.is_up)
        .filter_map(|n| Some(n.info.as_deref()?.address))
        .collect();
    let at = |n: &crate::facts::decode::NodeFacts| {
        n.info
            .as_deref()
            .map_or_else(Locality::default, |info| Locality {
                region: info.region.clone(),
                zone: info.zone.clone(),
            })
    };
    // dcnet's own agents are its nodes (task facts name their node id); Mesos agents have no
    // fault domain here and count as anywhere.
    let localities = Localities {
        client: facts
            .nodes
            .values()
            .find(|n| n.is_self)
            .map(at)
            .unwrap_or_default(),
        agents: facts
            .nodes
            .values()
            .map(|n| (n.id.clone(), at(n)))
            .collect(),
    };
    desired(&cluster, &down, &localities)
}

/// Per-VIP and per-backend connection counters and the datapath's outcome counters, read from
/// the per-CPU maps at scrape time.
struct CountersCollector(Arc<Shared>);

impl std::fmt::Debug for CountersCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountersCollector")
    }
}

impl Collector for CountersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let datapath = self.0.datapath();
        let (counters, stats) = match (datapath.counters(), datapath.stats()) {
            (Ok(c), Ok(s)) => (c, s),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "reading the load balancer's counters failed");
                return Ok(());
            }
        };
        let vips = datapath.vips().count();
        drop(datapath);
        let mut family = encoder.encode_descriptor(
            "dcnet_lb_vip_connections",
            "New connections to a VIP on this node",
            None,
            MetricType::Counter,
        )?;
        for c in &counters {
            let labels = [
                ("vip", c.vip.addr.to_string()),
                ("protocol", c.vip.protocol.to_string()),
            ];
            ConstCounter::new(c.connections).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "dcnet_lb_backend_connections",
            "New connections a VIP sent to a backend on this node",
            None,
            MetricType::Counter,
        )?;
        for c in &counters {
            for (backend, n) in &c.backends {
                let labels = [
                    ("vip", c.vip.addr.to_string()),
                    ("protocol", c.vip.protocol.to_string()),
                    ("backend", backend.to_string()),
                ];
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "dcnet_lb_datapath_events",
            "Outcomes of the socket hooks (translated, no_backend, bad_slot, reverse_full, reversed)",
            None,
            MetricType::Counter,
        )?;
        for (name, n) in stats {
            ConstCounter::new(n).encode(family.encode_family(&[("event", name)])?)?;
        }
        ConstGauge::new(vips as i64).encode(encoder.encode_descriptor(
            "dcnet_lb_vips",
            "VIPs programmed in the datapath",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}
