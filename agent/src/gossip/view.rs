//! The cluster as this node sees it, and the events that turn one view into the next.
//!
//! chitchat keeps one state per (node id, generation) and reports neither deleted keys nor
//! removed nodes. The observer in [`super`] samples it into [`Observed`] rows; [`next_view`] —
//! pure, so it is unit-tested here — keeps the newest generation of each node id, carries
//! unchanged key sets over without copying them, and diffs the result against the previous view
//! into [`Event`]s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// One node of the cluster, at its newest known generation.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Stable node id.
    pub id: String,
    pub generation: u64,
    /// Address the node gossips at.
    pub gossip_addr: SocketAddr,
    /// Whether the failure detector considers it alive (always true for this node).
    pub is_up: bool,
    /// Whether this is the local node.
    pub is_self: bool,
    /// When this node last saw its heartbeat advance.
    pub last_heard: SystemTime,
    /// The node's published keys (tombstoned keys excluded).
    pub keys: Arc<Keys>,
    heartbeat: u64,
    max_version: u64,
}

impl NodeView {
    /// Whether a sample of this node with these fields would change nothing but its
    /// heartbeat (and so `last_heard`).
    pub fn is_as(
        &self,
        generation: u64,
        gossip_addr: SocketAddr,
        max_version: u64,
        is_up: bool,
    ) -> bool {
        self.generation == generation
            && self.gossip_addr == gossip_addr
            && self.max_version == max_version
            && self.is_up == is_up
    }

    /// The value of `key`, if this node publishes it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(|v| &**v)
    }
}

/// Every node this node knows of, by node id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub nodes: BTreeMap<String, NodeView>,
}

impl ClusterView {
    /// Nodes the failure detector considers alive.
    pub fn up_nodes(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.values().filter(|n| n.is_up)
    }

    /// The value of `key` on node `node_id`.
    pub fn get(&self, node_id: &str, key: &str) -> Option<&str> {
        self.nodes.get(node_id)?.get(key)
    }
}

/// A change between two views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A node became alive (also when first seen alive).
    NodeUp {
        node: String,
    },
    /// A node stopped answering; its keys stay until it is removed.
    NodeDown {
        node: String,
    },
    /// A node was dead past the grace period and is forgotten, with its keys.
    NodeRemoved {
        node: String,
    },
    KeyAdded {
        node: String,
        key: String,
        value: String,
    },
    KeyUpdated {
        node: String,
        key: String,
        value: String,
    },
    KeyDeleted {
        node: String,
        key: String,
    },
}

/// A node's keys and values, in key order. The values are chitchat's own, shared: a view
/// copies none, and a value is the same `Arc` in every view until it changes.
///
/// A sorted vector, not a map: it is built in key order from chitchat's state, read in order
/// (the facts decoder walks two of them side by side) and searched only for a handful of
/// keys. At 100,000 keys it is one 3.2 MB allocation, where a `BTreeMap` took ~13 MB in
/// 100,000-odd nodes (heaptrack, a serving node at 100,000 tasks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys(Vec<(Arc<str>, Arc<str>)>);

impl Keys {
    pub fn new() -> Self {
        Self::default()
    }

    /// The key as stored, and its value.
    pub fn get_key_value(&self, key: &str) -> Option<(&Arc<str>, &Arc<str>)> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        let (k, v) = &self.0[i];
        Some((k, v))
    }

    pub fn get(&self, key: &str) -> Option<&Arc<str>> {
        self.get_key_value(key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get_key_value(key).is_some()
    }

    /// Keys and values in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The keys that start with `prefix`, with their values, in key order.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a Arc<str>, &'a Arc<str>)> {
        let start = self.0.partition_point(|(k, _)| **k < *prefix);
        self.0[start..]
            .iter()
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(Arc<str>, Arc<str>)> for Keys {
    /// In any order; of a key given twice, the last value stays (as in a map).
    fn from_iter<I: IntoIterator<Item = (Arc<str>, Arc<str>)>>(pairs: I) -> Self {
        let mut pairs: Vec<_> = pairs.into_iter().collect();
        if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable, so of equal keys the last given is last, and the one kept.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            let mut kept: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(pairs.len());
            for pair in pairs {
                match kept.last_mut() {
                    Some(last) if last.0 == pair.0 => *last = pair,
                    _ => kept.push(pair),
                }
            }
            pairs = kept;
        }
        pairs.shrink_to_fit();
        Self(pairs)
    }
}

