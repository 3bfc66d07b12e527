//! Records kept by who contributed them, so that a new cluster state costs what changed in it.
//!
//! [`Contributions`] remembers, for every task, what its records were made from (the task as
//! the update got it, and its agent's addresses) and a fingerprint of that, not the records: a
//! task's records are made again from what it was made of when it changes or goes, and only
//! then. The tasks of a new state are compared with those task by task: only tasks that
//! changed, appeared or went away, or whose agent's addresses changed, have their old records
//! counted out of the snapshot and their new ones counted in ([`crate::zone::Update::count`]),
//! so a name several tasks give keeps a record while one of them still gives it. The records
//! of the cluster as a whole (frameworks, agents, masters) are few; they are made again every
//! time and compared as one more contributor.
//!
//! A task comes in as a [`TaskInput`]: what tells it apart, a fingerprint, and the task itself
//! made only when its records are. [`ClusterTask`] is a task of a parsed [`Cluster`]; the
//! agent's input is the task's gossip value, decoded only when it changed, so a serving node
//! keeps no decoded copy of 100,000 tasks.
//!
//! Tasks are told apart by framework name and task id. Two tasks that share both (Mesos keeps
//! task ids unique per framework, so only a confused master sends that) are one contributor
//! with the records of both.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::records::{Cluster, Record, RecordSource, TaskInfo, distinct};
use crate::zone::{NameRecords, Snapshot, Update, ZoneInfo};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A running task as an update gets it. The update tells tasks apart by [`TaskInput::key`],
/// compares them by [`TaskInput::fingerprint`], and asks for the task itself
/// ([`TaskInput::task`]) only to make records: those of a new or changed task, and those of an
/// old one that are counted out. An input may so be the task encoded, decoded on demand.
pub trait TaskInput: Clone {
    /// A hash of what tells the task apart (its framework's name and id). Inputs with equal
    /// keys are one contributor with the records of them all.
    fn key(&self) -> u64;
    /// A hash of what the task's records are made of but its agent's addresses (the update
    /// follows those itself): a changed task changes it, but for a 2^-64 chance (such a change
    /// would wait for the task's next one).
    fn fingerprint(&self) -> u64;
    /// Its framework's name and the task; `None` for an input that gives no records.
    fn task(&self) -> Option<(Arc<str>, Arc<TaskInfo>)>;
}

/// A running task of a [`Cluster`], decoded already.
#[derive(Debug, Clone)]
pub struct ClusterTask {
    pub framework: Arc<str>,
    pub task: Arc<TaskInfo>,
}

impl TaskInput for ClusterTask {
    fn key(&self) -> u64 {
        key_hash(&self.framework, &self.task.id)
    }

    fn fingerprint(&self) -> u64 {
        FINGERPRINT.hash_one((&*self.framework, &*self.task))
    }

    fn task(&self) -> Option<(Arc<str>, Arc<TaskInfo>)> {
        Some((self.framework.clone(), self.task.clone()))
    }
}

impl ClusterTask {
    /// The running tasks of `cluster`, in its order, each framework's name shared by its tasks.
    pub fn all(cluster: &Cluster) -> impl Iterator<Item = ClusterTask> + '_ {
        cluster.frameworks.iter().flat_map(|f| {
            let framework: Arc<str> = f.name.as_str().into();
            f.tasks
                .iter()
                .filter(|t| t.is_running)
                .map(move |task| ClusterTask {
                    framework: framework.clone(),
                    task: task.clone(),
                })
        })
    }
}

/// The hash that tells a task apart, from its framework's name and id.
pub fn key_hash(framework: &str, id: &str) -> u64 {
    FINGERPRINT.hash_one((framework, id))
}

/// Fixed, so fingerprints compare across updates.
const FINGERPRINT: foldhash::quality::FixedState =
    foldhash::quality::FixedState::with_seed(0x636f_6e74_7269_6275);

/// One input, and the addresses of the agent its records were made with (the first of each
/// family); `None` when it gave none (no task, or an agent the cluster did not know).
#[derive(Debug)]
struct Made<I> {
    input: I,
    agent_ips: Option<Arc<[IpAddr]>>,
}

/// What the inputs of one key gave their records from: 72 bytes for the agent's inputs, so
/// that 100,000 tasks take 9 MB.
#[derive(Debug)]
struct Contribution<I> {
    /// The hash of the key: where the contribution lives in the table.
    key: u64,
    /// Of the first input; not used while there are more.
    fingerprint: u64,
    /// The last update that looked the task up (see [`Contributions::epoch`]).
    seen: u32,
    first: Made<I>,
}

