//! What the plugin prints: the ADD result, the VERSION answer, and errors, in the CNI spec's
//! shapes.

use serde::Serialize;
use serde_json::{Value, json};

use crate::SUPPORTED_VERSIONS;
use crate::request::Request;
use dcnet_overlay::api::AttachResponse;

/// The spec's well-known error codes (CNI 1.0, "Error").
pub mod code {
    pub const GENERIC: u32 = 999;
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const CONTAINER_UNKNOWN: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS (CNI 1.1): the plugin cannot serve ADD now.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// Plugin-specific (100 and up): the node's subnet has no free address.
    pub const ADDRESSES_EXHAUSTED: u32 = 100;
}

/// A CNI error: printed as JSON on stdout, with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("CNI error {code}: {msg} ({details})")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error object for stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

/// The VERSION answer; the version asked for on stdin, if any, is echoed when supported.
pub fn version(stdin: &str) -> String {
    let asked = serde_json::from_str::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()));
    json!({
        "cniVersion": asked.as_deref().unwrap_or("1.0.0"),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

/// The ADD result: the host and container interfaces, the addresses (one per family of the
/// network), the default routes and the node's DNS.
pub fn add_result(request: &Request, a: &AttachResponse) -> String {
    let families = [
        (
            a.address.map(|n| n.to_string()),
            a.gateway.map(|g| g.to_string()),
            "4",
            "0.0.0.0/0",
        ),
        (
            a.address6.map(|n| n.to_string()),
            a.gateway6.map(|g| g.to_string()),
            "6",
            "::/0",
        ),
    ];
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for (address, gateway, version, default) in families {
        let (Some(address), Some(gateway)) = (address, gateway) else {
            continue;
        };
        let mut ip = json!({ "address": address, "gateway": gateway, "interface": 1 });
        // Results before 1.0 name the IP version.
        if request.cni_version.starts_with("0.") {
            ip["version"] = json!(version);
        }
        ips.push(ip);
        // Only the interface that owns the namespace's default routes lists them.
        if a.default_route {
            routes.push(json!({ "dst": default, "gw": gateway }));
        }
    }
    json!({
        "cniVersion": request.cni_version,
        "interfaces": [
            { "name": a.host_veth },
            { "name": a.ifname, "mac": a.mac, "sandbox": request.netns },
        ],
        "ips": ips,
        "routes": routes,
        "dns": { "nameservers": a.nameservers.iter().map(ToString::to_string).collect::<Vec<_>>() },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lists_what_is_supported() {
        let v: Value = serde_json::from_str(&version(r#"{"cniVersion":"0.4.0"}"#)).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        let v: Value = serde_json::from_str(&version("")).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
    }

    #[test]
    fn errors_have_the_spec_fields() {
        let e = CniError::new(code::TRY_AGAIN_LATER, "agent down", "connect refused");
        let v: Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(v["code"], 11);
        assert_eq!(v["msg"], "agent down");
        assert_eq!(v["details"], "connect refused");
        assert_eq!(v["cniVersion"], "1.0.0");
    }
}
