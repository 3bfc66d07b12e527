//! Loads the network-policy programs (`ebpf/programs/src/policy.rs`) and programs them from
//! compiled policies ([`dcnet_policy::Compiled`]).
//!
//! [`Rules`] is the datapath's form of a compilation (pure): map keys for identities, isolated
//! (identity, direction) pairs, allow entries and allowed networks. [`Enforcer::apply`] makes
//! the maps hold exactly a set of rules by difference — allows first, isolation last when
//! adding; isolation first, allows last when removing, so no step denies what both the old and
//! the new rules allow — and then raises the epoch, so cached flows are decided again.
//!
//! Enforcement outlives the agent, as the guard does: the programs are attached to the tasks'
//! cgroup with `BPF_PROG_ATTACH` (multi), which the cgroup holds, and every map is pinned, so
//! the next run's programs use the same rules and flow cache (read back by
//! [`Enforcer::load_sharing`]): at no moment do the tasks run unguarded, and no established
//! flow is decided anew as if it were new.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType};
use aya::{Ebpf, EbpfLoader};
use dcnet_ebpf_common::{
    POLICY_ALLOW, POLICY_CONFIG, POLICY_EGRESS, POLICY_FLOWS, POLICY_IDENTITIES, POLICY_INGRESS,
    POLICY_ISOLATED, POLICY_MAX_ADDRESSES, POLICY_MAX_ALLOW, POLICY_MAX_FLOWS, POLICY_MAX_ISOLATED,
    POLICY_MAX_NETS, POLICY_NET_FIXED_BITS, POLICY_NETS, POLICY_STATS, PROTO_TCP, PROTO_UDP,
    PolicyAllow, PolicyConfig, PolicyFlow, PolicyFlowState, PolicyIsolated, PolicyNet, PolicyStat,
    ip6_words,
};
use dcnet_policy::compile::Ports;
use dcnet_policy::{Compiled, Direction, Identity, Protocol};
use ipnetwork::IpNetwork;

use crate::Error;
use crate::datapath::{per_cpu_sum, program, take_map};

/// The programs' object file, produced by `lb/build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dcnet-policy"));

const INGRESS: &str = "policy_ingress";
const EGRESS: &str = "policy_egress";

/// The programs with their attach types (`enum bpf_attach_type`: BPF_CGROUP_INET_INGRESS,
/// BPF_CGROUP_INET_EGRESS).
const ATTACHED: &[(&str, u32)] = &[(INGRESS, 0), (EGRESS, 1)];

/// Every map, pinned: the rules and the flow cache outlive the agent.
fn layouts() -> [crate::pins::Layout; 7] {
    use crate::pins::Layout;
    use std::mem::size_of;
    let layout = |name, key: usize, value: usize, max_entries| Layout {
        name,
        key_size: key as u32,
        value_size: value as u32,
        max_entries,
    };
    // An LPM key is its 4-byte prefix length and the data.
    [
        layout(POLICY_IDENTITIES, 16, 4, POLICY_MAX_ADDRESSES),
        layout(
            POLICY_ISOLATED,
            size_of::<PolicyIsolated>(),
            8,
            POLICY_MAX_ISOLATED,
        ),
        layout(POLICY_ALLOW, size_of::<PolicyAllow>(), 1, POLICY_MAX_ALLOW),
        layout(POLICY_NETS, 4 + size_of::<PolicyNet>(), 1, POLICY_MAX_NETS),
        layout(
            POLICY_FLOWS,
            size_of::<PolicyFlow>(),
            size_of::<PolicyFlowState>(),
            POLICY_MAX_FLOWS,
        ),
        layout(POLICY_CONFIG, 4, size_of::<PolicyConfig>(), 1),
        layout(POLICY_STATS, 4, 8, PolicyStat::COUNT),
    ]
}

/// An address as the maps hold it: 16 bytes, IPv4 in its IPv4-mapped form.
pub fn address_key(address: IpAddr) -> [u32; 4] {
    match address {
        IpAddr::V4(a) => ip6_words(a.to_ipv6_mapped().octets()),
        IpAddr::V6(a) => ip6_words(a.octets()),
    }
}

fn direction(d: Direction) -> u8 {
    match d {
        Direction::Ingress => POLICY_INGRESS,
        Direction::Egress => POLICY_EGRESS,
    }
}

fn proto(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
}

/// (protocol, port in network order) of an entry: 0 for "any".
fn ports(p: Ports) -> (u8, u16) {
    match p {
        Ports::Any => (0, 0),
        Ports::Protocol(p) => (proto(p), 0),
        Ports::Port(p, port) => (proto(p), port.to_be()),
    }
}

