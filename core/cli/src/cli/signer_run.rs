//! `flotilla signer --config FILE`: the customer's signer process. It holds the seeds, dials the
//! host's SignerHub over TLS (no inbound port), proves each node key and answers that node's
//! requests under its own policy, reconnecting whenever the host goes away.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bitcoin::hex::FromHex;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Network, ScriptBuf};
use flotilla_proto::Handler;
use flotilla_signer::config::PolicyLimits;
use flotilla_signer::dial::{serve_with_stats, DialConfig, DialStats};
use flotilla_signer::durable::DurableHandler;
use flotilla_signer::policy::Policy;
use flotilla_signer::seed::read_seed_file;
use flotilla_signer::seed_signer::SeedSigner;
use flotilla_signer::state_db::SqliteStateStore;
use serde::Deserialize;
use tokio::sync::watch;

use super::CliResult;

/// The signer's configuration file (JSON). Relative paths are relative to the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerFile {
    /// The host's SignerHub, e.g. `https://127.0.0.1:7001`.
    pub host_url: String,
    /// PEM file of the CA that signed the hub's certificate.
    pub ca_file: PathBuf,
    #[serde(default = "regtest")]
    pub network: Network,
    /// Where the signer keeps its own channel state (one SQLite database for all its nodes).
    pub state_dir: PathBuf,
    /// One seed file per node this process signs for (32 raw bytes or 64 hex characters).
    pub seed_files: Vec<PathBuf>,
    #[serde(default)]
    pub policy: PolicyFile,
}

fn regtest() -> Network {
    Network::Regtest
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub max_payment_msat: Option<u64>,
    pub max_outgoing_msat_per_hour: Option<u64>,
    pub max_fee_sat: Option<u64>,
    /// Node ids allowed to open channels with these nodes (absent: any).
    pub allowed_peers: Option<Vec<PublicKey>>,
    /// Hex output scripts closes and sweeps may pay besides the signer's own wallet.
    #[serde(default)]
    pub allowed_scripts: Vec<String>,
}

impl PolicyFile {
    fn policy(&self) -> Result<Policy, String> {
        let limits = PolicyLimits {
            max_payment_msat: self.max_payment_msat,
            max_outgoing_msat_per_hour: self.max_outgoing_msat_per_hour,
            max_fee_sat: self.max_fee_sat,
        };
        limits.validate().map_err(|e| e.to_string())?;
        let mut policy = Policy::new(limits);
        policy.allowed_peers = self
            .allowed_peers
            .as_ref()
            .map(|peers| peers.iter().copied().collect::<HashSet<_>>());
        for hex in &self.allowed_scripts {
            let bytes =
                Vec::<u8>::from_hex(hex).map_err(|e| format!("allowed script {hex}: {e}"))?;
            policy.allowed_scripts.insert(ScriptBuf::from_bytes(bytes));
        }
        Ok(policy)
    }
}

/// Builds every node's signer from the configuration file.
pub fn load(config: &Path) -> Result<(DialConfig, Vec<Arc<SeedSigner>>), String> {
    let text = std::fs::read(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let file: SignerFile =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    let base = config.parent().unwrap_or(Path::new("."));
    let ca_path = base.join(&file.ca_file);
    let ca_pem = std::fs::read(&ca_path).map_err(|e| format!("{}: {e}", ca_path.display()))?;
    flotilla_signer::config::validate_host_url(&file.host_url).map_err(|e| e.to_string())?;
    let policy = file.policy.policy()?;
    let state_dir = base.join(&file.state_dir);
    std::fs::create_dir_all(&state_dir).map_err(|e| format!("{}: {e}", state_dir.display()))?;
    let mut signers = Vec::new();
    for seed_file in &file.seed_files {
        let seed_path = base.join(seed_file);
        let seed =
            read_seed_file(&seed_path).map_err(|e| format!("{}: {e}", seed_path.display()))?;
        let node_id = flotilla_signer::seed::node_public_key(&seed).map_err(|e| e.to_string())?;
        let state = SqliteStateStore::in_dir(&state_dir, &node_id).map_err(|e| e.to_string())?;
        let signer = SeedSigner::new(&seed, file.network, policy.clone(), Box::new(state))
            .map_err(|e| e.to_string())?;
        signers.push(Arc::new(signer));
    }
    if signers.is_empty() {
        return Err(format!("{}: no seed_files", config.display()));
    }
    let dial = DialConfig {
        host_url: file.host_url,
        ca_pem,
    };
    Ok((dial, signers))
}

/// Runs until SIGINT/SIGTERM, or until every node was given up (stale state: an error).
pub async fn run(config: &Path) -> CliResult {
    let (dial, signers) = load(config)?;
    for s in &signers {
        tracing::info!(node = %s.node_id(), "signing for node");
    }
    let handlers: Vec<Arc<dyn DurableHandler>> = signers
        .into_iter()
        .map(|s| s as Arc<dyn DurableHandler>)
        .collect();
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        super::wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let stats = Arc::new(DialStats::default());
    serve_with_stats(dial, handlers, stop, stats.clone()).await?;
    // A node given up for stale state ends the process with the reason, so whoever runs the
    // signer learns it must restore the newest state; a stop by signal is a success.
    if stats.stale() > 0 {
        return Err(format!(
            "stale signer state: the host refused {} node(s): {}",
            stats.stale(),
            stats.last_error().unwrap_or_default()
        )
        .into());
    }
    Ok(())
}
