//! Where a new task goes: the live agents that have room and satisfy every constraint, then
//! the one running the fewest of the app's tasks, then the least loaded. Pure and
//! deterministic: the same inputs always choose the same agent.
//!
//! Fault domains as DC/OS 1.11 has them: the cluster's home region is the masters' region;
//! an app without an `@region` constraint runs only there (an agent with no region counts
//! as home), never in a remote region, replacements included; a constraint on `@region`
//! (any operator) is what places an app remotely, on purpose.

use std::collections::{BTreeMap, BTreeSet};

use crate::app::constraint::{Field, Operator};
use crate::app::{App, Network};

/// Host ports handed out to host-network tasks that do not require their own, as Mesos agents
/// offer them by default.
pub const HOST_PORT_RANGE: std::ops::Range<u16> = 31000..32000;

/// An agent as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: String,
    pub hostname: String,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// The agent's attributes (`attributes` in its config).
    pub attributes: BTreeMap<String, String>,
    /// The Mesos role of its resources (`*`, `slave_public`).
    pub role: String,
    /// Whether it runs container apps (has runc and podman).
    pub containers: bool,
    pub cpus: f64,
    pub mem: f64,
    pub used_cpus: f64,
    pub used_mem: f64,
    /// Host ports taken by tasks on this agent.
    pub used_ports: BTreeSet<u16>,
}

impl Agent {
    /// Counts a task of `app` holding `host_ports` here.
    pub fn hold(&mut self, app: &App, host_ports: &[u16]) {
        self.used_cpus += app.cpus;
        self.used_mem += app.mem;
        // 0: an overlay port with no host port.
        self.used_ports
            .extend(host_ports.iter().copied().filter(|p| *p != 0));
    }

    /// Gives back what [`Agent::hold`] counted.
    pub fn release(&mut self, app: &App, host_ports: &[u16]) {
        self.used_cpus -= app.cpus;
        self.used_mem -= app.mem;
        for p in host_ports {
            self.used_ports.remove(p);
        }
    }

    fn field(&self, field: &Field) -> Option<&str> {
        match field {
            Field::Hostname => Some(&self.hostname),
            Field::Region => self.region.as_deref(),
            Field::Zone => self.zone.as_deref(),
            Field::Attribute(name) => self.attributes.get(name).map(String::as_str),
        }
    }
}

/// The chosen agent (index into the slice given) and the host ports the task gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub agent: usize,
    pub host_ports: Vec<u16>,
}

/// Why nothing fits: how many agents each reason ruled out, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaceable(pub String);

/// Whether `app` may run on `agent` when the masters are in region `home`.
pub fn in_its_region(app: &App, agent: &Agent, home: Option<&str>) -> bool {
    let placed_by_region = app.constraints.iter().any(|c| c.field == Field::Region);
    match (home, agent.region.as_deref()) {
        (Some(home), Some(region)) => placed_by_region || region == home,
        _ => true,
    }
}

