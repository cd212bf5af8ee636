//! Wallet behaviour on synthetic regtest blocks with an in-memory store.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use bdk_wallet::chain::BlockId;
use bdk_wallet::KeychainKind;
use bitcoin::secp256k1::{Message, Secp256k1};
use bitcoin::sighash::SighashCache;
use bitcoin::{Amount, FeeRate, Network, OutPoint, ScriptBuf, Transaction, TxOut};
use lightning::chain::{BestBlock, Listen};
use lightning::sign::ChangeDestinationSourceSync;
use support::{
    build_funding_tx, genesis_id, open, payment, signer, Chain, MemKv, SeedWalletSigner,
};

use super::persist::{COMPACT_AFTER, RECENT_CHECKPOINTS};
use super::{OnchainWallet, WalletError, WalletSigner};

fn btc(v: f64) -> Amount {
    Amount::from_btc(v).unwrap()
}

/// A stand-in channel funding script.
/// A stand-in for a funding output's witness script.
fn witness(tag: u8) -> ScriptBuf {
    ScriptBuf::from_bytes(vec![tag; 8])
}

fn feerate() -> FeeRate {
    FeeRate::from_sat_per_vb(5).unwrap()
}

/// Mines a block paying `amount` to a fresh wallet address and feeds it to the wallet.
fn fund(wallet: &OnchainWallet, chain: &mut Chain, tag: u8, amount: Amount) -> Transaction {
    let address = wallet.new_address().unwrap();
    let tx = payment(tag, vec![(address.script_pubkey(), amount)]);
    let height = chain.mine(vec![tx.clone()]);
    wallet.block_connected(chain.block(height), height);
    tx
}

fn prevouts(txs: &[&Transaction]) -> HashMap<OutPoint, TxOut> {
    let mut map = HashMap::new();
    for tx in txs {
        let txid = tx.compute_txid();
        for (vout, out) in tx.output.iter().enumerate() {
            map.insert(OutPoint::new(txid, vout as u32), out.clone());
        }
    }
    map
}

/// Checks every input carries a valid P2WPKH signature over this very transaction.
fn verify_p2wpkh(tx: &Transaction, prevouts: &HashMap<OutPoint, TxOut>) -> Result<(), String> {
    let secp = Secp256k1::verification_only();
    let mut cache = SighashCache::new(tx);
    for (index, input) in tx.input.iter().enumerate() {
        let prev = prevouts
            .get(&input.previous_output)
            .ok_or("unknown prevout")?;
        if !input.script_sig.is_empty() {
            return Err("segwit input has a script_sig".into());
        }
        let items: Vec<&[u8]> = input.witness.iter().collect();
        let [sig, key] = items[..] else {
            return Err(format!("input {index}: witness has {} items", items.len()));
        };
        let sig = bitcoin::ecdsa::Signature::from_slice(sig).map_err(|e| e.to_string())?;
        let key = bitcoin::PublicKey::from_slice(key).map_err(|e| e.to_string())?;
        let hash = key.wpubkey_hash().map_err(|e| e.to_string())?;
        if prev.script_pubkey != ScriptBuf::new_p2wpkh(&hash) {
            return Err(format!("input {index}: key does not own the prevout"));
        }
        let sighash = cache
            .p2wpkh_signature_hash(index, &prev.script_pubkey, prev.value, sig.sighash_type)
            .map_err(|e| e.to_string())?;
        secp.verify_ecdsa(&Message::from(sighash), &sig.signature, &key.inner)
            .map_err(|e| format!("input {index}: {e}"))?;
    }
    Ok(())
}

#[test]
fn wallet_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<OnchainWallet>();
}

#[test]
fn funds_appear_when_their_block_connects() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    assert_eq!(wallet.balance().total(), Amount::ZERO);

    fund(&wallet, &mut chain, 1, btc(1.0));

    let balance = wallet.balance();
    assert_eq!(balance.confirmed, btc(1.0));
    assert_eq!(balance.untrusted_pending, Amount::ZERO);
    assert_eq!(wallet.best_block(), chain.id(1));
}

