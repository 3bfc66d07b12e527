//! `dcnet-cni`: reads the network configuration on stdin and the `CNI_*` environment, prints
//! the result or the error JSON on stdout (exit 1 on error), as the CNI spec asks.

use std::io::Read;

use dcnet_cni::agent::HttpAgent;
use dcnet_cni::request::DEFAULT_AGENT;
use dcnet_cni::result::{CniError, code};

fn main() {
    let mut stdin = String::new();
    let read = std::io::stdin().read_to_string(&mut stdin);
    let version = serde_json::from_str::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "1.0.0".into());
    let outcome = match read {
        Err(e) => Err(CniError::new(
            code::IO_FAILURE,
            "cannot read stdin",
            e.to_string(),
        )),
        Ok(_) => {
            let conf = serde_json::from_str::<serde_json::Value>(&stdin).ok();
            let field = |name: &str| {
                conf.as_ref()
                    .and_then(|v| v.get(name)?.as_str().map(str::to_owned))
            };
            let agent_url = field("agent").unwrap_or_else(|| DEFAULT_AGENT.into());
            // The agent's API asks for a credential: the file the configuration names, else
            // root's (/etc/dcnet/credentials); runtimes run plugins as root.
            let credentials = field("credentials").map(std::path::PathBuf::from);
            match dcnet_auth::client::load(credentials.as_deref()) {
                Ok(credential) => {
                    let agent = HttpAgent::new(&agent_url, credential);
                    dcnet_cni::run(&stdin, &|k| std::env::var(k).ok(), &agent)
                }
                Err(e) => Err(CniError::new(
                    code::INVALID_NETWORK_CONFIG,
                    "cannot read the credential for the dcnet agent",
                    format!("{e}; name a credential file in the configuration's \"credentials\""),
                )),
            }
        }
    };
    match outcome {
        Ok(Some(out)) => println!("{out}"),
        Ok(None) => {}
        Err(e) => {
            println!("{}", e.to_json(&version));
            std::process::exit(1);
        }
    }
}