/// The records `made` gave.
fn records_of<'a, I: TaskInput + 'a>(
    made: impl Iterator<Item = &'a Made<I>>,
    source: &impl RecordSource,
) -> Vec<Record> {
    let mut records = Vec::new();
    for made in made {
        if let Some(ips) = &made.agent_ips
            && let Some((framework, task)) = made.input.task()
        {
            source.task(&framework, &task, ips, &mut records);
        }
    }
    records
}

/// The agents whose addresses changed, came or went in an update.
#[derive(Debug, Default)]
struct Moved {
    /// The addresses they had, by where they are kept (a contribution made with them holds
    /// them, so none is reused while it is looked for).
    retired: HashSet<usize>,
    /// Whether one came: inputs whose agent was unknown may have it now.
    came: bool,
}

impl Moved {
    fn is_empty(&self) -> bool {
        self.retired.is_empty() && !self.came
    }

    /// Whether `made` has to be made again.
    fn affects<I>(&self, made: &Made<I>) -> bool {
        match &made.agent_ips {
            Some(ips) => self.retired.contains(&address(ips)),
            None => self.came,
        }
    }
}

fn address(ips: &Arc<[IpAddr]>) -> usize {
    Arc::as_ptr(ips).cast::<u8>() as usize
}

/// The records of a cluster, by contributor, counted into successive snapshots. Made for one
/// [`RecordSource`] and one line of snapshots: a source with other settings, or a snapshot
/// that did not come from the last update, needs new contributions.
#[derive(Debug)]
pub struct Contributions<I = ClusterTask> {
    tasks: HashTable<Contribution<I>>,
    /// Further inputs of keys that several inputs have, by key (rare: see the module's docs).
    more: FastMap<u64, Vec<Made<I>>>,
    shared: Vec<Record>,
    /// The agents' addresses (the first of each family) as of the last update, by agent id.
    agents: FastMap<Arc<str>, Arc<[IpAddr]>>,
    /// The key and fingerprint of the last update's tasks, in its order.
    order: Vec<(u64, u64)>,
    /// Counts the updates; a contribution not seen in the current one is gone. It wraps after
    /// 2^32 updates: a contribution last seen that long ago and taken as seen is made again.
    epoch: u32,
}

impl<I> Default for Contributions<I> {
    fn default() -> Self {
        Self {
            tasks: HashTable::new(),
            more: FastMap::default(),
            shared: Vec::new(),
            agents: FastMap::default(),
            order: Vec::new(),
            epoch: 0,
        }
    }
}

/// Inputs to make records of again, by key, each with its fingerprint.
type Changed<I> = FastMap<u64, Vec<(I, u64)>>;

impl Contributions<ClusterTask> {
    /// Takes in the new state of the cluster: the next snapshot after `snapshot` (which must
    /// be the one the last update returned, or an empty one the first time), with the zones'
    /// settings `zones`.
    ///
    /// One pass over the tasks compares each with what it was made of last time; only the new,
    /// changed and gone ones have records made. At 100,000 tasks that pass is what an update
    /// costs.
    pub fn update(
        &mut self,
        snapshot: &Snapshot,
        zones: Vec<ZoneInfo>,
        cluster: &Cluster,
        source: &impl RecordSource,
    ) -> Snapshot {
        self.count(snapshot, zones, cluster, ClusterTask::all(cluster), source)
            .finish()
    }

    /// As [`Contributions::update`], with every name whose records changed and its records
    /// now (see [`Update::finish_listing`]).
    pub fn update_listing(
        &mut self,
        snapshot: &Snapshot,
        zones: Vec<ZoneInfo>,
        cluster: &Cluster,
        source: &impl RecordSource,
    ) -> (Snapshot, Vec<(String, NameRecords)>) {
        self.count(snapshot, zones, cluster, ClusterTask::all(cluster), source)
            .finish_listing()
    }
}

impl<I: TaskInput> Contributions<I> {
    /// As [`Contributions::update`], with the running tasks given apart from `cluster` (whose
    /// own tasks are not read): `tasks`, in the same order from one update to the next when
    /// they can be (an update then compares them place by place).
    pub fn update_tasks(
        &mut self,
        snapshot: &Snapshot,
        zones: Vec<ZoneInfo>,
        cluster: &Cluster,
        tasks: impl IntoIterator<Item = I>,
        source: &impl RecordSource,
    ) -> Snapshot {
        self.count(snapshot, zones, cluster, tasks, source).finish()
    }

