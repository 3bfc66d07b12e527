//! The authoritative data one server answers from: an immutable snapshot of every zone it
//! serves (`mesos.`, `thisdcos.directory.`, ...), swapped whole when records change so readers
//! never lock.
//!
//! [`Snapshot::lookup`] decides the kind of answer (RFC 1034 §4.3.2, RFC 8020): records; no data
//! for an existing name, including empty non-terminals (`slave.mesos.` exists because
//! `x.slave.mesos.` does); no such domain; or not ours (to be forwarded). Names are matched
//! lower-case; callers lower-case the question.
//!
//! A new snapshot is made from the last one by an [`Update`] (names set whole, or records
//! counted in and out by their contributors; [`Snapshot::apply`] sets), in time proportional to
//! the names that changed: names live in a [`ShardedMap`] whose untouched shards the two
//! snapshots share, and each name keeps how many names with records lie below it, so empty
//! non-terminals appear and disappear with their last descendant. [`Snapshot::build`] is the
//! same update applied to empty zones. Nothing is prepared per name: answers are written from
//! the records at query time (see [`crate::fast_path`]). A name's layout (`zone/entry.rs`, and
//! the shards' in [`crate::shards`]) is made for a million of them: its bytes, without its
//! zone's origin, in its shard's buffer, one address inline, anything else behind one shared
//! pointer.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::fast_path::{PreparedZone, is_label_suffix, prepare_zone, wire_name};
use crate::records::{Record, RecordSet, SrvTarget, fqdn};

mod entry;

use crate::shards::ShardedMap;
pub(crate) use entry::Entry;
use entry::{Records, SharedSrv};

/// Start-of-authority settings of one zone (Mesos-DNS's SOA* config keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soa {
    /// The primary name server (`SOAMname`), fully qualified.
    pub mname: String,
    /// The responsible mailbox (`SOARname`), fully qualified.
    pub rname: String,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// Negative-caching TTL (`SOAMinttl`).
    pub minimum: u32,
}

/// One zone and the records in it.
#[derive(Debug, Clone)]
pub struct ZoneData {
    /// Apex, e.g. `mesos`; made lower-case and fully qualified.
    pub origin: String,
    pub soa: Soa,
    /// Name servers listed at the apex (defaults to the SOA mname).
    pub ns: Vec<String>,
    /// TTL of every record of the zone.
    pub ttl: u32,
    /// Weight of every SRV record (Mesos-DNS's `srvRecordDefaultWeight`).
    pub srv_weight: u16,
    pub records: RecordSet,
}

impl ZoneData {
    /// The zone's settings, normalised, and its records.
    fn split(self) -> (ZoneInfo, RecordSet) {
        let info = ZoneInfo::new(&self.origin, self.soa, self.ns, self.ttl, self.srv_weight);
        (info, self.records)
    }
}

/// What a zone says about itself, for SOA/NS answers and negative answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneInfo {
    pub origin: String,
    pub soa: Soa,
    pub ns: Vec<String>,
    pub ttl: u32,
    pub srv_weight: u16,
    /// RA on this zone's answers (Mesos-DNS's `RecurseOn`); off unless set: an authority
    /// says nothing about recursion.
    pub recursion_available: bool,
    /// TC on an answer cut to fit (the default, RFC 1035); off, the cut answer goes without
    /// it (Mesos-DNS's `SetTruncateBit: false`, for clients that cannot retry over TCP).
    pub truncate_bit: bool,
}

impl ZoneInfo {
    /// A zone's settings with its names made lower-case and fully qualified; `ns` defaults to
    /// the SOA's mname.
    pub fn new(origin: &str, soa: Soa, ns: Vec<String>, ttl: u32, srv_weight: u16) -> Self {
        let ns = if ns.is_empty() {
            vec![fqdn(&soa.mname)]
        } else {
            ns.iter().map(|n| fqdn(n)).collect()
        };
        let soa = Soa {
            mname: fqdn(&soa.mname),
            rname: fqdn(&soa.rname),
            ..soa
        };
        Self {
            origin: fqdn(origin),
            soa,
            ns,
            ttl,
            srv_weight,
            recursion_available: false,
            truncate_bit: true,
        }
    }
}

/// The records of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRecords {
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    pub srv: Vec<SrvTarget>,
}

impl NameRecords {
    /// Whether the name has no record.
    pub fn is_empty(&self) -> bool {
        self.a.is_empty() && self.aaaa.is_empty() && self.srv.is_empty()
    }
}

