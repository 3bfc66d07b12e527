//! The state machine's data and commands: a map of keys to JSON values, changed by batches of
//! puts and deletes that may be conditional on what keys hold now (compare-and-set), as etcd's
//! transactions are. The scheduler keeps its apps, their versions and its credentials here; the
//! map knows nothing of them.
//!
//! Pure: applying the same commands in the same order gives the same data on every master.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A change to the data, applied whole or not at all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Conditions: each key must hold this value now (`None`: must be absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expect: BTreeMap<String, Option<Value>>,
    /// Changes: each key gets this value (`None`: is deleted).
    pub set: BTreeMap<String, Option<Value>>,
}

impl Command {
    /// Puts `value` under `key`.
    pub fn put(key: impl Into<String>, value: Value) -> Self {
        let mut c = Self::default();
        c.set.insert(key.into(), Some(value));
        c
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        let mut c = Self::default();
        c.set.insert(key.into(), None);
        c
    }
}

/// The outcome of a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// False when a condition did not hold (nothing changed).
    pub applied: bool,
    /// The keys whose condition did not hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// The data's revision after the command (the log index of the last change).
    pub revision: u64,
}

/// The replicated data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Data {
    pub entries: BTreeMap<String, Value>,
    /// Log index of the last command that changed anything.
    pub revision: u64,
}

impl Data {
    /// Applies `command`, committed at log index `index`.
    pub fn apply(&mut self, command: &Command, index: u64) -> Reply {
        let conflicts: Vec<String> = command
            .expect
            .iter()
            .filter(|(k, want)| self.entries.get(*k) != want.as_ref())
            .map(|(k, _)| k.clone())
            .collect();
        if !conflicts.is_empty() {
            return Reply {
                applied: false,
                conflicts,
                revision: self.revision,
            };
        }
        for (key, value) in &command.set {
            match value {
                Some(v) => {
                    self.entries.insert(key.clone(), v.clone());
                }
                None => {
                    self.entries.remove(key);
                }
            }
        }
        if !command.set.is_empty() {
            self.revision = index;
        }
        Reply {
            applied: true,
            conflicts: Vec::new(),
            revision: self.revision,
        }
    }

    /// The entries whose keys start with `prefix`.
    pub fn prefixed<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.entries
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn batches_apply_whole_or_not_at_all() {
        let mut d = Data::default();
        assert!(
            d.apply(&Command::put("apps/web", json!({"instances": 3})), 5)
                .applied
        );
        assert_eq!(d.revision, 5);
        let mut batch = Command::put("apps/db", json!(1));
        batch.set.insert("apps/web".into(), None);
        batch
            .expect
            .insert("apps/web".into(), Some(json!({"instances": 3})));
        let r = d.apply(&batch, 6);
        assert!(r.applied);
        assert_eq!(d.entries.keys().collect::<Vec<_>>(), ["apps/db"]);
        // A stale condition changes nothing.
        let mut stale = Command::put("apps/db", json!(2));
        stale
            .expect
            .insert("apps/web".into(), Some(json!({"instances": 3})));
        stale.expect.insert("apps/db".into(), Some(json!(1)));
        let r = d.apply(&stale, 7);
        assert_eq!(
            (r.applied, r.conflicts, r.revision),
            (false, vec!["apps/web".to_owned()], 6)
        );
        assert_eq!(d.entries["apps/db"], json!(1));
        // Create-only: the key must be absent.
        let mut create = Command::put("apps/db", json!(3));
        create.expect.insert("apps/db".into(), None);
        assert!(!d.apply(&create, 8).applied);
    }

    #[test]
    fn prefixes_list_only_their_keys() {
        let mut d = Data::default();
        for k in ["apps/a", "apps/b", "appsx", "auth/store", "app"] {
            d.apply(&Command::put(k, json!(k)), 1);
        }
        let keys: Vec<&String> = d.prefixed("apps/").map(|(k, _)| k).collect();
        assert_eq!(keys, ["apps/a", "apps/b"]);
    }
}
