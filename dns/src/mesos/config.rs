//! Mesos-DNS's `config.json`, read the way Mesos-DNS reads it: the same keys (matched without
//! regard to case, as Go's JSON decoder does), the same defaults. Unknown keys are reported as
//! warnings, not errors, so a file written for any Mesos-DNS version loads; a known key with a
//! bad value is refused, naming the key and what is expected.
//!
//! With `zk`, the masters are found through ZooKeeper ([`super::detect`]) and `masters`, if
//! listed, are the fallback until ZooKeeper names any.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::state::IpSource;

/// A validated Mesos-DNS configuration, with Mesos-DNS's field names for `/v1/config`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MesosDnsConfig {
    pub refresh_seconds: u64,
    pub port: u16,
    /// Upstream query timeout, seconds.
    pub timeout: u64,
    pub state_timeout_seconds: u64,
    #[serde(rename = "HttpPort")]
    pub http_port: u16,
    #[serde(rename = "TTL")]
    pub ttl: u32,
    #[serde(rename = "SOARefresh")]
    pub soa_refresh: u32,
    #[serde(rename = "SOARetry")]
    pub soa_retry: u32,
    #[serde(rename = "SOAExpire")]
    pub soa_expire: u32,
    #[serde(rename = "SOAMinttl")]
    pub soa_minttl: u32,
    #[serde(rename = "SOAMname")]
    pub soa_mname: String,
    #[serde(rename = "SOARname")]
    pub soa_rname: String,
    /// `IP:PORT` of each master, in order.
    pub masters: Vec<String>,
    pub resolvers: Vec<String>,
    #[serde(rename = "IPSources")]
    pub ip_sources: Vec<IpSource>,
    pub zk: String,
    pub domain: String,
    pub listener: IpAddr,
    #[serde(rename = "HTTPListener")]
    pub http_listener: IpAddr,
    pub recurse_on: bool,
    #[serde(rename = "DnsOn")]
    pub dns_on: bool,
    #[serde(rename = "HttpOn")]
    pub http_on: bool,
    pub external_on: bool,
    #[serde(rename = "EnforceRFC952")]
    pub enforce_rfc952: bool,
    pub enumeration_on: bool,
    pub set_truncate_bit: bool,
    #[serde(rename = "SRVRecordDefaultWeight")]
    pub srv_record_default_weight: u16,
    /// Per-zone forwarders: zone → resolvers.
    pub zone_resolvers: std::collections::BTreeMap<String, Vec<String>>,
    /// Seconds to wait for ZooKeeper to name a leader at start (0: forever).
    pub zk_detection_timeout: u64,
    /// Read the masters' state over HTTPS.
    #[serde(rename = "MesosHTTPSOn")]
    pub mesos_https_on: bool,
    /// PEM file of the CA(s) that sign the masters' certificates.
    #[serde(rename = "CACertFile")]
    pub ca_cert_file: String,
    /// PEM client certificate and key presented to the masters.
    pub cert_file: String,
    pub key_file: String,
    pub mesos_credentials: Credentials,
    /// DC/OS service-account file (`uid`, `private_key`, `login_endpoint`).
    #[serde(rename = "IAMConfigFile")]
    pub iam_config_file: String,
    pub mesos_authentication: MesosAuthentication,
    /// Where it was read from.
    pub file: PathBuf,
}

/// `MesosCredentials`: HTTP basic credentials for the masters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Credentials {
    pub principal: String,
    pub secret: String,
}

/// `MesosAuthentication`: how requests to the masters authenticate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum MesosAuthentication {
    /// `""`: none.
    #[default]
    #[serde(rename = "")]
    None,
    /// `"basic"`: HTTP basic with `MesosCredentials`.
    #[serde(rename = "basic")]
    Basic,
    /// `"iam"`: a DC/OS service-account login with `IAMConfigFile`, then its token.
    #[serde(rename = "iam")]
    Iam,
}

