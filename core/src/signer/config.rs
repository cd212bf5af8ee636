//! Signer configuration (placeholder).
