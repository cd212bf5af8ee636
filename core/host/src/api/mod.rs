//! The node API: a gRPC service over TLS through which clients drive hosted nodes, one node
//! per token. Tokens (scoped to one node, or the operator's) are issued and checked against
//! the host's database; each call names the scope it needs.

mod auth;
mod follow;
mod messages;
mod node_service;
mod server;
mod status;
pub mod token;
pub mod tokens;

pub use server::{ApiError, ApiServer};
