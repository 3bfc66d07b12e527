//! Loads dcnet's socket-hook programs and programs their maps.
//!
//! The object is built from `ebpf/programs` by this crate's build script and embedded, so the
//! binary carries a datapath that matches its own map layouts. Programs are attached to one
//! cgroup (v2): on a node that is the root cgroup, in tests a cgroup made for the test. With
//! [`Datapath::attach`] dropping the [`Datapath`] detaches everything it attached; an agent
//! attaches with [`Datapath::attach_to_outlive`], so VIPs keep working while it restarts.
//!
//! A VIP's backend set changes atomically: the new set is written to free slots of `BACKENDS4`
//! (`BACKENDS6`), then the VIP's one `VIPS4` (`VIPS6`) entry is replaced to point at it. A connect sees the old set or
//! the new one, never a mix. The old slots are reused only after [`RETIRE_GRACE`], long after
//! any program that read the old entry has finished.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues};
use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader, util::nr_cpus};
use dcnet_ebpf_common::{
    BACKEND_CONNS, BACKEND_CONNS_MAX_ENTRIES, BACKENDS4, BACKENDS4_MAX_ENTRIES, BACKENDS6,
    BACKENDS6_MAX_ENTRIES, Backend4, Backend6, MAX_BACKENDS_PER_VIP, PROTO_TCP, PROTO_UDP,
    REVERSE4, REVERSE4_MAX_ENTRIES, REVERSE6, REVERSE6_MAX_ENTRIES, Reverse4Key, Reverse6Key,
    STATS, SockVip4, SockVip6, Stat, TCP_VIPS_MAX_ENTRIES, TCP_VIPS4, TCP_VIPS6, VIP_CONNS, VIPS4,
    VIPS4_MAX_ENTRIES, VIPS6, Vip4Addr, Vip4Key, Vip6Addr, Vip6Key, VipEntry, ip6_octets,
    ip6_words,
};

use crate::Error;
use crate::slots::{IdAllocator, RangeAllocator};
use crate::sockets::UdpSocketInfo;
use crate::vip::{Backend, Protocol, Vip};

/// The object file produced by `lb/build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dcnet-ebpf"));

/// Programs of the object, by the function names in `ebpf/programs`.
const SOCK_ADDR_PROGRAMS: &[&str] = &[
    "connect4",
    "sendmsg4",
    "recvmsg4",
    "getpeername4",
    "connect6",
    "sendmsg6",
    "recvmsg6",
    "getpeername6",
];

/// The `cgroup_sock` program that forgets a released TCP socket's VIP.
const SOCK_RELEASE: &str = "sock_release";

/// Every program with its attach type (`enum bpf_attach_type`, include/uapi/linux/bpf.h).
const ATTACHED: &[(&str, u32)] = &[
    ("connect4", 10),     // BPF_CGROUP_INET4_CONNECT
    ("sendmsg4", 14),     // BPF_CGROUP_UDP4_SENDMSG
    ("recvmsg4", 19),     // BPF_CGROUP_UDP4_RECVMSG
    ("getpeername4", 29), // BPF_CGROUP_INET4_GETPEERNAME
    ("connect6", 11),     // BPF_CGROUP_INET6_CONNECT
    ("sendmsg6", 15),     // BPF_CGROUP_UDP6_SENDMSG
    ("recvmsg6", 20),     // BPF_CGROUP_UDP6_RECVMSG
    ("getpeername6", 30), // BPF_CGROUP_INET6_GETPEERNAME
    (SOCK_RELEASE, 34),   // BPF_CGROUP_INET_SOCK_RELEASE
];

/// How long replaced backend slots stay untouched. Programs read them within microseconds of
/// reading the VIP entry; a second is a wide margin.
pub const RETIRE_GRACE: Duration = Duration::from_secs(1);

/// What [`Datapath::set_vip`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Updated,
    Unchanged,
}

/// What a [`Datapath::sync`] did, and what it could not do.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// VIPs that could not be programmed; the others were.
    pub failed: Vec<(Vip, Error)>,
}

/// New-connection counts of one VIP and its backends since it was programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipCounters {
    pub vip: Vip,
    pub connections: u64,
    pub backends: Vec<(SocketAddr, u64)>,
}

/// How often one program ran and the time it took, since stats were enabled
/// ([`enable_run_time_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramRuns {
    pub name: &'static str,
    pub runs: u64,
    pub run_time: Duration,
}

