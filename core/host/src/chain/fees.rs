//! One fee estimator for every node of a host, refreshed once per new block.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use lightning::chain::chaininterface::{
    ConfirmationTarget, FeeEstimator, FEERATE_FLOOR_SATS_PER_KW,
};
use serde::Deserialize;

use super::rpc::{RpcClient, RpcError};

/// Estimates in sat per 1000 weight units, read lock-free by thousands of nodes.
pub struct FeeCache {
    /// Target for on-chain urgency (force-close sweeps, maximum).
    urgent: AtomicU32,
    /// Ordinary channel fee and closing fee.
    normal: AtomicU32,
    /// Background spends (sweeps of our own outputs, minimums).
    background: AtomicU32,
    /// Set once the chain node answers "method not found" (btcd), so each block does not pay
    /// for three failing calls.
    no_smart_fee: AtomicBool,
}

/// Used when the chain node has no estimate (regtest, btcd without history): 2, 1 and 0.25 sat/vB.
const FALLBACK_URGENT: u32 = 2000;
const FALLBACK_NORMAL: u32 = 1000;
const FALLBACK_BACKGROUND: u32 = FEERATE_FLOOR_SATS_PER_KW;

impl Default for FeeCache {
    fn default() -> Self {
        FeeCache {
            urgent: AtomicU32::new(FALLBACK_URGENT),
            normal: AtomicU32::new(FALLBACK_NORMAL),
            background: AtomicU32::new(FALLBACK_BACKGROUND),
            no_smart_fee: AtomicBool::new(false),
        }
    }
}

#[derive(Deserialize)]
struct SmartFee {
    feerate: Option<f64>,
}

impl FeeCache {
    /// Asks the chain node for estimates: `estimatesmartfee` (bitcoind), else `estimatefee`
    /// (btcd, BTC/kvB, -1 when unknown). Uses the fallbacks where neither knows. When the chain
    /// node cannot be reached, keeps the current values and stops at the first failed call, so
    /// a down or hung node costs one call timeout, not six.
    pub async fn refresh(&self, rpc: &RpcClient) {
        for (slot, blocks, fallback) in [
            (&self.urgent, 2u16, FALLBACK_URGENT),
            (&self.normal, 6, FALLBACK_NORMAL),
            (&self.background, 144, FALLBACK_BACKGROUND),
        ] {
            let btc_per_kvb = match self.smart_fee(rpc, blocks).await {
                Ok(Some(rate)) => rate,
                Ok(None) => match rpc
                    .call::<f64>("estimatefee", serde_json::json!([blocks]))
                    .await
                {
                    Ok(rate) => Some(rate),
                    Err(e) if e.is_unreachable() => {
                        tracing::info!(error = %e, "fee estimates kept: chain node unreachable");
                        return;
                    }
                    Err(_) => None,
                },
                Err(e) => {
                    tracing::info!(error = %e, "fee estimates kept: chain node unreachable");
                    return;
                }
            };
            let sat_per_kw = btc_per_kvb
                .filter(|r| r.is_finite() && *r > 0.0)
                .map(|r| (r * 100_000_000.0 / 4.0) as u32)
                .unwrap_or(fallback);
            slot.store(
                sat_per_kw.clamp(FEERATE_FLOOR_SATS_PER_KW, 1_000_000),
                Ordering::Relaxed,
            );
        }
    }

    /// `Ok(Some(estimate))` from `estimatesmartfee` (the estimate itself may be absent),
    /// `Ok(None)` when the chain node does not offer it, `Err` when it cannot be reached.
    async fn smart_fee(
        &self,
        rpc: &RpcClient,
        blocks: u16,
    ) -> Result<Option<Option<f64>>, RpcError> {
        if self.no_smart_fee.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match rpc
            .call::<SmartFee>("estimatesmartfee", serde_json::json!([blocks]))
            .await
        {
            Ok(fee) => Ok(Some(fee.feerate)),
            Err(RpcError::Rpc {
                code: METHOD_NOT_FOUND,
                ..
            }) => {
                self.no_smart_fee.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) if e.is_unreachable() => Err(e),
            Err(_) => Ok(None),
        }
    }
}

/// JSON-RPC's code for an unknown method.
const METHOD_NOT_FOUND: i64 = -32601;

impl FeeEstimator for FeeCache {
    fn get_est_sat_per_1000_weight(&self, target: ConfirmationTarget) -> u32 {
        let rate = match target {
            ConfirmationTarget::MaximumFeeEstimate | ConfirmationTarget::UrgentOnChainSweep => {
                // Leave room above the normal rate so counterparties' estimates are accepted.
                self.urgent
                    .load(Ordering::Relaxed)
                    .max(self.normal.load(Ordering::Relaxed) * 2)
            }
            ConfirmationTarget::NonAnchorChannelFee | ConfirmationTarget::AnchorChannelFee => {
                self.normal.load(Ordering::Relaxed)
            }
            ConfirmationTarget::ChannelCloseMinimum
            | ConfirmationTarget::MinAllowedAnchorChannelRemoteFee
            | ConfirmationTarget::MinAllowedNonAnchorChannelRemoteFee
            | ConfirmationTarget::OutputSpendingFee => self.background.load(Ordering::Relaxed),
        };
        rate.max(FEERATE_FLOOR_SATS_PER_KW)
    }
}
