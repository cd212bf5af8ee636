//! `flotilla host`: runs a host process whose nodes are driven by JSON lines on stdin (one
//! request per line, one answer per line on stdout). This is the operator's console and what
//! the end-to-end tests drive across processes, until the gRPC node API takes its place.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use clap::Args;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::CliResult;
use crate::chain::RpcConfig;
use crate::host::{Host, HostConfig, HostError, Node, PaymentOutcome};
use crate::signer::in_process::InProcessSigner;
use crate::signer::seed::read_seed_file;

#[derive(Args)]
pub struct HostArgs {
    /// The host's SQLite database.
    #[arg(long)]
    db: PathBuf,
    /// Chain RPC settings: a regtest.json written by `flotilla regtest up` (its `rpc` field).
    #[arg(long)]
    chain: PathBuf,
    /// A node to run, as ALIAS=SEED_FILE (32 raw bytes or 64 hex characters). Repeatable.
    #[arg(long = "node", value_name = "ALIAS=SEED_FILE")]
    nodes: Vec<String>,
}

#[derive(Deserialize)]
struct ChainFile {
    rpc: RpcConfig,
}

#[derive(Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum Request {
    Info,
    Address {
        node: String,
    },
    Balance {
        node: String,
    },
    Connect {
        node: String,
        peer: String,
        addr: SocketAddr,
    },
    Open {
        node: String,
        peer: String,
        sat: u64,
        #[serde(default)]
        push_msat: u64,
    },
    Channels {
        node: String,
    },
    Invoice {
        node: String,
        msat: u64,
    },
    Pay {
        node: String,
        invoice: String,
    },
    Close {
        node: String,
        channel_id: String,
        peer: String,
    },
    ForceClose {
        node: String,
        channel_id: String,
        peer: String,
    },
    Payments {
        node: String,
    },
}

pub async fn run(args: HostArgs) -> CliResult {
    let chain: ChainFile = serde_json::from_slice(&std::fs::read(&args.chain)?)
        .map_err(|e| format!("{}: {e}", args.chain.display()))?;
    let host = Host::start(HostConfig::regtest(args.db, chain.rpc)).await?;
    let mut by_alias: HashMap<String, Arc<Node>> = HashMap::new();
    for spec in &args.nodes {
        let (alias, file) = spec
            .split_once('=')
            .ok_or_else(|| format!("--node {spec}: expected ALIAS=SEED_FILE"))?;
        let seed = read_seed_file(std::path::Path::new(file))?;
        let signer = InProcessSigner::from_seed(&seed, bitcoin::Network::Regtest)?;
        by_alias.insert(
            alias.to_string(),
            host.add_node(alias, signer.link()).await?,
        );
    }
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("{}\n", json!({"ok": info(&by_alias)})).as_bytes())
        .await?;
    stdout.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(request) => match handle(&by_alias, request).await {
                Ok(v) => json!({"ok": v}),
                Err(e) => json!({"error": e.to_string()}),
            },
            Err(e) => json!({"error": format!("bad request: {e}")}),
        };
        stdout.write_all(format!("{answer}\n").as_bytes()).await?;
        stdout.flush().await?;
    }
    host.shutdown().await;
    Ok(())
}

fn info(nodes: &HashMap<String, Arc<Node>>) -> Value {
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|(alias, n)| json!({"alias": alias, "node_id": n.id.to_string(), "addr": n.listen_addr().to_string()}))
        .collect();
    json!({"nodes": nodes})
}

fn pubkey(s: &str) -> Result<PublicKey, HostError> {
    s.parse()
        .map_err(|_| HostError::InvalidInput(format!("not a node id: {s}")))
}

fn channel_id(s: &str) -> Result<lightning::ln::types::ChannelId, HostError> {
    let bytes = <[u8; 32] as bitcoin::hex::FromHex>::from_hex(s)
        .map_err(|_| HostError::InvalidInput(format!("not a channel id: {s}")))?;
    Ok(lightning::ln::types::ChannelId(bytes))
}

async fn handle(nodes: &HashMap<String, Arc<Node>>, request: Request) -> Result<Value, HostError> {
    let get = |alias: &str| {
        nodes
            .get(alias)
            .cloned()
            .ok_or_else(|| HostError::UnknownNode(alias.to_string()))
    };
    Ok(match request {
        Request::Info => info(nodes),
        Request::Address { node } => json!(get(&node)?.new_address()?.to_string()),
        Request::Balance { node } => {
            let n = get(&node)?;
            let channels_msat: u64 = n.channels().iter().map(|c| c.outbound_capacity_msat).sum();
            json!({"wallet": n.wallet_balance(), "channels_outbound_msat": channels_msat,
                   "claimable_on_chain_sat": n.claimable_on_chain_sat()})
        }
        Request::Connect { node, peer, addr } => {
            get(&node)?.connect(pubkey(&peer)?, addr).await?;
            json!(true)
        }
        Request::Open {
            node,
            peer,
            sat,
            push_msat,
        } => {
            json!(get(&node)?
                .open_channel(pubkey(&peer)?, sat, push_msat)?
                .to_string())
        }
        Request::Channels { node } => {
            let chans: Vec<Value> = get(&node)?
                .channels()
                .iter()
                .map(|c| {
                    json!({
                        "channel_id": c.channel_id.to_string(),
                        "peer": c.counterparty.node_id.to_string(),
                        "capacity_sat": c.channel_value_satoshis,
                        "outbound_msat": c.outbound_capacity_msat,
                        "usable": c.is_usable,
                        "ready": c.is_channel_ready,
                        "funded": c.funding_txo.is_some(),
                    })
                })
                .collect();
            json!(chans)
        }
        Request::Invoice { node, msat } => json!(get(&node)?
            .create_invoice(msat, "flotilla", 3600)?
            .to_string()),
        Request::Pay { node, invoice } => match get(&node)?
            .pay_invoice(&invoice, Duration::from_secs(60))
            .await?
        {
            PaymentOutcome::Succeeded { preimage, fee_msat } => {
                json!({"preimage": bitcoin::hex::DisplayHex::to_lower_hex_string(&preimage[..]), "fee_msat": fee_msat})
            }
            PaymentOutcome::Failed { reason } => return Err(HostError::PaymentFailed(reason)),
        },
        Request::Close {
            node,
            channel_id: id,
            peer,
        } => {
            get(&node)?.close_channel(&channel_id(&id)?, &pubkey(&peer)?)?;
            json!(true)
        }
        Request::ForceClose {
            node,
            channel_id: id,
            peer,
        } => {
            get(&node)?.force_close_channel(&channel_id(&id)?, &pubkey(&peer)?)?;
            json!(true)
        }
        Request::Payments { node } => {
            let n = get(&node)?;
            json!(n.store().payments(&n.id.to_string())?)
        }
    })
}
