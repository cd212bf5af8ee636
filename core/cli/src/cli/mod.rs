//! The `flotilla` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod api;
pub mod demo;
pub mod host;
pub mod node;
pub mod regtest;
pub mod signer;
pub mod signer_run;
pub mod token;

/// Result of one CLI command; errors are printed, never panicked.
pub type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Host many Lightning nodes; keys stay with the customer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run and drive a local btcd regtest chain.
    #[command(subcommand)]
    Regtest(regtest::RegtestCommand),
    /// Run a regtest chain and a host of N nodes, open channels, make payments, summarise.
    Demo(demo::DemoArgs),
    /// Run a host whose nodes are driven by JSON lines on stdin.
    Host(host::HostArgs),
    /// Run the customer's signer (`--config FILE`), or signer tools.
    Signer(signer::SignerArgs),
    /// Drive one hosted node through the host's API with its token.
    Node(node::NodeArgs),
    /// Make, list and revoke the node API's tokens (with the operator's token).
    Token(token::TokenArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    run_command("warn", async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Host(args) => host::run(args).await,
            Command::Regtest(cmd) => regtest::run(cmd).await,
            Command::Signer(args) => signer::run(args).await,
            Command::Node(args) => node::run(args).await.map_err(Into::into),
            Command::Token(args) => token::run(args).await.map_err(Into::into),
        }
    })
}

/// Runs a binary's command: logs to stderr (`FLOTILLA_LOG`, else `default_log`), one tokio
/// runtime, errors printed, never panicked.
pub fn run_command<E: std::fmt::Display>(
    default_log: &str,
    command: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
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
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
