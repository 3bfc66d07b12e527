//! Linked clusters, as DC/OS's cluster linker: a one-way link from this cluster to another,
//! kept in Raft by the masters and answered by the leader (agents forward `/cluster/v1/...`
//! like `/v2`):
//!
//! - `GET /cluster/v1/links`: every link, without its credential (`read` is enough);
//! - `GET /cluster/v1/links/{name}`: one link; its credential only to an admin;
//! - `PUT /cluster/v1/links/{name}`: adds or replaces a link (admin), body [`LinkRequest`];
//! - `DELETE /cluster/v1/links/{name}`: removes it (admin).
//!
//! A link holds where the other cluster's API is (`url`, with its CA to verify it and a
//! credential for it) and its DNS servers: the leader publishes each link's DNS part in
//! gossip (`sched/link/<name>`, [`crate::facts::scheduler::LinkFact`]), and every node then
//! answers `<task>.<framework>.<name>.<domain>` by asking the linked cluster (see
//! [`dcnet_dns::linked`]). The link's name is the label its names appear under.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dcnet_auth::{Identity, Role};
use dcnet_consensus::{Command, Data};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use super::marathon::{Refusal, now_version, read, refusal, require_leader};
use super::service::{Inner, consensus_failure};

/// Raft keys: `links/<name>`.
pub const PREFIX: &str = "links/";

/// A link as the masters keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// What this cluster calls it: a DNS label.
    pub name: String,
    /// The other cluster's id and own name ([`crate::identity::ClusterIdentity`]).
    pub id: String,
    pub cluster: String,
    /// Its API (an agent's or a master's scheduler).
    pub url: String,
    /// Its CA (PEM), to verify `url` over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// A credential for it (a token); shown to admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Its DNS domain (`mesos`) and servers.
    pub domain: String,
    #[serde(default)]
    pub dns: Vec<SocketAddr>,
    /// When it was linked (RFC 3339) and by whom.
    pub added: String,
    #[serde(default)]
    pub added_by: String,
}

/// The body of `PUT /cluster/v1/links/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    pub id: String,
    pub cluster: String,
    pub url: String,
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "default_domain")]
    pub domain: String,
    #[serde(default)]
    pub dns: Vec<SocketAddr>,
}

fn default_domain() -> String {
    "mesos".into()
}

/// Why a link is refused, in words for the operator.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error(
        "the link name {0:?} is not a DNS label: use 1 to 63 lower-case letters, digits and inner hyphens (its names resolve as <task>.<framework>.{0}.<domain>)"
    )]
    Name(String),
    #[error(
        "the link name {0:?} is a name this cluster's DNS serves itself (<name>.<domain> would hide its own records): choose another"
    )]
    Reserved(String),
    #[error(
        "the linked cluster's id is empty: `dcnet cluster link` reads it from the other cluster's /v1/cluster"
    )]
    Id,
    #[error("a cluster cannot be linked to itself (id {0})")]
    Itself(String),
    #[error("the URL {0:?} is not http:// or https:// followed by a host")]
    Url(String),
    #[error("the CA is not a PEM certificate: {0}")]
    Ca(String),
    #[error("an https URL needs the other cluster's CA (its ca.crt) to verify it")]
    NoCa,
    #[error("the token is not a JWT (three base64url parts separated by dots)")]
    Token,
    #[error("the DNS domain {0:?} is not a DNS name")]
    Domain(String),
}

/// Labels directly under the domain that this cluster's own records use: Mesos-DNS's
/// `leader`, `master`, `slave`, the frameworks everyone runs, and the SOA's `ns1`.
const RESERVED: &[&str] = &[
    "leader",
    "master",
    "slave",
    "ns1",
    "marathon",
    "metronome",
    "mesos",
];

