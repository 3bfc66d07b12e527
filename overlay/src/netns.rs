//! Named network namespaces, kept alive by a bind mount at `/run/netns/<name>` exactly as
//! `ip netns add` does, so operators can inspect them with `ip netns exec`.
//!
//! A namespace is entered per thread (`setns(2)` with `CLONE_NEWNET` affects only the calling
//! thread), so [`Netns::run`] executes a closure on a short-lived thread inside the namespace and
//! the caller's own threads never move. Sockets created there stay bound to that namespace.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::{Error, Netlink};

/// Directory of named namespaces, shared with iproute2.
pub const NETNS_DIR: &str = "/run/netns";

/// A named network namespace. Dropping it does not delete it: call [`Netns::delete`].
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    file: File,
}

impl Netns {
    /// Creates a new, empty namespace (only a `lo`, down) named `name`.
    pub fn create(name: &str) -> Result<Self, Error> {
        validate_name(name)?;
        prepare_netns_dir()?;
        let path = Path::new(NETNS_DIR).join(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::NetnsExists(name.to_owned()),
                _ => Error::netns(name, "creating its mount point", e),
            })?;
        // unshare(CLONE_NEWNET) moves only this thread; the bind mount then pins the namespace
        // after the thread exits.
        let bound = std::thread::scope(|s| {
            s.spawn(|| -> Result<(), Error> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| Error::netns(name, "unshare", e))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| Error::netns(name, "bind-mounting", e))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        if let Err(e) = bound {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Self::open(name)
    }

    /// Opens an existing namespace by name.
    pub fn open(name: &str) -> Result<Self, Error> {
        validate_name(name)?;
        let path = Path::new(NETNS_DIR).join(name);
        let file = File::open(&path).map_err(|e| Error::netns(name, "opening", e))?;
        Ok(Self {
            name: name.to_owned(),
            path,
            file,
        })
    }

    /// Opens a namespace by path: a name under /run/netns, or any namespace file such as
    /// `/proc/<pid>/ns/net` (what container runtimes pass to CNI plugins).
    pub fn open_path(path: &Path) -> Result<Self, Error> {
        let name = path.to_string_lossy().into_owned();
        let file = File::open(path).map_err(|e| Error::netns(&name, "opening", e))?;
        // Refuse anything that is not a network namespace before a setns could fail later.
        setns_check(&file)
            .map_err(|e| Error::netns(&name, "checking it is a network namespace", e))?;
        Ok(Self {
            name,
            path: path.to_path_buf(),
            file,
        })
    }

    /// The name under /run/netns, if the namespace was opened from there (its `ip netns` name).
    pub fn netns_name(&self) -> Option<&str> {
        let name = self.path.strip_prefix(NETNS_DIR).ok()?.to_str()?;
        (!name.contains('/') && validate_name(name).is_ok()).then_some(name)
    }

    /// A netlink session inside this namespace, driven by the calling tokio runtime: the socket
    /// is opened on a thread inside the namespace and keeps acting there.
    pub fn open_netlink(&self) -> Result<Netlink, Error> {
        let runtime = tokio::runtime::Handle::current();
        let (connection, handle, _) = self
            .run(|| {
                let _entered = runtime.enter();
                rtnetlink::new_connection()
            })?
            .map_err(Error::Socket)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's bind mount.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file descriptor of the namespace (for `setns`, or to move links into it).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Moves the calling thread into this namespace. Meant for a child process between fork and
    /// exec (`CommandExt::pre_exec`), or a thread dedicated to the namespace.
    pub fn enter(&self) -> Result<(), Error> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::netns(&self.name, "setns", e))
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs an async netlink session inside this namespace, on its own single-threaded runtime.
    pub fn netlink<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        T: Send,
        F: FnOnce(Netlink) -> Fut + Send,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::Socket)?;
            runtime.block_on(async { f(Netlink::open()?).await })
        })?
    }

    /// Deletes the namespace: removes its name. The kernel frees it, with every link in it, once
    /// the last process inside has exited.
    pub fn delete(self) -> Result<(), Error> {
        delete_path(&self.name, &self.path)
    }

    /// Deletes a namespace by name without opening it (for sweeping leftovers).
    pub fn delete_by_name(name: &str) -> Result<(), Error> {
        validate_name(name)?;
        delete_path(name, &Path::new(NETNS_DIR).join(name))
    }

    /// Names of all namespaces under /run/netns.
    pub fn list() -> Result<Vec<String>, Error> {
        let entries = match fs::read_dir(NETNS_DIR) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Path {
                    path: NETNS_DIR.into(),
                    action: "listing",
                    source,
                });
            }
        };
        Ok(entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect())
    }
}

/// Whether `file` is a network namespace: statfs on an nsfs file works for every namespace
/// kind, so ask the kernel with the NS_GET_NSTYPE ioctl.
fn setns_check(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: the ioctl takes no argument and only reads the descriptor, which is open.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if kind != libc::CLONE_NEWNET {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a network namespace",
        ));
    }
    Ok(())
}

fn delete_path(name: &str, path: &Path) -> Result<(), Error> {
    // MNT_DETACH: succeed even while a process still has the namespace open.
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(Error::netns(name, "unmounting", e)),
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::netns(name, "removing its mount point", e)),
    }
    // Its per-namespace files (`ip netns exec`'s convention), such as the resolv.conf the
    // overlay writes, go with the name, as `ip netns delete` leaves them behind.
    match fs::remove_dir_all(Path::new("/etc/netns").join(name)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::netns(name, "removing /etc/netns/<name>", e)),
    }
}

fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidNetnsName(name.to_owned()))
    }
}

/// Makes /run/netns a shared mount point, as iproute2 does, so namespaces created here stay
/// visible to processes in other mount namespaces (e.g. under `ip netns exec`).
fn prepare_netns_dir() -> Result<(), Error> {
    let dir = Path::new(NETNS_DIR);
    fs::create_dir_all(dir).map_err(|source| Error::Path {
        path: dir.into(),
        action: "creating",
        source,
    })?;
    let make_shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if make_shared().is_ok() {
        return Ok(());
    }
    // Not yet a mount point: bind it onto itself first.
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .and_then(|()| make_shared())
    .map_err(|e| Error::Path {
        path: dir.into(),
        action: "making it a shared mount point",
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["a", "dct-123-n1", "x.y_z"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
