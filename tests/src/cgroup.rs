//! A cgroup (v2) made for one test, so eBPF programs are never attached to the root cgroup.
//! Dropping it kills whatever is still inside and removes it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where this machine mounts the cgroup v2 hierarchy.
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";
const PREFIX: &str = "dcnet-test-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A per-test cgroup under [`CGROUP2_ROOT`].
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// Creates `dcnet-test-<pid>-<n>-<label>`.
    pub fn create(label: &str) -> Result<Self> {
        sweep_leftovers();
        let root = Path::new(CGROUP2_ROOT);
        if !root.join("cgroup.procs").exists() {
            bail!("no cgroup v2 hierarchy at {CGROUP2_ROOT}");
        }
        let name = format!(
            "{PREFIX}{}-{}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = root.join(name);
        std::fs::create_dir(&path)
            .with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self { path })
    }

    /// The cgroup's directory (what BPF programs attach to).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `command`'s process join this cgroup before it execs.
    pub fn place(&self, command: &mut Command) {
        let join = dcnet_agent::launcher::process::join_cgroup(&self.path)
            .expect("test cgroup paths have no NUL");
        // SAFETY: `join` makes only async-signal-safe calls and allocates nothing.
        unsafe {
            command.pre_exec(join);
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove(&self.path);
        remove_v1_mirrors(&self.path);
    }
}

/// On a hybrid host runc also makes a container's cgroup v1 directories, at the same path in
/// every v1 hierarchy: removed (bottom up) with the test's v2 cgroup.
fn remove_v1_mirrors(v2: &Path) {
    let Ok(rel) = v2.strip_prefix(CGROUP2_ROOT) else {
        return;
    };
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let mirror = h.path().join(rel);
        if h.path() != Path::new(CGROUP2_ROOT) && mirror.is_dir() {
            remove_tree(&mirror);
        }
    }
}

fn remove_tree(path: &Path) {
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(path);
}

/// Kills everything in the cgroup at `path` and in its descendants (`cgroup.kill`).
pub fn kill_all(path: &Path) {
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
}

fn remove(path: &Path) {
    kill_all(path);
    // Children first: a cgroup with children cannot be removed.
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                remove(&entry.path());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(procs) = std::fs::read_to_string(path.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        match std::fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() >= deadline => {
                eprintln!("cannot remove cgroup {}: {e}", path.display());
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Removes test cgroups whose creating process is gone.
pub fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir(CGROUP2_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove(&entry.path());
            remove_v1_mirrors(&entry.path());
        }
    }
}