/// How a name relates to the served zones.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The name has records (of some type) in `zone`; `records` may lack the asked type.
    Found {
        zone: &'a ZoneInfo,
        records: Cow<'a, NameRecords>,
        is_apex: bool,
    },
    /// The name exists without records: the apex itself, or an empty non-terminal.
    Empty { zone: &'a ZoneInfo, is_apex: bool },
    /// Inside `zone`, but nothing exists at or below the name.
    NxDomain { zone: &'a ZoneInfo },
    /// Not in any served zone.
    NotAuthoritative,
}

/// Every served zone, ready to answer from.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Longest origin first, so the most specific zone wins.
    zones: Vec<ZoneInfo>,
    /// Each zone's origin in wire form, as `zones`; `None` if it cannot be encoded. Kept once
    /// here rather than at the end of every name of the zone (see [`Key`]).
    origins: Vec<Option<Box<[u8]>>>,
    /// By [`Key`]: a lower-case wire-format name without its zone's origin.
    names: ShardedMap<Entry>,
    /// Each zone's shared negative answers, as `zones`; `None` if they could not be encoded.
    negative: Vec<Option<PreparedZone>>,
    /// Names with records.
    with_records: usize,
    /// Counts the updates this snapshot descends from (see [`Update::touch`]).
    stamp: u32,
    /// Names at or below these (lower-case, fully qualified, with their wire forms) belong to
    /// another server even inside a served zone: a linked cluster's suffix such as
    /// `east.mesos.`. They are not answered here, but forwarded.
    delegated: Vec<(String, Box<[u8]>)>,
}

impl Snapshot {
    /// Hands the names at or below `origins` to another server (see [`Snapshot`]'s
    /// `delegated`); origins that are no DNS names are left out.
    pub fn set_delegated(&mut self, origins: &[String]) {
        self.delegated = origins
            .iter()
            .filter_map(|o| {
                let name = fqdn(&o.to_ascii_lowercase());
                let wire = wire_name(&name)?;
                Some((name, wire))
            })
            .collect();
    }

    /// The delegated origins (see [`Self::set_delegated`]).
    pub fn delegated(&self) -> impl Iterator<Item = &str> {
        self.delegated.iter().map(|(name, _)| name.as_str())
    }

    /// Whether the lower-case wire-format name `wire` is at or below a delegated origin.
    pub(crate) fn is_delegated_wire(&self, wire: &[u8]) -> bool {
        self.delegated
            .iter()
            .any(|(_, origin)| is_label_suffix(wire, origin))
    }

    /// Builds the snapshot. Records whose name lies outside their zone are dropped; a name in
    /// two zones belongs to the more specific one.
    pub fn build(zones: Vec<ZoneData>) -> Self {
        let mut zones: Vec<(ZoneInfo, RecordSet)> =
            zones.into_iter().map(ZoneData::split).collect();
        zones.sort_by_key(|(z, _)| std::cmp::Reverse(z.origin.len()));
        let (infos, sets): (Vec<ZoneInfo>, Vec<RecordSet>) = zones.into_iter().unzip();
        let mut changes: std::collections::HashMap<String, NameRecords> =
            std::collections::HashMap::new();
        for (info, records) in infos.iter().zip(&sets) {
            let index = zone_index(&infos, &info.origin);
            let mut put = |name: &String, f: &mut dyn FnMut(&mut NameRecords)| {
                let name = name.to_ascii_lowercase();
                if zone_index(&infos, &name) == index {
                    f(changes.entry(name).or_default());
                }
            };
            for (name, ips) in &records.a {
                put(name, &mut |r| r.a.extend(ips));
            }
            for (name, ips) in &records.aaaa {
                put(name, &mut |r| r.aaaa.extend(ips));
            }
            for (name, targets) in &records.srv {
                put(name, &mut |r| r.srv.extend(targets.iter().cloned()));
            }
        }
        // From no zones at all, so `apply` starts over from the apexes.
        Snapshot::default().apply(infos, changes)
    }

    /// Zones without records.
    fn empty(mut zones: Vec<ZoneInfo>, capacity: usize) -> Self {
        zones.sort_by_key(|z| std::cmp::Reverse(z.origin.len()));
        Snapshot {
            negative: zones.iter().map(prepare_zone).collect(),
            origins: zones.iter().map(|z| wire_name(&z.origin)).collect(),
            zones,
            names: ShardedMap::with_capacity_grouped(capacity, Key::group),
            with_records: 0,
            stamp: 0,
            delegated: Vec::new(),
        }
    }

    /// This snapshot with the zones' settings replaced by `zones` and each changed name's
    /// records replaced by the given ones (empty records remove a name). Costs what changed:
    /// only when the zones' origins differ is every name placed again.
    pub fn apply(
        &self,
        zones: Vec<ZoneInfo>,
        changes: impl IntoIterator<Item = (String, NameRecords)>,
    ) -> Snapshot {
        let mut update = self.update(zones);
        for (name, records) in changes {
            update.set(&fqdn(&name), records);
        }
        update.finish()
    }

