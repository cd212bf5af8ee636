//! Test fixtures: an in-memory KVStoreSync that remembers every state it passed through, and a
//! builder of synthetic regtest blocks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bdk_wallet::chain::BlockId;
use bitcoin::absolute::LockTime;
use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::blockdata::constants::genesis_block;
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, CompactTarget, FeeRate, Network, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use flotilla_signer::wallet_keys::{WalletKeys, WalletKeysError};
use lightning::io;
use lightning::util::persist::KVStoreSync;

use crate::wallet::{OnchainWallet, WalletError, WalletSigner};

type Map = HashMap<(String, String, String), Vec<u8>>;

/// In-memory store. Every successful write or remove records the resulting state, so a test can
/// load the wallet as a crash right after any single operation would have left it.
#[derive(Default)]
pub struct MemKv {
    map: Mutex<Map>,
    history: Mutex<Vec<Map>>,
    fail: AtomicBool,
}

impl MemKv {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Makes every later write/remove fail (or succeed again).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    pub fn keys(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Every state the store has been in, oldest first.
    pub fn history(&self) -> Vec<Map> {
        self.history.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// A store holding exactly `state`.
    pub fn from_state(state: Map) -> Arc<Self> {
        let kv = Self::default();
        *kv.map.lock().unwrap() = state;
        Arc::new(kv)
    }

    fn mutate(&self, f: impl FnOnce(&mut Map)) -> Result<(), io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Other, "injected failure"));
        }
        let mut map = self.map.lock().unwrap();
        f(&mut map);
        self.history.lock().unwrap().push(map.clone());
        Ok(())
    }
}

impl KVStoreSync for MemKv {
    fn read(&self, primary: &str, secondary: &str, key: &str) -> Result<Vec<u8>, io::Error> {
        self.map
            .lock()
            .unwrap()
            .get(&(primary.into(), secondary.into(), key.into()))
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such key"))
    }

    fn write(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        buf: Vec<u8>,
    ) -> Result<(), io::Error> {
        self.mutate(|m| {
            m.insert((primary.into(), secondary.into(), key.into()), buf);
        })
    }

    fn remove(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        _lazy: bool,
    ) -> Result<(), io::Error> {
        self.mutate(|m| {
            m.remove(&(primary.into(), secondary.into(), key.into()));
        })
    }

    fn list(&self, primary: &str, secondary: &str) -> Result<Vec<String>, io::Error> {
        Ok(self
            .map
            .lock()
            .unwrap()
            .keys()
            .filter(|(p, s, _)| p == primary && s == secondary)
            .map(|(_, _, k)| k.clone())
            .collect())
    }
}

/// The customer's wallet keys in this process, behind the trait the wallet signs through.
pub struct SeedWalletSigner(WalletKeys);

impl SeedWalletSigner {
    pub fn new(seed: &[u8; 32], network: Network) -> Result<Self, WalletKeysError> {
        WalletKeys::new(seed, network).map(SeedWalletSigner)
    }
}

impl WalletSigner for SeedWalletSigner {
    fn descriptors(&self) -> Result<(String, String), WalletError> {
        Ok(self.0.descriptors())
    }

    fn sign_psbt(&self, psbt: &mut bitcoin::Psbt) -> Result<(), WalletError> {
        self.0.sign_psbt(psbt).map_err(|e| match e {
            WalletKeysError::Descriptor(e) => WalletError::Descriptor(e),
            WalletKeysError::Signing(e) => WalletError::Signing(e),
        })
    }
}

pub fn signer(seed_byte: u8) -> Arc<SeedWalletSigner> {
    Arc::new(SeedWalletSigner::new(&[seed_byte; 32], Network::Regtest).unwrap())
}

pub fn genesis_id() -> BlockId {
    BlockId {
        height: 0,
        hash: genesis_block(Network::Regtest).block_hash(),
    }
}

pub fn open(kv: &Arc<MemKv>, signer: Arc<dyn WalletSigner>, birthday: BlockId) -> OnchainWallet {
    OnchainWallet::load_or_create(signer, Network::Regtest, kv.clone(), birthday).unwrap()
}

/// A synthetic regtest chain; bdk checks linkage, not proof of work.
pub struct Chain {
    /// `blocks[h]` is the block at height `h` (index 0 is genesis).
    pub blocks: Vec<Block>,
    salt: u32,
}

impl Chain {
    pub fn new() -> Self {
        Chain {
            blocks: vec![genesis_block(Network::Regtest)],
            salt: 0,
        }
    }

    pub fn tip_height(&self) -> u32 {
        (self.blocks.len() - 1) as u32
    }

    pub fn id(&self, height: u32) -> BlockId {
        BlockId {
            height,
            hash: self.blocks[height as usize].block_hash(),
        }
    }

    /// Drops blocks above `height` (the start of a competing branch).
    pub fn truncate(&mut self, height: u32) {
        self.blocks.truncate(height as usize + 1);
    }

    /// Mines a block holding a coinbase (paying elsewhere) and `txs`; returns its height.
    pub fn mine(&mut self, txs: Vec<Transaction>) -> u32 {
        self.salt += 1;
        let prev = self.blocks.last().unwrap();
        let height = self.blocks.len() as u32;
        let coinbase = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::builder()
                    .push_int(height as i64)
                    .push_int(self.salt as i64)
                    .into_script(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_btc(50.0).unwrap(),
                script_pubkey: ScriptBuf::new_op_return([]),
            }],
        };
        let mut block = Block {
            header: Header {
                version: BlockVersion::TWO,
                prev_blockhash: prev.block_hash(),
                merkle_root: TxMerkleNode::all_zeros(),
                time: prev.header.time + 600,
                bits: CompactTarget::from_consensus(0x207fffff),
                nonce: self.salt,
            },
            txdata: std::iter::once(coinbase).chain(txs).collect(),
        };
        block.header.merkle_root = block.compute_merkle_root().unwrap();
        self.blocks.push(block);
        height
    }

    pub fn block(&self, height: u32) -> &Block {
        &self.blocks[height as usize]
    }
}

/// A transaction paying `outputs` from a made-up outside coin (`tag` keeps txids distinct).
pub fn payment(tag: u8, outputs: Vec<(ScriptBuf, Amount)>) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_byte_array([tag; 32]),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[[tag; 64].to_vec()]),
        }],
        output: outputs
            .into_iter()
            .map(|(script_pubkey, value)| TxOut {
                value,
                script_pubkey,
            })
            .collect(),
    }
}

/// Builds and signs a channel funding at once, freeing its inputs if signing fails: what the
/// host does in two steps, around the peer's signature of the node's first commitment.
pub fn build_funding_tx(
    wallet: &OnchainWallet,
    witness_script: &bitcoin::Script,
    amount: Amount,
    feerate: FeeRate,
) -> Result<Transaction, WalletError> {
    let psbt = wallet.build_funding_psbt(witness_script, amount, feerate)?;
    let unsigned = psbt.unsigned_tx.clone();
    wallet.sign_built(psbt).inspect_err(|_| {
        let _ = wallet.release_reservation(&unsigned);
    })
}
