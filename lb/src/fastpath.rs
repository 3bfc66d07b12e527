//! Loads the container fast path (`ebpf/programs/src/fastpath.rs`), attaches it at tc ingress
//! of the VTEP and of each container's host-side veth, and keeps its table of local endpoints.
//!
//! Attachments are TCX links (kernel ≥ 6.6). Loaded with a pin directory (on a BPF
//! filesystem), each link is pinned there under its interface's name, so it outlives the
//! agent: while no agent runs, the last programs keep carrying the traffic. The next run
//! adopts each pinned link and replaces its program with its own in place
//! (`BPF_LINK_UPDATE`, atomic: never a moment without a program). Without a pin directory the
//! links belong to the process and the traffic takes the bridge while no agent runs; nothing
//! is lost either way, the kernel objects of the overlay are the same with and without the
//! programs.
//!
//! [`Fastpath::ensure_attached`] asks the kernel which programs are attached to an interface
//! and attaches again where ours is missing (removed by hand, or the interface was made anew),
//! so a periodic pass repairs drift.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
pub use dcnet_ebpf_common::{Endpoint, FastpathStat};
use dcnet_ebpf_common::{
    FASTPATH_CONFIG, FASTPATH_ENDPOINTS, FASTPATH_ENDPOINTS6, FASTPATH_STATS, FastpathConfig,
};

use crate::Error;
use crate::datapath::{per_cpu_sum, take_map};

/// The programs' object file, produced by `lb/build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dcnet-fastpath"));

/// The program on containers' host-side veths.
pub const FROM_CONTAINER: &str = "fastpath_from_container";
/// The program on the VTEP.
pub const FROM_TUNNEL: &str = "fastpath_from_tunnel";

/// Where a program is attached: the interface's index then, and the link.
struct Attachment {
    ifindex: u32,
    link: Held,
}

/// A link as this process holds it.
enum Held {
    /// Owned by the program object: detached with it.
    Owned(SchedClassifierLinkId),
    /// Pinned: outlives the process.
    Pinned(PinnedLink),
}

