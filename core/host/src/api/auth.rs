//! Who is calling: the bearer token in a request's `authorization` metadata, checked against
//! the host's tokens on every call (so a revocation takes effect at the next call).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::secp256k1::PublicKey;
use tonic::{Request, Status};

use super::token::{Grant, Scope};
use super::tokens::{AuthError, Tokens};
use crate::host::Host;
use crate::node::Node;

/// Checks tokens and finds the node a node token is bound to.
#[derive(Clone)]
pub(super) struct Gate {
    pub(super) tokens: Tokens,
    pub(super) host: Arc<Host>,
}

impl Gate {
    /// What the request's token grants: UNAUTHENTICATED when there is none, or it is malformed,
    /// unknown, wrong, revoked or expired.
    pub(super) fn grant<T>(&self, request: &Request<T>) -> Result<Grant, Status> {
        self.check(bearer(request)?)
    }

    /// What the token `presented` grants now; see [`Gate::grant`].
    pub(super) fn check(&self, presented: &str) -> Result<Grant, Status> {
        self.tokens
            .authenticate(presented, unix_now())
            .map_err(|e| match e {
                AuthError::Store(e) => {
                    tracing::error!(error = %e, "token check failed in the store");
                    Status::internal("token check failed")
                }
                other => Status::unauthenticated(other.to_string()),
            })
    }

    /// The running node the request's token is bound to, if the token carries `scope`:
    /// PERMISSION_DENIED without it (or for an operator token), UNAVAILABLE if the node is
    /// not running here.
    pub(super) fn node<T>(&self, request: &Request<T>, scope: Scope) -> Result<Arc<Node>, Status> {
        let (node_id, scopes) = match self.grant(request)? {
            Grant::Node { node_id, scopes } => (node_id, scopes),
            Grant::Operator => {
                return Err(Status::permission_denied(
                    "an operator token manages the host and drives no node",
                ))
            }
        };
        if !scopes.contains(scope) {
            return Err(Status::permission_denied(format!(
                "this token lacks scope {} (it has {scopes})",
                scope.name()
            )));
        }
        let id: PublicKey = node_id
            .parse()
            .map_err(|_| Status::internal("the token's node id is unreadable"))?;
        self.host
            .node(&id)
            .map_err(|_| Status::unavailable(format!("node {node_id} is not running on this host")))
    }
}

/// The token of `authorization: Bearer <token>`.
pub(super) fn bearer<T>(request: &Request<T>) -> Result<&str, Status> {
    let value = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("no token: send authorization: Bearer <token>"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| Status::unauthenticated("authorization must be: Bearer <token>"))
}

/// Seconds since the Unix epoch, as tokens' times are kept.
pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
