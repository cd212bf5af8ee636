//! Typed errors of the store, so callers can tell "someone else has this database" from
//! "this file is not ours" from a plain I/O failure.

use std::path::PathBuf;

/// Everything that can go wrong opening or using the host's database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another `Store` in this process) holds the database's lock file.
    #[error("database {} is in use by another host process", path.display())]
    Locked { path: PathBuf },
    /// The file is not a SQLite database, or SQLite found it malformed.
    #[error("database {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// A valid SQLite database that belongs to some other application; left untouched.
    #[error("{} is a SQLite database of another application", path.display())]
    Foreign { path: PathBuf },
    /// The schema was written by a newer Flotilla; opening it could corrupt it.
    #[error("database schema version {found} is newer than the {supported} this binary supports")]
    TooNew { found: i64, supported: i64 },
    /// A row refers to a node that has no row in `nodes`.
    #[error("unknown node {node_id}")]
    UnknownNode { node_id: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A value that cannot be stored or read back faithfully.
    #[error("invalid value: {0}")]
    InvalidValue(String),
}

impl StoreError {
    /// Reports a write of a node-owned row whose node has no row in `nodes` as
    /// [`StoreError::UnknownNode`] instead of a bare constraint failure.
    pub(super) fn from_node_write(e: rusqlite::Error, node_id: &str) -> StoreError {
        match e.sqlite_error() {
            Some(err) if err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                StoreError::UnknownNode {
                    node_id: node_id.to_owned(),
                }
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

impl flotilla_sqlite::group_commit::Failure for StoreError {
    fn not_committed(reason: &str) -> Self {
        StoreError::Io(std::io::Error::other(format!(
            "the write was not committed: {reason}"
        )))
    }

    fn closed() -> Self {
        StoreError::Io(std::io::Error::other("the database writer has stopped"))
    }

    fn bug(what: &str) -> Self {
        StoreError::InvalidValue(what.into())
    }
}