/// The loaded fast path.
pub struct Fastpath {
    ebpf: Ebpf,
    endpoints: HashMap<MapData, u32, Endpoint>,
    endpoints6: HashMap<MapData, [u8; 16], Endpoint>,
    config: Array<MapData, FastpathConfig>,
    stats: PerCpuArray<MapData, u64>,
    /// Kernel ids of the two programs, to find them among an interface's attachments.
    ids: [(&'static str, u32); 2],
    /// Interface name → where which program is attached.
    attached: BTreeMap<String, (&'static str, Attachment)>,
    current: BTreeMap<IpAddr, Endpoint>,
    /// Where links are pinned, by interface name.
    pins: Option<PathBuf>,
}

impl Fastpath {
    /// Loads the programs (attached nowhere yet, no endpoints). With `pins` (a directory on a
    /// BPF filesystem, made if missing), links are pinned there and an earlier run's adopted.
    pub fn load(pins: Option<&Path>) -> Result<Self, Error> {
        if let Some(dir) = pins {
            std::fs::create_dir_all(dir).map_err(|source| Error::Pins {
                path: dir.to_path_buf(),
                action: "create",
                source,
            })?;
        }
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(Error::Load)?;
        let endpoints = take_map(&mut ebpf, FASTPATH_ENDPOINTS, HashMap::try_from)?;
        let endpoints6 = take_map(&mut ebpf, FASTPATH_ENDPOINTS6, HashMap::try_from)?;
        let config = take_map(&mut ebpf, FASTPATH_CONFIG, Array::try_from)?;
        let stats = take_map(&mut ebpf, FASTPATH_STATS, PerCpuArray::try_from)?;
        let mut ids = [(FROM_CONTAINER, 0), (FROM_TUNNEL, 0)];
        for (name, id) in &mut ids {
            let program = classifier(&mut ebpf, name)?;
            program.load().map_err(|source| Error::Program {
                name,
                action: "load",
                source,
            })?;
            *id = program
                .info()
                .map_err(|source| Error::Program {
                    name,
                    action: "read the info of",
                    source,
                })?
                .id();
        }
        Ok(Self {
            ebpf,
            endpoints,
            endpoints6,
            config,
            stats,
            ids,
            attached: BTreeMap::new(),
            current: BTreeMap::new(),
            pins: pins.map(Path::to_path_buf),
        })
    }

    /// Makes `vtep` the tunnel device: containers' frames for the overlay go there, and frames
    /// coming out of it are delivered to local containers. Returns whether anything changed.
    pub fn set_tunnel(&mut self, vtep: &str) -> Result<bool, Error> {
        let ifindex = ifindex(vtep).map_err(|source| Error::Interface {
            name: FROM_TUNNEL,
            interface: vtep.to_owned(),
            action: "find",
            source: Box::new(source.into()),
        })?;
        let config = FastpathConfig {
            vtep_ifindex: ifindex,
        };
        let changed = self.config.get(&0, 0).ok() != Some(config);
        if changed {
            self.config.set(0, config, 0).map_err(|source| Error::Map {
                name: FASTPATH_CONFIG,
                action: "write",
                source,
            })?;
        }
        Ok(self.ensure_attached(vtep, FROM_TUNNEL)? | changed)
    }

    /// Attaches the container program to a container's host-side veth unless it is there.
    /// Returns whether it had to be attached.
    pub fn attach_container(&mut self, host_veth: &str) -> Result<bool, Error> {
        self.ensure_attached(host_veth, FROM_CONTAINER)
    }

    /// Forgets a container's veth (its link went with the interface).
    pub fn forget_container(&mut self, host_veth: &str) {
        self.forget(host_veth);
    }

    /// Detaches (and unpins) what is recorded for `interface`. The interface is usually gone,
    /// and its link with it: nothing to report.
    fn forget(&mut self, interface: &str) {
        let Some((name, attachment)) = self.attached.remove(interface) else {
            return;
        };
        match attachment.link {
            Held::Owned(id) => {
                if let Ok(program) = classifier(&mut self.ebpf, name) {
                    let _ = program.detach(id);
                }
            }
            // Unpinned and closed: the link goes.
            Held::Pinned(link) => drop(link.unpin()),
        }
    }

    /// Removes pins of interfaces nothing is attached to any more (their interface went while
    /// no agent ran); returns how many.
    pub fn remove_stale_pins(&self) -> usize {
        let Some(dir) = &self.pins else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_none_or(|name| !self.attached.contains_key(name))
            })
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count()
    }

    /// The interfaces the programs are attached to, by program.
    pub fn interfaces(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.attached
            .iter()
            .map(|(interface, (program, _))| (interface.as_str(), *program))
    }

    /// Attaches `program` at tcx ingress of `interface` unless the kernel lists it there.
    fn ensure_attached(&mut self, interface: &str, program: &'static str) -> Result<bool, Error> {
        let err = |action, source| Error::Interface {
            name: program,
            interface: interface.to_owned(),
            action,
            source: Box::new(source),
        };
        let id = self
            .ids
            .iter()
            .find(|(name, _)| *name == program)
            .map_or(0, |(_, id)| *id);
        let ifindex =
            ifindex(interface).map_err(|e| err("find", aya::programs::ProgramError::from(e)))?;
        if ingress_programs(interface)?.contains(&id) {
            return Ok(false);
        }
        // Ours is missing: a link recorded for the name belongs to a removed attachment or an
        // earlier interface of that name.
        self.forget(interface);
        let pin = self.pins.as_ref().map(|dir| dir.join(interface));
        let classifier = classifier(&mut self.ebpf, program)?;
        // A link an earlier run pinned for this interface gets our program in place.
        let adopted = pin.as_deref().and_then(|pin| {
            let old = PinnedLink::from_pin(pin).ok()?;
            // The fd keeps the link while it is pinned again below.
            let _ = std::fs::remove_file(pin);
            let link = SchedClassifierLink::try_from(FdLink::from(old)).ok()?;
            classifier.attach_to_link(link).ok()
        });
        let link = match adopted {
            // A link of an interface that was made anew is defunct: the update does not show.
            Some(link) if ingress_programs(interface)?.contains(&id) => link,
            stale => {
                if let Some(link) = stale {
                    let _ = classifier.detach(link);
                }
                classifier
                    .attach_with_options(
                        interface,
                        TcAttachType::Ingress,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(|e| err("attach (tcx ingress)", e))?
            }
        };
        let held = match pin {
            None => Held::Owned(link),
            Some(pin) => {
                let link = classifier
                    .take_link(link)
                    .map_err(|e| err("take the link of", e))?;
                let fd = FdLink::try_from(link).map_err(|e| Error::Pins {
                    path: pin.clone(),
                    action: "pin a link (not a BPF link) at",
                    source: std::io::Error::other(e),
                })?;
                Held::Pinned(fd.pin(&pin).map_err(|e| Error::Pins {
                    path: pin.clone(),
                    action: "pin a link at",
                    source: std::io::Error::other(e),
                })?)
            }
        };
        self.attached.insert(
            interface.to_owned(),
            (
                program,
                Attachment {
                    ifindex,
                    link: held,
                },
            ),
        );
        Ok(true)
    }

    /// Makes `wanted` (addresses of either family) the local endpoints; returns (set, removed).
    pub fn set_endpoints(
        &mut self,
        wanted: &BTreeMap<IpAddr, Endpoint>,
    ) -> Result<(usize, usize), Error> {
        let mut set = 0;
        for (&ip, endpoint) in wanted {
            if self.current.get(&ip) == Some(endpoint) {
                continue;
            }
            let result = match ip {
                IpAddr::V4(v4) => {
                    self.endpoints
                        .insert(u32::from_ne_bytes(v4.octets()), *endpoint, 0)
                }
                IpAddr::V6(v6) => self.endpoints6.insert(v6.octets(), *endpoint, 0),
            };
            result.map_err(|source| Error::Map {
                name: endpoints_map(ip),
                action: "insert",
                source,
            })?;
            self.current.insert(ip, *endpoint);
            set += 1;
        }
        let gone: Vec<IpAddr> = self
            .current
            .keys()
            .filter(|ip| !wanted.contains_key(ip))
            .copied()
            .collect();
        for &ip in &gone {
            let result = match ip {
                IpAddr::V4(v4) => self.endpoints.remove(&u32::from_ne_bytes(v4.octets())),
                IpAddr::V6(v6) => self.endpoints6.remove(&v6.octets()),
            };
            match result {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(Error::Map {
                        name: endpoints_map(ip),
                        action: "remove",
                        source,
                    });
                }
            }
            self.current.remove(&ip);
        }
        Ok((set, gone.len()))
    }

    /// Compares the kernel's endpoint tables with what was set and rewrites them if they
    /// differ (an entry changed by hand). Returns whether it had to.
    pub fn verify_endpoints(&mut self) -> Result<bool, Error> {
        let mut kernel = BTreeMap::new();
        for entry in self.endpoints.iter() {
            let (k, v) = entry.map_err(|source| Error::Map {
                name: FASTPATH_ENDPOINTS,
                action: "read",
                source,
            })?;
            kernel.insert(IpAddr::from(k.to_ne_bytes()), v);
        }
        for entry in self.endpoints6.iter() {
            let (k, v) = entry.map_err(|source| Error::Map {
                name: FASTPATH_ENDPOINTS6,
                action: "read",
                source,
            })?;
            kernel.insert(IpAddr::from(k), v);
        }
        if kernel == self.current {
            return Ok(false);
        }
        let wanted = std::mem::replace(&mut self.current, kernel);
        self.set_endpoints(&wanted)?;
        Ok(true)
    }

    /// The kernel ids of the programs, by name.
    pub fn program_ids(&self) -> [(&'static str, u32); 2] {
        self.ids
    }

    /// The endpoint count.
    pub fn endpoint_count(&self) -> usize {
        self.current.len()
    }

    /// The index an interface had when a program was attached to it.
    pub fn attached_ifindex(&self, interface: &str) -> Option<u32> {
        self.attached.get(interface).map(|(_, a)| a.ifindex)
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(FastpathStat, u64)>, Error> {
        FastpathStat::ALL
            .iter()
            .map(|&stat| Ok((stat, per_cpu_sum(&self.stats, FASTPATH_STATS, stat as u32)?)))
            .collect()
    }
}

/// The map holding endpoints of `ip`'s family.
fn endpoints_map(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        FASTPATH_ENDPOINTS
    } else {
        FASTPATH_ENDPOINTS6
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, Error> {
    crate::datapath::program(ebpf, name)
}

/// The ids of the programs attached at tcx ingress of `interface` (in this thread's network
/// namespace), in the order they run.
pub fn ingress_programs(interface: &str) -> Result<Vec<u32>, Error> {
    let (_, programs) =
        SchedClassifier::query_tcx(interface, TcAttachType::Ingress).map_err(|source| {
            Error::Interface {
                name: "tcx ingress",
                interface: interface.to_owned(),
                action: "query",
                source: Box::new(source),
            }
        })?;
    Ok(programs.iter().map(|p| p.id()).collect())
}

/// An interface's index in this process's network namespace.
pub fn ifindex(interface: &str) -> Result<u32, std::io::Error> {
    let name = std::ffi::CString::new(interface)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a name"))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()),
        index => Ok(index),
    }
}
