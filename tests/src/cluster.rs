//! A dcnet cluster on one machine: an underlay bridge in a namespace of its own, one network
//! namespace per node wired to it by a veth pair, and a real `dcnet agent` in each.
//!
//! ```text
//!   dcn-<tag>-u:  br0 ── n1 ─┐  n2 ─┐  n3 ─┐
//!                            │      │      │   (veth pairs)
//!   dcn-<tag>-1:        eth0 10.200.0.1/24 ...  lo, agent API 127.0.0.1:62080
//! ```
//!
//! No namespace has a default route, so nothing a test sends can leave the machine. Names carry
//! the test process id and a counter, so tests run in parallel; [`Cluster`]'s `Drop` stops the
//! agents and deletes the namespaces also when a test panics, printing the agents' logs first;
//! and [`sweep_leftovers`] removes what a killed test process could not.

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_overlay::Netns;
use serde::de::DeserializeOwned;

/// Prefix of every namespace the harness creates: `dcn-<pid>-<n>-...`.
pub const NETNS_PREFIX: &str = "dcn-";
/// Port of each agent's API inside its namespace.
pub const API_PORT: u16 = 62080;
/// Gossip port of each agent.
pub const GOSSIP_PORT: u16 = 62501;
/// Where a kept cluster ([`Cluster::keep`]) is marked, one empty file per cluster tag: the
/// leftover sweep leaves a marked cluster alone although the process that made it is gone, and
/// the printed stop commands remove the mark. In /run, so a reboot (which takes the
/// namespaces too) forgets it.
pub const KEPT_DIR: &str = "/run/dcnet-kept";

/// Address of the outsider ([`Cluster::add_outsider`]) on the underlay.
pub const OUTSIDER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 250);

static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

/// How one node of the cluster is configured.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    pub region: Option<String>,
    pub zone: Option<String>,
    /// Defaults to `["agent"]`; node 1 is always a seed.
    pub roles: Vec<String>,
    /// A cluster secret other than the cluster's (to test authentication).
    pub secret: Option<String>,
    /// Extra lines inside the node's `[dns]` table.
    pub dns_config: String,
    /// Extra lines inside the node's `[gossip]` table.
    pub gossip_config: String,
    /// Extra top-level lines (before any table), e.g. `fault_domain_detect = "..."`.
    pub top_config: String,
    /// Extra lines inside the node's `[launcher]` table (agents), e.g. `role = "slave_public"`.
    pub launcher_config: String,
    /// Extra lines for the node's config file (after every table the harness writes).
    /// `{cgroup}` stands for the node's cgroup.
    pub extra_config: String,
}

/// Options for [`Cluster::start`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: Vec<NodeSpec>,
    /// Run with `[auth] insecure = true` (no credentials, plain HTTP).
    pub insecure: bool,
    /// Kill the agents when the process that started them dies (tests); the demo's `--keep`
    /// turns this off so the cluster outlives it.
    pub die_with_parent: bool,
    /// Gossip interval written into every config.
    pub gossip_interval: &'static str,
    /// The nodes also get IPv6 addresses on the underlay ([`node_address6`]) and advertise
    /// those: gossip and the overlay's VXLAN run over IPv6.
    pub underlay6: bool,
    /// Put the nodes on another cluster's underlay ([`Cluster::shared_underlay`]) instead of
    /// one of their own: two clusters that reach each other, as neighbouring datacenters do.
    pub underlay: Option<SharedUnderlay>,
}

/// Another cluster's underlay bridge, and the node number this cluster's nodes start at
/// there (their addresses are [`node_address`] of `first + i`).
#[derive(Debug, Clone)]
pub struct SharedUnderlay {
    netns: String,
    pub first: usize,
}

impl ClusterOptions {
    /// `n` agent nodes with default settings.
    pub fn nodes(n: usize) -> Self {
        Self {
            nodes: vec![NodeSpec::default(); n],
            insecure: false,
            die_with_parent: true,
            gossip_interval: "200ms",
            underlay6: false,
            underlay: None,
        }
    }
}