/// Turns on the kernel's per-program run counters and time (`BPF_ENABLE_STATS`) for as long as
/// the returned descriptor is open. They cost a clock read per run, so they stay off otherwise.
pub fn enable_run_time_stats() -> Result<std::os::fd::OwnedFd, Error> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(Error::Stats)
}

/// A VIP as programmed.
#[derive(Debug)]
struct Programmed {
    /// Every backend, weight 0 included, sorted by address.
    backends: Vec<Backend>,
    /// The slots of the backends with weight > 0, as many each as its weight asks.
    slots: Range<u32>,
    counter: u32,
    backend_counters: BTreeMap<SocketAddr, u32>,
}

/// The loaded eBPF datapath and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    vips4: HashMap<MapData, Vip4Key, VipEntry>,
    backends4: Array<MapData, Backend4>,
    reverse4: HashMap<MapData, Reverse4Key, Vip4Addr>,
    vips6: HashMap<MapData, Vip6Key, VipEntry>,
    backends6: Array<MapData, Backend6>,
    reverse6: HashMap<MapData, Reverse6Key, Vip6Addr>,
    tcp_vips4: HashMap<MapData, u64, SockVip4>,
    tcp_vips6: HashMap<MapData, u64, SockVip6>,
    vip_conns: PerCpuArray<MapData, u64>,
    backend_conns: PerCpuArray<MapData, u64>,
    stats: PerCpuArray<MapData, u64>,
    cpus: usize,
    slots4: RangeAllocator,
    slots6: RangeAllocator,
    vip_counters: IdAllocator,
    backend_counters: IdAllocator,
    programmed: BTreeMap<Vip, Programmed>,
    retired: Vec<(Family, Range<u32>, Instant)>,
    /// UDP backends that left a VIP since the last [`Datapath::take_removed_udp`].
    removed_udp: BTreeSet<(Vip, SocketAddr)>,
}

impl Datapath {
    /// Loads the embedded object into the kernel and verifies its programs (not yet attached).
    pub fn load() -> Result<Self, Error> {
        Self::load_with(&mut EbpfLoader::new())
    }

    /// Loads the programs with the socket tables ([`SHARED_MAPS`]) pinned in `dir` (a BPF
    /// filesystem is mounted there if it is not on one): tables an earlier run pinned there
    /// are used as they are, so its sockets keep showing their VIPs; new ones are pinned for
    /// the next run. Returns the datapath and the tables that had to be made anew because
    /// an earlier run's were of another layout.
    pub fn load_sharing(dir: &Path) -> Result<(Self, Vec<&'static str>), Error> {
        let (mut loader, dropped) = crate::pins::sharing_loader(dir, &shared_layouts())?;
        Ok((Self::load_with(&mut loader)?, dropped))
    }

    fn load_with(loader: &mut EbpfLoader<'_>) -> Result<Self, Error> {
        let mut ebpf = loader.load(OBJECT).map_err(Error::Load)?;
        load_sock_addr(&mut ebpf, SOCK_ADDR_PROGRAMS)?;
        sock_release_program(&mut ebpf)?
            .load()
            .map_err(|source| Error::Program {
                name: SOCK_RELEASE,
                action: "load",
                source,
            })?;
        let cpus = nr_cpus().map_err(|(_, source)| Error::Cpus(source))?;
        Ok(Self {
            vips4: take_map(&mut ebpf, VIPS4, HashMap::try_from)?,
            backends4: take_map(&mut ebpf, BACKENDS4, Array::try_from)?,
            reverse4: take_map(&mut ebpf, REVERSE4, HashMap::try_from)?,
            vips6: take_map(&mut ebpf, VIPS6, HashMap::try_from)?,
            backends6: take_map(&mut ebpf, BACKENDS6, Array::try_from)?,
            reverse6: take_map(&mut ebpf, REVERSE6, HashMap::try_from)?,
            tcp_vips4: take_map(&mut ebpf, TCP_VIPS4, HashMap::try_from)?,
            tcp_vips6: take_map(&mut ebpf, TCP_VIPS6, HashMap::try_from)?,
            vip_conns: take_map(&mut ebpf, VIP_CONNS, PerCpuArray::try_from)?,
            backend_conns: take_map(&mut ebpf, BACKEND_CONNS, PerCpuArray::try_from)?,
            stats: take_map(&mut ebpf, STATS, PerCpuArray::try_from)?,
            ebpf,
            cpus,
            slots4: RangeAllocator::new(BACKENDS4_MAX_ENTRIES),
            slots6: RangeAllocator::new(BACKENDS6_MAX_ENTRIES),
            vip_counters: IdAllocator::new(VIPS4_MAX_ENTRIES),
            backend_counters: IdAllocator::new(BACKEND_CONNS_MAX_ENTRIES),
            programmed: BTreeMap::new(),
            retired: Vec::new(),
            removed_udp: BTreeSet::new(),
        })
    }

