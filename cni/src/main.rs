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
            let agent_url = serde_json::from_str::<serde_json::Value>(&stdin)
                .ok()
                .and_then(|v| v.get("agent")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| DEFAULT_AGENT.into());
            let agent = HttpAgent::new(&agent_url);
            dcnet_cni::run(&stdin, &|k| std::env::var(k).ok(), &agent)
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
