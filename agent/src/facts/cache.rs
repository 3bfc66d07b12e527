//! The node's facts cache: one task decodes every gossip view into [`Facts`] and publishes
//! them when a topic changed; services wait on a [`FactsWatch`] for the topics they read.
//!
//! Decoding runs on the blocking pool: the first view of a large cluster (100,000 task keys)
//! takes a while to decode, and the runtime's workers keep serving meanwhile.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::decode::{Decoder, Facts, Topics};
use crate::gossip::ClusterView;
use crate::lifecycle::{Services, Stage, Stopping};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: &'static str,
}

/// The cache's counters.
#[derive(Debug, Clone, Default)]
struct Metrics {
    wakeups: Family<ServiceLabel, Counter>,
    changes: Family<TopicLabel, Counter>,
    decoded: Counter,
    malformed: Gauge,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "dcnet_service_wakeups",
            "Times a service woke because facts it reads changed",
            self.wakeups.clone(),
        );
        registry.register(
            "dcnet_facts_changes",
            "Changes of the decoded gossip facts, by topic",
            self.changes.clone(),
        );
        registry.register(
            "dcnet_facts_decoded",
            "Gossip values decoded (each once per change)",
            self.decoded.clone(),
        );
        registry.register(
            "dcnet_facts_malformed",
            "Gossip values that do not decode and are ignored",
            self.malformed.clone(),
        );
    }
}

/// The facts of this node's gossip view, kept decoded.
#[derive(Debug)]
pub struct Cache {
    facts: watch::Receiver<Arc<Facts>>,
    metrics: Metrics,
}

impl Cache {
    /// Follows `views` until their sender goes (gossip stopped) or the facts stage stops.
    pub fn start(
        views: watch::Receiver<Arc<ClusterView>>,
        (registry, services): (&mut Registry, &mut Services),
    ) -> Self {
        let metrics = Metrics::default();
        metrics.register(registry);
        let (tx, facts) = watch::channel(Arc::new(Facts::default()));
        let stop = services.stopping(Stage::Facts);
        services.spawn(
            Stage::Facts,
            "facts cache",
            follow(views, tx, metrics.clone(), stop),
        );
        Self { facts, metrics }
    }

    /// The facts now.
    pub fn current(&self) -> Arc<Facts> {
        self.facts.borrow().clone()
    }

    /// A watch for `service` that wakes when one of `topics` changes. It starts out seeing
    /// the current facts as new, so a service's first wait returns at once.
    pub fn watch(&self, service: &'static str, topics: Topics) -> FactsWatch {
        FactsWatch {
            facts: self.facts.clone(),
            topics,
            seen: None,
            wakeups: self
                .metrics
                .wakeups
                .get_or_create(&ServiceLabel { service })
                .clone(),
        }
    }
}

/// Decodes each new view and publishes the facts when a topic changed.
async fn follow(
    mut views: watch::Receiver<Arc<ClusterView>>,
    tx: watch::Sender<Arc<Facts>>,
    metrics: Metrics,
    stop: Stopping,
) {
    let mut decoder = Decoder::default();
    // What of the decoder's count is in the metric already (a new decoder starts from 0).
    let mut counted = 0;
    loop {
        let view = views.borrow_and_update().clone();
        let decoded = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let changed = decoder.apply(&view);
            if !changed.is_empty() {
                debug!(took = ?started.elapsed(), ?changed, "gossip facts decoded");
            }
            (decoder, changed)
        })
        .await;
        let changed = match decoded {
            Ok((d, changed)) => {
                decoder = d;
                changed
            }
            Err(e) => {
                // The decoder went with the failed step: start again from nothing.
                warn!(error = %e, "decoding the gossip facts failed; decoding them all again");
                decoder = Decoder::default();
                counted = 0;
                continue;
            }
        };
        if !changed.is_empty() {
            for (bit, name) in Topics::NAMES.iter().enumerate() {
                if changed.contains(Topics::bit(bit)) {
                    metrics
                        .changes
                        .get_or_create(&TopicLabel { topic: name })
                        .inc();
                }
            }
            let facts = decoder.facts();
            metrics.decoded.inc_by(decoder.decoded() - counted);
            counted = decoder.decoded();
            metrics
                .malformed
                .set(facts.nodes.values().map(|n| n.malformed.len() as i64).sum());
            tx.send_replace(Arc::new(facts.clone()));
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

/// A service's view of the facts: wakes only for the topics it reads. A clone counts its
/// wake-ups under the same service.
#[derive(Debug, Clone)]
pub struct FactsWatch {
    facts: watch::Receiver<Arc<Facts>>,
    topics: Topics,
    /// The versions of the facts last returned by [`FactsWatch::current`].
    seen: Option<[u64; Topics::COUNT]>,
    wakeups: Counter,
}

/// The cache stopped: no more facts will come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl FactsWatch {
    /// The facts now; later waits compare with them.
    pub fn current(&mut self) -> Arc<Facts> {
        let facts = self.facts.borrow_and_update().clone();
        self.seen = Some(facts.versions());
        facts
    }

    /// The facts now, without marking them seen.
    pub fn peek(&self) -> Arc<Facts> {
        self.facts.borrow().clone()
    }

    /// Waits until one of the watched topics differs from the facts last returned by
    /// [`FactsWatch::current`] (at once before the first call). Cancel-safe.
    pub async fn changed(&mut self) -> Result<(), Closed> {
        loop {
            let differs = match &self.seen {
                None => true,
                Some(seen) => self.facts.borrow().changed_since(seen, self.topics),
            };
            if differs {
                self.wakeups.inc();
                return Ok(());
            }
            self.facts.changed().await.map_err(|_| Closed)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::gossip::view::tests_support::view_with;

    #[tokio::test]
    async fn a_watch_wakes_for_its_topics_only() {
        let node = |k: &str, v: &str| {
            BTreeMap::from([
                (
                    "node".to_owned(),
                    r#"{"name":"a","address":"10.0.0.1","roles":[],"version":"0"}"#.to_owned(),
                ),
                (k.to_owned(), v.to_owned()),
            ])
        };
        let (tx, rx) = watch::channel(Arc::new(view_with(&[("a", node("kv/x", "1"))])));
        let mut registry = Registry::default();
        let mut services = Services::default();
        let cache = Cache::start(rx, (&mut registry, &mut services));
        let mut overlay = cache.watch("overlay", Topics::OVERLAY);
        let mut kv = cache.watch("kv", Topics::KV);
        // The first wait returns at once; then wait for the first view's facts.
        overlay.changed().await.unwrap();
        overlay.current();
        let facts = loop {
            kv.changed().await.unwrap();
            let facts = kv.current();
            if facts.nodes.contains_key("a") {
                break facts;
            }
        };
        let settle = Duration::from_millis(200);

        // Only the kv topic changes.
        tx.send_replace(Arc::new(view_with(&[("a", node("kv/x", "2"))])));
        tokio::time::timeout(Duration::from_secs(5), kv.changed())
            .await
            .expect("kv wakes")
            .unwrap();
        assert_eq!(&*kv.current().nodes["a"].kv["x"], "2");
        assert!(
            tokio::time::timeout(settle, overlay.changed())
                .await
                .is_err(),
            "the overlay does not wake for a kv change"
        );
        assert_eq!(
            facts.nodes["a"].kv["x"].as_ref(),
            "1",
            "old facts are untouched"
        );
        drop(cache);
        assert!(services.shutdown(Duration::from_secs(5)).await.is_empty());
        assert_eq!(kv.changed().await, Err(Closed));
    }
}
