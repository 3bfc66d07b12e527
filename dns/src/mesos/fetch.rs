//! Fetching `/master/state` as Mesos-DNS does: the masters are tried in configured order; a
//! master that is down or not answering is skipped; when the state a master returns names
//! another leader, the state is read again from that leader, so records always come from the
//! leading master's view.
//!
//! Blocking (ureq): one request per refresh interval does not need an async client, and callers
//! run it on a blocking thread.

use std::net::SocketAddr;
use std::time::Duration;

use super::state::{State, split_pid};

/// Why no state could be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Every master failed; one reason per master, in order.
    #[error("no master returned a usable state: {}", .0.join("; "))]
    AllFailed(Vec<String>),
}

/// Fetches the leading master's state, trying `masters` in order with `timeout` per request.
pub fn fetch_state(
    masters: &[SocketAddr],
    timeout: Duration,
) -> Result<(State, SocketAddr), FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .user_agent("dcnet (Mesos-DNS compatible)")
        .build()
        .into();
    let mut failures = Vec::new();
    for &master in masters {
        match fetch_from(&agent, master) {
            Ok(state) => match leader_of(&state) {
                Some(leader) if leader != master => match fetch_from(&agent, leader) {
                    Ok(state) if leader_of(&state) == Some(leader) => return Ok((state, leader)),
                    Ok(_) => failures.push(format!(
                        "{master} named leader {leader}, which does not say it leads"
                    )),
                    Err(e) => {
                        failures.push(format!("{master} named leader {leader}, which failed: {e}"))
                    }
                },
                Some(_) => return Ok((state, master)),
                None => failures.push(format!(
                    "{master}: the state names no leader (not elected yet?)"
                )),
            },
            Err(e) => failures.push(format!("{master}: {e}")),
        }
    }
    Err(FetchError::AllFailed(failures))
}

fn fetch_from(agent: &ureq::Agent, master: SocketAddr) -> Result<State, String> {
    let url = format!("http://{master}/master/state");
    let mut response = agent.get(&url).call().map_err(|e| e.to_string())?;
    // 64 MiB: the state of a very large cluster, not an unbounded read. Read whole, then
    // parsed from the bytes: serde_json through a reader goes byte by byte, about ten times
    // slower (at 100,000 tasks, most of a poll's CPU).
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .map_err(|e| format!("reading the master state: {e}"))?;
    serde_json::from_slice::<State>(&body)
        .map_err(|e| format!("the response is not a master state: {e}"))
}

/// The leader a state names, as an address.
fn leader_of(state: &State) -> Option<SocketAddr> {
    let (host, port) = split_pid(&state.leader)?;
    Some(SocketAddr::new(host.parse().ok()?, port))
}