    /// Attaches every program to the cgroup v2 directory `cgroup`, alongside programs others
    /// attached there: on kernels ≥ 5.7 aya attaches through a BPF link, which always coexists
    /// with other programs and refuses any attach flag (so the mode is `Single`, i.e. flags 0).
    /// The programs go with this [`Datapath`] (tests, benchmarks); an agent uses
    /// [`Datapath::attach_to_outlive`].
    pub fn attach(&mut self, cgroup: &Path) -> Result<(), Error> {
        let dir = attach_sock_addr(&mut self.ebpf, SOCK_ADDR_PROGRAMS, cgroup)?;
        sock_release_program(&mut self.ebpf)?
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(|source| Error::Program {
                name: SOCK_RELEASE,
                action: "attach",
                source,
            })?;
        Ok(())
    }

    /// Attaches every program to `cgroup` so that they stay in force after this process ends
    /// (`BPF_PROG_ATTACH`, multi): VIP clients outlive the agent, and while no agent runs its
    /// last VIPs keep being translated. They run next to an earlier run's until
    /// [`Datapath::retire_others`]; each translates the VIPs it knows, and a connect another
    /// already translated is left as it is, so no connect goes untranslated in between.
    pub fn attach_to_outlive(&mut self, cgroup: &Path) -> Result<(), Error> {
        crate::attach::attach_all(&self.ebpf, ATTACHED, cgroup)
    }

    /// Detaches from `cgroup` an earlier run's datapath programs (left attached on purpose);
    /// returns how many. Call once this one's VIPs are programmed.
    pub fn retire_others(&mut self, cgroup: &Path) -> Result<usize, Error> {
        let ours = crate::attach::program_ids(&self.ebpf, ATTACHED)?;
        crate::attach::retire(cgroup, ATTACHED, &ours)
    }
}

/// The socket tables, shared by successive runs through pins: what a socket reached through a
/// VIP is remembered in them.
pub const SHARED_MAPS: [&str; 4] = [REVERSE4, REVERSE6, TCP_VIPS4, TCP_VIPS6];

fn shared_layouts() -> [crate::pins::Layout; 4] {
    use crate::pins::Layout;
    use std::mem::size_of;
    let layout = |name, key: usize, value: usize, max_entries| Layout {
        name,
        key_size: key as u32,
        value_size: value as u32,
        max_entries,
    };
    [
        layout(
            REVERSE4,
            size_of::<Reverse4Key>(),
            size_of::<Vip4Addr>(),
            REVERSE4_MAX_ENTRIES,
        ),
        layout(
            REVERSE6,
            size_of::<Reverse6Key>(),
            size_of::<Vip6Addr>(),
            REVERSE6_MAX_ENTRIES,
        ),
        layout(
            TCP_VIPS4,
            size_of::<u64>(),
            size_of::<SockVip4>(),
            TCP_VIPS_MAX_ENTRIES,
        ),
        layout(
            TCP_VIPS6,
            size_of::<u64>(),
            size_of::<SockVip6>(),
            TCP_VIPS_MAX_ENTRIES,
        ),
    ]
}

/// Detaches every dcnet datapath program from `cgroup`, a running agent's included (`dcnet lb
/// detach`: VIPs stop being translated there); returns how many.
pub fn detach_all(cgroup: &Path) -> Result<usize, Error> {
    crate::attach::retire(cgroup, ATTACHED, &BTreeSet::new())
}

