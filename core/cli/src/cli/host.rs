//! `flotilla host --config FILE`: runs a host process whose nodes' signers dial in to its
//! SignerHub, driven by JSON lines on stdin (one request per line, one answer per line on
//! stdout). This is the operator's console and what the end-to-end tests drive across
//! processes, until the gRPC node API takes its place.
//!
//! Output: a first line `{"ok": {"hub": URL, "ca_file": PATH}}` once signers can dial in (with
//! `api` and `operator_token_file` when the config names `api_listen`), then
//! `{"ok": {"nodes": [...]}}` once every node is up (a new node waits for its signer).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use clap::Args;
use flotilla_host::api::token::Grant;
use flotilla_host::api::tokens::Tokens;
use flotilla_host::api::ApiServer;
use flotilla_host::chain::RpcConfig;
use flotilla_host::signer_client::hub::SignerHub;
use flotilla_host::signer_client::link::SignerLink;
use flotilla_host::signer_client::tls::{write_file, HubTls, CA_FILE};
use flotilla_host::store::Store;
use flotilla_host::{Host, HostConfig, HostError, Node, PaymentOutcome, DEFAULT_HOLD_CLTV_DELTA};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::CliResult;

/// Most events one `events` request answers; page on with `after`.
const EVENTS_PAGE: u32 = 500;

#[derive(Args)]
pub struct HostArgs {
    /// The host's configuration file (JSON: db, chain, hub_listen, tls_dir, nodes).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// The host's configuration file. Relative paths are relative to the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    /// The host's SQLite database.
    pub db: PathBuf,
    /// Chain RPC settings: a regtest.json written by `flotilla regtest up` (its `rpc` field).
    pub chain: PathBuf,
    /// Where the SignerHub listens, e.g. `127.0.0.1:7001`.
    pub hub_listen: SocketAddr,
    /// The hub's TLS CA and certificate (made here on first start; give signers `ca.pem`).
    pub tls_dir: PathBuf,
    /// The nodes this host runs: alias and the node id its signer must prove. Nodes added
    /// through the operator API are started again at each start too (until removed).
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    /// Where the node and operator API listens (gRPC/TLS, the hub's certificate), e.g.
    /// `127.0.0.1:7002`; none: no API.
    #[serde(default)]
    pub api_listen: Option<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub alias: String,
    pub node_id: PublicKey,
}

#[derive(Deserialize)]
struct ChainFile {
    rpc: RpcConfig,
}

/// Names the hub's certificate is valid for: signers dial it on loopback in tests and demos.
pub(crate) fn hub_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
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
    /// An invoice for a hash whose preimage the caller keeps: payments to it are held.
    HoldInvoice {
        node: String,
        msat: u64,
        payment_hash: String,
        #[serde(default = "default_hold_cltv")]
        cltv_expiry_delta: u16,
    },
    /// Takes a held payment.
    Settle {
        node: String,
        preimage: String,
    },
    /// Sends a held payment back (or refuses its invoice's payments).
    Cancel {
        node: String,
        payment_hash: String,
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
    /// The node's event log, oldest first, after the event id `after`.
    Events {
        node: String,
        #[serde(default)]
        after: i64,
    },
}

fn default_hold_cltv() -> u16 {
    DEFAULT_HOLD_CLTV_DELTA
}

pub async fn run(args: HostArgs) -> CliResult {
    let text =
        std::fs::read(&args.config).map_err(|e| format!("{}: {e}", args.config.display()))?;
    let file: HostFile =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", args.config.display()))?;
    let base = args.config.parent().unwrap_or(std::path::Path::new("."));
    let chain_path = base.join(&file.chain);
    let chain: ChainFile = serde_json::from_slice(&std::fs::read(&chain_path)?)
        .map_err(|e| format!("{}: {e}", chain_path.display()))?;
    let host = Host::start(HostConfig::regtest(base.join(&file.db), chain.rpc)).await?;
    let tls_dir = base.join(&file.tls_dir);
    let tls = HubTls::load_or_generate(&tls_dir, &hub_names())?;
    let hub = SignerHub::start(file.hub_listen, &tls).await?;

    let api = match file.api_listen {
        Some(listen) => {
            let api = ApiServer::start(listen, &tls, host.clone(), Some(hub.clone())).await?;
            let token_file = tls_dir.join(OPERATOR_TOKEN_FILE);
            bootstrap_operator(host.store(), &token_file)?;
            Some((api, token_file))
        }
        None => None,
    };

    let mut stdout = tokio::io::stdout();
    let mut hello = json!({"hub": format!("https://{}", hub.local_addr()),
                           "ca_file": tls_dir.join(CA_FILE).display().to_string()});
    if let Some((api, token_file)) = &api {
        hello["api"] = json!(format!("https://{}", api.local_addr()));
        hello["operator_token_file"] = json!(token_file.display().to_string());
    }
    let hello = json!({ "ok": hello });
    stdout.write_all(format!("{hello}\n").as_bytes()).await?;
    stdout.flush().await?;

    // Nodes start concurrently: each new one waits for its own signer's first attach.
    let mut starting = tokio::task::JoinSet::new();
    for (alias, node_id) in nodes_to_start(&file.nodes, host.store())? {
        let link = SignerLink::new(node_id, hub.register(node_id));
        let host = host.clone();
        starting.spawn(async move { (alias.clone(), host.add_node(&alias, link).await) });
    }
    // A node that cannot start (a corrupt row, a signer that never came) is reported and
    // left out; the others run.
    let mut by_alias: HashMap<String, Arc<Node>> = HashMap::new();
    let mut failed = Vec::new();
    while let Some(started) = starting.join_next().await {
        let (alias, node) = started?;
        match node {
            Ok(node) => {
                by_alias.insert(alias, node);
            }
            Err(e) => {
                tracing::error!(node = %alias, error = %e, "node did not start; the host runs without it");
                failed.push(json!({"alias": alias, "error": e.to_string()}));
            }
        }
    }
    let mut started = info(&by_alias);
    started["failed"] = json!(failed);
    stdout
        .write_all(format!("{}\n", json!({ "ok": started })).as_bytes())
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
    if let Some((api, _)) = &api {
        api.shutdown().await;
    }
    host.shutdown().await;
    hub.shutdown().await;
    Ok(())
}

