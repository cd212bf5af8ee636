//! Signing: the one interface through which nodes reach key material.

pub mod carried;
pub mod channel_proxy;
pub mod config;
pub mod dial;
pub mod durable;
pub mod embedded;
pub mod hub;
pub mod in_process;
pub mod link;
pub mod node_proxy;
pub mod pending;
pub mod policy;
pub mod protocol;
pub mod retire;
pub mod seed;
pub mod service;
pub mod state;
pub mod state_db;
pub mod tls;
pub mod wallet_keys;
pub mod wire;
