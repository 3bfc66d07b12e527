//! Attaching cgroup programs so that they outlive the process: `BPF_PROG_ATTACH` with
//! `BPF_F_ALLOW_MULTI`, which the cgroup holds (a BPF link, aya's way on kernels ≥ 5.7, ends
//! with the process's file descriptors), and retiring an earlier run's programs once this
//! run's are in place, so a cgroup is never without them. The guard and the load balancer's
//! datapath both work this way: tasks, and VIP clients, outlive the agent.

use std::collections::BTreeSet;
use std::os::fd::AsFd as _;
use std::path::Path;

use crate::Error;

/// Opens the cgroup v2 directory `cgroup`.
pub(crate) fn open_cgroup(cgroup: &Path) -> Result<std::fs::File, Error> {
    std::fs::File::open(cgroup).map_err(|source| Error::Cgroup {
        path: cgroup.to_path_buf(),
        source,
    })
}

/// Attaches the loaded `programs` (name, attach type) of `ebpf` to `cgroup`, so that the
/// cgroup holds them.
pub(crate) fn attach_all(
    ebpf: &aya::Ebpf,
    programs: &[(&'static str, u32)],
    cgroup: &Path,
) -> Result<(), Error> {
    let dir = open_cgroup(cgroup)?;
    for &(name, attach_type) in programs {
        let fd = program(ebpf, name)?.fd().map_err(|source| Error::Program {
            name,
            action: "open",
            source,
        })?;
        bpf::prog_attach(&dir, fd.as_fd(), attach_type).map_err(|source| Error::Attach {
            name,
            cgroup: cgroup.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// The kernel's ids of the loaded `programs` of `ebpf`.
pub(crate) fn program_ids(
    ebpf: &aya::Ebpf,
    programs: &[(&'static str, u32)],
) -> Result<BTreeSet<u32>, Error> {
    programs
        .iter()
        .map(|&(name, _)| {
            let info = program(ebpf, name)?
                .info()
                .map_err(|source| Error::Program {
                    name,
                    action: "read info",
                    source,
                })?;
            Ok(info.id())
        })
        .collect()
}

fn program<'a>(
    ebpf: &'a aya::Ebpf,
    name: &'static str,
) -> Result<&'a aya::programs::Program, Error> {
    ebpf.program(name).ok_or(Error::MissingProgram(name))
}

/// Detaches from `cgroup` the programs named as in `programs` (name, attach type) whose ids
/// are not in `keep`; returns how many. Programs of other names are never touched.
pub(crate) fn retire(
    cgroup: &Path,
    programs: &[(&'static str, u32)],
    keep: &BTreeSet<u32>,
) -> Result<usize, Error> {
    let dir = open_cgroup(cgroup)?;
    let mut retired = 0;
    for &(name, attach_type) in programs {
        let attached = bpf::prog_query(&dir, attach_type).map_err(|source| Error::Attach {
            name,
            cgroup: cgroup.to_path_buf(),
            source,
        })?;
        let others: BTreeSet<u32> = attached
            .into_iter()
            .filter(|id| !keep.contains(id))
            .collect();
        if others.is_empty() {
            continue;
        }
        let infos = aya::programs::loaded_programs()
            .flatten()
            .filter(|info| others.contains(&info.id()) && info.name_as_str() == Some(name));
        for info in infos {
            let Ok(fd) = info.fd() else { continue };
            bpf::prog_detach(&dir, fd.as_fd(), attach_type).map_err(|source| Error::Attach {
                name,
                cgroup: cgroup.to_path_buf(),
                source,
            })?;
            retired += 1;
        }
    }
    Ok(retired)
}

/// The `bpf(2)` commands aya keeps to itself: attaching with `BPF_PROG_ATTACH` (aya uses
/// links on kernels ≥ 5.7, which end with the process), querying and detaching. Layouts are
/// `union bpf_attr`'s, include/uapi/linux/bpf.h.
pub(crate) mod bpf {
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_PROG_DETACH: libc::c_long = 9;
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

    /// `attr` of BPF_PROG_ATTACH and BPF_PROG_DETACH.
    #[repr(C)]
    #[derive(Default)]
    struct AttachAttr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
    }

    /// `attr` of BPF_PROG_QUERY.
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }

    fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<()> {
        // SAFETY: `attr` is a `bpf_attr` prefix of the command's layout, alive for the call;
        // the kernel reads (and for queries writes) only `size_of::<T>()` bytes of it and the
        // buffers it points at.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                std::ptr::from_mut(attr),
                std::mem::size_of::<T>(),
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn prog_attach(
        cgroup: &impl AsFd,
        prog: BorrowedFd<'_>,
        attach_type: u32,
    ) -> std::io::Result<()> {
        bpf(
            BPF_PROG_ATTACH,
            &mut AttachAttr {
                target_fd: cgroup.as_fd().as_raw_fd() as u32,
                attach_bpf_fd: prog.as_raw_fd() as u32,
                attach_type,
                attach_flags: BPF_F_ALLOW_MULTI,
                ..AttachAttr::default()
            },
        )
    }

    pub fn prog_detach(
        cgroup: &impl AsFd,
        prog: BorrowedFd<'_>,
        attach_type: u32,
    ) -> std::io::Result<()> {
        bpf(
            BPF_PROG_DETACH,
            &mut AttachAttr {
                target_fd: cgroup.as_fd().as_raw_fd() as u32,
                attach_bpf_fd: prog.as_raw_fd() as u32,
                attach_type,
                ..AttachAttr::default()
            },
        )
    }

    /// The ids of the programs attached to `cgroup` itself for `attach_type`.
    pub fn prog_query(cgroup: &impl AsFd, attach_type: u32) -> std::io::Result<Vec<u32>> {
        let mut ids = vec![0u32; 64];
        loop {
            let mut attr = QueryAttr {
                target_fd: cgroup.as_fd().as_raw_fd() as u32,
                attach_type,
                prog_ids: ids.as_mut_ptr() as u64,
                prog_cnt: ids.len() as u32,
                ..QueryAttr::default()
            };
            match bpf(BPF_PROG_QUERY, &mut attr) {
                Ok(()) => {
                    ids.truncate(attr.prog_cnt as usize);
                    return Ok(ids);
                }
                // More than fit: the kernel said how many.
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOSPC)
                        && attr.prog_cnt as usize > ids.len() =>
                {
                    ids = vec![0u32; attr.prog_cnt as usize];
                }
                Err(e) => return Err(e),
            }
        }
    }
}
