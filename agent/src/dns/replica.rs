//! This node's copy of the records, kept up to date change by change from the facts.
//!
//! The Mesos tasks are fed to the contributions as their gossip values ([`ReplicaTask`]),
//! compared by a hash of the value and decoded only when one changed: the records are all this
//! node keeps of them (see [`crate::facts::mesos`]).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dcnet_dns::contributions::{ClusterTask, Contributions, TaskInput};
use dcnet_dns::dcos::{self, DcosRecords};
use dcnet_dns::name::LabelSpec;
use dcnet_dns::records::{Cluster, FrameworkInfo, Record, RecordSource, Settings, TaskInfo};
use dcnet_dns::zone::{Snapshot, Soa, ZoneInfo};

use crate::config::ZoneSettings;
use crate::facts::{self, Facts};
use crate::lb::service::NamedVips;

/// This node's copy of the records.
pub struct Replica {
    domain: String,
    zone: ZoneSettings,
    this_node: IpAddr,
    contributions: Contributions<ReplicaTask>,
    current: Arc<Snapshot>,
    /// Linked clusters' suffixes (`east.mesos.`), left to the forwarder; kept while no
    /// scheduler leads.
    delegated: Vec<String>,
}

impl Replica {
    /// Empty zones for `domain` (with `zone`'s settings, and the DC/OS ones) served at
    /// `this_node`.
    pub fn new(domain: String, zone: ZoneSettings, this_node: IpAddr) -> Self {
        let current = Arc::new(Snapshot::default().apply(zones(&domain, &zone), []));
        Self {
            domain,
            zone,
            this_node,
            contributions: Contributions::default(),
            current,
            delegated: Vec::new(),
        }
    }

    /// Takes in the facts and the named VIPs: only the tasks that changed are looked at
    /// again (see [`Contributions`]).
    pub fn update(&mut self, facts: &Facts, named_vips: &NamedVips) {
        let (cluster, launched, mesos, dcos) =
            sources(facts, &self.domain, &self.zone, self.this_node);
        let framework: Arc<str> = facts::launched::FRAMEWORK.into();
        let list_unhealthy = self.zone.list_unhealthy;
        let tasks = facts::cluster::mesos_tasks(facts)
            .map(move |(key, value)| ReplicaTask::Mesos {
                key: HASH.hash_one(&**key),
                value: value.clone(),
                list_unhealthy,
            })
            .chain(launched.into_iter().map(move |task| {
                ReplicaTask::Launched(
                    ClusterTask {
                        framework: framework.clone(),
                        task,
                    },
                    list_unhealthy,
                )
            }));
        let source = (mesos, (dcos, VipRecords(named_vips)));
        let zones = zones(&self.domain, &self.zone);
        let mut next =
            self.contributions
                .update_tasks(&self.current, zones, &cluster, tasks, &source);
        if let Some(linked) = linked_zones(facts, &self.domain) {
            self.delegated = linked.into_iter().map(|z| z.suffix).collect();
        }
        next.set_delegated(&self.delegated);
        self.current = Arc::new(next);
    }

    /// The records as of the last update.
    pub fn current(&self) -> &Arc<Snapshot> {
        &self.current
    }
}