impl std::ops::Index<&str> for Keys {
    type Output = Arc<str>;

    /// The value of `key`; panics without it, as a map's index does.
    fn index(&self, key: &str) -> &Arc<str> {
        self.get(key).expect("no such key")
    }
}

impl<'a> IntoIterator for &'a Keys {
    type Item = (&'a Arc<str>, &'a Arc<str>);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Arc<str>, Arc<str>)>,
        fn(&'a (Arc<str>, Arc<str>)) -> (&'a Arc<str>, &'a Arc<str>),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// The keys of a node whose chitchat state is `live` (its live keys in key order). Keys and
/// values are chitchat's own (shared, see third_party/chitchat): a view copies none, and an
/// unchanged key or value is the same `Arc` in every view.
pub fn keys_of<'a>(
    live: impl Iterator<Item = (&'a Arc<str>, &'a chitchat::VersionedValue)>,
) -> Keys {
    live.map(|(key, value)| (key.clone(), value.value.clone()))
        .collect()
}

/// `keys` as [`Keys`].
pub fn shared(keys: &BTreeMap<String, String>) -> Keys {
    keys.iter()
        .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())))
        .collect()
}

/// What the observer read from chitchat for one (node id, generation).
#[derive(Debug, Clone)]
pub struct Observed {
    pub id: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    pub heartbeat: u64,
    pub max_version: u64,
    pub is_live: bool,
    pub is_self: bool,
    /// The live keys, or `None` when [`needs_keys`] said the previous view's are still current.
    pub keys: Option<Keys>,
}

/// Whether the observer must copy the keys of this (id, generation, max_version): not when the
/// previous view already holds exactly that state.
pub fn needs_keys(prev: &ClusterView, id: &str, generation: u64, max_version: u64) -> bool {
    needs_keys_of(prev.nodes.get(id), generation, max_version)
}

/// [`needs_keys`], given the previous view's node of that id.
pub fn needs_keys_of(before: Option<&NodeView>, generation: u64, max_version: u64) -> bool {
    before.is_none_or(|n| n.generation != generation || n.max_version != max_version)
}

/// The node `id` of a previous view walked in id order (`nodes`), for distinct ids asked in
/// ascending order: passes the nodes before it to `skipped` and takes it.
pub fn previous_node<'a>(
    nodes: &mut std::iter::Peekable<impl Iterator<Item = (&'a String, &'a NodeView)>>,
    id: &str,
    mut skipped: impl FnMut(&'a str, &'a NodeView),
) -> Option<&'a NodeView> {
    while let Some(&(key, node)) = nodes.peek() {
        match key.as_str().cmp(id) {
            std::cmp::Ordering::Less => skipped(key, node),
            std::cmp::Ordering::Equal => {
                nodes.next();
                return Some(node);
            }
            std::cmp::Ordering::Greater => return None,
        }
        nodes.next();
    }
    None
}

/// Builds the view that follows `prev` from the observed rows, and the events between them.
pub fn next_view(
    prev: &ClusterView,
    observed: Vec<Observed>,
    now: SystemTime,
) -> (ClusterView, Vec<Event>) {
    next_view_with(prev, observed, now, true)
}