/// The file beside the hub's certificates that holds the operator's first token.
const OPERATOR_TOKEN_FILE: &str = "operator.token";

/// At the first start with an API, makes the operator's token and writes it to `path`
/// (readable by the host's user alone). Nothing happens once the file exists, or while the
/// database holds a live operator token (its holder makes more with it).
fn bootstrap_operator(store: &Store, path: &Path) -> CliResult {
    if path.exists() {
        return Ok(());
    }
    let tokens = Tokens::new(store.clone());
    if tokens.list(None)?.iter().any(|t| t.revoked_at.is_none()) {
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (token, _) = tokens.create(&Grant::Operator, Some("bootstrap".into()), None, now)?;
    write_file(path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(())
}

/// The configured nodes, then those the database knows as running or halted (added through
/// the operator API, say), each once.
fn nodes_to_start(
    configured: &[NodeEntry],
    store: &Store,
) -> Result<Vec<(String, PublicKey)>, Box<dyn std::error::Error + Send + Sync>> {
    let mut nodes: Vec<(String, PublicKey)> = configured
        .iter()
        .map(|e| (e.alias.clone(), e.node_id))
        .collect();
    for row in store.nodes()? {
        if row.status == "stopped" {
            continue;
        }
        let Ok(id) = row.node_id.parse::<PublicKey>() else {
            tracing::warn!(
                node = row.node_id,
                "unreadable node id in the database; not started"
            );
            continue;
        };
        if nodes.iter().all(|(_, known)| *known != id) {
            nodes.push((row.alias, id));
        }
    }
    Ok(nodes)
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

/// 32 bytes in hex: a channel id, payment hash or preimage (`what` names it in the error).
fn bytes32(what: &str, s: &str) -> Result<[u8; 32], HostError> {
    <[u8; 32] as bitcoin::hex::FromHex>::from_hex(s)
        .map_err(|_| HostError::InvalidInput(format!("not a {what}: {s}")))
}

fn channel_id(s: &str) -> Result<lightning::ln::types::ChannelId, HostError> {
    Ok(lightning::ln::types::ChannelId(bytes32("channel id", s)?))
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
                   "claimable_on_chain_sat": n.claimable_on_chain_sat(),
                   "watched_channels": n.watched_channels()})
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
                        "pending_htlcs": c.pending_inbound_htlcs.len() + c.pending_outbound_htlcs.len(),
                    })
                })
                .collect();
            json!(chans)
        }
        Request::Invoice { node, msat } => json!(get(&node)?
            .create_invoice(Some(msat), "flotilla", 3600)?
            .to_string()),
        Request::HoldInvoice {
            node,
            msat,
            payment_hash,
            cltv_expiry_delta,
        } => json!(get(&node)?
            .create_hold_invoice(
                msat,
                bytes32("payment hash", &payment_hash)?,
                "flotilla",
                3600,
                cltv_expiry_delta
            )?
            .to_string()),
        Request::Settle { node, preimage } => {
            get(&node)?.settle_held_payment(bytes32("preimage", &preimage)?)?;
            json!(true)
        }
        Request::Cancel { node, payment_hash } => {
            get(&node)?.cancel_hold_invoice(bytes32("payment hash", &payment_hash)?)?;
            json!(true)
        }
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
            get(&node)?
                .close_channel(&channel_id(&id)?, &pubkey(&peer)?)
                .await?;
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
        Request::Events { node, after } => {
            let n = get(&node)?;
            json!(n.store().events(&n.id.to_string(), after, EVENTS_PAGE)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_invoice_commands_parse_with_their_defaults() {
        let hash = "ab".repeat(32);
        let line =
            format!(r#"{{"cmd":"hold_invoice","node":"a","msat":5,"payment_hash":"{hash}"}}"#);
        match serde_json::from_str::<Request>(&line).expect("parses") {
            Request::HoldInvoice {
                msat,
                payment_hash,
                cltv_expiry_delta,
                ..
            } => {
                assert_eq!((msat, cltv_expiry_delta), (5, DEFAULT_HOLD_CLTV_DELTA));
                assert_eq!(bytes32("payment hash", &payment_hash).unwrap(), [0xab; 32]);
            }
            _ => panic!("not a hold invoice"),
        }
        let settle = r#"{"cmd":"settle","node":"a","preimage":"00"}"#;
        let Request::Settle { preimage, .. } = serde_json::from_str(settle).expect("parses") else {
            panic!("not a settle");
        };
        assert!(matches!(
            bytes32("preimage", &preimage),
            Err(HostError::InvalidInput(_))
        ));
        let cancel = format!(r#"{{"cmd":"cancel","node":"a","payment_hash":"{hash}"}}"#);
        assert!(matches!(
            serde_json::from_str::<Request>(&cancel),
            Ok(Request::Cancel { .. })
        ));
    }
}
