//! Forwarding of names outside the served zones (Spartan's "dual dispatch").
//!
//! - Per-zone forwarders first (the most specific zone wins), else the upstream list.
//! - The two healthiest upstreams are asked at once and the first good answer wins; an upstream
//!   that fails (timeout, error, SERVFAIL/REFUSED) has its score raised, one that answers has it
//!   lowered, so a broken upstream stops being asked first but is retried as others fail.
//! - If no upstream answers within the timeout, the client gets SERVFAIL then, not never.
//! - Answers are cached for their TTL (negative ones for the SOA minimum), counted down on
//!   every hit; the cache is bounded (LRU).
//! - Only clients in the allowed networks may recurse; others are REFUSED (never an open
//!   resolver).
//!
//! - Linked clusters' names (`web.marathon.east.mesos.`) go to that cluster's servers under
//!   its own domain, and its answers come back renamed ([`crate::linked`]).
//!
//! Queries to upstreams use a fresh random ID and source port each, and a response is accepted
//! only with that ID and the question asked; a truncated UDP answer is retried over TCP.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData};
use ipnetwork::IpNetwork;
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

use crate::answer::Transport;
use crate::linked::LinkedZone;
use crate::server::{Forward, Reply};
use crate::zone::is_in_zone;

/// Longest time an answer is cached, whatever its TTL.
const MAX_CACHE_TTL: u32 = 3600;
/// Upstreams asked at once.
const FAN_OUT: usize = 2;

/// Forwarder settings.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Default upstreams, in order of preference.
    pub upstreams: Vec<SocketAddr>,
    /// Per-zone upstreams: zone (any case, with or without the final dot) → servers.
    pub zones: Vec<(String, Vec<SocketAddr>)>,
    /// How long a client waits at most before SERVFAIL.
    pub timeout: Duration,
    /// Clients that may recurse.
    pub allowed: Vec<IpNetwork>,
    /// Cached answers kept at most.
    pub cache_entries: usize,
}

impl ForwarderConfig {
    /// Networks that are clients of a datacenter's resolver: loopback, RFC 1918, CGNAT, and
    /// IPv6 unique-local and link-local.
    pub fn private_networks() -> Vec<IpNetwork> {
        [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "::1/128",
            "fc00::/7",
            "fe80::/10",
        ]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
    }
}

/// Counters of forwarding.
#[derive(Debug, Default)]
pub struct ForwardMetrics {
    pub forwarded: Counter,
    pub cache_hits: Counter,
    pub servfail: Counter,
    pub refused: Counter,
    pub upstream_failures: Counter,
}

impl ForwardMetrics {
    /// Registers the counters under `dcnet_dns_forward_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dcnet_dns_forward_queries",
            "Queries forwarded upstream",
            self.forwarded.clone(),
        );
        registry.register(
            "dcnet_dns_forward_cache_hits",
            "Forwarded queries answered from the cache",
            self.cache_hits.clone(),
        );
        registry.register(
            "dcnet_dns_forward_servfail",
            "Forwarded queries no upstream answered in time",
            self.servfail.clone(),
        );
        registry.register(
            "dcnet_dns_forward_refused",
            "Recursive queries refused (client not allowed)",
            self.refused.clone(),
        );
        registry.register(
            "dcnet_dns_forward_upstream_failures",
            "Upstream timeouts, errors and SERVFAIL/REFUSED",
            self.upstream_failures.clone(),
        );
    }
}

struct Upstream {
    addr: SocketAddr,
    /// Recent failures, decaying on success; lower is healthier.
    score: AtomicU32,
}

struct CacheEntry {
    response: Message,
    stored: Instant,
    ttl: u32,
}

/// The forwarder; share it as `Arc<dyn Forward>`. Clones share upstream health, the cache
/// and the metrics.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

/// A linked cluster's zone and its servers' health.
struct Linked {
    zone: LinkedZone,
    servers: Vec<Arc<Upstream>>,
}

struct Inner {
    upstreams: Vec<Arc<Upstream>>,
    /// Linked clusters' names ([`crate::linked`]), replaced whole as links change.
    linked: ArcSwap<Vec<Linked>>,
    zones: Vec<(String, Vec<Arc<Upstream>>)>,
    timeout: Duration,
    allowed: Vec<IpNetwork>,
    cache: Mutex<LruCache<(String, u16, u16), CacheEntry>>,
    metrics: Arc<ForwardMetrics>,
    runtime: tokio::runtime::Handle,
}

