//! Raft's storage in one redb database (`raft.redb` in the state directory): the log, the
//! vote, the committed index and the last snapshot, each write committed durably (redb syncs
//! at every commit) before openraft is told it is done.
//!
//! The state machine lives in memory ([`Data`]); it is rebuilt at start from the last
//! snapshot, and openraft applies the committed entries after it again. Snapshots are built
//! from the data and kept in the database, so the log before them can be purged.

// openraft's `StorageError` is large and its storage traits return it; the helpers here return
// what the traits need.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, watch};

use crate::command::{Data, Reply};
use crate::{Master, NodeId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
const SNAPSHOT: &str = "snapshot";

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
) -> impl FnOnce(&dyn std::error::Error) -> StorageError<NodeId> {
    move |e| StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

/// Opens (or creates) the database at `path`.
pub fn open(path: &Path) -> std::result::Result<Arc<Database>, redb::DatabaseError> {
    let db = Database::create(path)?;
    Ok(Arc::new(db))
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>> {
    let err = io_error(ErrorSubject::Store, ErrorVerb::Read);
    let txn = db.begin_read().map_err(|e| err(&e))?;
    let table = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(io_error(ErrorSubject::Store, ErrorVerb::Read)(&e)),
    };
    let Some(value) = table
        .get(key)
        .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read)(&e))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(value.value())
        .map(Some)
        .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read)(&e))
}

fn write_meta<T: Serialize>(db: &Database, key: &str, value: &T) -> Result<()> {
    let err = |e: &dyn std::error::Error| io_error(ErrorSubject::Store, ErrorVerb::Write)(e);
    let bytes = serde_json::to_vec(value).map_err(|e| err(&e))?;
    let txn = db.begin_write().map_err(|e| err(&e))?;
    {
        let mut table = txn.open_table(META).map_err(|e| err(&e))?;
        table.insert(key, bytes.as_slice()).map_err(|e| err(&e))?;
    }
    txn.commit().map_err(|e| err(&e))
}

/// As [`write_meta`], without waiting for the disk (redb's `Durability::None`: durable with
/// the next durable commit).
fn write_meta_lazily<T: Serialize>(db: &Database, key: &str, value: &T) -> Result<()> {
    let err = |e: &dyn std::error::Error| io_error(ErrorSubject::Store, ErrorVerb::Write)(e);
    let bytes = serde_json::to_vec(value).map_err(|e| err(&e))?;
    let mut txn = db.begin_write().map_err(|e| err(&e))?;
    txn.set_durability(redb::Durability::None)
        .map_err(|e| err(&e))?;
    {
        let mut table = txn.open_table(META).map_err(|e| err(&e))?;
        table.insert(key, bytes.as_slice()).map_err(|e| err(&e))?;
    }
    txn.commit().map_err(|e| err(&e))
}

// ---------------------------------------------------------------------------------------------
// The log

