//! Paying from the harness key, since btcd has no wallet.
//!
//! Every block the harness mines pays a fixed, deterministic key. `send` spends its mature
//! coinbases (oldest first) and its own change with transactions built and signed here, paying
//! 3 sat/vB with change back to the key. What is already spent is learnt from the chain
//! (`gettxout`) and, because btcd's `gettxout` ignores spends that are only in the mempool, from
//! the mempool itself; so several sends between two blocks, or from two processes, never pick
//! the same coin.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    absolute, ecdsa, Address, Amount, Block, BlockHash, CompressedPublicKey, Network, OutPoint,
    ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use flotilla_host::chain::rpc::{RpcClient, RpcError};
use serde_json::json;

use super::{generate, RegtestError};

/// Blocks before a coinbase output may be spent.
pub(crate) const COINBASE_MATURITY: u32 = 100;
/// Regtest halves the subsidy every 150 blocks.
const HALVING_INTERVAL: u32 = 150;
/// Fee rate of harness transactions: above btcd's 1 sat/vB relay minimum on any size measure.
pub const FEE_RATE_SAT_PER_VB: u64 = 3;
/// Most blocks one `send` may mine to mature enough coinbases.
pub(crate) const MAX_MINE_PER_SEND: u32 = 2000;
/// Attempts when a chosen coin turns out to be spent already (another process, another node).
const SEND_ATTEMPTS: usize = 3;

/// The harness's signing key and where it receives.
struct HarnessKey {
    secret: SecretKey,
    public: PublicKey,
    script: ScriptBuf,
    address: Address,
}

fn harness() -> &'static HarnessKey {
    static KEY: OnceLock<HarnessKey> = OnceLock::new();
    KEY.get_or_init(|| {
        // Deterministic, so every process and every restart finds the same coins.
        let mut digest = sha256::Hash::hash(b"flotilla regtest harness key v1");
        let secret = loop {
            match SecretKey::from_slice(digest.as_byte_array()) {
                Ok(sk) => break sk,
                Err(_) => digest = sha256::Hash::hash(digest.as_byte_array()),
            }
        };
        let public = secret.public_key(&Secp256k1::signing_only());
        let address = Address::p2wpkh(&CompressedPublicKey(public), Network::Regtest);
        HarnessKey {
            secret,
            public,
            script: address.script_pubkey(),
            address,
        }
    })
}

/// The regtest address every harness-mined coinbase pays (btcd's `--miningaddr`).
pub fn harness_address() -> Address {
    harness().address.clone()
}

/// A spendable output of the harness key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Coin {
    pub outpoint: OutPoint,
    pub value: Amount,
}

/// What this process remembers about the harness's coins between sends.
#[derive(Default)]
pub(crate) struct Coins {
    /// Spent by a transaction this process broadcast.
    spent: HashSet<OutPoint>,
    /// Change outputs this process created, confirmed or not.
    change: BTreeMap<OutPoint, Amount>,
    /// Harness outputs of the coinbase at each height, with the block they came from.
    coinbases: HashMap<u32, (BlockHash, Vec<Coin>)>,
    /// Lowest height whose coinbase may still be unspent.
    cursor: Option<u32>,
    /// Mempool transactions already downloaded.
    mempool: HashMap<Txid, Transaction>,
}

/// The chain and mempool as seen at the start of one send attempt.
struct View {
    tip: u32,
    mempool_spent: HashSet<OutPoint>,
    /// Harness outputs of mempool transactions (e.g. another process's change).
    unconfirmed: Vec<Coin>,
}

