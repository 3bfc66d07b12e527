//! `dcnet dns records`: the records a Mesos master state produces, in master-file form, without
//! serving them (to preview a switch from Mesos-DNS, or to load another server with the same data).

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use dcnet_dns::mesos::state::{IpSource, State};
use dcnet_dns::mesos::{self, literal_only};
use dcnet_dns::name::LabelSpec;
use dcnet_dns::records::{self, Settings};

/// What `dcnet dns records` needs besides the state file.
pub struct RecordsOptions {
    pub domain: String,
    pub rfc952: bool,
    pub ip_sources: Vec<String>,
    pub ttl: u32,
}

/// Reads `state_file` (a `/master/state` document) and renders its records.
pub fn records(state_file: &Path, options: &RecordsOptions) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(state_file)
        .with_context(|| format!("cannot read the Mesos state file {}", state_file.display()))?;
    let state: State = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a Mesos master state document (GET /master/state)",
            state_file.display()
        )
    })?;
    let sources = options
        .ip_sources
        .iter()
        .map(|s| s.parse::<IpSource>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let cluster = mesos::cluster(&state, &sources, &literal_only);
    let leader: Vec<(IpAddr, u16)> = cluster.leader.into_iter().collect();
    let settings = Settings {
        domain: options.domain.clone(),
        spec: if options.rfc952 {
            LabelSpec::Rfc952
        } else {
            LabelSpec::Rfc1123
        },
        masters: leader,
        mname: format!("ns1.{}", options.domain),
        listen_ips: Vec::new(),
    };
    let set = records::generate(&cluster, &settings);
    let mut out = String::new();
    set.write_zone_file(&mut out, options.ttl, 1)?;
    Ok(out)
}
