//! What the host's store and the signer's state store share, so that neither side depends on
//! the other: group commit over one SQLite writer thread, an OS lock beside a database file,
//! and waiting on a synchronous path (a commit, a signer's answer) without starving tokio.

pub mod blocking;
pub mod group_commit;
pub mod lock_file;
