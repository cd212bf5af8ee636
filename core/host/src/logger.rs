//! LDK's log records, forwarded to `tracing` with the node they concern.

use lightning::util::logger::{Level, Logger, Record};

/// One logger per node (its id is in every line); the shared graph has one named "host".
pub struct LdkLogger {
    node: String,
}

impl LdkLogger {
    pub fn new(node: impl Into<String>) -> Self {
        LdkLogger { node: node.into() }
    }
}

impl Logger for LdkLogger {
    fn log(&self, record: Record) {
        let node = &self.node;
        let module = record.module_path;
        match record.level {
            Level::Gossip | Level::Trace => {
                tracing::trace!(target: "ldk", node, module, "{}", record.args)
            }
            Level::Debug => tracing::debug!(target: "ldk", node, module, "{}", record.args),
            Level::Info => tracing::info!(target: "ldk", node, module, "{}", record.args),
            Level::Warn => tracing::warn!(target: "ldk", node, module, "{}", record.args),
            Level::Error => tracing::error!(target: "ldk", node, module, "{}", record.args),
        }
    }
}
