//! Network policies as operators write them (JSON), with the semantics Kubernetes'
//! NetworkPolicy made familiar:
//!
//! ```json
//! {"id": "web-ingress",
//!  "selector": {"apps": ["/web"], "labels": {"tier": "front"}},
//!  "ingress": [{"from": [{"apps": ["/client"]}, {"cidr": "10.0.0.0/8"}],
//!               "ports": [{"protocol": "tcp", "port": 80}]}],
//!  "egress": [{"to": [{"vip": "/db:5432"}]}]}
//! ```
//!
//! - `selector` picks apps: by id prefix (`/prod` selects `/prod/web`, never `/production`)
//!   and, if given, labels that must all match. An empty selector selects every app.
//! - A policy with `ingress` isolates its apps' ingress, one with `egress` their egress (as
//!   Kubernetes' `policyTypes` default): once isolated in a direction, a task takes or sends
//!   only what some policy selecting it allows. `"ingress": []` allows nothing in.
//! - A rule allows its peers (`from`/`to`: apps by selector, CIDRs, or a VIP's backends) on its
//!   ports; no `from`/`to` means any peer, no `ports` any port. A port is the destination port:
//!   the selected task's own for ingress, the peer's for egress (a VIP's backends' port).
//! - Apps selected by no policy are open, as without policies.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// The longest policy id.
const MAX_ID_LEN: usize = 100;

/// One policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub id: String,
    #[serde(default)]
    pub selector: Selector,
    /// `None`: ingress is not isolated by this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<Rule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<Rule>>,
}

/// Which apps: id prefixes (any of them) and labels (all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    /// Whether the app `id` with `labels` is selected.
    pub fn matches(&self, id: &str, labels: &BTreeMap<String, String>) -> bool {
        let by_id = self.apps.is_empty() || self.apps.iter().any(|p| is_under(id, p));
        by_id
            && self
                .labels
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
    }
}

/// Whether app id `id` is `prefix` or inside it as a group (`/prod` holds `/prod/web`).
fn is_under(id: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || id == prefix
        || id
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// One allow rule of a direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Peers of an ingress rule; empty: any peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Peer>,
    /// Peers of an egress rule; empty: any peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Peer>,
    /// Empty: any port and protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
}

/// A peer: apps, addresses, or the backends of a VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Peer {
    Cidr { cidr: IpNetwork },
    Vip { vip: String },
    Apps(Selector),
}

/// A protocol and destination port (or all ports of the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    #[serde(default)]
    pub protocol: Protocol,
    /// `None`: every port of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// Why a policy is refused, in words for the operator.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the policy is not valid JSON of a policy: {0}")]
    Json(String),
    #[error(
        "the policy id {0:?} is not 1 to 100 letters, digits, '-', '_' or '.': give it an id to list and remove it by"
    )]
    Id(String),
    #[error(
        "policy {policy}: app id {app:?} does not start with '/' (app ids are absolute, e.g. /web)"
    )]
    AppId { policy: String, app: String },
    #[error("policy {policy}: an ingress rule has `to` (ingress rules name peers in `from`)")]
    ToInIngress { policy: String },
    #[error("policy {policy}: an egress rule has `from` (egress rules name peers in `to`)")]
    FromInEgress { policy: String },
    #[error("policy {policy}: port 0 is no port (leave `port` out for every port)")]
    PortZero { policy: String },
    #[error("policy {policy}: the VIP {vip:?} is not `<name or IP>:<port>` as in a VIP label")]
    Vip { policy: String, vip: String },
    #[error("policy {policy}: it has neither `ingress` nor `egress`, so it would isolate nothing")]
    Nothing { policy: String },
}

