//! The scheduler's decisions, as a pure function of its apps, its assignments and what the
//! agents report: drop tasks that ended, were lost with their agent or never started; kill
//! extras; replace tasks of an older app version as its upgrade strategy allows (old ones stop
//! as new ones become ready); place what is missing, with a backoff per instance slot whose
//! tasks keep ending: a task that replaces one that ended inherits its failures, so a crashing
//! instance backs off however healthy its siblings are.

use std::collections::{BTreeMap, BTreeSet};

use super::placement::{self, Agent};
use crate::app::App;
use crate::app::constraint::{Field, Operator};
use crate::facts::launched::{TaskState, TaskStatus};
use crate::facts::scheduler::Assignment;

/// How long an assignment may go without a status from its agent before it is given up.
pub const LAUNCH_TIMEOUT_MS: u64 = 60_000;
/// First restart delay of an app whose task ended; doubles per failure up to the maximum.
pub const BACKOFF_START_MS: u64 = 1_000;
pub const BACKOFF_MAX_MS: u64 = 60_000;
/// A task that has run this long, not failing its health checks, clears its slot's failures.
pub const BACKOFF_RESET_MS: u64 = 30_000;
/// A node not live but heard from this recently is restarting (its new incarnation is not
/// live yet for the failure detector) or flapping, not down: its tasks are waited for at
/// least this long, whatever the app's `unreachableStrategy`. A restarted agent adopts its
/// tasks; replacing them at once would stop what it adopts.
pub const RESTART_GRACE_MS: u64 = 5_000;

/// An assignment, when it was made, and how many tasks of its slot ended before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    pub assignment: Assignment,
    pub created_ms: u64,
    /// Failures in a row of the instance slot this task fills (0 for a new slot).
    pub failures: u32,
}

/// An instance slot whose task ended, waiting to be filled again.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Backoff {
    pub failures: u32,
    pub not_before_ms: u64,
}

impl Backoff {
    /// The slot of a task that ended after `failures` failures before it, at `now`.
    fn after(failures: u32, now: u64) -> Self {
        let failures = failures + 1;
        let delay = BACKOFF_START_MS
            .saturating_mul(1 << (failures - 1).min(16))
            .min(BACKOFF_MAX_MS);
        Self {
            failures,
            not_before_ms: now + delay,
        }
    }
}

/// What the leader keeps between rounds.
#[derive(Debug, Clone, Default)]
pub struct SchedState {
    pub tasks: BTreeMap<String, Tracked>,
    /// Launches left to make now (a token bucket).
    pub budget: PlacementBudget,
    /// Per app, the slots whose task ended and that wait to be filled, soonest first.
    pub backoff: BTreeMap<String, Vec<Backoff>>,
    /// Apps that could not be placed, with why (shown by the API).
    pub waiting: BTreeMap<String, String>,
}

/// Launches a second the scheduler makes at most, and how many it may make at once: no fault
/// (tasks dying as they start, a flapping agent) can turn into thousands of placements.
pub const PLACEMENTS_PER_SECOND: u64 = 100;
pub const PLACEMENT_BURST: u64 = 500;

/// A token bucket of launches.
#[derive(Debug, Clone, Default)]
pub struct PlacementBudget {
    tokens: u64,
    /// When the tokens were last counted (unix ms); 0 before the first.
    at_ms: u64,
}

