//! The leading Mesos master, detected through ZooKeeper as Mesos-DNS does (`zk`,
//! `zkDetectionTimeout`).
//!
//! Mesos masters contend for leadership under a ZooKeeper path (`/mesos` in
//! `zk://host:2181,host2:2181/mesos`): each holds an ephemeral sequential node
//! `json.info_<sequence>` whose data is its `MasterInfo` in JSON, and the node with the lowest
//! sequence leads. The detector watches the path's children, reads the masters' addresses and
//! sends [`Detected`] (the leader, then every other master) whenever they change; the refresh
//! tries the leader first and the others after it, as Mesos-DNS's state loader does. Masters
//! that only write the pre-0.24 protobuf nodes (`info_<sequence>`) are not read.
//!
//! The pure parts ([`ZkUrl`], [`leader_first`], [`master_address`]) are unit-tested here; the
//! watch runs against a real ZooKeeper in the integration tests.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The masters ZooKeeper names: the leader (if one is elected) and all of them, leader first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detected {
    pub leader: Option<SocketAddr>,
    pub masters: Vec<SocketAddr>,
}

/// A `zk://` URL as Mesos writes it: `zk://[user:password@]host:port[,host:port...]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkUrl {
    /// `host:port,host:port`, as the ZooKeeper client takes it.
    pub hosts: String,
    /// The masters' path, e.g. `/mesos`.
    pub path: String,
    /// Digest credentials (`user:password`), if the URL has them.
    pub digest: Option<String>,
}

impl std::str::FromStr for ZkUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let rest = url.strip_prefix("zk://").ok_or_else(|| {
            format!("{url:?} is not a zk:// URL: expected e.g. zk://10.0.0.1:2181/mesos")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (digest, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (Some(credentials.to_owned()), hosts),
            None => (None, authority),
        };
        let path = path.trim_end_matches('/');
        if hosts.is_empty() || hosts.split(',').any(|h| h.rsplit_once(':').is_none()) {
            return Err(format!(
                "{url:?}: every ZooKeeper server needs a host and port, e.g. zk://10.0.0.1:2181,10.0.0.2:2181/mesos"
            ));
        }
        if path.is_empty() {
            return Err(format!(
                "{url:?} names no path: Mesos registers its masters under one, e.g. zk://10.0.0.1:2181/mesos"
            ));
        }
        Ok(Self {
            hosts: hosts.to_owned(),
            path: path.to_owned(),
            digest,
        })
    }
}

impl std::fmt::Display for ZkUrl {
    /// The URL without its credentials, for logs and messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "zk://{}{}", self.hosts, self.path)
    }
}

/// The prefix of the nodes Mesos (0.24 and later) writes its `MasterInfo` JSON to.
const JSON_PREFIX: &str = "json.info_";

/// The children of the masters' path that are masters' JSON nodes, lowest sequence (the
/// leader) first.
pub fn leader_first(children: &[String]) -> Vec<&str> {
    let mut nodes: Vec<(u64, &str)> = children
        .iter()
        .filter_map(|c| Some((c.strip_prefix(JSON_PREFIX)?.parse().ok()?, c.as_str())))
        .collect();
    nodes.sort_unstable();
    nodes.into_iter().map(|(_, c)| c).collect()
}

/// The address a master's `MasterInfo` JSON gives: `address.ip`/`address.port`, else its
/// `pid` (`master@IP:PORT`).
pub fn master_address(json: &[u8]) -> Option<SocketAddr> {
    #[derive(Deserialize)]
    struct Address {
        ip: Option<String>,
        port: Option<u16>,
    }
    #[derive(Deserialize)]
    struct MasterInfo {
        address: Option<Address>,
        pid: Option<String>,
    }
    let info: MasterInfo = serde_json::from_slice(json).ok()?;
    if let Some(Address {
        ip: Some(ip),
        port: Some(port),
    }) = info.address
        && let Ok(ip) = ip.parse()
    {
        return Some(SocketAddr::new(ip, port));
    }
    let (host, port) = super::state::split_pid(info.pid.as_deref()?)?;
    Some(SocketAddr::new(host.parse().ok()?, port))
}

/// Follows `url` from now on: the masters to read, leader first (`configured` until ZooKeeper
/// names any), and what ZooKeeper names. Both end when every receiver of the first is gone.
/// Call within a tokio runtime.
pub fn follow(
    url: ZkUrl,
    configured: Vec<SocketAddr>,
) -> (watch::Receiver<Vec<SocketAddr>>, watch::Receiver<Detected>) {
    let (detected_tx, detected) = watch::channel(Detected::default());
    tokio::spawn(detect(url, detected_tx));
    let list = move |d: &Detected| {
        if d.masters.is_empty() {
            configured.clone()
        } else {
            d.masters.clone()
        }
    };
    let (tx, rx) = watch::channel(list(&Detected::default()));
    let mut watching = detected.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = watching.changed() => if changed.is_err() { return },
                // Nobody reads the masters any more: dropping `watching` stops the detector.
                () = tx.closed() => return,
            }
            let now = list(&watching.borrow_and_update());
            tx.send_if_modified(|m| {
                let changed = *m != now;
                *m = now;
                changed
            });
        }
    });
    (rx, detected)
}

/// How long to wait before connecting again after ZooKeeper failed us.
const RETRY: Duration = Duration::from_secs(1);

