//! The operator commands that talk to a running agent's local API.
//!
//! - [`nodes`]: `dcnet nodes`, the membership table.
//! - [`dns`]: `dcnet dns records`, the records of a Mesos state, offline.
//! - [`vips`]: `dcnet vips`, the load balancer's VIPs and backends.
//! - [`apps`]: `dcnet app ...` and `dcnet task list`, through the scheduler's `/v2` API.
//! - [`dns`] also has `dcnet dns lookup`, a query to the node's own DNS server.
//! - [`auth`]: `dcnet auth ...`: the cluster's keys, tokens and users.
//! - [`masters`]: `dcnet master ...`: the masters' Raft quorum.
//! - [`keyring`]: `dcnet keyring ...`: the gossip keys and their rotation.
//! - [`clusters`]: `dcnet cluster ...`: linked clusters and the CLI's context (`--cluster`).
//! - [`policies`]: `dcnet policy ...`: network policies.
//!
//! Every call presents the credential [`Client`] found (see [`dcnet_auth::client`]).

pub mod apps;
pub mod auth;
pub mod clusters;
pub mod dns;
pub mod keyring;
pub mod masters;
pub mod nodes;
pub mod policies;
pub mod vips;

use std::fmt::Write as _;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use dcnet_auth::client::ClientCredential;

/// The local agent's API and the credential to present to it, or a linked cluster's (see
/// [`Client::for_cluster`]).
#[derive(Debug, Clone)]
pub struct Client {
    pub api: SocketAddr,
    credential: Option<ClientCredential>,
    /// The file a credential was looked for in (for the message when there is none).
    looked_in: PathBuf,
    /// The linked cluster calls go to instead of the local agent.
    remote: Option<Remote>,
}

/// A linked cluster as the CLI reaches it: what its link holds.
#[derive(Clone)]
struct Remote {
    name: String,
    url: String,
    ca: Option<String>,
    /// The `Authorization` value of the link's credential.
    header: Option<String>,
}

impl std::fmt::Debug for Remote {
    // Never print the credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({:?} at {})", self.name, self.url)
    }
}

impl Client {
    /// A client of the agent at `api`, with the credential `credentials` names (see
    /// [`dcnet_auth::client`] for where it is looked for otherwise).
    pub fn new(api: SocketAddr, credentials: Option<&Path>) -> anyhow::Result<Self> {
        let credential = dcnet_auth::client::load(credentials)?;
        if let Some(c) = &credential
            && let Some(warning) = dcnet_auth::client::permission_warning(Path::new(&c.source))
        {
            eprintln!("{warning}");
        }
        Ok(Self {
            api,
            credential,
            looked_in: dcnet_auth::client::path(credentials),
            remote: None,
        })
    }

    /// A client that presents no credential (for tests of refusals).
    pub fn anonymous(api: SocketAddr) -> Self {
        Self {
            api,
            credential: None,
            looked_in: PathBuf::new(),
            remote: None,
        }
    }

    /// This client turned to the cluster linked as `name`: its URL, CA and credential as the
    /// link holds them (read from the local cluster, which takes the admin role).
    pub fn for_cluster(self, name: &str) -> anyhow::Result<Self> {
        let (status, link) = call_json(&self, "GET", &format!("/cluster/v1/links/{name}"), None)?;
        expect_ok(status, &link, &format!("reading the link {name:?}"))?;
        let text = |key: &str| link[key].as_str().map(str::to_owned);
        let url = text("url").with_context(|| format!("the link {name:?} has no URL"))?;
        if link["has_token"] == true && link.get("token").is_none() {
            anyhow::bail!(
                "the link {name:?} has a credential, but only an admin may use it: use an admin credential here"
            );
        }
        Ok(Self {
            remote: Some(Remote {
                name: name.to_owned(),
                url,
                ca: text("ca"),
                header: text("token").map(|t| dcnet_auth::credential::token_header(&t)),
            }),
            ..self
        })
    }