    /// Starts the next snapshot from this one with the zones' settings replaced by `zones`;
    /// records are then set or counted into it (see [`Update`]).
    pub fn update(&self, zones: Vec<ZoneInfo>) -> Update {
        let mut next = Snapshot::empty(zones, 0);
        // Zero is what new entries carry: no update's stamp.
        next.stamp = self.stamp.wrapping_add(1).max(1);
        next.delegated = self.delegated.clone();
        // Names belong to zones by origin; TTLs, weights, SOA and NS are read at query time.
        let alike = next.zones.len() == self.zones.len()
            && next
                .zones
                .iter()
                .zip(&self.zones)
                .all(|(a, b)| a.origin == b.origin);
        let mut update = Update {
            next,
            dirty: NameList::default(),
            touched: NameList::default(),
            before: Vec::new(),
            shared_srv: SharedSrv::default(),
        };
        if alike {
            update.next.names = self.names.clone();
            update.next.with_records = self.with_records;
            return update;
        }
        // Start over from the apexes, with every current name set again, its counts kept.
        let next = &mut update.next;
        next.names = ShardedMap::with_capacity_grouped(self.names.len(), Key::group);
        for zone in 0..next.zones.len() {
            let Some(key) = next.origins[zone]
                .as_ref()
                .and_then(|o| Key::of(o, zone, o))
            else {
                continue;
            };
            let key = key.as_bytes();
            if next.names.get(key).is_none() {
                next.names.insert(key, Entry::apex());
                update.dirty.push(key);
            }
        }
        for (key, entry) in self.names.iter() {
            if entry.records.is_empty() {
                continue;
            }
            // Set with its counts (the name as this snapshot's zones spell it).
            let Some(name) = self.full_name(key) else {
                continue;
            };
            if let Some(e) = update.touch(&presentation(&name), true) {
                e.records = entry.records.clone();
            }
        }
        update
    }

    /// Counts a name with records in (or out of) each of its ancestors below the apex.
    fn count_below(&mut self, key: &[u8], add: bool, dirty: &mut NameList) {
        // A key is the name's labels below the origin, then its zone: each parent is a suffix,
        // and the apex (the zone byte alone) is not counted into.
        let mut pos = 0;
        while let Some(&len) = key.get(pos) {
            pos += 1 + usize::from(len);
            let parent = &key[pos.min(key.len())..];
            if parent.len() <= 1 {
                break;
            }
            let entry = self.entry_mut(parent);
            let before = entry.descendants;
            entry.descendants = if add {
                before + 1
            } else {
                before.saturating_sub(1)
            };
            // Only existence matters to the answers.
            if (before == 0) != (entry.descendants == 0) {
                dirty.push(parent);
            }
        }
    }

    /// The entry of `key`, made if missing, ready to change.
    fn entry_mut(&mut self, key: &[u8]) -> &mut Entry {
        self.names.get_or_insert_with(key, Entry::default)
    }

    /// Index of the most specific served zone containing the wire-format name `wire`.
    fn zone_of_wire(&self, wire: &[u8]) -> Option<usize> {
        self.origins
            .iter()
            .position(|origin| origin.as_ref().is_some_and(|o| is_label_suffix(wire, o)))
    }

    /// The key of the lower-case wire-format name `wire`, and its zone.
    fn key_of(&self, wire: &[u8]) -> Option<(usize, Key)> {
        let zone = self.zone_of_wire(wire)?;
        let origin = self.origins[zone].as_ref()?;
        Some((zone, Key::of(wire, zone, origin)?))
    }

    /// The wire-format name of a key (its labels, then its zone's origin).
    fn full_name(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (&zone, labels) = key.split_last()?;
        let origin = self.origins.get(usize::from(zone))?.as_ref()?;
        Some([labels, origin].concat())
    }