    fn count(
        &mut self,
        snapshot: &Snapshot,
        zones: Vec<ZoneInfo>,
        cluster: &Cluster,
        tasks: impl IntoIterator<Item = I>,
        source: &impl RecordSource,
    ) -> Update {
        self.epoch = self.epoch.wrapping_add(1);
        let epoch = self.epoch;
        let mut update = snapshot.update(zones);

        let mut shared = Vec::new();
        source.shared(cluster, &mut shared);
        if shared != self.shared {
            let old = std::mem::replace(&mut self.shared, shared.clone());
            recount(&mut update, old, shared);
        }
        let moved = self.agents_from(cluster);

        // The tasks, in the given order, with their keys and fingerprints.
        let tasks: Vec<I> = tasks.into_iter().collect();
        let order: Vec<(u64, u64)> = tasks.iter().map(|t| (t.key(), t.fingerprint())).collect();

        // Usually the same tasks in the same order, a few of them changed: then the changed
        // places are all there is to look at. Anything else is a comparison by key.
        let mut changed = match self.changed_in_place(&order, &tasks) {
            Some(changed) => changed,
            None => {
                let changed = self.changed_by_key(&order, &tasks);
                // Gone: not found by key in this update.
                let Self { tasks, more, .. } = self;
                tasks.retain(|c| {
                    let keep = c.seen == epoch;
                    if !keep {
                        let extra = more.remove(&c.key).unwrap_or_default();
                        let old = records_of(std::iter::once(&c.first).chain(&extra), source);
                        recount(&mut update, old, Vec::new());
                    }
                    keep
                });
                changed
            }
        };
        self.order = order;
        // Unchanged tasks on agents whose addresses changed (or that came or went).
        if !moved.is_empty() {
            for c in &self.tasks {
                if changed.contains_key(&c.key) || !self.made(c).any(|m| moved.affects(m)) {
                    continue;
                }
                let inputs = self.made(c).map(|m| (m.input.clone(), c.fingerprint));
                changed.insert(c.key, inputs.collect());
            }
        }

        for (key, inputs) in changed {
            let old = self
                .tasks
                .find_entry(key, |c| c.key == key)
                .ok()
                .map(|entry| entry.remove().0);
            let extra = self.more.remove(&key).unwrap_or_default();
            let old_records = records_of(old.iter().map(|c| &c.first).chain(&extra), source);
            let mut new_records = Vec::new();
            let mut made: Vec<(Made<I>, u64)> = inputs
                .into_iter()
                .map(|(input, print)| (self.make(input, source, &mut new_records), print))
                .collect();
            recount(&mut update, old_records, new_records);
            if made.is_empty() {
                continue;
            }
            let (first, fingerprint) = made.swap_remove(0);
            if !made.is_empty() {
                self.more
                    .insert(key, made.into_iter().map(|(m, _)| m).collect());
            }
            let new = Contribution {
                key,
                fingerprint,
                seen: epoch,
                first,
            };
            self.tasks.insert_unique(key, new, |c| c.key);
        }
        update
    }

    /// The inputs of a contribution.
    fn made<'a>(&'a self, c: &'a Contribution<I>) -> impl Iterator<Item = &'a Made<I>> {
        std::iter::once(&c.first).chain(self.more.get(&c.key).into_iter().flatten())
    }

    /// Makes the records of `input` into `out`.
    fn make(&self, input: I, source: &impl RecordSource, out: &mut Vec<Record>) -> Made<I> {
        let task = input.task();
        let agent_ips = task
            .as_ref()
            .and_then(|(_, task)| self.agents.get(&*task.agent_id).cloned());
        if let (Some((framework, task)), Some(ips)) = (&task, &agent_ips) {
            source.task(framework, task, ips, out);
        }
        Made { input, agent_ips }
    }