/// A compilation in the maps' terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub identities: BTreeMap<[u32; 4], u32>,
    pub isolated: BTreeSet<PolicyIsolated>,
    pub allow: BTreeSet<PolicyAllow>,
    /// (LPM prefix length, data).
    pub nets: BTreeSet<(u32, PolicyNet)>,
}

impl Rules {
    pub fn new(compiled: &Compiled) -> Self {
        let identities = compiled
            .addresses
            .iter()
            .map(|(&a, &identity)| (address_key(a), identity))
            .collect();
        let isolated = compiled
            .isolated
            .iter()
            .map(|&(d, identity)| PolicyIsolated {
                identity,
                direction: direction(d),
                _pad: [0; 3],
            })
            .collect();
        let allow = compiled
            .allow
            .iter()
            .map(|a| {
                let (proto, port) = ports(a.ports);
                PolicyAllow {
                    subject: a.subject,
                    peer: a.peer,
                    port,
                    proto,
                    direction: direction(a.direction),
                }
            })
            .collect();
        let nets = compiled
            .allow_net
            .iter()
            .map(|a| {
                let (proto, port) = ports(a.ports);
                let (addr, bits) = match a.net {
                    IpNetwork::V4(n) => (IpAddr::V4(n.network()), 96 + u32::from(n.prefix())),
                    IpNetwork::V6(n) => (IpAddr::V6(n.network()), u32::from(n.prefix())),
                };
                (
                    POLICY_NET_FIXED_BITS + bits,
                    PolicyNet {
                        direction: direction(a.direction),
                        proto,
                        port,
                        subject: a.subject,
                        addr: address_key(addr),
                    },
                )
            })
            .collect();
        Self {
            identities,
            isolated,
            allow,
            nets,
        }
    }

    /// Adds what `seed` knows of and these rules do not: identities of addresses these rules
    /// lack, and the isolation and allow entries of identities no address here has. A
    /// restarted agent's view of the cluster fills in over its first seconds; on top of the
    /// last run's rules (the seed), no flow passes that the last run refused only because a
    /// task is not heard of yet, while what these rules decide for the tasks they know (a
    /// policy removed, say) holds at once.
    pub fn merge_seed(&mut self, seed: &Rules) {
        let known: BTreeSet<u32> = self.identities.values().copied().collect();
        for (key, identity) in &seed.identities {
            self.identities.entry(*key).or_insert(*identity);
        }
        let unknown = |identity: &u32| !known.contains(identity);
        self.isolated
            .extend(seed.isolated.iter().filter(|i| unknown(&i.identity)));
        self.allow
            .extend(seed.allow.iter().filter(|a| unknown(&a.subject)));
        self.nets
            .extend(seed.nets.iter().filter(|(_, n)| unknown(&n.subject)));
    }

    fn check_capacity(&self) -> Result<(), Error> {
        for (map, len, capacity) in [
            (
                POLICY_IDENTITIES,
                self.identities.len(),
                POLICY_MAX_ADDRESSES,
            ),
            (POLICY_ISOLATED, self.isolated.len(), POLICY_MAX_ISOLATED),
            (POLICY_ALLOW, self.allow.len(), POLICY_MAX_ALLOW),
            (POLICY_NETS, self.nets.len(), POLICY_MAX_NETS),
        ] {
            if len > capacity as usize {
                return Err(Error::PolicyTooLarge {
                    map,
                    entries: len,
                    capacity,
                });
            }
        }
        Ok(())
    }
}

/// What [`Enforcer::apply`] changed, in entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    pub added: usize,
    pub removed: usize,
}

/// The loaded policy programs and their maps.
pub struct Enforcer {
    ebpf: Ebpf,
    identities: HashMap<MapData, [u32; 4], u32>,
    isolated: PerCpuHashMap<MapData, PolicyIsolated, u64>,
    allow: HashMap<MapData, PolicyAllow, u8>,
    nets: LpmTrie<MapData, PolicyNet, u8>,
    flows: HashMap<MapData, PolicyFlow, PolicyFlowState>,
    config: Array<MapData, PolicyConfig>,
    stats: PerCpuArray<MapData, u64>,
    cpus: usize,
    /// What the maps hold.
    programmed: Rules,
    epoch: u32,
    /// Denied counts of isolation entries removed since the load, so counts never go back.
    carried: BTreeMap<PolicyIsolated, u64>,
}

fn map_error(name: &'static str, action: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |source| Error::Map {
        name,
        action,
        source,
    }
}

impl Enforcer {
    /// Loads the programs with maps of their own (tests, benchmarks).
    pub fn load() -> Result<Self, Error> {
        Self::load_with(&mut EbpfLoader::new())
    }

