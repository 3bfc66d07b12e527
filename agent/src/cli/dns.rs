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

/// One answer record of `dcnet dns lookup`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LookupRecord {
    pub name: String,
    pub ttl: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: String,
    /// Whether it came in the additional section (an SRV target's address).
    pub additional: bool,
}

/// The outcome of `dcnet dns lookup`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Lookup {
    pub server: std::net::SocketAddr,
    pub rcode: String,
    pub authoritative: bool,
    pub records: Vec<LookupRecord>,
}

/// Asks `server` (the node's own DNS by default) for `name` over UDP.
pub fn lookup(server: std::net::SocketAddr, name: &str, kind: &str) -> anyhow::Result<Lookup> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;

    let rtype = RecordType::from_str(&kind.to_ascii_uppercase()).map_err(|_| {
        anyhow::anyhow!("{kind:?} is not a record type; use A, AAAA, SRV, SOA, NS, ...")
    })?;
    let qname = Name::from_ascii(name).with_context(|| format!("{name:?} is not a DNS name"))?;
    let mut ask = Message::query();
    ask.metadata.recursion_desired = true;
    ask.add_query(Query::query(qname, rtype));
    let id = ask.metadata.id;
    let bytes = ask.to_vec().context("encoding the query")?;
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = std::net::UdpSocket::bind(bind).context("opening a UDP socket")?;
    socket.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
    socket.connect(server)?;
    socket.send(&bytes)?;
    let mut buf = vec![0u8; 65535];
    let answer = loop {
        let len = socket.recv(&mut buf).with_context(|| {
            format!("no answer from {server}; is the agent's DNS listening there? (pass --server)")
        })?;
        if let Ok(m) = Message::from_vec(&buf[..len])
            && m.metadata.id == id
        {
            break m;
        }
    };
    let mut records = Vec::new();
    for (section, additional) in [(&answer.answers, false), (&answer.additionals, true)] {
        for r in section.iter() {
            records.push(LookupRecord {
                name: r.name.to_string(),
                ttl: r.ttl,
                kind: r.record_type().to_string(),
                data: r.data.to_string(),
                additional,
            });
        }
    }
    Ok(Lookup {
        server,
        rcode: answer.metadata.response_code.to_string(),
        authoritative: answer.metadata.authoritative,
        records,
    })
}

/// A lookup as lines a person reads.
pub fn render_lookup(l: &Lookup) -> String {
    let mut out = format!(
        "{} from {}{}\n",
        l.rcode,
        l.server,
        if l.authoritative {
            " (authoritative)"
        } else {
            ""
        }
    );
    let rows: Vec<Vec<String>> = l
        .records
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.ttl.to_string(),
                r.kind.clone(),
                r.data.clone(),
                if r.additional {
                    "additional".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    if !rows.is_empty() {
        out += &super::render_table(&["NAME", "TTL", "TYPE", "DATA", ""], &rows);
    }
    out
}
