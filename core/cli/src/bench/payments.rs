//! `flotilla-bench payments`: hosted-to-hosted payments per second and latency with every
//! node's signer remote (a separate signer process dialing the host's hub over TLS) and, in
//! the same run on the same chain, with the in-process signer as the baseline.
//!
//! One host per signer mode: `pairs` payer/payee nodes, one channel each, measured at each
//! `concurrency` (payments in flight across the host): 1 shows the latency of a payment alone,
//! more shows throughput under load. A payment's latency runs from `pay_invoice` to its
//! outcome (approval, HTLC, claim, preimage back); the rate counts invoice creation too.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::rand::RngCore;
use bitcoin::Amount;
use clap::Args;
use flotilla_host::signer_client::hub::SignerHub;
use flotilla_host::signer_client::link::SignerLink;
use flotilla_host::signer_client::tls::{HubTls, CA_FILE};
use flotilla_host::{Host, HostConfig, Node, PaymentOutcome};
use flotilla_regtest::wait_until;
use flotilla_regtest::Regtest;
use flotilla_signer::seed_signer::SeedSigner;
use lightning::util::config::ChannelHandshakeLimits;
use serde::Serialize;
use tokio::task::JoinSet;

use super::measure::{cpu_time, process_cpu_time, round3};
use super::record::{Ratio, Record, SignerMode};
use super::verdict::{Goals, Verdict, GOALS};
use super::BenchResult;
use crate::cli::signer::spawn_signer;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Args)]
pub struct PaymentsArgs {
    /// Payer/payee node pairs in each host, one channel per pair.
    #[arg(long, default_value_t = 8)]
    pairs: usize,
    /// Payments measured per signer mode and concurrency.
    #[arg(long, default_value_t = 1000)]
    payments: usize,
    /// Payments in flight at once across all pairs, comma separated: one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,
    /// Payments made and not measured before the measurement (first persists, caches).
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Each payment's amount: above the dust limit, so every HTLC is on the commitments and
    /// needs its own signatures.
    #[arg(long, default_value_t = 5_000_000)]
    amount_msat: u64,
    /// Signer modes to measure, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "in-process,remote"
    )]
    signers: Vec<SignerMode>,
    /// Write the records and the remote/in-process ratios as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the chain, the hosts' databases and the signer's files go (default: a fresh
    /// temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    cores: usize,
    goals: Goals,
    records: Vec<Record>,
    /// remote / in-process, per concurrency
    ratios: Vec<Ratio>,
    verdict: Verdict,
}

pub async fn run(args: PaymentsArgs) -> BenchResult {
    if args.pairs == 0 || args.payments == 0 || args.concurrency.contains(&0) {
        return Err("--pairs, --payments and --concurrency must be above zero".into());
    }
    channel_sat(&args)?;
    let dir = match args.dir.clone() {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("flotilla-bench-pay-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "bench: starting btcd regtest in {}",
        dir.join("regtest").display()
    );
    let chain = Regtest::spawn_owned(&dir.join("regtest")).await?;
    chain.mine(101).await?;

    let mut records = Vec::new();
    for &mode in &args.signers {
        eprintln!("bench: {} signers", mode.arg());
        records.extend(run_mode(mode, &chain, &dir, &args).await?);
    }
    chain.stop().await?;

    let find = |m, c| records.iter().find(|r| r.signer == m && r.concurrency == c);
    let ratios: Vec<Ratio> = args
        .concurrency
        .iter()
        .filter_map(|&c| {
            let remote = find(SignerMode::Remote, c)?;
            Some(Ratio::of(remote, find(SignerMode::InProcess, c)?))
        })
        .collect();
    let verdict = Verdict::of(&records, &ratios, &GOALS);
    for line in verdict.lines() {
        eprintln!("bench: {line}");
    }
    let report = Report {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        goals: GOALS,
        records,
        ratios,
        verdict,
    };
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, text + "\n")?;
    }
    Ok(())
}

/// The remote mode's signer process and hub, stopped with the host.
struct RemoteSigners {
    hub: Arc<SignerHub>,
    process: tokio::process::Child,
}

