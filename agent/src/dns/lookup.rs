//! What this node's DNS answers, for people: the dashboard's DNS page and `curl`.
//!
//! - `GET /v1/dns/lookup?name=<name>`: the records the replica holds for a name (A, AAAA and
//!   SRV together), and which zone answers it, or that it is forwarded upstream. No query is
//!   sent anywhere: this reads the snapshot the DNS server answers from.
//! - `GET /v1/dns/records?app=<app id>`: every record of an app's tasks, as Mesos-DNS's
//!   enumeration lists them under the Mesos domain, with the tasks' `thisdcos.directory`
//!   names beside them.
//!
//! Both are on the agent's authenticated API.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dcnet_dns::dcos::THISDCOS;
use dcnet_dns::records::Enumeration;
use dcnet_dns::server::SharedSnapshot;
use dcnet_dns::zone::{Lookup, Snapshot};
use serde::{Deserialize, Serialize};

use crate::config::DnsSettings;
use crate::facts::FactsWatch;

/// The longest name DNS carries, in its text form without the final dot.
const MAX_NAME_LEN: usize = 253;

/// One name's answer, as `/v1/dns/lookup` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameAnswer {
    /// The name asked for, lower-cased and fully qualified.
    pub name: String,
    /// The served zone the name is in; `None` when it is forwarded.
    pub zone: Option<String>,
    /// `records`, `no_records` (the name exists, with nothing of its own), `nxdomain` or
    /// `forwarded` (in no served zone: the upstream servers answer it).
    pub answer: &'static str,
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    pub srv: Vec<SrvRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrvRow {
    pub target: String,
    pub port: u16,
}

/// One record of an app, as `/v1/dns/records` lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordRow {
    pub name: String,
    /// `A`, `AAAA` or `SRV`.
    pub rtype: String,
    /// An address, or `target:port` for SRV.
    pub value: String,
}

/// Why a name cannot be looked up, in words for the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("the name is empty: give ?name=<name>, e.g. ?name=web.marathon.mesos")]
    Empty,
    #[error("the name {0:?} is longer than DNS allows (253 characters)")]
    TooLong(String),
    #[error(
        "the name {0:?} has an empty label or one longer than 63 characters, or characters DNS names do not have"
    )]
    BadLabel(String),
}

/// `name` lower-cased and fully qualified, if it is a DNS name.
pub fn normalize(name: &str) -> Result<String, NameError> {
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.to_owned()));
    }
    // Letters, digits, hyphens and the underscores of SRV owners; `*` for a wildcard label.
    let good_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_*".contains(&b))
    };
    if !trimmed.split('.').all(good_label) {
        return Err(NameError::BadLabel(name.to_owned()));
    }
    Ok(format!("{}.", trimmed.to_ascii_lowercase()))
}

/// What `snapshot` answers for `name` (already normalized).
pub fn answer(snapshot: &Snapshot, name: &str) -> NameAnswer {
    let mut out = NameAnswer {
        name: name.to_owned(),
        zone: None,
        answer: "forwarded",
        a: Vec::new(),
        aaaa: Vec::new(),
        srv: Vec::new(),
    };
    match snapshot.lookup(name) {
        Lookup::NotAuthoritative => {}
        Lookup::NxDomain { zone } => {
            out.zone = Some(zone.origin.clone());
            out.answer = "nxdomain";
        }
        Lookup::Empty { zone, .. } => {
            out.zone = Some(zone.origin.clone());
            out.answer = "no_records";
        }
        Lookup::Found { zone, records, .. } => {
            out.zone = Some(zone.origin.clone());
            out.answer = "records";
            out.a = records.a.clone();
            out.aaaa = records.aaaa.clone();
            out.srv = records
                .srv
                .iter()
                .map(|s| SrvRow {
                    target: s.target.to_string(),
                    port: s.port,
                })
                .collect();
        }
    }
    out
}

