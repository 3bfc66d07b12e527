//! The operator commands that talk to a running agent's local API.
//!
//! - [`nodes`]: `dcnet nodes`, the membership table.
//! - [`dns`]: `dcnet dns records`, the records of a Mesos state, offline.
//! - [`vips`]: `dcnet vips`, the load balancer's VIPs and backends.
//! - [`apps`]: `dcnet app ...` and `dcnet task list`, through the scheduler's `/v2` API.
//! - [`dns`] also has `dcnet dns lookup`, a query to the node's own DNS server.

pub mod apps;
pub mod dns;
pub mod nodes;
pub mod vips;

use std::fmt::Write as _;

use std::net::SocketAddr;
use std::time::Duration;

/// Fetches `path` from the agent API at `api` and decodes the JSON body.
pub fn get_json<T: serde::de::DeserializeOwned>(api: SocketAddr, path: &str) -> anyhow::Result<T> {
    use anyhow::Context as _;
    let url = format!("{}{path}", crate::api::url(api));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(&url).call().with_context(|| {
        format!("cannot reach the dcnet agent at {url}; is `dcnet agent` running here? (pass --api if it listens elsewhere)")
    })?;
    response
        .body_mut()
        .read_json()
        .with_context(|| format!("{url} answered with something that is not the expected JSON"))
}

/// Sends `method path` with an optional JSON body to the agent API at `api`; returns the status
/// and the decoded JSON answer (`null` if the body is empty or not JSON).
pub fn call_json(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    use anyhow::Context as _;
    let url = format!("{}{path}", crate::api::url(api));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into();
    let sent = match (method, body) {
        ("GET", _) => agent.get(&url).call(),
        ("DELETE", _) => agent.delete(&url).call(),
        ("POST", Some(b)) => agent.post(&url).send_json(b),
        ("PUT", Some(b)) => agent.put(&url).send_json(b),
        _ => anyhow::bail!("{method} {path}: not a request this CLI makes"),
    };
    let mut response = sent.with_context(|| {
        format!("cannot reach the dcnet agent at {url}; is `dcnet agent` running here? (pass --api if it listens elsewhere)")
    })?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Ok((
        status,
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
