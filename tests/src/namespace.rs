//! One network namespace for a test, with `lo` up and nothing else: no route out, so clients
//! run inside can only reach what the test starts there. Deleted on drop, with its
//! `/etc/netns/<name>/` files (which `ip netns exec` mounts over `/etc`, e.g. a resolv.conf so
//! glibc clients inside ask a server of the test, never the machine's own).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use dcnet_overlay::Netns;

use crate::cluster::{NETNS_PREFIX, in_netns, require_root, sweep_leftovers};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace owned by one test.
pub struct TestNamespace {
    netns: Option<Netns>,
    etc: PathBuf,
}

impl TestNamespace {
    /// Creates `dcn-<pid>-t<n>-<label>` with `lo` up.
    pub fn create(label: &str) -> Result<Self> {
        require_root()?;
        sweep_leftovers();
        let name = format!(
            "{NETNS_PREFIX}{}-t{}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let netns = Netns::create(&name)?;
        netns.netlink(|nl| async move { nl.set_up("lo").await })?;
        Ok(Self {
            etc: Path::new("/etc/netns").join(&name),
            netns: Some(netns),
        })
    }

    /// The namespace.
    pub fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("alive until drop")
    }

    /// Writes the resolv.conf that `ip netns exec` shows to programs in this namespace.
    pub fn set_resolv_conf(&self, text: &str) -> Result<()> {
        std::fs::create_dir_all(&self.etc)?;
        std::fs::write(self.etc.join("resolv.conf"), text)
            .context("writing the namespace's resolv.conf")
    }

    /// Runs a program inside (setns only; the machine's /etc is seen).
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut command = Command::new(program);
        command.args(args);
        in_netns(&mut command, self.netns(), true);
        command
            .output()
            .with_context(|| format!("running {program}"))
    }

    /// Runs a program through `ip netns exec`, which also mounts `/etc/netns/<name>/` files
    /// (the resolv.conf) over `/etc`.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", self.netns().name(), program])
            .args(args)
            .output()
            .with_context(|| format!("running {program} with ip netns exec"))
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if let Some(netns) = self.netns.take() {
            let _ = netns.delete();
        }
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}