impl Default for MesosDnsConfig {
    fn default() -> Self {
        Self {
            refresh_seconds: 60,
            port: 53,
            timeout: 5,
            state_timeout_seconds: 300,
            http_port: 8123,
            ttl: 60,
            soa_refresh: 60,
            soa_retry: 600,
            soa_expire: 86400,
            soa_minttl: 60,
            soa_mname: "ns1.mesos".into(),
            soa_rname: "root.ns1.mesos".into(),
            masters: Vec::new(),
            resolvers: vec!["8.8.8.8".into()],
            ip_sources: vec![IpSource::Netinfo, IpSource::Mesos, IpSource::Host],
            zk: String::new(),
            domain: "mesos".into(),
            listener: IpAddr::from([0, 0, 0, 0]),
            http_listener: IpAddr::from([0, 0, 0, 0]),
            recurse_on: true,
            dns_on: true,
            http_on: true,
            external_on: true,
            enforce_rfc952: false,
            enumeration_on: true,
            set_truncate_bit: true,
            srv_record_default_weight: 1,
            zone_resolvers: Default::default(),
            zk_detection_timeout: 30,
            mesos_https_on: false,
            ca_cert_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            mesos_credentials: Credentials::default(),
            iam_config_file: String::new(),
            mesos_authentication: MesosAuthentication::None,
            file: PathBuf::new(),
        }
    }
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "Mesos-DNS config {path}: cannot read it ({source}); pass an existing file to --mesos-dns-config"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Mesos-DNS config {path}: not valid JSON ({source})")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("Mesos-DNS config {path}: key `{key}`: {value} is not valid: expected {expected}")]
    Invalid {
        path: PathBuf,
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("Mesos-DNS config {path}: {problem}")]
    Unusable { path: PathBuf, problem: String },
}

/// The configuration and the warnings reading it produced (unknown or ignored keys).
pub type Loaded = (MesosDnsConfig, Vec<String>);

