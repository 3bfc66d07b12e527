//! Errors of the load-balancer datapath.

use std::path::PathBuf;

/// A failure to load, attach or program the eBPF datapath.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The embedded object file was rejected (bad ELF, BTF, or map creation failed).
    #[error(
        "loading the embedded eBPF object failed (is this a kernel with BPF and BTF, and are we root?)"
    )]
    Load(#[source] aya::EbpfError),
    /// The object has no program of this name: the loader and `ebpf/programs` disagree.
    #[error("the eBPF object has no program named {0:?}")]
    MissingProgram(&'static str),
    /// The object has no map of this name: the loader and `ebpf/programs` disagree.
    #[error("the eBPF object has no map named {0:?}")]
    MissingMap(&'static str),
    /// The kernel refused to load or attach a program (the verifier log is in the source).
    #[error("eBPF program {name:?}: {action} failed")]
    Program {
        name: &'static str,
        action: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A program could not be attached to, queried on or detached from a cgroup.
    #[error(
        "eBPF program {name:?}: attaching to, querying or detaching from cgroup {cgroup:?} failed"
    )]
    Attach {
        name: &'static str,
        cgroup: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tc program could not be attached to, queried on or detached from an interface.
    #[error("eBPF program {name:?}: {action} on interface {interface:?} failed")]
    Interface {
        name: &'static str,
        interface: String,
        action: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The directory of pinned maps could not be set up or changed.
    #[error("BPF pins: cannot {action} {path:?}")]
    Pins {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The cgroup directory to attach to could not be opened.
    #[error("cannot open cgroup {path:?} (it must be a directory of the cgroup v2 hierarchy)")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The number of CPUs could not be read (per-CPU counters need it).
    #[error("cannot read the number of possible CPUs from /sys/devices/system/cpu/possible")]
    Cpus(#[source] std::io::Error),
    /// A map has no room left.
    #[error("eBPF map {map:?} is full ({capacity} entries): remove VIPs or backends")]
    Full { map: &'static str, capacity: u32 },
    /// A VIP has more backends taking connections than the datapath can choose among.
    #[error(
        "VIP {vip} has {count} backends with weight > 0; the datapath takes at most {max} per VIP"
    )]
    TooManyBackends {
        vip: crate::Vip,
        count: usize,
        max: u32,
    },
    /// A sock_diag (netlink) request about sockets failed.
    #[error("sock_diag: cannot {0} (the kernel needs CONFIG_INET_DIAG_DESTROY to destroy sockets)")]
    SockDiag(&'static str, #[source] std::io::Error),
    /// The kernel's program statistics could not be enabled.
    #[error("enabling BPF run-time statistics failed")]
    Stats(#[source] aya::sys::SyscallError),
    /// A VIP's backend is of the other address family.
    #[error(
        "VIP {vip} cannot have backend {backend}: a VIP's backends must be of its address family"
    )]
    FamilyMismatch {
        vip: crate::Vip,
        backend: std::net::SocketAddr,
    },
    /// The compiled network policies need more entries than a policy map holds.
    #[error(
        "network policies need {entries} entries in eBPF map {map:?}, which holds {capacity}: \
         merge or remove policies, or select fewer apps"
    )]
    PolicyTooLarge {
        map: &'static str,
        entries: usize,
        capacity: u32,
    },
    /// A map operation failed.
    #[error("eBPF map {name:?}: {action} failed")]
    Map {
        name: &'static str,
        action: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}