/// Places one more task of `app`; `running_on` holds the agent id of each of the app's
/// current tasks, `home` is the masters' region.
pub fn place(
    app: &App,
    agents: &[Agent],
    running_on: &[&str],
    home: Option<&str>,
) -> Result<Placement, Unplaceable> {
    let count_on = |id: &str| running_on.iter().filter(|r| **r == id).count();
    let by_id: BTreeMap<&str, &Agent> = agents.iter().map(|a| (a.id.as_str(), a)).collect();
    // How many of the app's tasks each value of a field has.
    let counts = |field: &Field| {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for id in running_on {
            if let Some(v) = by_id.get(id).and_then(|a| a.field(field)) {
                *counts.entry(v).or_default() += 1;
            }
        }
        counts
    };

    let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
    let mut reject = |why: String| *rejected.entry(why).or_default() += 1;
    let mut fits: Vec<(usize, Vec<u16>)> = Vec::new();
    'agents: for (i, agent) in agents.iter().enumerate() {
        if !app.accepted_roles.contains(&agent.role) {
            reject(format!(
                "its resources are for role {:?}, and the app's acceptedResourceRoles are {:?}",
                agent.role, app.accepted_roles
            ));
            continue;
        }
        if app.image.is_some() && !agent.containers {
            reject(
                "it has no container runtime for the app's image (install runc and podman \
                 there, or run the app on agents that have them)"
                    .into(),
            );
            continue;
        }
        if !in_its_region(app, agent, home) {
            reject(format!(
                "in a remote region (the masters are in {:?}; only an app with an @region \
                 constraint runs elsewhere, e.g. [\"@region\", \"IS\", {:?}])",
                home.unwrap_or_default(),
                agent.region.as_deref().unwrap_or_default()
            ));
            continue;
        }
        if agent.cpus - agent.used_cpus + 1e-9 < app.cpus {
            reject(format!("too few free cpus (the app needs {})", app.cpus));
            continue;
        }
        if agent.mem - agent.used_mem + 1e-9 < app.mem {
            reject(format!(
                "too little free mem (the app needs {} MB)",
                app.mem
            ));
            continue;
        }
        for c in &app.constraints {
            let value = agent.field(&c.field);
            let ok = match (&c.operator, value) {
                (Operator::Unlike(p), v) => v.is_none_or(|v| !p.matches(v)),
                (_, None) => false,
                (Operator::Unique, Some(v)) => !counts(&c.field).contains_key(v),
                (Operator::Cluster(Some(want)), Some(v)) => v == want,
                (Operator::Cluster(None), Some(v)) => {
                    let c = counts(&c.field);
                    c.is_empty() || c.contains_key(v)
                }
                (Operator::Is(want), Some(v)) => v == want,
                (Operator::Like(p), Some(v)) => p.matches(v),
                (Operator::MaxPer(n), Some(v)) => {
                    counts(&c.field).get(v).copied().unwrap_or(0) < *n as usize
                }
                // With the number N of values to expect, as Marathon: a value with no task
                // yet, or, once N values have tasks, one of those with the fewest.
                (Operator::GroupBy(Some(n)), Some(v)) => {
                    let counts = counts(&c.field);
                    match counts.get(v) {
                        None => true,
                        Some(here) => {
                            counts.len() >= *n as usize
                                && counts.values().min().is_some_and(|min| here == min)
                        }
                    }
                }
                // Spreading is decided among the agents that pass everything else, below.
                (Operator::GroupBy(None), Some(_)) => true,
            };
            if !ok {
                reject(format!("constraint {c}"));
                continue 'agents;
            }
        }
        match host_ports(app, agent) {
            Some(ports) => fits.push((i, ports)),
            None => reject("its host ports are taken".to_owned()),
        }
    }

    // GROUP_BY: only the values with the fewest tasks among those that can still take one.
    for c in &app.constraints {
        if let Operator::GroupBy(_) = c.operator {
            let counts = counts(&c.field);
            let load = |i: usize| {
                agents[i]
                    .field(&c.field)
                    .map_or(usize::MAX, |v| counts.get(v).copied().unwrap_or(0))
            };
            if let Some(min) = fits.iter().map(|(i, _)| load(*i)).min() {
                fits.retain(|(i, _)| load(*i) == min);
            }
        }
    }

    let best = fits.into_iter().min_by(|(a, _), (b, _)| {
        let (a, b) = (&agents[*a], &agents[*b]);
        let load = |x: &Agent| (x.used_cpus + app.cpus) / x.cpus.max(1e-9);
        count_on(&a.id)
            .cmp(&count_on(&b.id))
            .then(load(a).total_cmp(&load(b)))
            .then(a.hostname.cmp(&b.hostname))
            .then(a.id.cmp(&b.id))
    });
    match best {
        Some((agent, host_ports)) => Ok(Placement { agent, host_ports }),
        None if agents.is_empty() => Err(Unplaceable("no live agent".into())),
        None => {
            let reasons: Vec<String> = rejected
                .into_iter()
                .map(|(why, n)| format!("{n} agent(s): {why}"))
                .collect();
            Err(Unplaceable(format!(
                "no agent can take a task of {}: {}",
                app.id,
                if reasons.is_empty() {
                    "the spread constraints leave none".to_owned()
                } else {
                    reasons.join("; ")
                }
            )))
        }
    }
}

