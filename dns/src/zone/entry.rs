//! One name of a [`super::Snapshot`], laid out for a million of them.
//!
//! Most names of a cluster have one address given by one task (`<task>.<framework>.mesos`,
//! its canonical name, the `.slave.` names, the dcos-dns names): those keep it inline, with no
//! allocation at all. Other names keep their records and, for records several contributors
//! give, the counts, behind one shared pointer: an update copies the shards it touches (see
//! [`crate::shards`]), and a copied entry shares its records with the old snapshot instead of
//! copying them. An entry is 24 bytes.

use crate::records::{RecordData, SrvTarget};
use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::NameRecords;

/// One name of the map. It is there while it exists: an apex, records, or names with records
/// below it. Its zone and whether it is the apex follow from its name (see
/// [`super::Snapshot::zone_of_key`]), so an entry does not keep them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    pub(super) records: Records,
    /// Names with records below this one, within its zone; an apex counts itself as well, so
    /// that it always exists (names are counted up to the apex, never into it).
    pub(super) descendants: u32,
    /// The update that last changed the records (see [`super::Update`]).
    pub(super) stamp: u32,
}

impl Entry {
    /// An apex without records.
    pub(super) fn apex() -> Self {
        Entry {
            descendants: 1,
            ..Entry::default()
        }
    }

    pub(crate) fn exists(&self) -> bool {
        !self.records.is_empty() || self.descendants > 0
    }

    pub(crate) fn a(&self) -> &[Ipv4Addr] {
        self.records.a()
    }

    pub(crate) fn aaaa(&self) -> &[Ipv6Addr] {
        self.records.aaaa()
    }

    pub(crate) fn srv(&self) -> &[SrvTarget] {
        self.records.srv()
    }
}

/// The records of a name: none, the one-address case inline, or anything else counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Records {
    #[default]
    None,
    /// One A record, given once.
    A(Ipv4Addr),
    /// One SRV record, given once (a task's own SRV names).
    Srv(Arc<SrvTarget>),
    Many(Arc<Counted>),
}

/// Records, each sorted, and how many contributors give each record given by more than one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Counted {
    records: NameRecords,
    /// Sorted by record; every count at least 2.
    dups: Vec<(RecordData, u32)>,
}

/// The SRV records entries last kept inline, for the next names that give the same ones: a
/// task's SRV names give two records between them (`_tcp` and `_udp` to its agent port, by
/// service and by port name to its discovery port), and one allocation each serves all (at
/// 100,000 tasks, 8 MB less). A task's records are counted together, sorted by name, so the
/// last few distinct ones are enough.
#[derive(Debug, Default)]
pub(super) struct SharedSrv {
    recent: [Option<Arc<SrvTarget>>; 4],
    next: usize,
}

impl SharedSrv {
    fn get(&mut self, srv: &SrvTarget) -> Arc<SrvTarget> {
        if let Some(shared) = self.recent.iter().flatten().find(|r| ***r == *srv) {
            return shared.clone();
        }
        let made = Arc::new(srv.clone());
        self.recent[self.next] = Some(made.clone());
        self.next = (self.next + 1) % self.recent.len();
        made
    }
}

impl Records {
    /// `records` (each sorted, without repeats), each given once.
    pub(super) fn set(records: NameRecords) -> Self {
        Self::compact(Counted {
            records,
            dups: Vec::new(),
        })
    }

    fn compact(mut counted: Counted) -> Self {
        let r = &mut counted.records;
        let once = counted.dups.is_empty();
        match (r.a.as_slice(), r.aaaa.is_empty(), r.srv.as_mut_slice()) {
            ([], true, []) => Records::None,
            ([ip], true, []) if once => Records::A(*ip),
            ([], true, [srv]) if once => Records::Srv(Arc::new(std::mem::take(srv))),
            _ => Records::Many(Arc::new(counted)),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Records::None)
    }

    pub(super) fn a(&self) -> &[Ipv4Addr] {
        match self {
            Records::A(ip) => std::slice::from_ref(ip),
            Records::Many(c) => &c.records.a,
            _ => &[],
        }
    }

    pub(super) fn aaaa(&self) -> &[Ipv6Addr] {
        match self {
            Records::Many(c) => &c.records.aaaa,
            _ => &[],
        }
    }

    pub(super) fn srv(&self) -> &[SrvTarget] {
        match self {
            Records::Srv(srv) => std::slice::from_ref(&**srv),
            Records::Many(c) => &c.records.srv,
            _ => &[],
        }
    }

    /// The records as the public type: borrowed when they are kept in it.
    pub(super) fn name_records(&self) -> Cow<'_, NameRecords> {
        match self {
            Records::None => Cow::Owned(NameRecords::default()),
            Records::A(ip) => Cow::Owned(NameRecords {
                a: vec![*ip],
                ..NameRecords::default()
            }),
            Records::Srv(srv) => Cow::Owned(NameRecords {
                srv: vec![(**srv).clone()],
                ..NameRecords::default()
            }),
            Records::Many(c) => Cow::Borrowed(&c.records),
        }
    }

    /// Counts one contributor of `data` in (`add`) or out; an SRV record kept inline comes
    /// from `shared`.
    pub(super) fn bump(&mut self, data: &RecordData, add: bool, shared: &mut SharedSrv) {
        // The common cases of one address, without going through the general form.
        match (&*self, data, add) {
            (Records::None, RecordData::A(ip), true) => {
                *self = Records::A(*ip);
                return;
            }
            (Records::A(old), RecordData::A(ip), false) if old == ip => {
                *self = Records::None;
                return;
            }
            (Records::None, RecordData::Srv(srv), true) => {
                *self = Records::Srv(shared.get(srv));
                return;
            }
            (Records::Srv(old), RecordData::Srv(srv), false) if **old == *srv => {
                *self = Records::None;
                return;
            }
            (Records::None | Records::A(_) | Records::Srv(_), _, false) => return,
            _ => {}
        }
        let mut counted = match std::mem::take(self) {
            Records::None => Counted::default(),
            Records::A(ip) => Counted {
                records: NameRecords {
                    a: vec![ip],
                    ..NameRecords::default()
                },
                dups: Vec::new(),
            },
            Records::Srv(srv) => Counted {
                records: NameRecords {
                    srv: vec![Arc::unwrap_or_clone(srv)],
                    ..NameRecords::default()
                },
                dups: Vec::new(),
            },
            Records::Many(counted) => Arc::unwrap_or_clone(counted),
        };
        counted.bump(data, add);
        *self = Self::compact(counted);
    }
}

