//! `dcnet dns --mesos-dns-config FILE`: a drop-in replacement for Mesos-DNS.
//!
//! Every `refreshSeconds` the leading master's state is fetched, the records of the tasks that
//! changed made again, and the changed names applied to a new snapshot, which is swapped in. A refresh that fails (masters down, bad JSON) keeps the last good records
//! served and says so in the log and in `dcnet_dns_state_refresh_failures_total`. DNS is served
//! on `listener:port` (UDP and TCP) and the Mesos-DNS HTTP API on `HTTPListener:HttpPort`.
//! With `externalOn`, other names are forwarded to `resolvers` (`zoneResolvers` per zone), for
//! clients in private networks (loopback, RFC 1918, CGNAT, IPv6 ULA and link-local).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::config::{MesosDnsConfig, parse_resolver};
use super::detect::follow;
use super::fetch::{Fetched, MasterAccess, MasterClient, fetch_state};
use super::http::{ApiModel, ApiState};
use crate::contributions::Contributions;
use crate::error::Error;
use crate::forward::{Forwarder, ForwarderConfig};
use crate::name::LabelSpec;
use crate::records::Settings;
use crate::server::{DnsServer, Forward, ServerConfig, ServerMetrics, SharedSnapshot};
use crate::zone::{Snapshot, Soa, ZoneInfo};

/// Counters of the state refreshes.
#[derive(Debug, Default)]
struct RefreshMetrics {
    ok: Counter,
    failed: Counter,
    records: Gauge,
    last_success: Gauge,
}

impl RefreshMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "dcnet_dns_state_refreshes",
            "Successful reads of the master state",
            self.ok.clone(),
        );
        registry.register(
            "dcnet_dns_state_refresh_failures",
            "Failed reads of the master state (the last good records stay served)",
            self.failed.clone(),
        );
        registry.register(
            "dcnet_dns_records",
            "Names with records served",
            self.records.clone(),
        );
        registry.register(
            "dcnet_dns_state_last_success_seconds",
            "Unix time of the last successful state read",
            self.last_success.clone(),
        );
    }
}

/// Runs Mesos-DNS's job until `shutdown` completes.
pub async fn run(config: MesosDnsConfig, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let config = Arc::new(config);
    // Made first: a CA, certificate or login file that cannot be used stops the start, as in
    // Mesos-DNS, rather than failing every refresh.
    let client = Arc::new(MasterClient::new(
        &MasterAccess::of(&config),
        Duration::from_secs(config.state_timeout_seconds),
    )?);
    let masters = masters(&config).await?;
    let mut registry = Registry::default();
    let server_metrics = Arc::new(ServerMetrics::default());
    server_metrics.register(&mut registry);
    let refresh = Arc::new(RefreshMetrics::default());
    refresh.register(&mut registry);

    let empty = Arc::new(Snapshot::default().apply(vec![zone(&config, 0)], []));
    let snapshot: SharedSnapshot = Arc::new(ArcSwap::new(empty));
    let model = Arc::new(ArcSwap::from_pointee(ApiModel::default()));

    // Other names go upstream when `externalOn` (Mesos-DNS's default), else are refused.
    let forward: Option<Arc<dyn Forward>> = config.external_on.then(|| {
        let zones = config
            .zone_resolvers
            .iter()
            .map(|(zone, servers)| {
                (
                    zone.clone(),
                    servers.iter().filter_map(|s| parse_resolver(s)).collect(),
                )
            })
            .collect();
        let forwarder = Forwarder::start(
            ForwarderConfig {
                upstreams: config.resolver_addrs(),
                zones,
                timeout: Duration::from_secs(config.timeout),
                allowed: ForwarderConfig::private_networks(),
                cache_entries: 10_000,
            },
            &mut registry,
        );
        Arc::new(forwarder) as Arc<dyn Forward>
    });
    let dns = if config.dns_on {
        let listen = SocketAddr::new(config.listener, config.port);
        let server = DnsServer::start(
            ServerConfig::new(vec![listen]),
            snapshot.clone(),
            forward,
            server_metrics,
        )
        .await?;
        info!(listen = %listen, "serving DNS for {}", config.domain);
        Some(server)
    } else {
        None
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let http = if config.http_on {
        let listen = SocketAddr::new(config.http_listener, config.http_port);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Bind {
                addr: listen,
                proto: "tcp",
                source,
            })?;
        let state = ApiState {
            config: config.clone(),
            source: model.clone(),
            registry: Some(Arc::new(registry)),
        };
        let mut stop = stop_rx.clone();
        info!(listen = %listen, "serving the Mesos-DNS HTTP API");
        Some(tokio::spawn(async move {
            let serve = axum::serve(listener, super::http::router(state)).with_graceful_shutdown(
                async move {
                    let _ = stop.changed().await;
                },
            );
            if let Err(e) = serve.await {
                warn!(error = %e, "the HTTP API failed");
            }
        }))
    } else {
        None
    };

    let refresher = tokio::spawn(refresh_loop(
        config.clone(),
        client,
        masters,
        snapshot,
        model,
        refresh,
        stop_rx,
    ));
    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = refresher.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    if let Some(dns) = dns {
        dns.shutdown().await;
    }
    Ok(())
}