/// The log, vote and committed index.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let err = |e: &dyn std::error::Error| io_error(ErrorSubject::Logs, ErrorVerb::Read)(e);
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let table = match txn.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(&e)),
        };
        let mut out = Vec::new();
        for item in table.range(range).map_err(|e| err(&e))? {
            let (_, value) = item.map_err(|e| err(&e))?;
            out.push(serde_json::from_slice(value.value()).map_err(|e| err(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let err = |e: &dyn std::error::Error| io_error(ErrorSubject::Logs, ErrorVerb::Read)(e);
        let last_purged_log_id: Option<LogId<NodeId>> = read_meta(&self.db, PURGED)?;
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let last = match txn.open_table(LOG) {
            Ok(table) => match table.last().map_err(|e| err(&e))? {
                Some((_, value)) => {
                    let entry: Entry<TypeConfig> =
                        serde_json::from_slice(value.value()).map_err(|e| err(&e))?;
                    Some(entry.log_id)
                }
                None => None,
            },
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(err(&e)),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        write_meta(&self.db, VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        read_meta(&self.db, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        // Only a hint for the next start (which entries it may apply before it hears a
        // leader): written without a sync, not worth one per write.
        write_meta_lazily(&self.db, COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(read_meta::<Option<LogId<NodeId>>>(&self.db, COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let err = |e: &dyn std::error::Error| io_error(ErrorSubject::Logs, ErrorVerb::Write)(e);
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| err(&e))?;
            for entry in entries {
                let bytes = serde_json::to_vec(&entry).map_err(|e| err(&e))?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(|e| err(&e))?;
            }
        }
        // Durable before openraft counts the entries as written.
        txn.commit().map_err(|e| err(&e))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let err = |e: &dyn std::error::Error| io_error(ErrorSubject::Logs, ErrorVerb::Delete)(e);
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| err(&e))?;
            table
                .retain_in(log_id.index.., |_, _| false)
                .map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let err = |e: &dyn std::error::Error| io_error(ErrorSubject::Logs, ErrorVerb::Delete)(e);
        let bytes = serde_json::to_vec(&log_id).map_err(|e| err(&e))?;
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            meta.insert(PURGED, bytes.as_slice()).map_err(|e| err(&e))?;
            let mut table = txn.open_table(LOG).map_err(|e| err(&e))?;
            table
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))
    }
}

// ---------------------------------------------------------------------------------------------
// The state machine

/// A snapshot as kept in the database.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Master>,
    data: Vec<u8>,
}

struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Master>,
    data: Data,
    snapshots: u64,
}

/// The state machine: the [`Data`] every master agrees on, published to readers after every
/// batch of entries applied.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
    published: watch::Sender<Arc<Data>>,
}

impl StateMachine {
    /// The state of the last snapshot in `db`.
    pub fn load(db: Arc<Database>) -> Result<Self> {
        let mut applied = Applied {
            last_applied: None,
            membership: StoredMembership::default(),
            data: Data::default(),
            snapshots: 0,
        };
        if let Some(snapshot) = read_meta::<StoredSnapshot>(&db, SNAPSHOT)? {
            applied.data = serde_json::from_slice(&snapshot.data)
                .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read)(&e))?;
            applied.last_applied = snapshot.meta.last_log_id;
            applied.membership = snapshot.meta.last_membership;
        }
        let (published, _) = watch::channel(Arc::new(applied.data.clone()));
        Ok(Self {
            db,
            applied: Arc::new(RwLock::new(applied)),
            published,
        })
    }

    /// Follows the data as entries are applied.
    pub fn watch(&self) -> watch::Receiver<Arc<Data>> {
        self.published.subscribe()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let mut applied = self.applied.write().await;
        let data = serde_json::to_vec(&applied.data)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read)(&e))?;
        applied.snapshots += 1;
        let snapshot_id = match applied.last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, applied.snapshots),
            None => format!("--{}", applied.snapshots),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        drop(applied);
        write_meta(
            &self.db,
            SNAPSHOT,
            &StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
        )?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Master>)> {
        let applied = self.applied.read().await;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.write().await;
        let mut replies = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Reply {
                    applied: true,
                    conflicts: Vec::new(),
                    revision: applied.data.revision,
                },
                EntryPayload::Normal(command) => applied.data.apply(&command, entry.log_id.index),
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Reply {
                        applied: true,
                        conflicts: Vec::new(),
                        revision: applied.data.revision,
                    }
                }
            };
            replies.push(reply);
        }
        let data = Arc::new(applied.data.clone());
        drop(applied);
        self.published.send_if_modified(|current| {
            if **current == *data {
                false
            } else {
                *current = data;
                true
            }
        });
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Master>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let bytes = snapshot.into_inner();
        let data: Data = serde_json::from_slice(&bytes).map_err(|e| {
            io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
            )(&e)
        })?;
        write_meta(
            &self.db,
            SNAPSHOT,
            &StoredSnapshot {
                meta: meta.clone(),
                data: bytes,
            },
        )?;
        let mut applied = self.applied.write().await;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        applied.data = data.clone();
        drop(applied);
        self.published.send_replace(Arc::new(data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        Ok(
            read_meta::<StoredSnapshot>(&self.db, SNAPSHOT)?.map(|s| Snapshot {
                meta: s.meta,
                snapshot: Box::new(Cursor::new(s.data)),
            }),
        )
    }
}
