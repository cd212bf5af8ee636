//! `flotilla demo`: a regtest chain, one host with N nodes in a ring of channels, M payments.
//! Every node's signer runs as its own `flotilla signer` process that dials the host's hub:
//! the host process holds no node's key. The payments go through the node API, each node
//! driven with its own token; with `--keep` everything stays up (and the summary names the
//! API, its CA and the tokens) so `flotilla node` can be tried against it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash;
use bitcoin::Amount;
use clap::Args;
use flotilla_client::{pb, NodeClient};
use flotilla_host::api::token::{Grant, Scope, Scopes};
use flotilla_host::api::tokens::Tokens;
use flotilla_host::api::ApiServer;
use flotilla_host::signer_client::hub::SignerHub;
use flotilla_host::signer_client::link::SignerLink;
use flotilla_host::signer_client::tls::{HubTls, CA_FILE};
use flotilla_host::{Host, HostConfig, Node};
use flotilla_regtest::{wait_until, Regtest};
use serde::Serialize;

use super::signer::spawn_signer;
use super::CliResult;

#[derive(Args)]
pub struct DemoArgs {
    /// Nodes hosted in the one host process.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Payments made around the ring of channels.
    #[arg(long, default_value_t = 20)]
    payments: usize,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the chain, the host's database and the seeds go (kept afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the chain, host, API and signers serving after the payments, until SIGINT or
    /// SIGTERM (the summary is written first).
    #[arg(long)]
    keep: bool,
}

/// What the demo did, for people and for scripts.
#[derive(Serialize)]
pub struct DemoSummary {
    pub nodes: usize,
    pub channels: usize,
    pub payments_ok: usize,
    pub payments_failed: usize,
    pub blocks_connected: u64,
    pub getblock_calls: u64,
    pub getblockheader_calls: u64,
    pub block_deliveries: u64,
    pub elapsed_s: f64,
    pub payments_per_s: f64,
    /// Requests the remote signers answered (signatures, points, approvals).
    pub signer_requests: u64,
    /// The host's database, the signers' seeds, configs and state (left for inspection).
    pub data_dir: PathBuf,
    /// The node API (`flotilla node --host`), the CA its certificate chains to (`--ca`), and
    /// for each node (by alias) a token with every scope of that node (`--token`).
    pub api_url: String,
    pub ca_file: PathBuf,
    pub tokens: BTreeMap<String, String>,
}

const CHANNEL_SAT: u64 = 1_000_000;
const PAYMENT_MSAT: u64 = 1_000_000;