#[test]
fn filtered_blocks_are_applied_too() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    let address = wallet.new_address().unwrap();
    let tx = payment(9, vec![(address.script_pubkey(), btc(0.3))]);
    let height = chain.mine(vec![tx.clone()]);
    let block = chain.block(height);
    wallet.filtered_block_connected(&block.header, &[(1, &tx)], height);
    assert_eq!(wallet.balance().confirmed, btc(0.3));
    assert_eq!(wallet.best_block(), chain.id(1));
}

#[test]
fn pending_then_confirmed_balance() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();

    // Incoming, seen before it confirms: someone else's coin, so untrusted.
    let address = wallet.new_address().unwrap();
    let incoming = payment(2, vec![(address.script_pubkey(), btc(0.4))]);
    wallet.transaction_broadcast(&incoming).unwrap();
    let balance = wallet.balance();
    assert_eq!(balance.untrusted_pending, btc(0.4));
    assert_eq!(balance.confirmed, Amount::ZERO);

    let height = chain.mine(vec![incoming.clone()]);
    wallet.block_connected(chain.block(height), height);
    let balance = wallet.balance();
    assert_eq!(balance.confirmed, btc(0.4));
    assert_eq!(balance.untrusted_pending, Amount::ZERO);

    // Our own spend: the coin is gone at once and the change is trusted pending.
    let outside = signer(7);
    let dest_wallet = open(&MemKv::new(), outside, genesis_id());
    let dest = dest_wallet.new_address().unwrap();
    let spend = wallet.build_send(&dest, btc(0.1), feerate()).unwrap();
    wallet.transaction_broadcast(&spend).unwrap();
    let balance = wallet.balance();
    assert_eq!(balance.confirmed, Amount::ZERO);
    let fee = btc(0.4) - spend.output.iter().map(|o| o.value).sum::<Amount>();
    assert_eq!(balance.trusted_pending, btc(0.4) - btc(0.1) - fee);

    let height = chain.mine(vec![spend]);
    wallet.block_connected(chain.block(height), height);
    let balance = wallet.balance();
    assert_eq!(balance.trusted_pending, Amount::ZERO);
    assert_eq!(balance.confirmed, btc(0.3) - fee);
}

#[test]
fn funding_tx_pays_exactly_and_is_fully_signed() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    let funding = fund(&wallet, &mut chain, 1, btc(1.0));

    let script = witness(0x42).to_p2wsh();
    let amount = Amount::from_sat(250_000);
    let tx = build_funding_tx(&wallet, &witness(0x42), amount, feerate()).unwrap();

    let to_script: Vec<&TxOut> = tx
        .output
        .iter()
        .filter(|o| o.script_pubkey == script)
        .collect();
    assert_eq!(to_script.len(), 1);
    assert_eq!(to_script[0].value, amount);

    let prev = prevouts(&[&funding]);
    verify_p2wpkh(&tx, &prev).unwrap();
    // The check above is a real check: the same witness does not fit an altered transaction.
    let mut altered = tx.clone();
    altered.output[0].value -= Amount::from_sat(1);
    assert!(verify_p2wpkh(&altered, &prev).is_err());

    // One input, funding + change: a sane size, and the requested fee rate is met (not vastly
    // exceeded).
    assert_eq!(tx.input.len(), 1);
    assert_eq!(tx.output.len(), 2);
    let vsize = tx.vsize() as u64;
    assert!((100..200).contains(&vsize), "vsize {vsize}");
    let fee = btc(1.0) - tx.output.iter().map(|o| o.value).sum::<Amount>();
    assert!(fee >= feerate() * tx.weight(), "fee {fee}");
    assert!(fee <= Amount::from_sat(6 * vsize), "fee {fee}");

    let change = tx
        .output
        .iter()
        .find(|o| o.script_pubkey != script)
        .unwrap();
    assert!(wallet.is_mine(&change.script_pubkey));
    assert_eq!(
        wallet
            .read()
            .wallet
            .derivation_of_spk(change.script_pubkey.clone())
            .map(|(k, _)| k),
        Some(KeychainKind::Internal)
    );
}

