//! `BlockSource` over JSON-RPC in bitcoind's dialect, tolerant of btcd, with a bounded block
//! cache so that each block is fetched from the chain node once however many nodes need it.

use std::sync::Arc;

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{Block, BlockHash, CompactTarget, TxMerkleNode, Work};
use lightning_block_sync::{
    AsyncBlockSourceResult, BlockData, BlockHeaderData, BlockSource, BlockSourceError,
};
use serde::Deserialize;

use super::cache::Lru;
use super::rpc::{RpcClient, RpcError};

/// Blocks kept in memory for nodes that join or restart behind the tip. A regtest block is tiny;
/// on mainnet this is a few hundred MB at most, and anything older is fetched again.
const BLOCK_CACHE: usize = 144;
const HEADER_CACHE: usize = 10_000;

/// The chain node behind every node of a host.
pub struct RpcBlockSource {
    rpc: RpcClient,
    blocks: Lru<BlockHash, Arc<Block>>,
    headers: Lru<BlockHash, BlockHeaderData>,
}

/// The fields of bitcoind's verbose `getblockheader` that btcd also sends (btcd lacks `chainwork`).
#[derive(Deserialize)]
struct VerboseHeader {
    hash: BlockHash,
    height: u32,
    version: i32,
    #[serde(default)]
    previousblockhash: Option<BlockHash>,
    merkleroot: TxMerkleNode,
    time: u32,
    bits: String,
    nonce: u32,
    #[serde(default)]
    chainwork: Option<String>,
}

impl RpcBlockSource {
    pub fn new(rpc: RpcClient) -> Self {
        RpcBlockSource {
            rpc,
            blocks: Lru::new(BLOCK_CACHE),
            headers: Lru::new(HEADER_CACHE),
        }
    }

    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// The block with this hash, from the cache or fetched once.
    pub async fn block(&self, hash: &BlockHash) -> Result<Arc<Block>, RpcError> {
        if let Some(block) = self.blocks.get(hash) {
            return Ok(block);
        }
        let hex: String = self
            .rpc
            .call("getblock", serde_json::json!([hash.to_string(), 0]))
            .await?;
        let block: Block = decode_hex(&hex).map_err(|reason| RpcError::Decode {
            method: "getblock".into(),
            reason,
        })?;
        if block.block_hash() != *hash {
            return Err(RpcError::Decode {
                method: "getblock".into(),
                reason: "wrong block".into(),
            });
        }
        let block = Arc::new(block);
        self.blocks.insert(*hash, block.clone());
        Ok(block)
    }

    /// Header, height and chain work of a block.
    pub async fn header(&self, hash: &BlockHash) -> Result<BlockHeaderData, RpcError> {
        if let Some(h) = self.headers.get(hash) {
            return Ok(h);
        }
        let v: VerboseHeader = self
            .rpc
            .call(
                "getblockheader",
                serde_json::json!([hash.to_string(), true]),
            )
            .await?;
        let data = header_from_verbose(v).map_err(|reason| RpcError::Decode {
            method: "getblockheader".into(),
            reason,
        })?;
        if data.header.block_hash() != *hash {
            return Err(RpcError::Decode {
                method: "getblockheader".into(),
                reason: "header does not hash to the requested block".into(),
            });
        }
        self.headers.insert(*hash, data);
        Ok(data)
    }

    pub async fn best_block_hash(&self) -> Result<BlockHash, RpcError> {
        let hash: String = self
            .rpc
            .call("getbestblockhash", serde_json::json!([]))
            .await?;
        hash.parse().map_err(|_| RpcError::Decode {
            method: "getbestblockhash".into(),
            reason: format!("not a block hash: {hash}"),
        })
    }
}

fn decode_hex<T: bitcoin::consensus::Decodable>(hex: &str) -> Result<T, String> {
    let bytes = <Vec<u8> as bitcoin::hex::FromHex>::from_hex(hex).map_err(|e| e.to_string())?;
    bitcoin::consensus::deserialize::<T>(&bytes).map_err(|e| e.to_string())
}

