//! The masters' replicated state: Raft ([openraft](https://docs.rs/openraft) 0.9) with its
//! log in redb, its messages over HTTPS between masters, and a key-value state machine.
//!
//! - [`command`]: the data (keys to JSON values) and its commands (batches of puts and
//!   deletes, optionally compare-and-set). Pure.
//! - [`store`]: the log, vote and snapshots in one redb database; the state machine.
//! - [`network`]: the client side of Raft's messages; [`server`]: the routes that answer them.
//! - [`Consensus`]: one master's Raft: writes that return once committed on a majority, the
//!   data as applied here, who leads, membership changes.
//!
//! What the data means (apps, credentials) is the caller's; so is who may call the routes.

pub mod command;
pub mod network;
pub mod server;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Config, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use command::{Command, Data, Reply};
pub use network::Network;

/// A master's Raft id (stable: derived by the caller from the node's id).
pub type NodeId = u64;

/// Where a master's Raft messages go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Master {
    /// The node's name, for people.
    pub name: String,
    /// Base URL of its API (`https://10.0.0.1:8080`), under which `/raft/...` answers.
    pub url: String,
}

impl std::fmt::Display for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.url)
    }
}

openraft::declare_raft_types!(
    /// The masters' Raft: key-value commands, masters by URL.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = Master,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Raft of [`TypeConfig`].
pub type Raft = openraft::Raft<TypeConfig>;

/// Size of the chunks a snapshot is sent in.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Timing of elections and heartbeats.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time between these stands for election.
    pub election_min: Duration,
    pub election_max: Duration,
    /// How long a write waits to be committed before it is answered with [`Error::NoQuorum`].
    pub commit_deadline: Duration,
}

impl Default for Timing {
    /// etcd's class of timing (heartbeat 100 ms): a new leader within about 1 s of the old
    /// one's loss.
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(500),
            election_max: Duration::from_millis(1000),
            commit_deadline: Duration::from_secs(5),
        }
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be opened or read.
    #[error("the Raft store {path}: {detail}")]
    Store { path: String, detail: String },
    /// Raft would not start or stopped for good.
    #[error("Raft: {0}")]
    Raft(String),
    /// This master does not lead; the leader, if known.
    #[error("this master does not lead{}", .leader.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_default())]
    NotLeader { leader: Option<Master> },
    /// No quorum answers (this master is on the minority side of a partition, or too many
    /// masters are down).
    #[error("no quorum of masters: {0}")]
    NoQuorum(String),
    /// A membership change that cannot be made.
    #[error("membership change refused: {0}")]
    Membership(String),
}

/// One master's Raft.
pub struct Consensus {
    id: NodeId,
    raft: Raft,
    data: watch::Receiver<Arc<Data>>,
    commit_deadline: Duration,
    /// The store, to know when Raft's tasks have let go of it.
    db: Arc<redb::Database>,
    /// To ask another master to stand for election ([`Consensus::abdicate`]).
    network: Network,
}

impl Consensus {
    /// Opens the store in `dir` (`raft.redb`, created if missing) and starts Raft. A node
    /// whose store is new is not part of any cluster until [`Consensus::initialize`] or a
    /// leader adds it.
    pub async fn open(
        id: NodeId,
        dir: &Path,
        timing: Timing,
        network: Network,
    ) -> Result<Self, Error> {
        let path = dir.join("raft.redb");
        let store_error = |detail: String| Error::Store {
            path: path.display().to_string(),
            detail,
        };
        let db = store::open(&path).map_err(|e| store_error(e.to_string()))?;
        let log = store::LogStore::new(db.clone());
        let state =
            store::StateMachine::load(db.clone()).map_err(|e| store_error(e.to_string()))?;
        let data = state.watch();
        let config = Config {
            cluster_name: "dcnet-masters".into(),
            heartbeat_interval: timing.heartbeat.as_millis() as u64,
            election_timeout_min: timing.election_min.as_millis() as u64,
            election_timeout_max: timing.election_max.as_millis() as u64,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK as u64,
            ..Config::default()
        }
        .validate()
        .map_err(|e| Error::Raft(e.to_string()))?;
        let raft = Raft::new(id, Arc::new(config), network.clone(), log, state)
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        Ok(Self {
            id,
            raft,
            data,
            commit_deadline: timing.commit_deadline,
            db,
            network,
        })
    }

