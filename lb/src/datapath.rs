//! Loads dcnet's socket-hook programs and owns their maps.
//!
//! The object is built from `ebpf/programs` by this crate's build script and embedded, so the
//! binary carries a datapath that matches its own map layouts. Programs are attached to one
//! cgroup (v2): on a node that is the root cgroup, in tests a cgroup made for the test. Dropping
//! the [`Datapath`] detaches everything it attached.

use std::fs::File;
use std::net::SocketAddrV4;
use std::path::Path;

use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use dcnet_ebpf_common::{Backend4, PROTO_TCP, PROTO_UDP, VIPS4, Vip4Key};

use crate::Error;

/// The object file produced by `lb/build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dcnet-ebpf"));

/// Programs of the object, by the function names in `ebpf/programs`.
const SOCK_ADDR_PROGRAMS: &[&str] = &["connect4"];

/// Transport protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }
}

/// The loaded eBPF datapath and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    vips4: HashMap<MapData, Vip4Key, Backend4>,
}

impl Datapath {
    /// Loads the embedded object into the kernel and verifies its programs (not yet attached).
    pub fn load() -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(Error::Load)?;
        for &name in SOCK_ADDR_PROGRAMS {
            sock_addr_program(&mut ebpf, name)?
                .load()
                .map_err(|source| Error::Program {
                    name,
                    action: "load",
                    source,
                })?;
        }
        let map = ebpf.take_map(VIPS4).ok_or(Error::MissingMap(VIPS4))?;
        let vips4 = HashMap::try_from(map).map_err(|source| Error::Map {
            name: VIPS4,
            action: "open",
            source,
        })?;
        Ok(Self { ebpf, vips4 })
    }

    /// Attaches every program to the cgroup v2 directory `cgroup`, alongside programs others
    /// attached there: on kernels ≥ 5.7 aya attaches through a BPF link, which always coexists
    /// with other programs and refuses any attach flag (so the mode is `Single`, i.e. flags 0).
    pub fn attach(&mut self, cgroup: &Path) -> Result<(), Error> {
        let dir = File::open(cgroup).map_err(|source| Error::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
        for &name in SOCK_ADDR_PROGRAMS {
            sock_addr_program(&mut self.ebpf, name)?
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(|source| Error::Program {
                    name,
                    action: "attach",
                    source,
                })?;
        }
        Ok(())
    }

    /// Sends new connections to `vip` over `protocol` to `backend` instead.
    pub fn insert_vip4(
        &mut self,
        vip: SocketAddrV4,
        protocol: Protocol,
        backend: SocketAddrV4,
    ) -> Result<(), Error> {
        let key = Vip4Key::new(vip.ip().octets(), vip.port(), protocol.number());
        let value = Backend4::new(backend.ip().octets(), backend.port());
        self.vips4
            .insert(key, value, 0)
            .map_err(|source| Error::Map {
                name: VIPS4,
                action: "insert",
                source,
            })
    }

    /// Stops translating `vip`; connections to it then go to the VIP address itself.
    pub fn remove_vip4(&mut self, vip: SocketAddrV4, protocol: Protocol) -> Result<(), Error> {
        let key = Vip4Key::new(vip.ip().octets(), vip.port(), protocol.number());
        self.vips4.remove(&key).map_err(|source| Error::Map {
            name: VIPS4,
            action: "remove",
            source,
        })
    }
}

fn sock_addr_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram(name))?
        .try_into()
        .map_err(|source| Error::Program {
            name,
            action: "type check",
            source,
        })
}