    /// Takes in the agents of `cluster`: which changed their addresses, came or went since
    /// the last update.
    fn agents_from(&mut self, cluster: &Cluster) -> Moved {
        let mut agents = FastMap::default();
        for a in &cluster.agents {
            let ips = distinct(&a.ips);
            let kept = self
                .agents
                .get_key_value(a.id.as_str())
                .filter(|(_, old)| ***old == *ips);
            let (id, ips) = match kept {
                Some((id, old)) => (id.clone(), old.clone()),
                None => (Arc::from(a.id.as_str()), Arc::from(ips)),
            };
            agents.insert(id, ips);
        }
        let mut moved = Moved::default();
        for (id, old) in &self.agents {
            if !agents.get(id).is_some_and(|ips| Arc::ptr_eq(old, ips)) {
                moved.retired.insert(address(old));
            }
        }
        moved.came = agents.keys().any(|id| {
            !self
                .agents
                .get(id)
                .is_some_and(|old| Arc::ptr_eq(old, &agents[id]))
        });
        self.agents = agents;
        moved
    }

    /// The changed tasks when `order` has the same tasks in the same places as the last
    /// update; `None` when it does not, or when a changed task shares its key with another.
    fn changed_in_place(&self, order: &[(u64, u64)], tasks: &[I]) -> Option<Changed<I>> {
        if order.len() != self.order.len() {
            return None;
        }
        let mut changed = Changed::default();
        for (k, (&(key, print), &(old_key, old_print))) in order.iter().zip(&self.order).enumerate()
        {
            // Another task in this place: tasks came, went or moved.
            if key != old_key {
                return None;
            }
            if print == old_print {
                continue;
            }
            // One of several tasks with its key: those are compared by key.
            if self.more.contains_key(&key) || changed.contains_key(&key) {
                return None;
            }
            changed.insert(key, vec![(tasks[k].clone(), print)]);
        }
        Some(changed)
    }

    /// The new and changed tasks, found by key; marks every task found as seen, so that the
    /// ones left unmarked are gone.
    fn changed_by_key(&mut self, order: &[(u64, u64)], tasks: &[I]) -> Changed<I> {
        let epoch = self.epoch;
        let mut changed = Changed::default();
        let mut repeated = HashSet::new();
        for (task, &(key, print)) in tasks.iter().zip(order) {
            if let Some(pending) = changed.get_mut(&key) {
                pending.push((task.clone(), print));
                continue;
            }
            match self.tasks.find_mut(key, |c| c.key == key) {
                // The key's first task was unchanged; with this one it is not.
                Some(c) if c.seen == epoch => {
                    repeated.insert(key);
                    changed.insert(key, Vec::new());
                }
                Some(c) => {
                    c.seen = epoch;
                    if self.more.contains_key(&key) || c.fingerprint != print {
                        changed.insert(key, vec![(task.clone(), print)]);
                    }
                }
                None => {
                    changed.insert(key, vec![(task.clone(), print)]);
                }
            }
        }
        if !repeated.is_empty() {
            // Rare (see the module's docs): gather every task of those keys again.
            for key in &repeated {
                if let Some(pending) = changed.get_mut(key) {
                    pending.clear();
                }
            }
            for (task, &(key, print)) in tasks.iter().zip(order) {
                if repeated.contains(&key)
                    && let Some(pending) = changed.get_mut(&key)
                {
                    pending.push((task.clone(), print));
                }
            }
        }
        changed
    }
}