#[test]
fn insufficient_funds_is_a_typed_error() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    fund(&wallet, &mut chain, 1, btc(1.0));

    let script = witness(1);
    match build_funding_tx(&wallet, &script, btc(2.0), feerate()) {
        Err(WalletError::InsufficientFunds { needed, available }) => {
            assert!(needed > btc(2.0), "needed {needed}");
            assert!(
                available <= btc(1.0) && available > btc(0.99),
                "available {available}"
            );
        }
        other => panic!("expected InsufficientFunds, got {other:?}"),
    }
    // Nothing was reserved by the failed attempt.
    let script = witness(2);
    assert!(build_funding_tx(&wallet, &script, btc(0.5), feerate()).is_ok());
}

#[test]
fn bad_requests_are_refused() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    fund(&wallet, &mut chain, 1, btc(1.0));
    let script = witness(3);

    let zero = build_funding_tx(&wallet, &script, Amount::ZERO, feerate());
    assert!(
        matches!(zero, Err(WalletError::InvalidInput(_))),
        "{zero:?}"
    );
    let dust = build_funding_tx(&wallet, &script, Amount::from_sat(10), feerate());
    assert!(
        matches!(dust, Err(WalletError::InvalidInput(_))),
        "{dust:?}"
    );
    let free = build_funding_tx(&wallet, &script, btc(0.1), FeeRate::ZERO);
    assert!(
        matches!(free, Err(WalletError::InvalidInput(_))),
        "{free:?}"
    );

    let mainnet = SeedWalletSigner::new(&[5; 32], Network::Bitcoin).unwrap();
    let mainnet_wallet = OnchainWallet::load_or_create(
        Arc::new(mainnet),
        Network::Bitcoin,
        MemKv::new(),
        BlockId {
            height: 0,
            hash: bitcoin::blockdata::constants::genesis_block(Network::Bitcoin).block_hash(),
        },
    )
    .unwrap();
    let foreign = mainnet_wallet.new_address().unwrap();
    let wrong_net = wallet.build_send(&foreign, btc(0.1), feerate());
    assert!(
        matches!(wrong_net, Err(WalletError::InvalidInput(_))),
        "{wrong_net:?}"
    );
}

#[test]
fn built_inputs_are_reserved_until_broadcast_or_released() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    fund(&wallet, &mut chain, 1, btc(1.0));
    fund(&wallet, &mut chain, 2, btc(1.0));

    let first = build_funding_tx(&wallet, &witness(1), btc(0.6), feerate()).unwrap();
    let second = build_funding_tx(&wallet, &witness(2), btc(0.6), feerate()).unwrap();
    let inputs = |tx: &Transaction| -> Vec<OutPoint> {
        tx.input.iter().map(|i| i.previous_output).collect()
    };
    assert!(inputs(&first)
        .iter()
        .all(|op| !inputs(&second).contains(op)));
    assert!(matches!(
        build_funding_tx(&wallet, &witness(3), btc(0.6), feerate()),
        Err(WalletError::InsufficientFunds { .. })
    ));

    wallet.release_reservation(&second).unwrap();
    let third = build_funding_tx(&wallet, &witness(3), btc(0.6), feerate()).unwrap();
    assert_eq!(inputs(&third), inputs(&second));

    // Broadcasting turns the reservation into a real spend, across a restart too.
    wallet.transaction_broadcast(&first).unwrap();
    drop(wallet);
    let wallet = open(&kv, signer(1), genesis_id());
    let fourth = build_funding_tx(&wallet, &witness(4), btc(0.6), feerate()).unwrap();
    assert!(inputs(&fourth)
        .iter()
        .all(|op| !inputs(&first).contains(op)));
}

