//! Raft's messages between masters: JSON over HTTP(S) POSTs to `<master url>/raft/<rpc>`,
//! answered by [`crate::server`]. Each request carries the `Authorization` header the
//! caller's `credential` gives (masters prove they are masters), over TLS that trusts only
//! the cluster CA.

use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Master, NodeId, TypeConfig};

/// The `Authorization` value a master presents to its peers, asked for at every call (so a
/// credential can be renewed).
pub type Credential = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Makes connections to the other masters.
#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
    credential: Credential,
}

impl Network {
    /// With `tls` (trusting the cluster CA) or plain HTTP (`None`: insecure clusters, tests).
    pub fn new(
        tls: Option<rustls::ClientConfig>,
        credential: Credential,
    ) -> Result<Self, reqwest::Error> {
        let builder = reqwest::Client::builder().pool_max_idle_per_host(4);
        let client = match tls {
            Some(config) => builder.use_preconfigured_tls(config).build()?,
            None => builder.build()?,
        };
        Ok(Self { client, credential })
    }
}

impl Network {
    /// Asks master `node` to stand for election now (`POST /raft/elect`).
    pub async fn elect(&self, node: &Master) -> Result<(), String> {
        let mut call = self
            .client
            .post(format!("{}/raft/elect", node.url.trim_end_matches('/')))
            .timeout(std::time::Duration::from_secs(5));
        if let Some(credential) = (self.credential)() {
            call = call.header(reqwest::header::AUTHORIZATION, credential);
        }
        let response = call.send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("it answered {}", response.status()));
        }
        Ok(())
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Master) -> Connection {
        Connection {
            network: self.clone(),
            target,
            url: node.url.trim_end_matches('/').to_owned(),
        }
    }
}

/// The connection to one master.
pub struct Connection {
    network: Network,
    target: NodeId,
    url: String,
}

impl Connection {
    async fn post<Req, Resp, Err>(
        &self,
        rpc: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Master, Err>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        Err: std::error::Error + DeserializeOwned,
    {
        let mut call = self
            .network
            .client
            .post(format!("{}/raft/{rpc}", self.url))
            .timeout(option.hard_ttl())
            .json(request);
        if let Some(credential) = (self.network.credential)() {
            call = call.header(reqwest::header::AUTHORIZATION, credential);
        }
        let response = call.send().await.map_err(|e| {
            if e.is_connect() {
                // Not retried at once: the peer is down or unreachable.
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let e = std::io::Error::other(format!("{} answered {status}: {text}", self.url));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let answer: Result<Resp, Err> = response
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Master, RaftError<NodeId>>> {
        self.post("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Master, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.post("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Master, RaftError<NodeId>>> {
        self.post("vote", &rpc, &option).await
    }
}
