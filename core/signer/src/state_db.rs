//! The signer's state on disk: one SQLite database per state directory, shared by every node
//! the process signs for, written with group commit.
//!
//! A save must be durable before the answer that depends on it leaves, and a signer process
//! answers for many nodes at once. Each save is handed to the database's one writer thread
//! ([`flotilla_sqlite::group_commit`]), which commits all saves queued meanwhile in one transaction (WAL,
//! `synchronous=FULL`: one append and one fsync) and answers each caller after the commit. A
//! save is one transaction's part, so a crash leaves the old or the new state, never a mix.
//!
//! Rows, not one document per node: a channel per row (`signer_channels`), an approved payment
//! per row (`signer_approved`) and a velocity entry per row (`signer_spent`). A save writes
//! only the rows a transaction changed ([`StateStore::save_change`]), so its cost does not grow
//! with the node's channels or the day's approved payments. Values are JSON, keys hex, so an
//! operator can read them with `sqlite3`.
//!
//! Stores for nodes of one directory in one process share one connection and writer thread
//! (a registry keyed by the directory). Each node keeps its own OS lock file
//! (`<node_id>.signer-state.lock`, as before), so a second signer for the same node, in this
//! process or another, is refused; signers of other nodes may share the directory and file.
//! A `<node_id>.signer-state.json` left by the former file-per-node store is imported on first
//! open and renamed to `.json.migrated`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::secp256k1::PublicKey;
use flotilla_sqlite::group_commit::{Failure, WriteStats, Writer};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde::{de::DeserializeOwned, Serialize};

use crate::state::{
    ApprovedPayment, ChannelState, SaveDone, SignerState, Spent, StateChange, StateError,
    StateStore,
};

