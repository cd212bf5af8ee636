//! The fees the signer pays: a cap per transaction that follows the market as the customer's
//! app reports it (never the host: the host is who the cap guards against), and the feerate
//! floor below which a commitment could not be relayed.
//!
//! A fixed cap leaves a wallet unable to close or sweep in a fee spike; a cap the host could
//! raise guards nothing. So the policy's `max_fee_sat` holds at the reference market, and a
//! fresh report of a higher market raises it in proportion.

use crate::policy::Refusal;

/// The lowest feerate a commitment may pay (sat per 1,000 weight): below it no node relays
/// the transaction, and a commitment that cannot confirm loses its HTLCs (LDK's floor too).
pub const MIN_FEERATE_PER_KW: u32 = 253;
/// The market `max_fee_sat` is set for: 10 sat/vB.
pub const REFERENCE_FEERATE_PER_KW: u32 = 2_500;
/// The highest market a report may give (4,000 sat/vB, above any market seen so far).
pub const MAX_MARKET_FEERATE_PER_KW: u32 = 1_000_000;
/// How long a market report counts: a stale one no longer raises the cap.
pub const MARKET_TTL_SECS: u64 = 3_600;

/// A market feerate the app reported, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarketReport {
    pub feerate_per_kw: u32,
    pub at_secs: u64,
}

impl MarketReport {
    /// The reported feerate while the report is fresh.
    pub fn fresh(&self, now: u64) -> Option<u32> {
        (self.at_secs.saturating_add(MARKET_TTL_SECS) > now).then_some(self.feerate_per_kw)
    }
}

/// The fee cap in force for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeeCap {
    /// Largest fee one transaction may pay (`None`: no cap).
    pub max_fee_sat: Option<u64>,
}

impl FeeCap {
    /// The policy's cap `max_fee_sat`, scaled by how far a fresh market report stands above
    /// the reference market (never below the policy's own cap).
    pub fn new(max_fee_sat: Option<u64>, market_feerate_per_kw: Option<u32>) -> Self {
        let scale = |cap: u64| match market_feerate_per_kw {
            Some(market) if market > REFERENCE_FEERATE_PER_KW => {
                let scaled =
                    u128::from(cap) * u128::from(market) / u128::from(REFERENCE_FEERATE_PER_KW);
                u64::try_from(scaled).unwrap_or(u64::MAX)
            }
            _ => cap,
        };
        FeeCap {
            max_fee_sat: max_fee_sat.map(scale),
        }
    }

    /// `fee_sat` for `what` is within the cap.
    pub fn check(&self, fee_sat: u64, what: &str) -> Result<(), Refusal> {
        match self.max_fee_sat {
            Some(max) if fee_sat > max => Err(Refusal::new(
                "max_fee",
                format!("{what} pays {fee_sat} sat in fees, above the cap of {max} sat"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_a_fresh_market_above_the_reference_only() {
        let cap = |market| FeeCap::new(Some(20_000), market).max_fee_sat;
        assert_eq!(cap(None), Some(20_000));
        assert_eq!(
            cap(Some(1_000)),
            Some(20_000),
            "a calm market lowers nothing"
        );
        assert_eq!(cap(Some(REFERENCE_FEERATE_PER_KW * 3)), Some(60_000));
        assert_eq!(FeeCap::new(None, Some(50_000)).max_fee_sat, None);
        let capped = FeeCap::new(Some(20_000), Some(5_000));
        assert!(capped.check(40_000, "a sweep").is_ok());
        assert_eq!(capped.check(40_001, "a sweep").unwrap_err().rule, "max_fee");
        let report = MarketReport {
            feerate_per_kw: 5_000,
            at_secs: 100,
        };
        assert_eq!(report.fresh(100 + MARKET_TTL_SECS - 1), Some(5_000));
        assert_eq!(report.fresh(100 + MARKET_TTL_SECS), None);
    }
}