    /// Drops the dirty names that no longer exist.
    fn settle(&mut self, dirty: NameList) {
        let mut keys: Vec<&[u8]> = dirty.iter().collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            if self.names.get(key).is_some_and(|e| !e.exists()) {
                self.names.remove(key);
            }
        }
    }

    /// Every name with records, with them (for rebuilding and for listing the zones).
    pub fn names_with_records(&self) -> impl Iterator<Item = (String, Cow<'_, NameRecords>)> {
        self.names
            .iter()
            .filter(|(_, e)| !e.records.is_empty())
            .filter_map(|(key, e)| {
                Some((
                    presentation(&self.full_name(key)?),
                    e.records.name_records(),
                ))
            })
    }

    /// Every name that exists, with its zone index: names with records, empty non-terminals,
    /// and the apexes.
    pub fn existing_names(&self) -> impl Iterator<Item = (String, usize)> {
        self.names
            .iter()
            .filter(|(_, e)| e.exists())
            .filter_map(|(key, _)| {
                let zone = usize::from(*key.last()?);
                Some((presentation(&self.full_name(key)?), zone))
            })
    }

    /// The entry of a lower-case wire-format name and its zone's index (for the fast path).
    pub(crate) fn entry(&self, wire: &[u8]) -> Option<(usize, &Entry)> {
        let (zone, key) = self.key_of(wire)?;
        Some((zone, self.names.get(key.as_bytes())?))
    }

    /// The shared negative answers of every zone, most specific first.
    pub(crate) fn negative(&self) -> &[Option<PreparedZone>] {
        &self.negative
    }

    /// Index of the most specific served zone containing `name` (lower-case, fully qualified).
    fn zone_of(&self, name: &str) -> Option<usize> {
        zone_index(&self.zones, name)
    }

    /// What the snapshot holds for `name` (lower-case, fully qualified).
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        if self
            .delegated
            .iter()
            .any(|(origin, _)| is_in_zone(name, origin))
        {
            return Lookup::NotAuthoritative;
        }
        let Some(index) = self.zone_of(name) else {
            return Lookup::NotAuthoritative;
        };
        let zone = &self.zones[index];
        // The zone is known: the key is made without searching for it again.
        let origin = self.origins[index].as_deref();
        let key = wire_name(name).and_then(|wire| Key::of(&wire, index, origin?));
        let Some(key) = key else {
            return Lookup::NxDomain { zone };
        };
        let key = key.as_bytes();
        let entry = self.names.get(key).filter(|e| e.exists());
        let is_apex = key.len() == 1;
        match entry {
            Some(e) if !e.records.is_empty() => Lookup::Found {
                zone,
                records: e.records.name_records(),
                is_apex,
            },
            Some(_) => Lookup::Empty { zone, is_apex },
            None => Lookup::NxDomain { zone },
        }
    }

    /// The records of `name` if it has any.
    pub fn records(&self, name: &str) -> Option<Cow<'_, NameRecords>> {
        let (_, key) = self.key_of(&wire_name(name)?)?;
        let entry = self.names.get(key.as_bytes())?;
        (!entry.records.is_empty()).then(|| entry.records.name_records())
    }

    /// The served zones, most specific first.
    pub fn zones(&self) -> &[ZoneInfo] {
        &self.zones
    }

    /// Number of names with records.
    pub fn len(&self) -> usize {
        self.with_records
    }

    /// Whether no name has records.
    pub fn is_empty(&self) -> bool {
        self.with_records == 0
    }
}

/// The next snapshot while it is being made: names set whole ([`Update::set`]) or records
/// counted in and out ([`Update::count`]); [`Update::finish`] prepares what changed.
///
/// Counting is for records that several contributors may give (two tasks of an app on one
/// agent give its `.slave.` name the same address): a record stays while one contributor
/// still gives it. A name keeps the count only of records given more than once, so a name of
/// one task costs no count at all.
pub struct Update {
    next: Snapshot,
    /// Names whose existence may have changed.
    dirty: NameList,
    /// Names whose records changed, and for each what finishing needs of its state before.
    touched: NameList,
    before: Vec<Before>,
    shared_srv: SharedSrv,
}

/// The entry of `name` in `next`, made if missing when `create`, noted in `touched` and
/// `before` the first time the update changes it; `None` outside the zones, for a name that
/// cannot be encoded, or for a missing one not to be made. A function of the update's parts, not
/// a method, so that a caller can hold the entry and another part of the update at once.
fn touch_in<'a>(
    next: &'a mut Snapshot,
    touched: &mut NameList,
    before: &mut Vec<Before>,
    name: &str,
    create: bool,
) -> Option<&'a mut Entry> {
    let (_, key) = next.key_of(&wire_name(name)?)?;
    let key = key.as_bytes();
    if !create && next.names.get(key).is_none() {
        return None;
    }
    let stamp = next.stamp;
    let entry = next.entry_mut(key);
    if entry.stamp != stamp {
        entry.stamp = stamp;
        touched.push(key);
        before.push(Before {
            had_records: !entry.records.is_empty(),
        });
    }
    Some(entry)
}

/// A touched name as it was before the update first changed its records.
struct Before {
    had_records: bool,
}

/// Names in wire form one after the other in one buffer: an update's lists of names hold every
/// name on a first load (a million at 100,000 tasks), and cost two allocations, not one per
/// name that the allocator would keep pages of after the load.
#[derive(Default)]
struct NameList {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl NameList {
    fn push(&mut self, name: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.ends.push(self.bytes.len());
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.bytes[start..end])
    }
}

