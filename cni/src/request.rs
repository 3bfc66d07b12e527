//! What the runtime asks: `CNI_COMMAND` and the other `CNI_*` variables, and the network
//! configuration on stdin.

use dcnet_overlay::api::{AttachRequest, DetachRequest};
use serde::Deserialize;
use serde_json::Value;

use crate::SUPPORTED_VERSIONS;
use crate::result::{CniError, code};

/// The origin the plugin's attachments are recorded with: GC looks at these only.
pub const ORIGIN: &str = "cni";

/// Default address of the agent's API (its `api.listen` default).
pub const DEFAULT_AGENT: &str = "http://127.0.0.1:62080";

/// The CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    /// CNI 1.1: whether the plugin can serve ADD now.
    Status,
    /// CNI 1.1: release the attachments the runtime no longer lists.
    Gc,
}

/// `CNI_COMMAND`.
pub fn command(env: &dyn Fn(&str) -> Option<String>) -> Result<Command, CniError> {
    match env("CNI_COMMAND").as_deref() {
        Some("ADD") => Ok(Command::Add),
        Some("DEL") => Ok(Command::Del),
        Some("CHECK") => Ok(Command::Check),
        Some("VERSION") => Ok(Command::Version),
        Some("STATUS") => Ok(Command::Status),
        Some("GC") => Ok(Command::Gc),
        Some(other) => Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_COMMAND {other:?} is not supported"),
            "use ADD, DEL, CHECK, STATUS, GC or VERSION",
        )),
        None => Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            "CNI_COMMAND is not set",
            "dcnet-cni is a CNI plugin: a container runtime runs it with CNI_COMMAND and the other CNI_* variables set",
        )),
    }
}

/// The network configuration, as far as this plugin reads it.
#[derive(Debug, Clone, Deserialize)]
struct NetConf {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// The agent's API, default [`DEFAULT_AGENT`].
    agent: Option<String>,
    /// The dcnet overlay to attach to; default the configuration's `name`.
    network: Option<String>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
    /// GC: the attachments the runtime still has on this network.
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<ValidAttachment>>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Deserialize)]
struct ValidAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

impl NetConf {
    /// Parses stdin and checks the version.
    fn parse(stdin: &str) -> Result<Self, CniError> {
        let conf: NetConf = serde_json::from_str(stdin).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "the network configuration on stdin is not valid JSON of the expected shape",
                e.to_string(),
            )
        })?;
        let cni_version = conf
            .cni_version
            .as_deref()
            .ok_or_else(|| invalid_conf("cniVersion is missing"))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {cni_version:?} is not supported"),
                format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        Ok(conf)
    }
}

/// A validated ADD, DEL or CHECK.
#[derive(Debug, Clone)]
pub struct Request {
    pub command: Command,
    pub cni_version: String,
    pub agent: String,
    pub network: String,
    pub container_id: String,
    /// Empty on a DEL whose namespace is already gone.
    pub netns: String,
    pub ifname: String,
    pub prev_result: Option<Value>,
}

impl Request {
    /// GC: the network and the attachments to keep (`cni.dev/valid-attachments`; none listed
    /// means none is valid any more).
    pub fn parse_gc(stdin: &str) -> Result<dcnet_overlay::api::GcRequest, CniError> {
        let network = Self::parse_network(stdin)?;
        let conf = NetConf::parse(stdin)?;
        Ok(dcnet_overlay::api::GcRequest {
            network,
            origin: ORIGIN.into(),
            keep: conf
                .valid_attachments
                .unwrap_or_default()
                .into_iter()
                .map(|v| dcnet_overlay::api::Kept {
                    container_id: v.container_id,
                    ifname: v.ifname,
                })
                .collect(),
        })
    }