/// One node: its namespace, address, files and agent process.
pub struct Node {
    pub index: usize,
    pub name: String,
    pub address: Ipv4Addr,
    /// With [`ClusterOptions::underlay6`]: the IPv6 address the agent advertises.
    pub address6: Option<std::net::Ipv6Addr>,
    pub netns: Netns,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub state_dir: PathBuf,
    /// The node's own cgroup: its agent runs in it and its launcher puts tasks (and the
    /// control-plane guard) under `<cgroup>/`[`TASKS_CGROUP`], so killing the node kills its tasks, as
    /// on a real machine.
    pub cgroup: Option<crate::TestCgroup>,
    process: Option<Child>,
}

impl Node {
    /// Whether the agent process is running (started and not yet exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.process.as_mut().map(|p| p.try_wait()), Some(Ok(None)))
    }

    /// The agent's pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }
}

/// `NodeSpec::extra_config` for a node with the overlay (lease settle 1 s) and the load
/// balancer on the node's cgroup.
pub const OVERLAY_AND_LB: &str = "\n[overlay]\nenabled = true\nlease_settle = \"1s\"\n\n[lb]\nenabled = true\ncgroup = \"{cgroup}\"\n";

/// The directory of a node's task cgroups under its own cgroup. Not `tasks`: on a hybrid
/// host runc mirrors a container's cgroup path into the v1 hierarchies, where every cgroup
/// has a file of that name.
pub const TASKS_CGROUP: &str = "dcnet-tasks";

/// A running cluster; dropping it tears everything down.
pub struct Cluster {
    tag: String,
    underlay: Option<Netns>,
    /// Another cluster's underlay this one's nodes are on (not removed with this one).
    joined: Option<Netns>,
    /// A host on the underlay that is no node ([`Cluster::add_outsider`]).
    outsider: Option<Netns>,
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
    dcnet: PathBuf,
    die_with_parent: bool,
    keep: bool,
    /// The `Authorization` value of the cluster's admin credential (none when insecure).
    admin: Option<String>,
}

