//! `flotilla regtest ...`: run and drive a local btcd regtest chain.

use std::path::PathBuf;
use std::str::FromStr;

use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, Amount, Network};
use clap::{Args, Subcommand};
use flotilla_regtest::{installed_btcd, Regtest, BTCD_VERSION};

use super::CliResult;

/// Largest `mine` request; more is almost certainly a typo.
const MAX_MINE: u32 = 10_000;
/// Largest `fund` request: regtest's whole supply is about 15,000 BTC.
const MAX_FUND_SATS: u64 = 15_000 * 100_000_000;

#[derive(Subcommand)]
pub enum RegtestCommand {
    /// Install btcd (pinned, with `go install`) if it is missing, and print its path.
    Install,
    /// Start btcd in the background (installs btcd on first use) and write DIR/regtest.json.
    Up(DirArg),
    /// Mine N blocks to the harness key.
    Mine {
        /// Number of blocks (1 to 10000).
        #[arg(allow_hyphen_values = true)]
        blocks: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Pay SATS to a regtest ADDRESS from the harness key and confirm it in one block.
    Fund {
        address: String,
        /// Amount in satoshis.
        #[arg(allow_hyphen_values = true)]
        sats: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Stop the btcd started by `up`.
    Down(DirArg),
}

#[derive(Args)]
pub struct DirArg {
    /// Regtest directory [default: $FLOTILLA_REGTEST_DIR, else ./regtest]
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl DirArg {
    fn resolve(&self) -> PathBuf {
        self.dir
            .clone()
            .or_else(|| std::env::var_os("FLOTILLA_REGTEST_DIR").map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("regtest"))
    }
}

pub async fn run(cmd: RegtestCommand) -> CliResult {
    match cmd {
        RegtestCommand::Install => {
            println!("{}", flotilla_regtest::ensure_btcd().await?.display());
            Ok(())
        }
        RegtestCommand::Up(dir) => up(dir.resolve()).await,
        RegtestCommand::Mine { blocks, dir } => mine(&blocks, dir.resolve()).await,
        RegtestCommand::Fund { address, sats, dir } => fund(&address, &sats, dir.resolve()).await,
        RegtestCommand::Down(dir) => down(dir.resolve()).await,
    }
}

async fn up(dir: PathBuf) -> CliResult {
    if installed_btcd()?.is_none() {
        eprintln!(
            "installing btcd {BTCD_VERSION} with `go install` (first use, about a minute)..."
        );
    }
    let regtest = Regtest::up(&dir).await?;
    let info = regtest.info();
    println!(
        "btcd up: pid {}, rpc {}, p2p {}, height {}; details in {}",
        info.pid,
        info.rpc.url,
        info.p2p_addr,
        regtest.height().await?,
        regtest.dir().join(flotilla_regtest::INFO_FILE).display()
    );
    Ok(())
}

async fn mine(blocks: &str, dir: PathBuf) -> CliResult {
    let n = parse_blocks(blocks)?;
    let regtest = Regtest::open(&dir)?;
    let hashes = regtest.mine(n).await?;
    let tip = hashes.last().map(|h| h.to_string()).unwrap_or_default();
    println!(
        "mined {n} blocks; height {}, tip {tip}",
        regtest.height().await?
    );
    Ok(())
}

async fn fund(address: &str, sats: &str, dir: PathBuf) -> CliResult {
    let address = parse_address(address)?;
    let amount = parse_sats(sats)?;
    let regtest = Regtest::open(&dir)?;
    let txid = regtest.fund(&address, amount).await?;
    println!(
        "{txid}:0 pays {} sat to {address}; confirmed at height {}",
        amount.to_sat(),
        regtest.height().await?
    );
    Ok(())
}

async fn down(dir: PathBuf) -> CliResult {
    let regtest = Regtest::open(&dir)?;
    let pid = regtest.info().pid;
    regtest.stop().await?;
    println!("btcd stopped (pid {pid})");
    Ok(())
}

fn parse_blocks(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_MINE).contains(&n) => Ok(n),
        _ => Err(format!("block count must be 1 to {MAX_MINE}, got {s:?}")),
    }
}

fn parse_sats(s: &str) -> Result<Amount, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("amount must be more than 0 sat".into()),
        Ok(n) if n > MAX_FUND_SATS => Err(format!(
            "{n} sat is more than regtest can ever mine (about {MAX_FUND_SATS} sat)"
        )),
        Ok(n) => Ok(Amount::from_sat(n)),
        Err(_) => Err(format!(
            "amount must be a whole number of satoshis, got {s:?}"
        )),
    }
}

fn parse_address(s: &str) -> Result<Address, String> {
    let unchecked = Address::<NetworkUnchecked>::from_str(s.trim())
        .map_err(|e| format!("{s:?} is not a bitcoin address: {e}"))?;
    unchecked.require_network(Network::Regtest).map_err(|_| {
        format!("{s:?} is not a regtest address (expected bcrt1..., m..., n... or 2...)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inputs_or_explains() {
        assert_eq!(parse_blocks("101"), Ok(101));
        assert!(parse_blocks("0").is_err());
        assert!(parse_blocks("-3").is_err());
        assert!(parse_blocks("10001").is_err());
        assert_eq!(parse_sats("1000"), Ok(Amount::from_sat(1000)));
        assert!(parse_sats("0").unwrap_err().contains("more than 0"));
        assert!(parse_sats("abc").is_err());
        assert!(parse_sats("-5").is_err());
        assert!(parse_sats("2100000000000000").is_err());
        let addr = flotilla_regtest::harness_address().to_string();
        assert_eq!(parse_address(&addr).unwrap().to_string(), addr);
        // Mainnet and testnet bech32 addresses are refused, as is garbage.
        assert!(parse_address("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
            .unwrap_err()
            .contains("not a regtest address"));
        assert!(parse_address("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx").is_err());
        assert!(parse_address("hello")
            .unwrap_err()
            .contains("not a bitcoin address"));
    }
}
