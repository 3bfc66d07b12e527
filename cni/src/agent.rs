//! The calls to the node's agent, and how its answers map to CNI error codes.

use std::time::Duration;

use dcnet_auth::client::ClientCredential;
use dcnet_overlay::api::{AttachRequest, AttachResponse, DetachRequest, GcRequest};
use serde::Serialize;

use crate::result::{CniError, code};

/// What the plugin needs from the agent.
pub trait Agent {
    fn attach(&self, req: &AttachRequest) -> Result<AttachResponse, CniError>;
    fn detach(&self, req: &DetachRequest) -> Result<(), CniError>;
    fn check(&self, req: &DetachRequest) -> Result<AttachResponse, CniError>;
    /// STATUS: whether an ADD to `network` can be served now.
    fn status(&self, network: &str) -> Result<(), CniError>;
    /// GC: detaches the plugin's attachments the runtime no longer lists.
    fn gc(&self, req: &GcRequest) -> Result<(), CniError>;
}

/// The agent's HTTP API at `base` (e.g. `http://127.0.0.1:62080`), called with `credential`.
pub struct HttpAgent {
    base: String,
    http: ureq::Agent,
    credential: Option<ClientCredential>,
}

impl HttpAgent {
    pub fn new(base: &str, credential: Option<ClientCredential>) -> Self {
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            credential,
        }
    }

    fn post(&self, path: &str, body: &impl Serialize) -> Result<String, CniError> {
        let text = serde_json::to_string(body).expect("requests serialise");
        self.call("POST", path, Some(text))
    }

    /// `GET` or `POST` (with a JSON body); the body of a 200 answer.
    fn call(&self, method: &str, path: &str, body: Option<String>) -> Result<String, CniError> {
        let url = format!("{}{path}", self.base);
        let sent = match body {
            Some(text) => {
                let mut request = self
                    .http
                    .post(&url)
                    .header("content-type", "application/json");
                if let Some(c) = &self.credential {
                    request = request.header("authorization", &c.header);
                }
                request.send(text)
            }
            None => {
                let mut request = self.http.get(&url);
                if let Some(c) = &self.credential {
                    request = request.header("authorization", &c.header);
                }
                request.call()
            }
        };
        let mut response = sent.map_err(|e| {
            CniError::new(
                code::TRY_AGAIN_LATER,
                format!("the dcnet agent at {} is not reachable", self.base),
                format!("{e}; is `dcnet agent` running with the overlay enabled?"),
            )
        })?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        if status == 200 {
            return Ok(body);
        }
        let json = serde_json::from_str::<serde_json::Value>(&body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|v| v.get(name)?.as_str().map(str::to_owned))
        };
        if status == 401 || status == 403 {
            let source = self.credential.as_ref().map_or_else(
                || "no credential was sent".to_owned(),
                |c| format!("credential from {}", c.source),
            );
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!(
                    "the dcnet agent refused the plugin: {}",
                    field("message").unwrap_or(body)
                ),
                format!(
                    "{method} {url}: HTTP {status} ({source}); name an admin credential file in the configuration's \"credentials\""
                ),
            ));
        }
        let message = field("error").unwrap_or(body);
        Err(CniError::new(
            status_code(status),
            message,
            format!("{method} {url}: HTTP {status}"),
        ))
    }
}

/// The CNI code for an agent's HTTP status.
pub fn status_code(status: u16) -> u32 {
    match status {
        400 => code::INVALID_NETWORK_CONFIG,
        404 => code::CONTAINER_UNKNOWN,
        409 => code::ADDRESSES_EXHAUSTED,
        503 => code::TRY_AGAIN_LATER,
        _ => code::IO_FAILURE,
    }
}

fn decode(body: &str) -> Result<AttachResponse, CniError> {
    serde_json::from_str(body).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            "the agent's answer is not understood",
            e.to_string(),
        )
    })
}

impl Agent for HttpAgent {
    fn attach(&self, req: &AttachRequest) -> Result<AttachResponse, CniError> {
        decode(&self.post("/v1/overlay/attach", req)?)
    }

    fn detach(&self, req: &DetachRequest) -> Result<(), CniError> {
        self.post("/v1/overlay/detach", req).map(drop)
    }

    fn check(&self, req: &DetachRequest) -> Result<AttachResponse, CniError> {
        decode(&self.post("/v1/overlay/check", req)?)
    }

    fn gc(&self, req: &GcRequest) -> Result<(), CniError> {
        self.post("/v1/overlay/gc", req).map(drop)
    }

    fn status(&self, network: &str) -> Result<(), CniError> {
        let unavailable =
            |msg: String, details: String| CniError::new(code::PLUGIN_NOT_AVAILABLE, msg, details);
        let body = self
            .call("GET", "/v1/overlay", None)
            .map_err(|e| unavailable(e.msg, e.details))?;
        let status: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
            unavailable(
                "the agent's overlay status is not understood".into(),
                e.to_string(),
            )
        })?;
        let Some(found) = status["networks"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == network))
        else {
            return Err(unavailable(
                format!(
                    "the dcnet agent at {} has no overlay network {network:?}",
                    self.base
                ),
                "configure it in the agent's [[overlay.networks]], or name another network".into(),
            ));
        };
        if found["lease"] != "held" {
            return Err(unavailable(
                format!("this node has no agreed subnet of network {network:?} yet"),
                format!(
                    "lease: {}; subnets are agreed through gossip within seconds of the agent's start",
                    found["lease"]
                ),
            ));
        }
        Ok(())
    }
}
