//! `flotilla signer ...`: customer-side signer tools.

use std::path::{Path, PathBuf};

use bitcoin::hex::DisplayHex;
use bitcoin::secp256k1::rand::RngCore;
use bitcoin::secp256k1::PublicKey;
use clap::{Args, Subcommand};
use flotilla_host::signer_client::hub::SignerHub;
use flotilla_signer::seed::{self, SeedError};

use super::CliResult;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SignerArgs {
    /// Run a signer from this configuration file (JSON: host_url, ca_file, state_dir,
    /// seed_files, policy).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<SignerCommand>,
}

#[derive(Subcommand)]
pub enum SignerCommand {
    /// Print the node id (hex compressed public key) that a seed gives, as LDK derives it.
    NodeId {
        /// File holding the seed: 32 raw bytes, or 64 hex characters (a trailing newline is fine).
        #[arg(long, value_name = "FILE")]
        seed_file: PathBuf,
    },
}

pub async fn run(args: SignerArgs) -> CliResult {
    match (args.config, args.command) {
        (Some(config), _) => super::signer_run::run(&config).await,
        (None, Some(SignerCommand::NodeId { seed_file })) => {
            println!("{}", node_id_of_file(&seed_file)?);
            Ok(())
        }
        (None, None) => Err("flotilla signer: give --config FILE or a subcommand (node-id)".into()),
    }
}

/// The hex node id for the seed in `path`: what `signer node-id` prints.
fn node_id_of_file(path: &Path) -> Result<String, SeedError> {
    let seed = seed::read_seed_file(path)?;
    Ok(seed::node_public_key(&seed)?.to_string())
}

/// Plays the customer: `count` fresh seed files, a signer config, and one signer process
/// (`<this executable> signer --config`) dialing the hub for all of them. Returns the node ids
/// (public) the host registers, in seed order, and the process.
pub fn spawn_signer(
    dir: &Path,
    name: &str,
    count: usize,
    hub: &SignerHub,
    ca_file: &Path,
) -> Result<(Vec<PublicKey>, tokio::process::Child), Box<dyn std::error::Error + Send + Sync>> {
    let mut node_ids = Vec::with_capacity(count);
    let mut seed_files = Vec::with_capacity(count);
    for i in 0..count {
        let mut seed = [0u8; 32];
        bitcoin::secp256k1::rand::thread_rng().fill_bytes(&mut seed);
        let seed_file = dir.join(format!("{name}-{i}.seed"));
        std::fs::write(&seed_file, seed[..].to_lower_hex_string())?;
        node_ids.push(seed::node_public_key(&seed)?);
        seed.fill(0);
        seed_files.push(seed_file);
    }
    let config = dir.join(format!("{name}.json"));
    let body = serde_json::json!({
        "host_url": format!("https://{}", hub.local_addr()),
        "ca_file": ca_file,
        "state_dir": dir.join(format!("{name}-state")),
        "seed_files": seed_files,
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&body)?)?;
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("signer")
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    Ok((node_ids, child))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_same_id_as_the_library() {
        let dir = std::env::temp_dir().join(format!("flotilla-cli-signer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let raw = dir.join("raw");
        let hex = dir.join("hex");
        std::fs::write(&raw, [0u8; 32]).expect("write raw");
        std::fs::write(&hex, format!("{}\n", "00".repeat(32))).expect("write hex");
        let expected = "027f921585f2ac0c7c70e36110adecfd8fd14b8a99bfb3d000a283fcac358fce88";
        assert_eq!(node_id_of_file(&raw).expect("raw seed"), expected);
        assert_eq!(node_id_of_file(&hex).expect("hex seed"), expected);
        assert_eq!(seed::node_id_from_seed(&[0u8; 32]).expect("seed"), expected);
    }
}
