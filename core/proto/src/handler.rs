//! The signer side of either transport: what answers one node's requests.

use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::secp256k1::PublicKey;

use crate::{Handover, Request, Response, SignerError};

/// Answers requests for one node. The signer implements it; the host calls it directly only for
/// a signer in its own process (tests, the benchmark's baseline), and the signer's dial loop
/// calls it for each request the hub forwards.
pub trait Handler: Send + Sync {
    fn node_id(&self) -> PublicKey;
    /// Public data and the symmetric keys the host needs before any request (sent once per attach).
    fn handover(&self) -> Handover;
    /// Signs [`challenge_digest`](crate::challenge_digest) with the node key: proves the signer holds it.
    fn sign_challenge(&self, challenge: &[u8; 32]) -> Signature;
    /// Answers one request. Requests of one channel arrive in the order the host sent them.
    fn handle(&self, request: Request) -> Result<Response, SignerError>;
}
