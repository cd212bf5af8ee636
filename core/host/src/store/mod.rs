//! The host's database: one SQLite file shared by every node of a host.
//!
//! It holds two kinds of data side by side: LDK's serialized state, behind a [`KvStore`] per
//! node (or [`HOST_SCOPE`] for the shared graph and scorer), and plain tables (`nodes`,
//! `channels`, `payments`, `events`, `api_tokens`, `api_idempotency`) that an operator can
//! query without decoding LDK.
//!
//! Every write is committed with `synchronous=FULL` before it returns, because LDK acknowledges
//! a `ChannelMonitor` update only once it is durable. Writes go through one writer thread that
//! commits all writes queued meanwhile together ([`flotilla_sqlite::group_commit`]); reads use their
//! own connection, which WAL lets run beside the writer.

mod batch;
mod channels;
mod error;
mod events;
mod feed;
mod idempotency;
mod kv;
mod lock;
mod migrations;
mod nodes;
mod open;
mod payments;
mod rows;
mod sqlval;
mod tokens;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_sqlite::group_commit::Writer;
use rusqlite::Connection;

pub use batch::Rows;
pub use error::StoreError;
pub use flotilla_sqlite::group_commit::WriteStats;
pub use idempotency::FirstAnswer;
pub use kv::{read_optional, Kv, KvStore, KvWrite};
pub use lock::lock_path;
pub use migrations::{APPLICATION_ID, SCHEMA_VERSION};
pub use payments::PaymentFilter;
pub use rows::{
    ChannelRow, ChannelStatus, Direction, EventRow, NodeRow, PaymentRow, PaymentStatus, TokenRow,
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
    // Field order is drop order: queued writes finish and both connections close before the
    // lock is released, so the next owner never sees a file that is still being written.
    writer: Writer<StoreError>,
    /// Wakes subscribers of a node's events after each commit that wrote some.
    /// (Shared with the writer's callbacks, which must not hold the store itself.)
    feed: Arc<feed::EventFeed>,
    /// The read connection (`query_only`): reads never wait for a commit's fsync.
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
        let writer = Writer::start(open::connect(path)?, "flotilla-store-writer")?;
        let reader = open::connect_reader(path)?;
        Ok(Store {
            inner: Arc::new(Inner {
                writer,
                feed: Arc::default(),
                conn: Mutex::new(reader),
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

    /// Writes and commits so far (group commit: writes per commit above 1 saved fsyncs).
    pub fn write_stats(&self) -> WriteStats {
        self.inner.writer.stats()
    }

    /// Runs `f` in the next group commit; returns once its changes are durable. `f` runs
    /// atomically: on error none of its changes remain.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.inner.writer.write(f)
    }

    /// Runs `f` with the read connection, holding its mutex for its whole duration.
    fn read<T>(
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