impl PlacementBudget {
    /// Takes one launch at `now_ms`, if the budget has one.
    pub fn take(&mut self, now_ms: u64) -> bool {
        let earned = now_ms.saturating_sub(self.at_ms) * PLACEMENTS_PER_SECOND / 1000;
        if earned > 0 || self.at_ms == 0 {
            self.tokens = (self.tokens + earned).min(PLACEMENT_BURST);
            // Keep the remainder of a partly earned token.
            self.at_ms = if self.at_ms == 0 || self.tokens == PLACEMENT_BURST {
                now_ms
            } else {
                self.at_ms + earned * 1000 / PLACEMENTS_PER_SECOND
            };
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// What the agents report.
pub struct World<'a> {
    pub apps: &'a BTreeMap<String, App>,
    /// Live agents that run tasks, with their capacity (usage is computed here).
    pub agents: Vec<Agent>,
    /// Nodes that are up (an assignment to any other node is lost).
    pub up: BTreeSet<String>,
    /// Every task status published by a live node: task id → (node id, status).
    pub statuses: BTreeMap<String, (String, TaskStatus)>,
    pub now_ms: u64,
    /// The masters' region ([`placement`]'s fault-domain rule), if they have one.
    pub home_region: Option<String>,
    /// Nodes found down, with when they were last heard (unix ms): a task there is waited
    /// for its app's `unreachableStrategy` before it is replaced.
    pub down_since: BTreeMap<String, u64>,
    /// Apps a deployment under way changes: their `dependencies` order it (an app's tasks
    /// launch once its dependencies run as asked); a steady app replaces tasks regardless.
    pub deploying: BTreeSet<String>,
}

/// One decision, for the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Launched { task_id: String, node_id: String },
    Dropped { task_id: String, reason: String },
}

/// The tasks a new leader takes over: every live, unfinished task of an app it knows, at the
/// app's current version. Others are left out, so their agents stop them.
pub fn adopt(apps: &BTreeMap<String, App>, world: &World<'_>) -> BTreeMap<String, Tracked> {
    world
        .statuses
        .iter()
        .filter(|(_, (_, s))| !s.state.is_terminal() && s.state != TaskState::TaskKilling)
        .filter_map(|(id, (node, s))| {
            let app = apps.get(&s.app_id).filter(|a| a.version == s.version)?;
            Some((
                id.clone(),
                Tracked {
                    assignment: Assignment {
                        task_id: id.clone(),
                        node_id: node.clone(),
                        app: app.clone(),
                        host_ports: s.host_ports.clone(),
                    },
                    created_ms: s.staged_ms,
                    failures: 0,
                },
            ))
        })
        .collect()
}

/// Whether `app` spreads over zones (`["@zone", "GROUP_BY", ...]`): its new versions roll
/// out one zone at a time.
fn zone_aware(app: &App) -> bool {
    app.constraints
        .iter()
        .any(|c| c.field == Field::Zone && matches!(c.operator, Operator::GroupBy(_)))
}

/// `app` without its zone spreading, for a placement whose zone a rollout chose.
fn without_zone_spread(app: &App) -> App {
    let mut app = app.clone();
    app.constraints
        .retain(|c| !(c.field == Field::Zone && matches!(c.operator, Operator::GroupBy(_))));
    app
}

/// A tracked task with its id.
type Entry<'a> = (&'a String, &'a Tracked);

/// The agent `t` was assigned to, if it is live.
fn agent_of<'a>(agents: &'a mut [Agent], t: &Tracked) -> Option<&'a mut Agent> {
    agents.iter_mut().find(|g| g.id == t.assignment.node_id)
}

