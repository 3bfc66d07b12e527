//! Records kept by who contributed them, so that a new cluster state costs what changed in it.
//!
//! [`Contributions`] remembers, for every task, what its records were made from (the task, its
//! framework's name and its agent's addresses) and the records themselves, and for every name
//! how many contributors gave it each record. A new [`Cluster`] is compared with that task by
//! task: only tasks that changed, appeared or went away have their records made again, and the
//! names whose records changed come out as changes for [`crate::zone::Snapshot::apply`]. The
//! records of the cluster as a whole (frameworks, agents, masters) are few; they are made again
//! every time and compared as one more contributor.
//!
//! Tasks are told apart by framework name and task id. Two tasks that share both (Mesos keeps
//! task ids unique per framework, so only a confused master sends that) are one contributor
//! with the records of both.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::records::{Cluster, Record, RecordData, RecordSource, TaskInfo, agent_addresses};
use crate::zone::NameRecords;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// What one task gave, and a fingerprint of what it was made of.
#[derive(Debug)]
struct Contribution {
    /// Of the task, its framework's name and its agent's addresses (see [`fingerprint`]).
    fingerprint: u64,
    /// Tasks with this key; with more than one the fingerprint is not used.
    tasks: u32,
    records: Vec<Record>,
    /// The last update that looked the task up.
    seen: u64,
}

/// How many contributors gave a name each of its records, sorted by record. A name has a
/// few records, so a sorted vector is both smaller and quicker than a map.
#[derive(Debug, Default)]
struct Counts(Vec<(RecordData, u32)>);

impl Counts {
    fn records(&self) -> NameRecords {
        let mut records = NameRecords::default();
        // Sorted by kind, then value: each kind comes out in order.
        for (data, _) in &self.0 {
            match data {
                RecordData::A(ip) => records.a.push(*ip),
                RecordData::Aaaa(ip) => records.aaaa.push(*ip),
                RecordData::Srv(target) => records.srv.push(target.clone()),
            }
        }
        records
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Counts one contributor of `data` in or out; returns whether it appeared or disappeared.
    fn bump(&mut self, data: &RecordData, add: bool) -> bool {
        match (self.0.binary_search_by(|(d, _)| d.cmp(data)), add) {
            (Ok(i), true) => {
                self.0[i].1 += 1;
                false
            }
            (Err(i), true) => {
                self.0.insert(i, (data.clone(), 1));
                true
            }
            (Ok(i), false) if self.0[i].1 == 1 => {
                self.0.remove(i);
                true
            }
            (Ok(i), false) => {
                self.0[i].1 -= 1;
                false
            }
            (Err(_), false) => false,
        }
    }
}

/// The records of a cluster, by contributor. Made for one [`RecordSource`]: a source with other
/// settings needs new contributions.
#[derive(Debug, Default)]
pub struct Contributions {
    /// By framework name, then task id.
    tasks: FastMap<String, FastMap<String, Contribution>>,
    shared: Vec<Record>,
    counts: FastMap<String, Counts>,
    /// The key hash and fingerprint of the last update's tasks, in the cluster's order.
    order: Vec<(u64, u64)>,
    /// Counts the updates; a contribution not seen in the current one is gone.
    epoch: u64,
}

/// Tasks by framework name and task id.
type TaskKey<'a> = (&'a str, &'a str);
/// A task that gets records: its framework's name, itself, its agent's addresses.
type Task<'a> = (&'a str, &'a TaskInfo, &'a [IpAddr]);
/// Tasks to make records of again, by key, with their fingerprints.
type Changed<'a> = FastMap<TaskKey<'a>, Vec<(&'a TaskInfo, &'a [IpAddr], u64)>>;

/// A 64-bit hash of everything a task's records are made of. Two versions of a task that
/// differ yet hash alike would keep the old records; at 2^-64 per change that is left to
/// chance, as the fingerprint spares each update from reading the stored tasks back.
fn fingerprint(framework: &str, task: &TaskInfo, agent_ips: &[IpAddr]) -> u64 {
    use std::hash::BuildHasher;
    FINGERPRINT.hash_one((framework, task, agent_ips))
}

/// Fixed, so fingerprints compare across updates.
const FINGERPRINT: foldhash::quality::FixedState =
    foldhash::quality::FixedState::with_seed(0x636f_6e74_7269_6275);

