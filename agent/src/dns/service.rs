//! The agent's DNS service: the server on this node, the replica that keeps its snapshot in
//! step with gossip, and (on nodes configured with masters) the publisher of task facts.
//!
//! Every node answers from its own replica, so DNS keeps working on a node cut off from the
//! masters, and when the publisher is down (its last facts stay in gossip until it is
//! forgotten). Changes are picked up as gossip delivers them, with a short debounce so a burst
//! of key updates costs one update, and an update costs what changed (see
//! [`dcnet_dns::contributions`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dcnet_dns::forward::{Forwarder, ForwarderConfig};
use dcnet_dns::mesos::fetch::{Fetched, MasterClient, fetch_state};
use dcnet_dns::server::{DnsServer, Forward, ServerConfig, ServerMetrics, SharedSnapshot};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::DnsSettings;
use crate::facts::{self, FactsWatch};
use crate::gossip::Gossip;
use crate::lb::service::NamedVips;
use crate::lifecycle::{Services, Stage, Stopping, settle};

use super::replica::Replica;

/// A burst of gossip updates within this window costs one update. Short: an update costs what
/// changed (9 ms of bookkeeping at 100,000 tasks besides), and every millisecond here is one
/// more before a change is answered.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// After a failed poll of the masters, the next comes this much later (or at the refresh, if
/// sooner): a node that starts before its masters, or loses them for a moment, publishes within
/// a second of their answering, not a whole refresh later. A failed poll costs a refused
/// connection or a timeout.
const RETRY: Duration = Duration::from_secs(1);

/// Counters of the replica and the publisher.
#[derive(Debug, Default)]
struct ReplicaMetrics {
    updates: Counter,
    records: Gauge,
    published: Counter,
    publish_failures: Counter,
}

impl ReplicaMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "dcnet_dns_replica_updates",
            "Snapshot updates from gossip",
            self.updates.clone(),
        );
        registry.register(
            "dcnet_dns_records",
            "Names with records this node serves",
            self.records.clone(),
        );
        registry.register(
            "dcnet_dns_facts_published",
            "Task-state polls that changed what is published in gossip",
            self.published.clone(),
        );
        registry.register(
            "dcnet_dns_state_refresh_failures",
            "Task-state polls that failed (the last published facts stay)",
            self.publish_failures.clone(),
        );
    }
}

/// A running DNS service.
pub struct DnsService {
    server: DnsServer,
    /// Mesos-DNS's HTTP API over this node's replica (for the agent's API to serve too).
    mesos_api: axum::Router,
    /// `/v1/dns/...` over the same replica.
    lookup_api: axum::Router,
}