    /// STATUS: the overlay network a valid configuration names (its `network`, else its
    /// `name`); STATUS has no container.
    pub fn parse_network(stdin: &str) -> Result<String, CniError> {
        let conf = NetConf::parse(stdin)?;
        let name = conf
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid_conf("name is missing or empty"))?;
        Ok(conf.network.unwrap_or(name))
    }

    /// Validates the configuration and environment of `command`.
    pub fn parse(
        command: Command,
        stdin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, CniError> {
        let conf = NetConf::parse(stdin)?;
        let cni_version = conf.cni_version.clone().unwrap_or_default();
        let name = conf
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid_conf("name is missing or empty"))?;
        if conf.kind.as_deref().is_none_or(str::is_empty) {
            return Err(invalid_conf("type is missing or empty"));
        }
        let agent = conf.agent.unwrap_or_else(|| DEFAULT_AGENT.to_owned());
        if !(agent.starts_with("http://") && agent.len() > "http://".len()) {
            return Err(invalid_conf(format!(
                "agent {agent:?} is not an http:// URL of the dcnet agent's API, such as {DEFAULT_AGENT}"
            )));
        }
        let network = conf.network.unwrap_or(name);
        let required = |var: &str| {
            env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!("{var} is not set"),
                    "the runtime must set CNI_CONTAINERID, CNI_NETNS (except for DEL) and CNI_IFNAME",
                )
            })
        };
        let container_id = required("CNI_CONTAINERID")?;
        let ifname = required("CNI_IFNAME")?;
        let netns = match command {
            Command::Del => env("CNI_NETNS").unwrap_or_default(),
            _ => required("CNI_NETNS")?,
        };
        if command == Command::Check && conf.prev_result.is_none() {
            return Err(invalid_conf("CHECK needs prevResult in the configuration"));
        }
        Ok(Self {
            command,
            cni_version,
            agent,
            network,
            container_id,
            netns,
            ifname,
            prev_result: conf.prev_result,
        })
    }

    pub fn attach_request(&self) -> AttachRequest {
        AttachRequest {
            container_id: self.container_id.clone(),
            netns: self.netns.clone(),
            ifname: self.ifname.clone(),
            network: self.network.clone(),
            // The runtime owns the namespace.
            create: false,
            origin: Some(ORIGIN.into()),
        }
    }

    pub fn detach_request(&self) -> DetachRequest {
        DetachRequest {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
            network: Some(self.network.clone()),
        }
    }

    /// CHECK: the addresses the agent reports must be those the runtime was given.
    pub fn check_prev_result(
        &self,
        attached: &dcnet_overlay::api::AttachResponse,
    ) -> Result<(), CniError> {
        let ips = self
            .prev_result
            .as_ref()
            .and_then(|r| r.get("ips"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let wanted = [
            attached.address.map(|a| a.to_string()),
            attached.address6.map(|a| a.to_string()),
        ];
        for want in wanted.into_iter().flatten() {
            if !ips
                .iter()
                .any(|ip| ip.get("address").and_then(Value::as_str) == Some(&want))
            {
                return Err(CniError::new(
                    code::GENERIC,
                    format!("prevResult does not list the interface's address {want}"),
                    "the container's attachment changed since ADD; delete and add it again",
                ));
            }
        }
        Ok(())
    }
}

fn invalid_conf(msg: impl Into<String>) -> CniError {
    CniError::new(
        code::INVALID_NETWORK_CONFIG,
        msg,
        "see the dcnet-cni example configuration in DEVELOPERS.md",
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"dcos","type":"dcnet-cni"}"#;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    type Vars = &'static [(&'static str, &'static str)];

    const FULL: Vars = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/c1"),
        ("CNI_IFNAME", "eth0"),
    ];

    #[test]
    fn a_complete_add_parses_with_defaults() {
        let r = Request::parse(Command::Add, CONF, &env(FULL)).unwrap();
        assert_eq!(r.agent, DEFAULT_AGENT);
        assert_eq!(r.network, "dcos", "the configuration's name by default");
        assert_eq!(r.attach_request().netns, "/var/run/netns/c1");
    }

    #[test]
    fn each_problem_has_its_spec_code() {
        let cases: &[(&str, Vars, u32)] = &[
            ("{", FULL, code::DECODING_FAILURE),
            (
                r#"{"cniVersion":"9.9.9","name":"x","type":"t"}"#,
                FULL,
                code::INCOMPATIBLE_VERSION,
            ),
            (
                r#"{"name":"x","type":"t"}"#,
                FULL,
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","type":"t"}"#,
                FULL,
                code::INVALID_NETWORK_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"x","type":"t","agent":"ftp://x"}"#,
                FULL,
                code::INVALID_NETWORK_CONFIG,
            ),
            (CONF, &FULL[..2], code::INVALID_ENVIRONMENT),
            (
                CONF,
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_NETNS", "/x"),
                    ("CNI_IFNAME", "eth0"),
                ],
                code::INVALID_ENVIRONMENT,
            ),
        ];
        for (conf, vars, want) in cases {
            let err = Request::parse(Command::Add, conf, &env(vars)).unwrap_err();
            assert_eq!(err.code, *want, "{conf} {vars:?}: {err:?}");
        }
        assert_eq!(
            command(&env(&[("CNI_COMMAND", "FLUSH")])).unwrap_err().code,
            code::INVALID_ENVIRONMENT
        );
        assert_eq!(
            command(&env(&[])).unwrap_err().code,
            code::INVALID_ENVIRONMENT
        );
    }

    #[test]
    fn del_does_not_need_a_namespace_and_check_needs_prev_result() {
        let vars = [("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")];
        assert!(Request::parse(Command::Del, CONF, &env(&vars)).is_ok());
        let err = Request::parse(Command::Check, CONF, &env(FULL)).unwrap_err();
        assert_eq!(err.code, code::INVALID_NETWORK_CONFIG);
    }
}
