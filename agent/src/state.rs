//! The agent's state directory: small files that must survive restarts (node identity, and in
//! later modules leases and app definitions), written atomically, and an exclusive lock so that
//! two agents never share one directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::Error;

/// The directory of the state directory on a BPF filesystem (the agent mounts one there if
/// needed, see [`dcnet_lb::pins`]): the load balancer's socket tables and the overlay fast
/// path's links are pinned there, so they outlive the agent.
pub const BPF_DIR: &str = "bpf";

/// An open, locked state directory. The lock is released when this is dropped (or the process
/// dies), so a crashed agent never blocks its successor.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: Flock<File>,
}

impl StateDir {
    /// Creates `path` if needed (mode 0700) and locks it.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let state_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::State {
                action,
                path,
                source,
            }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(state_err("creating", path))?;
        let lock_path = path.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(state_err("opening", &lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                Error::StateLocked {
                    path: path.to_path_buf(),
                }
            } else {
                Error::State {
                    action: "locking",
                    path: lock_path.clone(),
                    source: errno.into(),
                }
            }
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file `name`, or `None` if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<String>, Error> {
        let path = self.path.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::State {
                action: "reading",
                path,
                source,
            }),
        }
    }

    /// Replaces the file `name` with `contents` atomically: a reader (or a crash) sees either the
    /// old or the new contents, never a mix.
    pub fn write(&self, name: &str, contents: &str) -> Result<(), Error> {
        let path = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        write_atomically(&path, &tmp, contents.as_bytes(), 0o600).map_err(|source| {
            Error::State {
                action: "writing",
                path: path.clone(),
                source,
            }
        })?;
        // The rename itself is durable only once the directory is synced.
        File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| Error::State {
                action: "syncing",
                path: self.path.clone(),
                source,
            })
    }
}

/// Replaces `path` with `contents` through `tmp` (same directory, created with `mode`, synced,
/// renamed over `path`). If anything fails, `tmp` is removed: a full disk leaves no empty or
/// half-written file behind.
pub fn write_atomically(
    path: &Path,
    tmp: &Path,
    contents: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let written = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(tmp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_and_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("s")).unwrap();
        assert_eq!(state.read("x").unwrap(), None);
        state.write("x", "one").unwrap();
        state.write("x", "two").unwrap();
        assert_eq!(state.read("x").unwrap().as_deref(), Some("two"));
        let err = StateDir::open(&dir.path().join("s")).unwrap_err();
        assert!(matches!(err, Error::StateLocked { .. }), "{err}");
        drop(state);
        StateDir::open(&dir.path().join("s")).unwrap();
    }
}
