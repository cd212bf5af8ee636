//! `flotilla-bench background`: per-node lightning-background-processor loops versus the
//! shared driver, at several host sizes, on one btcd regtest chain.
//!
//! Each (size, mode) runs in a fresh process (`background-run`), so one run's memory does not
//! linger in the next run's RSS; CPU time and RSS are that process's own (getrusage, VmRSS).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::hashes::{sha256, Hash};
use clap::{Args, ValueEnum};
use flotilla_host::signer_client::link::SignerLink;
use flotilla_host::{Background, Host, HostConfig, Node};
use flotilla_regtest::Regtest;
use flotilla_signer::seed_signer::SeedSigner;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::measure::{cpu_time, raise_fd_limit, rss_kib};
use super::BenchResult;

/// The background mode, as the command line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    PerNode,
    Shared,
}

impl From<Mode> for Background {
    fn from(mode: Mode) -> Background {
        match mode {
            Mode::PerNode => Background::PerNode,
            Mode::Shared => Background::Shared,
        }
    }
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::PerNode => "per-node",
            Mode::Shared => "shared",
        }
    }
}

#[derive(Args)]
pub struct BackgroundArgs {
    /// Host sizes to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    nodes: Vec<usize>,
    /// Write every record and the shared/per-node ratios as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Length of the idle CPU window; a multiple of LDK's 10 s tick keeps both modes even.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Stop adding nodes after this long and measure the nodes reached.
    #[arg(long, default_value_t = 600)]
    bringup_limit_secs: u64,
    /// Where the chain and the hosts' databases go (default: a fresh temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct RunArgs {
    /// Directory of the running regtest (its `regtest.json`).
    #[arg(long)]
    regtest: PathBuf,
    /// The host's database file (must not exist yet).
    #[arg(long)]
    db: PathBuf,
    #[arg(long)]
    nodes: usize,
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long)]
    idle_secs: u64,
    #[arg(long)]
    bringup_limit_secs: u64,
}

/// One host of one mode and size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub mode: Mode,
    pub nodes_requested: usize,
    /// Nodes running when measured (fewer than requested if bring-up hit its time limit).
    pub nodes: usize,
    pub bringup_s: f64,
    pub bringup_ms_per_node: f64,
    pub idle_window_s: f64,
    /// CPU time (user + sys) used over the idle window.
    pub idle_cpu_s: f64,
    /// Share of one core the idle host used.
    pub idle_core_pct: f64,
    /// CPU per node per second of idling.
    pub idle_cpu_us_per_node_s: f64,
    pub rss_mib: f64,
    /// RSS added by the host and its nodes over the process before the host started.
    pub rss_per_node_kib: f64,
    /// From mining a block until every node's channel manager is at its height.
    pub block_delivery_ms: f64,
    /// CPU used from mining a block until 5 s later, less the idle rate over those 5 s.
    pub block_cpu_s: f64,
    pub fd_limit: u64,
}

/// Shared over per-node for one host size: below 1 means the shared driver is lighter.
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub nodes: usize,
    pub idle_cpu: f64,
    pub rss: f64,
    pub block_delivery: f64,
    pub block_cpu: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    idle_window_s: u64,
    records: Vec<Record>,
    /// shared / per-node
    ratios: Vec<Ratio>,
}

/// The window after a block in which its follow-up work (channel-manager persists) is counted.
const BLOCK_WINDOW: Duration = Duration::from_secs(5);
/// Lets start-up work (first persists, first ticks) finish before the idle window opens.
const SETTLE: Duration = Duration::from_secs(5);
/// Nodes brought up at once: hides the chain node's round trips behind wallet creation.
const BRINGUP_PARALLEL: usize = 4;

