//! The authoritative data one server answers from: an immutable snapshot of every zone it
//! serves (`mesos.`, `thisdcos.directory.`, ...), rebuilt and swapped whole when records change
//! so readers never lock.
//!
//! [`Snapshot::lookup`] decides the kind of answer (RFC 1034 §4.3.2, RFC 8020): records; no data
//! for an existing name, including empty non-terminals (`slave.mesos.` exists because
//! `x.slave.mesos.` does); no such domain; or not ours (to be forwarded). Names are matched
//! lower-case; callers lower-case the question.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::prepared::{Prepared, prepare};
use crate::records::{RecordSet, SrvTarget, fqdn};

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

/// What a zone says about itself, for SOA/NS answers and negative answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneInfo {
    pub origin: String,
    pub soa: Soa,
    pub ns: Vec<String>,
    pub ttl: u32,
    pub srv_weight: u16,
}

/// The records of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRecords {
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    pub srv: Vec<SrvTarget>,
}

impl NameRecords {
    fn is_empty(&self) -> bool {
        self.a.is_empty() && self.aaaa.is_empty() && self.srv.is_empty()
    }
}

/// How a name relates to the served zones.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The name has records (of some type) in `zone`; `records` may lack the asked type.
    Found {
        zone: &'a ZoneInfo,
        records: &'a NameRecords,
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
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Longest origin first, so the most specific zone wins.
    zones: Vec<ZoneInfo>,
    names: HashMap<String, (usize, NameRecords)>,
    /// Names without records that exist because names below them do, with their zone.
    empty_non_terminals: HashMap<String, usize>,
    /// Wire-form answers of the common queries (see [`crate::prepared`]).
    prepared: Prepared,
}

impl Snapshot {
    /// Builds the snapshot. Records whose name lies outside their zone are dropped; a name in
    /// two zones belongs to the more specific one.
    pub fn build(zones: Vec<ZoneData>) -> Self {
        let mut infos: Vec<(ZoneInfo, RecordSet)> = zones
            .into_iter()
            .map(|z| {
                let origin = fqdn(&z.origin);
                let ns = if z.ns.is_empty() {
                    vec![fqdn(&z.soa.mname)]
                } else {
                    z.ns.iter().map(|n| fqdn(n)).collect()
                };
                let soa = Soa {
                    mname: fqdn(&z.soa.mname),
                    rname: fqdn(&z.soa.rname),
                    ..z.soa
                };
                (
                    ZoneInfo {
                        origin,
                        soa,
                        ns,
                        ttl: z.ttl,
                        srv_weight: z.srv_weight,
                    },
                    z.records,
                )
            })
            .collect();
        infos.sort_by_key(|(info, _)| std::cmp::Reverse(info.origin.len()));

        let mut snapshot = Snapshot::default();
        for (info, _) in &infos {
            snapshot.zones.push(info.clone());
        }
        for (index, (_, records)) in infos.iter().enumerate() {
            let mut put = |name: &String, f: &mut dyn FnMut(&mut NameRecords)| {
                let name = name.to_ascii_lowercase();
                if snapshot.zone_of(&name) != Some(index) {
                    return;
                }
                let entry = snapshot
                    .names
                    .entry(name)
                    .or_insert_with(|| (index, NameRecords::default()));
                f(&mut entry.1);
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
        snapshot.names.retain(|_, (_, r)| !r.is_empty());
        // Every ancestor of a name, up to its zone's apex, exists.
        let mut ents = HashMap::new();
        for (name, &(zone, _)) in &snapshot.names {
            let origin = &snapshot.zones[zone].origin;
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() <= origin.len() {
                    break;
                }
                if !snapshot.names.contains_key(parent) {
                    ents.insert(parent.to_owned(), zone);
                }
                rest = parent;
            }
        }
        snapshot.empty_non_terminals = ents;
        snapshot.prepared = prepare(&snapshot);
        snapshot
    }

    /// Every name that exists, with its zone index: names with records, empty non-terminals,
    /// and the apexes.
    pub fn existing_names(&self) -> impl Iterator<Item = (&str, usize)> {
        let apexes = self
            .zones
            .iter()
            .enumerate()
            .map(|(i, z)| (z.origin.as_str(), i));
        self.names
            .iter()
            .map(|(name, (zone, _))| (name.as_str(), *zone))
            .chain(
                self.empty_non_terminals
                    .iter()
                    .map(|(name, zone)| (name.as_str(), *zone)),
            )
            .chain(apexes)
    }

    /// The fast path's prepared answers.
    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// Index of the most specific served zone containing `name` (lower-case, fully qualified).
    fn zone_of(&self, name: &str) -> Option<usize> {
        self.zones.iter().position(|z| is_in_zone(name, &z.origin))
    }

    /// What the snapshot holds for `name` (lower-case, fully qualified).
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        let Some(index) = self.zone_of(name) else {
            return Lookup::NotAuthoritative;
        };
        let zone = &self.zones[index];
        let is_apex = name == zone.origin;
        if let Some((_, records)) = self.names.get(name) {
            return Lookup::Found {
                zone,
                records,
                is_apex,
            };
        }
        if is_apex || self.empty_non_terminals.contains_key(name) {
            return Lookup::Empty { zone, is_apex };
        }
        Lookup::NxDomain { zone }
    }

    /// The records of `name` if it has any (for SRV targets' addresses).
    pub fn records(&self, name: &str) -> Option<&NameRecords> {
        self.names.get(name).map(|(_, r)| r)
    }

    /// The served zones, most specific first.
    pub fn zones(&self) -> &[ZoneInfo] {
        &self.zones
    }

    /// Number of names with records.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name has records.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
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
mod tests {
    use super::*;

    fn soa() -> Soa {
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

    #[test]
    fn zone_membership() {
        assert!(is_in_zone("a.mesos.", "mesos."));
        assert!(is_in_zone("mesos.", "mesos."));
        assert!(!is_in_zone("amesos.", "mesos."));
        assert!(is_in_zone("anything.", "."));
    }
}