/// Whether `name` is a DNS label fit to name a link.
fn is_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl LinkRequest {
    /// The link named `name` this request makes, checked, from a cluster whose id is `own_id`.
    pub fn into_link(self, name: &str, own_id: &str, by: &str) -> Result<Link, LinkError> {
        if !is_label(name) {
            return Err(LinkError::Name(name.to_owned()));
        }
        if RESERVED.contains(&name) || name.starts_with("master") {
            return Err(LinkError::Reserved(name.to_owned()));
        }
        if self.id.trim().is_empty() {
            return Err(LinkError::Id);
        }
        if self.id == own_id {
            return Err(LinkError::Itself(self.id));
        }
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"));
        if !rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) {
            return Err(LinkError::Url(self.url));
        }
        match &self.ca {
            Some(pem) => {
                let certs =
                    dcnet_auth::tls::certificates(pem).map_err(|e| LinkError::Ca(e.to_string()))?;
                if certs.is_empty() {
                    return Err(LinkError::Ca("no certificate in it".into()));
                }
            }
            None if self.url.starts_with("https://") => return Err(LinkError::NoCa),
            None => {}
        }
        if let Some(token) = &self.token
            && dcnet_auth::credential::parse(dcnet_auth::credential::token_header(token).as_bytes())
                .is_err()
        {
            return Err(LinkError::Token);
        }
        let domain = self.domain.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() || !domain.split('.').all(is_label) {
            return Err(LinkError::Domain(self.domain));
        }
        Ok(Link {
            name: name.to_owned(),
            id: self.id,
            cluster: self.cluster,
            url: self.url.trim_end_matches('/').to_owned(),
            ca: self.ca,
            token: self.token,
            domain,
            dns: self.dns,
            added: now_version(),
            added_by: by.to_owned(),
        })
    }
}

/// The links in `data`, by name.
pub fn all(data: &Data) -> BTreeMap<String, Link> {
    super::replicated::prefixed(data, PREFIX)
}

/// A link as a caller of `role` may see it: without its credential unless an admin.
fn shown(link: &Link, role: Role) -> serde_json::Value {
    let mut value = serde_json::to_value(link).unwrap_or_default();
    if let Some(o) = value.as_object_mut() {
        o.insert("has_token".into(), json!(link.token.is_some()));
        if role != Role::Admin {
            o.remove("token");
        }
    }
    value
}

type Caller = Option<Extension<Identity>>;

/// The caller's role (admin in insecure mode, where nobody is asked).
fn role(caller: &Caller) -> Role {
    caller.as_ref().map_or(Role::Admin, |Extension(id)| id.role)
}

pub(super) fn routes(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/cluster", get(identity))
        .route("/cluster/v1/links", get(list))
        .route("/cluster/v1/links/{name}", get(one).put(put).delete(remove))
        .with_state(inner)
}

async fn identity(State(s): State<Arc<Inner>>) -> Response {
    axum::Json(s.cluster.clone()).into_response()
}

async fn list(State(s): State<Arc<Inner>>, caller: Caller) -> Result<Response, Refusal> {
    let role = role(&caller);
    let links: Vec<_> = all(&s.consensus().data().borrow())
        .values()
        .map(|l| shown(l, role))
        .collect();
    read(&s, json!({ "cluster": s.cluster, "links": links }))
}

async fn one(
    State(s): State<Arc<Inner>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, Refusal> {
    let links = all(&s.consensus().data().borrow());
    let link = links.get(&name).ok_or_else(|| not_linked(&name))?;
    read(&s, shown(link, role(&caller)))
}

fn not_linked(name: &str) -> Refusal {
    refusal(
        StatusCode::NOT_FOUND,
        format!("no cluster is linked as {name:?}; `dcnet cluster list` shows the links"),
    )
}

async fn put(
    State(s): State<Arc<Inner>>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Refusal> {
    if role(&caller) != Role::Admin {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "linking a cluster needs the admin role",
        ));
    }
    require_leader(&s)?;
    let request: LinkRequest = serde_json::from_slice(&body).map_err(|e| {
        refusal(
            StatusCode::BAD_REQUEST,
            format!(
                "expected {{\"id\", \"cluster\", \"url\", \"ca\", \"token\", \"domain\", \"dns\": [\"IP:PORT\"]}}: {e}"
            ),
        )
    })?;
    let by = caller
        .as_ref()
        .map_or_else(String::new, |Extension(id)| id.subject.clone());
    let link = request
        .into_link(&name, &s.cluster.id, &by)
        .map_err(|e| refusal(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let replaced = all(&s.consensus().data().borrow()).contains_key(&name);
    let command = Command::put(
        format!("{PREFIX}{name}"),
        serde_json::to_value(&link).unwrap_or_default(),
    );
    if let Err(e) = s.consensus().write(command).await {
        let (status, message) = consensus_failure(e);
        return Err(refusal(status, message));
    }
    info!(link = %name, cluster = %link.cluster, id = %link.id, url = %link.url, "cluster linked");
    s.poke.notify_one();
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(shown(&link, Role::Read))).into_response())
}