#[test]
fn reload_keeps_balance_tip_and_address_index() {
    let kv = MemKv::new();
    let mut chain = Chain::new();
    let (balance, tip, revealed) = {
        let wallet = open(&kv, signer(1), genesis_id());
        fund(&wallet, &mut chain, 1, btc(1.0));
        let spare = wallet.new_address().unwrap();
        let spend = wallet.build_send(&spare, btc(0.2), feerate()).unwrap();
        wallet.transaction_broadcast(&spend).unwrap();
        (wallet.balance(), wallet.best_block(), spare)
    };
    assert!(balance.trusted_pending > Amount::ZERO);

    let wallet = open(&kv, signer(1), genesis_id());
    assert_eq!(wallet.balance(), balance);
    assert_eq!(wallet.best_block(), tip);

    // Two external addresses were revealed before; the next must be the third, not a reuse.
    let reference = open(&MemKv::new(), signer(1), genesis_id());
    let expected: Vec<_> = (0..3).map(|_| reference.new_address().unwrap()).collect();
    assert_eq!(expected[1], revealed);
    assert_eq!(wallet.new_address().unwrap(), expected[2]);
}

#[test]
fn new_wallet_starts_at_its_birthday() {
    let mut chain = Chain::new();
    for _ in 0..5 {
        chain.mine(vec![]);
    }
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), chain.id(5));
    assert_eq!(wallet.best_block(), chain.id(5));

    // Older blocks are not wanted; blocks it has are ignored; the next one connects.
    wallet.connect_block(chain.block(3), 3).unwrap();
    wallet.connect_block(chain.block(5), 5).unwrap();
    assert_eq!(wallet.best_block(), chain.id(5));
    chain.mine(vec![]);
    wallet.connect_block(chain.block(6), 6).unwrap();
    assert_eq!(wallet.best_block(), chain.id(6));

    // A gap is refused rather than silently skipped.
    chain.mine(vec![]);
    chain.mine(vec![]);
    let gap = wallet.connect_block(chain.block(8), 8);
    assert!(matches!(gap, Err(WalletError::Chain(_))), "{gap:?}");
    assert_eq!(wallet.best_block(), chain.id(6));

    // Replaying what it already saw (a restarted node) changes nothing.
    wallet.connect_block(chain.block(6), 6).unwrap();
    wallet.connect_block(chain.block(7), 7).unwrap();
    wallet.connect_block(chain.block(6), 6).unwrap();
    assert_eq!(wallet.best_block(), chain.id(7));

    // The birthday is stored: a reload does not fall back to genesis.
    drop(wallet);
    let wallet = open(&kv, signer(1), genesis_id());
    assert!(wallet.best_block().height >= 5);
}

#[test]
fn birthday_at_height_zero_must_be_genesis() {
    let genesis = support::Chain::new().id(0);
    assert!(
        OnchainWallet::load_or_create(signer(1), Network::Regtest, MemKv::new(), genesis).is_ok()
    );
    let mut chain = Chain::new();
    chain.mine(vec![]);
    let wrong = BlockId {
        height: 0,
        hash: chain.id(1).hash,
    };
    let result = OnchainWallet::load_or_create(signer(1), Network::Regtest, MemKv::new(), wrong);
    assert!(matches!(result, Err(WalletError::Chain(_))));
}

#[test]
fn reorg_drops_the_stale_block_and_takes_the_new_one() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    fund(&wallet, &mut chain, 1, btc(1.0));
    let stale = fund(&wallet, &mut chain, 2, btc(0.5));
    assert_eq!(wallet.balance().confirmed, btc(1.5));

    wallet.blocks_disconnected(BestBlock::new(chain.id(1).hash, 1));
    assert_eq!(wallet.best_block(), chain.id(1));
    let balance = wallet.balance();
    assert_eq!(balance.confirmed, btc(1.0));
    // bdk keeps a transaction from a dropped block as unconfirmed (it is back in the mempool
    // after a real reorg), and as someone else's coin it is untrusted.
    assert_eq!(balance.untrusted_pending, btc(0.5));

    chain.truncate(1);
    let replacement = fund(&wallet, &mut chain, 3, btc(0.2));
    assert_eq!(wallet.best_block(), chain.id(2));
    let balance = wallet.balance();
    assert_eq!(balance.confirmed, btc(1.2));
    assert_eq!(balance.untrusted_pending, btc(0.5));

    // The same stale transaction confirming again later counts again.
    let height = chain.mine(vec![stale]);
    wallet.block_connected(chain.block(height), height);
    let balance = wallet.balance();
    assert_eq!(balance.confirmed, btc(1.7));
    assert_eq!(balance.untrusted_pending, Amount::ZERO);

    // And the store agrees.
    drop(wallet);
    let wallet = open(&kv, signer(1), genesis_id());
    assert_eq!(wallet.best_block(), chain.id(3));
    assert_eq!(wallet.balance().confirmed, btc(1.7));
    assert!(wallet
        .read()
        .wallet
        .get_tx(replacement.compute_txid())
        .is_some());
}