impl Update {
    /// Sets the records of `name` (lower-case, fully qualified), each given once; empty
    /// records remove them.
    pub fn set(&mut self, name: &str, records: NameRecords) {
        let create = !records.is_empty();
        if let Some(entry) = self.touch(name, create) {
            entry.records = Records::set(records);
        }
    }

    /// Counts one contributor of `record` in (`add`) or out. Its name must be lower-case and
    /// fully qualified, as [`crate::records::RecordSource`]s make them.
    pub fn count(&mut self, record: &Record, add: bool) {
        let Update {
            next,
            touched,
            before,
            shared_srv,
            ..
        } = self;
        if let Some(entry) = touch_in(next, touched, before, &record.name, add) {
            entry.records.bump(&record.data, add, shared_srv);
        }
    }

    /// [`touch_in`] this update's snapshot.
    fn touch(&mut self, name: &str, create: bool) -> Option<&mut Entry> {
        touch_in(
            &mut self.next,
            &mut self.touched,
            &mut self.before,
            name,
            create,
        )
    }

    /// The new snapshot: existence follows the touched names.
    pub fn finish(self) -> Snapshot {
        self.settle(|_, _| {})
    }

    /// The new snapshot, and every name whose records the update touched with its records
    /// now (empty when it has none left), e.g. to pass the changes on as DNS UPDATEs.
    pub fn finish_listing(self) -> (Snapshot, Vec<(String, NameRecords)>) {
        let mut changes = Vec::new();
        let snapshot = self.settle(|name, records| {
            changes.push((presentation(name), records.cloned().unwrap_or_default()));
        });
        (snapshot, changes)
    }

    /// Finishes, telling `each` the touched names (in wire form) with their records now.
    fn settle(mut self, mut each: impl FnMut(&[u8], Option<&NameRecords>)) -> Snapshot {
        let next = &mut self.next;
        let dirty = &mut self.dirty;
        let touched = std::mem::take(&mut self.touched);
        for (key, before) in touched.iter().zip(std::mem::take(&mut self.before)) {
            let name = next.full_name(key).unwrap_or_default();
            let Some(entry) = next.names.get(key) else {
                each(&name, None);
                continue;
            };
            each(&name, Some(&entry.records.name_records()));
            let has_records = !entry.records.is_empty();
            if !has_records {
                // A name with records exists; one without may not any more.
                dirty.push(key);
            }
            if before.had_records != has_records {
                next.with_records = if has_records {
                    next.with_records + 1
                } else {
                    next.with_records - 1
                };
                next.count_below(key, has_records, dirty);
            }
        }
        next.settle(std::mem::take(dirty));
        // What this update copied or made is kept as long as the snapshot: without slack, and
        // packed apart from the update's leftovers.
        next.names.pack();
        self.next
    }
}

/// A name as the snapshot's map keys it: its labels below its zone's origin in wire form,
/// then the zone's index. Every name of a zone ends in the same origin (`.mesos.`,
/// `.thisdcos.directory.`: 7 to 20 bytes), kept once per zone instead; a key's parents are
/// its suffixes, and an apex is the zone's index alone. Made on the stack for a lookup.
struct Key {
    bytes: [u8; 256],
    len: usize,
}

