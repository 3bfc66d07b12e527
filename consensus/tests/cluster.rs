//! Masters in one process, each with its own store and HTTP listener on loopback: elections,
//! writes committed on a majority, a leader's loss and return, restarts from disk, membership
//! changes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dcnet_consensus::{Command, Consensus, Error, Master, Network, NodeId, Timing, server};
use serde_json::json;
use tokio::task::JoinHandle;

fn timing() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(100),
        election_min: Duration::from_millis(400),
        election_max: Duration::from_millis(800),
        commit_deadline: Duration::from_secs(2),
    }
}

/// One running master.
struct Node {
    consensus: Arc<Consensus>,
    server: JoinHandle<()>,
}

impl Node {
    async fn start(id: NodeId, dir: &Path, addr: SocketAddr) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let network = Network::new(None, Arc::new(|| None))?;
        let consensus = Arc::new(Consensus::open(id, dir, timing(), network).await?);
        let router = server::router(consensus.raft().clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { consensus, server })
    }

    async fn stop(self) {
        self.server.abort();
        // The router holds a handle of Raft, and so its store: gone only once the task is.
        let _ = self.server.await;
        self.consensus.shutdown().await;
    }
}

/// A cluster of `n` masters on free loopback ports, each with a directory.
struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    addrs: Vec<SocketAddr>,
    nodes: BTreeMap<NodeId, Node>,
}

impl Cluster {
    async fn start(n: usize) -> Result<Self> {
        // Each cluster of the process on loopback addresses of its own (127.<pid>.<k>.<node>):
        // a port found free there stays free, since no other test listens there and outgoing
        // connections take their ports on 127.0.0.1. (Ports freed on 127.0.0.1 were taken in
        // between by other tests' connections: "Address already in use" on a fresh clone.)
        static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let net = 100 + (std::process::id() % 100) as u8;
        let mut addrs = Vec::new();
        for i in 0..n {
            let l = std::net::TcpListener::bind((
                std::net::Ipv4Addr::new(127, net, k, i as u8 + 1),
                0,
            ))?;
            addrs.push(l.local_addr()?);
        }
        let mut cluster = Self {
            dirs: (0..n)
                .map(|_| tempfile::tempdir())
                .collect::<Result<_, _>>()?,
            addrs,
            nodes: BTreeMap::new(),
        };
        for i in 0..n {
            cluster.start_node(i as NodeId + 1).await?;
        }
        Ok(cluster)
    }

    fn master(&self, id: NodeId) -> Master {
        Master {
            name: format!("m{id}"),
            url: format!("http://{}", self.addrs[id as usize - 1]),
        }
    }

    async fn start_node(&mut self, id: NodeId) -> Result<()> {
        let i = id as usize - 1;
        let node = Node::start(id, self.dirs[i].path(), self.addrs[i]).await?;
        self.nodes.insert(id, node);
        Ok(())
    }