#[test]
fn competing_block_replaces_the_tip_without_a_disconnect() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    fund(&wallet, &mut chain, 1, btc(1.0));
    fund(&wallet, &mut chain, 2, btc(0.5));
    chain.mine(vec![]);
    wallet.block_connected(chain.block(3), 3);

    // A branch forking below the tip, fed without blocks_disconnected.
    chain.truncate(1);
    let height = chain.mine(vec![]);
    wallet.connect_block(chain.block(height), height).unwrap();
    assert_eq!(wallet.best_block(), chain.id(2));
    assert_eq!(wallet.balance().confirmed, btc(1.0));

    // The stale block paid the wallet: its payment is no longer confirmed.
    assert_eq!(wallet.balance().untrusted_pending, btc(0.5));

    // A reorg is persisted at once: the store never keeps a tip on the stale branch.
    drop(wallet);
    let wallet = open(&kv, signer(1), genesis_id());
    assert_eq!(wallet.best_block(), chain.id(2));
    assert_eq!(wallet.balance().confirmed, btc(1.0));
}

#[test]
fn a_failed_disconnect_still_lets_the_new_branch_in() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    fund(&wallet, &mut chain, 1, btc(1.0));
    fund(&wallet, &mut chain, 2, btc(0.5));
    let stale_tip = wallet.best_block();

    kv.set_failing(true);
    assert!(matches!(
        wallet.disconnect_to(chain.id(1)),
        Err(WalletError::Persist(_))
    ));
    wallet.blocks_disconnected(BestBlock::new(chain.id(1).hash, 1));
    assert_eq!(wallet.best_block(), stale_tip);
    kv.set_failing(false);

    chain.truncate(1);
    fund(&wallet, &mut chain, 3, btc(0.2));
    assert_eq!(wallet.best_block(), chain.id(2));
    assert_eq!(wallet.balance().confirmed, btc(1.2));

    drop(wallet);
    let wallet = open(&kv, signer(1), genesis_id());
    assert_eq!(wallet.best_block(), chain.id(2));
    assert_eq!(wallet.balance().confirmed, btc(1.2));
}

#[test]
fn change_destinations_are_fresh_and_recognised() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let a = wallet.get_change_destination_script().unwrap();
    let b = wallet.get_change_destination_script().unwrap();
    assert_ne!(a, b);
    for script in [&a, &b] {
        assert!(wallet.is_mine(script));
        assert_eq!(
            wallet
                .read()
                .wallet
                .derivation_of_spk(script.clone())
                .map(|(k, _)| k),
            Some(KeychainKind::Internal)
        );
    }
    // A change output built now does not reuse a script handed to the sweeper.
    let mut chain = Chain::new();
    fund(&wallet, &mut chain, 1, btc(1.0));
    let target = witness(8);
    let tx = build_funding_tx(&wallet, &target, btc(0.1), feerate()).unwrap();
    assert!(tx
        .output
        .iter()
        .all(|o| o.script_pubkey != a && o.script_pubkey != b));

    // Revealed indices survive a restart: no script is handed out twice.
    drop(wallet);
    let wallet = open(&kv, signer(1), genesis_id());
    let c = wallet.get_change_destination_script().unwrap();
    assert!(c != a && c != b);
    assert!(tx.output.iter().all(|o| o.script_pubkey != c));

    // Funds swept to such a script count as the wallet's.
    let sweep = payment(4, vec![(c, btc(0.05))]);
    let height = chain.mine(vec![sweep]);
    wallet.block_connected(chain.block(height), height);
    assert_eq!(wallet.balance().confirmed, btc(1.05));
}