/// The host ports a task of `app` gets on `agent`, one per port, or `None` if they are not
/// free. On an overlay only mappings with a `hostPort` get one (0 for the others), and a task
/// with none gets an empty list.
fn host_ports(app: &App, agent: &Agent) -> Option<Vec<u16>> {
    let overlay = !matches!(app.network, Network::Host);
    if overlay && app.ports.iter().all(|p| p.host_port.is_none()) {
        return Some(Vec::new());
    }
    let mut taken = agent.used_ports.clone();
    let mut out = Vec::with_capacity(app.ports.len());
    for port in &app.ports {
        let fixed = if overlay {
            match port.host_port {
                None => {
                    out.push(0);
                    continue;
                }
                Some(h) => h,
            }
        } else if app.require_ports {
            port.number
        } else {
            0
        };
        let chosen = if fixed != 0 {
            (!taken.contains(&fixed)).then_some(fixed)?
        } else {
            HOST_PORT_RANGE.clone().find(|p| !taken.contains(p))?
        };
        taken.insert(chosen);
        out.push(chosen);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::app::parse;

    fn app(extra: serde_json::Value) -> App {
        let mut v = json!({"id": "/web", "cmd": "x", "cpus": 1, "mem": 100});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        parse(&v, None, "v").unwrap().app
    }

    fn agent(id: &str, zone: &str) -> Agent {
        Agent {
            id: id.into(),
            hostname: format!("host-{id}"),
            region: Some("r1".into()),
            zone: Some(zone.into()),
            attributes: BTreeMap::from([("rack_id".to_owned(), format!("rack-{id}"))]),
            role: "*".into(),
            containers: true,
            cpus: 4.0,
            mem: 1000.0,
            used_cpus: 0.0,
            used_mem: 0.0,
            used_ports: BTreeSet::new(),
        }
    }

    /// Places `n` tasks one after another, as the scheduler does, and returns their agents.
    fn place_n(app: &App, agents: &mut [Agent], n: usize) -> Result<Vec<String>, Unplaceable> {
        let mut on: Vec<String> = Vec::new();
        for _ in 0..n {
            let refs: Vec<&str> = on.iter().map(String::as_str).collect();
            let p = place(app, agents, &refs, Some("r1"))?;
            agents[p.agent].hold(app, &p.host_ports);
            on.push(agents[p.agent].id.clone());
        }
        Ok(on)
    }

    #[test]
    fn spreads_over_agents_by_default() {
        let mut agents = vec![agent("a", "z1"), agent("b", "z1"), agent("c", "z2")];
        let on = place_n(&app(json!({})), &mut agents, 3).unwrap();
        let distinct: BTreeSet<_> = on.iter().collect();
        assert_eq!(distinct.len(), 3, "{on:?}");
    }

    #[test]
    fn hostname_unique_stops_at_one_per_agent() {
        let a = app(json!({"constraints": [["hostname", "UNIQUE"]]}));
        let mut agents = vec![agent("a", "z1"), agent("b", "z2")];
        assert_eq!(place_n(&a, &mut agents, 2).unwrap().len(), 2);
        let err = place_n(&a, &mut agents, 3).unwrap_err();
        assert!(
            err.0
                .contains("2 agent(s): constraint [\"hostname\",\"UNIQUE\"]"),
            "{}",
            err.0
        );
    }

    #[test]
    fn hostname_cluster_pins_to_one_agent() {
        let a = app(json!({"constraints": [["hostname", "CLUSTER", "host-b"]]}));
        let mut agents = vec![agent("a", "z1"), agent("b", "z2"), agent("c", "z2")];
        assert_eq!(place_n(&a, &mut agents, 3).unwrap(), vec!["b", "b", "b"]);
        let a = app(json!({"constraints": [["hostname", "CLUSTER"]]}));
        let mut agents = vec![agent("a", "z1"), agent("b", "z2")];
        let on = place_n(&a, &mut agents, 3).unwrap();
        assert!(on.iter().all(|x| *x == on[0]), "{on:?}");
    }

    #[test]
    fn region_is_filters() {
        let a = app(json!({"constraints": [["@region", "IS", "r2"]]}));
        let mut agents = vec![agent("a", "z1"), agent("b", "z2")];
        agents[1].region = Some("r2".into());
        assert_eq!(place_n(&a, &mut agents, 2).unwrap(), vec!["b", "b"]);
        agents[1].region = None;
        assert!(place_n(&a, &mut agents, 1).is_err(), "no region, no match");
    }

    #[test]
    fn only_the_home_region_without_a_region_constraint() {
        let mut agents = vec![agent("a", "z1"), agent("b", "z2"), agent("c", "z3")];
        agents[1].region = Some("r2".into());
        agents[2].region = None;
        // Unconstrained: home (r1) and the agent of no region, never r2, even when they
        // are full.
        let plain = app(json!({"cpus": 2}));
        let on = place_n(&plain, &mut agents.clone(), 4).unwrap();
        assert!(on.iter().all(|x| x != "b"), "{on:?}");
        let err = place_n(&plain, &mut agents.clone(), 5).unwrap_err();
        assert!(
            err.0.contains("1 agent(s): in a remote region"),
            "{}",
            err.0
        );
        // Any @region constraint places by region: IS to the remote one, UNIQUE across both.
        let remote = app(json!({"constraints": [["@region", "IS", "r2"]]}));
        assert_eq!(
            place_n(&remote, &mut agents.clone(), 2).unwrap(),
            ["b", "b"]
        );
        let spread = app(json!({"constraints": [["@region", "UNIQUE"]]}));
        let on = place_n(&spread, &mut agents.clone(), 2).unwrap();
        assert!(on.contains(&"b".to_owned()), "{on:?}");
        // Masters with no region: no rule.
        let p = place(&plain, &agents[1..2], &[], None).unwrap();
        assert_eq!(p.agent, 0);
    }

    #[test]
    fn zone_group_by_balances_zones_not_agents() {
        // Three agents in z1, one in z2: four tasks must split 2/2 between the zones.
        let a = app(json!({"instances": 4, "constraints": [["@zone", "GROUP_BY", "2"]]}));
        // (Both zones are there from the start: the count changes nothing here.)
        let mut agents = vec![
            agent("a", "z1"),
            agent("b", "z1"),
            agent("c", "z1"),
            agent("d", "z2"),
        ];
        let on = place_n(&a, &mut agents, 4).unwrap();
        let in_z2 = on.iter().filter(|x| *x == "d").count();
        assert_eq!(in_z2, 2, "{on:?}");
    }

    #[test]
    fn attributes_and_patterns() {
        let mut agents = vec![agent("a", "z1"), agent("b", "z1"), agent("c", "z2")];
        agents[2].attributes.clear();
        let like = app(json!({"constraints": [["rack_id", "LIKE", "rack-[ab]"]]}));
        let on = place_n(&like, &mut agents.clone(), 4).unwrap();
        assert!(on.iter().all(|x| x == "a" || x == "b"), "{on:?}");
        let unlike = app(json!({"constraints": [["rack_id", "UNLIKE", "rack-a"]]}));
        let on = place_n(&unlike, &mut agents.clone(), 4).unwrap();
        assert!(
            on.contains(&"c".to_owned()),
            "no attribute passes UNLIKE: {on:?}"
        );
        assert!(on.iter().all(|x| x != "a"), "{on:?}");
        let is = app(json!({"constraints": [["rack_id", "IS", "rack-c"]]}));
        let err = place_n(&is, &mut agents.clone(), 1).unwrap_err();
        assert!(err.0.contains("3 agent(s): constraint"), "{}", err.0);
        let hosts = app(json!({"constraints": [["hostname", "UNLIKE", "host-(a|b)"]]}));
        assert_eq!(place_n(&hosts, &mut agents, 2).unwrap(), ["c", "c"]);
    }

    #[test]
    fn public_agents_run_only_apps_that_accept_them() {
        let mut agents = vec![agent("a", "z1"), agent("b", "z1")];
        agents[1].role = "slave_public".into();
        let private = app(json!({}));
        let on = place_n(&private, &mut agents.clone(), 3).unwrap();
        assert!(on.iter().all(|x| x == "a"), "{on:?}");
        let public = app(json!({"acceptedResourceRoles": ["slave_public"]}));
        assert_eq!(
            place_n(&public, &mut agents.clone(), 2).unwrap(),
            ["b", "b"]
        );
        let either = app(json!({"acceptedResourceRoles": ["*", "slave_public"]}));
        let on = place_n(&either, &mut agents.clone(), 2).unwrap();
        assert_eq!(on.iter().collect::<BTreeSet<_>>().len(), 2, "{on:?}");
        agents[0].role = "slave_public".into();
        let err = place_n(&private, &mut agents, 1).unwrap_err();
        assert!(err.0.contains("acceptedResourceRoles"), "{}", err.0);
    }

    #[test]
    fn overlay_mappings_get_the_host_ports_they_ask_for() {
        let mut agents = vec![agent("a", "z1")];
        let a = app(json!({"networks": [{"mode": "container", "name": "dcos"}],
            "container": {"portMappings": [{"containerPort": 80, "hostPort": 0},
                                           {"containerPort": 81},
                                           {"containerPort": 82, "hostPort": 8082}]}}));
        let p = place(&a, &agents, &[], None).unwrap();
        assert_eq!(p.host_ports, [31000, 0, 8082]);
        agents[0].hold(&a, &p.host_ports);
        assert!(!agents[0].used_ports.contains(&0));
        let err = place(&a, &agents, &["a"], None).unwrap_err();
        assert!(err.0.contains("host ports are taken"), "{}", err.0);
        let none = app(json!({"networks": [{"mode": "container", "name": "dcos"}],
            "container": {"portMappings": [{"containerPort": 80}]}}));
        assert!(
            place(&none, &agents, &[], None)
                .unwrap()
                .host_ports
                .is_empty()
        );
    }

    #[test]
    fn container_apps_go_only_where_a_runtime_is() {
        let mut agents = vec![agent("a", "z1"), agent("b", "z1")];
        agents[0].containers = false;
        let boxed = app(json!({"container": {"type": "DOCKER", "docker": {"image": "web:1"}}}));
        assert_eq!(place_n(&boxed, &mut agents.clone(), 2).unwrap(), ["b", "b"]);
        // Processes still go anywhere.
        let on = place_n(&app(json!({})), &mut agents.clone(), 2).unwrap();
        assert_eq!(on.iter().collect::<BTreeSet<_>>().len(), 2, "{on:?}");
        agents[1].containers = false;
        let err = place_n(&boxed, &mut agents, 1).unwrap_err();
        assert!(err.0.contains("no container runtime"), "{}", err.0);
    }

    #[test]
    fn group_by_with_a_count_waits_for_that_many_values() {
        // Three zones expected, two visible: one task in each, then the rest wait (Marathon
        // keeps the groups even over availability); a third zone takes them 2/2/2.
        let a = app(json!({"instances": 6, "constraints": [["@zone", "GROUP_BY", "3"]]}));
        let mut agents = vec![agent("a", "z1"), agent("b", "z1"), agent("c", "z2")];
        assert_eq!(place_n(&a, &mut agents.clone(), 2).unwrap().len(), 2);
        let err = place_n(&a, &mut agents.clone(), 3).unwrap_err();
        assert!(err.0.contains("GROUP_BY"), "{}", err.0);
        agents.push(agent("d", "z3"));
        let on = place_n(&a, &mut agents, 6).unwrap();
        assert_eq!(on.iter().filter(|x| *x == "d").count(), 2, "{on:?}");
        assert_eq!(on.iter().filter(|x| *x == "c").count(), 2, "{on:?}");
    }

    #[test]
    fn zone_unique_and_max_per() {
        let a = app(json!({"constraints": [["@zone", "UNIQUE"]]}));
        let mut agents = vec![agent("a", "z1"), agent("b", "z1"), agent("c", "z2")];
        assert_eq!(place_n(&a, &mut agents.clone(), 2).unwrap().len(), 2);
        assert!(place_n(&a, &mut agents, 3).is_err());
        let a = app(json!({"constraints": [["@zone", "MAX_PER", "2"]]}));
        let mut agents = vec![agent("a", "z1"), agent("b", "z1"), agent("c", "z2")];
        assert_eq!(place_n(&a, &mut agents.clone(), 4).unwrap().len(), 4);
        assert!(place_n(&a, &mut agents, 5).is_err());
    }

    #[test]
    fn resources_are_respected_and_named() {
        let a = app(json!({"cpus": 3}));
        let mut agents = vec![agent("a", "z1")];
        assert!(place_n(&a, &mut agents, 1).is_ok());
        let err = place_n(&a, &mut agents, 1).unwrap_err();
        assert!(err.0.contains("too few free cpus"), "{}", err.0);
        let err = place(&a, &[], &[], None).unwrap_err();
        assert_eq!(err.0, "no live agent");
    }

    #[test]
    fn host_ports_are_assigned_or_required() {
        let a = app(json!({"portDefinitions": [{"port": 0}, {"port": 0}]}));
        let mut agents = vec![agent("a", "z1")];
        let p = place(&a, &agents, &[], None).unwrap();
        assert_eq!(p.host_ports, vec![31000, 31001]);
        agents[0].used_ports.insert(31000);
        assert_eq!(
            place(&a, &agents, &[], None).unwrap().host_ports,
            vec![31001, 31002]
        );
        let fixed = app(json!({"requirePorts": true, "portDefinitions": [{"port": 8080}]}));
        agents[0].used_ports.insert(8080);
        let err = place(&fixed, &agents, &[], None).unwrap_err();
        assert!(err.0.contains("host ports are taken"), "{}", err.0);
    }
}
