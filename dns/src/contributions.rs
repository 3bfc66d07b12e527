//! Records kept by who contributed them, so that a new cluster state costs what changed in it.
//!
//! [`Contributions`] remembers, for every task, what its records were made from (the task, its
//! framework's name and its agent's addresses) and a fingerprint of that, not the records: a
//! task's records are made again from what it was made of when it changes or goes, and only
//! then. A new [`Cluster`] is compared with that task by task: only tasks that changed,
//! appeared or went away have their old records counted out of the snapshot and their new ones
//! counted in ([`crate::zone::Update::count`]), so a name several tasks give keeps a record
//! while one of them still gives it. The records of the cluster as a whole (frameworks, agents,
//! masters) are few; they are made again every time and compared as one more contributor.
//!
//! Tasks are told apart by framework name and task id. Two tasks that share both (Mesos keeps
//! task ids unique per framework, so only a confused master sends that) are one contributor
//! with the records of both.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::records::{Cluster, Record, RecordSource, TaskInfo, first_of_each_family};
use crate::zone::{NameRecords, Snapshot, Update, ZoneInfo};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What one task's records are made of, besides its framework's name.
#[derive(Debug, Clone)]
struct Input {
    task: Arc<TaskInfo>,
    agent_ips: Arc<[IpAddr]>,
}

/// What the tasks of one key (framework name and task id) gave their records from.
#[derive(Debug)]
struct Contribution {
    framework: Arc<str>,
    /// The hash of the key: where the contribution lives in the table.
    key: u64,
    /// Of the first input (see [`fingerprint`]); not used while there are more.
    fingerprint: u64,
    first: Input,
    /// Further tasks with the key (rare: see the module's docs).
    more: Vec<Input>,
    /// The last update that looked the task up.
    seen: u64,
}

impl Contribution {
    fn inputs(&self) -> impl Iterator<Item = &Input> {
        std::iter::once(&self.first).chain(&self.more)
    }

    /// The records its tasks give.
    fn records(&self, source: &impl RecordSource) -> Vec<Record> {
        let mut records = Vec::new();
        for input in self.inputs() {
            source.task(&self.framework, &input.task, &input.agent_ips, &mut records);
        }
        records
    }
}

/// The records of a cluster, by contributor, counted into successive snapshots. Made for one
/// [`RecordSource`] and one line of snapshots: a source with other settings, or a snapshot
/// that did not come from the last update, needs new contributions.
#[derive(Debug, Default)]
pub struct Contributions {
    tasks: HashTable<Contribution>,
    /// The framework names the tasks share.
    frameworks: Vec<Arc<str>>,
    shared: Vec<Record>,
    /// The key hash and fingerprint of the last update's tasks, in the cluster's order.
    order: Vec<(u64, u64)>,
    /// Counts the updates; a contribution not seen in the current one is gone.
    epoch: u64,
}