#[test]
fn compaction_bounds_the_log_and_prunes_old_checkpoints() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    fund(&wallet, &mut chain, 1, btc(1.0));
    for _ in 0..600 {
        let height = chain.mine(vec![]);
        wallet.block_connected(chain.block(height), height);
    }
    let mut last = None;
    for _ in 0..COMPACT_AFTER + 10 {
        last = Some(wallet.new_address().unwrap());
    }
    assert!(kv.keys() <= COMPACT_AFTER, "{} keys", kv.keys());

    let checkpoints = wallet
        .read()
        .wallet
        .local_chain()
        .iter_checkpoints()
        .count();
    // genesis + the anchoring block + the recent window
    assert!(
        checkpoints <= RECENT_CHECKPOINTS as usize + 3,
        "{checkpoints} checkpoints"
    );
    assert_eq!(wallet.best_block(), chain.id(chain.tip_height()));
    assert_eq!(wallet.balance().confirmed, btc(1.0));

    // A reorg inside the kept window still connects after pruning.
    let fork = chain.tip_height() - 5;
    wallet.blocks_disconnected(BestBlock::new(chain.id(fork).hash, fork));
    chain.truncate(fork);
    fund(&wallet, &mut chain, 2, btc(0.1));
    assert_eq!(wallet.best_block(), chain.id(fork + 1));
    assert_eq!(wallet.balance().confirmed, btc(1.1));

    drop(wallet);
    let wallet = open(&kv, signer(1), genesis_id());
    assert_eq!(wallet.best_block(), chain.id(fork + 1));
    assert_eq!(wallet.balance().confirmed, btc(1.1));
    let next = wallet.new_address().unwrap();
    let reference = open(&MemKv::new(), signer(1), genesis_id());
    let expected: Vec<_> = (0..COMPACT_AFTER + 13)
        .map(|_| reference.new_address().unwrap())
        .collect();
    assert_eq!(Some(&expected[COMPACT_AFTER + 10]), last.as_ref());
    assert_eq!(next, expected[COMPACT_AFTER + 12]);
}

#[test]
fn every_state_the_store_passes_through_loads() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    fund(&wallet, &mut chain, 1, btc(1.0));
    for _ in 0..COMPACT_AFTER + 5 {
        wallet.new_address().unwrap();
    }
    fund(&wallet, &mut chain, 2, btc(0.5));
    wallet.blocks_disconnected(BestBlock::new(chain.id(1).hash, 1));
    chain.truncate(1);
    fund(&wallet, &mut chain, 3, btc(0.25));

    let history = kv.history();
    let steps = history.len();
    assert!(steps > COMPACT_AFTER);
    let mut funded_from = None;
    for (step, state) in history.into_iter().enumerate() {
        let reopened = OnchainWallet::load_or_create(
            signer(1),
            Network::Regtest,
            MemKv::from_state(state),
            genesis_id(),
        )
        .unwrap_or_else(|e| panic!("state after write {step} does not load: {e}"));
        let confirmed = reopened.balance().confirmed;
        if confirmed >= btc(1.0) {
            funded_from.get_or_insert(step);
        } else {
            assert!(funded_from.is_none(), "step {step} lost the first funds");
        }
        if step + 1 == steps {
            assert_eq!(reopened.best_block(), chain.id(2));
            assert_eq!(confirmed, btc(1.25));
        }
    }
    assert!(funded_from.is_some());
}