impl Cluster {
    /// Builds the namespaces and links, writes configs, and starts every agent.
    pub fn start(options: ClusterOptions) -> Result<Self> {
        require_root()?;
        sweep_leftovers();
        let dcnet = dcnet_binary()?;
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("dcnet-cluster-{tag}-"))
            .tempdir()
            .context("creating the cluster's temp dir")?;
        let mut cluster = Self {
            tag: tag.clone(),
            underlay: None,
            joined: None,
            outsider: None,
            nodes: Vec::new(),
            dir,
            dcnet,
            die_with_parent: options.die_with_parent,
            keep: false,
            admin: None,
        };
        if !options.insecure {
            cluster.admin = Some(cluster.make_credentials()?);
        }
        cluster.build_network(
            options.nodes.len(),
            options.underlay6,
            options.underlay.as_ref(),
        )?;
        for node in &mut cluster.nodes {
            node.cgroup = Some(crate::TestCgroup::create(&format!(
                "node{}",
                node.index + 1
            ))?);
        }
        cluster.write_configs(&options)?;
        for i in 0..cluster.nodes.len() {
            cluster.start_agent(i)?;
        }
        Ok(cluster)
    }

    /// The cluster's keys (`<dir>/pki`) and an admin credential file (`<dir>/credentials`),
    /// as an operator makes them with `dcnet auth init`; returns its `Authorization` value.
    fn make_credentials(&self) -> Result<String> {
        let pki = dcnet_auth::PkiDir::new(self.pki_dir());
        pki.init(&self.tag)?;
        let token = self.token_with(
            dcnet_auth::Role::Admin,
            "harness",
            Duration::from_secs(86_400),
        )?;
        dcnet_auth::client::write(
            &self.credentials_path(),
            &dcnet_auth::client::CredentialFile {
                token: Some(token.clone()),
                ..Default::default()
            },
        )?;
        Ok(dcnet_auth::credential::token_header(&token))
    }

    /// The admin token (what follows `token=` in [`Self::authorized`]'s header), if secure.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin.as_deref()?.strip_prefix("token=")
    }

    /// The cluster's key material.
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// A path for a test's own file, in the cluster's directory: removed with the cluster.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The admin credential file the CLI is given (`DCNET_CREDENTIALS`).
    pub fn credentials_path(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// A token signed with the cluster's key (offline, as `dcnet auth token create --offline`).
    pub fn token_with(
        &self,
        role: dcnet_auth::Role,
        subject: &str,
        ttl: Duration,
    ) -> Result<String> {
        let signer = dcnet_auth::PkiDir::new(self.pki_dir()).signer()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        Ok(signer.issue(subject, role, ttl, now)?.0)
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> Result<String> {
        Ok(dcnet_auth::PkiDir::new(self.pki_dir()).ca_pem()?)
    }

    /// This cluster's underlay, for another cluster's nodes to join from node number `first`
    /// on (leave room for this cluster's own).
    pub fn shared_underlay(&self, first: usize) -> Result<SharedUnderlay> {
        let netns = self
            .underlay
            .as_ref()
            .or(self.joined.as_ref())
            .context("the underlay is gone")?;
        Ok(SharedUnderlay {
            netns: netns.name().to_owned(),
            first,
        })
    }

    fn build_network(
        &mut self,
        n: usize,
        underlay6: bool,
        shared: Option<&SharedUnderlay>,
    ) -> Result<()> {
        let first = shared.map_or(0, |s| s.first);
        match shared {
            Some(shared) => self.joined = Some(Netns::open(&shared.netns)?),
            None => {
                let underlay = Netns::create(&format!("{NETNS_PREFIX}{}-u", self.tag))?;
                underlay.netlink(|nl| async move {
                    nl.set_up("lo").await?;
                    nl.add_bridge("br0").await?;
                    nl.set_up("br0").await
                })?;
                self.underlay = Some(underlay);
            }
        }
        for i in 0..n {
            let netns = Netns::create(&format!("{NETNS_PREFIX}{}-{}", self.tag, i + 1))?;
            let address = node_address(first + i);
            let port = format!("n{}", first + i + 1);
            let underlay = self
                .underlay
                .as_ref()
                .or(self.joined.as_ref())
                .expect("just made");
            underlay.netlink(|nl| {
                let (port, netns) = (port.clone(), &netns);
                async move {
                    nl.add_veth(&port, "eth0", Some(netns)).await?;
                    nl.set_controller(&port, "br0").await?;
                    nl.set_up(&port).await
                }
            })?;
            let address6 = underlay6.then(|| node_address6(first + i));
            netns.netlink(|nl| async move {
                nl.set_up("lo").await?;
                nl.add_address("eth0", IpAddr::V4(address), 24).await?;
                if let Some(address6) = address6 {
                    nl.add_address("eth0", IpAddr::V6(address6), 64).await?;
                }
                nl.set_up("eth0").await
            })?;
            let dir = self.dir.path().join(format!("node-{}", i + 1));
            fs::create_dir_all(&dir)?;
            self.nodes.push(Node {
                index: i,
                name: format!("node-{}", i + 1),
                address,
                address6,
                netns,
                config_path: dir.join("agent.toml"),
                log_path: dir.join("agent.log"),
                state_dir: dir.join("state"),
                cgroup: None,
                process: None,
            });
        }
        Ok(())
    }

    fn write_configs(&self, options: &ClusterOptions) -> Result<()> {
        let secret_path = self.dir.path().join("cluster-secret");
        write_private(&secret_path, &format!("cluster-secret-of-{}\n", self.tag))?;
        let first = self.nodes.first().context("a cluster of no nodes")?;
        let (seed, listen) = match first.address6 {
            Some(address6) => (
                SocketAddr::new(IpAddr::V6(address6), GOSSIP_PORT),
                format!("[::]:{GOSSIP_PORT}"),
            ),
            None => (
                SocketAddr::new(IpAddr::V4(first.address), GOSSIP_PORT),
                format!("0.0.0.0:{GOSSIP_PORT}"),
            ),
        };
        for (node, spec) in self.nodes.iter().zip(&options.nodes) {
            let secret_file = match &spec.secret {
                Some(secret) => {
                    let path = node.config_path.with_file_name("other-secret");
                    write_private(&path, secret)?;
                    path
                }
                None => secret_path.clone(),
            };
            let roles = if spec.roles.is_empty() {
                vec!["agent".to_owned()]
            } else {
                spec.roles.clone()
            };
            let mut text = format!(
                "name = \"{}\"\naddress = \"{}\"\nstate_dir = \"{}\"\nroles = {:?}\n",
                node.name,
                node.address6.map_or(IpAddr::V4(node.address), IpAddr::V6),
                node.state_dir.display(),
                roles
            );
            if let Some(region) = &spec.region {
                text += &format!("region = \"{region}\"\n");
            }
            if let Some(zone) = &spec.zone {
                text += &format!("zone = \"{zone}\"\n");
            }
            text += &spec.top_config;
            text += &format!(
                "\n[gossip]\nlisten = \"{listen}\"\nseeds = [\"{seed}\"]\nsecret_file = \"{}\"\ninterval = \"{}\"\n",
                secret_file.display(),
                options.gossip_interval
            );
            text += &spec.gossip_config;
            text += &format!(
                "\n[api]\nlisten = \"127.0.0.1:{API_PORT}\"\n\n[log]\nlevel = \"info,dcnet_agent=debug\"\n"
            );
            text += &if options.insecure {
                "\n[auth]\ninsecure = true\n".to_owned()
            } else {
                format!("\n[auth]\npki_dir = \"{}\"\n", self.pki_dir().display())
            };
            // Each node's DNS answers inside its namespace; it must not forward to the machine's
            // own nameservers.
            text += "\n[dns]\n";
            if !spec.dns_config.contains("upstreams") {
                text += "upstreams = []\n";
            }
            text += &spec.dns_config;
            if let Some(cgroup) = &node.cgroup {
                text += &format!(
                    "\n[launcher]\ncgroup = \"{}/{TASKS_CGROUP}\"\ndrain = \"1s\"\nkill_grace = \"1s\"\nnetns_prefix = \"{}\"\n",
                    cgroup.path().display(),
                    self.task_netns_prefix()
                );
                text += &spec.launcher_config;
            }
            let cgroup = node
                .cgroup
                .as_ref()
                .map(|c| c.path().display().to_string())
                .unwrap_or_default();
            text += &spec.extra_config.replace("{cgroup}", &cgroup);
            fs::write(&node.config_path, text)?;
        }
        Ok(())
    }

    /// A namespace on the underlay bridge that is not a node (`OUTSIDER_ADDRESS`, no route
    /// out): the position of an attacker on the nodes' network. Made once, removed with the
    /// cluster.
    pub fn add_outsider(&mut self) -> Result<&Netns> {
        if self.outsider.is_none() {
            let netns = Netns::create(&format!("{NETNS_PREFIX}{}-x", self.tag))?;
            let underlay = self.underlay.as_ref().context("the underlay is gone")?;
            underlay.netlink(|nl| {
                let netns = &netns;
                async move {
                    nl.add_veth("x", "eth0", Some(netns)).await?;
                    nl.set_controller("x", "br0").await?;
                    nl.set_up("x").await
                }
            })?;
            netns.netlink(|nl| async move {
                nl.set_up("lo").await?;
                nl.add_address("eth0", IpAddr::V4(OUTSIDER_ADDRESS), 24)
                    .await?;
                nl.set_up("eth0").await
            })?;
            self.outsider = Some(netns);
        }
        self.outsider.as_ref().context("just made")
    }

    /// Waits up to 30 s until each of `nodes` reports `peers` overlay peers in `/v1/overlay`.
    pub fn wait_for_overlay(&self, nodes: &[usize], peers: usize) -> Result<()> {
        wait_until("the overlay to form", Duration::from_secs(30), || {
            for &i in nodes {
                let status: serde_json::Value = self.get(i, "/v1/overlay")?;
                if status["peers"].as_array().is_none_or(|p| p.len() != peers) {
                    bail!("node {}: {status}", i + 1);
                }
            }
            Ok(Some(()))
        })
    }

    /// The outsider, once added.
    pub fn outsider(&self) -> Option<&Netns> {
        self.outsider.as_ref()
    }

    /// Starts (or restarts) the agent of node `i` with its config and state directory.
    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        if node.is_running() {
            bail!("the agent of {} is already running", node.name);
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        let mut command = Command::new(&self.dcnet);
        command
            .arg("agent")
            .arg("--config")
            .arg(&node.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        in_netns(&mut command, &node.netns, self.die_with_parent);
        if let Some(cgroup) = &node.cgroup {
            cgroup.place(&mut command);
        }
        node.process = Some(
            command
                .spawn()
                .with_context(|| format!("starting {}", self.dcnet.display()))?,
        );
        Ok(())
    }

    /// Sends `signal` to the agent of node `i` and waits up to `timeout` for it to exit.
    /// Returns its exit status (`None` if it did not exit in time; it is then killed).
    pub fn stop_agent(
        &mut self,
        i: usize,
        signal: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let child = self.nodes[i].process.as_mut()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.nodes[i].process = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.nodes[i].process = None;
                    return None;
                }
            }
        }
    }

    /// Partitions node `i` (`on`) or heals it: everything on its underlay link is dropped in
    /// its namespace (its loopback, hence its own API, and its tasks' traffic on the node
    /// stay). The nftables table goes with the namespace.
    pub fn partition(&self, i: usize, on: bool) -> Result<()> {
        let ns = self.nodes[i].netns.name();
        let script = if on {
            "table inet partition {\n\
               chain in { type filter hook input priority 0; iifname \"eth0\" drop; }\n\
               chain out { type filter hook output priority 0; oifname \"eth0\" drop; }\n\
             }\n"
        } else {
            "delete table inet partition\n"
        };
        let mut nft = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("nft (apt install nftables)")?;
        std::io::Write::write_all(&mut nft.stdin.take().context("stdin")?, script.as_bytes())?;
        let out = nft.wait_with_output()?;
        if !out.status.success() {
            bail!("nft in {ns}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Kills node `i` as if the machine died: its agent and every task it started.
    pub fn kill_node(&mut self, i: usize) {
        self.stop_agent(i, nix::sys::signal::Signal::SIGKILL, Duration::from_secs(3));
        if let Some(cgroup) = &self.nodes[i].cgroup {
            crate::cgroup::kill_all(cgroup.path());
        }
    }

    /// Prefix of the namespaces the launchers of this cluster make for tasks.
    pub fn task_netns_prefix(&self) -> String {
        format!("{NETNS_PREFIX}{}-t-", self.tag)
    }

    /// GETs `path` from node `i`'s API and decodes the JSON.
    pub fn get<T: DeserializeOwned>(&self, i: usize, path: &str) -> Result<T> {
        let text = self.get_text(i, path)?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "GET {path} on node {}: not the expected JSON: {text}",
                i + 1
            )
        })
    }

    /// GETs `path` from node `i`'s API as text, with the admin credential.
    pub fn get_text(&self, i: usize, path: &str) -> Result<String> {
        let url = format!("http://127.0.0.1:{API_PORT}{path}");
        self.nodes[i].netns.run(|| -> Result<String> {
            let mut response = self
                .authorized(http().get(&url))
                .call()
                .with_context(|| format!("GET {url}"))?;
            Ok(response.body_mut().read_to_string()?)
        })?
    }

    /// GETs `path` from node `i`'s API: the body and the value of header `name`, if any.
    pub fn get_with_header(
        &self,
        i: usize,
        path: &str,
        name: &str,
    ) -> Result<(String, Option<String>)> {
        let url = format!("http://127.0.0.1:{API_PORT}{path}");
        self.nodes[i]
            .netns
            .run(|| -> Result<(String, Option<String>)> {
                let mut response = self
                    .authorized(http().get(&url))
                    .call()
                    .with_context(|| format!("GET {url}"))?;
                let value = response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok((response.body_mut().read_to_string()?, value))
            })?
    }

    /// PUTs `body` to `path` on node `i`'s API, with the admin credential.
    pub fn put(&self, i: usize, path: &str, body: &str) -> Result<()> {
        let url = format!("http://127.0.0.1:{API_PORT}{path}");
        self.nodes[i].netns.run(|| -> Result<()> {
            self.authorized(http().put(&url))
                .send(body)
                .with_context(|| format!("PUT {url}"))?;
            Ok(())
        })?
    }

    /// `request` with the admin credential (unchanged on an insecure cluster).
    pub fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.admin {
            Some(value) => request.header("authorization", value),
            None => request,
        }
    }

    /// POSTs `body` to `path` on node `i`'s API with the admin credential; returns the status
    /// and the body, whatever the status.
    pub fn post(&self, i: usize, path: &str, body: &str) -> Result<(u16, String)> {
        let url = format!("http://127.0.0.1:{API_PORT}{path}");
        self.nodes[i].netns.run(|| -> Result<(u16, String)> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .build()
                .into();
            let mut response = self
                .authorized(agent.post(&url))
                .header("content-type", "application/json")
                .send(body)
                .with_context(|| format!("POST {url}"))?;
            let status = response.status().as_u16();
            Ok((status, response.body_mut().read_to_string()?))
        })?
    }

    /// Runs `program args` inside node `i`'s namespace and returns its output.
    pub fn run_in(&self, i: usize, program: &Path, args: &[&str]) -> Result<std::process::Output> {
        let mut command = Command::new(program);
        command
            .args(args)
            .env(dcnet_auth::client::ENV_FILE, self.credentials_path())
            .env_remove(dcnet_auth::client::ENV_TOKEN)
            // The CLI's cluster context is the cluster's own, never the machine user's.
            .env(
                dcnet_agent::cli::clusters::ENV_CONTEXT,
                self.dir.path().join("cli-context"),
            )
            .env_remove("DCNET_CLUSTER");
        in_netns(&mut command, &self.nodes[i].netns, true);
        command
            .output()
            .with_context(|| format!("running {} in {}", program.display(), self.nodes[i].name))
    }

    /// The tasks running on node `i`: its task cgroups (named by task id) with a process in
    /// them, as the kernel has them.
    pub fn running_tasks(&self, i: usize) -> std::collections::BTreeSet<String> {
        let Some(cgroup) = &self.nodes[i].cgroup else {
            return Default::default();
        };
        fs::read_dir(cgroup.path().join(TASKS_CGROUP))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                fs::read_to_string(e.path().join("cgroup.procs"))
                    .is_ok_and(|procs| !procs.trim().is_empty())
            })
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect()
    }

    /// Runs curl inside node `i` with the admin credential and `args`.
    pub fn curl(&self, i: usize, args: &[&str]) -> Result<std::process::Output> {
        let header = format!("Authorization: {}", self.admin.as_deref().unwrap_or(""));
        let mut all = vec!["-s", "-H", header.as_str()];
        all.extend_from_slice(args);
        self.run_in(i, Path::new("/usr/bin/curl"), &all)
    }

    /// Runs curl inside node `i` with `args` (and no credential but one they give); the HTTP
    /// status it got, as curl prints it (`000` if it got no answer).
    pub fn http_status(&self, i: usize, args: &[&str]) -> Result<String> {
        let mut all = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        let out = self.run_in(i, Path::new("/usr/bin/curl"), &all)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `dcnet` binary the agents run.
    pub fn dcnet(&self) -> &Path {
        &self.dcnet
    }

    /// Runs the CLI, `dcnet ARGS`, inside node `i`; its stdout, or an error with its stderr.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = self.run_in(i, &self.dcnet, args)?;
        if !out.status.success() {
            bail!(
                "dcnet {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds the app `json` through node `i`'s CLI, trying again for up to 30 s while no
    /// scheduler leads yet.
    pub fn add_app(&self, i: usize, json: &str) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("app.json");
        fs::write(&file, json)?;
        let path = file.to_str().context("the temporary path is not UTF-8")?;
        wait_until(
            "the scheduler to take the app",
            Duration::from_secs(30),
            || self.cli(i, &["app", "add", path]).map(Some),
        )?;
        Ok(())
    }

    /// The membership table as node `i` reports it.
    pub fn members(&self, i: usize) -> Result<Vec<dcnet_agent::node::Member>> {
        self.get(i, "/v1/nodes")
    }

    /// Leaves the namespaces and agents running after this value is dropped (the demo's
    /// `--keep`); returns the commands that remove them.
    pub fn keep(&mut self) -> Vec<String> {
        self.keep = true;
        self.dir.disable_cleanup(true);
        let mark = Path::new(KEPT_DIR).join(&self.tag);
        if let Err(e) = fs::create_dir_all(KEPT_DIR).and_then(|()| fs::write(&mark, b"")) {
            eprintln!(
                "cannot mark the kept cluster in {}: {e}; the next test run's leftover sweep may remove it",
                mark.display()
            );
        }
        let mut commands: Vec<String> = self
            .nodes
            .iter()
            // The agent writes its state as it stops: wait for it before removing the directory.
            .filter_map(|n| {
                let pid = n.pid()?;
                Some(format!(
                    "kill {pid}; timeout 10 tail --pid={pid} -f /dev/null || true"
                ))
            })
            .collect();
        for node in &mut self.nodes {
            if let Some(cgroup) = node.cgroup.take() {
                commands.push(format!(
                    "echo 1 > {0}/cgroup.kill; sleep 1; find {0} -depth -type d -exec rmdir {{}} +",
                    cgroup.path().display()
                ));
                std::mem::forget(cgroup);
            }
        }
        commands.push(format!(
            "for ns in $(ip netns list | grep -o '^{0}[^ ]*'); do ip netns delete $ns; rm -rf /etc/netns/$ns; done",
            self.task_netns_prefix()
        ));
        // The tasks' namespaces are deleted by the loop above, also those made after now.
        let nodes = self.nodes.iter().map(|n| n.netns.name());
        let outsider = self.outsider.as_ref().map(Netns::name);
        for name in nodes
            .chain(outsider)
            .chain(self.underlay.as_ref().map(Netns::name))
        {
            commands.push(format!("ip netns delete {name}"));
        }
        for node in &self.nodes {
            // The load balancer's pins (a BPF filesystem the agent mounted): unmounted first.
            commands.push(format!(
                "umount -l {} 2>/dev/null; true",
                node.state_dir.join(dcnet_agent::state::BPF_DIR).display()
            ));
        }
        commands.push(format!("rm -r {}", self.dir.path().display()));
        commands.push(format!(
            "rm -f {}; rmdir --ignore-fail-on-non-empty {KEPT_DIR}",
            mark.display()
        ));
        commands
    }

    /// The cluster's directory (configs, logs, state of every node).
    pub fn dir_path(&self) -> &Path {
        self.dir.path()
    }

    /// Names of the namespaces of this cluster, its tasks' included.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.netns.name().to_owned())
            .collect();
        let prefix = self.task_netns_prefix();
        if let Ok(entries) = fs::read_dir("/run/netns") {
            names.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|n| n.starts_with(&prefix)),
            );
        }
        names.extend(self.outsider.as_ref().map(|u| u.name().to_owned()));
        names.extend(self.underlay.as_ref().map(|u| u.name().to_owned()));
        names
    }

    /// The last `lines` lines of every agent's log, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = fs::read_to_string(&node.log_path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out += &format!(
                "----- {} ({}) last {} lines -----\n",
                node.name,
                node.log_path.display(),
                lines.min(all.len())
            );
            for line in &all[all.len().saturating_sub(lines)..] {
                out += line;
                out.push('\n');
            }
        }
        out
    }

    /// Passes `result` on; when it is a failure, first prints the last `lines` of every
    /// agent's log and the start of every task's stderr (where runc says why a container did
    /// not start), before teardown removes them.
    pub fn explain(&self, result: Result<()>, lines: usize) -> Result<()> {
        if result.is_err() {
            eprintln!("{}", self.log_tails(lines));
            for node in &self.nodes {
                let tasks = fs::read_dir(node.state_dir.join("tasks"));
                for entry in tasks.into_iter().flatten().flatten() {
                    let text = fs::read_to_string(entry.path().join("stderr")).unwrap_or_default();
                    if text.is_empty() {
                        continue;
                    }
                    eprintln!(
                        "----- {} task {} stderr -----",
                        node.name,
                        entry.file_name().to_string_lossy()
                    );
                    text.lines().take(12).for_each(|l| eprintln!("{l}"));
                }
            }
        }
        result
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            for node in &mut self.nodes {
                // Forget the child without killing it.
                node.process.take();
            }
            return;
        }
        if std::thread::panicking() {
            eprintln!("\n{}", self.log_tails(60));
        }
        for i in 0..self.nodes.len() {
            self.stop_agent(i, nix::sys::signal::Signal::SIGTERM, Duration::from_secs(3));
        }
        // Tasks outlive their agent; on a test machine they go with the cluster.
        for node in &mut self.nodes {
            drop(node.cgroup.take());
            crate::images::release_left(&node.state_dir);
        }
        for name in self.namespace_names() {
            if let Err(e) = Netns::delete_by_name(&name) {
                eprintln!("cluster teardown: {e}");
            }
        }
        for node in &self.nodes {
            let pins = node.state_dir.join(dcnet_agent::state::BPF_DIR);
            if let Err(e) = dcnet_lb::pins::unmount(&pins) {
                eprintln!("cluster teardown: {e}");
            }
        }
    }
}

