//! `flotilla signer ...` (placeholder, to be replaced).

use clap::Subcommand;

use super::CliResult;

#[derive(Subcommand)]
pub enum SignerCommand {
    /// Placeholder.
    NodeId,
}

pub async fn run(_cmd: SignerCommand) -> CliResult {
    Err("not implemented yet".into())
}