pub async fn run(args: BackgroundArgs) -> BenchResult {
    if args.nodes.is_empty() || args.nodes.contains(&0) {
        return Err("--nodes needs at least one size above zero".into());
    }
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("flotilla-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let regtest_dir = dir.join("regtest");
    eprintln!("bench: starting btcd regtest in {}", regtest_dir.display());
    let chain = Regtest::spawn_owned(&regtest_dir).await?;
    chain.mine(101).await?;

    let exe = std::env::current_exe()?;
    let mut records = Vec::new();
    let mut ratios = Vec::new();
    for &n in &args.nodes {
        let mut pair: Vec<Record> = Vec::new();
        for mode in [Mode::PerNode, Mode::Shared] {
            let db = dir.join(format!("host-{n}-{}.db", mode.arg()));
            eprintln!("bench: {n} nodes, {} mode", mode.arg());
            let out = tokio::process::Command::new(&exe)
                .arg("background-run")
                .arg("--regtest")
                .arg(&regtest_dir)
                .arg("--db")
                .arg(&db)
                .args(["--nodes", &n.to_string(), "--mode", mode.arg()])
                .args(["--idle-secs", &args.idle_secs.to_string()])
                .args(["--bringup-limit-secs", &args.bringup_limit_secs.to_string()])
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .await?;
            if !out.status.success() {
                return Err(
                    format!("the {n}-node {} run failed ({})", mode.arg(), out.status).into(),
                );
            }
            let record: Record = serde_json::from_slice(&out.stdout)?;
            eprintln!("bench: {}", serde_json::to_string(&record)?);
            pair.push(record);
            // Each host's database is only scratch; 10,000 nodes' worth is large.
            for suffix in ["", "-wal", "-shm", ".lock"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
        }
        if let [per_node, shared] = &pair[..] {
            ratios.push(ratio(per_node, shared));
        }
        records.extend(pair);
    }
    let report = Report {
        idle_window_s: args.idle_secs,
        records,
        ratios,
    };
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(path) = args.json {
        std::fs::write(&path, text + "\n")?;
    }
    chain.stop().await?;
    Ok(())
}

fn ratio(per_node: &Record, shared: &Record) -> Ratio {
    let r = |s: f64, p: f64| if p > 0.0 { s / p } else { f64::NAN };
    Ratio {
        nodes: shared.nodes.min(per_node.nodes),
        idle_cpu: r(
            shared.idle_cpu_us_per_node_s,
            per_node.idle_cpu_us_per_node_s,
        ),
        rss: r(shared.rss_per_node_kib, per_node.rss_per_node_kib),
        block_delivery: r(shared.block_delivery_ms, per_node.block_delivery_ms),
        block_cpu: r(shared.block_cpu_s, per_node.block_cpu_s),
    }
}

/// A fixed seed per node index, so every run hosts the same node ids.
fn seed(i: usize) -> [u8; 32] {
    sha256::Hash::hash(format!("flotilla-bench node {i}").as_bytes()).to_byte_array()
}

/// One host, one mode: bring up the nodes, idle, mine a block; prints one [`Record`] as JSON.
pub async fn run_one(args: RunArgs) -> BenchResult {
    let fd_limit = raise_fd_limit();
    if (args.nodes as u64).saturating_add(256) > fd_limit {
        eprintln!(
            "bench: warning: {} nodes need about as many open files; the limit is {fd_limit}",
            args.nodes
        );
    }
    if args.db.exists() {
        return Err(format!("{} already exists", args.db.display()).into());
    }
    let chain = Regtest::open(&args.regtest)?;
    let rss_before = rss_kib();
    let mut config = HostConfig::regtest(args.db.clone(), chain.rpc_config());
    config.background = args.mode.into();
    let host = Host::start(config).await?;

    let (nodes, bringup) = bring_up(&host, args.nodes, args.bringup_limit_secs).await?;
    let n = nodes.len();
    tokio::time::sleep(SETTLE).await;

    let idle = Duration::from_secs(args.idle_secs);
    let (cpu0, t0) = (cpu_time(), Instant::now());
    tokio::time::sleep(idle).await;
    let (idle_cpu, window) = (cpu_time() - cpu0, t0.elapsed());
    let rss = rss_kib();

    let target = chain.height().await? + 1;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    chain.mine(1).await?;
    let delivered = loop {
        if nodes
            .iter()
            .all(|node| node.channel_manager.current_best_block().height >= target)
        {
            break t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(120) {
            return Err(format!("block {target} not delivered to all nodes in 120 s").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    tokio::time::sleep(BLOCK_WINDOW.saturating_sub(t0.elapsed())).await;
    let block_window = t0.elapsed();
    let idle_rate = idle_cpu.as_secs_f64() / window.as_secs_f64();
    let block_cpu = (cpu_time() - cpu0).as_secs_f64() - idle_rate * block_window.as_secs_f64();

    let per_node = |x: f64| if n > 0 { x / n as f64 } else { 0.0 };
    let record = Record {
        mode: args.mode,
        nodes_requested: args.nodes,
        nodes: n,
        bringup_s: bringup.as_secs_f64(),
        bringup_ms_per_node: per_node(bringup.as_secs_f64() * 1e3),
        idle_window_s: window.as_secs_f64(),
        idle_cpu_s: idle_cpu.as_secs_f64(),
        idle_core_pct: idle_rate * 100.0,
        idle_cpu_us_per_node_s: per_node(idle_rate * 1e6),
        rss_mib: rss as f64 / 1024.0,
        rss_per_node_kib: per_node(rss.saturating_sub(rss_before) as f64),
        block_delivery_ms: delivered.as_secs_f64() * 1e3,
        block_cpu_s: block_cpu.max(0.0),
        fd_limit,
    };
    println!("{}", serde_json::to_string(&record)?);
    // The database is scratch: skip the orderly stop of thousands of nodes.
    std::process::exit(0)
}

/// Adds up to `count` nodes, a few at a time, until done or `limit_secs` have passed.
async fn bring_up(
    host: &Arc<Host>,
    count: usize,
    limit_secs: u64,
) -> Result<(Vec<Arc<Node>>, Duration), Box<dyn std::error::Error + Send + Sync>> {
    let started = Instant::now();
    let limit = Duration::from_secs(limit_secs);
    let mut nodes = Vec::with_capacity(count);
    let mut pending = JoinSet::new();
    let mut next = 0;
    let mut last_report = Instant::now();
    while nodes.len() < count {
        while next < count && pending.len() < BRINGUP_PARALLEL && started.elapsed() < limit {
            let host = host.clone();
            let i = next;
            pending.spawn(async move {
                let signer = SeedSigner::in_memory(&seed(i), bitcoin::Network::Regtest)?;
                let link = SignerLink::in_process(Arc::new(signer));
                let node = host.add_node(&format!("bench-{i}"), link).await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(node)
            });
            next += 1;
        }
        let Some(joined) = pending.join_next().await else {
            break; // the time limit stopped new nodes and all started ones are up
        };
        nodes.push(joined??);
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "bench: {} of {count} nodes up after {:.0} s",
                nodes.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let took = started.elapsed();
    if nodes.len() < count {
        eprintln!(
            "bench: bring-up limit of {limit_secs} s reached at {} of {count} nodes",
            nodes.len()
        );
    }
    Ok((nodes, took))
}