/// Watches `url` and sends what it names into `tx` until `tx` has no receivers left.
pub async fn detect(url: ZkUrl, tx: watch::Sender<Detected>) {
    let mut failures = 0u32;
    loop {
        match watch_once(&url, &tx).await {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    warn!(zk = %url, error = %e, "ZooKeeper master detection failed; retrying every second");
                } else {
                    debug!(zk = %url, error = %e, failures, "ZooKeeper master detection failed again");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = tx.closed() => return,
        }
    }
}

/// One session: connect, then read and watch the masters until the session breaks (`Err`) or
/// nobody listens (`Ok`).
async fn watch_once(url: &ZkUrl, tx: &watch::Sender<Detected>) -> Result<(), String> {
    let mut connector = zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .with_connection_timeout(Duration::from_secs(5));
    if let Some(digest) = &url.digest {
        connector = connector.with_auth("digest", digest.as_bytes());
    }
    let client = tokio::select! {
        client = connector.connect(&url.hosts) => client.map_err(|e| format!("connecting: {e}"))?,
        () = tx.closed() => return Ok(()),
    };
    loop {
        let (children, watcher) = match client.list_and_watch_children(&url.path).await {
            Ok(listed) => listed,
            // No master has registered yet: wait for the path to appear.
            Err(zookeeper_client::Error::NoNode) => {
                let (stat, exists) = client
                    .check_and_watch_stat(&url.path)
                    .await
                    .map_err(|e| format!("watching {}: {e}", url.path))?;
                // Made between the listing and this check: its existence watch would only
                // fire on a change of the path itself, never for its children. List again.
                if stat.is_some() {
                    continue;
                }
                tx.send_if_modified(|d| replace(d, Detected::default()));
                tokio::select! {
                    _ = exists.changed() => continue,
                    () = tx.closed() => return Ok(()),
                }
            }
            Err(e) => return Err(format!("listing {}: {e}", url.path)),
        };
        let mut masters = Vec::new();
        let mut leader = None;
        for (i, node) in leader_first(&children).into_iter().enumerate() {
            let path = format!("{}/{node}", url.path);
            let data = match client.get_data(&path).await {
                Ok((data, _)) => data,
                // Gone between the listing and the read: the watch fires for it.
                Err(zookeeper_client::Error::NoNode) => continue,
                Err(e) => return Err(format!("reading {path}: {e}")),
            };
            match master_address(&data) {
                Some(addr) => {
                    if i == 0 {
                        leader = Some(addr);
                    }
                    if !masters.contains(&addr) {
                        masters.push(addr);
                    }
                }
                None => debug!(%path, "not a MasterInfo with an IP address; skipped"),
            }
        }
        let detected = Detected { leader, masters };
        let changed = tx.send_if_modified(|d| replace(d, detected.clone()));
        if changed {
            match detected.leader {
                Some(leader) => {
                    info!(zk = %url, %leader, masters = ?detected.masters, "leading master detected")
                }
                None => warn!(zk = %url, "ZooKeeper names no leading master"),
            }
        }
        let event = tokio::select! {
            event = watcher.changed() => event,
            () = tx.closed() => return Ok(()),
        };
        if event.event_type == zookeeper_client::EventType::Session {
            return Err(format!("session {:?}", event.session_state));
        }
    }
}

/// Puts `new` in `old`; whether that changed it.
fn replace(old: &mut Detected, new: Detected) -> bool {
    if *old == new {
        return false;
    }
    *old = new;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zk_urls_as_mesos_writes_them() {
        let url: ZkUrl = "zk://10.0.0.1:2181,10.0.0.2:2181/mesos".parse().unwrap();
        assert_eq!(url.hosts, "10.0.0.1:2181,10.0.0.2:2181");
        assert_eq!(url.path, "/mesos");
        assert_eq!(url.digest, None);
        let url: ZkUrl = "zk://dns:s3cret@master.mesos:2181/mesos/".parse().unwrap();
        assert_eq!(url.digest.as_deref(), Some("dns:s3cret"));
        assert_eq!(url.path, "/mesos");
        assert_eq!(
            url.to_string(),
            "zk://master.mesos:2181/mesos",
            "no credentials shown"
        );
        for (bad, words) in [
            ("http://10.0.0.1:2181/mesos", "zk://"),
            ("zk://10.0.0.1:2181", "no path"),
            ("zk://10.0.0.1/mesos", "host and port"),
            ("zk:///mesos", "host and port"),
        ] {
            let err = bad.parse::<ZkUrl>().unwrap_err();
            assert!(err.contains(words), "{bad}: {err}");
        }
    }

    #[test]
    fn the_lowest_json_sequence_leads() {
        let children: Vec<String> = [
            "json.info_0000000012",
            "info_0000000003",
            "log_replicas",
            "json.info_0000000009",
            "json.info_x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            leader_first(&children),
            ["json.info_0000000009", "json.info_0000000012"]
        );
    }

    #[test]
    fn master_info_addresses() {
        let modern = br#"{"address":{"hostname":"m1","ip":"10.0.0.1","port":5050},
            "hostname":"m1","id":"x","ip":16777226,"pid":"master@10.0.0.9:5050","port":5050}"#;
        assert_eq!(
            master_address(modern),
            Some("10.0.0.1:5050".parse().unwrap())
        );
        let pid_only = br#"{"pid":"master@10.0.0.2:5051"}"#;
        assert_eq!(
            master_address(pid_only),
            Some("10.0.0.2:5051".parse().unwrap())
        );
        assert_eq!(master_address(b"\x08\x01protobuf"), None);
        assert_eq!(master_address(br#"{"address":{"hostname":"m1"}}"#), None);
    }
}
