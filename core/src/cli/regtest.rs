//! `flotilla regtest ...` (placeholder, to be replaced).

use clap::Subcommand;

use super::CliResult;

#[derive(Subcommand)]
pub enum RegtestCommand {
    /// Placeholder.
    Up,
}

pub async fn run(_cmd: RegtestCommand) -> CliResult {
    Err("not implemented yet".into())
}