/// A task that gets records: its framework's name, itself, its agent's addresses.
type Task<'a> = (&'a str, &'a Arc<TaskInfo>, &'a Arc<[IpAddr]>);
/// Tasks by framework name and task id.
type TaskKey<'a> = (&'a str, &'a str);
/// Tasks to make records of again, by key, with their key hash and fingerprints.
type Changed<'a> = FastMap<TaskKey<'a>, (u64, Vec<(Task<'a>, u64)>)>;

/// A 64-bit hash of everything a task's records are made of. Two versions of a task that
/// differ yet hash alike would keep the old records; at 2^-64 per change that is left to
/// chance, as the fingerprint spares each update from reading the stored tasks back.
fn fingerprint(framework: &str, task: &TaskInfo, agent_ips: &[IpAddr]) -> u64 {
    FINGERPRINT.hash_one((framework, task, agent_ips))
}

fn key_hash(framework: &str, id: &str) -> u64 {
    FINGERPRINT.hash_one((framework, id))
}

/// Fixed, so fingerprints compare across updates.
const FINGERPRINT: foldhash::quality::FixedState =
    foldhash::quality::FixedState::with_seed(0x636f_6e74_7269_6275);

impl Contributions {
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
        self.count(snapshot, zones, cluster, source).finish()
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
        self.count(snapshot, zones, cluster, source)
            .finish_listing()
    }

    fn count(
        &mut self,
        snapshot: &Snapshot,
        zones: Vec<ZoneInfo>,
        cluster: &Cluster,
        source: &impl RecordSource,
    ) -> Update {
        self.epoch += 1;
        let epoch = self.epoch;
        let mut update = snapshot.update(zones);

        let mut shared = Vec::new();
        source.shared(cluster, &mut shared);
        if shared != self.shared {
            let old = std::mem::replace(&mut self.shared, shared.clone());
            recount(&mut update, old, shared);
        }

        // The tasks that get records, in the cluster's order, with their fingerprints.
        let agents: FastMap<&str, Arc<[IpAddr]>> = cluster
            .agents
            .iter()
            .map(|a| (a.id.as_str(), first_of_each_family(&a.ips).into()))
            .collect();
        let mut tasks = Vec::with_capacity(self.order.len());
        let mut order = Vec::with_capacity(self.order.len());
        for f in &cluster.frameworks {
            for task in f.tasks.iter().filter(|t| t.is_running) {
                if let Some(ips) = agents.get(&*task.agent_id) {
                    order.push((key_hash(&f.name, &task.id), fingerprint(&f.name, task, ips)));
                    tasks.push((f.name.as_str(), task, ips));
                }
            }
        }

        // Usually the same tasks in the same order, a few of them changed: then the changed
        // places are all there is to look at. Anything else is a comparison by key.
        let changed = match self.changed_in_place(&order, &tasks) {
            Some(changed) => changed,
            None => {
                let changed = self.changed_by_key(&order, &tasks);
                // Gone: not found by key in this update.
                self.tasks.retain(|c| {
                    let keep = c.seen == epoch;
                    if !keep {
                        recount(&mut update, c.records(source), Vec::new());
                    }
                    keep
                });
                self.frameworks.retain(|f| Arc::strong_count(f) > 1);
                changed
            }
        };
        self.order = order;

        for ((framework, id), (key, inputs)) in changed {
            let old = self
                .tasks
                .find_entry(key, |c| &*c.framework == framework && c.first.task.id == id)
                .ok()
                .map(|entry| entry.remove().0);
            let framework = self.framework(framework);
            let mut inputs = inputs.into_iter().map(|((_, task, ips), print)| {
                let input = Input {
                    task: task.clone(),
                    agent_ips: ips.clone(),
                };
                (input, print)
            });
            let old_records = old.map(|c| c.records(source)).unwrap_or_default();
            let Some((first, print)) = inputs.next() else {
                recount(&mut update, old_records, Vec::new());
                continue;
            };
            let new = Contribution {
                framework,
                key,
                fingerprint: print,
                first,
                more: inputs.map(|(input, _)| input).collect(),
                seen: epoch,
            };
            recount(&mut update, old_records, new.records(source));
            self.tasks.insert_unique(key, new, |c| c.key);
        }
        update
    }

    /// The shared name of `framework`.
    fn framework(&mut self, framework: &str) -> Arc<str> {
        if let Some(f) = self.frameworks.iter().find(|f| &***f == framework) {
            return f.clone();
        }
        let f: Arc<str> = framework.into();
        self.frameworks.push(f.clone());
        f
    }

    /// The contribution of a key.
    fn get(&self, key: u64, (framework, id): TaskKey<'_>) -> Option<&Contribution> {
        self.tasks
            .find(key, |c| &*c.framework == framework && c.first.task.id == id)
    }

    /// The changed tasks when `order` has the same tasks in the same places as the last
    /// update; `None` when it does not, or when a changed task shares its key with another.
    fn changed_in_place<'a>(
        &self,
        order: &[(u64, u64)],
        tasks: &[Task<'a>],
    ) -> Option<Changed<'a>> {
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
            let task @ (framework, info, _) = tasks[k];
            // One of several tasks with its key: those are compared by key.
            let c = self.get(key, (framework, &info.id))?;
            if !c.more.is_empty() {
                return None;
            }
            changed.insert((framework, info.id.as_str()), (key, vec![(task, print)]));
        }
        Some(changed)
    }

    /// The new and changed tasks, found by key; marks every task found as seen, so that the
    /// ones left unmarked are gone.
    fn changed_by_key<'a>(&mut self, order: &[(u64, u64)], tasks: &[Task<'a>]) -> Changed<'a> {
        let epoch = self.epoch;
        let mut changed = Changed::default();
        let mut repeated = Vec::new();
        for (&task, &(key, print)) in tasks.iter().zip(order) {
            let (framework, info, _) = task;
            let id = (framework, info.id.as_str());
            if let Some((_, pending)) = changed.get_mut(&id) {
                pending.push((task, print));
                continue;
            }
            let found = self.tasks.find_mut(key, |c| {
                &*c.framework == framework && c.first.task.id == info.id
            });
            match found {
                // The key's first task was unchanged; with this one it is not.
                Some(c) if c.seen == epoch => {
                    repeated.push(id);
                    changed.insert(id, (key, Vec::new()));
                }
                Some(c) => {
                    c.seen = epoch;
                    if !c.more.is_empty() || c.fingerprint != print {
                        changed.insert(id, (key, vec![(task, print)]));
                    }
                }
                None => {
                    changed.insert(id, (key, vec![(task, print)]));
                }
            }
        }
        if !repeated.is_empty() {
            // Rare (see the module's docs): gather every task of those keys again.
            for id in &repeated {
                if let Some((_, pending)) = changed.get_mut(id) {
                    pending.clear();
                }
            }
            for (&task, &(_, print)) in tasks.iter().zip(order) {
                let id = (task.0, task.1.id.as_str());
                if repeated.contains(&id)
                    && let Some((_, pending)) = changed.get_mut(&id)
                {
                    pending.push((task, print));
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

    #[test]
    fn updates_track_a_full_generation() {
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
                        _ => {
                            cluster.agents[rng.below(3)].ips =
                                vec![IpAddr::from([10, 2, 0, rng.below(3) as u8])]
                        }
                    }
                }
                let zones = zones_with_extra(rng.below(4) == 0);
                snapshot = contributions.update(&snapshot, zones, &cluster, &source);
                assert_eq!(
                    served(&snapshot),
                    by_name(&cluster, &source),
                    "seed {seed}, step {step}"
                );
            }
        }
    }
}