async fn remove(
    State(s): State<Arc<Inner>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, Refusal> {
    if role(&caller) != Role::Admin {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "unlinking a cluster needs the admin role",
        ));
    }
    require_leader(&s)?;
    if !all(&s.consensus().data().borrow()).contains_key(&name) {
        return Err(not_linked(&name));
    }
    if let Err(e) = s
        .consensus()
        .write(Command::delete(format!("{PREFIX}{name}")))
        .await
    {
        let (status, message) = consensus_failure(e);
        return Err(refusal(status, message));
    }
    info!(link = %name, "cluster unlinked");
    s.poke.notify_one();
    Ok(axum::Json(json!({"message": format!("{name} is no longer linked")})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> LinkRequest {
        LinkRequest {
            id: "0b9a".into(),
            cluster: "east-prod".into(),
            url: "http://10.0.0.1:62080/".into(),
            ca: None,
            token: None,
            domain: "Mesos.".into(),
            dns: vec!["10.0.0.1:53".parse().unwrap()],
        }
    }

    #[test]
    fn a_link_is_checked_and_normalized() {
        let link = request().into_link("east", "self-id", "ops").unwrap();
        assert_eq!(link.url, "http://10.0.0.1:62080");
        assert_eq!(link.domain, "mesos");
        assert_eq!(link.added_by, "ops");
        for bad in ["", "East", "-east", "east-", "a.b", &"a".repeat(64)] {
            assert!(matches!(
                request().into_link(bad, "self-id", ""),
                Err(LinkError::Name(_))
            ));
        }
        assert_eq!(
            request().into_link("east", "0b9a", ""),
            Err(LinkError::Itself("0b9a".into()))
        );
        for taken in ["marathon", "slave", "leader", "master2"] {
            assert_eq!(
                request().into_link(taken, "s", ""),
                Err(LinkError::Reserved(taken.into()))
            );
        }
        let mut r = request();
        r.url = "ftp://x".into();
        assert!(matches!(
            r.into_link("east", "s", ""),
            Err(LinkError::Url(_))
        ));
        let mut r = request();
        r.url = "https://10.0.0.1:8443".into();
        assert_eq!(r.into_link("east", "s", ""), Err(LinkError::NoCa));
        let mut r = request();
        r.ca = Some("not a pem".into());
        assert!(matches!(
            r.into_link("east", "s", ""),
            Err(LinkError::Ca(_))
        ));
        let mut r = request();
        r.token = Some("secret".into());
        assert_eq!(r.into_link("east", "s", ""), Err(LinkError::Token));
        let mut r = request();
        r.domain = "bad domain".into();
        assert!(matches!(
            r.into_link("east", "s", ""),
            Err(LinkError::Domain(_))
        ));
    }

    #[test]
    fn only_admins_see_a_links_credential() {
        let mut r = request();
        r.token = Some("a.b.c".into());
        let link = r.into_link("east", "s", "").unwrap();
        let admin = shown(&link, Role::Admin);
        assert_eq!(admin["token"], "a.b.c");
        let reader = shown(&link, Role::Read);
        assert!(reader.get("token").is_none());
        assert_eq!(reader["has_token"], true);
    }
}
