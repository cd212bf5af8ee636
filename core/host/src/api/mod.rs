//! The host's API over gRPC/TLS: the node API, through which clients drive hosted nodes (one
//! node per token), and the operator API (nodes and tokens, with the operator's token). Tokens
//! are issued and checked against the host's database; each call names the scope it needs.

mod auth;
mod follow;
mod idempotency;
mod messages;
mod node_service;
mod operator_service;
mod server;
mod status;
pub mod token;
pub mod tokens;

pub use server::{ApiError, ApiServer};