/// What the records are made from: the cluster without its tasks (the caller feeds them),
/// the launched tasks, and the settings of the Mesos domain and of the DC/OS zones.
fn sources(
    facts: &Facts,
    domain: &str,
    zone: &ZoneSettings,
    this_node: IpAddr,
) -> (Cluster, Vec<Arc<TaskInfo>>, Settings, DcosRecords) {
    let (mut cluster, launched) = facts::cluster::cluster_and_launched(facts).unwrap_or_default();
    // Its Mesos tasks are the few that declare VIPs; all of them come encoded.
    for framework in &mut cluster.frameworks {
        framework.tasks.clear();
    }
    // Masters: the nodes that say they have the role, as gossip knows them.
    let mut masters: Vec<IpAddr> = facts
        .nodes
        .values()
        .filter_map(|n| n.info.as_deref())
        .filter(|info| info.roles.iter().any(|r| r == "master"))
        .map(|info| info.address)
        .collect();
    masters.sort_unstable();
    // Without Mesos masters, dcnet's own scheduler is the cluster's master: its leader is
    // `leader.mesos` (and `_leader._tcp`, `leader.dcos`), its masters `masterN` in address
    // order, and `marathon.mesos` with `_framework._tcp` points at its API.
    let mut numbered = Vec::new();
    if cluster.leader.is_none()
        && let Some((address, port)) = scheduler_leader(facts)
    {
        cluster.leader = Some((address, port));
        numbered = masters.iter().map(|&m| (m, port)).collect();
        let framework = match cluster
            .frameworks
            .iter_mut()
            .find(|f| f.name == facts::launched::FRAMEWORK)
        {
            Some(framework) => framework,
            None => {
                cluster.frameworks.push(FrameworkInfo {
                    name: facts::launched::FRAMEWORK.to_owned(),
                    ..FrameworkInfo::default()
                });
                cluster.frameworks.last_mut().expect("just pushed")
            }
        };
        framework.scheduler_ips = vec![address];
        framework.scheduler_port = Some(port);
    }
    let spec = if zone.rfc952 {
        LabelSpec::Rfc952
    } else {
        LabelSpec::Rfc1123
    };
    let mesos = Settings {
        domain: domain.to_owned(),
        spec,
        masters: numbered,
        mname: zone.soa_mname.clone(),
        listen_ips: vec![this_node],
    };
    let dcos = DcosRecords {
        spec,
        masters,
        this_node: vec![this_node],
    };
    (cluster, launched, mesos, dcos)
}

/// Every framework, task and Mesos-domain record as `/v1/enumerate` lists them, from the
/// facts as they are (every Mesos task decoded: made when asked for, not kept).
pub fn enumeration(
    facts: &Facts,
    domain: &str,
    zone: &ZoneSettings,
    this_node: IpAddr,
) -> dcnet_dns::records::Enumeration {
    let (mut cluster, launched, mesos, _) = sources(facts, domain, zone, this_node);
    let list_unhealthy = zone.list_unhealthy;
    let framework: Arc<str> = facts::launched::FRAMEWORK.into();
    let tasks = facts::cluster::mesos_tasks(facts)
        .map(|(_, value)| ReplicaTask::Mesos {
            key: 0,
            value: value.clone(),
            list_unhealthy,
        })
        .chain(launched.into_iter().map(|task| {
            ReplicaTask::Launched(
                ClusterTask {
                    framework: framework.clone(),
                    task,
                },
                list_unhealthy,
            )
        }));
    for (name, task) in tasks.filter_map(|t| t.task()) {
        match cluster.frameworks.iter_mut().find(|f| *f.name == *name) {
            Some(f) => f.tasks.push(task),
            None => cluster.frameworks.push(FrameworkInfo {
                name: name.to_string(),
                tasks: vec![task],
                ..FrameworkInfo::default()
            }),
        }
    }
    dcnet_dns::records::generate_from(&cluster, &mesos).enumeration
}

/// The linked clusters as DNS serves them: `<link>.<domain>.` asked of the link's servers
/// under its own domain. `None` while no scheduler leads (what was served stays).
pub fn linked_zones(facts: &Facts, domain: &str) -> Option<Vec<dcnet_dns::linked::LinkedZone>> {
    let links = facts::scheduler::links(facts)?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    Some(
        links
            .values()
            .filter(|l| !l.dns.is_empty())
            .map(|l| dcnet_dns::linked::LinkedZone {
                suffix: format!("{}.{domain}.", l.name),
                remote: format!("{}.", l.domain.trim_end_matches('.').to_ascii_lowercase()),
                servers: l.dns.clone(),
            })
            .collect(),
    )
}

