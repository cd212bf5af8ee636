//! `flotilla-bench`: measurements that settle design questions, on a real regtest chain.
//! One subcommand per question; each writes JSON a script can compare across runs.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod background;
mod measure;

/// Result of one bench command; errors are printed, never panicked.
pub type BenchResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

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
}

pub fn main() -> ExitCode {
    let bench = Bench::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match bench.command {
            BenchCommand::Background(args) => background::run(args).await,
            BenchCommand::BackgroundRun(args) => background::run_one(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