impl DnsService {
    /// Starts serving on the configured addresses, answering from gossip.
    pub async fn start(
        settings: DnsSettings,
        gossip: Arc<Gossip>,
        facts: FactsWatch,
        this_node: IpAddr,
        named_vips: watch::Receiver<NamedVips>,
        (registry, services): (&mut Registry, &mut Services),
        (limits, serve_metrics): (crate::serve::Limits, crate::serve::ServeMetrics),
    ) -> Result<Self, crate::Error> {
        // Made first: a TLS or login file that cannot be used stops the agent with what is
        // wrong, rather than failing every poll.
        let client = if settings.mesos_masters.is_empty() && settings.mesos_zk.is_none() {
            None
        } else {
            let client = MasterClient::new(&settings.mesos_access, settings.mesos_state_timeout)
                .map_err(|e| crate::Error::Dns(e.into()))?;
            Some(client)
        };
        let server_metrics = Arc::new(ServerMetrics::default());
        server_metrics.register(registry);
        let replica_metrics = Arc::new(ReplicaMetrics::default());
        replica_metrics.register(registry);

        let empty = Replica::new(settings.domain.clone(), settings.zone.clone(), this_node)
            .current()
            .clone();
        let snapshot: SharedSnapshot = Arc::new(ArcSwap::new(empty));
        // Always there: linked clusters' names are forwarded even without upstreams (the
        // forwarder then refuses every other name, as a server without one does).
        let forwarder = Forwarder::start(
            ForwarderConfig {
                upstreams: settings.upstreams.clone(),
                zones: settings.zone_resolvers.clone(),
                timeout: Duration::from_secs(2),
                allowed: settings.allowed_networks.clone(),
                cache_entries: 10_000,
            },
            registry,
        );
        let forward: Option<Arc<dyn Forward>> = Some(Arc::new(forwarder.clone()));
        let mut server_config = ServerConfig::new(settings.listen.clone());
        server_config.tcp_max_connections = settings.tcp_max_connections;
        server_config.tcp_max_per_client = settings.tcp_max_per_client;
        let server = DnsServer::start(server_config, snapshot.clone(), forward, server_metrics)
            .await
            .map_err(crate::Error::Dns)?;
        info!(listen = ?server.local_addrs(), upstreams = ?settings.upstreams, "serving DNS");

        let stop = services.stopping(Stage::Data);
        let mesos_api =
            super::mesos_api::router(&settings, snapshot.clone(), facts.clone(), this_node);
        let lookup_api =
            super::lookup::router(&settings, snapshot.clone(), facts.clone(), this_node);
        if let Some(addr) = settings.http_listen {
            let listener = crate::serve::bind(addr).map_err(|source| {
                crate::Error::Dns(dcnet_dns::Error::Bind {
                    addr,
                    proto: "tcp",
                    source,
                })
            })?;
            info!(listen = %addr, "serving Mesos-DNS's HTTP API");
            let router = mesos_api.clone();
            let stopping = stop.clone();
            services.spawn(Stage::Data, "Mesos-DNS HTTP API", async move {
                let stopped = async move { stopping.cancelled().await };
                let served = crate::serve::serve(
                    listener,
                    router,
                    "mesos-dns",
                    limits,
                    serve_metrics,
                    stopped,
                )
                .await;
                if let Err(e) = served {
                    warn!(error = %e, "the Mesos-DNS HTTP API failed");
                }
            });
        }
        let replica = replica(
            (settings.domain.clone(), settings.zone.clone()),
            facts,
            this_node,
            named_vips,
            (snapshot, forwarder),
            replica_metrics.clone(),
            stop.clone(),
        );
        services.spawn(Stage::Data, "dns replica", replica);
        if let Some(path) = settings.resolv_conf.clone() {
            let manager = super::resolv_conf::manage(
                path,
                server.local_addrs().to_vec(),
                settings.upstreams.clone(),
                stop.clone(),
            );
            services.spawn(Stage::Data, "resolv.conf manager", manager);
        }
        if let Some(client) = client {
            let publisher = publisher(settings, Arc::new(client), gossip, replica_metrics, stop);
            services.spawn(Stage::Data, "mesos state publisher", publisher);
        }
        Ok(Self {
            server,
            mesos_api,
            lookup_api,
        })
    }

    /// Mesos-DNS's HTTP API over this node's replica.
    pub fn mesos_api(&self) -> axum::Router {
        self.mesos_api.clone()
    }

    /// The lookup routes over this node's replica ([`super::lookup`]).
    pub fn lookup_api(&self) -> axum::Router {
        self.lookup_api.clone()
    }

    /// Stops serving; the replica and publisher stop with their stage.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Updates the snapshot whenever the facts it is made of (nodes, Mesos state, launched tasks,
/// linked clusters) or the load balancer's named VIPs change, and the forwarder's linked
/// clusters with it.
async fn replica(
    (domain, zone): (String, crate::config::ZoneSettings),
    mut facts: FactsWatch,
    this_node: IpAddr,
    mut named_vips: watch::Receiver<NamedVips>,
    (snapshot, forwarder): (SharedSnapshot, Forwarder),
    metrics: Arc<ReplicaMetrics>,
    stop: Stopping,
) {
    let mut replica = Replica::new(domain.clone(), zone.clone(), this_node);
    loop {
        let now = facts.current();
        // Set before the snapshot that delegates their names is served.
        if let Some(linked) = super::replica::linked_zones(&now, &domain) {
            forwarder.set_linked(linked);
        }
        let vips = named_vips.borrow_and_update().clone();
        let serving = snapshot.clone();
        let updated = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            replica.update(&now, &vips);
            // Stored here, so that the previous snapshot is freed (unless a query still reads
            // it) by the thread that made the shards replacing its own, in its own pages.
            serving.store(replica.current().clone());
            debug!(took = ?started.elapsed(), "DNS snapshot updated");
            replica
        })
        .await;
        match updated {
            Ok(updated) => {
                replica = updated;
                metrics.updates.inc();
                metrics.records.set(replica.current().len() as i64);
            }
            Err(e) => {
                // The replica went with the failed update: the next one starts from nothing.
                warn!(error = %e, "DNS update failed; still serving the previous records");
                replica = Replica::new(domain.clone(), zone.clone(), this_node);
            }
        }
        let changed = async {
            tokio::select! {
                changed = facts.changed() => changed.is_ok(),
                // Without a load balancer the sender is gone: that is no reason to stop.
                Ok(()) = named_vips.changed() => true,
            }
        };
        if !settle(&stop, changed, DEBOUNCE).await {
            return;
        }
    }
}

