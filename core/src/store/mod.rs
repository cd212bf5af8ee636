//! The host's database: one SQLite file shared by every node of a host.
//!
//! It holds two kinds of data side by side: LDK's serialized state, behind a [`KvStore`] per
//! node (or [`HOST_SCOPE`] for the shared graph and scorer), and plain tables (`nodes`,
//! `channels`, `payments`, `events`) that an operator can query without decoding LDK.
//!
//! One connection behind a mutex serves all nodes: SQLite serializes writers anyway, and every
//! write is committed with `synchronous=FULL` before it returns, because LDK acknowledges a
//! `ChannelMonitor` update only once it is durable.

mod channels;
mod error;
mod events;
mod kv;
mod lock;
mod migrations;
mod nodes;
mod open;
mod payments;
mod rows;
mod sqlval;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

pub use error::StoreError;
pub use kv::KvStore;
pub use lock::lock_path;
pub use migrations::{APPLICATION_ID, SCHEMA_VERSION};
pub use rows::{
    ChannelRow, ChannelStatus, Direction, EventRow, NodeRow, PaymentRow, PaymentStatus,
};

/// The [`KvStore`] scope of data shared by all nodes of the host (network graph, scorer).
pub const HOST_SCOPE: &str = "";

/// Handle to the host's database. Cheap to clone; the database stays open (and locked against
/// other processes) until the last clone, including every [`KvStore`], is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    // Field order is drop order: the connection closes before the lock is released, so the
    // next owner never sees a file that is still being written.
    conn: Mutex<Connection>,
    path: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens or creates the database at `path`.
    ///
    /// Takes an exclusive lock on `<path>.lock` first ([`StoreError::Locked`] if another
    /// process or `Store` has it), refuses files that are not SQLite ([`StoreError::Corrupt`]),
    /// belong to another application ([`StoreError::Foreign`]) or come from a newer Flotilla
    /// ([`StoreError::TooNew`]) without modifying them, then enables WAL, `synchronous=FULL`
    /// and foreign keys and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let lock = lock::acquire(path)?;
        let conn = open::connect(path)?;
        Ok(Store {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: path.to_path_buf(),
                _lock: lock,
            }),
        })
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// LDK key-value store for one scope: a node's id (66 hex) or [`HOST_SCOPE`].
    pub fn kv(&self, scope: &str) -> KvStore {
        KvStore::new(self.clone(), scope)
    }

    /// Runs `f` with the connection, holding the mutex for its whole duration.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        f(&mut conn)
    }

    /// Locks the connection. A panic elsewhere while holding it does not make the database
    /// unusable: any transaction it left open is rolled back and the guard is reused.
    fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        match self.inner.conn.lock() {
            Ok(guard) => Ok(guard),
            Err(poisoned) => {
                let guard = poisoned.into_inner();
                if !guard.is_autocommit() {
                    guard.execute_batch("ROLLBACK")?;
                }
                self.inner.conn.clear_poison();
                Ok(guard)
            }
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}
