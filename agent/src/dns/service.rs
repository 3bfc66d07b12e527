//! The agent's DNS service: the server on this node, the replica that keeps its snapshot in
//! step with gossip, and (on nodes configured with masters) the publisher of task facts.
//!
//! Every node answers from its own replica, so DNS keeps working on a node cut off from the
//! masters, and when the publisher is down (its last facts stay in gossip until it is
//! forgotten). Changes are picked up as gossip delivers them, with a short debounce so a burst
//! of key updates costs one rebuild.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use dcnet_dns::dcos;
use dcnet_dns::forward::{Forwarder, ForwarderConfig};
use dcnet_dns::mesos::fetch::fetch_state;
use dcnet_dns::name::LabelSpec;
use dcnet_dns::records::{self, Cluster, RecordSet, Settings};
use dcnet_dns::server::{DnsServer, Forward, ServerConfig, ServerMetrics, SharedSnapshot};
use dcnet_dns::zone::{Snapshot, Soa, ZoneData};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::facts;
use crate::config::DnsSettings;
use crate::gossip::{ClusterView, Gossip};
use crate::lb::service::NamedVips;
use crate::node::{NODE_INFO_KEY, NodeInfo};

/// A burst of gossip updates within this window costs one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// TTL of the mesos zone's records.
const MESOS_TTL: u32 = 60;

/// Counters of the replica and the publisher.
#[derive(Debug, Default)]
struct ReplicaMetrics {
    rebuilds: Counter,
    records: Gauge,
    published: Counter,
    publish_failures: Counter,
}

/// A running DNS service.
pub struct DnsService {
    server: DnsServer,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsService {
    /// Starts serving on the configured addresses, answering from gossip.
    pub async fn start(
        settings: DnsSettings,
        gossip: Arc<Gossip>,
        this_node: IpAddr,
        named_vips: watch::Receiver<NamedVips>,
        registry: &mut Registry,
    ) -> Result<Self, crate::Error> {
        let server_metrics = Arc::new(ServerMetrics::default());
        server_metrics.register(registry);
        let replica_metrics = Arc::new(ReplicaMetrics::default());
        registry.register(
            "dcnet_dns_replica_rebuilds",
            "Snapshots rebuilt from gossip",
            replica_metrics.rebuilds.clone(),
        );
        registry.register(
            "dcnet_dns_records",
            "Records this node serves",
            replica_metrics.records.clone(),
        );
        registry.register(
            "dcnet_dns_facts_published",
            "Task-state polls published to gossip",
            replica_metrics.published.clone(),
        );
        registry.register(
            "dcnet_dns_state_refresh_failures",
            "Task-state polls that failed (the last published facts stay)",
            replica_metrics.publish_failures.clone(),
        );

        let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(build_snapshot(
            &settings.domain,
            RecordSet::default(),
            RecordSet::default(),
            RecordSet::default(),
            RecordSet::default(),
        )));
        let forward: Option<Arc<dyn Forward>> = (!settings.upstreams.is_empty()).then(|| {
            let config = ForwarderConfig {
                upstreams: settings.upstreams.clone(),
                zones: Vec::new(),
                timeout: Duration::from_secs(2),
                allowed: settings.allowed_networks.clone(),
                cache_entries: 10_000,
            };
            Arc::new(Forwarder::start(config, registry)) as Arc<dyn Forward>
        });
        let server = DnsServer::start(
            ServerConfig::new(settings.listen.clone()),
            snapshot.clone(),
            forward,
            server_metrics,
        )
        .await
        .map_err(crate::Error::Dns)?;
        info!(listen = ?server.local_addrs(), upstreams = ?settings.upstreams, "serving DNS");

        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(replica(
            settings.domain.clone(),
            gossip.clone(),
            this_node,
            named_vips,
            snapshot,
            replica_metrics.clone(),
            stopped.clone(),
        ))];
        if let Some(path) = settings.resolv_conf.clone() {
            let manager = super::resolv_conf::manage(
                path,
                server.local_addrs().to_vec(),
                settings.upstreams.clone(),
                stopped.clone(),
            );
            tasks.push(tokio::spawn(manager));
        }
        if !settings.mesos_masters.is_empty() {
            tasks.push(tokio::spawn(publisher(
                settings,
                gossip,
                replica_metrics,
                stopped,
            )));
        }
        Ok(Self {
            server,
            stop,
            tasks,
        })
    }

    /// Stops serving and publishing.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.server.shutdown().await;
    }
}

