//! Store tests on real files in a fresh temporary directory each.

mod kv;
mod open;
mod tables;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{NodeRow, Store};

/// A directory under the system temp dir, unique to this process and call, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "flotilla-store-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// Path of the database file inside the directory.
    pub fn db(&self) -> PathBuf {
        self.0.join("host.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A syntactically valid node id made of one repeated byte.
pub fn node_id(byte: u8) -> String {
    format!("{byte:02x}").repeat(33)
}

pub fn node(byte: u8) -> NodeRow {
    NodeRow {
        node_id: node_id(byte),
        alias: format!("node-{byte}"),
        listen_addr: None,
        status: "running".into(),
        created_at: 1_700_000_000,
    }
}

/// A fresh store with nodes 0x02 and 0x03 registered.
pub fn store_with_nodes(dir: &TempDir) -> Store {
    let store = Store::open(&dir.db()).expect("open");
    store.upsert_node(&node(2)).expect("node 2");
    store.upsert_node(&node(3)).expect("node 3");
    store
}