/// One round. `new_id` names a new task of an app.
pub fn reconcile(
    state: &mut SchedState,
    world: &World<'_>,
    new_id: &mut dyn FnMut(&App) -> String,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let now = world.now_ms;

    // 1. Drop what is over, lost or no longer wanted as it is.
    let mut dropped = Vec::new();
    let mut proven = Vec::new();
    for (id, t) in &state.tasks {
        let a = &t.assignment;
        let status = world
            .statuses
            .get(id)
            .filter(|(node, _)| *node == a.node_id)
            .map(|(_, s)| s);
        let reason = match (world.apps.get(&a.app.id), status) {
            // Waited for as long as its app's unreachableStrategy says.
            (Some(app), _)
                if !world.up.contains(&a.node_id)
                    && world.down_since.get(&a.node_id).is_some_and(|since| {
                        let wait = (u64::from(app.unreachable_secs) * 1000).max(RESTART_GRACE_MS);
                        now.saturating_sub(*since) < wait
                    }) =>
            {
                None
            }
            _ if !world.up.contains(&a.node_id) => Some("its agent is down".to_owned()),
            (None, _) => Some("its app was removed".to_owned()),
            (_, Some(s)) if s.state.is_terminal() => {
                state
                    .backoff
                    .entry(a.app.id.clone())
                    .or_default()
                    .push(Backoff::after(t.failures, now));
                Some(format!(
                    "it ended: {}{}",
                    s.state.as_str(),
                    s.message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ))
            }
            (_, None) if now.saturating_sub(t.created_ms) > LAUNCH_TIMEOUT_MS => {
                Some("its agent never reported it".to_owned())
            }
            (_, Some(s)) => {
                if t.failures > 0
                    && s.state == TaskState::TaskRunning
                    && s.healthy != Some(false)
                    && s.started_ms
                        .is_some_and(|t| now.saturating_sub(t) >= BACKOFF_RESET_MS)
                {
                    proven.push(id.clone());
                }
                None
            }
            (_, None) => None,
        };
        if let Some(reason) = reason {
            dropped.push((id.clone(), reason));
        }
    }
    for id in proven {
        if let Some(t) = state.tasks.get_mut(&id) {
            t.failures = 0;
        }
    }
    for (task_id, reason) in dropped {
        state.tasks.remove(&task_id);
        changes.push(Change::Dropped { task_id, reason });
    }
    state.backoff.retain(|app, _| world.apps.contains_key(app));
    for slots in state.backoff.values_mut() {
        slots.sort_by_key(|b| b.not_before_ms);
    }

    // 2. Scale each app to its instance count.
    let mut agents = world.agents.clone();
    for t in state.tasks.values() {
        if let Some(agent) = agent_of(&mut agents, t) {
            agent.hold(&t.assignment.app, &t.assignment.host_ports);
        }
    }
    state.waiting.clear();
    let status = |id: &str| world.statuses.get(id).map(|(_, s)| s);
    // Running, not failing (or not yet passing) a health check, and past its readiness
    // check if it has one.
    let ready = |id: &str| {
        status(id).is_some_and(|s| {
            s.state == TaskState::TaskRunning && s.healthy != Some(false) && s.ready != Some(false)
        })
    };
    // Each live agent's zone, for zone-aware rollouts.
    let zone_of: BTreeMap<&str, &str> = world
        .agents
        .iter()
        .filter_map(|a| Some((a.id.as_str(), a.zone.as_deref()?)))
        .collect();
    for app in world.apps.values() {
        // Tasks of the current version, and those of older ones still being replaced.
        let (mut mine, mut retiring): (Vec<Entry<'_>>, Vec<Entry<'_>>) = state
            .tasks
            .iter()
            .filter(|(_, t)| t.assignment.app.id == app.id)
            .partition(|(_, t)| t.assignment.app.version == app.version);
        let want = app.instances as usize;
        // Among tasks of one kind: ready first, then the oldest.
        let rank = |id: &str, t: &Tracked| {
            let running = status(id).is_some_and(|s| s.state == TaskState::TaskRunning);
            (!ready(id), !running, std::cmp::Reverse(t.created_ms))
        };
        let mut stop: Vec<(String, String)> = Vec::new();
        if mine.len() > want {
            mine.sort_by_key(|(id, t)| rank(id, t));
            stop.extend(
                mine.split_off(want)
                    .into_iter()
                    .map(|(id, _)| (id.clone(), format!("{} scaled to {want}", app.id))),
            );
        }
        // Old tasks stop as new ones become ready, keeping the strategy's minimum ready.
        let ready_new = mine.iter().filter(|(id, _)| ready(id)).count();
        let keep_old = app
            .upgrade
            .min_ready(app.instances)
            .min(want)
            .saturating_sub(ready_new)
            .min(retiring.len());
        // A zone-aware rollout (`@zone GROUP_BY`): the zone whose old tasks are replaced
        // now, the first by name that still has some; only they stop, new tasks go there.
        let rolling = zone_aware(app)
            .then(|| {
                retiring
                    .iter()
                    .filter_map(|(_, t)| zone_of.get(t.assignment.node_id.as_str()).copied())
                    .min()
            })
            .flatten();
        let in_rolling = |t: &Tracked| {
            rolling.is_none_or(|z| zone_of.get(t.assignment.node_id.as_str()) == Some(&z))
        };
        if retiring.len() > keep_old {
            let to_stop = retiring.len() - keep_old;
            retiring.sort_by_key(|(id, t)| (!in_rolling(t), rank(id, t)));
            let stoppable = retiring.iter().take_while(|(_, t)| in_rolling(t)).count();
            let stopped: Vec<Entry<'_>> = retiring.drain(..to_stop.min(stoppable)).collect();
            stop.extend(stopped.into_iter().map(|(id, _)| {
                (
                    id.clone(),
                    format!("replaced by version {} of {}", app.version, app.id),
                )
            }));
        }
        let missing = want.saturating_sub(mine.len());
        let mut launches = missing.min(
            app.upgrade
                .max_running(app.instances)
                .saturating_sub(mine.len() + retiring.len()),
        );
        // A deployment starts an app after the apps it depends on run as asked.
        if launches > 0 && world.deploying.contains(&app.id) {
            let unready = app.dependencies.iter().find_map(|dep| {
                let Some(d) = world.apps.get(dep) else {
                    return Some(format!("its dependency {dep} does not exist"));
                };
                let of_dep: Vec<(&String, &Tracked)> = state
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.assignment.app.id == *dep)
                    .collect();
                let done = of_dep
                    .iter()
                    .filter(|(id, t)| t.assignment.app.version == d.version && ready(id))
                    .count();
                (done < d.instances as usize || done < of_dep.len()).then(|| {
                    format!(
                        "waiting for its dependency {dep} to run as asked ({done} of {} ready)",
                        d.instances
                    )
                })
            });
            if let Some(why) = unready {
                state.waiting.insert(app.id.clone(), why);
                launches = 0;
            }
        }
        // In a zone-aware rollout, the rolling zone gets as many new tasks as it had old ones.
        if let Some(zone) = rolling {
            let here = |t: &Tracked| zone_of.get(t.assignment.node_id.as_str()) == Some(&zone);
            let old_here = retiring.iter().filter(|(_, t)| here(t)).count()
                + stop
                    .iter()
                    .filter(|(id, _)| state.tasks.get(id).is_some_and(here))
                    .count();
            let new_here = mine.iter().filter(|(_, t)| here(t)).count();
            launches = launches.min(old_here.saturating_sub(new_here));
            if launches == 0 && missing > 0 {
                state.waiting.insert(
                    app.id.clone(),
                    format!(
                        "zone-aware rollout: replacing the tasks of zone {zone} first ({old_here} old, {new_here} new there)"
                    ),
                );
            }
        }
        // Constraints see only the current version: the old tasks are going away, and
        // counting them would skew where the new ones end up (GROUP_BY would fill the zones
        // the old ones were thin in). Host ports and resources still count them.
        let mut running_on: Vec<String> = mine
            .iter()
            .map(|(_, t)| t.assignment.node_id.clone())
            .collect();
        let old = retiring.len();
        for (task_id, reason) in stop {
            if let Some(t) = state.tasks.remove(&task_id)
                && let Some(agent) = agent_of(&mut agents, &t)
            {
                agent.release(&t.assignment.app, &t.assignment.host_ports);
            }
            changes.push(Change::Dropped { task_id, reason });
        }
        if launches == 0 {
            if missing > 0 && rolling.is_none() && !state.waiting.contains_key(&app.id) {
                state.waiting.insert(
                    app.id.clone(),
                    format!(
                        "upgrade strategy: at most {} task(s) at once, {old} old one(s) still \
                         running until new ones are ready",
                        app.upgrade.max_running(app.instances)
                    ),
                );
            }
            continue;
        }
        // Slots waiting after a failure are only as many as are missing (a scale-down may
        // have taken some); the rest of the missing ones are new slots.
        let slots = state.backoff.entry(app.id.clone()).or_default();
        slots.truncate(missing);
        let fresh = missing - slots.len();
        let due = slots.iter().filter(|b| b.not_before_ms <= now).count();
        if let Some(b) = slots.get(due) {
            state.waiting.insert(
                app.id.clone(),
                format!(
                    "restart backoff after {} failure(s): next launch in {:.1} s",
                    b.failures,
                    (b.not_before_ms - now) as f64 / 1000.0
                ),
            );
        }
        // Due slots first (soonest first), then new ones, as many as may launch now.
        let take = due.min(launches);
        let mut fill: Vec<Backoff> = slots.drain(..take).collect();
        fill.extend(std::iter::repeat_n(
            Backoff::default(),
            fresh.min(launches - take),
        ));
        let mut unfilled = Vec::new();
        for (n, slot) in fill.iter().enumerate() {
            let failures = slot.failures;
            if !state.budget.take(now) {
                state.waiting.insert(
                    app.id.clone(),
                    format!(
                        "placement rate limit: at most {PLACEMENTS_PER_SECOND} launches a second across the cluster"
                    ),
                );
                unfilled.extend(fill[n..].iter().filter(|b| b.failures > 0).cloned());
                break;
            }
            let refs: Vec<&str> = running_on.iter().map(String::as_str).collect();
            // In a zone-aware rollout the zone is the rollout's: placement chooses among its
            // agents, with the app's other constraints.
            let placed = match rolling {
                None => placement::place(app, &agents, &refs, world.home_region.as_deref()),
                Some(zone) => {
                    let (index, local): (Vec<usize>, Vec<Agent>) = agents
                        .iter()
                        .enumerate()
                        .filter(|(_, a)| a.zone.as_deref() == Some(zone))
                        .map(|(i, a)| (i, a.clone()))
                        .unzip();
                    placement::place(
                        &without_zone_spread(app),
                        &local,
                        &refs,
                        world.home_region.as_deref(),
                    )
                    .map(|p| placement::Placement {
                        agent: index[p.agent],
                        ..p
                    })
                }
            };
            match placed {
                Ok(p) => {
                    let agent = &mut agents[p.agent];
                    agent.hold(app, &p.host_ports);
                    let task_id = new_id(app);
                    state.tasks.insert(
                        task_id.clone(),
                        Tracked {
                            assignment: Assignment {
                                task_id: task_id.clone(),
                                node_id: agent.id.clone(),
                                app: app.clone(),
                                host_ports: p.host_ports,
                            },
                            created_ms: now,
                            failures,
                        },
                    );
                    running_on.push(agent.id.clone());
                    changes.push(Change::Launched {
                        task_id,
                        node_id: agent.id.clone(),
                    });
                }
                Err(e) => {
                    state.waiting.insert(app.id.clone(), e.0);
                    unfilled.extend(fill[n..].iter().filter(|b| b.failures > 0).cloned());
                    break;
                }
            }
        }
        // Failed slots not placed this round stay as they were (due, with their failures):
        // the kept task set does not change while an app waits for room.
        state
            .backoff
            .entry(app.id.clone())
            .or_default()
            .extend(unfilled);
    }
    state.backoff.retain(|_, slots| !slots.is_empty());
    changes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::app::{Network, parse};

    fn app(id: &str, instances: u32, version: &str) -> App {
        parse(
            &json!({"id": id, "cmd": "x", "instances": instances, "cpus": 1, "mem": 10}),
            None,
            version,
        )
        .unwrap()
        .app
    }

    fn agent(id: &str) -> Agent {
        Agent {
            containers: false,
            id: id.into(),
            hostname: id.into(),
            region: None,
            zone: None,
            attributes: Default::default(),
            role: "*".into(),
            cpus: 2.0,
            mem: 100.0,
            used_cpus: 0.0,
            used_mem: 0.0,
            used_ports: BTreeSet::new(),
        }
    }

    fn status(t: &Tracked, state: TaskState) -> (String, TaskStatus) {
        let a = &t.assignment;
        (
            a.node_id.clone(),
            TaskStatus {
                task_id: a.task_id.clone(),
                app_id: a.app.id.clone(),
                version: a.app.version.clone(),
                state,
                healthy: None,
                health_pending: false,
                ip: None,
                ip6: None,
                network: Network::Host,
                ports: vec![],
                host_ports: a.host_ports.clone(),
                cpus: a.app.cpus,
                mem: a.app.mem,
                staged_ms: t.created_ms,
                started_ms: Some(t.created_ms),
                message: Some("exit status 1".into()),
                ready: None,
            },
        )
    }

    struct Sim {
        apps: BTreeMap<String, App>,
        agents: Vec<Agent>,
        up: BTreeSet<String>,
        statuses: BTreeMap<String, (String, TaskStatus)>,
        down_since: BTreeMap<String, u64>,
        state: SchedState,
        now: u64,
        next: u32,
    }

    impl Sim {
        fn new(apps: &[App], agents: &[&str]) -> Self {
            Self {
                apps: apps.iter().map(|a| (a.id.clone(), a.clone())).collect(),
                agents: agents.iter().map(|a| agent(a)).collect(),
                up: agents.iter().map(|a| (*a).to_owned()).collect(),
                statuses: BTreeMap::new(),
                down_since: BTreeMap::new(),
                state: SchedState::default(),
                now: 1_000_000,
                next: 0,
            }
        }

        fn round(&mut self) -> Vec<Change> {
            let world = World {
                apps: &self.apps,
                agents: self
                    .agents
                    .iter()
                    .filter(|a| self.up.contains(&a.id))
                    .cloned()
                    .collect(),
                up: self.up.clone(),
                statuses: self.statuses.clone(),
                now_ms: self.now,
                home_region: Some("r1".into()),
                deploying: self.apps.keys().cloned().collect(),
                down_since: self.down_since.clone(),
            };
            let next = &mut self.next;
            let mut new_id = |a: &App| {
                *next += 1;
                format!("{}.{next}", a.id.trim_start_matches('/'))
            };
            reconcile(&mut self.state, &world, &mut new_id)
        }

        /// Every assigned task reports `state`.
        fn report(&mut self, state: TaskState) {
            for (id, t) in &self.state.tasks {
                self.statuses.insert(id.clone(), status(t, state));
            }
        }

        fn on(&self, node: &str) -> usize {
            self.state
                .tasks
                .values()
                .filter(|t| t.assignment.node_id == node)
                .count()
        }
    }

    #[test]
    fn a_zone_spread_app_rolls_out_one_zone_at_a_time() {
        let zoned = |version: &str| {
            parse(
                &json!({"id": "/web", "cmd": "x", "instances": 4, "cpus": 0.5, "mem": 10,
                        "constraints": [["@zone", "GROUP_BY"]]}),
                None,
                version,
            )
            .unwrap()
            .app
        };
        let mut sim = Sim::new(&[zoned("v1")], &["a", "b", "c", "d"]);
        for (agent, zone) in sim.agents.iter_mut().zip(["z1", "z1", "z2", "z2"]) {
            agent.zone = Some(zone.into());
        }
        sim.round();
        sim.report(TaskState::TaskRunning);
        let zone = |t: &Tracked| {
            match t.assignment.node_id.as_str() {
                "a" | "b" => "z1",
                _ => "z2",
            }
            .to_owned()
        };
        let by_version = |sim: &Sim, v: &str| -> BTreeMap<String, usize> {
            let mut m = BTreeMap::new();
            for t in sim
                .state
                .tasks
                .values()
                .filter(|t| t.assignment.app.version == v)
            {
                *m.entry(zone(t)).or_default() += 1;
            }
            m
        };
        assert_eq!(
            by_version(&sim, "v1"),
            BTreeMap::from([("z1".into(), 2), ("z2".into(), 2)])
        );

        sim.apps.insert("/web".into(), zoned("v2"));
        let mut seen_both_zones_rolling = false;
        for _ in 0..10 {
            sim.round();
            let (old, new) = (by_version(&sim, "v1"), by_version(&sim, "v2"));
            // New tasks appear in z2 only once z1 has no old task left.
            if new.contains_key("z2") && old.contains_key("z1") {
                seen_both_zones_rolling = true;
            }
            sim.report(TaskState::TaskRunning);
        }
        assert!(
            !seen_both_zones_rolling,
            "zone z2 rolled while z1 still had old tasks"
        );
        assert_eq!(by_version(&sim, "v1"), BTreeMap::new());
        assert_eq!(
            by_version(&sim, "v2"),
            BTreeMap::from([("z1".into(), 2), ("z2".into(), 2)])
        );
    }

    #[test]
    fn an_unreachable_task_is_waited_for_as_its_app_says() {
        let mut patient = app("/web", 1, "v1");
        patient.unreachable_secs = 60;
        let mut sim = Sim::new(&[patient, app("/db", 1, "v1")], &["a", "b"]);
        sim.round();
        sim.report(TaskState::TaskRunning);
        let on_a: Vec<String> = sim
            .state
            .tasks
            .values()
            .filter(|t| t.assignment.node_id == "a")
            .map(|t| t.assignment.app.id.clone())
            .collect();
        assert_eq!(on_a.len(), 1, "one task per agent: {on_a:?}");
        // Agent a goes down now: /web waits 60 s, /db only the restart grace.
        sim.up.remove("a");
        sim.down_since.insert("a".into(), sim.now);
        sim.statuses.retain(|_, (node, _)| node != "a");
        let dropped = |c: &[Change]| {
            c.iter()
                .filter(|c| matches!(c, Change::Dropped { .. }))
                .count()
        };
        let changes = sim.round();
        assert_eq!(
            dropped(&changes),
            0,
            "a restarting agent is waited for: {changes:?}"
        );
        sim.now += RESTART_GRACE_MS;
        let changes = sim.round();
        let waits = on_a[0] == "/web";
        assert_eq!(dropped(&changes), usize::from(!waits), "{changes:?}");
        sim.report(TaskState::TaskRunning);
        sim.now += 61_000;
        let changes = sim.round();
        assert_eq!(dropped(&changes), usize::from(waits), "{changes:?}");
    }

    #[test]
    fn a_new_task_not_yet_ready_keeps_the_old_one() {
        let mut sim = Sim::new(&[app("/web", 1, "v1")], &["a", "b"]);
        sim.round();
        sim.report(TaskState::TaskRunning);
        sim.apps.insert("/web".into(), app("/web", 1, "v2"));
        sim.round();
        sim.report(TaskState::TaskRunning);
        for (_, s) in sim.statuses.values_mut().filter(|(_, s)| s.version == "v2") {
            s.ready = Some(false);
        }
        sim.round();
        assert_eq!(
            sim.state.tasks.len(),
            2,
            "the v1 task stays while v2's is not ready"
        );
        for (_, s) in sim.statuses.values_mut() {
            s.ready = None;
        }
        sim.round();
        assert_eq!(sim.state.tasks.len(), 1);
    }

    #[test]
    fn a_deployment_starts_an_app_after_its_dependencies() {
        let web = parse(
            &json!({"id": "/web", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 10,
                    "dependencies": ["/db"]}),
            None,
            "v1",
        )
        .unwrap()
        .app;
        let mut sim = Sim::new(&[app("/db", 2, "v1"), web], &["a", "b"]);
        let launched = |changes: &[Change]| {
            changes
                .iter()
                .filter_map(|c| match c {
                    Change::Launched { task_id, .. } => {
                        Some(task_id.split('.').next().unwrap().to_owned())
                    }
                    Change::Dropped { .. } => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(launched(&sim.round()), ["db", "db"]);
        assert!(
            sim.state.waiting["/web"].contains("dependency /db"),
            "{:?}",
            sim.state.waiting
        );
        assert!(launched(&sim.round()).is_empty(), "db still staging");
        sim.report(TaskState::TaskRunning);
        assert_eq!(launched(&sim.round()), ["web"]);
    }

    #[test]
    fn places_scales_up_and_down() {
        let mut sim = Sim::new(&[app("/web", 3, "v1")], &["a", "b"]);
        assert_eq!(sim.round().len(), 3);
        assert_eq!((sim.on("a"), sim.on("b")), (2, 1));
        sim.report(TaskState::TaskRunning);
        assert!(sim.round().is_empty(), "stable once placed");

        sim.apps.get_mut("/web").unwrap().instances = 4;
        assert_eq!(sim.round().len(), 1);
        assert_eq!(sim.state.tasks.len(), 4);
        // Two cpus per agent: a fifth task has nowhere to go, and the app says why.
        sim.apps.get_mut("/web").unwrap().instances = 5;
        assert!(sim.round().is_empty());
        assert!(sim.state.waiting["/web"].contains("too few free cpus"));

        sim.apps.get_mut("/web").unwrap().instances = 1;
        let dropped = sim.round();
        assert_eq!(dropped.len(), 3);
        assert!(
            matches!(&dropped[0], Change::Dropped { reason, .. } if reason.contains("scaled to 1"))
        );
        // The one kept is a running one, not the newest (which never reported).
        let kept = sim.state.tasks.keys().next().unwrap().clone();
        assert_eq!(sim.statuses[&kept].1.state, TaskState::TaskRunning);
    }

    #[test]
    fn tasks_of_a_dead_agent_are_placed_again() {
        let mut sim = Sim::new(&[app("/web", 2, "v1")], &["a", "b"]);
        sim.round();
        sim.report(TaskState::TaskRunning);
        sim.up.remove("b");
        sim.statuses.retain(|_, (node, _)| node != "b");
        let changes = sim.round();
        assert!(
            changes.iter().any(
                |c| matches!(c, Change::Dropped { reason, .. } if reason == "its agent is down")
            )
        );
        assert_eq!(sim.on("a"), 2);
        assert_eq!(sim.on("b"), 0);
    }

    #[test]
    fn ended_tasks_restart_with_a_growing_backoff() {
        let mut sim = Sim::new(&[app("/crash", 1, "v1")], &["a"]);
        sim.round();
        sim.report(TaskState::TaskFailed);
        let changes = sim.round();
        assert!(
            matches!(&changes[0], Change::Dropped { reason, .. } if reason.contains("TASK_FAILED (exit status 1)"))
        );
        assert!(sim.state.tasks.is_empty(), "no relaunch inside the backoff");
        assert!(sim.state.waiting["/crash"].contains("backoff"));
        sim.now += BACKOFF_START_MS;
        assert_eq!(sim.round().len(), 1, "relaunched after 1 s");
        sim.report(TaskState::TaskFailed);
        sim.round();
        assert_eq!(sim.state.backoff["/crash"][0].failures, 2);
        sim.now += BACKOFF_START_MS;
        assert!(sim.round().is_empty(), "the second wait is 2 s");
        sim.now += BACKOFF_START_MS;
        assert_eq!(sim.round().len(), 1);
        let task = |sim: &Sim| sim.state.tasks.values().next().unwrap().failures;
        assert_eq!(task(&sim), 2, "the new task carries its slot's failures");
        // Running long enough clears them.
        sim.report(TaskState::TaskRunning);
        sim.now += BACKOFF_RESET_MS + 1;
        sim.round();
        assert_eq!(task(&sim), 0);
        assert!(!sim.state.backoff.contains_key("/crash"));
    }

    #[test]
    fn launches_are_rate_limited_with_a_burst() {
        let mut sim = Sim::new(&[app("/many", 2000, "v1")], &["a"]);
        for a in &mut sim.agents {
            a.cpus = 1e6;
            a.mem = 1e9;
        }
        assert_eq!(sim.round().len() as u64, PLACEMENT_BURST);
        assert!(sim.state.waiting["/many"].contains("rate limit"));
        assert!(sim.round().is_empty(), "no token left in the same instant");
        sim.now += 1000;
        assert_eq!(sim.round().len() as u64, PLACEMENTS_PER_SECOND);
        sim.now += 15;
        assert_eq!(sim.round().len(), 1, "tokens come back at 100 a second");
    }

    #[test]
    fn a_failed_slot_waiting_for_room_stays_as_it_was() {
        let mut sim = Sim::new(&[app("/crash", 1, "v1")], &["a"]);
        sim.round();
        sim.report(TaskState::TaskFailed);
        sim.round();
        // Its only agent goes away while the slot backs off: due later, but nowhere to go.
        sim.up.clear();
        sim.now += BACKOFF_START_MS;
        sim.round();
        let waiting = sim.state.backoff["/crash"].clone();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].failures, 1);
        // Rounds go by: the slot (kept in Raft by the leader) is not rewritten each time.
        for _ in 0..3 {
            sim.now += 500;
            assert!(sim.round().is_empty());
            assert_eq!(sim.state.backoff["/crash"], waiting);
        }
    }

    #[test]
    fn a_crashing_instance_backs_off_however_healthy_its_sibling() {
        let mut sim = Sim::new(&[app("/web", 2, "v1")], &["a", "b"]);
        sim.round();
        sim.report(TaskState::TaskRunning);
        sim.now += BACKOFF_RESET_MS + 1;
        sim.round();
        let healthy = sim.state.tasks.keys().next().unwrap().clone();
        for (failures, delay) in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 8_000), (5, 16_000)] {
            let crashing: Vec<String> = sim
                .state
                .tasks
                .keys()
                .filter(|id| **id != healthy)
                .cloned()
                .collect();
            for id in crashing {
                let failed = status(&sim.state.tasks[&id], TaskState::TaskFailed);
                sim.statuses.insert(id, failed);
            }
            sim.round();
            assert_eq!(sim.state.backoff["/web"][0].failures, failures);
            sim.now += delay - 1;
            assert!(
                sim.round().is_empty(),
                "failure {failures}: not before {delay} ms"
            );
            sim.now += 1;
            assert_eq!(
                sim.round().len(),
                1,
                "failure {failures}: relaunched after {delay} ms"
            );
            // The sibling has run for long, healthy: that clears nothing of the new task's.
            sim.report(TaskState::TaskRunning);
            sim.now += 1_000;
            sim.round();
        }
        assert_eq!(sim.state.tasks[&healthy].failures, 0);
    }

    /// Ids of the tasks at `version`.
    fn at(sim: &Sim, version: &str) -> Vec<String> {
        sim.state
            .tasks
            .iter()
            .filter(|(_, t)| t.assignment.app.version == version)
            .map(|(id, _)| id.clone())
            .collect()
    }

    #[test]
    fn a_new_version_starts_before_the_old_one_stops() {
        let mut sim = Sim::new(&[app("/web", 2, "v1")], &["a", "b", "c"]);
        sim.agents.iter_mut().for_each(|a| a.cpus = 4.0);
        sim.round();
        sim.report(TaskState::TaskRunning);
        sim.apps.insert("/web".into(), app("/web", 2, "v2"));
        // Marathon's default strategy: every new task at once, no old one stopped yet.
        let changes = sim.round();
        assert!(
            changes.iter().all(|c| matches!(c, Change::Launched { .. })),
            "{changes:?}"
        );
        assert_eq!((at(&sim, "v1").len(), at(&sim, "v2").len()), (2, 2));
        // One new task ready: one old one stops.
        let new = at(&sim, "v2");
        let t = sim.state.tasks[&new[0]].clone();
        sim.statuses
            .insert(new[0].clone(), status(&t, TaskState::TaskRunning));
        let changes = sim.round();
        assert!(
            matches!(&changes[..], [Change::Dropped { reason, .. }] if reason.contains("replaced by version v2")),
            "{changes:?}"
        );
        assert_eq!(at(&sim, "v1").len(), 1);
        // Both ready: the last old one stops, and nothing else happens.
        sim.report(TaskState::TaskRunning);
        assert_eq!(sim.round().len(), 1);
        assert_eq!((at(&sim, "v1").len(), at(&sim, "v2").len()), (0, 2));
        assert!(sim.round().is_empty());

        sim.apps.clear();
        assert_eq!(sim.round().len(), 2);
        assert!(sim.state.tasks.is_empty());
    }

    #[test]
    fn a_strategy_without_over_capacity_stops_old_tasks_first() {
        let strategy = |version: &str| {
            parse(
                &json!({"id": "/web", "cmd": "x", "instances": 4, "cpus": 1, "mem": 10,
                        "upgradeStrategy": {"minimumHealthCapacity": 0.5,
                                            "maximumOverCapacity": 0}}),
                None,
                version,
            )
            .unwrap()
            .app
        };
        let mut sim = Sim::new(&[strategy("v1")], &["a", "b"]);
        sim.round();
        sim.report(TaskState::TaskRunning);
        sim.apps.insert("/web".into(), strategy("v2"));
        // Two must stay ready and at most four run: two old stop, two new start.
        sim.round();
        assert_eq!((at(&sim, "v1").len(), at(&sim, "v2").len()), (2, 2));
        // Not ready yet: nothing more moves, and the app says why.
        assert!(sim.round().is_empty());
        assert!(sim.state.waiting["/web"].contains("old one(s) still running"));
        sim.report(TaskState::TaskRunning);
        sim.round();
        sim.report(TaskState::TaskRunning);
        sim.round();
        assert_eq!((at(&sim, "v1").len(), at(&sim, "v2").len()), (0, 4));
    }

    #[test]
    fn unreported_assignments_time_out() {
        let mut sim = Sim::new(&[app("/web", 1, "v1")], &["a"]);
        sim.round();
        sim.now += LAUNCH_TIMEOUT_MS + 1;
        let changes = sim.round();
        assert!(
            matches!(&changes[0], Change::Dropped { reason, .. } if reason.contains("never reported"))
        );
        assert_eq!(sim.state.tasks.len(), 1, "and placed again");
    }

    #[test]
    fn a_new_leader_adopts_running_tasks_of_known_versions() {
        let mut sim = Sim::new(&[app("/web", 2, "v1")], &["a", "b"]);
        sim.round();
        sim.report(TaskState::TaskRunning);
        let before: BTreeSet<String> = sim.state.tasks.keys().cloned().collect();
        // A stray task of an app the new leader does not know.
        let mut stray = sim.statuses.values().next().unwrap().clone();
        stray.1.task_id = "gone.1".into();
        stray.1.app_id = "/gone".into();
        sim.statuses.insert("gone.1".into(), stray);
        let world = World {
            apps: &sim.apps,
            agents: sim.agents.clone(),
            up: sim.up.clone(),
            statuses: sim.statuses.clone(),
            now_ms: sim.now,
            home_region: None,
            deploying: BTreeSet::new(),
            down_since: BTreeMap::new(),
        };
        let adopted = adopt(&sim.apps, &world);
        let ids: BTreeSet<String> = adopted.keys().cloned().collect();
        assert_eq!(ids, before);
        sim.state = SchedState {
            tasks: adopted,
            ..SchedState::default()
        };
        assert!(sim.round().is_empty(), "nothing to do after adoption");
    }
}