impl Datapath {
    /// Makes `backends` the backends of `vip` (adding the VIP if new). New connections go to
    /// backends in proportion to their weights (see [`crate::slots::slot_counts`]); those with
    /// weight 0 take none; with none above 0, connects to the VIP fail at once with
    /// ECONNREFUSED. A backend listed twice counts once, with its highest weight.
    pub fn set_vip(&mut self, vip: Vip, backends: &[Backend]) -> Result<Change, Error> {
        self.release_retired();
        let backends = normalize(backends);
        if self
            .programmed
            .get(&vip)
            .is_some_and(|p| p.backends == backends)
        {
            return Ok(Change::Unchanged);
        }
        let family = Family::of(&vip.addr);
        if let Some(b) = backends.iter().find(|b| Family::of(&b.addr) != family) {
            return Err(Error::FamilyMismatch {
                vip,
                backend: b.addr,
            });
        }
        let usable: Vec<&Backend> = backends.iter().filter(|b| b.weight > 0).collect();
        if usable.len() > MAX_BACKENDS_PER_VIP as usize {
            return Err(Error::TooManyBackends {
                vip,
                count: usable.len(),
                max: MAX_BACKENDS_PER_VIP,
            });
        }
        let is_new = !self.programmed.contains_key(&vip);

        // Counters: the VIP's and each backend's, kept across set changes.
        let counter = match self.programmed.get(&vip) {
            Some(p) => p.counter,
            None => self.new_counter(Counter::Vip)?,
        };
        let mut backend_counters = self
            .programmed
            .get(&vip)
            .map(|p| p.backend_counters.clone())
            .unwrap_or_default();
        let wanted: BTreeSet<SocketAddr> = backends.iter().map(|b| b.addr).collect();
        for addr in &wanted {
            if backend_counters.contains_key(addr) {
                continue;
            }
            match self.new_counter(Counter::Backend) {
                Ok(id) => {
                    backend_counters.insert(*addr, id);
                }
                Err(e) => {
                    self.undo_counters(&vip, is_new, counter, &backend_counters);
                    return Err(e);
                }
            }
        }

        // Each backend takes slots in proportion to its weight; the program draws uniformly.
        let counts = crate::slots::slot_counts(
            &usable.iter().map(|b| b.weight).collect::<Vec<_>>(),
            MAX_BACKENDS_PER_VIP,
        );
        let Some(slots) = self.slots(family).allocate(counts.iter().sum()) else {
            self.undo_counters(&vip, is_new, counter, &backend_counters);
            let (map, capacity) = match family {
                Family::V4 => (BACKENDS4, BACKENDS4_MAX_ENTRIES),
                Family::V6 => (BACKENDS6, BACKENDS6_MAX_ENTRIES),
            };
            return Err(Error::Full { map, capacity });
        };
        let written = usable
            .iter()
            .zip(&counts)
            .flat_map(|(b, &n)| std::iter::repeat_n(b, n as usize))
            .zip(slots.clone())
            .try_for_each(|(b, slot)| self.write_backend(slot, b.addr, backend_counters[&b.addr]));
        let entry = VipEntry {
            first: slots.start,
            count: slots.len() as u32,
            counter,
            _pad: 0,
        };
        let swapped = written.and_then(|()| self.write_vip(&vip, entry));
        if let Err(e) = swapped {
            // Nothing points at the new slots: they can be reused at once.
            self.slots(family).free(slots);
            self.undo_counters(&vip, is_new, counter, &backend_counters);
            return Err(e);
        }

        // The swap is done: retire what the old entry used.
        if let Some(old) = self.programmed.remove(&vip) {
            self.retire(family, old.slots);
            if vip.protocol == Protocol::Udp {
                self.removed_udp.extend(
                    old.backends
                        .iter()
                        .filter(|b| !wanted.contains(&b.addr))
                        .map(|b| (vip, b.addr)),
                );
            }
            for (addr, id) in &old.backend_counters {
                if !wanted.contains(addr) {
                    self.backend_counters.free(*id);
                    backend_counters.remove(addr);
                }
            }
        }
        self.programmed.insert(
            vip,
            Programmed {
                backends,
                slots,
                counter,
                backend_counters,
            },
        );
        Ok(if is_new {
            Change::Added
        } else {
            Change::Updated
        })
    }