/// The records of the tasks `task_ids` of framework `framework`: their enumerated records,
/// and for each address owner `<label>.<framework>.<domain>.` the `agentip`, `containerip`
/// and `autoip` names of `thisdcos.directory` the snapshot has (made from the same labels).
pub fn app_records(
    enumeration: &Enumeration,
    snapshot: &Snapshot,
    framework: &str,
    task_ids: &BTreeSet<String>,
    domain: &str,
) -> Vec<RecordRow> {
    let mut rows = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let domain_tail = format!(".{}.{}.", framework, domain.trim_end_matches('.'));
    let tasks = enumeration
        .frameworks
        .iter()
        .filter(|f| f.name == framework)
        .flat_map(|f| &f.tasks)
        .filter(|t| task_ids.contains(&t.id));
    for task in tasks {
        for record in &task.records {
            if record.rtype != "SRV"
                && let Some(label) = record.name.strip_suffix(&domain_tail)
                && !label.contains('.')
            {
                labels.insert(label.to_owned());
            }
            rows.insert(RecordRow {
                name: record.name.clone(),
                rtype: record.rtype.to_owned(),
                value: record.host.clone(),
            });
        }
    }
    for label in &labels {
        for kind in ["agentip", "containerip", "autoip"] {
            let name = format!("{label}.{framework}.{kind}.dcos.{THISDCOS}.");
            let found = answer(snapshot, &name);
            let ips = found.a.iter().map(|ip| IpAddr::V4(*ip));
            let ips = ips.chain(found.aaaa.iter().map(|ip| IpAddr::V6(*ip)));
            for ip in ips {
                rows.insert(RecordRow {
                    name: name.clone(),
                    rtype: if ip.is_ipv4() { "A" } else { "AAAA" }.to_owned(),
                    value: ip.to_string(),
                });
            }
        }
    }
    rows.into_iter().collect()
}

/// What the routes read.
#[derive(Clone)]
struct LookupState {
    snapshot: SharedSnapshot,
    facts: FactsWatch,
    settings: DnsSettings,
    this_node: IpAddr,
}

#[derive(Deserialize)]
struct NameQuery {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct AppQuery {
    #[serde(default)]
    app: String,
}

/// The routes of the module's doc, over this node's replica.
pub fn router(
    settings: &DnsSettings,
    snapshot: SharedSnapshot,
    facts: FactsWatch,
    this_node: IpAddr,
) -> Router {
    Router::new()
        .route("/v1/dns/lookup", get(lookup))
        .route("/v1/dns/records", get(records))
        .with_state(LookupState {
            snapshot,
            facts,
            settings: settings.clone(),
            this_node,
        })
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

async fn lookup(State(s): State<LookupState>, Query(q): Query<NameQuery>) -> Response {
    match normalize(&q.name) {
        Ok(name) => axum::Json(answer(&s.snapshot.load(), &name)).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

async fn records(State(s): State<LookupState>, Query(q): Query<AppQuery>) -> Response {
    let app = format!("/{}", q.app.trim().trim_matches('/'));
    if app == "/" {
        return bad_request("give ?app=<app id>, e.g. ?app=/web".to_owned());
    }
    let facts = s.facts.peek();
    let task_ids: BTreeSet<String> = facts
        .up_nodes()
        .flat_map(|n| n.launched.values())
        .filter(|t| t.app_id == app)
        .map(|t| t.task_id.clone())
        .collect();
    // The enumeration lists every record of the cluster: made off the async workers.
    let (settings, this_node, snapshot) = (s.settings.clone(), s.this_node, s.snapshot.clone());
    let made = tokio::task::spawn_blocking(move || {
        let enumeration =
            super::replica::enumeration(&facts, &settings.domain, &settings.zone, this_node);
        app_records(
            &enumeration,
            &snapshot.load(),
            crate::facts::launched::FRAMEWORK,
            &task_ids,
            &settings.domain,
        )
    })
    .await;
    match made {
        Ok(rows) => axum::Json(serde_json::json!({ "app": app, "records": rows })).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": format!("listing records failed: {e}") })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_or_refused_with_a_reason() {
        assert_eq!(
            normalize(" Web.Marathon.MESOS ").as_deref(),
            Ok("web.marathon.mesos.")
        );
        assert_eq!(
            normalize("_web._tcp.marathon.mesos.").as_deref(),
            Ok("_web._tcp.marathon.mesos.")
        );
        assert_eq!(normalize(""), Err(NameError::Empty));
        assert_eq!(normalize("."), Err(NameError::Empty));
        assert!(matches!(normalize("a..b"), Err(NameError::BadLabel(_))));
        assert!(matches!(
            normalize("a b.mesos"),
            Err(NameError::BadLabel(_))
        ));
        assert!(matches!(
            normalize(&format!("{}.mesos", "a".repeat(64))),
            Err(NameError::BadLabel(_))
        ));
        let long = vec!["a".repeat(60); 5].join(".");
        assert!(matches!(normalize(&long), Err(NameError::TooLong(_))));
    }
}
