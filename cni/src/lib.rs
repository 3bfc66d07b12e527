//! `dcnet-cni`, a CNI 1.1 plugin: ADD, DEL, CHECK, STATUS, GC and VERSION for container
//! runtimes (Mesos UCR, containerd, podman) that put containers on a dcnet overlay. GC
//! detaches only attachments the plugin made (recorded with origin `cni`).
//!
//! The plugin holds no state and touches no kernel object itself: it validates the request
//! and asks the node's agent (`POST /v1/overlay/attach`, `/detach`, `/check`), which owns the
//! leases, the address allocation and the attach code that dcnet's own task launcher uses too.
//!
//! - [`request`]: the network configuration (stdin) and the `CNI_*` environment, validated.
//! - [`result`]: the success result and the error object the spec defines.
//! - [`agent`]: the calls to the agent.

pub mod agent;
pub mod request;
pub mod result;

pub use request::{Command, Request};
pub use result::CniError;

/// CNI versions whose result format this plugin writes (the 0.3 to 1.1 formats differ, for
/// what it returns, only in the IP version field before 1.0).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Runs one invocation: `stdin` is the network configuration, `env` looks up `CNI_*`
/// variables. Returns what to print on stdout (possibly nothing) or the error to print.
pub fn run(
    stdin: &str,
    env: &dyn Fn(&str) -> Option<String>,
    agent: &dyn agent::Agent,
) -> Result<Option<String>, CniError> {
    let command = request::command(env)?;
    if command == Command::Version {
        return Ok(Some(result::version(stdin)));
    }
    if command == Command::Status {
        let network = request::Request::parse_network(stdin)?;
        agent.status(&network)?;
        return Ok(None);
    }
    if command == Command::Gc {
        agent.gc(&request::Request::parse_gc(stdin)?)?;
        return Ok(None);
    }
    let request = Request::parse(command, stdin, env)?;
    match command {
        Command::Add => {
            let attached = agent.attach(&request.attach_request())?;
            Ok(Some(result::add_result(&request, &attached)))
        }
        Command::Del => {
            agent.detach(&request.detach_request())?;
            Ok(None)
        }
        Command::Check => {
            let attached = agent.check(&request.detach_request())?;
            request.check_prev_result(&attached)?;
            Ok(None)
        }
        Command::Version | Command::Status | Command::Gc => unreachable!("answered above"),
    }
}