impl Key {
    /// The key of `wire`, a name of zone `zone` whose origin is `origin` (a label suffix of
    /// `wire`); `None` past 255 zones.
    fn of(wire: &[u8], zone: usize, origin: &[u8]) -> Option<Key> {
        let labels = wire.get(..wire.len().checked_sub(origin.len())?)?;
        let mut key = Key {
            bytes: [0; 256],
            len: labels.len() + 1,
        };
        // A wire name is at most 255 bytes, so its labels and the zone byte fit.
        key.bytes.get_mut(..labels.len())?.copy_from_slice(labels);
        key.bytes[labels.len()] = u8::try_from(zone).ok()?;
        Some(key)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The part of a key that picks its shard: the name's service label, so that the names a
    /// task gives (`web.marathon.mesos`, `web.marathon.slave.mesos`, `_web._tcp.marathon.mesos`,
    /// `_http._web._tcp.marathon.mesos`, `web.marathon.autoip.dcos.thisdcos.directory`, ...)
    /// share a shard and a change of the task copies one. That is the label before `_tcp` or
    /// `_udp` if there is one, else the first, without a leading `_`; an apex is its own group.
    fn group(key: &[u8]) -> &[u8] {
        let labels = &key[..key.len().saturating_sub(1)];
        let (mut pos, mut first, mut previous) = (0, None, None);
        while let Some(&len) = labels.get(pos) {
            let Some(label) = labels.get(pos + 1..pos + 1 + usize::from(len)) else {
                break;
            };
            if let (b"_tcp" | b"_udp", Some(service)) = (label, previous) {
                first = Some(service);
                break;
            }
            first.get_or_insert(label);
            previous = Some(label);
            pos += 1 + usize::from(len);
        }
        let group = first.unwrap_or(key);
        group.strip_prefix(b"_").unwrap_or(group)
    }
}

/// The presentation form (lower-case, fully qualified) of a wire-format name.
fn presentation(wire: &[u8]) -> String {
    let mut name = String::with_capacity(wire.len());
    let mut pos = 0;
    while let Some(&len) = wire.get(pos) {
        if len == 0 {
            break;
        }
        let label = wire
            .get(pos + 1..pos + 1 + usize::from(len))
            .unwrap_or_default();
        name.extend(label.iter().map(|&b| char::from(b)));
        name.push('.');
        pos += 1 + usize::from(len);
    }
    if name.is_empty() {
        name.push('.');
    }
    name
}

/// Index of the first of `zones` (most specific first) that contains `name`.
fn zone_index(zones: &[ZoneInfo], name: &str) -> Option<usize> {
    zones.iter().position(|z| is_in_zone(name, &z.origin))
}

/// Whether `name` is `origin` or below it (both lower-case, fully qualified).
pub fn is_in_zone(name: &str, origin: &str) -> bool {
    origin == "."
        || name == origin
        || name
            .strip_suffix(origin)
            .is_some_and(|head| head.ends_with('.'))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_rng::Rng;

    pub(crate) fn soa() -> Soa {
        Soa {
            mname: "ns1.mesos".into(),
            rname: "root.ns1.mesos".into(),
            serial: 1,
            refresh: 60,
            retry: 600,
            expire: 86400,
            minimum: 60,
        }
    }

    #[test]
    fn a_tasks_names_are_grouped_by_its_service_label() {
        let snapshot = snapshot();
        let group = |name: &str| {
            let (_, key) = snapshot.key_of(&wire_name(name).unwrap()).unwrap();
            Key::group(key.as_bytes()).to_vec()
        };
        for name in [
            "web.marathon.mesos.",
            "web.marathon.slave.mesos.",
            "_web._tcp.marathon.mesos.",
            "_web._udp.marathon.slave.mesos.",
            "_http._web._tcp.marathon.mesos.",
            "web.marathon.autoip.dcos.thisdcos.directory.",
            "web.marathon.l4lb.thisdcos.directory.",
        ] {
            assert_eq!(group(name), b"web", "{name}");
        }
        assert_eq!(group("web-abcde-s1.marathon.slave.mesos."), b"web-abcde-s1");
        assert_eq!(group("_tcp.marathon.mesos."), b"tcp");
        assert_eq!(
            group("mesos.").len(),
            1,
            "an apex (its zone byte) is its own group"
        );
    }

    fn snapshot() -> Snapshot {
        let mut mesos = RecordSet::default();
        mesos.add_ip("web.marathon.mesos.", "10.0.0.1".parse().unwrap());
        mesos.add_ip("web.marathon.slave.mesos.", "192.168.0.1".parse().unwrap());
        mesos.add_srv(
            "_web._tcp.marathon.mesos.",
            "web-abcde-s1.marathon.slave.mesos.",
            31000,
        );
        // Outside the zone: dropped.
        mesos.add_ip("stray.example.", "10.9.9.9".parse().unwrap());
        let mut l4lb = RecordSet::default();
        l4lb.add_ip(
            "web.marathon.l4lb.thisdcos.directory.",
            "11.0.0.1".parse().unwrap(),
        );
        let mut dcos = RecordSet::default();
        dcos.add_ip("ready.spartan.", "127.0.0.1".parse().unwrap());
        let zone = |origin: &str, records| ZoneData {
            origin: origin.into(),
            soa: soa(),
            ns: vec![],
            ttl: 60,
            srv_weight: 1,
            records,
        };
        Snapshot::build(vec![
            zone("mesos", mesos),
            zone("thisdcos.directory.", RecordSet::default()),
            zone("l4lb.thisdcos.directory", l4lb),
            zone("spartan", dcos),
        ])
    }

    #[test]
    fn delegated_names_go_to_the_forwarder_on_both_answer_paths() {
        use crate::answer::{Outcome, Transport, answer, build_query};
        use hickory_proto::rr::RecordType;
        let mut s = snapshot();
        s.set_delegated(&["East.Mesos".into()]);
        assert_eq!(s.delegated().collect::<Vec<_>>(), ["east.mesos."]);
        for name in ["web.marathon.east.mesos.", "east.mesos."] {
            assert!(matches!(s.lookup(name), Lookup::NotAuthoritative), "{name}");
        }
        assert!(matches!(
            s.lookup("web.marathon.mesos."),
            Lookup::Found { .. }
        ));
        assert!(matches!(s.lookup("beast.mesos."), Lookup::NxDomain { .. }));
        // Kept by the next snapshot.
        let next = s.apply(s.zones().to_vec(), []);
        for (name, ours) in [
            ("web.marathon.east.mesos.", false),
            ("nothing.east.mesos.", false),
            ("web.marathon.mesos.", true),
            ("nothing.mesos.", true),
        ] {
            let query = build_query(1, name, RecordType::A, None);
            let outcome = answer(&next, &query, Transport::Udp);
            assert_eq!(
                matches!(outcome, Outcome::Reply(_)),
                ours,
                "{name}: {outcome:?}"
            );
        }
    }

    #[test]
    fn lookups_distinguish_records_empty_names_and_nxdomain() {
        let s = snapshot();
        // (name, expected kind, zone origin)
        let cases = [
            ("web.marathon.mesos.", "found", "mesos."),
            ("_web._tcp.marathon.mesos.", "found", "mesos."),
            ("mesos.", "apex", "mesos."),
            // Empty non-terminals.
            ("marathon.mesos.", "empty", "mesos."),
            ("slave.mesos.", "empty", "mesos."),
            ("_tcp.marathon.mesos.", "empty", "mesos."),
            ("nope.marathon.mesos.", "nxdomain", "mesos."),
            ("x.web.marathon.mesos.", "nxdomain", "mesos."),
            ("stray.example.", "not ours", ""),
            ("mesos.example.", "not ours", ""),
            ("notmesos.", "not ours", ""),
            // The more specific zone wins.
            (
                "web.marathon.l4lb.thisdcos.directory.",
                "found",
                "l4lb.thisdcos.directory.",
            ),
            (
                "other.l4lb.thisdcos.directory.",
                "nxdomain",
                "l4lb.thisdcos.directory.",
            ),
            ("thisdcos.directory.", "apex", "thisdcos.directory."),
            ("ready.spartan.", "found", "spartan."),
        ];
        for (name, kind, origin) in cases {
            let (got, zone) = match s.lookup(name) {
                Lookup::Found { zone, .. } => ("found", zone.origin.as_str()),
                Lookup::Empty {
                    zone,
                    is_apex: true,
                } => ("apex", zone.origin.as_str()),
                Lookup::Empty {
                    zone,
                    is_apex: false,
                } => ("empty", zone.origin.as_str()),
                Lookup::NxDomain { zone } => ("nxdomain", zone.origin.as_str()),
                Lookup::NotAuthoritative => ("not ours", ""),
            };
            assert_eq!((got, zone), (kind, origin), "{name}");
        }
        assert!(s.records("stray.example.").is_none());
    }

    #[test]
    fn names_and_ns_are_normalised() {
        let s = snapshot();
        let mesos = s.zones().iter().find(|z| z.origin == "mesos.").unwrap();
        assert_eq!(mesos.soa.mname, "ns1.mesos.");
        assert_eq!(mesos.ns, vec!["ns1.mesos."]);
        assert_eq!(s.zones()[0].origin, "l4lb.thisdcos.directory.");
    }

    /// Names of a few nested levels in two zones, and one outside both.
    fn universe() -> Vec<String> {
        let mut names = Vec::new();
        for fw in ["fw1", "fw2"] {
            names.push(format!("{fw}.mesos."));
            for task in ["a", "b", "c"] {
                names.push(format!("{task}.{fw}.mesos."));
                names.push(format!("{task}.{fw}.slave.mesos."));
                names.push(format!("_{task}._tcp.{fw}.mesos."));
                names.push(format!("x.{task}.{fw}.mesos."));
            }
        }
        names.extend(["mesos.".into(), "vip.l4lb.thisdcos.directory.".into()]);
        names.push("stray.example.".into());
        names
    }

    fn random_records(rng: &mut Rng, names: &[String]) -> NameRecords {
        let mut records = NameRecords::default();
        if rng.below(3) == 0 {
            return records;
        }
        for _ in 0..rng.below(3) {
            records.a.push(Ipv4Addr::new(10, 0, 0, rng.below(4) as u8));
        }
        if rng.below(4) == 0 {
            records
                .aaaa
                .push(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, rng.below(3) as u16));
        }
        for _ in 0..rng.below(3) {
            records.srv.push(SrvTarget {
                target: names[rng.below(names.len())].as_str().into(),
                port: 31000 + rng.below(2) as u16,
            });
        }
        records.a.sort();
        records.a.dedup();
        records.aaaa.sort();
        records.aaaa.dedup();
        records.srv.sort();
        records.srv.dedup();
        records
    }

