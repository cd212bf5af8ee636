//! Local btcd regtest harness (placeholder).