#[test]
fn failed_writes_are_reported_and_retried() {
    let kv = MemKv::new();
    let wallet = open(&kv, signer(1), genesis_id());
    let mut chain = Chain::new();
    let address = wallet.new_address().unwrap();

    kv.set_failing(true);
    assert!(matches!(wallet.new_address(), Err(WalletError::Persist(_))));
    let tx = payment(1, vec![(address.script_pubkey(), btc(1.0))]);
    let height = chain.mine(vec![tx]);
    let connected = wallet.connect_block(chain.block(height), height);
    assert!(matches!(connected, Err(WalletError::Persist(_))));
    // The block is applied in memory even though it is not durable yet.
    assert_eq!(wallet.balance().confirmed, btc(1.0));

    kv.set_failing(false);
    let after = wallet.new_address().unwrap();
    drop(wallet);
    let wallet = open(&kv, signer(1), genesis_id());
    assert_eq!(wallet.balance().confirmed, btc(1.0));
    assert_eq!(wallet.best_block(), chain.id(1));
    assert_ne!(wallet.new_address().unwrap(), after);
}

#[test]
fn a_stored_wallet_only_opens_with_its_own_signer_and_network() {
    let kv = MemKv::new();
    drop(open(&kv, signer(1), genesis_id()));
    let other =
        OnchainWallet::load_or_create(signer(2), Network::Regtest, kv.clone(), genesis_id());
    assert!(
        matches!(other, Err(WalletError::Descriptor(_))),
        "{:?}",
        other.err()
    );
    let testnet =
        OnchainWallet::load_or_create(signer(1), Network::Testnet, kv.clone(), genesis_id());
    assert!(
        matches!(testnet, Err(WalletError::InvalidInput(_))),
        "{:?}",
        testnet.err()
    );
    assert!(OnchainWallet::load_or_create(signer(1), Network::Regtest, kv, genesis_id()).is_ok());
}

/// A signer that hands the host private descriptors: the wallet must refuse it.
struct LeakySigner;

impl WalletSigner for LeakySigner {
    fn descriptors(&self) -> Result<(String, String), WalletError> {
        let xprv = "tprv8ZgxMBicQKsPdy6LMhUtFHAgpocR8GC6QmwMSFpZs7h6Eziw3SpThFfczTDh5rW2krkqffa11UpX3XkeTTB2FvzZKWXqPY54Y6Rq4AQ5R8L";
        Ok((
            format!("wpkh({xprv}/84'/1'/0'/0/*)"),
            format!("wpkh({xprv}/84'/1'/0'/1/*)"),
        ))
    }

    fn sign_psbt(&self, _psbt: &mut bitcoin::Psbt) -> Result<(), WalletError> {
        Ok(())
    }
}

#[test]
fn private_descriptors_are_refused() {
    let result = OnchainWallet::load_or_create(
        Arc::new(LeakySigner),
        Network::Regtest,
        MemKv::new(),
        genesis_id(),
    );
    assert!(
        matches!(result, Err(WalletError::Descriptor(_))),
        "{:?}",
        result.err()
    );
}

/// A signer that signs nothing: building must fail cleanly and free the reserved coins.
struct LazySigner(Arc<SeedWalletSigner>);

impl WalletSigner for LazySigner {
    fn descriptors(&self) -> Result<(String, String), WalletError> {
        self.0.descriptors()
    }

    fn sign_psbt(&self, _psbt: &mut bitcoin::Psbt) -> Result<(), WalletError> {
        Ok(())
    }
}

#[test]
fn unsigned_inputs_fail_the_build_and_release_coins() {
    let kv = MemKv::new();
    let lazy = OnchainWallet::load_or_create(
        Arc::new(LazySigner(signer(1))),
        Network::Regtest,
        kv.clone(),
        genesis_id(),
    )
    .unwrap();
    let mut chain = Chain::new();
    fund(&lazy, &mut chain, 1, btc(1.0));
    let script = witness(6);
    let result = build_funding_tx(&lazy, &script, btc(0.9), feerate());
    assert!(matches!(result, Err(WalletError::Signing(_))), "{result:?}");
    assert!(lazy.read().reserved.is_empty());
}
