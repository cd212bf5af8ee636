//! On-chain wallet (placeholder).
