//! Node assembly and lifecycle (placeholder).