/// Pays `amount` to `script` from the harness, mining first if no coin is mature or the
/// mature ones do not cover it. Returns the txid; the payment is output 0.
pub(crate) async fn send(
    rpc: &RpcClient,
    coins: &mut Coins,
    script: &ScriptBuf,
    amount: Amount,
) -> Result<Txid, RegtestError> {
    check_amount(script, amount)?;
    let mut mined = 0u32;
    let mut attempts = 0;
    loop {
        let view = refresh_view(rpc, coins).await?;
        let picked = match select(rpc, coins, &view, script, amount).await? {
            Ok(picked) => picked,
            Err(available) => {
                let wanted = amount + fee_for(1, script, true);
                let deficit = wanted.checked_sub(available).unwrap_or(Amount::ONE_SAT);
                let blocks = blocks_to_mature(view.tip, deficit)
                    .filter(|b| mined + b <= MAX_MINE_PER_SEND)
                    .ok_or(RegtestError::InsufficientFunds {
                        wanted: amount,
                        available,
                        mined_cap: MAX_MINE_PER_SEND - mined,
                    })?;
                generate(rpc, blocks).await?;
                mined += blocks;
                continue;
            }
        };
        let tx = build_signed(&picked, script, amount)?;
        let txid = tx.compute_txid();
        match rpc
            .call::<Txid>("sendrawtransaction", json!([serialize_hex(&tx)]))
            .await
        {
            Ok(_) => {
                for coin in &picked {
                    coins.spent.insert(coin.outpoint);
                    coins.change.remove(&coin.outpoint);
                }
                if let Some(change) = tx.output.get(1) {
                    coins
                        .change
                        .insert(OutPoint { txid, vout: 1 }, change.value);
                }
                coins.mempool.insert(txid, tx);
                return Ok(txid);
            }
            Err(RpcError::Rpc { message, .. })
                if is_conflict(&message) && attempts + 1 < SEND_ATTEMPTS =>
            {
                // Someone else spent one of them since we looked; never pick them again.
                attempts += 1;
                tracing::debug!("harness send conflicted ({message}); retrying");
                coins.spent.extend(picked.iter().map(|c| c.outpoint));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn is_conflict(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("already spent") || m.contains("orphan") || m.contains("fully-spent")
}

fn check_amount(script: &ScriptBuf, amount: Amount) -> Result<(), RegtestError> {
    let bad = |reason: String| RegtestError::BadAmount { amount, reason };
    if amount > Amount::MAX_MONEY {
        return Err(bad("more than 21 million BTC".into()));
    }
    let dust = script.minimal_non_dust();
    if amount < dust {
        return Err(bad(format!(
            "below the dust limit of {} sat for this output",
            dust.to_sat()
        )));
    }
    Ok(())
}

/// Reads the tip and the mempool, downloading only mempool transactions not seen before.
async fn refresh_view(rpc: &RpcClient, coins: &mut Coins) -> Result<View, RegtestError> {
    let tip: u32 = rpc.call("getblockcount", json!([])).await?;
    let txids: Vec<Txid> = rpc.call("getrawmempool", json!([])).await?;
    let current: HashSet<Txid> = txids.iter().copied().collect();
    coins.mempool.retain(|txid, _| current.contains(txid));
    for txid in txids {
        if coins.mempool.contains_key(&txid) {
            continue;
        }
        // A transaction may leave the mempool between the two calls; skip it then.
        let hex: String = match rpc.call("getrawtransaction", json!([txid, 0])).await {
            Ok(hex) => hex,
            Err(RpcError::Rpc { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let tx: Transaction =
            deserialize_hex(&hex).map_err(|e| RegtestError::unexpected("getrawtransaction", e))?;
        coins.mempool.insert(txid, tx);
    }
    let mempool_spent: HashSet<OutPoint> = coins
        .mempool
        .values()
        .flat_map(|tx| tx.input.iter().map(|i| i.previous_output))
        .collect();
    let script = &harness().script;
    let unconfirmed: Vec<Coin> = coins
        .mempool
        .iter()
        .flat_map(|(txid, tx)| {
            tx.output
                .iter()
                .enumerate()
                .filter(|(_, out)| out.script_pubkey == *script)
                .map(move |(i, out)| Coin {
                    outpoint: OutPoint {
                        txid: *txid,
                        vout: i as u32,
                    },
                    value: out.value,
                })
        })
        .filter(|c| !mempool_spent.contains(&c.outpoint))
        .collect();
    Ok(View {
        tip,
        mempool_spent,
        unconfirmed,
    })
}

/// Picks coins covering `amount` plus fee: mature coinbases oldest first, then change.
/// `Err(total)` says how much was spendable when that is not enough.
async fn select(
    rpc: &RpcClient,
    coins: &mut Coins,
    view: &View,
    script: &ScriptBuf,
    amount: Amount,
) -> Result<Result<Vec<Coin>, Amount>, RegtestError> {
    let mut picked: Vec<Coin> = Vec::new();
    let mut total = Amount::ZERO;
    let enough =
        |picked: &Vec<Coin>, total: Amount| total >= amount + fee_for(picked.len(), script, true);

    // A coinbase at height h may be spent in block h + 100, i.e. once the tip is h + 99.
    let max_mature = (view.tip + 1).saturating_sub(COINBASE_MATURITY);
    if max_mature >= 1 {
        let mut height = match coins.cursor {
            Some(c) => c,
            None => first_unspent_height(rpc, coins, view, max_mature).await?,
        };
        coins.cursor = Some(height);
        while height <= max_mature && !enough(&picked, total) {
            let mut any = false;
            for coin in coinbase_coins(rpc, coins, height).await? {
                if is_unspent(rpc, coins, view, &coin).await? {
                    any = true;
                    picked.push(coin);
                    total += coin.value;
                }
            }
            if !any && coins.cursor == Some(height) {
                coins.cursor = Some(height + 1);
            }
            height += 1;
        }
    }

    let mut others: Vec<Coin> = coins
        .change
        .iter()
        .map(|(outpoint, value)| Coin {
            outpoint: *outpoint,
            value: *value,
        })
        .collect();
    for coin in &view.unconfirmed {
        if !others.contains(coin) {
            others.push(*coin);
        }
    }
    for coin in others {
        if enough(&picked, total) {
            break;
        }
        if picked.contains(&coin) {
            continue;
        }
        if is_unspent(rpc, coins, view, &coin).await? {
            picked.push(coin);
            total += coin.value;
        } else {
            coins.change.remove(&coin.outpoint);
        }
    }
    Ok(if enough(&picked, total) {
        Ok(picked)
    } else {
        Err(total)
    })
}

/// Binary search for the lowest height with an unspent harness coinbase, relying on coinbases
/// being spent oldest first; keeps a fresh process from probing hundreds of spent ones.
async fn first_unspent_height(
    rpc: &RpcClient,
    coins: &mut Coins,
    view: &View,
    max_mature: u32,
) -> Result<u32, RegtestError> {
    let (mut lo, mut hi) = (1u32, max_mature + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let mut unspent = false;
        for coin in coinbase_coins(rpc, coins, mid).await? {
            if is_unspent(rpc, coins, view, &coin).await? {
                unspent = true;
                break;
            }
        }
        if unspent {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

/// Harness outputs of the coinbase at `height` (cached per block hash, so a reorg is noticed).
async fn coinbase_coins(
    rpc: &RpcClient,
    coins: &mut Coins,
    height: u32,
) -> Result<Vec<Coin>, RegtestError> {
    let hash: BlockHash = rpc.call("getblockhash", json!([height])).await?;
    if let Some((cached, list)) = coins.coinbases.get(&height) {
        if *cached == hash {
            return Ok(list.clone());
        }
    }
    let hex: String = rpc.call("getblock", json!([hash, 0])).await?;
    let block: Block =
        deserialize_hex(&hex).map_err(|e| RegtestError::unexpected("getblock", e))?;
    let list: Vec<Coin> = block
        .txdata
        .first()
        .map(|cb| {
            let txid = cb.compute_txid();
            cb.output
                .iter()
                .enumerate()
                .filter(|(_, out)| out.script_pubkey == harness().script)
                .map(|(i, out)| Coin {
                    outpoint: OutPoint {
                        txid,
                        vout: i as u32,
                    },
                    value: out.value,
                })
                .collect()
        })
        .unwrap_or_default();
    coins.coinbases.insert(height, (hash, list.clone()));
    Ok(list)
}

/// Unspent by us, by the mempool, and by the chain.
async fn is_unspent(
    rpc: &RpcClient,
    coins: &Coins,
    view: &View,
    coin: &Coin,
) -> Result<bool, RegtestError> {
    if coins.spent.contains(&coin.outpoint) || view.mempool_spent.contains(&coin.outpoint) {
        return Ok(false);
    }
    // btcd answers null for spent (or unknown) outputs; mempool outputs count as present.
    let out: Option<serde_json::Value> = rpc
        .call(
            "gettxout",
            json!([coin.outpoint.txid, coin.outpoint.vout, true]),
        )
        .await?;
    Ok(out.is_some())
}

/// Regtest block subsidy at `height`.
fn subsidy(height: u32) -> Amount {
    let halvings = height / HALVING_INTERVAL;
    if halvings >= 64 {
        Amount::ZERO
    } else {
        Amount::from_sat(Amount::from_int_btc(50).to_sat() >> halvings)
    }
}

/// How many blocks to mine on top of `tip` so that newly matured coinbases add `deficit`
/// (net of the fee of spending them); `None` if more than [`MAX_MINE_PER_SEND`] would be needed.
pub(crate) fn blocks_to_mature(tip: u32, deficit: Amount) -> Option<u32> {
    let script = &harness().script;
    let per_input_fee = fee_for(1, script, true) - fee_for(0, script, true);
    let first = (tip + 2).saturating_sub(COINBASE_MATURITY).max(1);
    let mut gained = Amount::ZERO;
    let mut height = first;
    while gained < deficit {
        let value = subsidy(height);
        if value <= per_input_fee {
            return None;
        }
        gained += value - per_input_fee;
        height += 1;
    }
    // Coinbases up to `height - 1` must be mature: tip >= (height - 1) + 99.
    let blocks = (height - 1 + COINBASE_MATURITY - 1)
        .saturating_sub(tip)
        .max(1);
    (blocks <= MAX_MINE_PER_SEND).then_some(blocks)
}

/// Fee for a transaction spending `inputs` harness coins to `recipient` (plus change),
/// computed from the weight of the transaction with worst-case signatures.
pub(crate) fn fee_for(inputs: usize, recipient: &ScriptBuf, with_change: bool) -> Amount {
    let coins: Vec<Coin> = (0..inputs)
        .map(|i| Coin {
            outpoint: OutPoint {
                txid: Txid::all_zeros(),
                vout: i as u32,
            },
            value: Amount::ZERO,
        })
        .collect();
    let mut outputs = vec![TxOut {
        value: Amount::ZERO,
        script_pubkey: recipient.clone(),
    }];
    if with_change {
        outputs.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: harness().script.clone(),
        });
    }
    fee_of(&dummy_signed(&coins, outputs))
}

fn fee_of(tx: &Transaction) -> Amount {
    Amount::from_sat(tx.weight().to_vbytes_ceil() * FEE_RATE_SAT_PER_VB)
}

fn unsigned(inputs: &[Coin], outputs: Vec<TxOut>) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: inputs
            .iter()
            .map(|c| TxIn {
                previous_output: c.outpoint,
                script_sig: ScriptBuf::new(),
                // Final and not replaceable: a conflicting send is refused, not replaced.
                sequence: Sequence::MAX,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    }
}

/// The transaction with maximum-size placeholder witnesses, for weighing.
fn dummy_signed(inputs: &[Coin], outputs: Vec<TxOut>) -> Transaction {
    let mut tx = unsigned(inputs, outputs);
    for input in &mut tx.input {
        input.witness = Witness::from_slice(&[vec![0u8; 73], vec![0u8; 33]]);
    }
    tx
}

/// Builds and signs the payment: `amount` to `script` at output 0, change (unless dust) back
/// to the harness at output 1.
pub(crate) fn build_signed(
    inputs: &[Coin],
    script: &ScriptBuf,
    amount: Amount,
) -> Result<Transaction, RegtestError> {
    let key = harness();
    let total: Amount = inputs.iter().map(|c| c.value).sum();
    let pay = TxOut {
        value: amount,
        script_pubkey: script.clone(),
    };
    let change_out = |value| TxOut {
        value,
        script_pubkey: key.script.clone(),
    };
    let with_change = fee_of(&dummy_signed(
        inputs,
        vec![pay.clone(), change_out(Amount::ZERO)],
    ));
    let change = total
        .checked_sub(amount)
        .and_then(|rest| rest.checked_sub(with_change))
        .filter(|c| *c >= key.script.minimal_non_dust());
    let outputs = match change {
        Some(change) => vec![pay, change_out(change)],
        None => {
            let fee = fee_of(&dummy_signed(inputs, vec![pay.clone()]));
            if total < amount + fee {
                return Err(RegtestError::InsufficientFunds {
                    wanted: amount + fee,
                    available: total,
                    mined_cap: 0,
                });
            }
            vec![pay]
        }
    };
    let mut tx = unsigned(inputs, outputs);
    let secp = Secp256k1::signing_only();
    let mut witnesses = Vec::with_capacity(inputs.len());
    let mut cache = SighashCache::new(&tx);
    for (i, coin) in inputs.iter().enumerate() {
        let sighash = cache
            .p2wpkh_signature_hash(i, &key.script, coin.value, EcdsaSighashType::All)
            .map_err(|e| RegtestError::unexpected("signing", e))?;
        let signature = ecdsa::Signature {
            signature: secp.sign_ecdsa(&Message::from(sighash), &key.secret),
            sighash_type: EcdsaSighashType::All,
        };
        witnesses.push(Witness::p2wpkh(&signature, &key.public));
    }
    for (input, witness) in tx.input.iter_mut().zip(witnesses) {
        input.witness = witness;
    }
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coin(n: u8, sats: u64) -> Coin {
        Coin {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([n; 32]),
                vout: 0,
            },
            value: Amount::from_sat(sats),
        }
    }

    #[test]
    fn harness_key_is_fixed_regtest_p2wpkh() {
        let a = harness_address();
        assert!(a.to_string().starts_with("bcrt1q"));
        assert_eq!(a, harness_address());
        assert!(a.script_pubkey().is_p2wpkh());
    }

    #[test]
    fn pays_exact_amount_with_change_and_fee_at_rate() {
        let to = Address::p2wpkh(
            &CompressedPublicKey(
                SecretKey::from_slice(&[7; 32])
                    .unwrap()
                    .public_key(&Secp256k1::signing_only()),
            ),
            Network::Regtest,
        )
        .script_pubkey();
        let inputs = [coin(1, 50_0000_0000), coin(2, 25_0000_0000)];
        let amount = Amount::from_sat(60_0000_0000);
        let tx = build_signed(&inputs, &to, amount).unwrap();
        assert_eq!(tx.output[0].value, amount);
        assert_eq!(tx.output[0].script_pubkey, to);
        assert_eq!(tx.output[1].script_pubkey, harness().script);
        let fee = Amount::from_sat(75_0000_0000) - amount - tx.output[1].value;
        let vsize = tx.weight().to_vbytes_ceil();
        assert!(
            fee.to_sat() >= vsize * FEE_RATE_SAT_PER_VB,
            "{fee} for {vsize} vB"
        );
        assert!(
            fee.to_sat() <= (vsize + 2) * FEE_RATE_SAT_PER_VB,
            "{fee} for {vsize} vB"
        );
        assert!(tx.input.iter().all(|i| i.witness.len() == 2));
    }

    #[test]
    fn dust_change_goes_to_fee_and_shortfall_is_an_error() {
        let to = harness().script.clone();
        let amount = Amount::from_sat(100_000);
        let total = amount + fee_for(1, &to, true) + Amount::from_sat(100);
        let tx = build_signed(&[coin(1, total.to_sat())], &to, amount).unwrap();
        assert_eq!(tx.output.len(), 1);
        assert!(matches!(
            build_signed(&[coin(1, 100_050)], &to, amount),
            Err(RegtestError::InsufficientFunds { .. })
        ));
    }

    #[test]
    fn amount_checks() {
        let to = harness().script.clone();
        assert!(check_amount(&to, Amount::ZERO).is_err());
        assert!(check_amount(&to, Amount::from_sat(293)).is_err());
        assert!(check_amount(&to, Amount::from_sat(294)).is_ok());
        assert!(check_amount(&to, Amount::MAX_MONEY + Amount::ONE_SAT).is_err());
    }

    #[test]
    fn mining_plan_matures_enough_coinbases() {
        // Fresh chain: 100 blocks make the first coinbase spendable in the next block.
        assert_eq!(blocks_to_mature(0, Amount::from_int_btc(1)), Some(100));
        // Tip 101 (heights 1, 2 mature): one more block matures height 3.
        assert_eq!(blocks_to_mature(101, Amount::from_int_btc(10)), Some(1));
        assert_eq!(blocks_to_mature(101, Amount::from_int_btc(60)), Some(2));
        // Regtest can never produce 20,000 BTC.
        assert_eq!(blocks_to_mature(0, Amount::from_int_btc(20_000)), None);
        assert_eq!(subsidy(149), Amount::from_int_btc(50));
        assert_eq!(subsidy(150), Amount::from_int_btc(25));
    }
}