/// The leading scheduler's node address and API port, as gossip says.
fn scheduler_leader(facts: &Facts) -> Option<(IpAddr, u16)> {
    let leader = facts::scheduler::leader(facts)?;
    let address = facts.nodes.get(leader.node_id)?.info.as_deref()?.address;
    Some((address, api_port(leader.api)?))
}

/// The port of an API URL such as `https://10.0.0.1:8080` (or `[fd00::1]:8080/`).
fn api_port(url: &str) -> Option<u16> {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

/// A task as the replica feeds it to its contributions.
#[derive(Debug, Clone)]
enum ReplicaTask {
    /// A Mesos task: the hash of its gossip key, and its value, decoded when its records
    /// are made.
    Mesos {
        key: u64,
        value: Arc<str>,
        list_unhealthy: bool,
    },
    /// A task of dcnet's own launchers.
    Launched(ClusterTask, bool),
}

/// Fixed, so keys and fingerprints compare across updates.
const HASH: foldhash::quality::FixedState =
    foldhash::quality::FixedState::with_seed(0x7265_706c_6963_6173);

impl TaskInput for ReplicaTask {
    fn key(&self) -> u64 {
        match self {
            Self::Mesos { key, .. } => *key,
            Self::Launched(task, _) => task.key(),
        }
    }

    fn fingerprint(&self) -> u64 {
        match self {
            Self::Mesos { value, .. } => HASH.hash_one(&**value),
            Self::Launched(task, _) => task.fingerprint(),
        }
    }

    /// A task whose health checks fail (or have not passed yet) is not in DNS unless
    /// `unhealthy_tasks = "list"`; the load balancer, which reads the same facts, gives it
    /// weight 0 instead.
    fn task(&self) -> Option<(Arc<str>, Arc<TaskInfo>)> {
        let (framework, task, list_unhealthy) = match self {
            // A value that does not decode is listed as malformed by the facts decoder.
            Self::Mesos {
                value,
                list_unhealthy,
                ..
            } => {
                let fact = facts::mesos::decode_task(value).ok()?;
                (fact.framework, fact.task, *list_unhealthy)
            }
            Self::Launched(task, list_unhealthy) => {
                let (framework, task) = task.task()?;
                (framework, task, *list_unhealthy)
            }
        };
        let listed = list_unhealthy || task.healthy != Some(false);
        (task.is_running && listed).then_some((framework, task))
    }
}

/// The named VIPs of the `l4lb` zone, which the local datapath has (see crate::lb::service on
/// the ordering).
struct VipRecords<'a>(&'a NamedVips);

impl RecordSource for VipRecords<'_> {
    fn shared(&self, _: &Cluster, out: &mut Vec<Record>) {
        for (name, addresses) in self.0 {
            for ip in addresses {
                out.push(Record::ip(format!("{name}."), *ip));
            }
        }
    }

    fn task(&self, _: &str, _: &TaskInfo, _: &[IpAddr], _: &mut Vec<Record>) {}
}