/// As [`next_view`]; key events (a copy of every changed value: all of a node's at first
/// sight) only with `key_events`, for when someone listens.
pub fn next_view_with(
    prev: &ClusterView,
    observed: Vec<Observed>,
    now: SystemTime,
    key_events: bool,
) -> (ClusterView, Vec<Event>) {
    // Newest generation per node id; older generations of a restarted node are stale. The
    // observer's rows come in chitchat's order (node id, then generation), so the sort is a
    // linear check and each id's newest row is the last of its run (the first on a tie).
    let mut observed = observed;
    observed.sort_by(|a, b| a.id.cmp(&b.id).then(a.generation.cmp(&b.generation)));
    let mut newest: Vec<Observed> = Vec::with_capacity(observed.len());
    for row in observed {
        match newest.last_mut() {
            Some(last) if last.id == row.id => {
                if row.generation > last.generation {
                    *last = row;
                }
            }
            _ => newest.push(row),
        }
    }

    // Both sides are in id order: walk the previous view beside the rows, without lookups
    // (at 1,000 members these string searches were most of a sample).
    let mut events = Vec::new();
    let mut gone = Vec::new();
    let mut previous = prev.nodes.iter().peekable();
    let mut nodes = Vec::with_capacity(newest.len());
    for row in newest {
        let before = previous_node(&mut previous, &row.id, |id, node| gone.push((id, node)));
        let keys = match (row.keys, before) {
            (Some(keys), _) => Arc::new(keys),
            (None, Some(before)) => before.keys.clone(),
            // The observer skipped keys it did not need; absent a previous view that cannot be.
            (None, None) => Arc::new(Keys::new()),
        };
        let same_incarnation = before.is_some_and(|b| b.generation == row.generation);
        let last_heard = match before {
            Some(b) if same_incarnation && b.heartbeat == row.heartbeat => b.last_heard,
            _ => now,
        };
        let is_up = row.is_live || row.is_self;
        let id = row.id;

        let empty = Keys::new();
        let old_keys = before.map_or(&empty, |b| &*b.keys);
        if key_events {
            diff_keys(&id, old_keys, &keys, &mut events);
        }
        match (before.map(|b| b.is_up), is_up) {
            (Some(false) | None, true) => events.push(Event::NodeUp { node: id.clone() }),
            (Some(true), false) => events.push(Event::NodeDown { node: id.clone() }),
            _ => {}
        }

        nodes.push((
            id.clone(),
            NodeView {
                id,
                generation: row.generation,
                gossip_addr: row.gossip_addr,
                is_up,
                is_self: row.is_self,
                last_heard,
                keys,
                heartbeat: row.heartbeat,
                max_version: row.max_version,
            },
        ));
    }
    gone.extend(previous.map(|(id, node)| (id.as_str(), node)));
    for (id, before) in gone {
        if key_events {
            diff_keys(id, &before.keys, &Keys::new(), &mut events);
        }
        events.push(Event::NodeRemoved {
            node: id.to_owned(),
        });
    }
    // In id order already: built in one pass.
    let view = ClusterView {
        nodes: nodes.into_iter().collect(),
    };
    (view, events)
}

fn diff_keys(node: &str, old: &Keys, new: &Keys, events: &mut Vec<Event>) {
    if std::ptr::eq(old, new) {
        return;
    }
    for (key, value) in new {
        match old.get(key) {
            None => events.push(Event::KeyAdded {
                node: node.to_owned(),
                key: key.to_string(),
                value: value.to_string(),
            }),
            Some(v) if v != value => events.push(Event::KeyUpdated {
                node: node.to_owned(),
                key: key.to_string(),
                value: value.to_string(),
            }),
            Some(_) => {}
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            events.push(Event::KeyDeleted {
                node: node.to_owned(),
                key: key.to_string(),
            });
        }
    }
}

