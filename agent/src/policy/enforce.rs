//! Enforcement on this node: the policy programs on the tasks' cgroup ([`dcnet_lb::policy`]),
//! kept in step with what this node compiles from gossip, their counters in `/metrics`, and
//! the packets denied per policy published in gossip (`policy/denied`) for `dcnet policy list`.
//!
//! A task is admitted before it runs: the launcher hands over its addresses once the overlay
//! gave them ([`Enforcement::admit`]), and they are programmed at once with its app's
//! identity, so its first packet is decided as any other (gossip would bring them a moment
//! later, when the task could already send). Policies for a task are enforced on its own node
//! only, so that is all it needs.
//!
//! The programs and every map outlive the agent (pinned under the state directory's BPF
//! directory, attached so the cgroup holds them): tasks stay as isolated as they were while no
//! agent runs, and the next run goes on from the same rules and flow cache. While no scheduler
//! leads, nothing is known of the policies and the rules in force are kept as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dcnet_lb::policy::{Enforcer, Rules};
use dcnet_policy::{Direction, Identity};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::facts::{Facts, FactsWatch};
use crate::gossip::Gossip;
use crate::lifecycle::{Services, Stage, settle};

/// A burst of gossip changes (a deployment) costs one compilation.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How often this host's addresses are read again (an interface may come or go).
const RESCAN: Duration = Duration::from_secs(2);
/// How often the denied counts are published, at most.
const PUBLISH: Duration = Duration::from_secs(5);
/// How long after a start the last run's rules are kept on top of what gossip shows: until
/// then the view may lack tasks (their addresses would pass as no task's) it has not heard of.
const SEED_GRACE: Duration = Duration::from_secs(30);

/// What each policy isolates: the identities it selects, and in which directions.
type Selections = BTreeMap<String, (BTreeSet<Identity>, bool, bool)>;

/// How long an admitted task is kept on top of gossip: it is there long before this.
const ADMITTED_FOR: Duration = Duration::from_secs(120);

struct Inner {
    enforcer: Enforcer,
    cgroup: PathBuf,
    selections: Selections,
    /// Whether an earlier run's programs were detached (once this run's rules are in force).
    retired: bool,
    /// The last run's rules (read back from the pinned maps), and when this run started.
    seed: (Rules, Instant),
    /// Tasks of this node admitted before gossip shows them, and when.
    admitted: Vec<(dcnet_policy::Task, Instant)>,
}

/// The policy programs on the tasks' cgroup, kept in step with the cluster.
#[derive(Clone)]
pub struct Enforcement {
    inner: Arc<Mutex<Inner>>,
    /// For [`Enforcement::admit`], which programs at once from the facts of the moment.
    facts: FactsWatch,
    /// Held through a whole [`Enforcement::follow`], from reading the admitted tasks to the
    /// maps: a slower compilation of an older view never undoes a newer one.
    following: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Enforcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("policy::Enforcement")
    }
}

/// This node's own addresses (loopback aside): its tasks always take what comes from them.
fn host_addresses() -> Vec<IpAddr> {
    crate::launcher::guard::local_addresses()
        .into_iter()
        .filter(|a| !a.is_loopback())
        .collect()
}

