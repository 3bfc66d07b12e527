//! The client programs users drive dcnet with, as the tests run them: marathon-python
//! (installed by `scripts/setup.sh` into a venv) through `tests/clients/marathon_client.py`,
//! and `cnitool` (libcni, built by `scripts/setup.sh` from `third_party/cni`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cluster::{Cluster, in_netns};

/// `scripts/setup.sh`'s cache directory (`~/.cache/dcnet`).
fn setup_cache() -> Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(cache.join("dcnet"))
}

/// The venv's Python with marathon-python, as `scripts/setup.sh` makes it.
pub fn marathon_python() -> Result<PathBuf> {
    let python = setup_cache()?.join("venv/bin/python");
    if !python.exists() {
        bail!(
            "{} is missing: run scripts/setup.sh (it installs marathon-python into that venv)",
            python.display()
        );
    }
    Ok(python)
}

/// Where libcni keeps its cache of results (`/var/lib/cni/results/<network>-<id>-<ifname>`).
const LIBCNI_RESULTS: &str = "/var/lib/cni/results";

/// Debian's reference CNI plugins (containernetworking-plugins).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// cnitool as a container runtime on node `node` uses libcni: network configuration lists in a
/// directory of the test, `dcnet-cni` and Debian's reference plugins on `CNI_PATH`, run in the
/// node's namespace. Every network list it writes has a name unique to the test; libcni's
/// cached results of those names are removed on drop.
pub struct Cnitool<'a> {
    cluster: &'a Cluster,
    node: usize,
    tool: PathBuf,
    confs: tempfile::TempDir,
    plugins: tempfile::TempDir,
    names: Vec<String>,
}

/// What one cnitool run did.
#[derive(Debug)]
pub struct CniRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CniRun {
    /// The result JSON of an ADD.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "cnitool printed no JSON: {:?} {:?}",
                self.stdout, self.stderr
            )
        })
    }
}

impl<'a> Cnitool<'a> {
    pub fn new(cluster: &'a Cluster, node: usize) -> Result<Self> {
        let tool = setup_cache()?.join("bin/cnitool");
        if !tool.exists() {
            bail!(
                "{} is missing: run scripts/setup.sh (it builds cnitool from third_party/cni)",
                tool.display()
            );
        }
        let plugins = tempfile::tempdir()?;
        let plugin = crate::cluster::workspace_binary("dcnet-cni", "DCNET_CNI_BIN", "dcnet-cni")?;
        std::os::unix::fs::symlink(plugin, plugins.path().join("dcnet-cni"))?;
        Ok(Self {
            cluster,
            node,
            tool,
            confs: tempfile::tempdir()?,
            plugins,
            names: Vec::new(),
        })
    }

    /// Writes a network configuration list named `<label>-<pid>` of `version` with `plugins`;
    /// returns its name. A `dcnet-cni` entry without credentials gets the cluster's.
    pub fn network(&mut self, label: &str, version: &str, plugins: &[Value]) -> Result<String> {
        let name = format!("{label}-{}", std::process::id());
        let credentials = self.cluster.credentials_path().display().to_string();
        let plugins: Vec<Value> = plugins
            .iter()
            .cloned()
            .map(|mut p| {
                if p["type"] == "dcnet-cni" && p.get("credentials").is_none() {
                    p["credentials"] = credentials.clone().into();
                }
                p
            })
            .collect();
        let list = serde_json::json!({ "cniVersion": version, "name": name, "plugins": plugins });
        std::fs::write(
            self.confs.path().join(format!("{name}.conflist")),
            serde_json::to_vec_pretty(&list)?,
        )?;
        self.names.push(name.clone());
        Ok(name)
    }