/// The database file in a state directory.
pub const DB_FILE: &str = "signer-state.db";
/// `PRAGMA application_id` of a signer state database ("FLSS").
pub const APPLICATION_ID: i32 = 0x464c_5353;
/// Schema version (`PRAGMA user_version`) this code writes.
/// 2 added `signer_meta` (the state's version): a database of 1 gains it on first open, and
/// a binary that knows only 1 refuses it (it would save changes without raising the version).
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS signer_channels (
        node_id TEXT NOT NULL,
        keys_id TEXT NOT NULL,
        state   TEXT NOT NULL,
        PRIMARY KEY (node_id, keys_id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS signer_approved (
        node_id      TEXT NOT NULL,
        payment_hash TEXT NOT NULL,
        payment      TEXT NOT NULL,
        PRIMARY KEY (node_id, payment_hash)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS signer_spent (
        node_id TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        spent   TEXT NOT NULL,
        PRIMARY KEY (node_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS signer_meta (
        node_id TEXT PRIMARY KEY NOT NULL,
        version INTEGER NOT NULL
    ) WITHOUT ROWID;
";

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's signer state in the directory's SQLite database.
pub struct SqliteStateStore {
    db: Arc<Db>,
    node: String,
    /// Sequence number of the first saved velocity entry (`signer_spent.seq`).
    spent_first: i64,
    /// The next save rewrites every row of the node: set until a load, and after a failed
    /// save (whose commit may or may not have happened; a submitted one sets it on the
    /// writer thread).
    stale: Arc<AtomicBool>,
    /// Held while the store lives; the kernel releases it when the process dies.
    _lock: File,
}

impl std::fmt::Debug for SqliteStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStateStore")
            .field("path", &self.db.path)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl SqliteStateStore {
    /// The store for `node_id` in `dir` (created if missing), in `dir/signer-state.db`.
    /// Refused with [`StateError::Locked`] while another store holds the node. Imports and
    /// renames a `<node_id>.signer-state.json` of the former file store.
    pub fn in_dir(dir: &Path, node_id: &PublicKey) -> Result<Self, StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(format!("{node_id}.signer-state.lock"));
        let lock = flotilla_sqlite::lock_file::try_exclusive(&lock_path)
            .map_err(io(&lock_path))?
            .ok_or_else(|| StateError::Locked {
                path: lock_path.clone(),
            })?;
        let db = Db::shared(dir)?;
        let mut store = SqliteStateStore {
            db,
            node: node_id.to_string(),
            spent_first: 0,
            stale: Arc::new(AtomicBool::new(true)),
            _lock: lock,
        };
        store.migrate_file(&dir.join(format!("{node_id}.signer-state.json")))?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// Saves and commits of the whole database (all nodes of the directory in this process).
    pub fn write_stats(&self) -> WriteStats {
        self.db.writer.stats()
    }

    /// Imports a former `<node>.signer-state.json`: the state is committed first, then the
    /// file renamed and the rename made durable. A crash in between imports the same file
    /// again; no save happens while the file is still there, so nothing newer is overwritten.
    fn migrate_file(&mut self, json: &Path) -> Result<(), StateError> {
        let bytes = match fs::read(json) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StateError::Io {
                    path: json.to_path_buf(),
                    source,
                })
            }
        };
        let state: SignerState =
            serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: json.to_path_buf(),
                reason: e.to_string(),
            })?;
        self.save(&state)?;
        let mut migrated = json.as_os_str().to_owned();
        migrated.push(".migrated");
        let done = || -> std::io::Result<()> {
            fs::rename(json, &migrated)?;
            if let Some(dir) = json.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        done().map_err(|source| StateError::Io {
            path: json.to_path_buf(),
            source,
        })?;
        tracing::info!(node = %self.node, from = %json.display(), "signer state imported into the database");
        Ok(())
    }

    /// The rows to write for `change`: every row of the node while it is stale.
    fn change(&mut self, next: &SignerState, change: &StateChange) -> Result<Change, StateError> {
        if self.stale.swap(false, Ordering::Relaxed) {
            return Change::full(&self.node, next).map_err(|e| self.db.error(e));
        }
        Change::rows(&self.node, self.spent_first, next, change).map_err(|e| self.db.error(e))
    }

    /// Writes `change` and waits for its commit. Counted as saved from the start, as a
    /// submitted change is: a failure makes the node stale instead.
    fn write(&mut self, change: Change) -> Result<(), StateError> {
        self.spent_first = change.spent_first;
        self.db
            .writer
            .write(move |conn| change.apply(conn))
            .map_err(|e| {
                self.stale.store(true, Ordering::Relaxed);
                self.db.error(e)
            })
    }
}

impl StateStore for SqliteStateStore {
    fn load(&mut self) -> Result<SignerState, StateError> {
        let node = self.node.clone();
        let (state, spent_first) = self
            .db
            .writer
            .write(move |conn| read_state(conn, &node))
            .map_err(|e| self.db.error(e))?;
        self.spent_first = spent_first;
        self.stale.store(false, Ordering::Relaxed);
        Ok(state)
    }

    fn save(&mut self, state: &SignerState) -> Result<(), StateError> {
        let change = Change::full(&self.node, state).map_err(|e| self.db.error(e))?;
        self.stale.store(false, Ordering::Relaxed);
        self.write(change)
    }

    fn save_change(&mut self, next: &SignerState, change: &StateChange) -> Result<(), StateError> {
        let change = self.change(next, change)?;
        self.write(change)
    }

    fn submit_change(&mut self, next: &SignerState, change: &StateChange, saved: SaveDone) {
        let change = match self.change(next, change) {
            Ok(change) => change,
            Err(e) => return saved(Err(e)),
        };
        // Counted as saved now; a failure makes the node stale instead.
        self.spent_first = change.spent_first;
        // Not the `Db`: its last reference must not be dropped on its own writer thread.
        let (path, stale) = (self.db.path.clone(), self.stale.clone());
        self.db.writer.submit(
            move |conn| change.apply(conn),
            move |result| {
                if result.is_err() {
                    stale.store(true, Ordering::Relaxed);
                }
                saved(result.map_err(|e| db_error(&path, e)))
            },
        );
    }
}

/// The rows one save writes for one node.
#[derive(Debug, Default, PartialEq)]
struct Change {
    node: String,
    /// Delete every row of the node first.
    full: bool,
    /// keys id (hex) → the channel's state (JSON), or `None` to delete it.
    channels: Vec<(String, Option<String>)>,
    /// payment hash (hex) → the approval (JSON), or `None` to delete it.
    approved: Vec<(String, Option<String>)>,
    /// Velocity entries below this sequence number are deleted; it is the first one's after.
    spent_first: i64,
    /// Velocity entries added, by sequence number.
    spent: Vec<(i64, String)>,
    /// The state's version after the change (SQLite integers are signed; it saturates).
    version: i64,
}

impl Change {
    /// Every row of `state`, replacing whatever the node had.
    fn full(node: &str, state: &SignerState) -> Result<Change, DbError> {
        Ok(Change {
            node: node.to_owned(),
            full: true,
            channels: keyed(state.channels.iter().map(|(k, v)| (k, Some(v))))?,
            approved: keyed(state.approved.iter().map(|(k, v)| (k, Some(v))))?,
            spent_first: 0,
            spent: numbered(0, &state.spent)?,
            version: sql_version(state.version),
        })
    }

    /// The rows of `change`, made to the saved state whose first velocity entry is numbered
    /// `spent_first`, giving `next`.
    fn rows(
        node: &str,
        spent_first: i64,
        next: &SignerState,
        change: &StateChange,
    ) -> Result<Change, DbError> {
        let first = spent_first + change.spent_dropped as i64;
        // The added entries are the last ones of `next`: numbered after those kept.
        let kept = next.spent.len() - change.spent_added.len();
        Ok(Change {
            node: node.to_owned(),
            full: false,
            channels: keyed(change.channels.iter().map(|(k, v)| (k, v.as_ref())))?,
            approved: keyed(change.approved.iter().map(|(k, v)| (k, v.as_ref())))?,
            spent_first: first,
            spent: numbered(first + kept as i64, &change.spent_added)?,
            version: sql_version(change.version),
        })
    }

    fn apply(self, conn: &Connection) -> Result<(), DbError> {
        let node = &self.node;
        if self.full {
            for table in ["signer_channels", "signer_approved", "signer_spent"] {
                conn.prepare_cached(&format!("DELETE FROM {table} WHERE node_id = ?1"))?
                    .execute([node])?;
            }
        }
        write_rows(
            conn,
            "signer_channels",
            "keys_id",
            "state",
            node,
            &self.channels,
        )?;
        write_rows(
            conn,
            "signer_approved",
            "payment_hash",
            "payment",
            node,
            &self.approved,
        )?;
        if !self.full {
            conn.prepare_cached("DELETE FROM signer_spent WHERE node_id = ?1 AND seq < ?2")?
                .execute(params![node, self.spent_first])?;
        }
        for (seq, spent) in &self.spent {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO signer_spent (node_id, seq, spent) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![node, seq, spent])?;
        }
        conn.prepare_cached(
            "INSERT OR REPLACE INTO signer_meta (node_id, version) VALUES (?1, ?2)",
        )?
        .execute(params![node, self.version])?;
        Ok(())
    }

    /// Nothing to write.
    #[cfg(test)]
    fn is_empty(&self, spent_first_before: i64) -> bool {
        !self.full
            && self.channels.is_empty()
            && self.approved.is_empty()
            && self.spent.is_empty()
            && self.spent_first == spent_first_before
    }
}

