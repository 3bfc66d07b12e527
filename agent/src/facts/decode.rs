//! The gossip view decoded into typed [`Facts`], once per key change.
//!
//! A [`Decoder`] keeps, per node, the key set its facts were decoded from. A new view whose
//! node carries the same key set (gossip hands the same `Arc` on when no key changed: a
//! heartbeat, `last_heard`) costs a pointer comparison; a changed key set is diffed against
//! the old one and only the keys that differ are decoded again. Each change is filed under a
//! [`Topics`] bit, and every topic has a version in the facts, so a reader wakes only for the
//! topics it reads ([`super::cache::FactsWatch`]).
//!
//! Mesos state is special: several masters may publish it, each poll bumps the publisher's
//! `dns/generation`, and readers take the freshest publisher. Its topic changes only when what
//! readers get changes: another publisher whose content differs, or the chosen one's content.
//! Content is compared by an order-independent digest of the keys, kept up to date per change.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use dcnet_dns::records::AgentInfo;
use dcnet_overlay::ipam::LeaseRecord;

use super::launched::TaskStatus;
use super::mesos::{self, SchedulerFact, TaskFact};
use super::node::{NODE_INFO_KEY, NodeInfo};
use super::scheduler::{
    Assignment, LEADER_KEY, LINK_PREFIX, LeaderFact, LinkFact, POLICY_PREFIX, TASK_PREFIX,
};
use super::{CREDENTIAL_SET_KEY, KEYRING_KEY, KV_PREFIX, launched, overlay};
use crate::gossip::ClusterView;
use crate::gossip::keyring::KeyringFact;
use crate::gossip::view::Keys;

// ---------------------------------------------------------------------------------------------
// Topics

/// Kinds of facts a reader can follow, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Topics(u16);

impl Topics {
    /// Membership and liveness, and each node's [`NodeInfo`].
    pub const NODES: Topics = Topics(1 << 0);
    /// The Mesos state readers get from the freshest publisher (`dns/`).
    pub const MESOS: Topics = Topics(1 << 1);
    /// Task statuses from the launchers (`task/`).
    pub const LAUNCHED: Topics = Topics(1 << 2);
    /// Scheduler leaders and their assignments (`sched/`).
    pub const SCHEDULER: Topics = Topics(1 << 3);
    /// Overlay leases (`overlay/`).
    pub const OVERLAY: Topics = Topics(1 << 4);
    /// The operators' key-value pairs (`kv/`).
    pub const KV: Topics = Topics(1 << 5);
    /// The nodes' gossip keyrings.
    pub const KEYRING: Topics = Topics(1 << 6);
    /// Credential sets the masters sign.
    pub const CREDENTIALS: Topics = Topics(1 << 7);
    /// Linked clusters the leading scheduler publishes (`sched/link/`): DNS follows them
    /// without waking for every assignment.
    pub const LINKS: Topics = Topics(1 << 8);
    /// Network policies the leading scheduler publishes (`sched/policy/`).
    pub const POLICIES: Topics = Topics(1 << 9);
    /// Each node's count of packets its policies denied (`policy/denied`): read by the
    /// scheduler's policy list, apart from the policies so enforcers do not wake for it.
    pub const POLICY_COUNTERS: Topics = Topics(1 << 10);
    /// How many topics there are.
    pub const COUNT: usize = 11;
    /// The names of the topics, by bit, for logs and metrics.
    pub const NAMES: [&'static str; Self::COUNT] = [
        "nodes",
        "mesos",
        "launched",
        "scheduler",
        "overlay",
        "kv",
        "keyring",
        "credentials",
        "links",
        "policies",
        "policy_counters",
    ];

    /// No topic.
    pub const fn empty() -> Self {
        Topics(0)
    }

    /// Whether no topic is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every topic of `other` is in the set.
    pub fn contains(self, other: Topics) -> bool {
        self.0 & other.0 == other.0
    }

    /// The topic of bit `i` (of [`Topics::NAMES`]).
    pub(crate) const fn bit(i: usize) -> Self {
        Topics(1 << i)
    }

