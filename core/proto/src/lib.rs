//! The protocols around a Flotilla host.
//!
//! The signer protocol: what a host asks of a node's signer and what the signer answers, as
//! Rust values ([`Request`], [`Response`], [`SignerError`], [`Handover`]) and on the wire
//! ([`wire`], gRPC over `signer.proto`). Both sides depend on this crate and on nothing of each
//! other.
//!
//! The host's API: what a client asks of one hosted node ([`node`], gRPC over `node.proto`) and
//! what the operator asks of the host ([`operator`], `operator.proto`).

mod challenge;
mod handler;
mod handover;
pub mod node;
pub mod operator;
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

/// The encoded descriptors of `node.proto` and `operator.proto`, for gRPC reflection.
pub const API_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("api_descriptor");