/// Polls the masters and publishes what changed as task facts.
async fn publisher(
    settings: DnsSettings,
    client: Arc<MasterClient>,
    gossip: Arc<Gossip>,
    metrics: Arc<ReplicaMetrics>,
    stop: Stopping,
) {
    let mut published = facts::mesos::Published::default();
    let mut first = true;
    let mut last = None;
    let refresh = settings.mesos_refresh;
    // The first poll at once; after a failed one, the next sooner than a refresh.
    let mut next_poll = tokio::time::Instant::now();
    // The masters to poll, leader first: as configured, or as ZooKeeper names them.
    let (_fixed, mut masters) = match settings.mesos_zk.clone() {
        Some(url) => {
            info!(zk = %url, "finding the leading Mesos master through ZooKeeper");
            (
                None,
                dcnet_dns::mesos::detect::follow(url, settings.mesos_masters.clone()).0,
            )
        }
        None => {
            let (tx, rx) = watch::channel(settings.mesos_masters.clone());
            (Some(tx), rx)
        }
    };
    // Polls failed in a row: the first is a warning, the rest are counted until one succeeds.
    let mut failed: u64 = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next_poll) => {}
            // A new leader is polled at once.
            Ok(()) = masters.changed() => debug!(masters = ?*masters.borrow(), "masters changed"),
            () = stop.cancelled() => return,
        }
        let polled = tokio::time::Instant::now();
        next_poll = polled + refresh;
        let (masters, client, sources) = (
            masters.borrow_and_update().clone(),
            client.clone(),
            settings.ip_sources.clone(),
        );
        // Read, parse, compare and drop on one blocking thread: the comparison takes tens of
        // milliseconds at 100,000 tasks, and the state is millions of allocations best freed
        // by the thread that made them.
        let polling = tokio::task::spawn_blocking(move || {
            let fetched = fetch_state(&client, &masters, last).map(|fetched| match fetched {
                Fetched::State { state, seen } => {
                    let resolve = |host: &str| dcnet_dns::mesos::literal_only(host);
                    let cluster = dcnet_dns::mesos::cluster(&state, &sources, &resolve);
                    drop(state);
                    (Some(published.changes(&cluster)), seen)
                }
                Fetched::Unchanged(seen) => (None, seen),
            });
            (fetched, published)
        })
        .await;
        let fetched = match polling {
            Ok((fetched, kept)) => {
                published = kept;
                Ok(fetched)
            }
            Err(e) => {
                // What was published went with the poll: the next one publishes everything
                // again (values as they are change nothing).
                published = facts::mesos::Published::default();
                Err(e)
            }
        };
        if matches!(fetched, Ok(Ok(_))) && failed > 0 {
            info!(failed, "task state read again after failed polls");
            failed = 0;
        }
        let changed = match fetched {
            Ok(Ok((Some(changed), seen))) => {
                debug!(leader = %seen.leader, took = ?polled.elapsed(), "task state read and compared");
                last = Some(seen);
                changed
            }
            // The same bytes as last time: nothing to parse, nothing to publish.
            Ok(Ok((None, _))) => continue,
            Ok(Err(e)) => {
                metrics.publish_failures.inc();
                failed += 1;
                if failed == 1 {
                    warn!(error = %e, retry_every = ?RETRY.min(refresh),
                          "task state refresh failed; the last published facts stay (retrying; further failures are logged at debug level)");
                } else {
                    debug!(error = %e, failed, "task state refresh failed again");
                }
                next_poll = polled + RETRY.min(refresh);
                continue;
            }
            Err(e) => {
                metrics.publish_failures.inc();
                warn!(error = %e, "task state refresh panicked");
                continue;
            }
        };
        let mut changes: Vec<(&str, Option<&str>)> = changed
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_deref()))
            .collect();
        // The generation moves with the content only: a poll that found nothing new changes
        // no gossip key, so no node does any work for it. Readers still take the publisher
        // that saw the latest change (one whose master went away stops seeing changes). It is
        // set last, so its version is above every change it stands for.
        let generation = facts::mesos::generation(crate::unix_ms());
        if first || !changes.is_empty() {
            let count = changes.len();
            changes.push((&generation.0, Some(&generation.1)));
            gossip.publish_all(changes).await;
            metrics.published.inc();
            debug!(changes = count, since_poll = ?polled.elapsed(), "task facts published");
        }
        first = false;
    }
}