    /// This client turned to the API at `url` (verified against `ca` if HTTPS), presenting
    /// `token`: a cluster about to be linked as `name`.
    pub fn to_url(self, name: &str, url: &str, ca: Option<String>, token: Option<&str>) -> Self {
        Self {
            remote: Some(Remote {
                name: name.to_owned(),
                url: url.to_owned(),
                ca,
                header: token.map(dcnet_auth::credential::token_header),
            }),
            ..self
        }
    }

    /// Where calls go: the local agent's API, or the linked cluster's.
    pub fn base_url(&self) -> String {
        match &self.remote {
            Some(r) => r.url.clone(),
            None => crate::api::url(self.api),
        }
    }

    /// The linked cluster's name, when the calls go to one.
    pub fn cluster(&self) -> Option<&str> {
        self.remote.as_ref().map(|r| r.name.as_str())
    }

    /// What to tell the user when the API refuses the call with `status`.
    fn refused(&self, status: u16, url: &str, answer: &serde_json::Value) -> anyhow::Error {
        let message = answer["message"].as_str().unwrap_or("refused");
        if let Some(remote) = &self.remote {
            return anyhow::anyhow!(
                "{url}: {message} ({status}); the credential stored with the link {:?} was refused or may not do this: link it again with another (`dcnet cluster link ... --token`)",
                remote.name
            );
        }
        let hint = match (&self.credential, status) {
            (None, _) => format!(
                "no credential was sent (${} is not set, {} does not exist): save one there as `token = \"...\"` (an admin makes it with `dcnet auth token create`), or pass --credentials FILE",
                dcnet_auth::client::ENV_TOKEN,
                self.looked_in.display()
            ),
            (Some(c), 403) => format!(
                "the credential from {} is valid but its role may not do this",
                c.source
            ),
            (Some(c), _) => format!("the credential from {} was refused", c.source),
        };
        anyhow::anyhow!("{url}: {message} ({status}); {hint}")
    }
}

/// Fetches `path` from the agent API and decodes the JSON body.
pub fn get_json<T: serde::de::DeserializeOwned>(client: &Client, path: &str) -> anyhow::Result<T> {
    let url = format!("{}{path}", client.base_url());
    let (status, answer) = call_json(client, "GET", path, None)?;
    if status != 200 {
        anyhow::bail!(
            "{url}: {} ({status})",
            answer["message"].as_str().unwrap_or("the agent refused")
        );
    }
    serde_json::from_value(answer)
        .with_context(|| format!("{url} answered with something that is not the expected JSON"))
}

/// `Ok` for a 200; otherwise an error that says what was being done and what the API said
/// (`message`, as the scheduler words it, or `error`, as the agent does).
pub fn expect_ok(status: u16, body: &serde_json::Value, what: &str) -> anyhow::Result<()> {
    expect_status(status, 200, body, what)
}

/// [`expect_ok`] for an answer that should have status `want`.
pub fn expect_status(
    status: u16,
    want: u16,
    body: &serde_json::Value,
    what: &str,
) -> anyhow::Result<()> {
    if status == want {
        return Ok(());
    }
    let said = body["message"]
        .as_str()
        .or(body["error"].as_str())
        .unwrap_or("refused, without a reason");
    anyhow::bail!("{what}: {said} ({status})")
}

/// Sends `method path` with an optional JSON body to the agent API; returns the status and
/// the decoded JSON answer (`null` if the body is empty or not JSON). A `503` with
/// `Retry-After` (a scheduler that was just elected and adopts the running tasks) is retried
/// for up to [`RETRY_FOR`], saying so once on stderr: nothing was changed by the refused call.
/// A 401 or 403 is an error that says what credential was sent and what to do.
pub fn call_json(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let (status, retry_after, answer) = call_once(client, method, path, body)?;
        if status == 401 || status == 403 {
            let url = format!("{}{path}", client.base_url());
            return Err(client.refused(status, &url, &answer));
        }
        let wait = retry_after.map(|s| Duration::from_secs(s.clamp(1, 10)));
        match wait {
            Some(wait) if status == 503 && started.elapsed() + wait <= RETRY_FOR => {
                if !said {
                    eprintln!(
                        "waiting for the scheduler: {}",
                        answer["message"]
                            .as_str()
                            .unwrap_or("it asked to retry later")
                    );
                    said = true;
                }
                std::thread::sleep(wait);
            }
            _ => return Ok((status, answer)),
        }
    }
}

