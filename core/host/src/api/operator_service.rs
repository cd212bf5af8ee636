//! The operator API's calls: nodes added and removed at run time, tokens made, listed and
//! revoked. Every call needs the operator's token; none touches a node's money.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bitcoin::secp256k1::PublicKey;
use flotilla_proto::operator as pb;
use flotilla_proto::operator::operator_server::Operator;
use tonic::{Request, Response, Status};

use super::auth::{unix_now, Gate};
use super::messages;
use super::token::{Grant, Scopes};
use super::tokens::AuthError;
use crate::error::HostError;
use crate::signer_client::hub::SignerHub;
use crate::signer_client::link::SignerLink;
use crate::store::TokenRow;

/// Longest alias accepted (BOLT 7 allows 32 bytes on the wire; ours is the operator's label).
const MAX_ALIAS_BYTES: usize = 64;

type Answer<T> = Result<Response<T>, Status>;

pub(super) struct OperatorService {
    pub(super) gate: Gate,
    /// Where nodes added at run time find their signers; without one, AddNode is refused.
    pub(super) hub: Option<Arc<SignerHub>>,
    /// Nodes added but not running yet, and those whose start failed (with why).
    pub(super) starting: Arc<Mutex<HashMap<PublicKey, Starting>>>,
}

#[derive(Clone)]
pub(super) struct Starting {
    alias: String,
    error: Option<String>,
}

