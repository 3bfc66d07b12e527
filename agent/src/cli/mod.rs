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
/// and the decoded JSON answer (`null` if the body is empty or not JSON). A `503` with
/// `Retry-After` (a scheduler that was just elected and adopts the running tasks) is retried
/// for up to [`RETRY_FOR`], saying so once on stderr: nothing was changed by the refused call.
pub fn call_json(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let (status, retry_after, answer) = call_once(api, method, path, body)?;
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
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, Option<u64>, serde_json::Value)> {
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
        let (status, answer) = call_json(api, "POST", "/v2/apps", Some(&body)).unwrap();
        assert_eq!((status, answer["id"].as_str()), (201, Some("/web")));
    }

    #[test]
    fn a_refusal_without_retry_after_is_returned_at_once() {
        let api = serve(vec![NO_SCHEDULER]);
        let (status, answer) = call_json(api, "GET", "/v2/apps", None).unwrap();
        assert_eq!((status, answer["message"].as_str()), (503, Some("none")));
    }
}