fn sql_version(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// Rows keyed by hex: `Some` value as JSON, `None` to delete the row.
fn keyed<'a, V: Serialize + 'a>(
    entries: impl IntoIterator<Item = (&'a [u8; 32], Option<&'a V>)>,
) -> Result<Vec<(String, Option<String>)>, DbError> {
    entries
        .into_iter()
        .map(|(k, v)| Ok((k.to_lower_hex_string(), v.map(json).transpose()?)))
        .collect()
}

/// Writes a node's changed rows of `table`: `Some` sets the row of its key, `None` deletes it.
fn write_rows(
    conn: &Connection,
    table: &str,
    key: &str,
    value: &str,
    node: &str,
    rows: &[(String, Option<String>)],
) -> Result<(), DbError> {
    for (k, v) in rows {
        match v {
            Some(v) => conn
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO {table} (node_id, {key}, {value}) VALUES (?1, ?2, ?3)"
                ))?
                .execute(params![node, k, v])?,
            None => conn
                .prepare_cached(&format!(
                    "DELETE FROM {table} WHERE node_id = ?1 AND {key} = ?2"
                ))?
                .execute(params![node, k])?,
        };
    }
    Ok(())
}

fn numbered<'a>(
    first: i64,
    spent: impl IntoIterator<Item = &'a Spent>,
) -> Result<Vec<(i64, String)>, DbError> {
    spent
        .into_iter()
        .zip(first..)
        .map(|(s, seq)| Ok((seq, json(s)?)))
        .collect()
}

fn json<T: Serialize>(value: &T) -> Result<String, DbError> {
    serde_json::to_string(value).map_err(|e| DbError::Corrupt(e.to_string()))
}

