//! `flotilla-bench`: measurements that settle design questions, on a real regtest chain.
//! One subcommand per question; each writes JSON a script can compare across runs.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod background;
pub mod fuzz;
pub(crate) mod measure;
pub mod payments;
pub mod record;
pub mod verdict;

/// Result of one bench command (the CLI's): errors are printed, never panicked.
pub type BenchResult = crate::cli::CliResult;

#[derive(Parser)]
#[command(
    name = "flotilla-bench",
    version,
    about = "Measure a Flotilla host on a regtest chain"
)]
struct Bench {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Per-node background processors versus the shared driver: idle CPU, memory, block delivery.
    Background(background::BackgroundArgs),
    /// One host of one mode and size (run by `background` in a fresh process per measurement).
    #[command(hide = true)]
    BackgroundRun(background::RunArgs),
    /// Fuzz the decoders of bytes from the hub, a signer and the chain node: panics per target.
    Fuzz(fuzz::FuzzArgs),
    /// Hosted-to-hosted payments per second and latency: remote signers versus in-process.
    Payments(payments::PaymentsArgs),
    /// The remote signer process `payments` starts (as `flotilla signer`).
    #[command(hide = true)]
    Signer(crate::cli::signer::SignerArgs),
}

pub fn main() -> ExitCode {
    let bench = Bench::parse();
    crate::cli::run_command("error", async {
        match bench.command {
            BenchCommand::Background(args) => background::run(args).await,
            BenchCommand::BackgroundRun(args) => background::run_one(args).await,
            BenchCommand::Fuzz(args) => fuzz::run(args).await,
            BenchCommand::Payments(args) => payments::run(args).await,
            BenchCommand::Signer(args) => crate::cli::signer::run(args).await,
        }
    })
}