impl Forwarder {
    /// A forwarder running its exchanges on `runtime`.
    pub fn new(
        config: ForwarderConfig,
        runtime: tokio::runtime::Handle,
        metrics: Arc<ForwardMetrics>,
    ) -> Self {
        let upstream = |addr| {
            Arc::new(Upstream {
                addr,
                score: AtomicU32::new(0),
            })
        };
        let mut zones: Vec<(String, Vec<Arc<Upstream>>)> = config
            .zones
            .into_iter()
            .map(|(zone, servers)| {
                (
                    crate::records::fqdn(&zone),
                    servers.into_iter().map(upstream).collect(),
                )
            })
            .collect();
        zones.sort_by_key(|(zone, _)| std::cmp::Reverse(zone.len()));
        let inner = Arc::new(Inner {
            upstreams: config.upstreams.into_iter().map(upstream).collect(),
            linked: ArcSwap::from_pointee(Vec::new()),
            zones,
            timeout: config.timeout,
            allowed: config.allowed,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(config.cache_entries.max(1)).expect("max(1)"),
            )),
            metrics,
            runtime,
        });
        Self { inner }
    }

    /// Serves the linked clusters `zones` from now on (replacing the last set). Cached answers
    /// are dropped when the set changes: a name may now be another cluster's.
    pub fn set_linked(&self, zones: Vec<LinkedZone>) {
        let current = self.inner.linked.load();
        if current.iter().map(|l| &l.zone).eq(zones.iter()) {
            return;
        }
        let linked = zones
            .into_iter()
            .map(|zone| Linked {
                servers: zone
                    .servers
                    .iter()
                    .map(|&addr| {
                        Arc::new(Upstream {
                            addr,
                            score: AtomicU32::new(0),
                        })
                    })
                    .collect(),
                zone,
            })
            .collect();
        self.inner.linked.store(Arc::new(linked));
        if let Ok(mut cache) = self.inner.cache.lock() {
            cache.clear();
        }
    }

    /// A forwarder on the current tokio runtime, its counters registered in `registry`.
    pub fn start(config: ForwarderConfig, registry: &mut Registry) -> Self {
        let metrics = Arc::new(ForwardMetrics::default());
        metrics.register(registry);
        Self::new(config, tokio::runtime::Handle::current(), metrics)
    }
}