/// The masters to read, leader first: `masters` as configured, or with `zk` what ZooKeeper
/// names (the configured ones until it names any). With `zk`, waits for a leader as Mesos-DNS
/// does, at most `zkDetectionTimeout` (0: forever); a leader lost later leaves the last
/// masters to be tried (Mesos-DNS would exit; the records it served stay served here).
async fn masters(config: &MesosDnsConfig) -> Result<watch::Receiver<Vec<SocketAddr>>, Error> {
    let configured = config.master_addrs();
    let Some(url) = config.zk_url() else {
        let (tx, rx) = watch::channel(configured);
        // Nothing ever changes: the sender may go.
        drop(tx);
        return Ok(rx);
    };
    info!(zk = %url, "detecting the leading master through ZooKeeper");
    let (mut masters, mut detected) = follow(url.clone(), configured);
    let wait = detected.wait_for(|d| d.leader.is_some());
    let waited = Duration::from_secs(config.zk_detection_timeout);
    if waited.is_zero() {
        let _ = wait.await;
    } else if tokio::time::timeout(waited, wait).await.is_err() {
        return Err(Error::NoLeader {
            zk: url.to_string(),
            waited,
        });
    }
    // The list follows the detection a moment later: the first refresh reads the leader.
    let _ = tokio::time::timeout(Duration::from_secs(1), masters.wait_for(|m| !m.is_empty())).await;
    Ok(masters)
}

async fn refresh_loop(
    config: Arc<MesosDnsConfig>,
    client: Arc<MasterClient>,
    mut masters: watch::Receiver<Vec<SocketAddr>>,
    snapshot: SharedSnapshot,
    model: Arc<ArcSwap<ApiModel>>,
    metrics: Arc<RefreshMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(config.refresh_seconds));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The records by task, the snapshot they make, and the state they were made from: a
    // refresh costs what changed, and the same state again costs reading it.
    let mut records = (Contributions::default(), snapshot.load_full(), None);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A new leader is read at once, as Mesos-DNS reloads on a detection.
            Ok(()) = masters.changed() => info!(masters = ?*masters.borrow(), "masters changed"),
            _ = stop.changed() => return,
        }
        let config = config.clone();
        let client = client.clone();
        let masters = masters.borrow_and_update().clone();
        let (mut contributions, current, last) = records;
        let refreshed = tokio::task::spawn_blocking(move || {
            let fetched = fetch_state(&client, &masters, last);
            let (state, seen) = match fetched {
                Ok(Fetched::State { state, seen }) => (state, seen),
                Ok(Fetched::Unchanged(seen)) => {
                    return ((contributions, current, Some(seen)), Ok(None));
                }
                Err(e) => return ((contributions, current, last), Err(e)),
            };
            let cluster = super::cluster(&state, &config.ip_sources, &resolve_host);
            let serial = unix_now() as u32;
            let settings = settings(&config, &masters);
            let zones = vec![zone(&config, serial)];
            let next = Arc::new(contributions.update(&current, zones, &cluster, &settings));
            let api = ApiModel {
                snapshot: next.clone(),
                source: Some(Arc::new((cluster, settings))),
            };
            (
                (contributions, next, Some(seen)),
                Ok(Some((api, seen.leader))),
            )
        })
        .await;
        match refreshed {
            Ok((kept, Ok(Some((api, leader))))) => {
                records = kept;
                metrics.ok.inc();
                metrics.records.set(api.snapshot.len() as i64);
                metrics.last_success.set(unix_now() as i64);
                info!(leader = %leader, names = api.snapshot.len(), "records refreshed");
                snapshot.store(api.snapshot.clone());
                model.store(Arc::new(api));
            }
            Ok((kept, Ok(None))) => {
                records = kept;
                metrics.ok.inc();
                metrics.last_success.set(unix_now() as i64);
                debug!("the master state is unchanged; records stay as they are");
            }
            Ok((kept, Err(e))) => {
                records = kept;
                metrics.failed.inc();
                warn!(error = %e, "state refresh failed; still serving the last good records");
            }
            Err(e) => {
                // The records went with the failed refresh: the next one starts from nothing.
                records = (
                    Contributions::default(),
                    Arc::new(Snapshot::default()),
                    None,
                );
                metrics.failed.inc();
                warn!(error = %e, "state refresh panicked; still serving the last good records");
            }
        }
    }
}

/// `masters`: those read this refresh, numbered `masterN` in that order (with `zk`, the leader
/// first, as Mesos-DNS numbers them).
fn settings(config: &MesosDnsConfig, masters: &[SocketAddr]) -> Settings {
    Settings {
        domain: config.domain.clone(),
        spec: if config.enforce_rfc952 {
            LabelSpec::Rfc952
        } else {
            LabelSpec::Rfc1123
        },
        masters: masters.iter().map(|a| (a.ip(), a.port())).collect(),
        mname: config.soa_mname.clone(),
        listen_ips: listen_ips(config.listener),
    }
}

/// The served zone's settings, with `serial`.
fn zone(config: &MesosDnsConfig, serial: u32) -> ZoneInfo {
    let soa = Soa {
        mname: config.soa_mname.clone(),
        rname: config.soa_rname.clone(),
        serial,
        refresh: config.soa_refresh,
        retry: config.soa_retry,
        expire: config.soa_expire,
        minimum: config.soa_minttl,
    };
    ZoneInfo {
        recursion_available: config.recurse_on,
        truncate_bit: config.set_truncate_bit,
        ..ZoneInfo::new(
            &config.domain,
            soa,
            vec![],
            config.ttl,
            config.srv_record_default_weight,
        )
    }
}

/// The addresses the server's own name resolves to: the listener, or with 0.0.0.0 every
/// non-loopback IPv4 address of the host (as Mesos-DNS does).
fn listen_ips(listener: IpAddr) -> Vec<IpAddr> {
    if !listener.is_unspecified() {
        return vec![listener];
    }
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = addrs
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())))
        .filter(|ip| !ip.is_loopback())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// A framework's or agent's host: an IP literal, or a name resolved by the system resolver.
fn resolve_host(host: &str) -> Vec<IpAddr> {
    if let Ok(ip) = host.parse() {
        return vec![ip];
    }
    (host, 0)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