    /// `cnitool <verb> <network> <netns>` with `CNI_IFNAME=ifname` and, if given, `CAP_ARGS`.
    pub fn run(
        &self,
        verb: &str,
        network: &str,
        netns: &Path,
        ifname: &str,
        cap_args: Option<&Value>,
    ) -> Result<CniRun> {
        let cni_path = format!("{}:{REFERENCE_PLUGINS}", self.plugins.path().display());
        let mut command = Command::new(&self.tool);
        command
            .args([verb, network])
            .arg(netns)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NETCONFPATH", self.confs.path())
            .env("CNI_PATH", cni_path)
            .env("CNI_IFNAME", ifname);
        if let Some(cap) = cap_args {
            command.env("CAP_ARGS", cap.to_string());
        }
        in_netns(&mut command, &self.cluster.nodes[self.node].netns, true);
        let out = command.output().context("running cnitool")?;
        Ok(CniRun {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

impl Drop for Cnitool<'_> {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(LIBCNI_RESULTS) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if self
                .names
                .iter()
                .any(|n| file.starts_with(&format!("{n}-")))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
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

/// Where tests leave what a person looks at after a run (screenshots):
/// `target/test-artifacts/<what>`.
pub fn artifacts_dir(what: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts").join(what);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Debian's Chromium, headless, driven by Playwright (`tests/clients/browser.py`, in the venv
/// `scripts/setup.sh` makes) inside a node's network namespace: what an operator's browser
/// does, on the node. One command at a time; each answer within a minute or the browser is
/// taken for hung. Closed on drop, and its whole process group killed.
pub struct Browser {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    answers: std::sync::mpsc::Receiver<std::io::Result<String>>,
}

impl Browser {
    pub fn start(cluster: &Cluster, node: usize) -> Result<Self> {
        use std::io::BufRead as _;
        use std::process::Stdio;
        if !Path::new("/usr/bin/chromium").exists() {
            bail!(
                "/usr/bin/chromium is missing: run scripts/setup.sh (it installs Debian's chromium)"
            );
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/browser.py");
        let mut command = Command::new(marathon_python()?);
        command
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Its own process group: Playwright's driver and Chromium's processes are killed with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        in_netns(&mut command, &cluster.nodes[node].netns, true);
        let mut child = command.spawn().context("starting the browser driver")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            answers,
        })
    }

    /// Sends one command (see the script's doc) and returns its value.
    pub fn command(&mut self, command: Value) -> Result<Value> {
        use std::io::Write as _;
        writeln!(self.stdin, "{command}").context("the browser driver is gone")?;
        let line = self
            .answers
            .recv_timeout(std::time::Duration::from_secs(60))
            .with_context(|| format!("no answer from the browser to {command}"))?
            .context("reading the browser's answer")?;
        let answer: Value = serde_json::from_str(&line)
            .with_context(|| format!("the browser driver printed {line:?}"))?;
        if answer["ok"] != Value::Bool(true) {
            bail!("browser: {command} failed: {}", answer["error"]);
        }
        Ok(answer["value"].clone())
    }

    pub fn goto(&mut self, url: &str) -> Result<()> {
        self.command(serde_json::json!({"op": "goto", "url": url}))
            .map(drop)
    }

    pub fn fill(&mut self, selector: &str, value: &str) -> Result<()> {
        self.command(serde_json::json!({"op": "fill", "selector": selector, "value": value}))
            .map(drop)
    }

    pub fn click(&mut self, selector: &str) -> Result<()> {
        self.command(serde_json::json!({"op": "click", "selector": selector}))
            .map(drop)
    }

    /// Waits (up to 10 s) for `selector` to be visible.
    pub fn wait(&mut self, selector: &str) -> Result<()> {
        self.command(serde_json::json!({"op": "wait", "selector": selector}))
            .map(drop)
    }

    pub fn text(&mut self, selector: &str) -> Result<String> {
        let v = self.command(serde_json::json!({"op": "text", "selector": selector}))?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The cell texts of each body row of the table `selector`.
    pub fn table(&mut self, selector: &str) -> Result<Vec<Vec<String>>> {
        let v = self.command(serde_json::json!({"op": "table", "selector": selector}))?;
        serde_json::from_value(v).context("a table's rows")
    }

    pub fn eval(&mut self, js: &str) -> Result<Value> {
        self.command(serde_json::json!({"op": "eval", "js": js}))
    }

    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        self.command(serde_json::json!({"op": "screenshot", "path": path}))
            .map(drop)
    }

    /// The page's console messages and errors so far.
    pub fn console(&mut self) -> Result<Vec<String>> {
        let v = self.command(serde_json::json!({"op": "console"}))?;
        serde_json::from_value(v).context("console messages")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        use std::io::Write as _;
        let _ = writeln!(self.stdin, "{}", serde_json::json!({"op": "quit"}));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Whatever of the group is left (all of it if the driver hung).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: a plain kill(2) of the process group this struct started.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}
