//! What a task's processes may see and do, set up between fork and exec:
//!
//! 1. its own cgroup (under the tasks' cgroup, where the control-plane guard is attached);
//! 2. its own network namespace on an overlay, where ports below 1024 are open to any user
//!    (`net.ipv4.ip_unprivileged_port_start = 0`, per namespace: the namespace is the task's);
//! 3. a private mount namespace: `/etc/netns/<ns>/*` over `/etc/*` (its resolv.conf, as
//!    `ip netns exec` does), `/sys` of its namespace, and the agent's state directory covered
//!    by an empty tmpfs in which only the task's own sandbox appears, at its usual path;
//! 4. the app's user (or the launcher's default), its groups, `no_new_privs`, and no ambient
//!    capabilities.
//!
//! Everything that allocates or may fail for ordinary reasons (user lookup, paths) is done
//! before fork in [`Confinement::new`]; the hook itself makes only system calls.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A user tasks run as, resolved on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one included.
    pub groups: Vec<u32>,
}

impl RunAs {
    /// Looks `name` up in this node's user database.
    pub fn lookup(name: &str) -> Result<Self, String> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| format!("looking up user {name:?}: {e}"))?
            .ok_or_else(|| {
                format!(
                    "there is no user {name:?} on this node; create it, or change the app's `user`"
                )
            })?;
        let cname = CString::new(name).map_err(|_| format!("user name {name:?} holds a NUL"))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|e| format!("reading the groups of user {name:?}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: groups.into_iter().map(|g| g.as_raw()).collect(),
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

fn cstring(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other(format!("NUL in the path {}", path.display())))
}

/// Everything the hook needs, prepared before fork.
pub struct Confinement {
    netns: Option<OwnedFd>,
    /// (source, target) bind mounts: the namespace's files over `/etc`.
    binds: Vec<(CString, CString)>,
    /// Covered with an empty tmpfs.
    hidden: CString,
    /// Directories to create in that tmpfs, outermost first, down to the sandbox.
    mkdirs: Vec<CString>,
    sandbox: CString,
    run_as: RunAs,
}

impl Confinement {
    /// Prepares the confinement of a task in `netns` (a name under /run/netns, or `None` on
    /// the host network), with `sandbox` under `hidden` (the agent's state directory), run as
    /// `run_as`.
    pub fn new(
        netns: Option<&str>,
        hidden: &Path,
        sandbox: &Path,
        run_as: RunAs,
    ) -> std::io::Result<Self> {
        let mut binds = Vec::new();
        let netns = match netns {
            Some(name) => {
                let etc = Path::new("/etc/netns").join(name);
                if let Ok(entries) = std::fs::read_dir(&etc) {
                    for entry in entries.flatten() {
                        let target = Path::new("/etc").join(entry.file_name());
                        if target.exists() {
                            binds.push((cstring(&entry.path())?, cstring(&target)?));
                        }
                    }
                }
                Some(std::fs::File::open(Path::new("/run/netns").join(name))?.into())
            }
            None => None,
        };
        let relative = sandbox.strip_prefix(hidden).map_err(|_| {
            std::io::Error::other(format!(
                "the sandbox {} is not under {}",
                sandbox.display(),
                hidden.display()
            ))
        })?;
        let mut mkdirs = Vec::new();
        let mut dir = hidden.to_path_buf();
        for part in relative.components() {
            dir.push(part);
            mkdirs.push(cstring(&dir)?);
        }
        Ok(Self {
            netns,
            binds,
            hidden: cstring(hidden)?,
            mkdirs,
            sandbox: cstring(sandbox)?,
            run_as,
        })
    }