async fn run_mode(
    mode: SignerMode,
    chain: &Regtest,
    dir: &Path,
    args: &PaymentsArgs,
) -> Result<Vec<Record>, Error> {
    let host = Host::start(HostConfig::regtest(
        dir.join(format!("host-{}.db", mode.arg())),
        chain.rpc_config(),
    ))
    .await?;
    let count = args.pairs * 2;
    let (links, remote) = match mode {
        SignerMode::InProcess => {
            let mut links = Vec::with_capacity(count);
            for _ in 0..count {
                let mut seed = [0u8; 32];
                bitcoin::secp256k1::rand::thread_rng().fill_bytes(&mut seed);
                let signer = SeedSigner::in_memory(&seed, bitcoin::Network::Regtest)?;
                links.push(SignerLink::in_process(Arc::new(signer)));
            }
            (links, None)
        }
        SignerMode::Remote => {
            let tls_dir = dir.join("hub-tls");
            let tls = HubTls::load_or_generate(&tls_dir, &crate::cli::host::hub_names())?;
            let hub = SignerHub::start("127.0.0.1:0".parse()?, &tls).await?;
            let signer_dir = dir.join("signer");
            std::fs::create_dir_all(&signer_dir)?;
            let (ids, process) =
                spawn_signer(&signer_dir, "bench", count, &hub, &tls_dir.join(CA_FILE))?;
            let links = ids
                .into_iter()
                .map(|id| SignerLink::new(id, hub.register(id)))
                .collect();
            (links, Some(RemoteSigners { hub, process }))
        }
    };
    let mut starting = JoinSet::new();
    for (i, link) in links.into_iter().enumerate() {
        let host = host.clone();
        starting.spawn(async move { (i, host.add_node(&format!("bench-{i}"), link).await) });
    }
    let mut nodes: Vec<Option<Arc<Node>>> = vec![None; count];
    while let Some(joined) = starting.join_next().await {
        let (i, node) = joined?;
        nodes[i] = Some(node?);
    }
    let nodes: Vec<Arc<Node>> = nodes.into_iter().flatten().collect();
    let pairs: Vec<(Arc<Node>, Arc<Node>)> = nodes
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();

    open_channels(chain, &pairs, args).await?;
    eprintln!(
        "bench: {} channels ready; {} warm-up payments",
        pairs.len(),
        args.warmup
    );
    let warmup_concurrency = args.concurrency.iter().copied().max().unwrap_or(1);
    let warm = pay_all(&pairs, args.warmup, warmup_concurrency, args.amount_msat).await;
    if warm.failed > 0 {
        eprintln!("bench: warning: {} warm-up payments failed", warm.failed);
    }

    let signer_pid = remote.as_ref().and_then(|r| r.process.id());
    let mut records = Vec::new();
    for &concurrency in &args.concurrency {
        eprintln!(
            "bench: measuring {} payments, {concurrency} in flight",
            args.payments
        );
        let record = measure(mode, &host, &nodes, &pairs, signer_pid, concurrency, args).await;
        eprintln!("bench: {}", serde_json::to_string(&record)?);
        records.push(record);
    }

    host.shutdown().await;
    if let Some(mut remote) = remote {
        remote.hub.shutdown().await;
        let _ = remote.process.kill().await;
    }
    Ok(records)
}

/// One measurement at one concurrency on a host whose channels are ready.
async fn measure(
    mode: SignerMode,
    host: &Host,
    nodes: &[Arc<Node>],
    pairs: &[(Arc<Node>, Arc<Node>)],
    signer_pid: Option<u32>,
    concurrency: usize,
    args: &PaymentsArgs,
) -> Record {
    let requests = || nodes.iter().map(|n| n.signer_requests()).sum::<u64>();
    let signer_cpu = || signer_pid.and_then(process_cpu_time);
    let (cpu0, signer_cpu0, requests0) = (cpu_time(), signer_cpu(), requests());
    let writes0 = host.store().write_stats();
    let run = pay_all(pairs, args.payments, concurrency, args.amount_msat).await;
    let host_cpu = (cpu_time() - cpu0).as_secs_f64();
    let signer_cpu = match (signer_cpu(), signer_cpu0) {
        (Some(after), Some(before)) => Some((after - before).as_secs_f64()),
        _ => None,
    };
    let requests = requests() - requests0;
    let writes = host.store().write_stats();
    let (db_writes, db_commits) = (
        writes.writes - writes0.writes,
        writes.commits - writes0.commits,
    );

    let mut latencies = run.latencies;
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        round3(latencies[i].as_secs_f64() * 1e3)
    };
    let per_payment = |x: f64| if run.ok > 0 { x / run.ok as f64 } else { 0.0 };
    Record {
        signer: mode,
        pairs: pairs.len(),
        concurrency,
        payments: args.payments,
        payments_ok: run.ok,
        payments_failed: run.failed,
        elapsed_s: round3(run.elapsed.as_secs_f64()),
        payments_per_s: round3(run.ok as f64 / run.elapsed.as_secs_f64().max(f64::EPSILON)),
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        host_cpu_s: round3(host_cpu),
        signer_cpu_s: signer_cpu.map(round3),
        host_cpu_ms_per_payment: round3(per_payment(host_cpu) * 1e3),
        cpu_ms_per_payment: round3(per_payment(host_cpu + signer_cpu.unwrap_or(0.0)) * 1e3),
        signer_requests_per_payment: round3(per_payment(requests as f64)),
        db_writes_per_payment: round3(per_payment(db_writes as f64)),
        db_writes_per_commit: round3(db_writes as f64 / db_commits.max(1) as f64),
    }
}