fn parse<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, DbError> {
    serde_json::from_str(text).map_err(|e| DbError::Corrupt(format!("{what}: {e}")))
}

fn key(hex: &str, what: &str) -> Result<[u8; 32], DbError> {
    <[u8; 32]>::from_hex(hex).map_err(|e| DbError::Corrupt(format!("{what} {hex}: {e}")))
}

/// A node's state and the sequence number of its first velocity entry.
fn read_state(conn: &Connection, node: &str) -> Result<(SignerState, i64), DbError> {
    let mut state = SignerState::default();
    let mut rows =
        conn.prepare_cached("SELECT keys_id, state FROM signer_channels WHERE node_id = ?1")?;
    for row in rows.query_map([node], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })? {
        let (keys_id, channel) = row?;
        let channel: ChannelState = parse(&channel, "channel state")?;
        state.channels.insert(key(&keys_id, "keys id")?, channel);
    }
    let mut rows = conn
        .prepare_cached("SELECT payment_hash, payment FROM signer_approved WHERE node_id = ?1")?;
    for row in rows.query_map([node], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })? {
        let (hash, payment) = row?;
        let payment: ApprovedPayment = parse(&payment, "approved payment")?;
        state.approved.insert(key(&hash, "payment hash")?, payment);
    }
    let mut rows =
        conn.prepare_cached("SELECT seq, spent FROM signer_spent WHERE node_id = ?1 ORDER BY seq")?;
    let mut first = None;
    for row in rows.query_map([node], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })? {
        let (seq, spent) = row?;
        first.get_or_insert(seq);
        state.spent.push_back(parse(&spent, "velocity entry")?);
    }
    // Saves number entries contiguously from the first, which `Change::rows` relies on.
    let first = first.unwrap_or(0);
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM signer_meta WHERE node_id = ?1")?
        .query_row([node], |r| r.get(0))
        .optional()?;
    state.version = version.map_or(0, |v| u64::try_from(v).unwrap_or(0));
    Ok((state, first))
}

/// One open database: its writer thread and connection.
struct Db {
    writer: Writer<DbError>,
    path: PathBuf,
}

impl Db {
    /// The database of `dir`, opened by the first store of the directory in this process and
    /// shared with the others while any is alive.
    fn shared(dir: &Path) -> Result<Arc<Db>, StateError> {
        static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Db>>>> = OnceLock::new();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        let dir = fs::canonicalize(dir).map_err(io(dir))?;
        let mut open = OPEN
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.retain(|_, db| db.strong_count() > 0);
        if let Some(db) = open.get(&dir).and_then(Weak::upgrade) {
            return Ok(db);
        }
        let path = dir.join(DB_FILE);
        let conn = connect(&path).map_err(|e| db_error(&path, e))?;
        let writer = Writer::start(conn, "flotilla-signer-state").map_err(io(&path))?;
        let db = Arc::new(Db { writer, path });
        open.insert(dir, Arc::downgrade(&db));
        Ok(db)
    }

    fn error(&self, e: DbError) -> StateError {
        db_error(&self.path, e)
    }
}

/// Opens `path`, refusing a database of another application or a newer schema, and creates
/// the tables.
fn connect(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(32);
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if app != APPLICATION_ID && (app != 0 || objects > 0) {
        return Err(DbError::Corrupt(
            "not a Flotilla signer state database".into(),
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(DbError::Corrupt(format!(
            "schema version {version} is newer than the {SCHEMA_VERSION} this binary supports"
        )));
    }
    // WAL: a commit is one append and one fsync; FULL: that fsync happens before it returns.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbError::Corrupt(format!(
            "SQLite refused WAL journal mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; \
         PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))?;
    Ok(conn)
}

/// What the writer reports: SQLite's errors and its own.
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Writer(String),
}

impl Failure for DbError {
    fn not_committed(reason: &str) -> Self {
        DbError::Writer(format!("the save was not committed: {reason}"))
    }

    fn closed() -> Self {
        DbError::Writer("the state database's writer has stopped".into())
    }

    fn bug(what: &str) -> Self {
        DbError::Writer(what.into())
    }
}

fn db_error(path: &Path, e: DbError) -> StateError {
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    match e {
        DbError::Corrupt(reason) => corrupt(reason),
        DbError::Sqlite(e)
            if matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
            ) =>
        {
            corrupt(e.to_string())
        }
        other => StateError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests;