impl Contributions {
    /// Takes in the new state of the cluster and returns every name whose records changed, with
    /// its records now (empty when it has none left), for [`crate::zone::Snapshot::apply`].
    ///
    /// One pass over the tasks compares each with what it was made of last time; only the new
    /// and changed ones are made again. At 100,000 tasks that pass is what an update costs.
    pub fn update(
        &mut self,
        cluster: &Cluster,
        source: &impl RecordSource,
    ) -> Vec<(String, NameRecords)> {
        self.epoch += 1;
        let epoch = self.epoch;
        let mut touched = FastSet::default();

        let mut shared = Vec::new();
        source.shared(cluster, &mut shared);
        if shared != self.shared {
            let old = std::mem::replace(&mut self.shared, shared.clone());
            self.replace(old, shared, &mut touched);
        }

        // The tasks that get records, in the cluster's order, with their fingerprints.
        use std::hash::BuildHasher;
        let agents = agent_addresses(cluster);
        let mut tasks = Vec::with_capacity(self.order.len());
        let mut order = Vec::with_capacity(self.order.len());
        for f in &cluster.frameworks {
            for task in f.tasks.iter().filter(|t| t.is_running) {
                if let Some(ips) = agents.get(task.agent_id.as_str()) {
                    let key = FINGERPRINT.hash_one((&f.name, &task.id));
                    order.push((key, fingerprint(&f.name, task, ips)));
                    tasks.push((f.name.as_str(), task, ips.as_slice()));
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
                let mut gone = Vec::new();
                for tasks in self.tasks.values_mut() {
                    tasks.retain(|_, c| {
                        let keep = c.seen == epoch;
                        if !keep {
                            gone.append(&mut c.records);
                        }
                        keep
                    });
                }
                self.tasks.retain(|_, tasks| !tasks.is_empty());
                self.replace(gone, Vec::new(), &mut touched);
                changed
            }
        };
        self.order = order;

        let mut records = Vec::new();
        for ((framework, id), inputs) in changed {
            for &(task, ips, _) in &inputs {
                source.task(framework, task, ips, &mut records);
            }
            let old = self.tasks.get_mut(framework).and_then(|t| t.remove(id));
            let old = old.map(|c| c.records).unwrap_or_default();
            let new = self.replace(old, std::mem::take(&mut records), &mut touched);
            let contribution = Contribution {
                fingerprint: inputs.first().map_or(0, |&(_, _, f)| f),
                tasks: u32::try_from(inputs.len()).unwrap_or(u32::MAX),
                records: new,
                seen: epoch,
            };
            self.tasks
                .entry(framework.to_owned())
                .or_default()
                .insert(id.to_owned(), contribution);
        }

        touched
            .into_iter()
            .map(|name| {
                let records = match self.counts.get(&name) {
                    Some(counts) if counts.is_empty() => {
                        self.counts.remove(&name);
                        NameRecords::default()
                    }
                    Some(counts) => counts.records(),
                    None => NameRecords::default(),
                };
                (name, records)
            })
            .collect()
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
            let (framework, task, ips) = tasks[k];
            // One of several tasks with its key: those are compared by key.
            let c = self.tasks.get(framework)?.get(task.id.as_str())?;
            if c.tasks != 1 {
                return None;
            }
            changed.insert((framework, task.id.as_str()), vec![(task, ips, print)]);
        }
        Some(changed)
    }