    /// Stops translating `vip`; connects to it then go to the VIP address itself. Removing a
    /// VIP that is not programmed is not an error.
    pub fn remove_vip(&mut self, vip: &Vip) -> Result<bool, Error> {
        self.release_retired();
        if !self.programmed.contains_key(vip) {
            return Ok(false);
        }
        let removed = match vip.addr {
            SocketAddr::V4(_) => self.vips4.remove(&key4(vip)).map_err(|e| (VIPS4, e)),
            SocketAddr::V6(_) => self.vips6.remove(&key6(vip)).map_err(|e| (VIPS6, e)),
        };
        match removed {
            Ok(()) | Err((_, aya::maps::MapError::KeyNotFound)) => {}
            Err((name, source)) => {
                return Err(Error::Map {
                    name,
                    action: "remove",
                    source,
                });
            }
        }
        if let Some(old) = self.programmed.remove(vip) {
            self.retire(Family::of(&vip.addr), old.slots);
            if vip.protocol == Protocol::Udp {
                self.removed_udp
                    .extend(old.backends.iter().map(|b| (*vip, b.addr)));
            }
            self.vip_counters.free(old.counter);
            for id in old.backend_counters.values() {
                self.backend_counters.free(*id);
            }
        }
        Ok(true)
    }

    /// Makes the programmed VIPs exactly `desired`: VIPs not in it are removed, the others set.
    /// A VIP that fails is reported and the rest still programmed.
    pub fn sync(&mut self, desired: &BTreeMap<Vip, Vec<Backend>>) -> SyncReport {
        let mut report = SyncReport::default();
        let gone: Vec<Vip> = self
            .programmed
            .keys()
            .filter(|v| !desired.contains_key(v))
            .copied()
            .collect();
        for vip in gone {
            match self.remove_vip(&vip) {
                Ok(_) => report.removed += 1,
                Err(e) => report.failed.push((vip, e)),
            }
        }
        for (vip, backends) in desired {
            match self.set_vip(*vip, backends) {
                Ok(Change::Added) => report.added += 1,
                Ok(Change::Updated) => report.updated += 1,
                Ok(Change::Unchanged) => report.unchanged += 1,
                Err(e) => report.failed.push((*vip, e)),
            }
        }
        report
    }

    /// UDP backends that left a VIP (or whose VIP went) since the last call: sockets still
    /// connected to them through that VIP should be destroyed (see [`crate::sockets`]).
    pub fn take_removed_udp(&mut self) -> BTreeSet<(Vip, SocketAddr)> {
        std::mem::take(&mut self.removed_udp)
    }

    /// Of `sockets`, those that reached their peer through one of `removed`'s VIPs (by the
    /// reverse table). A socket that connected to the backend's address directly is left alone.
    pub fn through_removed(
        &self,
        sockets: Vec<UdpSocketInfo>,
        removed: &BTreeSet<(Vip, SocketAddr)>,
    ) -> Vec<UdpSocketInfo> {
        sockets
            .into_iter()
            .filter(|s| {
                let vip =
                    match s.peer {
                        SocketAddr::V4(peer) => {
                            let key = Reverse4Key {
                                cookie: s.cookie,
                                addr: u32::from_ne_bytes(peer.ip().octets()),
                                port: peer.port().to_be(),
                                _pad: 0,
                            };
                            self.reverse4.get(&key, 0).ok().map(|v| {
                                SocketAddr::from((v.addr.to_ne_bytes(), u16::from_be(v.port)))
                            })
                        }
                        SocketAddr::V6(peer) => {
                            let key = Reverse6Key {
                                cookie: s.cookie,
                                addr: ip6_words(peer.ip().octets()),
                                port: peer.port().to_be(),
                                _pad: [0; 3],
                            };
                            self.reverse6.get(&key, 0).ok().map(|v| {
                                SocketAddr::from((ip6_octets(v.addr), u16::from_be(v.port)))
                            })
                        }
                    };
                vip.is_some_and(|addr| {
                    let vip = Vip {
                        addr,
                        protocol: Protocol::Udp,
                    };
                    removed.contains(&(vip, s.peer))
                })
            })
            .collect()
    }

    /// The programmed VIPs and their backends (weight 0 included).
    pub fn vips(&self) -> impl Iterator<Item = (&Vip, &[Backend])> {
        self.programmed
            .iter()
            .map(|(vip, p)| (vip, p.backends.as_slice()))
    }

    /// Whether `vip` is programmed: a connect to it is translated from now on.
    pub fn has_vip(&self, vip: &Vip) -> bool {
        self.programmed.contains_key(vip)
    }

