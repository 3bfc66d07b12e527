//! Names of a linked cluster, served under a suffix of this cluster's domain: a query for
//! `web.marathon.east.mesos.` is asked of the cluster linked as `east` as
//! `web.marathon.mesos.`, and its answer comes back with every name under `mesos.` moved
//! under `east.mesos.` again (owners, SRV targets, CNAME/NS/PTR targets), so a client that
//! follows an SRV target or a CNAME asks this server, which forwards again.
//!
//! The snapshot leaves those names to the forwarder ([`crate::zone::Snapshot::set_delegated`]).

use std::net::SocketAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, Record};

/// One linked cluster as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedZone {
    /// Where its names are served here, fully qualified, lower-case: `east.mesos.`.
    pub suffix: String,
    /// What they are called there: `mesos.`.
    pub remote: String,
    /// Its DNS servers.
    pub servers: Vec<SocketAddr>,
}

impl LinkedZone {
    /// `name` (lower-case, fully qualified) as the linked cluster calls it, if it is one of
    /// its names here.
    pub fn to_remote(&self, name: &str) -> Option<String> {
        let head = name.strip_suffix(&self.suffix)?;
        if head.is_empty() {
            return Some(self.remote.clone());
        }
        let head = head.strip_suffix('.')?;
        Some(format!("{head}.{}", self.remote))
    }

    /// `name` as it is called here: under `suffix` if it is under `remote`, else unchanged.
    pub fn to_local(&self, name: &Name) -> Name {
        let text = name.to_lowercase().to_ascii();
        let text = if text.ends_with('.') {
            text
        } else {
            format!("{text}.")
        };
        let moved = if text == self.remote {
            Some(self.suffix.clone())
        } else {
            text.strip_suffix(&self.remote)
                .and_then(|head| head.strip_suffix('.'))
                .map(|head| format!("{head}.{}", self.suffix))
        };
        moved
            .and_then(|m| Name::from_ascii(&m).ok())
            .unwrap_or_else(|| name.clone())
    }

    /// The linked cluster's `response`, its names moved under `suffix`.
    pub fn localize(&self, mut response: Message) -> Message {
        for record in response
            .answers
            .iter_mut()
            .chain(response.authorities.iter_mut())
            .chain(response.additionals.iter_mut())
        {
            self.localize_record(record);
        }
        response
    }

    fn localize_record(&self, record: &mut Record) {
        record.name = self.to_local(&record.name);
        match &mut record.data {
            RData::SRV(srv) => srv.target = self.to_local(&srv.target),
            RData::CNAME(cname) => cname.0 = self.to_local(&cname.0),
            RData::NS(ns) => ns.0 = self.to_local(&ns.0),
            RData::PTR(ptr) => ptr.0 = self.to_local(&ptr.0),
            RData::SOA(soa) => {
                soa.mname = self.to_local(&soa.mname);
                soa.rname = self.to_local(&soa.rname);
            }
            _ => {}
        }
    }
}

/// The item of `items` whose linked zone (`zone_of_item`) holds `name` (lower-case, fully
/// qualified); the longest suffix wins.
pub fn zone_of<'a, T>(
    items: &'a [T],
    zone_of_item: impl Fn(&T) -> &LinkedZone,
    name: &str,
) -> Option<&'a T> {
    items
        .iter()
        .filter(|i| crate::zone::is_in_zone(name, &zone_of_item(i).suffix))
        .max_by_key(|i| zone_of_item(i).suffix.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME, SRV};

    fn east() -> LinkedZone {
        LinkedZone {
            suffix: "east.mesos.".into(),
            remote: "mesos.".into(),
            servers: vec![],
        }
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn names_move_between_the_suffix_and_the_remote_domain() {
        let z = east();
        assert_eq!(
            z.to_remote("web.marathon.east.mesos.").as_deref(),
            Some("web.marathon.mesos.")
        );
        assert_eq!(z.to_remote("east.mesos.").as_deref(), Some("mesos."));
        assert_eq!(z.to_remote("beast.mesos."), None);
        assert_eq!(z.to_remote("web.marathon.mesos."), None);
        assert_eq!(
            z.to_local(&name("Web.Marathon.Mesos.")),
            name("web.marathon.east.mesos.")
        );
        assert_eq!(z.to_local(&name("mesos.")), name("east.mesos."));
        // Names outside the remote domain stay as they are.
        assert_eq!(z.to_local(&name("example.com.")), name("example.com."));
        assert_eq!(z.to_local(&name("notmesos.")), name("notmesos."));
    }

    #[test]
    fn an_answer_is_moved_under_the_suffix_records_and_targets_alike() {
        let z = east();
        let mut response = Message::query();
        response.answers.push(Record::from_rdata(
            name("_web._tcp.marathon.mesos."),
            5,
            RData::SRV(SRV::new(0, 1, 8080, name("web-abcde-s1.marathon.mesos."))),
        ));
        response.answers.push(Record::from_rdata(
            name("alias.marathon.mesos."),
            5,
            RData::CNAME(CNAME(name("www.example.com."))),
        ));
        response.additionals.push(Record::from_rdata(
            name("web-abcde-s1.marathon.mesos."),
            5,
            RData::A(A::new(9, 0, 1, 2)),
        ));
        let local = z.localize(response);
        assert_eq!(
            local.answers[0].name,
            name("_web._tcp.marathon.east.mesos.")
        );
        match &local.answers[0].data {
            RData::SRV(srv) => {
                assert_eq!(srv.target, name("web-abcde-s1.marathon.east.mesos."));
                assert_eq!(srv.port, 8080);
            }
            other => panic!("{other:?}"),
        }
        match &local.answers[1].data {
            RData::CNAME(c) => assert_eq!(c.0, name("www.example.com.")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            local.additionals[0].name,
            name("web-abcde-s1.marathon.east.mesos.")
        );
    }

    #[test]
    fn the_longest_suffix_wins() {
        let zones = vec![
            east(),
            LinkedZone {
                suffix: "a.east.mesos.".into(),
                remote: "mesos.".into(),
                servers: vec![],
            },
        ];
        assert_eq!(
            zone_of(&zones, |z| z, "x.a.east.mesos.").map(|z| z.suffix.as_str()),
            Some("a.east.mesos.")
        );
        assert_eq!(
            zone_of(&zones, |z| z, "x.east.mesos.").map(|z| z.suffix.as_str()),
            Some("east.mesos.")
        );
        assert!(zone_of(&zones, |z| z, "x.mesos.").is_none());
    }
}