impl OperatorService {
    fn operator<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match self.gate.grant(request)? {
            Grant::Operator => Ok(()),
            Grant::Node { .. } => Err(Status::permission_denied(
                "a node token drives its node; the operator API needs the operator's token",
            )),
        }
    }

    fn starting(&self) -> std::sync::MutexGuard<'_, HashMap<PublicKey, Starting>> {
        self.starting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn token_info(row: TokenRow) -> pb::TokenInfo {
    pb::TokenInfo {
        id: row.id,
        node_id: row.node_id.unwrap_or_default(),
        scopes: row.scopes,
        label: row.label.unwrap_or_default(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
    }
}

fn store_failed(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "operator call failed in the store");
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl Operator for OperatorService {
    async fn add_node(&self, request: Request<pb::AddNodeRequest>) -> Answer<pb::NodeSummary> {
        self.operator(&request)?;
        let req = request.into_inner();
        let id = messages::node_id("node_id", &req.node_id)?;
        let alias = req.alias.trim().to_owned();
        if alias.is_empty() || alias.len() > MAX_ALIAS_BYTES {
            return Err(Status::invalid_argument(format!(
                "alias: 1 to {MAX_ALIAS_BYTES} bytes"
            )));
        }
        let hub = self.hub.clone().ok_or_else(|| {
            Status::failed_precondition("this host takes no remote signers, so adds no nodes")
        })?;
        let host = self.gate.host.clone();
        if host.node(&id).is_ok() {
            return Err(Status::already_exists(format!("node {id} is running")));
        }
        {
            let mut starting = self.starting();
            if starting.get(&id).is_some_and(|s| s.error.is_none()) {
                return Err(Status::already_exists(format!("node {id} is starting")));
            }
            starting.insert(
                id,
                Starting {
                    alias: alias.clone(),
                    error: None,
                },
            );
        }
        // The node starts once its signer attaches (bounded by the host's signer wait); the
        // call answers now.
        let link = SignerLink::new(id, hub.register(id));
        let starting = self.starting.clone();
        let start_alias = alias.clone();
        tokio::spawn(async move {
            let started = host.add_node(&start_alias, link).await;
            let mut starting = starting.lock().unwrap_or_else(|p| p.into_inner());
            match started {
                Ok(_) => {
                    starting.remove(&id);
                }
                Err(e) => {
                    tracing::warn!(node = %id, error = %e, "node added at run time did not start");
                    hub.unregister(&id);
                    starting.insert(
                        id,
                        Starting {
                            alias: start_alias,
                            error: Some(e.to_string()),
                        },
                    );
                }
            }
        });
        Ok(Response::new(pb::NodeSummary {
            node_id: id.to_string(),
            alias,
            status: "starting".into(),
            ..Default::default()
        }))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Answer<pb::RemoveNodeResponse> {
        self.operator(&request)?;
        let id = messages::node_id("node_id", &request.get_ref().node_id)?;
        let failed = self.starting().remove(&id).is_some();
        match self.gate.host.remove_node(&id).await {
            Ok(()) => {}
            Err(HostError::UnknownNode(_)) if failed => {}
            Err(HostError::UnknownNode(_)) => {
                return Err(Status::not_found(format!("node {id} is not running here")))
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(hub) = &self.hub {
            hub.unregister(&id);
        }
        Ok(Response::new(pb::RemoveNodeResponse {}))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Answer<pb::ListNodesResponse> {
        self.operator(&request)?;
        let host = &self.gate.host;
        let mut nodes: Vec<pb::NodeSummary> = host
            .nodes()
            .iter()
            .map(|node| {
                let halted = node.check_running().err().map(|e| e.to_string());
                pb::NodeSummary {
                    node_id: node.id.to_string(),
                    alias: node.alias.clone(),
                    status: if halted.is_some() {
                        "halted"
                    } else {
                        "running"
                    }
                    .into(),
                    listen_addr: node.listen_addr().to_string(),
                    signer_attached: node.link.is_attached(),
                    error: halted.unwrap_or_default(),
                }
            })
            .collect();
        for (id, s) in self.starting().iter() {
            nodes.push(pb::NodeSummary {
                node_id: id.to_string(),
                alias: s.alias.clone(),
                status: if s.error.is_some() {
                    "failed"
                } else {
                    "starting"
                }
                .into(),
                error: s.error.clone().unwrap_or_default(),
                ..Default::default()
            });
        }
        // Nodes the database knows that run neither here nor are starting: stopped.
        for row in host.store().nodes().map_err(store_failed)? {
            if nodes.iter().all(|n| n.node_id != row.node_id) {
                nodes.push(pb::NodeSummary {
                    node_id: row.node_id,
                    alias: row.alias,
                    status: "stopped".into(),
                    listen_addr: row.listen_addr.unwrap_or_default(),
                    ..Default::default()
                });
            }
        }
        nodes.sort_by(|a, b| a.alias.cmp(&b.alias).then(a.node_id.cmp(&b.node_id)));
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Answer<pb::CreateTokenResponse> {
        self.operator(&request)?;
        let req = request.into_inner();
        let node_id = match req.node_id.trim() {
            "" => None,
            id => {
                let id = messages::node_id("node_id", id)?.to_string();
                if self
                    .gate
                    .host
                    .store()
                    .node(&id)
                    .map_err(store_failed)?
                    .is_none()
                {
                    return Err(Status::not_found(format!(
                        "node_id: no node {id} on this host"
                    )));
                }
                Some(id)
            }
        };
        let scopes: Scopes = req
            .scopes
            .parse()
            .map_err(|e| Status::invalid_argument(format!("scopes: {e}")))?;
        let grant = Grant::new(node_id, scopes)
            .map_err(|e| Status::invalid_argument(format!("scopes: {e}")))?;
        let now = unix_now();
        let expires_at = req
            .expires_in_secs
            .map(|secs| match i64::try_from(secs) {
                Ok(secs) if secs > 0 => Ok(now.saturating_add(secs)),
                _ => Err(Status::invalid_argument(
                    "expires_in_secs: must be above zero",
                )),
            })
            .transpose()?;
        let label = Some(req.label.trim().to_owned()).filter(|l| !l.is_empty());
        let (token, row) = self
            .gate
            .tokens
            .create(&grant, label, expires_at, now)
            .map_err(|e| match e {
                AuthError::Store(e) => store_failed(e),
                other => Status::invalid_argument(other.to_string()),
            })?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: token.to_string(),
            info: Some(token_info(row)),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Answer<pb::ListTokensResponse> {
        self.operator(&request)?;
        let node_id = match request.get_ref().node_id.trim() {
            "" => None,
            id => Some(messages::node_id("node_id", id)?.to_string()),
        };
        let tokens = self
            .gate
            .tokens
            .list(node_id.as_deref())
            .map_err(store_failed)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.into_iter().map(token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Answer<pb::RevokeTokenResponse> {
        self.operator(&request)?;
        let id = request.get_ref().id.trim().to_owned();
        if !self
            .gate
            .tokens
            .revoke(&id, unix_now())
            .map_err(store_failed)?
        {
            return Err(Status::not_found(format!("id: no live token {id}")));
        }
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }
}