/// The zones every node serves, their SOA serial the time of the update: the Mesos domain
/// with `settings`, the DC/OS ones with dcos-dns's.
fn zones(domain: &str, settings: &ZoneSettings) -> Vec<ZoneInfo> {
    let serial = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as u32;
    let mesos = ZoneInfo::new(
        domain,
        Soa {
            mname: settings.soa_mname.clone(),
            rname: settings.soa_rname.clone(),
            serial,
            refresh: settings.soa_refresh,
            retry: settings.soa_retry,
            expire: settings.soa_expire,
            minimum: settings.soa_minttl,
        },
        vec![],
        settings.ttl,
        1,
    );
    let zone = |origin: &str, ttl: u32| {
        let soa = Soa {
            mname: format!("ns1.{origin}"),
            rname: format!("root.ns1.{origin}"),
            serial,
            refresh: 60,
            retry: 600,
            expire: 86400,
            minimum: 60,
        };
        ZoneInfo::new(origin, soa, vec![], ttl, 1)
    };
    vec![
        mesos,
        zone(dcos::THISDCOS, dcos::DCOS_TTL),
        zone(dcos::L4LB, dcos::DCOS_TTL),
        zone(dcos::SPARTAN, dcos::DCOS_TTL),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use dcnet_dns::records::TaskInfo;

    use super::*;
    use crate::facts::decode::tests_support::decoded;
    use crate::facts::mesos::{generation, tests::cluster as mesos_state, to_keys};
    use crate::gossip::view::tests_support::view_with;

    fn published(state: &Cluster) -> BTreeMap<String, String> {
        let mut keys = to_keys(state);
        let (k, v) = generation(1);
        keys.insert(k, v);
        keys
    }

    fn a(replica: &Replica, name: &str) -> Vec<Ipv4Addr> {
        replica
            .current
            .records(name)
            .map(|r| r.a.clone())
            .unwrap_or_default()
    }

    fn task(id: &str, ip: [u8; 4], healthy: Option<bool>) -> Arc<TaskInfo> {
        Arc::new(TaskInfo {
            id: id.into(),
            name: id.split('.').next().unwrap_or_default().into(),
            agent_id: "a1".into(),
            is_running: true,
            ips: vec![IpAddr::from(ip)],
            healthy,
            ..TaskInfo::default()
        })
    }

    #[test]
    fn mesos_tasks_are_served_from_their_gossip_values() {
        let mut state = mesos_state();
        let tasks = &mut state.frameworks[0].tasks;
        tasks.push(task("db.1", [9, 0, 0, 3], None));
        tasks.push(task("sick.1", [9, 0, 0, 4], Some(false)));
        let mut keys = published(&state);
        let mut replica = Replica::new(
            "mesos".into(),
            ZoneSettings::defaults("mesos"),
            IpAddr::from([10, 0, 0, 9]),
        );
        let update = |replica: &mut Replica, keys: &BTreeMap<String, String>| {
            replica.update(
                &decoded(&view_with(&[("a", keys.clone())])),
                &NamedVips::new(),
            );
        };
        update(&mut replica, &keys);
        assert_eq!(
            a(&replica, "web.marathon.mesos."),
            [Ipv4Addr::new(9, 0, 0, 2)]
        );
        assert_eq!(
            a(&replica, "db.marathon.mesos."),
            [Ipv4Addr::new(9, 0, 0, 3)]
        );
        assert!(
            a(&replica, "sick.marathon.mesos.").is_empty(),
            "unhealthy: no name"
        );
        assert!(a(&replica, "old.marathon.mesos.").is_empty(), "not running");
        assert_eq!(a(&replica, "leader.mesos."), [Ipv4Addr::new(10, 0, 0, 1)]);

        // One task moves, one breaks, one gets well: each is decoded again, the rest is kept.
        let key = |id: &str, name: &str| format!("dns/task/marathon/{id}/{name}");
        state.frameworks[0].tasks[2] = task("db.1", [9, 0, 0, 30], None);
        state.frameworks[0].tasks[3] = task("sick.1", [9, 0, 0, 4], Some(true));
        keys = published(&state);
        keys.insert(key("web.1", "web"), "{".into());
        update(&mut replica, &keys);
        assert!(
            a(&replica, "web.marathon.mesos.").is_empty(),
            "a malformed value"
        );
        assert_eq!(
            a(&replica, "db.marathon.mesos."),
            [Ipv4Addr::new(9, 0, 0, 30)]
        );
        assert_eq!(
            a(&replica, "sick.marathon.mesos."),
            [Ipv4Addr::new(9, 0, 0, 4)]
        );

        // The publisher goes: so do its tasks' names.
        update(&mut replica, &BTreeMap::new());
        assert!(a(&replica, "db.marathon.mesos.").is_empty());
    }

    #[test]
    fn dcnets_own_scheduler_is_the_clusters_master() {
        let node = |name: &str, address: &str, roles: &str| {
            let info = format!(
                r#"{{"name":"{name}","address":"{address}","roles":{roles},"version":"0"}}"#
            );
            BTreeMap::from([(crate::facts::node::NODE_INFO_KEY.to_owned(), info)])
        };
        let mut leader = node("m2", "10.0.0.2", r#"["master","agent"]"#);
        leader.insert(
            crate::facts::scheduler::LEADER_KEY.to_owned(),
            r#"{"api":"https://10.0.0.2:8080","term":4,"tasks":0}"#.to_owned(),
        );
        let view = view_with(&[
            ("m1", node("m1", "10.0.0.1", r#"["master","agent"]"#)),
            ("m2", leader),
            ("m3", node("m3", "10.0.0.3", r#"["master"]"#)),
            ("a1", node("a1", "10.0.0.9", r#"["agent"]"#)),
        ]);
        let mut replica = Replica::new(
            "mesos".into(),
            ZoneSettings::defaults("mesos"),
            IpAddr::from([10, 0, 0, 9]),
        );
        replica.update(&decoded(&view), &NamedVips::new());
        let ip = |last: u8| Ipv4Addr::new(10, 0, 0, last);
        assert_eq!(a(&replica, "leader.mesos."), [ip(2)]);
        assert_eq!(a(&replica, "leader.dcos.thisdcos.directory."), [ip(2)]);
        let mut all = a(&replica, "master.mesos.");
        all.sort();
        assert_eq!(all, [ip(1), ip(2), ip(3)]);
        for (n, last) in [(0, 1), (1, 2), (2, 3)] {
            assert_eq!(
                a(&replica, &format!("master{n}.mesos.")),
                [ip(last)],
                "master{n}"
            );
        }
        assert!(
            a(&replica, "master3.mesos.").is_empty(),
            "the leader is numbered once"
        );
        assert_eq!(a(&replica, "marathon.mesos."), [ip(2)]);
        let srv = |name: &str| {
            replica
                .current
                .records(name)
                .map(|r| {
                    r.srv
                        .iter()
                        .map(|t| format!("{}:{}", t.target, t.port))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            srv("_framework._tcp.marathon.mesos."),
            ["marathon.mesos.:8080"]
        );
        assert_eq!(srv("_leader._tcp.mesos."), ["leader.mesos.:8080"]);
    }

    #[test]
    fn unhealthy_tasks_are_listed_when_asked_as_mesos_dns_does() {
        let mut state = mesos_state();
        state.frameworks[0]
            .tasks
            .push(task("sick.1", [9, 0, 0, 4], Some(false)));
        let view = view_with(&[("a", published(&state))]);
        for (list, expected) in [(false, vec![]), (true, vec![Ipv4Addr::new(9, 0, 0, 4)])] {
            let zone = ZoneSettings {
                list_unhealthy: list,
                ..ZoneSettings::defaults("mesos")
            };
            let mut replica =
                Replica::new("mesos".into(), zone.clone(), IpAddr::from([10, 0, 0, 9]));
            replica.update(&decoded(&view), &NamedVips::new());
            assert_eq!(
                a(&replica, "sick.marathon.mesos."),
                expected,
                "list: {list}"
            );
            // The enumeration lists what DNS answers.
            let listed = enumeration(&decoded(&view), "mesos", &zone, IpAddr::from([10, 0, 0, 9]))
                .frameworks
                .iter()
                .flat_map(|f| &f.tasks)
                .any(|t| t.name == "sick");
            assert_eq!(listed, list);
        }
    }

    #[test]
    fn api_ports() {
        assert_eq!(api_port("https://10.0.0.2:8080"), Some(8080));
        assert_eq!(api_port("http://[fd00::1]:8443/"), Some(8443));
        assert_eq!(api_port("https://10.0.0.2"), None);
    }
}
