//! The protocols around a Flotilla host.
//!
//! The signer protocol: what a host asks of a node's signer and what the signer answers, as
//! Rust values ([`Request`], [`Response`], [`SignerError`], [`Handover`]) and on the wire
//! ([`wire`], gRPC over `signer.proto`). Both sides depend on this crate and on nothing of each
//! other.
//!
//! The node API ([`node`], gRPC over `node.proto`): what a client asks of one hosted node.

mod challenge;
mod handler;
mod handover;
pub mod node;
mod request;
mod response;
#[doc(hidden)]
pub mod samples;
pub mod wire;

pub use challenge::{challenge_digest, CHALLENGE_TAG};
pub use handler::Handler;
pub use handover::{ChannelKeySet, Handover};
pub use request::{ClosingParts, HolderCommitment, KeysId, Request, Revocation};
pub use response::{Response, SignerError};
