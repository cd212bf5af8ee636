//! Opening the database: lock first, then identify the file before changing anything in it,
//! then configure the connection and migrate.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use super::migrations::{self, APPLICATION_ID, SCHEMA_VERSION};
use super::StoreError;

/// How long a statement waits on SQLite's own file locks (only ever contended by a checkpoint
/// or an operator's read-only `sqlite3` session, since the lock file keeps other hosts out).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Enough for every statement the store prepares, so none is ever re-parsed.
const STATEMENT_CACHE: usize = 64;

/// What the file says about itself, read before anything is written to it.
struct Header {
    application_id: i32,
    user_version: i64,
    schema_objects: i64,
}

/// Opens an unlocked database file and brings it to [`SCHEMA_VERSION`].
pub fn connect(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(|e| classify(path, e))?;
    prepare(path, &mut conn).map_err(|e| match e {
        StoreError::Sqlite(e) => classify(path, e),
        other => other,
    })?;
    Ok(conn)
}

/// A second connection to a database [`connect`] already prepared, for reads only: it sees
/// committed data and can never write.
pub fn connect_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| classify(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

fn prepare(path: &Path, conn: &mut Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);

    // Identify first: a foreign or too-new file must be left exactly as found.
    let header = read_header(conn)?;
    if header.application_id != APPLICATION_ID
        && (header.application_id != 0 || header.schema_objects > 0)
    {
        return Err(StoreError::Foreign {
            path: path.to_path_buf(),
        });
    }
    if header.user_version < 0 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("negative schema version {}", header.user_version),
        });
    }
    if header.user_version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found: header.user_version,
            supported: SCHEMA_VERSION,
        });
    }

    // WAL: writers never block readers and a commit is one append + fsync.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::InvalidValue(format!(
            "SQLite refused WAL journal mode for {} (got {mode})",
            path.display()
        )));
    }
    // FULL: a commit is on disk when it returns, which LDK requires of monitor updates.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;

    migrations::migrate(conn, header.user_version)
}

fn read_header(conn: &Connection) -> Result<Header, StoreError> {
    Ok(Header {
        application_id: conn.pragma_query_value(None, "application_id", |row| row.get(0))?,
        user_version: conn.pragma_query_value(None, "user_version", |row| row.get(0))?,
        schema_objects: conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?,
    })
}

/// Turns SQLite's "this is not a database" / "malformed" into [`StoreError::Corrupt`].
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
        _ => StoreError::Sqlite(e),
    }
}