impl Enforcement {
    /// Loads the programs (with the maps pinned in `policy/` of the BPF filesystem at
    /// `bpf_dir`, mounted if missing; or maps of their own if pinning fails), attaches them to
    /// `cgroup` (created if missing) and follows `facts`.
    pub fn start(
        cgroup: &Path,
        bpf_dir: &Path,
        (gossip, facts): (Arc<Gossip>, FactsWatch),
        (registry, services): (&mut Registry, &mut Services),
    ) -> Result<Self, crate::Error> {
        std::fs::create_dir_all(cgroup).map_err(|source| crate::Error::State {
            action: "creating the tasks' cgroup",
            path: cgroup.to_path_buf(),
            source,
        })?;
        // Shared with the last run: its rules stay in force, so its programs can go at once.
        let pins = bpf_dir.join("policy");
        let loaded = dcnet_lb::pins::ensure(bpf_dir).and_then(|_| Enforcer::load_sharing(&pins));
        let (mut enforcer, shared) = match loaded {
            Ok((enforcer, remade)) => {
                if !remade.is_empty() {
                    warn!(maps = ?remade, pins = %pins.display(), "network policy: pinned maps of another layout were made anew");
                }
                (enforcer, remade.is_empty())
            }
            Err(e) => {
                warn!(pins = %pins.display(), error = %crate::error::error_chain(&e), "network policy: cannot pin the maps; this run's are its own");
                (Enforcer::load().map_err(crate::Error::Lb)?, false)
            }
        };
        enforcer
            .attach_to_outlive(cgroup)
            .map_err(crate::Error::Lb)?;
        let mut retired = false;
        if shared {
            let n = enforcer.retire_others(cgroup).map_err(crate::Error::Lb)?;
            retired = true;
            info!(cgroup = %cgroup.display(), retired = n, rules = enforcer.rules().isolated.len(),
                  "network policy programs attached to the tasks' cgroup");
        }
        let seed = (enforcer.rules().clone(), Instant::now());
        let this = Self {
            inner: Arc::new(Mutex::new(Inner {
                enforcer,
                cgroup: cgroup.to_path_buf(),
                selections: Selections::new(),
                retired,
                seed,
                admitted: Vec::new(),
            })),
            facts: facts.clone(),
            following: Arc::default(),
        };
        registry.register_collector(Box::new(this.clone()));
        let stop = services.stopping(Stage::Data);
        let follower = this.clone();
        services.spawn(Stage::Data, "network policy", async move {
            follower.run(gossip, facts, stop).await;
        });
        Ok(this)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(
        self,
        gossip: Arc<Gossip>,
        mut facts: FactsWatch,
        stop: crate::lifecycle::Stopping,
    ) {
        let mut published: Option<BTreeMap<String, u64>> = None;
        let mut last_publish: Option<Instant> = None;
        loop {
            // Compiling thousands of policies takes a while: off the async workers.
            let (this, view) = (self.clone(), facts.current());
            if let Err(e) = tokio::task::spawn_blocking(move || this.follow(&view)).await {
                warn!(error = %e, "following the network policies failed");
            }
            if last_publish.is_none_or(|at| at.elapsed() >= PUBLISH) {
                last_publish = Some(Instant::now());
                let denied = self.denied_by_policy();
                if published.as_ref() != Some(&denied) {
                    let value = serde_json::to_string(&denied).unwrap_or_default();
                    gossip.publish(super::DENIED_KEY, &value).await;
                    published = Some(denied);
                }
            }
            let changed = async {
                tokio::select! {
                    changed = facts.changed() => changed.is_ok(),
                    () = tokio::time::sleep(RESCAN) => true,
                }
            };
            if !settle(&stop, changed, DEBOUNCE).await {
                break;
            }
        }
    }

    /// Programs `addresses` of a task of `app` (with its `labels`) that is about to run on
    /// this node, before it runs. Returns once they are in the maps (or nothing is known of the
    /// policies: no scheduler leads).
    pub fn admit(&self, app: &str, labels: &BTreeMap<String, String>, addresses: Vec<IpAddr>) {
        let task = dcnet_policy::Task {
            app: app.to_owned(),
            labels: labels.clone(),
            addresses,
        };
        self.lock().admitted.push((task, Instant::now()));
        self.follow(&self.facts.peek());
    }

    /// Programs what `facts` compile to, if a scheduler leads and anything changed.
    pub fn follow(&self, facts: &Facts) {
        let _following = self.following.lock().unwrap_or_else(|p| p.into_inner());
        let mut tasks = super::tasks(facts);
        {
            // Admitted tasks until gossip shows them (or they are long gone).
            let mut inner = self.lock();
            let known: BTreeSet<IpAddr> = tasks.iter().flat_map(|t| t.addresses.clone()).collect();
            inner.admitted.retain(|(task, at)| {
                at.elapsed() < ADMITTED_FOR && !task.addresses.iter().any(|a| known.contains(a))
            });
            tasks.extend(inner.admitted.iter().map(|(task, _)| task.clone()));
        }
        let Some((policies, mut compiled)) = super::compile_with(facts, &tasks) else {
            return;
        };
        compiled.set_hosts(host_addresses());
        let mut rules = Rules::new(&compiled);
        let selections: Selections = policies
            .iter()
            .map(|p| {
                let selected = compiled.selects.get(&p.id).cloned().unwrap_or_default();
                (
                    p.id.clone(),
                    (selected, p.ingress.is_some(), p.egress.is_some()),
                )
            })
            .collect();
        let mut inner = self.lock();
        inner.selections = selections;
        if inner.seed.1.elapsed() < SEED_GRACE {
            rules.merge_seed(&inner.seed.0);
        }
        if *inner.enforcer.rules() != rules {
            match inner.enforcer.apply(rules) {
                Ok(change) => info!(
                    added = change.added,
                    removed = change.removed,
                    policies = policies.len(),
                    isolated = inner.enforcer.rules().isolated.len(),
                    "network policy rules updated"
                ),
                Err(e) => {
                    // Left as is; tried again at the next change or rescan.
                    warn!(error = %crate::error::error_chain(&e), "updating the network policy rules failed");
                    return;
                }
            }
        }
        if !inner.retired {
            let cgroup = inner.cgroup.clone();
            match inner.enforcer.retire_others(&cgroup) {
                Ok(n) => {
                    inner.retired = true;
                    info!(
                        retired = n,
                        "network policy programs of the last run detached"
                    );
                }
                Err(e) => {
                    warn!(error = %crate::error::error_chain(&e), "detaching the last run's network policy programs failed")
                }
            }
        }
    }

    /// Packets denied on this node per policy: what the identities it selects were refused in
    /// the directions it isolates. A packet refused to an app that several policies isolate
    /// counts for each of them (none of them allowed it).
    pub fn denied_by_policy(&self) -> BTreeMap<String, u64> {
        let inner = self.lock();
        let denied = match inner.enforcer.denied() {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %crate::error::error_chain(&e), "reading the network policy counters failed");
                return BTreeMap::new();
            }
        };
        inner
            .selections
            .iter()
            .map(|(id, (identities, ingress, egress))| {
                let sum: u64 = identities
                    .iter()
                    .flat_map(|&i| {
                        [
                            (*ingress).then(|| denied.get(&(Direction::Ingress, i))),
                            (*egress).then(|| denied.get(&(Direction::Egress, i))),
                        ]
                    })
                    .flatten()
                    .flatten()
                    .sum();
                (id.clone(), sum)
            })
            .collect()
    }
}