/// Each pair's channel: twice what the pair's payments move, so the reserve and fees never
/// limit the run; refused up front if larger than a node accepts.
fn channel_sat(args: &PaymentsArgs) -> Result<u64, Error> {
    let total = args.payments * args.concurrency.len() + args.warmup;
    let per_pair = total.div_ceil(args.pairs) as u64;
    let sat = (per_pair * args.amount_msat / 1000 * 2).max(1_000_000);
    let most = ChannelHandshakeLimits::default().max_funding_satoshis;
    if sat > most {
        return Err(format!(
            "each pair's channel would need {sat} sat for its payments, above the {most} sat \
             a node accepts: raise --pairs or lower --payments or --amount-msat"
        )
        .into());
    }
    Ok(sat)
}

/// Funds every payer, opens one channel per pair big enough for all its payments, and waits
/// until every channel is usable.
async fn open_channels(
    chain: &Regtest,
    pairs: &[(Arc<Node>, Arc<Node>)],
    args: &PaymentsArgs,
) -> Result<(), Error> {
    let channel_sat = channel_sat(args)?;
    for (payer, _) in pairs {
        chain
            .send(
                &payer.new_address()?,
                Amount::from_sat(channel_sat + 100_000),
            )
            .await?;
    }
    chain.mine(1).await?;
    wait_until("wallets funded", Duration::from_secs(60), || {
        pairs
            .iter()
            .all(|(p, _)| p.wallet_balance().confirmed_sat >= channel_sat + 100_000)
    })
    .await?;
    for (payer, payee) in pairs {
        payer.connect(payee.id, payee.listen_addr()).await?;
        payer.open_channel(payee.id, channel_sat, 0)?;
    }
    wait_until("funding broadcast", Duration::from_secs(60), || {
        pairs
            .iter()
            .all(|(p, _)| p.channels().iter().all(|c| c.funding_txo.is_some()))
    })
    .await?;
    // Let the funding transactions reach the mempool before mining them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    chain.mine(3).await?;
    wait_until("channels ready", Duration::from_secs(120), || {
        pairs
            .iter()
            .all(|(p, _)| p.channels().iter().any(|c| c.is_usable))
    })
    .await?;
    Ok(())
}

struct Run {
    ok: usize,
    failed: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// Makes `count` payments, pair `k % pairs` paying the `k`-th, `concurrency` at a time.
async fn pay_all(
    pairs: &[(Arc<Node>, Arc<Node>)],
    count: usize,
    concurrency: usize,
    amount_msat: u64,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let failed = Arc::new(AtomicUsize::new(0));
    let pairs: Arc<Vec<_>> = Arc::new(pairs.to_vec());
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.min(count) {
        let (next, latencies, failed, pairs) = (
            next.clone(),
            latencies.clone(),
            failed.clone(),
            pairs.clone(),
        );
        workers.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= count {
                    break;
                }
                let (payer, payee) = &pairs[k % pairs.len()];
                match pay_once(payer, payee, amount_msat, k).await {
                    Ok(took) => latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(took),
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("bench: payment {k} failed: {e}");
                        }
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    Run {
        ok: latencies.len(),
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        latencies,
    }
}

/// One payment: an invoice from the payee, paid by the payer; its latency once the preimage
/// that came back is checked against the invoice.
async fn pay_once(
    payer: &Node,
    payee: &Node,
    amount_msat: u64,
    k: usize,
) -> Result<Duration, Error> {
    let invoice = payee.create_invoice(Some(amount_msat), &format!("bench {k}"), 3600)?;
    let started = Instant::now();
    match payer
        .pay_invoice(&invoice.to_string(), Duration::from_secs(60))
        .await?
    {
        PaymentOutcome::Succeeded { preimage, .. }
            if sha256::Hash::hash(&preimage).to_byte_array()
                == invoice.payment_hash().to_byte_array() =>
        {
            Ok(started.elapsed())
        }
        other => Err(format!("{other:?}").into()),
    }
}