    /// This master's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The Raft instance (for [`server::router`]).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Hands leadership to another voter (Marathon's `DELETE /v2/leader`): the one whose log
    /// has caught up furthest is asked to stand for election at once, and this one, which
    /// grants it its vote, steps down when it wins. Returns the new leader once it leads
    /// (within a few election timeouts), or why not.
    pub async fn abdicate(&self) -> Result<NodeId, Error> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            return Err(Error::NotLeader {
                leader: self.leader().0.map(|(_, m)| m),
            });
        }
        let voters: BTreeSet<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let caught_up = metrics.replication.clone().unwrap_or_default();
        let successor = voters
            .iter()
            .filter(|id| **id != self.id)
            .max_by_key(|id| caught_up.get(id).cloned().flatten().map(|l| l.index))
            .copied()
            .ok_or_else(|| {
                Error::Membership("this is the only master: there is no one to hand over to".into())
            })?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&successor)
            .cloned()
            .ok_or_else(|| Error::Membership(format!("master {successor} has no address")))?;
        self.network
            .elect(&node)
            .await
            .map_err(|e| Error::NoQuorum(format!("asking {} to stand: {e}", node.url)))?;
        let mut watch = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let leader = watch.borrow().current_leader;
            if let Some(leader) = leader.filter(|l| *l != self.id) {
                return Ok(leader);
            }
            if tokio::time::timeout_at(deadline, watch.changed())
                .await
                .is_err()
            {
                return Err(Error::NoQuorum(format!(
                    "{} stood for election but did not win within 5 s; this master still leads",
                    node.url
                )));
            }
        }
    }

    /// Makes `members` the first voters of a new cluster. Idempotent: a node that already has
    /// a log or a membership ignores it.
    pub async fn initialize(&self, members: BTreeMap<NodeId, Master>) -> Result<(), Error> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }

    /// Commits `command` on a majority and applies it; only the leader can. A write not
    /// committed within the commit deadline is answered with [`Error::NoQuorum`]: it is
    /// in the leader's log and may still be committed if a quorum comes back.
    pub async fn write(&self, command: Command) -> Result<Reply, Error> {
        let written = tokio::time::timeout(self.commit_deadline, self.raft.client_write(command));
        let Ok(written) = written.await else {
            return Err(Error::NoQuorum(format!(
                "the write was not committed within {:?}; it may still be, if enough masters come back",
                self.commit_deadline
            )));
        };
        written.map(|response| response.data).map_err(write_error)
    }

    /// The data as applied on this master (it may trail the leader's by what is in flight).
    pub fn data(&self) -> watch::Receiver<Arc<Data>> {
        self.data.clone()
    }

    /// Confirms with a quorum that this master still leads, so that a read of [`Self::data`]
    /// after it sees every write committed before it (a linearizable read).
    pub async fn confirm_leadership(&self) -> Result<(), Error> {
        self.raft
            .ensure_linearizable()
            .await
            .map(drop)
            .map_err(|e| match e {
                RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
                    Error::NotLeader {
                        leader: f.leader_node,
                    }
                }
                RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(q)) => {
                    Error::NoQuorum(q.to_string())
                }
                RaftError::Fatal(f) => Error::Raft(f.to_string()),
            })
    }

    /// Who leads as far as this master knows, with the term.
    pub fn leader(&self) -> (Option<(NodeId, Master)>, u64) {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader.and_then(|id| {
            let node = metrics
                .membership_config
                .membership()
                .get_node(&id)?
                .clone();
            Some((id, node))
        });
        (leader, metrics.current_term)
    }

    /// Whether this master leads and a quorum acknowledged it within `within`: what it has
    /// applied is then the committed state (a leader's lease; no round trip).
    pub fn leads_recently(&self, within: Duration) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        metrics.state == ServerState::Leader
            && metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms <= within.as_millis() as u64)
    }

    /// Whether this master leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The voters and learners.
    pub fn members(&self) -> (BTreeMap<NodeId, Master>, BTreeSet<NodeId>) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let nodes = membership
            .nodes()
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        (nodes, membership.voter_ids().collect())
    }

    /// Follows this master's role: its state, the term and the leader.
    pub fn roles(&self) -> RoleWatch {
        let mut metrics = self.raft.metrics();
        let last = role(&metrics.borrow_and_update());
        RoleWatch { metrics, last }
    }

    /// Follows Raft's view of itself (state, term, leader, membership).
    pub fn metrics(&self) -> watch::Receiver<openraft::RaftMetrics<NodeId, Master>> {
        self.raft.metrics()
    }

    /// Adds a master: first as a learner, which receives the log until it has caught up,
    /// then as a voter. Only the leader can.
    pub async fn add_master(&self, id: NodeId, node: Master) -> Result<(), Error> {
        self.raft
            .add_learner(id, node, true)
            .await
            .map_err(write_error)?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map(drop)
            .map_err(write_error)
    }

    /// Removes a master from the voters and from the cluster.
    pub async fn remove_master(&self, id: NodeId) -> Result<(), Error> {
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map(drop)
            .map_err(write_error)
    }

    /// Stops Raft, and waits (up to a few seconds) for its tasks to release the store, so
    /// that it can be opened again at once. Handles of [`Self::raft`] held elsewhere must be
    /// dropped first.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        // Raft's state machine worker lets go of its store a moment after the core stops.
        while Arc::strong_count(&self.db) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

type Role = (ServerState, u64, Option<NodeId>);

fn role(m: &openraft::RaftMetrics<NodeId, Master>) -> Role {
    (m.state, m.current_term, m.current_leader)
}

/// See [`Consensus::roles`]. Raft's metrics change at every heartbeat; this only when the role
/// does.
pub struct RoleWatch {
    metrics: watch::Receiver<openraft::RaftMetrics<NodeId, Master>>,
    last: Role,
}

impl RoleWatch {
    /// Completes when the role, term or leader changes; an error once Raft has stopped.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        loop {
            self.metrics.changed().await?;
            let now = role(&self.metrics.borrow_and_update());
            if now != self.last {
                self.last = now;
                return Ok(());
            }
        }
    }
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Master>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Error::NotLeader {
            leader: f.leader_node,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Error::Membership(e.to_string())
        }
        RaftError::Fatal(e) => Error::Raft(e.to_string()),
    }
}