    /// Loads the programs with every map pinned in `dir` (a BPF filesystem is mounted there if
    /// it is not on one): maps an earlier run pinned there are used as they are, with the
    /// rules they hold. Returns the enforcer and the maps that had to be made anew because an
    /// earlier run's were of another layout.
    pub fn load_sharing(dir: &Path) -> Result<(Self, Vec<&'static str>), Error> {
        let (mut loader, dropped) = crate::pins::sharing_loader(dir, &layouts())?;
        Ok((Self::load_with(&mut loader)?, dropped))
    }

    fn load_with(loader: &mut EbpfLoader<'_>) -> Result<Self, Error> {
        let mut ebpf = loader.load(OBJECT).map_err(Error::Load)?;
        for &(name, _) in ATTACHED {
            program::<CgroupSkb>(&mut ebpf, name)?
                .load()
                .map_err(|source| Error::Program {
                    name,
                    action: "load",
                    source,
                })?;
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| Error::Cpus(source))?;
        let mut enforcer = Self {
            identities: take_map(&mut ebpf, POLICY_IDENTITIES, HashMap::try_from)?,
            isolated: take_map(&mut ebpf, POLICY_ISOLATED, PerCpuHashMap::try_from)?,
            allow: take_map(&mut ebpf, POLICY_ALLOW, HashMap::try_from)?,
            nets: take_map(&mut ebpf, POLICY_NETS, LpmTrie::try_from)?,
            flows: take_map(&mut ebpf, POLICY_FLOWS, HashMap::try_from)?,
            config: take_map(&mut ebpf, POLICY_CONFIG, Array::try_from)?,
            stats: take_map(&mut ebpf, POLICY_STATS, PerCpuArray::try_from)?,
            ebpf,
            cpus,
            programmed: Rules::default(),
            epoch: 0,
            carried: BTreeMap::new(),
        };
        enforcer.read_back()?;
        Ok(enforcer)
    }

    /// Takes what the maps hold (an earlier run's, when pinned) as what is programmed.
    fn read_back(&mut self) -> Result<(), Error> {
        let mut rules = Rules::default();
        for entry in self.identities.iter() {
            let (key, identity) = entry.map_err(map_error(POLICY_IDENTITIES, "read"))?;
            rules.identities.insert(key, identity);
        }
        for key in self.isolated.keys() {
            rules
                .isolated
                .insert(key.map_err(map_error(POLICY_ISOLATED, "read"))?);
        }
        for key in self.allow.keys() {
            rules
                .allow
                .insert(key.map_err(map_error(POLICY_ALLOW, "read"))?);
        }
        for key in self.nets.keys() {
            let key = key.map_err(map_error(POLICY_NETS, "read"))?;
            rules.nets.insert((key.prefix_len(), key.data()));
        }
        self.epoch = self
            .config
            .get(&0, 0)
            .map_err(map_error(POLICY_CONFIG, "read"))?
            .epoch;
        self.programmed = rules;
        Ok(())
    }

    /// Attaches both programs to `cgroup` through BPF links (which always coexist with other
    /// programs, and refuse attach flags); they go with this [`Enforcer`] (tests, benchmarks).
    pub fn attach(&mut self, cgroup: &Path) -> Result<(), Error> {
        let dir = crate::attach::open_cgroup(cgroup)?;
        for (name, attach_type) in [
            (INGRESS, CgroupSkbAttachType::Ingress),
            (EGRESS, CgroupSkbAttachType::Egress),
        ] {
            program::<CgroupSkb>(&mut self.ebpf, name)?
                .attach(&dir, attach_type, CgroupAttachMode::Single)
                .map_err(|source| Error::Program {
                    name,
                    action: "attach",
                    source,
                })?;
        }
        Ok(())
    }

    /// Attaches both programs to `cgroup` so that they stay in force after this process ends.
    /// While an earlier run's are attached too, a packet must pass both; they share the pinned
    /// maps, so they agree.
    pub fn attach_to_outlive(&mut self, cgroup: &Path) -> Result<(), Error> {
        crate::attach::attach_all(&self.ebpf, ATTACHED, cgroup)
    }

    /// Detaches from `cgroup` an earlier run's policy programs; returns how many.
    pub fn retire_others(&mut self, cgroup: &Path) -> Result<usize, Error> {
        let ours = crate::attach::program_ids(&self.ebpf, ATTACHED)?;
        crate::attach::retire(cgroup, ATTACHED, &ours)
    }

    /// What the maps hold.
    pub fn rules(&self) -> &Rules {
        &self.programmed
    }