/// Views for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A view of up nodes holding `keys`.
    pub fn view_with(nodes: &[(&str, BTreeMap<String, String>)]) -> ClusterView {
        let rows = nodes
            .iter()
            .map(|(id, keys)| Observed {
                id: (*id).to_owned(),
                generation: 1,
                gossip_addr: "127.0.0.1:1".parse().expect("literal"),
                heartbeat: 1,
                max_version: 1,
                is_live: true,
                is_self: false,
                keys: Some(shared(keys)),
            })
            .collect();
        next_view(&ClusterView::default(), rows, SystemTime::UNIX_EPOCH).0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn row(
        id: &str,
        generation: u64,
        heartbeat: u64,
        live: bool,
        keys: Option<&[(&str, &str)]>,
    ) -> Observed {
        Observed {
            id: id.into(),
            generation,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            heartbeat,
            max_version: heartbeat,
            is_live: live,
            is_self: false,
            keys: keys.map(|kv| {
                kv.iter()
                    .map(|(k, v)| (Arc::from(*k), Arc::from(*v)))
                    .collect()
            }),
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn added(node: &str, key: &str, value: &str) -> Event {
        Event::KeyAdded {
            node: node.into(),
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_view_shares_chitchats_keys_and_values() {
        let value = |v: &str, version| chitchat::VersionedValue {
            value: Arc::from(v),
            version,
            status: chitchat::DeletionStatus::Set,
        };
        let state: Vec<(Arc<str>, chitchat::VersionedValue)> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, k)| (Arc::from(*k), value(k, i as u64)))
            .collect();
        let keys = keys_of(state.iter().map(|(k, v)| (k, v)));
        let got: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(got, [("a", "a"), ("b", "b"), ("c", "c")]);
        for (i, (k, v)) in keys.iter().enumerate() {
            assert!(Arc::ptr_eq(k, &state[i].0), "key {k} is chitchat's");
            assert!(
                Arc::ptr_eq(v, &state[i].1.value),
                "value of {k} is chitchat's"
            );
        }
    }

    #[test]
    fn a_node_appears_then_changes_then_goes_down_then_is_removed() {
        let v0 = ClusterView::default();
        let (v1, e) = next_view(
            &v0,
            vec![row("a", 1, 1, true, Some(&[("k", "1"), ("j", "x")]))],
            t(1),
        );
        assert_eq!(
            e,
            vec![
                added("a", "j", "x"),
                added("a", "k", "1"),
                Event::NodeUp { node: "a".into() }
            ]
        );

        let (v2, e) = next_view(
            &v1,
            vec![row("a", 1, 2, true, Some(&[("k", "2"), ("new", "n")]))],
            t(2),
        );
        assert_eq!(
            e,
            vec![
                Event::KeyUpdated {
                    node: "a".into(),
                    key: "k".into(),
                    value: "2".into()
                },
                added("a", "new", "n"),
                Event::KeyDeleted {
                    node: "a".into(),
                    key: "j".into()
                },
            ]
        );
        assert_eq!(v2.nodes["a"].last_heard, t(2));

        // Unchanged state: keys carried over (None), no events, last_heard kept.
        let (v3, e) = next_view(&v2, vec![row("a", 1, 2, false, None)], t(3));
        assert_eq!(e, vec![Event::NodeDown { node: "a".into() }]);
        assert_eq!(v3.get("a", "k"), Some("2"));
        assert_eq!(v3.nodes["a"].last_heard, t(2));
        assert!(Arc::ptr_eq(&v3.nodes["a"].keys, &v2.nodes["a"].keys));

        let (v4, e) = next_view(&v3, vec![], t(4));
        assert_eq!(
            e,
            vec![
                Event::KeyDeleted {
                    node: "a".into(),
                    key: "k".into()
                },
                Event::KeyDeleted {
                    node: "a".into(),
                    key: "new".into()
                },
                Event::NodeRemoved { node: "a".into() },
            ]
        );
        assert!(v4.nodes.is_empty());
    }

    #[test]
    fn a_restarted_node_is_seen_at_its_newest_generation_only() {
        let (v1, _) = next_view(
            &ClusterView::default(),
            vec![row("a", 1, 9, true, Some(&[("k", "old")]))],
            t(1),
        );
        // The old generation lingers (dead) beside the new one.
        let (v2, e) = next_view(
            &v1,
            vec![
                row("a", 1, 9, false, Some(&[("k", "old")])),
                row("a", 2, 1, true, Some(&[("k", "new")])),
            ],
            t(2),
        );
        assert_eq!(v2.nodes["a"].generation, 2);
        assert_eq!(v2.get("a", "k"), Some("new"));
        assert!(v2.nodes["a"].is_up);
        assert_eq!(
            e,
            vec![Event::KeyUpdated {
                node: "a".into(),
                key: "k".into(),
                value: "new".into()
            }]
        );
    }

    #[test]
    fn a_node_first_seen_dead_emits_no_up_or_down() {
        let (v1, e) = next_view(
            &ClusterView::default(),
            vec![row("a", 1, 1, false, Some(&[]))],
            t(1),
        );
        assert!(e.is_empty());
        assert!(!v1.nodes["a"].is_up);
    }

    #[test]
    fn keys_given_out_of_order_read_as_a_map_would() {
        let pair = |k: &str, v: &str| (Arc::<str>::from(k), Arc::<str>::from(v));
        let keys: Keys = [
            pair("b", "1"),
            pair("a", "2"),
            pair("b", "3"),
            pair("c", "4"),
        ]
        .into_iter()
        .collect();
        let listed: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(listed, [("a", "2"), ("b", "3"), ("c", "4")]);
        assert_eq!(keys.get("b").map(|v| &**v), Some("3"));
        assert!(keys.get("d").is_none() && !keys.contains_key("") && keys.len() == 3);
    }

    #[test]
    fn rows_in_any_order_are_merged_with_the_previous_view_by_id() {
        let (v1, _) = next_view(
            &ClusterView::default(),
            vec![
                row("b", 1, 1, true, Some(&[("k", "b")])),
                row("d", 1, 1, true, Some(&[("k", "d")])),
                row("f", 1, 1, true, Some(&[])),
            ],
            t(1),
        );
        // `a` and `e` are new, `b` and `f` gone, `d` keeps its keys; rows unsorted, and an
        // old generation of `e` after its new one.
        let (v2, e) = next_view(
            &v1,
            vec![
                row("e", 2, 1, true, Some(&[])),
                row("d", 1, 2, true, None),
                row("a", 1, 1, true, Some(&[])),
                row("e", 1, 7, false, Some(&[("k", "old")])),
            ],
            t(2),
        );
        let ids: Vec<&str> = v2.nodes.keys().map(String::as_str).collect();
        assert_eq!(ids, ["a", "d", "e"]);
        assert_eq!(v2.nodes["e"].generation, 2);
        assert_eq!(v2.get("d", "k"), Some("d"));
        assert!(Arc::ptr_eq(&v1.nodes["d"].keys, &v2.nodes["d"].keys));
        assert_eq!(
            e,
            vec![
                Event::NodeUp { node: "a".into() },
                Event::NodeUp { node: "e".into() },
                Event::KeyDeleted {
                    node: "b".into(),
                    key: "k".into()
                },
                Event::NodeRemoved { node: "b".into() },
                Event::NodeRemoved { node: "f".into() },
            ]
        );
        // The observer's walk finds what a lookup would, for ids asked in order.
        let mut walk = v2.nodes.iter().peekable();
        for id in ["0", "a", "c", "d", "z"] {
            let found = previous_node(&mut walk, id, |_, _| {}).map(|n| n.id.as_str());
            assert_eq!(found, v2.nodes.get(id).map(|n| n.id.as_str()), "{id}");
        }
    }

    #[test]
    fn keys_are_needed_only_for_new_state() {
        let (v1, _) = next_view(
            &ClusterView::default(),
            vec![row("a", 1, 5, true, Some(&[]))],
            t(1),
        );
        assert!(!needs_keys(&v1, "a", 1, 5));
        assert!(needs_keys(&v1, "a", 1, 6));
        assert!(needs_keys(&v1, "a", 2, 5));
        assert!(needs_keys(&v1, "b", 1, 1));
    }
}