    /// The `pre_exec` hook. It makes only async-signal-safe system calls and allocates
    /// nothing, as code between fork and exec must.
    pub fn hook(self) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        move || {
            // SAFETY: every call below is a system call on valid, NUL-terminated strings and
            // descriptors owned by `self`, which lives as long as the hook.
            unsafe { self.apply() }
        }
    }

    unsafe fn apply(&self) -> std::io::Result<()> {
        use libc::{c_void, syscall};
        let check = |r: libc::c_long| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        let null = std::ptr::null::<libc::c_char>();
        // The agent turned transparent huge pages off for itself (see `crate::memory`); the
        // task gets the system's policy.
        crate::memory::give_back_huge_pages()?;
        // SAFETY (whole block): see `hook`.
        unsafe {
            if let Some(ns) = &self.netns {
                check(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET).into())?;
                if !self.run_as.is_root() {
                    // Read in the namespace of the caller at open: the task's.
                    let path = c"/proc/sys/net/ipv4/ip_unprivileged_port_start";
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    check(fd.into())?;
                    let written = libc::write(fd, b"0\n".as_ptr().cast::<c_void>(), 2);
                    libc::close(fd);
                    check(written as libc::c_long)?;
                }
            }
            check(libc::unshare(libc::CLONE_NEWNS).into())?;
            // Nothing mounted here reaches the host.
            check(
                libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                )
                .into(),
            )?;
            if self.netns.is_some() {
                // /sys of the task's namespace (its interfaces), as `ip netns exec` shows it;
                // not fatal: the task runs without it.
                if libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH) == 0 {
                    libc::mount(
                        c"sysfs".as_ptr(),
                        c"/sys".as_ptr(),
                        c"sysfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    );
                }
            }
            for (source, target) in &self.binds {
                check(
                    libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        null,
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                    .into(),
                )?;
            }
            // The sandbox, detached before its parent is covered, then put back in the cover.
            let tree = syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                self.sandbox.as_ptr(),
                libc::OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
            );
            check(tree)?;
            check(
                libc::mount(
                    c"tmpfs".as_ptr(),
                    self.hidden.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    c"mode=0755,size=64k".as_ptr().cast::<c_void>(),
                )
                .into(),
            )?;
            for dir in &self.mkdirs {
                if libc::mkdir(dir.as_ptr(), 0o755) != 0
                    && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
            let moved = syscall(
                libc::SYS_move_mount,
                tree as libc::c_int,
                c"".as_ptr(),
                libc::AT_FDCWD,
                self.sandbox.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            );
            libc::close(tree as libc::c_int);
            check(moved)?;
            check(libc::chdir(self.sandbox.as_ptr()).into())?;
            if !self.run_as.is_root() {
                let groups = &self.run_as.groups;
                check(libc::setgroups(groups.len(), groups.as_ptr()).into())?;
                check(libc::setgid(self.run_as.gid).into())?;
                check(libc::setuid(self.run_as.uid).into())?;
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into())?;
            check(
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL,
                    0,
                    0,
                    0,
                )
                .into(),
            )?;
        }
        Ok(())
    }
}

/// Gives the sandbox and the files the launcher made in it to the task's user.
pub fn hand_over(sandbox: &Path, run_as: &RunAs) -> std::io::Result<()> {
    std::os::unix::fs::chown(sandbox, Some(run_as.uid), Some(run_as.gid))?;
    for name in ["stdout", "stderr"] {
        let path = sandbox.join(name);
        if path.exists() {
            std::os::unix::fs::chown(&path, Some(run_as.uid), Some(run_as.gid))?;
        }
    }
    Ok(())
}

/// The directory the tasks' sandboxes live in, under the state directory: what is hidden.
pub fn hidden_dir(tasks_root: &Path) -> PathBuf {
    tasks_root
        .parent()
        .map_or_else(|| tasks_root.to_path_buf(), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_with_their_groups() {
        let root = RunAs::lookup("root").unwrap();
        assert!(root.is_root() && root.groups.contains(&0));
        let nobody = RunAs::lookup("nobody").unwrap();
        assert!(!nobody.is_root());
        let err = RunAs::lookup("no-such-user-here").unwrap_err();
        assert!(err.contains("no user \"no-such-user-here\""), "{err}");
    }

    #[test]
    fn the_sandbox_must_be_under_the_hidden_dir() {
        let nobody = RunAs::lookup("nobody").unwrap();
        let c = Confinement::new(
            None,
            Path::new("/var/lib/dcnet"),
            Path::new("/var/lib/dcnet/tasks/t1"),
            nobody.clone(),
        )
        .unwrap();
        let dirs: Vec<&[u8]> = c.mkdirs.iter().map(|d| d.as_bytes()).collect();
        assert_eq!(
            dirs,
            [&b"/var/lib/dcnet/tasks"[..], b"/var/lib/dcnet/tasks/t1"]
        );
        assert!(Confinement::new(None, Path::new("/a"), Path::new("/b/t1"), nobody).is_err());
    }
}