    /// New-connection counts of every programmed VIP and its backends, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<VipCounters>, Error> {
        self.programmed
            .iter()
            .map(|(vip, p)| {
                let backends = p
                    .backend_counters
                    .iter()
                    .map(|(addr, id)| Ok((*addr, sum(&self.backend_conns, *id, BACKEND_CONNS)?)))
                    .collect::<Result<_, Error>>()?;
                Ok(VipCounters {
                    vip: *vip,
                    connections: sum(&self.vip_conns, p.counter, VIP_CONNS)?,
                    backends,
                })
            })
            .collect()
    }

    /// Runs and run time of each program (zero unless [`enable_run_time_stats`] is in effect).
    pub fn program_runs(&self) -> Result<Vec<ProgramRuns>, Error> {
        SOCK_ADDR_PROGRAMS
            .iter()
            .map(|&name| {
                let program = self.ebpf.program(name).ok_or(Error::MissingProgram(name))?;
                let info = program.info().map_err(|source| Error::Program {
                    name,
                    action: "read info",
                    source,
                })?;
                Ok(ProgramRuns {
                    name,
                    runs: info.run_count(),
                    run_time: info.run_time(),
                })
            })
            .collect()
    }

    /// TCP sockets now open through a VIP (entries of the TCP tables, which `sock_release`
    /// removes when a socket closes).
    pub fn open_tcp_sockets(&self) -> usize {
        self.tcp_vips4.keys().count() + self.tcp_vips6.keys().count()
    }

    /// The datapath's outcome counters (`Stat`), summed over CPUs.
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>, Error> {
        Stat::ALL
            .iter()
            .map(|s| Ok((s.name(), sum(&self.stats, *s as u32, STATS)?)))
            .collect()
    }

    fn retire(&mut self, family: Family, slots: Range<u32>) {
        if !slots.is_empty() {
            self.retired.push((family, slots, Instant::now()));
        }
    }

    fn slots(&mut self, family: Family) -> &mut RangeAllocator {
        match family {
            Family::V4 => &mut self.slots4,
            Family::V6 => &mut self.slots6,
        }
    }

    /// Writes one backend slot of the backend's family.
    fn write_backend(&mut self, slot: u32, addr: SocketAddr, counter: u32) -> Result<(), Error> {
        let (name, result) = match addr {
            SocketAddr::V4(a) => (
                BACKENDS4,
                self.backends4
                    .set(slot, Backend4::new(a.ip().octets(), a.port(), counter), 0),
            ),
            SocketAddr::V6(a) => (
                BACKENDS6,
                self.backends6
                    .set(slot, Backend6::new(a.ip().octets(), a.port(), counter), 0),
            ),
        };
        result.map_err(|source| Error::Map {
            name,
            action: "write a backend",
            source,
        })
    }

    /// Writes (or replaces, atomically) a VIP's entry.
    fn write_vip(&mut self, vip: &Vip, entry: VipEntry) -> Result<(), Error> {
        let (name, result) = match vip.addr {
            SocketAddr::V4(_) => (VIPS4, self.vips4.insert(key4(vip), entry, 0)),
            SocketAddr::V6(_) => (VIPS6, self.vips6.insert(key6(vip), entry, 0)),
        };
        result.map_err(|source| Error::Map {
            name,
            action: "insert",
            source,
        })
    }

    fn release_retired(&mut self) {
        let now = Instant::now();
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .retired
            .drain(..)
            .partition(|(_, _, at)| now.duration_since(*at) >= RETIRE_GRACE);
        self.retired = waiting;
        for (family, slots, _) in done {
            self.slots(family).free(slots);
        }
    }

    /// A counter id with its per-CPU values zeroed (ids are reused).
    fn new_counter(&mut self, which: Counter) -> Result<u32, Error> {
        let (ids, map, name, capacity) = match which {
            Counter::Vip => (
                &mut self.vip_counters,
                &mut self.vip_conns,
                VIP_CONNS,
                VIPS4_MAX_ENTRIES,
            ),
            Counter::Backend => (
                &mut self.backend_counters,
                &mut self.backend_conns,
                BACKEND_CONNS,
                BACKEND_CONNS_MAX_ENTRIES,
            ),
        };
        let id = ids.allocate().ok_or(Error::Full {
            map: name,
            capacity,
        })?;
        let zeros = PerCpuValues::try_from(vec![0u64; self.cpus]).map_err(Error::Cpus)?;
        if let Err(source) = map.set(id, zeros, 0) {
            ids.free(id);
            return Err(Error::Map {
                name,
                action: "zero a counter",
                source,
            });
        }
        Ok(id)
    }

    /// Frees the counter ids a failed [`Self::set_vip`] allocated.
    fn undo_counters(
        &mut self,
        vip: &Vip,
        is_new: bool,
        counter: u32,
        backend_counters: &BTreeMap<SocketAddr, u32>,
    ) {
        let old = self.programmed.get(vip).map(|p| &p.backend_counters);
        for (addr, id) in backend_counters {
            if old.is_none_or(|o| !o.contains_key(addr)) {
                self.backend_counters.free(*id);
            }
        }
        if is_new {
            self.vip_counters.free(counter);
        }
    }
}