    /// The zones an agent serves.
    pub(crate) fn infos(ttl: u32, serial: u32) -> Vec<ZoneInfo> {
        let origins = [
            "mesos",
            "thisdcos.directory",
            "l4lb.thisdcos.directory",
            "spartan",
        ];
        origins
            .iter()
            .map(|origin| ZoneInfo::new(origin, Soa { serial, ..soa() }, vec![], ttl, 1))
            .collect()
    }

    fn build_from(
        truth: &std::collections::BTreeMap<String, NameRecords>,
        ttl: u32,
        serial: u32,
    ) -> Snapshot {
        let zones = infos(ttl, serial)
            .into_iter()
            .map(|info| {
                let mut records = RecordSet::default();
                for (name, r) in truth.iter().filter(|(n, _)| is_in_zone(n, &info.origin)) {
                    for &ip in &r.a {
                        records.add_ip(name, ip.into());
                    }
                    for &ip in &r.aaaa {
                        records.add_ip(name, ip.into());
                    }
                    for t in &r.srv {
                        records.add_srv(name, &t.target, t.port);
                    }
                }
                ZoneData {
                    origin: info.origin,
                    soa: info.soa,
                    ns: vec![],
                    ttl,
                    srv_weight: 1,
                    records,
                }
            })
            .collect();
        Snapshot::build(zones)
    }

