//! Exclusive OS locks on a file beside what they guard (the host's database, a signer's
//! state). The kernel drops the lock when its holder dies, even on `kill -9`, so a crash never
//! leaves a stale lock; the lock belongs to the open file description, so a second opener in
//! the same process is refused as well.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// Opens (creating) `path` and takes its exclusive lock without waiting: `None` while another
/// holder has it. The lock lasts as long as the returned `File`.
///
/// The file is never deleted: unlinking it would let a later process lock a fresh inode while
/// an earlier one still holds the old one.
// Needs Rust 1.89 (`File::try_lock`), the workspace's declared rust-version.
pub fn try_exclusive(path: &Path) -> std::io::Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}