    /// The new and changed tasks, found by key; marks every task found as seen, so that the
    /// ones left unmarked are gone.
    fn changed_by_key<'a>(&mut self, order: &[(u64, u64)], tasks: &[Task<'a>]) -> Changed<'a> {
        let epoch = self.epoch;
        let mut changed = Changed::default();
        let mut repeated = Vec::new();
        for (&(framework, task, ips), &(_, print)) in tasks.iter().zip(order) {
            let key = (framework, task.id.as_str());
            if let Some(pending) = changed.get_mut(&key) {
                pending.push((task, ips, print));
                continue;
            }
            match self.tasks.get_mut(framework).and_then(|k| k.get_mut(key.1)) {
                // The key's first task was unchanged; with this one it is not.
                Some(c) if c.seen == epoch => {
                    repeated.push(key);
                    changed.insert(key, Vec::new());
                }
                Some(c) => {
                    c.seen = epoch;
                    if c.tasks != 1 || c.fingerprint != print {
                        changed.insert(key, vec![(task, ips, print)]);
                    }
                }
                None => {
                    changed.insert(key, vec![(task, ips, print)]);
                }
            }
        }
        if !repeated.is_empty() {
            // Rare (see the module's docs): gather every task of those keys again.
            for key in &repeated {
                changed.insert(*key, Vec::new());
            }
            for (&(framework, task, ips), &(_, print)) in tasks.iter().zip(order) {
                let key = (framework, task.id.as_str());
                if repeated.contains(&key)
                    && let Some(pending) = changed.get_mut(&key)
                {
                    pending.push((task, ips, print));
                }
            }
        }
        changed
    }

    /// Counts a contributor's `old` records out and its `new` ones in, leaving alone the ones
    /// in both (a task that moved keeps most of its records); notes the names whose set of
    /// records changed. Returns `new`, sorted.
    fn replace(
        &mut self,
        mut old: Vec<Record>,
        mut new: Vec<Record>,
        touched: &mut FastSet<String>,
    ) -> Vec<Record> {
        old.sort_unstable();
        new.sort_unstable();
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            match (old.get(i), new.get(j)) {
                (Some(o), Some(n)) if o == n => {
                    i += 1;
                    j += 1;
                }
                (Some(o), Some(n)) if o < n => {
                    self.count(o, false, touched);
                    i += 1;
                }
                (Some(o), None) => {
                    self.count(o, false, touched);
                    i += 1;
                }
                (_, Some(n)) => {
                    self.count(n, true, touched);
                    j += 1;
                }
                (None, None) => break,
            }
        }
        new
    }

    /// Counts one record in (or out), noting its name if its set of records changed.
    fn count(&mut self, record: &Record, add: bool, touched: &mut FastSet<String>) {
        let counts = match self.counts.get_mut(&record.name) {
            Some(counts) => counts,
            None if add => self.counts.entry(record.name.clone()).or_default(),
            None => return,
        };
        let changed = counts.bump(&record.data, add);
        if changed && !touched.contains(&record.name) {
            touched.insert(record.name.clone());
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
            agent_id: format!("agent{}", rng.below(4)),
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
                    tasks: (0..rng.below(6)).map(|_| random_task(rng)).collect(),
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
        cluster.frameworks[0].tasks = vec![first, second.clone()];
        let source = settings();
        let mut contributions = Contributions::default();
        let mut tracked: BTreeMap<String, NameRecords> = BTreeMap::new();
        for step in 0..2 {
            for (name, records) in contributions.update(&cluster, &source) {
                if records.is_empty() {
                    tracked.remove(&name);
                } else {
                    tracked.insert(name, records);
                }
            }
            assert_eq!(tracked, by_name(&cluster, &source), "step {step}");
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
            let mut tracked: BTreeMap<String, NameRecords> = BTreeMap::new();
            let mut cluster = random_cluster(&mut rng);
            for step in 0..20 {
                // Mostly small edits, sometimes a new cluster altogether.
                if rng.below(5) == 0 {
                    cluster = random_cluster(&mut rng);
                } else if let Some(f) = cluster.frameworks.first_mut() {
                    match rng.below(4) {
                        0 => f.tasks.push(random_task(&mut rng)),
                        1 if !f.tasks.is_empty() => {
                            let i = rng.below(f.tasks.len());
                            f.tasks.remove(i);
                        }
                        2 if !f.tasks.is_empty() => {
                            let i = rng.below(f.tasks.len());
                            f.tasks[i].ips = vec![IpAddr::from([9, 9, 9, rng.below(3) as u8])];
                        }
                        _ => {
                            cluster.agents[rng.below(3)].ips =
                                vec![IpAddr::from([10, 2, 0, rng.below(3) as u8])]
                        }
                    }
                }
                for (name, records) in contributions.update(&cluster, &source) {
                    if records.is_empty() {
                        tracked.remove(&name);
                    } else {
                        tracked.insert(name, records);
                    }
                }
                assert_eq!(
                    tracked,
                    by_name(&cluster, &source),
                    "seed {seed}, step {step}"
                );
            }
        }
    }
}