/// Rebuilds the snapshot whenever the gossip view or the load balancer's named VIPs change.
async fn replica(
    domain: String,
    gossip: Arc<Gossip>,
    this_node: IpAddr,
    mut named_vips: watch::Receiver<NamedVips>,
    snapshot: SharedSnapshot,
    metrics: Arc<ReplicaMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut views = gossip.watch();
    loop {
        let view = views.borrow_and_update().clone();
        let vips = named_vips.borrow_and_update().clone();
        let domain = domain.clone();
        let built =
            tokio::task::spawn_blocking(move || build_from_view(&domain, &view, this_node, &vips))
                .await;
        match built {
            Ok((new, records)) => {
                metrics.rebuilds.inc();
                metrics.records.set(records as i64);
                snapshot.store(Arc::new(new));
            }
            Err(e) => warn!(error = %e, "DNS rebuild failed; still serving the previous records"),
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            // Without a load balancer the sender is gone: that is no reason to stop.
            Ok(()) = named_vips.changed() => {}
            _ = stop.changed() => return,
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// The snapshot a gossip view and the named VIPs imply, and its number of records.
fn build_from_view(
    domain: &str,
    view: &ClusterView,
    this_node: IpAddr,
    named_vips: &NamedVips,
) -> (Snapshot, usize) {
    let mut cluster = facts::from_view(view).unwrap_or_default();
    // A task whose health checks fail (or have not passed yet) is not in DNS; the load
    // balancer, which reads the same facts, gives it weight 0 instead.
    for framework in &mut cluster.frameworks {
        framework.tasks.retain(|t| t.healthy != Some(false));
    }
    // Masters: the nodes that say they have the role, as gossip knows them.
    let masters: Vec<IpAddr> = view
        .nodes
        .values()
        .filter_map(|n| serde_json::from_str::<NodeInfo>(n.get(NODE_INFO_KEY)?).ok())
        .filter(|info| info.roles.iter().any(|r| r == "master"))
        .map(|info| info.address)
        .collect();
    let settings = Settings {
        domain: domain.to_owned(),
        spec: LabelSpec::Rfc1123,
        masters: Vec::new(),
        mname: format!("ns1.{domain}"),
        listen_ips: vec![this_node],
    };
    let mesos = records::generate(&cluster, &settings);
    let (thisdcos, spartan) = dcos::generate(&cluster, LabelSpec::Rfc1123, &masters, &[this_node]);
    let mut l4lb = RecordSet::default();
    for (name, ip) in named_vips {
        l4lb.add_ip(&format!("{name}."), IpAddr::V4(*ip));
    }
    let count = mesos.len() + thisdcos.len() + spartan.len() + l4lb.len();
    (
        build_snapshot(domain, mesos, thisdcos, l4lb, spartan),
        count,
    )
}

fn build_snapshot(
    domain: &str,
    mesos: RecordSet,
    thisdcos: RecordSet,
    l4lb: RecordSet,
    spartan: RecordSet,
) -> Snapshot {
    let soa = |apex: &str| Soa {
        mname: format!("ns1.{apex}"),
        rname: format!("root.ns1.{apex}"),
        serial: (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())) as u32,
        refresh: 60,
        retry: 600,
        expire: 86400,
        minimum: 60,
    };
    let zone = |origin: &str, ttl: u32, records: RecordSet| ZoneData {
        origin: origin.to_owned(),
        soa: soa(origin),
        ns: vec![],
        ttl,
        srv_weight: 1,
        records,
    };
    Snapshot::build(vec![
        zone(domain, MESOS_TTL, mesos),
        zone(dcos::THISDCOS, dcos::DCOS_TTL, thisdcos),
        // Named VIPs the local datapath has (see crate::lb::service on the ordering).
        zone(dcos::L4LB, dcos::DCOS_TTL, l4lb),
        zone(dcos::SPARTAN, dcos::DCOS_TTL, spartan),
    ])
}

/// Polls the masters and publishes what changed as task facts.
async fn publisher(
    settings: DnsSettings,
    gossip: Arc<Gossip>,
    metrics: Arc<ReplicaMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut published: BTreeMap<String, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(settings.mesos_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let (masters, timeout, sources) = (
            settings.mesos_masters.clone(),
            settings.mesos_state_timeout,
            settings.ip_sources.clone(),
        );
        let fetched = tokio::task::spawn_blocking(move || {
            fetch_state(&masters, timeout).map(|(state, leader)| {
                let resolve = |host: &str| dcnet_dns::mesos::literal_only(host);
                (
                    dcnet_dns::mesos::cluster(&state, &sources, &resolve),
                    leader,
                )
            })
        })
        .await;
        let cluster: Cluster = match fetched {
            Ok(Ok((cluster, leader))) => {
                debug!(leader = %leader, "task state read");
                cluster
            }
            Ok(Err(e)) => {
                metrics.publish_failures.inc();
                warn!(error = %e, "task state refresh failed; the last published facts stay");
                continue;
            }
            Err(e) => {
                metrics.publish_failures.inc();
                warn!(error = %e, "task state refresh panicked");
                continue;
            }
        };
        let wanted = facts::to_keys(&cluster);
        for (key, value) in &wanted {
            if published.get(key) != Some(value) {
                gossip.publish(key, value).await;
            }
        }
        for key in published.keys().filter(|k| !wanted.contains_key(*k)) {
            gossip.delete(key).await;
        }
        let (key, value) = facts::generation(crate::unix_ms());
        gossip.publish(&key, &value).await;
        metrics.published.inc();
        published = wanted;
    }
}