/// Rebuilds the header from its verbose fields. Without `chainwork` (btcd), the work of a chain
/// of constant difficulty is `(height + 1) * work`: exact on regtest, whose difficulty never
/// changes, which is the only network btcd serves Flotilla on.
fn header_from_verbose(v: VerboseHeader) -> Result<BlockHeaderData, String> {
    let bits = u32::from_str_radix(v.bits.trim_start_matches("0x"), 16)
        .map_err(|_| format!("bad bits {:?}", v.bits))?;
    let header = Header {
        version: Version::from_consensus(v.version),
        prev_blockhash: v.previousblockhash.unwrap_or_else(BlockHash::all_zeros),
        merkle_root: v.merkleroot,
        time: v.time,
        bits: CompactTarget::from_consensus(bits),
        nonce: v.nonce,
    };
    if header.block_hash() != v.hash {
        return Err("verbose header fields do not hash to its hash".into());
    }
    let chainwork = match v.chainwork {
        Some(hex) => {
            let bytes: Vec<u8> = bitcoin::hex::FromHex::from_hex(&format!("{hex:0>64}"))
                .map_err(|_| format!("bad chainwork {hex:?}"))?;
            let arr: [u8; 32] = bytes
                .try_into()
                .map_err(|_| "chainwork too long".to_string())?;
            Work::from_be_bytes(arr)
        }
        None => times(header.work(), v.height + 1),
    };
    Ok(BlockHeaderData {
        header,
        height: v.height,
        chainwork,
    })
}

/// `work * n` by doubling (Work has addition only): log2(n) additions, not n.
fn times(work: Work, mut n: u32) -> Work {
    let mut total = Work::from_be_bytes([0; 32]);
    let mut power = work;
    while n > 0 {
        if n & 1 == 1 {
            total = total + power;
        }
        power = power + power;
        n >>= 1;
    }
    total
}

fn to_source_error(e: RpcError) -> BlockSourceError {
    if e.is_permanent() {
        BlockSourceError::persistent(e)
    } else {
        BlockSourceError::transient(e)
    }
}

impl BlockSource for RpcBlockSource {
    fn get_header<'a>(
        &'a self,
        header_hash: &'a BlockHash,
        _height_hint: Option<u32>,
    ) -> AsyncBlockSourceResult<'a, BlockHeaderData> {
        Box::pin(async move { self.header(header_hash).await.map_err(to_source_error) })
    }

    fn get_block<'a>(
        &'a self,
        header_hash: &'a BlockHash,
    ) -> AsyncBlockSourceResult<'a, BlockData> {
        Box::pin(async move {
            let block = self.block(header_hash).await.map_err(to_source_error)?;
            Ok(BlockData::FullBlock((*block).clone()))
        })
    }

    fn get_best_block(&self) -> AsyncBlockSourceResult<'_, (BlockHash, Option<u32>)> {
        Box::pin(async move {
            let hash = self.best_block_hash().await.map_err(to_source_error)?;
            Ok((hash, None))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chainwork_is_derived_when_missing() {
        let genesis = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest);
        let v = VerboseHeader {
            hash: genesis.block_hash(),
            height: 0,
            version: genesis.header.version.to_consensus(),
            previousblockhash: None,
            merkleroot: genesis.header.merkle_root,
            time: genesis.header.time,
            bits: format!("{:08x}", genesis.header.bits.to_consensus()),
            nonce: genesis.header.nonce,
            chainwork: None,
        };
        let data = header_from_verbose(v).unwrap();
        assert_eq!(data.header, genesis.header);
        assert_eq!(data.chainwork, genesis.header.work());
    }

    #[test]
    fn times_matches_repeated_addition() {
        let work = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest)
            .header
            .work();
        let mut sum = work;
        for n in 2..=300u32 {
            sum = sum + work;
            assert_eq!(times(work, n), sum, "n = {n}");
        }
    }
}