impl Counted {
    fn bump(&mut self, data: &RecordData, add: bool) {
        let records = &mut self.records;
        let present = match data {
            RecordData::A(ip) => toggle(&mut records.a, ip, add),
            RecordData::Aaaa(ip) => toggle(&mut records.aaaa, ip, add),
            RecordData::Srv(t) => toggle(&mut records.srv, t, add),
        };
        // Absent before: it was added now, or there was nothing to remove.
        if !present {
            return;
        }
        let dups = &mut self.dups;
        match (dups.binary_search_by(|(d, _)| d.cmp(data)), add) {
            (Ok(i), true) => dups[i].1 += 1,
            (Err(i), true) => dups.insert(i, (data.clone(), 2)),
            (Ok(i), false) if dups[i].1 > 2 => dups[i].1 -= 1,
            (Ok(i), false) => {
                dups.remove(i);
            }
            // Its one contributor went: the record goes.
            (Err(_), false) => match data {
                RecordData::A(ip) => remove(&mut records.a, ip),
                RecordData::Aaaa(ip) => remove(&mut records.aaaa, ip),
                RecordData::Srv(t) => remove(&mut records.srv, t),
            },
        }
    }
}

/// Inserts `item` into the sorted `items` when adding and it is missing; returns whether it
/// was present (then nothing changed).
fn toggle<T: Ord + Clone>(items: &mut Vec<T>, item: &T, add: bool) -> bool {
    match items.binary_search(item) {
        Ok(_) => true,
        Err(i) => {
            if add {
                items.insert(i, item.clone());
            }
            false
        }
    }
}

fn remove<T: Ord>(items: &mut Vec<T>, item: &T) {
    if let Ok(i) = items.binary_search(item) {
        items.remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SRV record of one target at `port`.
    fn srv(port: u16) -> RecordData {
        RecordData::Srv(SrvTarget {
            target: "web-1.marathon.slave.mesos.".into(),
            port,
        })
    }

    #[test]
    fn an_address_only_entry_is_small() {
        assert!(size_of::<Entry>() <= 24, "{}", size_of::<Entry>());
    }

    #[test]
    fn counts_keep_a_record_while_one_contributor_gives_it() {
        let a = RecordData::A(Ipv4Addr::new(10, 0, 0, 1));
        let b = RecordData::A(Ipv4Addr::new(10, 0, 0, 2));
        let mut records = Records::default();
        let mut shared = SharedSrv::default();
        records.bump(&a, true, &mut shared);
        assert_eq!(records, Records::A(Ipv4Addr::new(10, 0, 0, 1)));
        records.bump(&a, true, &mut shared);
        records.bump(&b, true, &mut shared);
        assert_eq!(records.a().len(), 2);
        records.bump(&a, false, &mut shared);
        assert_eq!(records.a().len(), 2, "a has one contributor left");
        records.bump(&a, false, &mut shared);
        assert_eq!(
            records,
            Records::A(Ipv4Addr::new(10, 0, 0, 2)),
            "back inline"
        );
        records.bump(&a, false, &mut shared);
        records.bump(&b, false, &mut shared);
        assert!(records.is_empty());
    }

    #[test]
    fn one_srv_record_stays_inline_until_another_comes() {
        let mut records = Records::default();
        let mut shared = SharedSrv::default();
        records.bump(&srv(31000), true, &mut shared);
        assert!(matches!(records, Records::Srv(_)));
        records.bump(&srv(31001), true, &mut shared);
        records.bump(&srv(31000), true, &mut shared);
        assert!(matches!(records, Records::Many(_)));
        assert_eq!(records.srv().len(), 2);
        records.bump(&srv(31001), false, &mut shared);
        records.bump(&srv(31000), false, &mut shared);
        assert!(
            matches!(records, Records::Srv(_)),
            "31000 has one contributor left"
        );
        records.bump(&srv(31000), false, &mut shared);
        assert!(records.is_empty());
    }

    #[test]
    fn names_giving_the_same_srv_record_share_it() {
        let mut shared = SharedSrv::default();
        let (mut tcp, mut udp, mut other) =
            (Records::default(), Records::default(), Records::default());
        tcp.bump(&srv(31000), true, &mut shared);
        other.bump(&srv(31001), true, &mut shared);
        udp.bump(&srv(31000), true, &mut shared);
        let (Records::Srv(a), Records::Srv(b), Records::Srv(c)) = (&tcp, &udp, &other) else {
            panic!("each kept inline: {tcp:?} {udp:?} {other:?}");
        };
        assert!(Arc::ptr_eq(a, b));
        assert!(!Arc::ptr_eq(a, c));
        assert_eq!(c.port, 31001);
    }
}
