//! Fetching `/master/state` as Mesos-DNS does: the masters are tried in configured order; a
//! master that is down or not answering is skipped; when the state a master returns names
//! another leader, the state is read again from that leader, so records always come from the
//! leading master's view.
//!
//! Blocking (ureq): one request per refresh interval does not need an async client, and callers
//! run it on a blocking thread.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::debug;

use super::state::{State, split_pid};

/// Why no state could be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Every master failed; one reason per master, in order.
    #[error("no master returned a usable state: {}", .0.join("; "))]
    AllFailed(Vec<String>),
}

/// What a poll found.
#[derive(Debug)]
pub enum Fetched {
    /// The leading master's state, from `leader`, with what identifies its bytes.
    State { state: State, seen: Seen },
    /// The master of `seen` returned the same bytes again: nothing to parse.
    Unchanged(Seen),
}

/// The master a state was read from and a digest of its bytes, to skip parsing the same
/// state again (at 100,000 tasks, parsing is most of a poll's CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub leader: SocketAddr,
    digest: u64,
}

/// Fetches the leading master's state, trying `masters` in order with `timeout` per request.
/// With `last`, a master that returns exactly the bytes it returned then is not parsed.
pub fn fetch_state(
    masters: &[SocketAddr],
    timeout: Duration,
    last: Option<Seen>,
) -> Result<Fetched, FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .user_agent("dcnet (Mesos-DNS compatible)")
        .build()
        .into();
    let read = |master: SocketAddr| -> Result<Fetched, String> {
        let started = Instant::now();
        let body = fetch_body(&agent, master)?;
        let seen = Seen {
            leader: master,
            digest: DIGEST.hash_one(&body),
        };
        let read = started.elapsed();
        if last == Some(seen) {
            return Ok(Fetched::Unchanged(seen));
        }
        let state = serde_json::from_slice::<State>(&body)
            .map_err(|e| format!("the response is not a master state: {e}"))?;
        debug!(%master, bytes = body.len(), ?read, parsed = ?started.elapsed() - read,
               "master state read");
        Ok(Fetched::State { state, seen })
    };
    let mut failures = Vec::new();
    for &master in masters {
        let (state, seen) = match read(master) {
            Ok(Fetched::State { state, seen }) => (state, seen),
            Ok(unchanged) => return Ok(unchanged),
            Err(e) => {
                failures.push(format!("{master}: {e}"));
                continue;
            }
        };
        match leader_of(&state) {
            Some(leader) if leader != master => match read(leader) {
                Ok(Fetched::State { state, seen }) if leader_of(&state) == Some(leader) => {
                    return Ok(Fetched::State { state, seen });
                }
                Ok(Fetched::State { .. }) => failures.push(format!(
                    "{master} named leader {leader}, which does not say it leads"
                )),
                Ok(unchanged) => return Ok(unchanged),
                Err(e) => {
                    failures.push(format!("{master} named leader {leader}, which failed: {e}"))
                }
            },
            Some(_) => return Ok(Fetched::State { state, seen }),
            None => failures.push(format!(
                "{master}: the state names no leader (not elected yet?)"
            )),
        }
    }
    Err(FetchError::AllFailed(failures))
}

/// Fixed, so digests compare across polls.
const DIGEST: foldhash::quality::FixedState =
    foldhash::quality::FixedState::with_seed(0x6d65_736f_7373_7461);

/// The body of a master's `/master/state`.
fn fetch_body(agent: &ureq::Agent, master: SocketAddr) -> Result<Vec<u8>, String> {
    let url = format!("http://{master}/master/state");
    let mut response = agent.get(&url).call().map_err(|e| e.to_string())?;
    // A limit, not an unbounded read: 100,000 tasks make about 70 MB of state. Read whole,
    // then parsed from the bytes: serde_json through a reader goes byte by byte, about ten
    // times slower (at 100,000 tasks, most of a poll's CPU). Sized from the announced length
    // (within the limit): grown by doubling, a 70 MB body was copied and its pages faulted in
    // about twice, at every poll, changed or not.
    let announced = response.body().content_length().unwrap_or(0);
    let mut body = Vec::with_capacity(announced.min(MAX_STATE_BYTES) as usize);
    use std::io::Read as _;
    response
        .body_mut()
        .with_config()
        .limit(MAX_STATE_BYTES)
        .reader()
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the master state: {e}"))?;
    Ok(body)
}

/// The largest state read: several times that of 100,000 tasks.
const MAX_STATE_BYTES: u64 = 512 << 20;

/// The leader a state names, as an address.
fn leader_of(state: &State) -> Option<SocketAddr> {
    let (host, port) = split_pid(&state.leader)?;
    Some(SocketAddr::new(host.parse().ok()?, port))
}