    async fn stop_node(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.stop().await;
        }
    }

    async fn initialize(&self, ids: &[NodeId]) -> Result<()> {
        let members: BTreeMap<NodeId, Master> =
            ids.iter().map(|id| (*id, self.master(*id))).collect();
        self.nodes[&ids[0]].consensus.initialize(members).await?;
        Ok(())
    }

    /// Waits for exactly one of the running nodes to lead, and for the others to know it.
    async fn leader(&self, within: Duration) -> Result<NodeId> {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.consensus.is_leader())
                .map(|(id, _)| *id)
                .collect();
            if let [leader] = leaders[..] {
                // Every running voter knows it (a node never added has no say).
                let (_, voters) = self.nodes[&leader].consensus.members();
                let agreed = self
                    .nodes
                    .iter()
                    .filter(|(id, _)| voters.contains(id))
                    .all(|(_, n)| n.consensus.leader().0.map(|(id, _)| id) == Some(leader));
                if agreed {
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                bail!("no single leader within {within:?} (leaders: {leaders:?})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node has applied `key` = `value`.
    async fn applied_everywhere(&self, key: &str, value: &serde_json::Value) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self
                .nodes
                .values()
                .all(|n| n.consensus.data().borrow().entries.get(key) == Some(value));
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{key} = {value} not applied on every node");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop_node(id).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_agree_lose_a_leader_and_take_it_back() -> Result<()> {
    let mut c = Cluster::start(3).await?;
    c.initialize(&[1, 2, 3]).await?;
    let leader = c.leader(Duration::from_secs(5)).await?;

    // Writes go through the leader, are applied everywhere; followers name the leader.
    let reply = c.nodes[&leader]
        .consensus
        .write(Command::put("apps/web", json!({"instances": 3})))
        .await?;
    assert!(reply.applied);
    c.applied_everywhere("apps/web", &json!({"instances": 3}))
        .await?;
    let follower = *c
        .nodes
        .keys()
        .find(|id| **id != leader)
        .context("a follower")?;
    match c.nodes[&follower]
        .consensus
        .write(Command::delete("apps/web"))
        .await
    {
        Err(Error::NotLeader { leader: Some(m) }) => assert_eq!(m, c.master(leader)),
        other => bail!("a follower wrote: {other:?}"),
    }
    // Compare-and-set on the replicated data.
    let mut stale = Command::put("apps/web", json!({"instances": 5}));
    stale
        .expect
        .insert("apps/web".into(), Some(json!({"instances": 4})));
    assert!(!c.nodes[&leader].consensus.write(stale).await?.applied);

    // The leader dies: another leads within the election timeout and takes writes.
    let killed = Instant::now();
    c.stop_node(leader).await;
    let next = c.leader(Duration::from_secs(3)).await?;
    assert_ne!(next, leader);
    c.nodes[&next]
        .consensus
        .write(Command::put("apps/web", json!({"instances": 4})))
        .await?;
    let failover = killed.elapsed();
    assert!(
        failover < Duration::from_secs(3),
        "failover took {failover:?}"
    );

    // The old leader comes back from its disk: it follows, and has the change made without it.
    c.start_node(leader).await?;
    c.applied_everywhere("apps/web", &json!({"instances": 4}))
        .await?;
    assert_eq!(
        c.leader(Duration::from_secs(5)).await?,
        next,
        "the old leader follows"
    );
    c.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_commits_nothing_and_a_full_restart_loses_nothing() -> Result<()> {
    let mut c = Cluster::start(3).await?;
    c.initialize(&[1, 2, 3]).await?;
    let leader = c.leader(Duration::from_secs(5)).await?;
    for i in 0..50 {
        c.nodes[&leader]
            .consensus
            .write(Command::put(format!("apps/a{i}"), json!(i)))
            .await?;
    }
    // Alone, a master cannot commit: its write is answered "no quorum".
    let others: Vec<NodeId> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
    for id in &others {
        c.stop_node(*id).await;
    }
    let alone = c.nodes[&leader]
        .consensus
        .write(Command::put("apps/lost", json!(1)))
        .await;
    assert!(
        matches!(alone, Err(Error::NoQuorum(_))),
        "a minority wrote: {alone:?}"
    );
    assert!(matches!(
        c.nodes[&leader].consensus.confirm_leadership().await,
        Err(Error::NoQuorum(_) | Error::NotLeader { .. })
    ));

    // Every master stops, then all start again from their disks: everything committed is back.
    c.stop_node(leader).await;
    for id in 1..=3 {
        c.start_node(id).await?;
    }
    c.leader(Duration::from_secs(5)).await?;
    c.applied_everywhere("apps/a49", &json!(49)).await?;
    let data = c.nodes[&1].consensus.data().borrow().clone();
    assert_eq!(data.prefixed("apps/a").count(), 50);
    c.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_are_added_and_removed_by_membership_change() -> Result<()> {
    let mut c = Cluster::start(4).await?;
    c.initialize(&[1]).await?;
    let leader = c.leader(Duration::from_secs(5)).await?;
    assert_eq!(leader, 1);
    c.nodes[&1]
        .consensus
        .write(Command::put("apps/web", json!(1)))
        .await?;
    // A new master catches up as a learner, then votes.
    for id in [2, 3] {
        c.nodes[&1].consensus.add_master(id, c.master(id)).await?;
    }
    let (_, voters) = c.nodes[&1].consensus.members();
    assert_eq!(voters.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
    // Node 4 was never added: it has nothing and takes no part.
    assert!(c.nodes[&4].consensus.data().borrow().entries.is_empty());
    c.stop_node(4).await;
    c.applied_everywhere("apps/web", &json!(1)).await?;

    // Removing the leader: the others elect one of themselves and carry on.
    c.nodes[&1].consensus.remove_master(1).await?;
    c.stop_node(1).await;
    let next = c.leader(Duration::from_secs(5)).await?;
    assert!([2, 3].contains(&next));
    c.nodes[&next]
        .consensus
        .write(Command::put("apps/web", json!(2)))
        .await?;
    c.applied_everywhere("apps/web", &json!(2)).await?;
    c.stop().await;
    Ok(())
}