    /// A name's key, zone, apexness, records and existence.
    type Contents = (Vec<u8>, usize, bool, NameRecords);

    /// Everything that decides answers, in a comparable form; checks on the way that every
    /// name kept exists.
    fn contents(s: &Snapshot) -> Vec<Contents> {
        let mut all: Vec<_> = s
            .names
            .iter()
            .map(|(key, e)| {
                assert!(e.exists(), "{key:?} is kept for nothing");
                let name = s.full_name(key).expect("a kept name is in a zone");
                // The zone and apexness a key says must be what its name says.
                let zone = s.zone_of_wire(&name).expect("a kept name is in a zone");
                assert_eq!(key.last().map(|&z| usize::from(z)), Some(zone));
                let is_apex = s.origins[zone].as_deref() == Some(&name[..]);
                assert_eq!(key.len() == 1, is_apex, "{name:?}");
                (name, zone, is_apex, e.records.name_records().into_owned())
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    #[test]
    fn applying_changes_gives_what_a_full_build_gives() {
        let names = universe();
        for seed in 1..=40u64 {
            let mut rng = Rng::new(seed);
            let mut truth = std::collections::BTreeMap::new();
            let (mut ttl, mut serial) = (60, 1);
            let mut incremental = build_from(&truth, ttl, serial);
            for step in 0..30 {
                let mut changes = Vec::new();
                for _ in 0..1 + rng.below(4) {
                    let name = names[rng.below(names.len())].clone();
                    let records = random_records(&mut rng, &names);
                    changes.push((name, records));
                }
                serial += 1;
                // Now and then a TTL change: the negative answers follow it.
                if rng.below(10) == 0 {
                    ttl += 1;
                }
                for (name, records) in &changes {
                    // Out-of-zone names are dropped by both.
                    if records.is_empty() {
                        truth.remove(name);
                    } else {
                        truth.insert(name.clone(), records.clone());
                    }
                }
                incremental = incremental.apply(infos(ttl, serial), changes);
                let full = build_from(&truth, ttl, serial);
                assert_eq!(
                    contents(&incremental),
                    contents(&full),
                    "seed {seed}, step {step}"
                );
                assert_eq!(
                    incremental.negative, full.negative,
                    "seed {seed}, step {step}"
                );
                assert_eq!(incremental.len(), full.len(), "seed {seed}, step {step}");
            }
        }
    }

    #[test]
    fn an_update_leaves_the_old_snapshot_as_it_was() {
        let old = snapshot();
        let mut records = old.records("web.marathon.mesos.").unwrap().into_owned();
        records.a.push("10.0.0.2".parse().unwrap());
        let zones = old.zones().to_vec();
        let new = old.apply(
            zones,
            [
                ("web.marathon.mesos.".to_owned(), records),
                (
                    "web.marathon.slave.mesos.".to_owned(),
                    NameRecords::default(),
                ),
            ],
        );
        assert_eq!(old.records("web.marathon.mesos.").unwrap().a.len(), 1);
        assert_eq!(new.records("web.marathon.mesos.").unwrap().a.len(), 2);
        assert!(old.records("web.marathon.slave.mesos.").is_some());
        // Its last name gone, `slave.mesos.` is no longer an empty non-terminal.
        assert!(matches!(
            new.lookup("slave.mesos."),
            Lookup::NxDomain { .. }
        ));
        assert!(matches!(old.lookup("slave.mesos."), Lookup::Empty { .. }));
    }

    #[test]
    fn zone_membership() {
        assert!(is_in_zone("a.mesos.", "mesos."));
        assert!(is_in_zone("mesos.", "mesos."));
        assert!(!is_in_zone("amesos.", "mesos."));
        assert!(is_in_zone("anything.", "."));
    }
}