    /// Makes the maps hold `rules`, then raises the epoch if anything changed.
    pub fn apply(&mut self, rules: Rules) -> Result<Change, Error> {
        rules.check_capacity()?;
        let mut change = Change::default();
        let old = std::mem::take(&mut self.programmed);
        // What is programmed is tracked entry by entry, so a failure midway leaves it true.
        let mut now = old.clone();
        let result = self.transition(&old, &rules, &mut now, &mut change);
        self.programmed = now;
        result?;
        if change != Change::default() {
            self.epoch = self.epoch.wrapping_add(1);
            self.config
                .set(0, PolicyConfig { epoch: self.epoch }, 0)
                .map_err(map_error(POLICY_CONFIG, "write"))?;
        }
        Ok(change)
    }

    fn transition(
        &mut self,
        old: &Rules,
        new: &Rules,
        now: &mut Rules,
        change: &mut Change,
    ) -> Result<(), Error> {
        // 1. What allows more: allow entries, networks, identities (new or changed).
        for a in new.allow.difference(&old.allow) {
            self.allow
                .insert(a, 1, 0)
                .map_err(map_error(POLICY_ALLOW, "insert"))?;
            now.allow.insert(*a);
            change.added += 1;
        }
        for (bits, n) in new.nets.difference(&old.nets) {
            self.nets
                .insert(&Key::new(*bits, *n), 1, 0)
                .map_err(map_error(POLICY_NETS, "insert"))?;
            now.nets.insert((*bits, *n));
            change.added += 1;
        }
        for (key, identity) in &new.identities {
            if old.identities.get(key) != Some(identity) {
                self.identities
                    .insert(key, identity, 0)
                    .map_err(map_error(POLICY_IDENTITIES, "insert"))?;
                now.identities.insert(*key, *identity);
                change.added += 1;
            }
        }
        // 2. Isolation: lifted, then imposed.
        for i in old.isolated.difference(&new.isolated) {
            if let Ok(values) = self.isolated.get(i, 0) {
                *self.carried.entry(*i).or_default() += values.iter().sum::<u64>();
            }
            self.isolated
                .remove(i)
                .map_err(map_error(POLICY_ISOLATED, "remove"))?;
            now.isolated.remove(i);
            change.removed += 1;
        }
        for i in new.isolated.difference(&old.isolated) {
            // Fails only if `cpus` is not the kernel's count of possible CPUs.
            let zero = PerCpuValues::try_from(vec![0u64; self.cpus]).map_err(Error::Cpus)?;
            self.isolated
                .insert(i, zero, 0)
                .map_err(map_error(POLICY_ISOLATED, "insert"))?;
            now.isolated.insert(*i);
            change.added += 1;
        }
        // 3. What allowed what is no longer allowed.
        for key in old.identities.keys() {
            if !new.identities.contains_key(key) {
                self.identities
                    .remove(key)
                    .map_err(map_error(POLICY_IDENTITIES, "remove"))?;
                now.identities.remove(key);
                change.removed += 1;
            }
        }
        for a in old.allow.difference(&new.allow) {
            self.allow
                .remove(a)
                .map_err(map_error(POLICY_ALLOW, "remove"))?;
            now.allow.remove(a);
            change.removed += 1;
        }
        for (bits, n) in old.nets.difference(&new.nets) {
            self.nets
                .remove(&Key::new(*bits, *n))
                .map_err(map_error(POLICY_NETS, "remove"))?;
            now.nets.remove(&(*bits, *n));
            change.removed += 1;
        }
        Ok(())
    }

    /// Packets denied per (direction, identity), summed over CPUs: of the pairs isolated now,
    /// and of those isolated earlier since the load (so a count never goes back).
    pub fn denied(&self) -> Result<BTreeMap<(Direction, Identity), u64>, Error> {
        let pair = |key: &PolicyIsolated| {
            let d = if key.direction == POLICY_INGRESS {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            (d, key.identity)
        };
        let mut out: BTreeMap<(Direction, Identity), u64> = self
            .carried
            .iter()
            .map(|(key, n)| (pair(key), *n))
            .collect();
        for key in &self.programmed.isolated {
            let values = match self.isolated.get(key, 0) {
                Ok(v) => v,
                // Removed meanwhile by another holder of the pins: nothing to count.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_error(POLICY_ISOLATED, "read")(e)),
            };
            *out.entry(pair(key)).or_default() += values.iter().sum::<u64>();
        }
        Ok(out)
    }

    /// The programs' counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(PolicyStat, u64)>, Error> {
        PolicyStat::ALL
            .iter()
            .map(|&stat| Ok((stat, per_cpu_sum(&self.stats, POLICY_STATS, stat as u32)?)))
            .collect()
    }

