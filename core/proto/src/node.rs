//! The node API's messages and service (`node.proto`), generated: what a client asks of one
//! hosted node. The host serves it; clients (the `flotilla node` CLI, the bindings) call it.

#![allow(clippy::all, clippy::pedantic)]

tonic::include_proto!("flotilla.node.v1");

/// The encoded descriptors of `node.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("node_descriptor");