pub async fn run(args: DemoArgs) -> CliResult {
    if args.nodes < 2 {
        return Err("the demo needs at least 2 nodes".into());
    }
    let started = Instant::now();
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("flotilla-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    step(&format!("starting btcd regtest in {}", dir.display()));
    let chain = Regtest::spawn_owned(&dir.join("regtest")).await?;
    chain.mine(101).await?;

    step(&format!(
        "starting a host with {} nodes and a signer process per node",
        args.nodes
    ));
    let host = Host::start(HostConfig::regtest(dir.join("host.db"), chain.rpc_config())).await?;
    let tls_dir = dir.join("hub-tls");
    let tls = HubTls::load_or_generate(&tls_dir, &super::host::hub_names())?;
    let hub = SignerHub::start("127.0.0.1:0".parse()?, &tls).await?;
    let api = ApiServer::start(
        "127.0.0.1:0".parse()?,
        &tls,
        host.clone(),
        Some(hub.clone()),
    )
    .await?;
    let api_url = format!("https://{}", api.local_addr());
    let ca_file = tls_dir.join(CA_FILE);
    let signers_dir = dir.join("signers");
    std::fs::create_dir_all(&signers_dir)?;
    let mut signer_processes = Vec::new();
    let mut starting = tokio::task::JoinSet::new();
    for i in 0..args.nodes {
        let alias = format!("node-{i}");
        let (ids, child) = spawn_signer(&signers_dir, &alias, 1, &hub, &tls_dir.join(CA_FILE))?;
        let node_id = ids[0];
        signer_processes.push(child);
        let link = SignerLink::new(node_id, hub.register(node_id));
        let host = host.clone();
        starting.spawn(async move { host.add_node(&alias, link).await });
    }
    let mut nodes: Vec<Arc<Node>> = Vec::new();
    while let Some(started) = starting.join_next().await {
        nodes.push(started??);
    }
    nodes.sort_by(|a, b| a.alias.cmp(&b.alias));
    // Each node is driven through the API with a token of its own.
    let issuer = Tokens::new(host.store().clone());
    let mut tokens = BTreeMap::new();
    let mut clients = Vec::new();
    let ca_pem = std::fs::read(&ca_file)?;
    for node in &nodes {
        let grant = Grant::new(Some(node.id.to_string()), Scopes::new(Scope::ALL_NODE))?;
        let (token, _) = issuer.create(&grant, Some("demo".into()), None, 0)?;
        clients.push(flotilla_client::connect(&api_url, &ca_pem, &token.to_string()).await?);
        tokens.insert(node.alias.clone(), token.to_string());
    }

    step("funding every node's wallet");
    for node in &nodes {
        chain
            .send(&node.new_address()?, Amount::from_sat(CHANNEL_SAT * 2))
            .await?;
    }
    chain.mine(1).await?;
    wait_until("wallets funded", Duration::from_secs(60), || {
        nodes
            .iter()
            .all(|n| n.wallet_balance().confirmed_sat >= CHANNEL_SAT * 2)
    })
    .await?;

    step("opening a ring of channels");
    for (i, node) in nodes.iter().enumerate() {
        let next = &nodes[(i + 1) % nodes.len()];
        node.connect(next.id, next.listen_addr()).await?;
        node.open_channel(next.id, CHANNEL_SAT, 0)?;
    }
    wait_until("funding broadcast", Duration::from_secs(60), || {
        nodes
            .iter()
            .all(|n| n.channels().iter().all(|c| c.funding_txo.is_some()))
    })
    .await?;
    // Let the funding transactions reach the mempool before mining them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    chain.mine(3).await?;
    wait_until("channels ready", Duration::from_secs(120), || {
        nodes.iter().all(|n| {
            let chans = n.channels();
            chans.len() == 2 && chans.iter().all(|c| c.is_usable)
        })
    })
    .await?;

    step(&format!("making {} payments", args.payments));
    let pay_started = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    for k in 0..args.payments {
        let (payer, payee) = (k % nodes.len(), (k + 1) % nodes.len());
        let paid = pay_through_api(&mut clients, payer, payee, k).await;
        match paid {
            Ok(true) => ok += 1,
            Ok(false) | Err(_) => failed += 1,
        }
        progress(k + 1, args.payments, ok, failed);
    }
    eprintln!();
    let pay_elapsed = pay_started.elapsed().as_secs_f64();

    let stats = host.observer().stats();
    let channels = nodes.iter().map(|n| n.channels().len()).sum::<usize>() / 2;
    let summary = DemoSummary {
        nodes: nodes.len(),
        channels,
        payments_ok: ok,
        payments_failed: failed,
        blocks_connected: stats.blocks_connected,
        getblock_calls: stats.getblock_calls,
        getblockheader_calls: stats.getblockheader_calls,
        block_deliveries: stats.block_deliveries,
        elapsed_s: round2(started.elapsed().as_secs_f64()),
        payments_per_s: round2(if pay_elapsed > 0.0 {
            ok as f64 / pay_elapsed
        } else {
            0.0
        }),
        signer_requests: nodes.iter().map(|n| n.signer_requests()).sum(),
        data_dir: dir.clone(),
        api_url,
        ca_file,
        tokens,
    };

    println!("Flotilla demo");
    println!("  nodes hosted        {}", summary.nodes);
    println!("  channels            {}", summary.channels);
    println!(
        "  payments ok/failed  {}/{}",
        summary.payments_ok, summary.payments_failed
    );
    println!("  payments per second {}", summary.payments_per_s);
    println!(
        "  blocks connected    {} (getblock calls: {}, deliveries to nodes: {})",
        summary.blocks_connected, summary.getblock_calls, summary.block_deliveries
    );
    println!(
        "  signer requests     {} (answered by {} signer processes)",
        summary.signer_requests, summary.nodes
    );
    println!("  elapsed             {} s", summary.elapsed_s);
    println!("  data                {}", summary.data_dir.display());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
        println!("  summary written to  {}", path.display());
    }
    if args.keep {
        println!("  node API            {}", summary.api_url);
        println!("  CA                  {}", summary.ca_file.display());
        for (alias, token) in &summary.tokens {
            println!("  token {alias:<13} {token}");
        }
        println!("serving until Ctrl-C (SIGINT) or SIGTERM; try: flotilla node --host URL --ca FILE --token T info");
        super::wait_for_signal().await;
    }
    api.shutdown().await;
    host.shutdown().await;
    hub.shutdown().await;
    for mut child in signer_processes {
        let _ = child.kill().await;
    }
    chain.stop().await?;
    if summary.payments_failed > 0 {
        return Err(format!("{} payments failed", summary.payments_failed).into());
    }
    Ok(())
}

/// Pays an invoice of node `payee` from node `payer`, both through the node API: whether it
/// succeeded with the invoice's preimage.
async fn pay_through_api(
    clients: &mut [NodeClient],
    payer: usize,
    payee: usize,
    k: usize,
) -> Result<bool, tonic::Status> {
    let invoice = clients[payee]
        .create_invoice(pb::CreateInvoiceRequest {
            amount_msat: Some(PAYMENT_MSAT),
            description: format!("demo payment {k}"),
            ..Default::default()
        })
        .await?
        .into_inner();
    let paid = clients[payer]
        .pay_invoice(pb::PayInvoiceRequest {
            bolt11: invoice.bolt11,
            wait: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let preimage = paid
        .preimage
        .as_deref()
        .and_then(|p| <[u8; 32] as bitcoin::hex::FromHex>::from_hex(p).ok());
    Ok(paid.status() == pb::PaymentStatus::Succeeded
        && preimage.is_some_and(|p| {
            bitcoin::hex::DisplayHex::to_lower_hex_string(
                &bitcoin::hashes::sha256::Hash::hash(&p).to_byte_array()[..],
            ) == invoice.payment_hash
        }))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn step(what: &str) {
    eprintln!("==> {what}");
}

fn progress(done: usize, total: usize, ok: usize, failed: usize) {
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    eprint!(
        "\r    [{}{}] {done}/{total} ok {ok} failed {failed}",
        "#".repeat(filled),
        "-".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}