    /// The bit numbers in the set.
    fn bits(self) -> impl Iterator<Item = usize> {
        (0..Self::COUNT).filter(move |i| self.0 & (1 << i) != 0)
    }
}

impl std::ops::BitOr for Topics {
    type Output = Topics;
    fn bitor(self, rhs: Topics) -> Topics {
        Topics(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Topics {
    fn bitor_assign(&mut self, rhs: Topics) {
        self.0 |= rhs.0;
    }
}

// ---------------------------------------------------------------------------------------------
// Facts

/// Every node's facts, decoded, with a version per topic.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// By node id.
    pub nodes: BTreeMap<String, NodeFacts>,
    versions: [u64; Topics::COUNT],
}

impl Facts {
    /// Nodes the failure detector considers alive.
    pub fn up_nodes(&self) -> impl Iterator<Item = &NodeFacts> {
        self.nodes.values().filter(|n| n.is_up)
    }

    /// The versions of every topic; one changes whenever its facts do.
    pub fn versions(&self) -> [u64; Topics::COUNT] {
        self.versions
    }

    /// Whether one of `topics` has another version here than in `seen`.
    pub fn changed_since(&self, seen: &[u64; Topics::COUNT], topics: Topics) -> bool {
        topics.bits().any(|i| self.versions[i] != seen[i])
    }

    /// The freshest Mesos-state publisher (nodes that are down included: DNS keeps answering
    /// when the publisher is gone), the newest generation winning, then the highest node id.
    pub fn mesos_publisher(&self) -> Option<&NodeFacts> {
        self.nodes
            .values()
            .filter_map(|n| Some((n.mesos.generation?, n)))
            .max_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)))
            .map(|(_, n)| n)
    }
}

/// What one node publishes, decoded. Values that do not decode (from a newer or broken agent)
/// are left out and their keys listed in `malformed`.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub id: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    pub is_up: bool,
    pub is_self: bool,
    /// When this node last saw the node's heartbeat advance, as of the last change of these
    /// facts (a heartbeat alone changes no fact); exact for a node that is down.
    pub last_heard: SystemTime,
    pub info: Option<Arc<NodeInfo>>,
    pub keyring: Option<Arc<KeyringFact>>,
    /// The credential set (a signed JWT) a master publishes.
    pub credential_set: Option<Arc<str>>,
    /// The operators' pairs, by key without the `kv/` prefix.
    pub kv: Arc<BTreeMap<String, Arc<str>>>,
    pub mesos: Arc<MesosFacts>,
    /// Task statuses of the tasks its launcher runs, by task id.
    pub launched: Arc<BTreeMap<String, Arc<TaskStatus>>>,
    /// Its scheduler's leader fact, if it published one.
    pub leader: Option<Arc<LeaderFact>>,
    /// Its scheduler's assignments, by task id.
    pub assignments: Arc<BTreeMap<String, Arc<Assignment>>>,
    /// The linked clusters its scheduler publishes, by link name.
    pub links: Arc<BTreeMap<String, Arc<LinkFact>>>,
    /// The network policies its scheduler publishes, by id.
    pub policies: Arc<BTreeMap<String, Arc<dcnet_policy::Policy>>>,
    /// Packets denied on this node, by policy id (as its enforcer last published).
    pub policy_denied: Option<Arc<BTreeMap<String, u64>>>,
    pub vtep: Option<LeaseRecord>,
    /// Its subnet leases, by overlay network name.
    pub networks: Arc<BTreeMap<String, LeaseRecord>>,
    /// Keys whose values did not decode.
    pub malformed: Arc<BTreeSet<String>>,
}

impl NodeFacts {
    fn new(id: &str, addr: SocketAddr) -> Self {
        Self {
            id: id.to_owned(),
            generation: 0,
            gossip_addr: addr,
            is_up: false,
            is_self: false,
            last_heard: SystemTime::UNIX_EPOCH,
            info: None,
            keyring: None,
            credential_set: None,
            kv: Arc::default(),
            mesos: Arc::default(),
            launched: Arc::default(),
            leader: None,
            assignments: Arc::default(),
            links: Arc::default(),
            policies: Arc::default(),
            policy_denied: None,
            vtep: None,
            networks: Arc::default(),
            malformed: Arc::default(),
        }
    }
}