impl Policy {
    /// Parses and checks one policy.
    pub fn parse(json: &str) -> Result<Self, PolicyError> {
        let policy: Policy =
            serde_json::from_str(json).map_err(|e| PolicyError::Json(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Whether a rule names a VIP: only then does compiling it need the VIPs' backends.
    pub fn names_vips(&self) -> bool {
        self.ingress
            .iter()
            .chain(&self.egress)
            .flatten()
            .flat_map(|r| r.from.iter().chain(&r.to))
            .any(|peer| matches!(peer, Peer::Vip { .. }))
    }

    /// Checks what JSON alone does not.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let ok_id = !self.id.is_empty()
            && self.id.len() <= MAX_ID_LEN
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok_id {
            return Err(PolicyError::Id(self.id.clone()));
        }
        let policy = || self.id.clone();
        if self.ingress.is_none() && self.egress.is_none() {
            return Err(PolicyError::Nothing { policy: policy() });
        }
        let check_selector = |s: &Selector| -> Result<(), PolicyError> {
            match s.apps.iter().find(|a| !a.starts_with('/')) {
                Some(app) => Err(PolicyError::AppId {
                    policy: policy(),
                    app: app.clone(),
                }),
                None => Ok(()),
            }
        };
        check_selector(&self.selector)?;
        let rules = self.ingress.iter().flatten().map(|r| (r, true));
        let rules = rules.chain(self.egress.iter().flatten().map(|r| (r, false)));
        for (rule, ingress) in rules {
            if ingress && !rule.to.is_empty() {
                return Err(PolicyError::ToInIngress { policy: policy() });
            }
            if !ingress && !rule.from.is_empty() {
                return Err(PolicyError::FromInEgress { policy: policy() });
            }
            if rule.ports.iter().any(|p| p.port == Some(0)) {
                return Err(PolicyError::PortZero { policy: policy() });
            }
            for peer in rule.from.iter().chain(&rule.to) {
                match peer {
                    Peer::Apps(s) => check_selector(s)?,
                    Peer::Vip { vip } => {
                        let ok = vip.rsplit_once(':').is_some_and(|(name, port)| {
                            !name.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                        });
                        if !ok {
                            return Err(PolicyError::Vip {
                                policy: policy(),
                                vip: vip.clone(),
                            });
                        }
                    }
                    Peer::Cidr { .. } => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_match_id_prefixes_as_groups_and_every_label() {
        let s = Selector {
            apps: vec!["/prod".into()],
            labels: labels(&[("tier", "front")]),
        };
        assert!(s.matches("/prod/web", &labels(&[("tier", "front"), ("x", "y")])));
        assert!(s.matches("/prod", &labels(&[("tier", "front")])));
        assert!(!s.matches("/production", &labels(&[("tier", "front")])));
        assert!(!s.matches("/prod/web", &labels(&[("tier", "back")])));
        assert!(!s.matches("/prod/web", &labels(&[])));
        assert!(Selector::default().matches("/anything", &labels(&[])));
    }

    #[test]
    fn a_policy_parses_with_every_kind_of_peer() {
        let p = Policy::parse(
            r#"{"id": "web-in",
                "selector": {"apps": ["/web"]},
                "ingress": [{"from": [{"apps": ["/client"]}, {"labels": {"role": "lb"}},
                                      {"cidr": "10.0.0.0/8"}],
                             "ports": [{"protocol": "tcp", "port": 80}, {"protocol": "udp"}]}],
                "egress": [{"to": [{"vip": "/db:5432"}]}]}"#,
        )
        .unwrap();
        let rule = &p.ingress.as_ref().unwrap()[0];
        assert_eq!(rule.from.len(), 3);
        assert!(matches!(&rule.from[0], Peer::Apps(s) if s.apps == ["/client"]));
        assert!(matches!(&rule.from[1], Peer::Apps(s) if s.labels["role"] == "lb"));
        assert!(matches!(&rule.from[2], Peer::Cidr { .. }));
        assert_eq!(
            rule.ports[1],
            PortSpec {
                protocol: Protocol::Udp,
                port: None
            }
        );
        assert!(
            matches!(&p.egress.as_ref().unwrap()[0].to[0], Peer::Vip { vip } if vip == "/db:5432")
        );
        assert!(p.names_vips());
        let no_vip =
            Policy::parse(r#"{"id": "x", "ingress": [{"from": [{"cidr": "10.0.0.0/8"}]}]}"#);
        assert!(!no_vip.unwrap().names_vips());
    }

    #[test]
    fn mistakes_are_refused_with_what_to_do() {
        let refused = |json: &str| Policy::parse(json).unwrap_err();
        assert!(matches!(refused("{"), PolicyError::Json(_)));
        assert!(matches!(
            refused(r#"{"id": "a b", "ingress": []}"#),
            PolicyError::Id(_)
        ));
        assert!(matches!(
            refused(r#"{"id": "x"}"#),
            PolicyError::Nothing { .. }
        ));
        assert!(matches!(
            refused(r#"{"id": "x", "selector": {"apps": ["web"]}, "ingress": []}"#),
            PolicyError::AppId { .. }
        ));
        assert!(matches!(
            refused(r#"{"id": "x", "ingress": [{"to": [{"cidr": "10.0.0.0/8"}]}]}"#),
            PolicyError::ToInIngress { .. }
        ));
        assert!(matches!(
            refused(r#"{"id": "x", "egress": [{"from": [{"cidr": "10.0.0.0/8"}]}]}"#),
            PolicyError::FromInEgress { .. }
        ));
        assert!(matches!(
            refused(r#"{"id": "x", "ingress": [{"ports": [{"port": 0}]}]}"#),
            PolicyError::PortZero { .. }
        ));
        assert!(matches!(
            refused(r#"{"id": "x", "egress": [{"to": [{"vip": "db"}]}]}"#),
            PolicyError::Vip { .. }
        ));
        assert!(matches!(
            refused(r#"{"id": "x", "ingress": [], "typo": 1}"#),
            PolicyError::Json(_)
        ));
    }
}