/// How long [`call_json`] keeps retrying a call the scheduler asked to retry later.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// One call: the status, `Retry-After` in seconds if given, and the JSON answer.
fn call_once(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, Option<u64>, serde_json::Value)> {
    let url = format!("{}{path}", client.base_url());
    let agent: ureq::Agent = match client.remote.as_ref().and_then(|r| r.ca.as_deref()) {
        // A linked cluster's HTTPS API: verified against its own CA only.
        Some(ca) => crate::auth::client(Some(ca), Duration::from_secs(15), false)
            .with_context(|| format!("the CA of the link to {url} is not usable"))?,
        None => ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(15)))
            .http_status_as_error(false)
            .build()
            .into(),
    };
    let auth = match &client.remote {
        Some(r) => r.header.as_deref(),
        None => client.credential.as_ref().map(|c| c.header.as_str()),
    };
    fn with<B>(r: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
        match auth {
            Some(value) => r.header("authorization", value),
            None => r,
        }
    }
    let sent = match (method, body) {
        ("GET", _) => with(agent.get(&url), auth).call(),
        ("DELETE", _) => with(agent.delete(&url), auth).call(),
        ("POST", Some(b)) => with(agent.post(&url), auth).send_json(b),
        ("PUT", Some(b)) => with(agent.put(&url), auth).send_json(b),
        _ => anyhow::bail!("{method} {path}: not a request this CLI makes"),
    };
    let mut response = sent.with_context(|| match &client.remote {
        Some(r) => format!("cannot reach the cluster linked as {:?} at {url}", r.name),
        None => format!("cannot reach the dcnet agent at {url}; is `dcnet agent` running here? (pass --api if it listens elsewhere)"),
    })?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Ok((
        status,
        retry_after,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    ))
}

/// Renders rows as a table: columns left-aligned to their widest cell, two spaces apart, no
/// trailing spaces.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<w$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;

    /// Serves one canned HTTP answer per connection, in order; returns its address.
    fn serve(answers: Vec<&'static str>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for answer in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                std::io::Read::read_exact(&mut reader, &mut body).unwrap();
                reader.get_mut().write_all(answer.as_bytes()).unwrap();
            }
        });
        addr
    }

    const ADOPTING: &str = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 23\r\nConnection: close\r\n\r\n{\"message\": \"adopting\"}";
    const CREATED: &str =
        "HTTP/1.1 201 Created\r\nContent-Length: 14\r\nConnection: close\r\n\r\n{\"id\": \"/web\"}";
    const NO_SCHEDULER: &str = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 19\r\nConnection: close\r\n\r\n{\"message\": \"none\"}";

    #[test]
    fn a_call_the_scheduler_asks_to_retry_is_retried() {
        let api = serve(vec![ADOPTING, CREATED]);
        let body = serde_json::json!({"id": "/web"});
        let (status, answer) =
            call_json(&Client::anonymous(api), "POST", "/v2/apps", Some(&body)).unwrap();
        assert_eq!((status, answer["id"].as_str()), (201, Some("/web")));
    }

    #[test]
    fn a_refusal_without_retry_after_is_returned_at_once() {
        let api = serve(vec![NO_SCHEDULER]);
        let (status, answer) = call_json(&Client::anonymous(api), "GET", "/v2/apps", None).unwrap();
        assert_eq!((status, answer["message"].as_str()), (503, Some("none")));
    }
}
