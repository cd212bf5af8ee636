//! The operator API's messages and service (`operator.proto`), generated: what the host's
//! operator asks of the host (nodes and tokens). The host serves it; `flotilla token` and
//! `flotilla nodes` call it.

#![allow(clippy::all, clippy::pedantic)]

tonic::include_proto!("flotilla.operator.v1");