    /// Flows in the cache (a walk of the map: for tests and diagnostics, not for a hot loop).
    pub fn cached_flows(&self) -> usize {
        self.flows.keys().filter(Result::is_ok).count()
    }

    /// The current epoch (raised by every change).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcnet_policy::{Policy, Task};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rules_translate_a_compilation_into_map_keys() {
        let tasks = [
            Task {
                app: "/web".into(),
                labels: Default::default(),
                addresses: vec![ip("9.0.1.2"), ip("fd01:b::2")],
            },
            Task {
                app: "/client".into(),
                labels: Default::default(),
                addresses: vec![ip("9.0.1.3")],
            },
        ];
        let policy = Policy::parse(
            r#"{"id": "p", "selector": {"apps": ["/web"]},
                "ingress": [{"from": [{"apps": ["/client"]}], "ports": [{"protocol": "tcp", "port": 80}]},
                            {"from": [{"cidr": "10.1.0.0/16"}, {"cidr": "fd00::/8"}]}]}"#,
        )
        .unwrap();
        let mut compiled = Compiled::new(&[policy], &tasks, &[]);
        compiled.set_hosts([ip("9.0.1.1")]);
        let rules = Rules::new(&compiled);
        let web = compiled.apps["/web"];
        let client = compiled.apps["/client"];
        assert_eq!(rules.identities.len(), 4);
        assert_eq!(
            rules.identities[&address_key(ip("9.0.1.1"))],
            dcnet_ebpf_common::POLICY_HOST
        );
        assert_eq!(
            rules.isolated,
            [PolicyIsolated {
                identity: web,
                direction: POLICY_INGRESS,
                _pad: [0; 3]
            }]
            .into()
        );
        assert_eq!(
            rules.allow,
            [PolicyAllow {
                subject: web,
                peer: client,
                port: 80u16.to_be(),
                proto: PROTO_TCP,
                direction: POLICY_INGRESS,
            }]
            .into()
        );
        let nets: Vec<(u32, [u8; 4])> = rules
            .nets
            .iter()
            .map(|(bits, n)| (*bits, n.addr[0].to_ne_bytes()))
            .collect();
        // The IPv4 network as its mapped form (96 + 16 bits), the IPv6 one as it is.
        assert!(nets.contains(&(64 + 96 + 16, [0, 0, 0, 0])));
        assert!(nets.contains(&(64 + 8, [0xfd, 0, 0, 0])));
        let v4 = rules
            .nets
            .iter()
            .find(|(b, _)| *b == 64 + 96 + 16)
            .unwrap()
            .1;
        assert_eq!(v4.addr[3].to_ne_bytes(), [10, 1, 0, 0]);
        assert_eq!((v4.proto, v4.port), (0, 0));
    }

    #[test]
    fn a_seed_fills_in_only_what_the_view_does_not_know_yet() {
        let web = Task {
            app: "/web".into(),
            labels: Default::default(),
            addresses: vec![ip("9.0.1.2")],
        };
        let db = Task {
            app: "/db".into(),
            labels: Default::default(),
            addresses: vec![ip("9.0.2.2")],
        };
        let closed = |id: &str, app: &str| {
            Policy::parse(&format!(
                r#"{{"id": "{id}", "selector": {{"apps": ["{app}"]}}, "ingress": []}}"#
            ))
            .unwrap()
        };
        // The last run: /web and /db both closed.
        let seed = Rules::new(&Compiled::new(
            &[closed("a", "/web"), closed("b", "/db")],
            &[web.clone(), db.clone()],
            &[],
        ));
        // Now: /web's policy is gone, and /db's task is not heard of yet.
        let mut now = Rules::new(&Compiled::new(&[closed("b", "/db")], &[web], &[]));
        now.merge_seed(&seed);
        let isolated: Vec<u32> = now.isolated.iter().map(|i| i.identity).collect();
        let db_identity = seed.identities[&address_key(ip("9.0.2.2"))];
        assert_eq!(isolated, vec![db_identity], "/db stays closed, /web opens");
        assert_eq!(now.identities.len(), 2);
    }

    #[test]
    fn the_constants_agree_with_the_policy_crate() {
        assert_eq!(
            dcnet_policy::compile::WORLD,
            dcnet_ebpf_common::POLICY_WORLD
        );
        assert_eq!(dcnet_policy::compile::HOST, dcnet_ebpf_common::POLICY_HOST);
        assert_eq!(dcnet_policy::compile::ANY, dcnet_ebpf_common::POLICY_ANY);
    }
}
