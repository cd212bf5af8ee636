//! The lock file beside the database.
//!
//! SQLite's own locking lets two processes share a file, which is exactly what must not happen:
//! two hosts driving the same nodes would broadcast conflicting channel states. An OS lock on
//! `<db>.lock` keeps a second host out, and the kernel drops it when the process dies (even on
//! `kill -9`), so a crash never leaves a stale lock behind. The lock belongs to the open file
//! description, so a second `Store::open` inside the same process is refused as well.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::StoreError;

/// `<db>.lock`: the database's file name with `.lock` appended.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the exclusive lock for `db`, without waiting; the lock lasts as long as the `File`.
pub fn acquire(db: &Path) -> Result<File, StoreError> {
    flotilla_sqlite::lock_file::try_exclusive(&lock_path(db))?.ok_or_else(|| StoreError::Locked {
        path: db.to_path_buf(),
    })
}