impl MesosDnsConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates the JSON `text`; `path` names it in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|source| ConfigError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let Value::Object(object) = value else {
            return Err(ConfigError::Unusable {
                path: path.to_path_buf(),
                problem: "the top level must be a JSON object".into(),
            });
        };
        let mut c = MesosDnsConfig {
            file: path.to_path_buf(),
            ..Self::default()
        };
        let mut warnings = Vec::new();
        let invalid = |key: &str, value: &Value, expected: &'static str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_owned(),
            value: value.to_string(),
            expected,
        };
        for (key, value) in &object {
            let k = key.to_ascii_lowercase();
            let number = |max: u64, expected| {
                value
                    .as_u64()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| invalid(key, value, expected))
            };
            let positive = |max: u64, expected| {
                number(max, expected).and_then(|n| {
                    if n == 0 {
                        Err(invalid(key, value, expected))
                    } else {
                        Ok(n)
                    }
                })
            };
            let flag = || {
                value
                    .as_bool()
                    .ok_or_else(|| invalid(key, value, "true or false"))
            };
            let text = || {
                value
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(key, value, "a string"))
            };
            let list = || -> Result<Vec<String>, ConfigError> {
                value
                    .as_array()
                    .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
                    .ok_or_else(|| invalid(key, value, "a list of strings"))
            };
            let ip = || {
                value
                    .as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .ok_or_else(|| invalid(key, value, "an IP address such as 0.0.0.0"))
            };
            match k.as_str() {
                "refreshseconds" => {
                    c.refresh_seconds = positive(86_400, "a number of seconds from 1 to 86400")?
                }
                "port" => c.port = positive(65_535, "a port from 1 to 65535")? as u16,
                "timeout" => c.timeout = positive(3_600, "a number of seconds from 1 to 3600")?,
                "statetimeoutseconds" => {
                    c.state_timeout_seconds =
                        positive(86_400, "a number of seconds from 1 to 86400")?
                }
                "httpport" => c.http_port = positive(65_535, "a port from 1 to 65535")? as u16,
                "ttl" => c.ttl = number(i32::MAX as u64, "a TTL in seconds")? as u32,
                "soarefresh" => {
                    c.soa_refresh = number(u32::MAX as u64, "a number of seconds")? as u32
                }
                "soaretry" => c.soa_retry = number(u32::MAX as u64, "a number of seconds")? as u32,
                "soaexpire" => {
                    c.soa_expire = number(u32::MAX as u64, "a number of seconds")? as u32
                }
                "soaminttl" => {
                    c.soa_minttl = number(u32::MAX as u64, "a number of seconds")? as u32
                }
                "soamname" => c.soa_mname = text()?,
                "soarname" | "email" => c.soa_rname = text()?,
                "masters" => c.masters = list()?,
                "resolvers" => c.resolvers = list()?,
                "ipsources" => {
                    c.ip_sources = list()?
                        .iter()
                        .map(|s| {
                            s.parse::<IpSource>().map_err(|_| {
                                invalid(key, value, "a list of netinfo, docker, mesos and host")
                            })
                        })
                        .collect::<Result<_, _>>()?
                }
                "zk" => c.zk = text()?,
                "domain" => c.domain = text()?.trim_end_matches('.').to_ascii_lowercase(),
                "listener" => c.listener = ip()?,
                "httplistener" => c.http_listener = ip()?,
                "recurseon" => c.recurse_on = flag()?,
                "dnson" => c.dns_on = flag()?,
                "httpon" => c.http_on = flag()?,
                "externalon" => c.external_on = flag()?,
                "enforcerfc952" => c.enforce_rfc952 = flag()?,
                "enumerationon" => c.enumeration_on = flag()?,
                "settruncatebit" => c.set_truncate_bit = flag()?,
                "srvrecorddefaultweight" => {
                    c.srv_record_default_weight = number(65_535, "a weight from 0 to 65535")? as u16
                }
                "zoneresolvers" => {
                    let map = value
                        .as_object()
                        .ok_or_else(|| invalid(key, value, "an object of zone: [resolvers]"))?;
                    for (zone, resolvers) in map {
                        let resolvers = resolvers
                            .as_array()
                            .and_then(|a| {
                                a.iter()
                                    .map(|v| v.as_str().map(str::to_owned))
                                    .collect::<Option<Vec<_>>>()
                            })
                            .ok_or_else(|| invalid(key, value, "an object of zone: [resolvers]"))?;
                        c.zone_resolvers
                            .insert(zone.trim_end_matches('.').to_ascii_lowercase(), resolvers);
                    }
                }
                "zkdetectiontimeout" => {
                    c.zk_detection_timeout = number(86_400, "a number of seconds from 0 to 86400")?
                }
                "mesoshttpson" => c.mesos_https_on = flag()?,
                "cacertfile" => c.ca_cert_file = text()?,
                "certfile" => c.cert_file = text()?,
                "keyfile" => c.key_file = text()?,
                "iamconfigfile" => c.iam_config_file = text()?,
                "mesosauthentication" => {
                    c.mesos_authentication = match text()?.as_str() {
                        "" => MesosAuthentication::None,
                        "basic" => MesosAuthentication::Basic,
                        "iam" => MesosAuthentication::Iam,
                        _ => return Err(invalid(key, value, "\"\", \"basic\" or \"iam\"")),
                    }
                }
                "mesoscredentials" => {
                    let expected = "an object {\"Principal\": ..., \"Secret\": ...}";
                    let map = value
                        .as_object()
                        .ok_or_else(|| invalid(key, value, expected))?;
                    for (field, v) in map {
                        let v = v
                            .as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| invalid(key, value, expected))?;
                        match field.to_ascii_lowercase().as_str() {
                            "principal" => c.mesos_credentials.principal = v,
                            "secret" => c.mesos_credentials.secret = v,
                            _ => warnings.push(format!("unknown key `{key}.{field}` ignored")),
                        }
                    }
                }
                // Set by the server, not read: the serial is the time of each refresh, and
                // the file is where it was read from.
                "soaserial" | "file" => {
                    warnings.push(format!(
                        "key `{key}` is accepted but has no effect in dcnet"
                    ));
                }
                _ => warnings.push(format!("unknown key `{key}` ignored")),
            }
        }
        c.validate(&mut warnings)?;
        Ok((c, warnings))
    }

    fn validate(&mut self, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
        let unusable = |problem: String| ConfigError::Unusable {
            path: self.file.clone(),
            problem,
        };
        if self.masters.is_empty() && self.zk.is_empty() {
            return Err(unusable(
                "neither `zk` nor `masters` is set: give ZooKeeper's URL, e.g. \"zk\": \"zk://10.0.0.1:2181/mesos\", or the masters' IP:PORT, e.g. \"masters\": [\"10.0.0.1:5050\"]".into(),
            ));
        }
        if !self.zk.is_empty()
            && let Err(problem) = self.zk.parse::<super::detect::ZkUrl>()
        {
            return Err(unusable(format!("`zk`: {problem}")));
        }
        for master in &self.masters {
            if master.parse::<SocketAddr>().is_err() {
                return Err(ConfigError::Invalid {
                    path: self.file.clone(),
                    key: "masters".into(),
                    value: format!("{master:?}"),
                    expected: "IP:PORT entries such as 10.0.0.1:5050",
                });
            }
        }
        for resolver in self
            .resolvers
            .iter()
            .chain(self.zone_resolvers.values().flatten())
        {
            if parse_resolver(resolver).is_none() {
                return Err(ConfigError::Invalid {
                    path: self.file.clone(),
                    key: "resolvers".into(),
                    value: format!("{resolver:?}"),
                    expected: "IP or IP:PORT entries such as 8.8.8.8",
                });
            }
        }
        if self.domain.is_empty() || self.domain.split('.').any(|l| l.is_empty() || l.len() > 63) {
            return Err(ConfigError::Invalid {
                path: self.file.clone(),
                key: "domain".into(),
                value: format!("{:?}", self.domain),
                expected: "a domain such as mesos",
            });
        }
        if !(self.dns_on || self.http_on) {
            return Err(unusable(
                "both `DnsOn` and `HttpOn` are false: nothing would be served".into(),
            ));
        }
        // Mesos-DNS accepts `@` for the mailbox's first dot.
        self.soa_rname = self.soa_rname.replacen('@', ".", 1);
        self.validate_access(warnings)
    }

    /// The TLS and authentication keys, checked as Mesos-DNS checks them at start (the files
    /// themselves are read when the master client is made).
    fn validate_access(&self, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
        let unusable = |problem: &str| {
            Err(ConfigError::Unusable {
                path: self.file.clone(),
                problem: problem.into(),
            })
        };
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (false, true) => {
                return unusable("`CertFile` is set without `KeyFile`: give both, or neither");
            }
            (true, false) => {
                return unusable("`KeyFile` is set without `CertFile`: give both, or neither");
            }
            _ => {}
        }
        let tls_files = !self.ca_cert_file.is_empty() || !self.cert_file.is_empty();
        if tls_files && !self.mesos_https_on {
            warnings.push(
                "`CACertFile`/`CertFile` are set but `MesosHTTPSOn` is false: the masters are read over plain HTTP".into(),
            );
        }
        if self.mesos_https_on && self.ca_cert_file.is_empty() {
            warnings.push(
                "`MesosHTTPSOn` without `CACertFile`: the masters' certificates are checked against the system's CAs (Mesos-DNS would not check them at all); set `CACertFile` to your cluster's CA".into(),
            );
        }
        match self.mesos_authentication {
            MesosAuthentication::Basic if self.mesos_credentials == Credentials::default() => {
                return unusable(
                    "`MesosAuthentication` is \"basic\" but `MesosCredentials` is empty: give {\"Principal\": ..., \"Secret\": ...}",
                );
            }
            MesosAuthentication::Iam if self.iam_config_file.is_empty() => {
                return unusable(
                    "`MesosAuthentication` is \"iam\" but `IAMConfigFile` is not set: give the service account's JSON file",
                );
            }
            MesosAuthentication::None => {
                if !self.mesos_credentials.principal.is_empty() {
                    warnings.push("`MesosCredentials` is set but `MesosAuthentication` is not \"basic\": the credentials are not sent".into());
                }
                if !self.iam_config_file.is_empty() {
                    warnings.push("`IAMConfigFile` is set but `MesosAuthentication` is not \"iam\": no login is made".into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The configuration as `/v1/config` shows it: Mesos-DNS's keys, with the current SOA
    /// serial, and the credentials' secret masked (Mesos-DNS shows it; an API that anyone
    /// reaching the port may read should not).
    pub fn shown(&self, serial: u32) -> Value {
        let mut shown = self.clone();
        // Mesos-DNS qualifies both names at start.
        shown.soa_mname = format!("{}.", shown.soa_mname.trim_end_matches('.'));
        shown.soa_rname = format!("{}.", shown.soa_rname.trim_end_matches('.'));
        if !shown.mesos_credentials.secret.is_empty() {
            shown.mesos_credentials.secret = "******".into();
        }
        let mut value = serde_json::to_value(&shown).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("SOASerial".into(), Value::from(serial));
        }
        value
    }

    /// The upstream resolvers as socket addresses (port 53 unless given).
    pub fn resolver_addrs(&self) -> Vec<SocketAddr> {
        self.resolvers
            .iter()
            .filter_map(|r| parse_resolver(r))
            .collect()
    }

    /// The ZooKeeper URL the masters are found through, if `zk` is set (validated at load).
    pub fn zk_url(&self) -> Option<super::detect::ZkUrl> {
        self.zk.parse().ok()
    }

    /// The masters as socket addresses, in order.
    pub fn master_addrs(&self) -> Vec<SocketAddr> {
        self.masters.iter().filter_map(|m| m.parse().ok()).collect()
    }
}

/// `IP` or `IP:PORT` (or `[V6]:PORT`), port 53 by default.
pub fn parse_resolver(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    text.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded, ConfigError> {
        MesosDnsConfig::parse(text, Path::new("/etc/mesos-dns/config.json"))
    }

    #[test]
    fn defaults_and_case_insensitive_keys() {
        let (c, warnings) = parse(r#"{"masters": ["10.0.0.1:5050"], "RefreshSeconds": 5, "httpport": 8124, "IPSOURCES": ["host"]}"#).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.refresh_seconds, 5);
        assert_eq!(c.http_port, 8124);
        assert_eq!(c.ip_sources, vec![IpSource::Host]);
        assert_eq!(c.port, 53);
        assert_eq!(c.ttl, 60);
        assert_eq!(c.domain, "mesos");
        assert_eq!(c.soa_mname, "ns1.mesos");
        assert_eq!(c.listener, IpAddr::from([0, 0, 0, 0]));
        assert!(c.external_on && c.recurse_on && c.enumeration_on && c.set_truncate_bit);
        assert!(!c.enforce_rfc952);
        assert_eq!(c.resolver_addrs(), vec!["8.8.8.8:53".parse().unwrap()]);
    }

    #[test]
    fn unknown_and_inert_keys_are_warnings() {
        let (_, warnings) =
            parse(r#"{"masters": ["10.0.0.1:5050"], "colour": 1, "SOASerial": 30}"#).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("colour")));
    }

    #[test]
    fn bad_values_name_the_key() {
        // (config, words in the message)
        let cases: &[(&str, &[&str])] = &[
            (
                r#"{"masters": ["10.0.0.1:5050"], "port": 70000}"#,
                &["`port`", "70000"],
            ),
            (
                r#"{"masters": ["10.0.0.1:5050"], "refreshSeconds": 0}"#,
                &["`refreshSeconds`"],
            ),
            (r#"{"masters": ["10.0.0.1:5050"], "ttl": "60"}"#, &["`ttl`"]),
            (
                r#"{"masters": ["10.0.0.1:5050"], "IPSources": ["nfs"]}"#,
                &["`IPSources`", "netinfo"],
            ),
            (
                r#"{"masters": ["10.0.0.1:5050"], "listener": "everywhere"}"#,
                &["`listener`"],
            ),
            (r#"{"masters": ["master1"]}"#, &["`masters`", "IP:PORT"]),
            (
                r#"{"masters": ["10.0.0.1:5050"], "resolvers": ["dns.google"]}"#,
                &["`resolvers`"],
            ),
            (
                r#"{"masters": ["10.0.0.1:5050"], "dnson": false, "httpon": false}"#,
                &["nothing would be served"],
            ),
            (
                r#"{"zk": "zk://10.0.0.1/mesos"}"#,
                &["`zk`", "host and port"],
            ),
            (r#"{"zk": "10.0.0.1:2181"}"#, &["`zk`", "zk://"]),
            (r#"{}"#, &["neither `zk` nor `masters`"]),
            (
                r#"{"masters": ["10.0.0.1:5050"], "CertFile": "/c.pem"}"#,
                &["`CertFile`", "`KeyFile`"],
            ),
            (
                r#"{"masters": ["10.0.0.1:5050"], "KeyFile": "/k.pem"}"#,
                &["`KeyFile`", "`CertFile`"],
            ),
            (
                r#"{"masters": ["10.0.0.1:5050"], "MesosAuthentication": "basic"}"#,
                &["`MesosCredentials`"],
            ),
            (
                r#"{"masters": ["10.0.0.1:5050"], "MesosAuthentication": "iam"}"#,
                &["`IAMConfigFile`"],
            ),
            (
                r#"{"masters": ["10.0.0.1:5050"], "MesosAuthentication": "kerberos"}"#,
                &["`MesosAuthentication`", "basic"],
            ),
            (
                r#"{"masters": ["10.0.0.1:5050"], "MesosCredentials": "dns:secret"}"#,
                &["`MesosCredentials`", "Principal"],
            ),
            (r#"[1]"#, &["JSON object"]),
            (r#"{"masters": "#, &["not valid JSON"]),
        ];
        for (text, words) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains("/etc/mesos-dns/config.json"), "{err}");
            for word in *words {
                assert!(err.contains(word), "{text}: {err:?} lacks {word:?}");
            }
        }
    }

    #[test]
    fn zk_alone_or_beside_masters() {
        let (c, warnings) =
            parse(r#"{"zk": "zk://10.0.0.1:2181,10.0.0.2:2181/mesos", "zkDetectionTimeout": 5}"#)
                .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let url = c.zk_url().unwrap();
        assert_eq!(url.hosts, "10.0.0.1:2181,10.0.0.2:2181");
        assert_eq!(url.path, "/mesos");
        assert_eq!(c.zk_detection_timeout, 5);
        assert!(c.master_addrs().is_empty());
        let (c, _) = parse(r#"{"masters": ["10.0.0.1:5050"], "zk": "zk://x:2181/mesos"}"#).unwrap();
        assert_eq!(c.master_addrs(), vec!["10.0.0.1:5050".parse().unwrap()]);
        assert!(c.zk_url().is_some());
    }

    #[test]
    fn tls_and_credentials_are_read_case_insensitively() {
        let (c, warnings) = parse(
            r#"{"masters": ["10.0.0.1:5050"], "mesosHTTPSOn": true, "caCertFile": "/ca.pem",
                "certfile": "/c.pem", "KEYFILE": "/k.pem", "MesosAuthentication": "basic",
                "MesosCredentials": {"principal": "dns", "SECRET": "s"}}"#,
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(c.mesos_https_on);
        assert_eq!(
            (
                c.ca_cert_file.as_str(),
                c.cert_file.as_str(),
                c.key_file.as_str()
            ),
            ("/ca.pem", "/c.pem", "/k.pem")
        );
        assert_eq!(c.mesos_authentication, MesosAuthentication::Basic);
        assert_eq!(c.mesos_credentials.principal, "dns");
        assert_eq!(c.mesos_credentials.secret, "s");
        // HTTPS without a CA file: verified against public CAs, and said so.
        let (_, warnings) =
            parse(r#"{"masters": ["10.0.0.1:5050"], "MesosHTTPSOn": true}"#).unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("CACertFile")),
            "{warnings:?}"
        );
        // Credentials without the mechanism that sends them: a warning.
        let (_, warnings) = parse(
            r#"{"masters": ["10.0.0.1:5050"], "MesosCredentials": {"Principal": "p", "Secret": "s"}}"#,
        )
        .unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("not sent")),
            "{warnings:?}"
        );
    }

    #[test]
    fn shown_config_has_every_mesos_dns_key_and_no_secret() {
        let (c, _) = parse(
            r#"{"masters": ["10.0.0.1:5050"], "MesosAuthentication": "basic",
                "MesosCredentials": {"Principal": "dns", "Secret": "hunter2"}}"#,
        )
        .unwrap();
        let shown = c.shown(1234);
        // Every field of Mesos-DNS's Config that encoding/json writes, by its JSON name.
        for key in [
            "RefreshSeconds",
            "Port",
            "Timeout",
            "StateTimeoutSeconds",
            "ZkDetectionTimeout",
            "HttpPort",
            "TTL",
            "SRVRecordDefaultWeight",
            "SOASerial",
            "SOARefresh",
            "SOARetry",
            "SOAExpire",
            "SOAMinttl",
            "SOAMname",
            "SOARname",
            "Masters",
            "ZoneResolvers",
            "Resolvers",
            "IPSources",
            "Zk",
            "Domain",
            "File",
            "Listener",
            "HTTPListener",
            "RecurseOn",
            "DnsOn",
            "HttpOn",
            "ExternalOn",
            "EnforceRFC952",
            "SetTruncateBit",
            "EnumerationOn",
            "MesosHTTPSOn",
            "CACertFile",
            "CertFile",
            "KeyFile",
            "MesosCredentials",
            "IAMConfigFile",
            "MesosAuthentication",
        ] {
            assert!(shown.get(key).is_some(), "{key} missing in {shown}");
        }
        assert_eq!(shown["SOASerial"], 1234);
        assert_eq!(shown["SOAMname"], "ns1.mesos.");
        assert_eq!(shown["SOARname"], "root.ns1.mesos.");
        assert_eq!(shown["MesosAuthentication"], "basic");
        assert_eq!(shown["MesosCredentials"]["Principal"], "dns");
        assert!(!shown.to_string().contains("hunter2"), "{shown}");
        let (plain, _) = parse(r#"{"masters": ["10.0.0.1:5050"]}"#).unwrap();
        assert_eq!(plain.shown(0)["MesosAuthentication"], "");
        assert_eq!(plain.shown(0)["MesosCredentials"]["Secret"], "");
    }

    #[test]
    fn config_serialises_with_mesos_dns_names() {
        let (c, _) = parse(r#"{"masters": ["10.0.0.1:5050"]}"#).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        for key in [
            "RefreshSeconds",
            "HttpPort",
            "TTL",
            "SOAMname",
            "IPSources",
            "DnsOn",
            "EnforceRFC952",
            "Masters",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
    }
}
