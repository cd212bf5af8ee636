//! The signer protocol's values on the wire: [`Request`](crate::Request),
//! [`Response`](crate::Response), [`SignerError`](crate::SignerError) and
//! [`Handover`](crate::Handover) to and from the protobuf messages of `signer.proto`, split by
//! direction: requests (host to signer), responses (signer to host), the handover (signer to
//! host, once per attach).
//!
//! LDK structures travel in LDK's own serialization, bitcoin values in consensus encoding, so
//! neither side re-implements their layout. Everything read from the wire is checked here: a
//! value that does not decode becomes [`SignerError::Malformed`](crate::SignerError::Malformed),
//! never a panic.

mod fields;
mod handover;
mod requests;
mod responses;
#[cfg(test)]
mod tests;

/// The generated protobuf messages and the gRPC service.
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("flotilla.signer.v1");
}

pub use handover::{decode_handover, encode_handover};
pub use requests::{decode_request, encode_holder, encode_request, RequestDecoder};
pub use responses::{decode_response, encode_response};
