//! The `flotilla` command (host, signer, demo, regtest) and `flotilla-bench`: the one crate
//! that brings the host, the signer and the regtest harness together.

pub mod bench;
pub mod cli;