/// One publisher's Mesos state (`dns/` keys).
#[derive(Debug, Clone, Default)]
pub struct MesosFacts {
    /// Publication time (ms since the epoch) of its last poll.
    pub generation: Option<u64>,
    /// The leading master it polled.
    pub leader: Option<SocketAddr>,
    /// By agent id.
    pub agents: BTreeMap<String, Arc<AgentInfo>>,
    /// By framework name.
    pub frameworks: BTreeMap<String, Arc<SchedulerFact>>,
    /// The running tasks that declare VIPs (`VIP_<n>` port labels), decoded, by gossip key:
    /// what the load balancer reads of the Mesos tasks on every change.
    pub vip_tasks: BTreeMap<Arc<str>, TaskFact>,
    /// The node's keys, where the tasks are read from ([`MesosFacts::tasks`]).
    keys: Arc<Keys>,
    /// Order-independent digest of every key but the generation: equal digests, equal content.
    digest: u64,
}

impl MesosFacts {
    /// The digest of the content (every key but the generation).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The running tasks as published, in key order: gossip key
    /// (`dns/task/<framework>/<task id>/<task name>`) and value ([`mesos::decode_task`]).
    ///
    /// Left encoded, shared with gossip: decoded, 100,000 tasks took ~45 MB on every node,
    /// while each reader needs only the tasks that changed ([`crate::dns`]) or declare VIPs
    /// ([`MesosFacts::vip_tasks`]). A value that does not decode is listed in the node's
    /// `malformed` keys, and a reader skips it.
    pub fn tasks(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.keys.with_prefix(mesos::TASK)
    }
}

// ---------------------------------------------------------------------------------------------
// Keys