impl Collector for Enforcement {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let by_policy = self.denied_by_policy();
        let inner = self.lock();
        let counters = inner.enforcer.counters();
        let rules = inner.enforcer.rules();
        let entries = [
            ("identities", rules.identities.len()),
            ("isolated", rules.isolated.len()),
            ("allow", rules.allow.len()),
            ("networks", rules.nets.len()),
        ];
        drop(inner);
        match counters {
            Ok(counters) => {
                let mut family = encoder.encode_descriptor(
                    "dcnet_policy_flows",
                    "Network policy datapath: new flows allowed, packets denied, flows revoked by a change",
                    None,
                    MetricType::Counter,
                )?;
                for (stat, n) in counters {
                    ConstCounter::new(n)
                        .encode(family.encode_family(&[("event", stat.name())])?)?;
                }
            }
            Err(e) => {
                warn!(error = %e, "reading the network policy counters failed");
            }
        }
        let mut family = encoder.encode_descriptor(
            "dcnet_policy_denied",
            "Packets denied to the apps a network policy isolates, on this node",
            None,
            MetricType::Counter,
        )?;
        for (policy, n) in &by_policy {
            ConstCounter::new(*n).encode(family.encode_family(&[("policy", policy.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "dcnet_policy_entries",
            "Entries of the network policy maps",
            None,
            MetricType::Gauge,
        )?;
        for (map, n) in entries {
            ConstGauge::new(n as i64).encode(family.encode_family(&[("map", map)])?)?;
        }
        Ok(())
    }
}
