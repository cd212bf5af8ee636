//! Seed handling and node id derivation (placeholder).