/// Counts a contributor's `old` records out and its `new` ones in, leaving alone the ones in
/// both (a task that moved keeps most of its records).
fn recount(update: &mut Update, mut old: Vec<Record>, mut new: Vec<Record>) {
    old.sort_unstable();
    new.sort_unstable();
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) if o == n => {
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o < n => {
                update.count(o, false);
                i += 1;
            }
            (Some(o), None) => {
                update.count(o, false);
                i += 1;
            }
            (_, Some(n)) => {
                update.count(n, true);
                j += 1;
            }
            (None, None) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::dcos::DcosRecords;
    use crate::name::LabelSpec;
    use crate::records::{AgentInfo, Discovery, DiscoveryPort, FrameworkInfo, Settings};
    use crate::test_rng::Rng;

    fn settings() -> Settings {
        Settings {
            domain: "mesos".into(),
            spec: LabelSpec::Rfc1123,
            masters: vec![("10.0.0.1".parse().unwrap(), 5050)],
            mname: "ns1.mesos".into(),
            listen_ips: vec!["127.0.0.1".parse().unwrap()],
        }
    }

    fn random_task(rng: &mut Rng) -> TaskInfo {
        let id = rng.below(6);
        let discovery = (rng.below(3) == 0).then(|| Discovery {
            name: ["web", "db", "Web"][rng.below(3)].into(),
            ports: vec![DiscoveryPort {
                number: 80 + rng.below(2) as u16,
                protocol: ["tcp", ""][rng.below(2)].into(),
                name: ["http", ""][rng.below(2)].into(),
                labels: vec![],
            }],
        });
        TaskInfo {
            // Few ids, so that ids repeat (even within a framework) and names collide.
            id: format!("task{id}"),
            name: ["web", "db", "cache"][rng.below(3)].into(),
            agent_id: format!("agent{}", rng.below(4)).into(),
            is_running: rng.below(5) != 0,
            ips: (0..rng.below(3))
                .map(|_| IpAddr::from([9, 0, 0, rng.below(4) as u8]))
                .collect(),
            ports: (0..rng.below(2))
                .map(|_| 31000 + rng.below(2) as u16)
                .collect(),
            healthy: None,
            discovery,
        }
    }

    fn random_cluster(rng: &mut Rng) -> Cluster {
        Cluster {
            frameworks: (0..1 + rng.below(3))
                .map(|f| FrameworkInfo {
                    name: ["marathon", "Marathon", "spark"][f].into(),
                    scheduler_ips: vec![IpAddr::from([10, 0, 1, rng.below(2) as u8])],
                    scheduler_port: Some(8080),
                    tasks: (0..rng.below(6)).map(|_| random_task(rng).into()).collect(),
                })
                .collect(),
            agents: (0..3)
                .map(|a| AgentInfo {
                    id: format!("agent{a}"),
                    ips: vec![IpAddr::from([10, 1, 0, rng.below(3) as u8])],
                    port: Some(5051),
                })
                .collect(),
            leader: (rng.below(4) != 0).then(|| (IpAddr::from([10, 0, 0, 1]), 5050)),
        }
    }

    fn by_name(cluster: &Cluster, source: &impl RecordSource) -> BTreeMap<String, NameRecords> {
        let set = crate::records::generate_from(cluster, source);
        let mut all: BTreeMap<String, NameRecords> = BTreeMap::new();
        for (name, ips) in &set.a {
            all.entry(name.clone()).or_default().a = ips.iter().copied().collect();
        }
        for (name, ips) in &set.aaaa {
            all.entry(name.clone()).or_default().aaaa = ips.iter().copied().collect();
        }
        for (name, targets) in &set.srv {
            all.entry(name.clone()).or_default().srv = targets.iter().cloned().collect();
        }
        all
    }

    fn zones() -> Vec<ZoneInfo> {
        zones_with_extra(false)
    }

    /// With an extra (empty) zone the origins differ from the last update's: every name is
    /// placed again, with its counts.
    fn zones_with_extra(extra: bool) -> Vec<ZoneInfo> {
        let mut zones = crate::zone::tests::infos(60, 1);
        if extra {
            let soa = crate::zone::tests::soa();
            zones.push(ZoneInfo::new("other.example", soa, vec![], 60, 1));
        }
        zones
    }

    /// Every name the snapshot has records for, with them.
    fn served(snapshot: &Snapshot) -> BTreeMap<String, NameRecords> {
        snapshot
            .names_with_records()
            .map(|(name, records)| (name, records.into_owned()))
            .collect()
    }

    #[test]
    fn a_task_replaced_by_a_copy_of_its_neighbour_is_gone() {
        // Same number of tasks, the second now in the first one's place and repeated: no
        // task kept its place, so the first must be found gone.
        let mut rng = Rng::new(7);
        let mut cluster = random_cluster(&mut rng);
        let mut first = random_task(&mut rng);
        first.is_running = true;
        first.id = "first".into();
        first.agent_id = "agent0".into();
        first.ips = vec![IpAddr::from([9, 0, 0, 1])];
        let mut second = first.clone();
        second.id = "second".into();
        second.name = "other".into();
        cluster.frameworks.truncate(1);
        let second = Arc::new(second);
        cluster.frameworks[0].tasks = vec![first.into(), second.clone()];
        let source = settings();
        let mut contributions = Contributions::default();
        let mut snapshot = Snapshot::default();
        for step in 0..2 {
            snapshot = contributions.update(&snapshot, zones(), &cluster, &source);
            assert_eq!(served(&snapshot), by_name(&cluster, &source), "step {step}");
            cluster.frameworks[0].tasks = vec![second.clone(), second.clone()];
        }
    }

    /// A task kept encoded, as the agent keeps its gossip values; some do not decode.
    #[derive(Debug, Clone)]
    struct Encoded {
        framework: Arc<str>,
        id: String,
        json: Arc<str>,
    }

    impl TaskInput for Encoded {
        fn key(&self) -> u64 {
            key_hash(&self.framework, &self.id)
        }

        fn fingerprint(&self) -> u64 {
            FINGERPRINT.hash_one(&*self.json)
        }

        fn task(&self) -> Option<(Arc<str>, Arc<TaskInfo>)> {
            let task = serde_json::from_str(&self.json).ok()?;
            Some((self.framework.clone(), Arc::new(task)))
        }
    }

    /// The running tasks of `cluster` encoded; those with id `task5` do not decode (and are
    /// left out of `cluster`, which then holds what should be served).
    fn encoded(cluster: &mut Cluster) -> Vec<Encoded> {
        let tasks = ClusterTask::all(cluster)
            .map(|t| {
                let json = serde_json::to_string(&*t.task).unwrap();
                Encoded {
                    json: if t.task.id == "task5" {
                        json[1..].into()
                    } else {
                        json.into()
                    },
                    framework: t.framework,
                    id: t.task.id.clone(),
                }
            })
            .collect();
        for f in &mut cluster.frameworks {
            f.tasks.retain(|t| t.id != "task5");
        }
        tasks
    }

    #[test]
    fn updates_track_a_full_generation() {
        track_generations(|contributions, snapshot, zones, cluster, source| {
            contributions.update(snapshot, zones, cluster, source)
        });
    }

    #[test]
    fn updates_of_encoded_tasks_track_a_full_generation() {
        track_generations(|contributions, snapshot, zones, cluster, source| {
            let tasks = encoded(cluster);
            contributions.update_tasks(snapshot, zones, cluster, tasks, source)
        });
    }

    /// Random clusters, changed a little or altogether step after step; each update serves
    /// what generating the records of the whole cluster gives.
    fn track_generations<I: TaskInput>(
        update: impl Fn(
            &mut Contributions<I>,
            &Snapshot,
            Vec<ZoneInfo>,
            &mut Cluster,
            &(Settings, DcosRecords),
        ) -> Snapshot,
    ) {
        let source = (
            settings(),
            DcosRecords {
                spec: LabelSpec::Rfc1123,
                masters: vec!["10.0.0.1".parse().unwrap()],
                this_node: vec!["10.0.0.9".parse().unwrap()],
            },
        );
        for seed in 1..=50u64 {
            let mut rng = Rng::new(seed);
            let mut contributions = Contributions::default();
            let mut snapshot = Snapshot::default();
            let mut cluster = random_cluster(&mut rng);
            for step in 0..20 {
                // Mostly small edits, sometimes a new cluster altogether.
                if rng.below(5) == 0 {
                    cluster = random_cluster(&mut rng);
                } else if let Some(f) = cluster.frameworks.first_mut() {
                    match rng.below(4) {
                        0 => f.tasks.push(random_task(&mut rng).into()),
                        1 if !f.tasks.is_empty() => {
                            let i = rng.below(f.tasks.len());
                            f.tasks.remove(i);
                        }
                        2 if !f.tasks.is_empty() => {
                            let i = rng.below(f.tasks.len());
                            Arc::make_mut(&mut f.tasks[i]).ips =
                                vec![IpAddr::from([9, 9, 9, rng.below(3) as u8])];
                        }
                        3 if rng.below(2) == 0 => {
                            // An agent goes (its tasks keep running, without records), or one
                            // that went comes back.
                            let id = format!("agent{}", rng.below(4));
                            match cluster.agents.iter().position(|a| a.id == id) {
                                Some(i) => {
                                    cluster.agents.remove(i);
                                }
                                None => cluster.agents.push(AgentInfo {
                                    id,
                                    ips: vec![IpAddr::from([10, 3, 0, rng.below(3) as u8])],
                                    port: Some(5051),
                                }),
                            }
                        }
                        _ if !cluster.agents.is_empty() => {
                            let i = rng.below(cluster.agents.len());
                            cluster.agents[i].ips =
                                vec![IpAddr::from([10, 2, 0, rng.below(3) as u8])]
                        }
                        _ => {}
                    }
                }
                let zones = zones_with_extra(rng.below(4) == 0);
                let mut given = cluster.clone();
                snapshot = update(&mut contributions, &snapshot, zones, &mut given, &source);
                assert_eq!(
                    served(&snapshot),
                    by_name(&given, &source),
                    "seed {seed}, step {step}"
                );
            }
        }
    }
}