#[derive(Clone, Copy)]
enum Counter {
    Vip,
    Backend,
}

/// Sorted by address, one entry per address with its highest weight.
fn normalize(backends: &[Backend]) -> Vec<Backend> {
    let mut by_addr: BTreeMap<SocketAddr, u32> = BTreeMap::new();
    for b in backends {
        let w = by_addr.entry(b.addr).or_insert(0);
        *w = (*w).max(b.weight);
    }
    by_addr
        .into_iter()
        .map(|(addr, weight)| Backend { addr, weight })
        .collect()
}

/// An address family of the datapath's maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(addr: &SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }
}

fn proto(vip: &Vip) -> u8 {
    match vip.protocol {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
}

fn key4(vip: &Vip) -> Vip4Key {
    let octets = match vip.addr.ip() {
        std::net::IpAddr::V4(ip) => ip.octets(),
        std::net::IpAddr::V6(_) => [0; 4],
    };
    Vip4Key::new(octets, vip.addr.port(), proto(vip))
}

fn key6(vip: &Vip) -> Vip6Key {
    let octets = match vip.addr.ip() {
        std::net::IpAddr::V6(ip) => ip.octets(),
        std::net::IpAddr::V4(_) => [0; 16],
    };
    Vip6Key::new(octets, vip.addr.port(), proto(vip))
}

fn sum(map: &PerCpuArray<MapData, u64>, index: u32, name: &'static str) -> Result<u64, Error> {
    let values = map.get(&index, 0).map_err(|source| Error::Map {
        name,
        action: "read a counter",
        source,
    })?;
    Ok(values.iter().sum())
}

/// Counter `index` of a per-CPU array of counters, summed over CPUs.
pub(crate) fn per_cpu_sum(
    map: &aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    name: &'static str,
    index: u32,
) -> Result<u64, Error> {
    let values = map.get(&index, 0).map_err(|source| Error::Map {
        name,
        action: "read",
        source,
    })?;
    Ok(values.iter().sum())
}

pub(crate) fn take_map<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, Error> {
    let map = ebpf.take_map(name).ok_or(Error::MissingMap(name))?;
    convert(map).map_err(|source| Error::Map {
        name,
        action: "open",
        source,
    })
}

fn sock_release_program(ebpf: &mut Ebpf) -> Result<&mut CgroupSock, Error> {
    program(ebpf, SOCK_RELEASE)
}

/// Loads (verifies) the sock_addr programs `names` of `ebpf`.
pub(crate) fn load_sock_addr(ebpf: &mut Ebpf, names: &[&'static str]) -> Result<(), Error> {
    for &name in names {
        sock_addr_program(ebpf, name)?
            .load()
            .map_err(|source| Error::Program {
                name,
                action: "load",
                source,
            })?;
    }
    Ok(())
}

/// Attaches the sock_addr programs `names` of `ebpf` to the cgroup v2 directory `cgroup`;
/// returns the directory, open.
pub(crate) fn attach_sock_addr(
    ebpf: &mut Ebpf,
    names: &[&'static str],
    cgroup: &Path,
) -> Result<File, Error> {
    let dir = File::open(cgroup).map_err(|source| Error::Cgroup {
        path: cgroup.to_path_buf(),
        source,
    })?;
    for &name in names {
        sock_addr_program(ebpf, name)?
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(|source| Error::Program {
                name,
                action: "attach",
                source,
            })?;
    }
    Ok(dir)
}

pub(crate) fn sock_addr_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, Error> {
    program(ebpf, name)
}

/// The program `name` of `ebpf`, as the program type `T` it must be.
pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram(name))?
        .try_into()
        .map_err(|source| Error::Program {
            name,
            action: "type check",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_sorted_and_deduplicated_with_their_highest_weight() {
        let b = |port, weight| Backend {
            addr: SocketAddr::from(([9, 0, 0, 1], port)),
            weight,
        };
        assert_eq!(
            normalize(&[b(2, 1), b(1, 0), b(2, 0), b(1, 3)]),
            vec![b(1, 3), b(2, 1)]
        );
    }
}