/// Writes a key file readable by its owner only, as the agent requires.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Makes `command` run inside `netns`, optionally dying with the thread that spawned it.
pub fn in_netns(command: &mut Command, netns: &Netns, die_with_parent: bool) {
    use std::os::fd::AsRawFd;
    let fd = netns.file().as_raw_fd();
    // SAFETY: only async-signal-safe system calls run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if die_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Polls `probe` every 100 ms until it yields a value or `timeout` passes; the error names
/// `what` and the last problem seen.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("condition never held");
    loop {
        match probe() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last: {last})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Address of node `i` (0-based) on the underlay.
pub fn node_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 0, u8::try_from(i + 1).expect("at most 254 nodes"))
}

/// The IPv6 underlay address of node `i` (0-based) with [`ClusterOptions::underlay6`].
pub fn node_address6(i: usize) -> std::net::Ipv6Addr {
    let n = u16::try_from(i + 1).expect("at most 65,535 nodes");
    std::net::Ipv6Addr::new(0xfd00, 0xdc, 0, 0, 0, 0, 0, n)
}

/// Removes namespaces left by harness processes that no longer exist (killed before their
/// `Drop` ran), and the BPF filesystems their agents mounted in their state directories.
/// Agents in them died with their parent (`PR_SET_PDEATHSIG`). A kept cluster (marked in
/// [`KEPT_DIR`]) belongs to someone: it stays.
pub fn sweep_leftovers() {
    // A cluster's tag is `<pid>-<n>`: what follows a namespace's or directory's prefix.
    let tag_of = |rest: &str| -> Option<(u32, String)> {
        let mut parts = rest.splitn(3, '-');
        let pid = parts.next()?;
        let n = parts.next()?;
        Some((pid.parse().ok()?, format!("{pid}-{n}")))
    };
    let abandoned = |rest: &str| {
        tag_of(rest).is_some_and(|(pid, tag)| {
            !Path::new(&format!("/proc/{pid}")).exists() && !Path::new(KEPT_DIR).join(tag).exists()
        })
    };
    if let Ok(mounts) = fs::read_to_string("/proc/self/mounts") {
        for line in mounts.lines() {
            let mut fields = line.split_whitespace();
            let (Some(_), Some(at), Some("bpf")) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let dead = at
                .strip_prefix(&format!(
                    "{}/dcnet-cluster-",
                    std::env::temp_dir().display()
                ))
                .is_some_and(abandoned);
            if dead {
                let _ = dcnet_lb::pins::unmount(Path::new(at));
            }
        }
    }
    let Ok(names) = Netns::list() else { return };
    for name in names {
        if name.strip_prefix(NETNS_PREFIX).is_some_and(abandoned) {
            let _ = Netns::delete_by_name(&name);
        }
    }
}

/// Fails clearly when not root: these tests create namespaces and load BPF programs.
pub fn require_root() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!(
            "dcnet's integration tests must run as root: they create network namespaces, links and cgroups, and load BPF programs"
        );
    }
    Ok(())
}

/// The `dcnet` binary: `$DCNET_BIN`, else the one cargo built beside this test executable.
pub fn dcnet_binary() -> Result<PathBuf> {
    workspace_binary("dcnet", "DCNET_BIN", "dcnet-agent")
}

/// A binary of the workspace (`name`, built by package `package`), found next to the running
/// test or given by the environment variable `var`.
pub fn workspace_binary(name: &str, var: &str, package: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no {name} binary next to {}; build it first (`cargo build -p {package}`) or set {var}",
        exe.display()
    )
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}