impl Inner {
    fn is_allowed(&self, client: IpAddr) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        self.allowed.iter().any(|net| net.contains(client))
    }

    /// The upstreams for `name`, healthiest first.
    fn candidates(&self, name: &str) -> Vec<Arc<Upstream>> {
        let mut list = self
            .zones
            .iter()
            .find(|(zone, _)| is_in_zone(name, zone))
            .map_or(&self.upstreams, |(_, servers)| servers)
            .clone();
        // Stable: equal scores keep the configured order.
        list.sort_by_key(|u| u.score.load(Ordering::Relaxed));
        list
    }

    fn cached(&self, key: &(String, u16, u16)) -> Option<Message> {
        let mut cache = self.cache.lock().ok()?;
        let entry = cache.get(key)?;
        let age = entry.stored.elapsed().as_secs().min(u64::from(u32::MAX)) as u32;
        if age >= entry.ttl {
            cache.pop(key);
            return None;
        }
        let mut response = entry.response.clone();
        for record in response
            .answers
            .iter_mut()
            .chain(response.authorities.iter_mut())
            .chain(response.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(age);
        }
        Some(response)
    }

    fn store(&self, key: (String, u16, u16), response: &Message) {
        let ttl = cache_ttl(response);
        if ttl == 0 {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(
                key,
                CacheEntry {
                    response: response.clone(),
                    stored: Instant::now(),
                    ttl,
                },
            );
        }
    }

    async fn resolve(self: Arc<Self>, query: Message) -> Message {
        let Some(question) = query.queries.first().cloned() else {
            return error_reply(&query, ResponseCode::FormErr);
        };
        let lower = question.name().to_lowercase().to_ascii();
        let key = (
            lower.clone(),
            u16::from(question.query_type()),
            u16::from(question.query_class()),
        );
        if let Some(cached) = self.cached(&key) {
            self.metrics.cache_hits.inc();
            return for_client(cached, &query);
        }
        self.metrics.forwarded.inc();
        let deadline = tokio::time::Instant::now() + self.timeout;
        // A linked cluster's name is asked of that cluster under its own domain.
        let linked = self.linked.load();
        let link = crate::linked::zone_of(&linked, |l| &l.zone, &lower);
        let (candidates, asked) = match link {
            Some(link) => {
                let mut servers = link.servers.clone();
                servers.sort_by_key(|u| u.score.load(Ordering::Relaxed));
                let remote = link
                    .zone
                    .to_remote(&lower)
                    .and_then(|n| Name::from_ascii(&n).ok());
                let Some(remote) = remote else {
                    return error_reply(&query, ResponseCode::FormErr);
                };
                let mut asked = query.clone();
                asked.queries = vec![Query::query(remote, question.query_type())];
                (servers, asked)
            }
            None => (self.candidates(&lower), query.clone()),
        };
        let query = &query;
        // Dual dispatch in waves: the two healthiest first, the next two if both fail, ...
        for wave in candidates.chunks(FAN_OUT) {
            let mut attempts: FuturesUnordered<_> = wave
                .iter()
                .map(|upstream| {
                    let upstream = upstream.clone();
                    let asked = &asked;
                    async move {
                        let result =
                            tokio::time::timeout_at(deadline, exchange(upstream.addr, asked)).await;
                        (upstream, result)
                    }
                })
                .collect();
            while let Some((upstream, result)) = attempts.next().await {
                match result {
                    Ok(Ok(response)) if is_usable(&response) => {
                        let score = upstream.score.load(Ordering::Relaxed);
                        upstream.score.store(score / 2, Ordering::Relaxed);
                        let response = match link {
                            Some(link) => link.zone.localize(response),
                            None => response,
                        };
                        self.store(key, &response);
                        return for_client(response, query);
                    }
                    other => {
                        self.metrics.upstream_failures.inc();
                        upstream.score.fetch_add(4, Ordering::Relaxed);
                        debug!(upstream = %upstream.addr, outcome = ?other.map(|r| r.map(|m| m.metadata.response_code)), "upstream failed");
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        self.metrics.servfail.inc();
        error_reply(query, ResponseCode::ServFail)
    }

    /// Whether nothing would answer `query`: no upstreams, and not a linked cluster's name.
    fn has_nowhere_to_ask(&self, query: &Message) -> bool {
        if !self.upstreams.is_empty() || !self.zones.is_empty() {
            return false;
        }
        let linked = self.linked.load();
        let name = query
            .queries
            .first()
            .map(|q| q.name().to_lowercase().to_ascii());
        !name.is_some_and(|n| linked.iter().any(|l| is_in_zone(&n, &l.zone.suffix)))
    }
}

impl Forward for Forwarder {
    fn forward(&self, query: Message, client: SocketAddr, _transport: Transport, reply: Reply) {
        let inner = self.inner.clone();
        // Without upstreams, only linked clusters' names are forwarded; the rest is refused,
        // as a server with no forwarder at all does.
        let allowed = inner.is_allowed(client.ip());
        if !allowed || inner.has_nowhere_to_ask(&query) {
            if !allowed {
                inner.metrics.refused.inc();
            }
            if let Ok(bytes) = error_reply(&query, ResponseCode::Refused).to_vec() {
                reply(bytes);
            }
            return;
        }
        self.inner.runtime.spawn(async move {
            let response = inner.resolve(query).await;
            if let Ok(bytes) = response.to_vec() {
                reply(bytes);
            }
        });
    }
}

/// An answer worth passing on: anything but SERVFAIL and REFUSED (which another upstream may
/// answer better).
fn is_usable(response: &Message) -> bool {
    !matches!(
        response.metadata.response_code,
        ResponseCode::ServFail | ResponseCode::Refused
    )
}

/// How long to cache `response`: the smallest TTL of its records, or for a negative answer the
/// SOA's minimum (RFC 2308 §5); capped.
fn cache_ttl(response: &Message) -> u32 {
    let negative =
        response.answers.is_empty() || response.metadata.response_code == ResponseCode::NXDomain;
    let ttl = if negative {
        response
            .authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
            .unwrap_or(0)
    } else {
        response
            .answers
            .iter()
            .chain(&response.authorities)
            .map(|r| r.ttl)
            .min()
            .unwrap_or(0)
    };
    ttl.min(MAX_CACHE_TTL)
}

/// What a client gets of an upstream's (or the cache's) answer: its own id and question, RA
/// set (recursion served it), AA cleared (this server is no authority for the name), and an
/// OPT only if the client sent one (RFC 6891 §7): ours, with the client's DO bit (RFC 3225).
fn for_client(mut response: Message, query: &Message) -> Message {
    response.metadata.id = query.metadata.id;
    response.queries = query.queries.clone();
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = false;
    response.edns = query.edns.as_ref().map(|asked| {
        let mut ours = Edns::new();
        ours.set_max_payload(crate::answer::MAX_UDP_PAYLOAD);
        ours.set_dnssec_ok(asked.flags().dnssec_ok);
        ours.set_rcode_high(response.metadata.response_code.high());
        ours
    });
    response
}

fn error_reply(query: &Message, code: ResponseCode) -> Message {
    let mut response = Message::error_msg(query.metadata.id, query.metadata.op_code, code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = code != ResponseCode::Refused;
    response.queries = query.queries.clone();
    response
}

/// Asks `upstream` once: UDP, then TCP if the answer was truncated.
async fn exchange(upstream: SocketAddr, query: &Message) -> std::io::Result<Message> {
    let mut ask = Message::query();
    ask.metadata.recursion_desired = true;
    ask.queries = query.queries.clone();
    let mut edns = Edns::new();
    edns.set_max_payload(crate::answer::MAX_UDP_PAYLOAD);
    ask.set_edns(edns);
    let id = ask.metadata.id;
    let bytes = ask.to_vec().map_err(std::io::Error::other)?;

    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal");
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; 65535];
    let response = loop {
        let len = socket.recv(&mut buf).await?;
        // Anything but the answer to this question with this ID is ignored (spoofing, strays).
        if let Ok(message) = Message::from_vec(&buf[..len])
            && message.metadata.id == id
            && message.queries == ask.queries
        {
            break message;
        }
    };
    if !response.metadata.truncation {
        return Ok(response);
    }
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&bytes).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await?;
    let message = Message::from_vec(&answer).map_err(std::io::Error::other)?;
    if message.metadata.id != id {
        return Err(std::io::Error::other("TCP answer with another ID"));
    }
    Ok(message)
}
