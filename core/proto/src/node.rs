//! The node API's messages and service (`node.proto`), generated: what a client asks of one
//! hosted node. The host serves it; clients (the `flotilla node` CLI, the bindings) call it.

#![allow(clippy::all, clippy::pedantic)]

tonic::include_proto!("flotilla.node.v1");
