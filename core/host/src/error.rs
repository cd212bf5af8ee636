//! Errors of the host and its nodes.

use std::net::SocketAddr;

/// Why a host or node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Chain(#[from] crate::chain::ChainError),
    #[error(transparent)]
    Wallet(#[from] crate::wallet::WalletError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
    #[error("the chain observer has no tip yet")]
    NoChainTip,
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("unknown node {0}")]
    UnknownNode(String),
    #[error("node {0} is already running on this host")]
    AlreadyRunning(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Nothing of this node by that id (an invoice, a payment, a channel).
    #[error("not found: {0}")]
    NotFound(String),
    #[error("cannot connect to peer {peer} at {addr}")]
    PeerUnreachable { peer: String, addr: String },
    #[error("lightning: {0}")]
    Lightning(String),
    #[error("payment failed: {0}")]
    PaymentFailed(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error(transparent)]
    Keys(#[from] crate::signer_client::keys_proxy::KeysError),
    #[error(transparent)]
    Signer(#[from] flotilla_proto::SignerError),
    #[error("node {0}'s signer has never attached, so the node cannot be built yet")]
    SignerNeverAttached(String),
    #[error("the signer handed over node id {got}, but this node is {expected}")]
    SignerMismatch { expected: String, got: String },
    #[error(
        "node {node} is stopped: {reason}; it resumes from its last save when the host restarts"
    )]
    Halted { node: String, reason: String },
}

impl From<lightning::io::Error> for HostError {
    fn from(e: lightning::io::Error) -> Self {
        HostError::Io(std::io::Error::other(e.to_string()))
    }
}

impl From<lightning::util::errors::APIError> for HostError {
    fn from(e: lightning::util::errors::APIError) -> Self {
        HostError::Lightning(format!("{e:?}"))
    }
}
