//! The operator commands that talk to a running agent's local API.
//!
//! - [`nodes`]: `dcnet nodes`, the membership table.
//! - [`dns`]: `dcnet dns records`, the records of a Mesos state, offline.

pub mod dns;
pub mod nodes;

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
