//! Apache ZooKeeper (Debian's `zookeeper`) for tests: one standalone server on
//! 127.0.0.1:`port` inside a namespace of the test, its data in the test's directory, and the
//! nodes Mesos masters write to register (`<path>/json.info_<sequence>` with their
//! `MasterInfo`). Killed when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use dcnet_overlay::Netns;
use zookeeper_client::{Acls, Client, CreateMode};

use crate::cluster::{in_netns, wait_until};

/// Debian's ZooKeeper: its jar (its dependencies come through the jar's manifest).
const CLASSPATH: &str = "/usr/share/java/zookeeper.jar";

/// A running ZooKeeper.
pub struct ZooKeeper {
    child: Child,
    netns: Netns,
    /// `127.0.0.1:<port>`.
    pub address: SocketAddr,
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ZooKeeper {
    /// Starts ZooKeeper on 127.0.0.1:`port` in `netns`, with its data and log in `dir`, and
    /// waits until it takes sessions.
    pub fn start(netns: &Netns, dir: &Path, port: u16) -> Result<Self> {
        let data = dir.join("zookeeper");
        std::fs::create_dir_all(&data)?;
        let config = dir.join("zoo.cfg");
        // A short tick: sessions may be as short as two ticks.
        std::fs::write(
            &config,
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n",
                data.display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("zookeeper.log"))?;
        let mut command = Command::new("java");
        command
            .args(["-Xmx128m", "-cp", CLASSPATH])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log);
        in_netns(&mut command, netns, true);
        let zk = Self {
            child: command
                .spawn()
                .context("starting ZooKeeper (apt install zookeeper, or scripts/setup.sh)")?,
            netns: Netns::open_path(netns.path())?,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        wait_until(
            "ZooKeeper to take sessions",
            Duration::from_secs(30),
            || Ok(zk.session(|_| async { Ok(()) }).ok()),
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(dir.join("zookeeper.log")).unwrap_or_default();
            anyhow!("{e}\n{log}")
        })?;
        Ok(zk)
    }

    /// Runs `f` with a session of this server, inside its namespace.
    pub fn session<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce(Client) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let address = self.address.to_string();
        self.netns.run(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let client =
                    tokio::time::timeout(Duration::from_secs(5), Client::connect(&address))
                        .await
                        .map_err(|_| anyhow!("connecting to ZooKeeper at {address} timed out"))??;
                f(client).await
            })
        })?
    }

    /// Registers a master at `master` under `path` as Mesos does: a sequential
    /// `json.info_` node with its `MasterInfo`. Returns the node's path.
    pub fn register_master(&self, path: &str, master: SocketAddr) -> Result<String> {
        let info = serde_json::json!({
            "address": {"hostname": master.ip().to_string(), "ip": master.ip().to_string(), "port": master.port()},
            "hostname": master.ip().to_string(),
            "id": format!("master-{}", master.port()),
            "pid": format!("master@{master}"),
            "port": master.port(),
            "version": "1.11.0",
        })
        .to_string();
        let path = path.to_owned();
        self.session(move |client| async move {
            let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
            match client.create(&path, &[], &persistent).await {
                Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
                Err(e) => return Err(e.into()),
            }
            // Persistent, not ephemeral as a master's own: it must outlive this session.
            let sequential = CreateMode::PersistentSequential.with_acls(Acls::anyone_all());
            let node = format!("{path}/json.info_");
            let (_, sequence) = client.create(&node, info.as_bytes(), &sequential).await?;
            Ok(format!("{node}{sequence}"))
        })
    }

    /// Deletes `node` (a master giving up, or its session expiring).
    pub fn delete(&self, node: &str) -> Result<()> {
        let node = node.to_owned();
        self.session(move |client| async move {
            client.delete(&node, None).await?;
            Ok(())
        })
    }
}
