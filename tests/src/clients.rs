//! The client programs users drive dcnet with, as the tests run them: marathon-python
//! (installed by `scripts/setup.sh` into a venv) through `tests/clients/marathon_client.py`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cluster::{Cluster, in_netns};

/// The venv's Python with marathon-python, as `scripts/setup.sh` makes it.
pub fn marathon_python() -> Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    let python = cache.join("dcnet/venv/bin/python");
    if !python.exists() {
        bail!(
            "{} is missing: run scripts/setup.sh (it installs marathon-python into that venv)",
            python.display()
        );
    }
    Ok(python)
}

/// marathon-python pointed at one Marathon API (an agent's, or the leading scheduler's),
/// run from inside one node's namespace.
pub struct MarathonPy<'a> {
    cluster: &'a Cluster,
    node: usize,
    url: String,
    /// The CA file for an `https` URL.
    ca: Option<PathBuf>,
    python: PathBuf,
    script: PathBuf,
}

impl<'a> MarathonPy<'a> {
    pub fn new(cluster: &'a Cluster, node: usize, url: &str, ca: Option<&Path>) -> Result<Self> {
        Ok(Self {
            cluster,
            node,
            url: url.to_owned(),
            ca: ca.map(Path::to_owned),
            python: marathon_python()?,
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/marathon_client.py"),
        })
    }

    /// Runs one step of the script; its JSON output, or an error with what it said.
    pub fn step(&self, args: &[&str]) -> Result<Value> {
        let token = self.cluster.admin_token().unwrap_or("-").to_owned();
        let ca = self
            .ca
            .as_deref()
            .and_then(Path::to_str)
            .unwrap_or("-")
            .to_owned();
        let mut command = Command::new(&self.python);
        command
            .arg(&self.script)
            .args([self.url.as_str(), token.as_str(), ca.as_str()])
            .args(args);
        in_netns(&mut command, &self.cluster.nodes[self.node].netns, true);
        let out = command
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        if !out.status.success() {
            bail!(
                "marathon-python step {args:?} against {} failed: {}",
                self.url,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "step {args:?} printed no JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}