/// What a gossip key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key<'a> {
    Node,
    Keyring,
    CredentialSet,
    Kv(&'a str),
    MesosGeneration,
    MesosLeader,
    MesosAgent(&'a str),
    MesosFramework(&'a str),
    MesosTask(&'a str),
    Launched(&'a str),
    SchedLeader,
    Assignment(&'a str),
    Link(&'a str),
    Policy(&'a str),
    PolicyDenied,
    Vtep,
    Network(&'a str),
    /// From a newer agent, or nothing of dcnet's: ignored.
    Other,
}

impl<'a> Key<'a> {
    fn classify(key: &'a str) -> Self {
        let strip = |prefix: &str| key.strip_prefix(prefix);
        match key {
            NODE_INFO_KEY => Key::Node,
            KEYRING_KEY => Key::Keyring,
            CREDENTIAL_SET_KEY => Key::CredentialSet,
            mesos::GENERATION => Key::MesosGeneration,
            mesos::LEADER => Key::MesosLeader,
            LEADER_KEY => Key::SchedLeader,
            overlay::VTEP_KEY => Key::Vtep,
            crate::policy::DENIED_KEY => Key::PolicyDenied,
            _ => {
                if let Some(k) = strip(KV_PREFIX) {
                    Key::Kv(k)
                } else if let Some(k) = strip(mesos::TASK) {
                    Key::MesosTask(k)
                } else if let Some(k) = strip(mesos::AGENT) {
                    Key::MesosAgent(k)
                } else if let Some(k) = strip(mesos::FRAMEWORK) {
                    Key::MesosFramework(k)
                } else if let Some(k) = strip(launched::PREFIX) {
                    Key::Launched(k)
                } else if let Some(k) = strip(TASK_PREFIX) {
                    Key::Assignment(k)
                } else if let Some(k) = strip(LINK_PREFIX) {
                    Key::Link(k)
                } else if let Some(k) = strip(POLICY_PREFIX) {
                    Key::Policy(k)
                } else if let Some(k) = strip(overlay::NETWORK_PREFIX) {
                    Key::Network(k)
                } else {
                    Key::Other
                }
            }
        }
    }

    /// The topic a change of this key belongs to (Mesos keys go through the publisher check).
    fn topic(self) -> Topics {
        match self {
            Key::Node => Topics::NODES,
            Key::Keyring => Topics::KEYRING,
            Key::CredentialSet => Topics::CREDENTIALS,
            Key::Kv(_) => Topics::KV,
            Key::MesosGeneration
            | Key::MesosLeader
            | Key::MesosAgent(_)
            | Key::MesosFramework(_)
            | Key::MesosTask(_) => Topics::MESOS,
            Key::Launched(_) => Topics::LAUNCHED,
            Key::SchedLeader | Key::Assignment(_) => Topics::SCHEDULER,
            Key::Link(_) => Topics::LINKS,
            Key::Policy(_) => Topics::POLICIES,
            Key::PolicyDenied => Topics::POLICY_COUNTERS,
            Key::Vtep | Key::Network(_) => Topics::OVERLAY,
            Key::Other => Topics::empty(),
        }
    }
}

/// Fixed, so digests compare across nodes and updates.
const DIGEST: foldhash::quality::FixedState =
    foldhash::quality::FixedState::with_seed(0x6463_6e65_7466_6163);

fn entry_digest(key: &str, value: &str) -> u64 {
    DIGEST.hash_one((key, value))
}

// ---------------------------------------------------------------------------------------------
// Decoder

/// Turns successive gossip views into facts, decoding only the keys that changed.
#[derive(Debug, Default)]
pub struct Decoder {
    facts: Facts,
    /// The key set each node's facts were decoded from.
    keys: HashMap<String, Arc<Keys>>,
    /// The Mesos publisher readers got last: node id and content digest.
    mesos_seen: Option<(String, u64)>,
    decoded: u64,
    /// Agent ids and framework names, each kept once for all the tasks that repeat them.
    shared: Interner,
}

/// Strings that many facts repeat, kept once: a task decoded from gossip gets the copy of its
/// agent id and framework name that earlier tasks have (at 100,000 tasks on 200 agents, 99.8%
/// of those strings are repeats).
#[derive(Debug, Default)]
struct Interner {
    strings: HashSet<Arc<str>>,
    /// Size of `strings` when strings no fact holds any more were last dropped.
    kept: usize,
}

impl Interner {
    fn share(&mut self, s: &mut Arc<str>) {
        if let Some(shared) = self.strings.get(&**s) {
            *s = shared.clone();
            return;
        }
        // Strings no fact holds are dropped whenever the set doubled since the last time.
        if self.strings.len() >= 2 * self.kept.max(64) {
            self.strings.retain(|k| Arc::strong_count(k) > 1);
            self.kept = self.strings.len();
        }
        self.strings.insert(s.clone());
    }
}

impl Decoder {
    /// The facts as of the last view taken in.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// How many values were decoded since the start.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Takes in the next view; returns the topics whose facts changed (their versions are
    /// bumped). A view that differs only in heartbeats changes nothing.
    pub fn apply(&mut self, view: &ClusterView) -> Topics {
        let mut changed = Topics::empty();
        let gone: Vec<String> = self
            .facts
            .nodes
            .keys()
            .filter(|id| !view.nodes.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.facts.nodes.remove(&id);
            changed |= Topics::NODES;
            if let Some(keys) = self.keys.remove(&id) {
                for key in keys.keys() {
                    changed |= Key::classify(key).topic();
                }
            }
        }

        let empty = Arc::new(Keys::new());
        for node in view.nodes.values() {
            let facts = self.facts.nodes.entry(node.id.clone()).or_insert_with(|| {
                changed |= Topics::NODES;
                NodeFacts::new(&node.id, node.gossip_addr)
            });
            let old = self.keys.get(&node.id).unwrap_or(&empty);
            if !Arc::ptr_eq(old, &node.keys) {
                self.decoded += apply_keys(facts, old, &node.keys, &mut changed, &mut self.shared);
                self.keys.insert(node.id.clone(), node.keys.clone());
                Arc::make_mut(&mut facts.mesos).keys = node.keys.clone();
            }
            if (
                facts.is_up,
                facts.generation,
                facts.gossip_addr,
                facts.is_self,
            ) != (node.is_up, node.generation, node.gossip_addr, node.is_self)
            {
                changed |= Topics::NODES;
                facts.is_up = node.is_up;
                facts.generation = node.generation;
                facts.gossip_addr = node.gossip_addr;
                facts.is_self = node.is_self;
            }
        }

        // Mesos: a change only when readers would get other content.
        let now = self
            .facts
            .mesos_publisher()
            .map(|n| (n.id.clone(), n.mesos.digest));
        let mesos_changed = match (&self.mesos_seen, &now) {
            (None, None) => false,
            (Some((_, a)), Some((_, b))) => a != b,
            _ => true,
        };
        // A Mesos key changed somewhere: counted only if readers see it.
        changed = Topics(changed.0 & !Topics::MESOS.0);
        if mesos_changed {
            changed |= Topics::MESOS;
        }
        self.mesos_seen = now;

        if !changed.is_empty() {
            for n in self.facts.nodes.values_mut() {
                if let Some(v) = view.nodes.get(&n.id) {
                    n.last_heard = v.last_heard;
                }
            }
            for bit in changed.bits() {
                self.facts.versions[bit] += 1;
            }
        }
        changed
    }
}

/// Applies the differences between `old` and `new` to `facts`; returns how many values it
/// decoded. Unchanged keys are compared, not decoded: both key sets are in key order and share
/// the keys and values that did not change (see [`crate::gossip::view::keys_of`]), so the
/// walk costs a pointer comparison per unchanged key.
fn apply_keys(
    facts: &mut NodeFacts,
    old: &Keys,
    new: &Keys,
    changed: &mut Topics,
    shared: &mut Interner,
) -> u64 {
    let mut decoded = 0;
    let gone = |facts: &mut NodeFacts,
                key: &Arc<str>,
                value: &str,
                changed: &mut Topics,
                shared: &mut Interner| {
        let kind = Key::classify(key);
        *changed |= kind.topic();
        set(facts, key, kind, (Some(value), None), shared);
    };
    let mut old = old.iter().peekable();
    for (key, value) in new {
        // Old keys before this one are gone.
        while let Some((k, v)) = old.next_if(|(k, _)| !Arc::ptr_eq(k, key) && ***k < **key) {
            gone(facts, k, v, changed, shared);
        }
        let before = old
            .next_if(|(k, _)| Arc::ptr_eq(k, key) || k == &key)
            .map(|(_, v)| v);
        if before.is_some_and(|b| Arc::ptr_eq(b, value) || b == value) {
            continue;
        }
        let kind = Key::classify(key);
        *changed |= kind.topic();
        decoded += 1;
        set(
            facts,
            key,
            kind,
            (before.map(|b| &**b), Some(value)),
            shared,
        );
    }
    for (k, v) in old {
        gone(facts, k, v, changed, shared);
    }
    decoded
}

/// Sets (or with `None`, removes) one key's fact; `before` is the value it replaces.
fn set(
    facts: &mut NodeFacts,
    key: &Arc<str>,
    kind: Key<'_>,
    (before, value): (Option<&str>, Option<&str>),
    shared: &mut Interner,
) {
    fn parse<T: serde::de::DeserializeOwned>(value: Option<&str>) -> Option<Option<T>> {
        match value {
            None => Some(None),
            Some(v) => serde_json::from_str(v).ok().map(Some),
        }
    }
    fn put<T: Clone>(map: &mut Arc<BTreeMap<String, T>>, key: &str, value: Option<T>) {
        let map = Arc::make_mut(map);
        match value {
            Some(v) => map.insert(key.to_owned(), v),
            None => map.remove(key),
        };
    }
    if matches!(kind, Key::MesosGeneration) {
        // Not part of the content: readers pick a publisher by it, then compare digests.
    } else if kind.topic() == Topics::MESOS {
        let mesos = Arc::make_mut(&mut facts.mesos);
        if let Some(b) = before {
            mesos.digest = mesos.digest.wrapping_sub(entry_digest(key, b));
        }
        if let Some(v) = value {
            mesos.digest = mesos.digest.wrapping_add(entry_digest(key, v));
        }
    }
    // Whether the value decoded; a key without a value is "decoded" (removed).
    let ok = match kind {
        Key::Node => parse::<NodeInfo>(value).map(|v| facts.info = v.map(Arc::new)),
        Key::Keyring => parse::<KeyringFact>(value).map(|v| facts.keyring = v.map(Arc::new)),
        Key::CredentialSet => {
            facts.credential_set = value.map(Arc::from);
            Some(())
        }
        Key::Kv(k) => {
            put(&mut facts.kv, k, value.map(Arc::from));
            Some(())
        }
        Key::MesosGeneration => value
            .map_or(Some(None), |v| v.parse::<u64>().ok().map(Some))
            .map(|v| Arc::make_mut(&mut facts.mesos).generation = v),
        Key::MesosLeader => value
            .map_or(Some(None), |v| v.parse::<SocketAddr>().ok().map(Some))
            .map(|v| Arc::make_mut(&mut facts.mesos).leader = v),
        Key::MesosAgent(k) => parse::<AgentInfo>(value).map(|v| {
            let m = Arc::make_mut(&mut facts.mesos);
            match v {
                Some(a) => m.agents.insert(k.to_owned(), Arc::new(a)),
                None => m.agents.remove(k),
            };
        }),
        Key::MesosFramework(k) => parse::<SchedulerFact>(value).map(|v| {
            let m = Arc::make_mut(&mut facts.mesos);
            match v {
                Some(f) => m.frameworks.insert(k.to_owned(), Arc::new(f)),
                None => m.frameworks.remove(k),
            };
        }),
        // Checked, and kept decoded only if it declares VIPs (see `MesosFacts::tasks`).
        Key::MesosTask(_) => parse::<TaskFact>(value).map(|v| {
            let m = Arc::make_mut(&mut facts.mesos);
            match v.filter(|t| mesos::declares_vips(&t.task)) {
                Some(mut t) => {
                    shared.share(&mut t.framework);
                    if let Some(task) = Arc::get_mut(&mut t.task) {
                        shared.share(&mut task.agent_id);
                    }
                    m.vip_tasks.insert(key.clone(), t)
                }
                None => m.vip_tasks.remove(&**key),
            };
        }),
        Key::Launched(k) => {
            parse::<TaskStatus>(value).map(|v| put(&mut facts.launched, k, v.map(Arc::new)))
        }
        Key::SchedLeader => parse::<LeaderFact>(value).map(|v| facts.leader = v.map(Arc::new)),
        Key::Assignment(k) => {
            parse::<Assignment>(value).map(|v| put(&mut facts.assignments, k, v.map(Arc::new)))
        }
        Key::Link(k) => parse::<LinkFact>(value).map(|v| put(&mut facts.links, k, v.map(Arc::new))),
        Key::Policy(k) => parse::<dcnet_policy::Policy>(value)
            .map(|v| put(&mut facts.policies, k, v.map(Arc::new))),
        Key::PolicyDenied => {
            parse::<BTreeMap<String, u64>>(value).map(|v| facts.policy_denied = v.map(Arc::new))
        }
        Key::Vtep => parse::<LeaseRecord>(value).map(|v| facts.vtep = v),
        Key::Network(k) => parse::<LeaseRecord>(value).map(|v| put(&mut facts.networks, k, v)),
        Key::Other => Some(()),
    };
    match ok {
        Some(()) => {
            if facts.malformed.contains(&**key) {
                Arc::make_mut(&mut facts.malformed).remove(&**key);
            }
        }
        None => {
            // What it held before stays out too: a broken value is no value.
            set(facts, key, kind, (None, None), shared);
            Arc::make_mut(&mut facts.malformed).insert(key.to_string());
        }
    }
}

/// Facts for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// The facts a decoder makes of `view` alone.
    pub(crate) fn decoded(view: &ClusterView) -> Facts {
        let mut decoder = Decoder::default();
        decoder.apply(view);
        decoder.facts().clone()
    }
}

#[cfg(test)]
mod tests;
