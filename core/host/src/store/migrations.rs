//! Versioned schema. `PRAGMA user_version` records how many migrations a database has had;
//! each migration runs in its own transaction together with the version bump, so a crash
//! leaves the database at one version or the next, never in between.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// `PRAGMA application_id` of a Flotilla database ("FLOT"), so foreign files are recognised.
pub const APPLICATION_ID: i32 = 0x464c_4f54;

/// Migration `i` takes a database from version `i` to `i + 1`. Append only; never edit one
/// that has shipped.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Initial schema.
///
/// Tables are STRICT so a bad write fails instead of being coerced. u64 quantities live in
/// `ANY` columns: an INTEGER when the value fits in i64 (always, for real amounts), decimal
/// TEXT above that, so nothing wraps and SQL over realistic values still sees numbers.
/// `events` has no foreign key so host-wide events (node_id "") can be recorded too.
const V1: &str = "
CREATE TABLE kv (
    scope TEXT NOT NULL,
    primary_namespace TEXT NOT NULL,
    secondary_namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (scope, primary_namespace, secondary_namespace, key)
) STRICT;

CREATE TABLE nodes (
    node_id TEXT NOT NULL PRIMARY KEY,
    alias TEXT NOT NULL,
    listen_addr TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE channels (
    node_id TEXT NOT NULL REFERENCES nodes(node_id),
    channel_id TEXT NOT NULL,
    user_channel_id TEXT NOT NULL,
    counterparty_node_id TEXT NOT NULL,
    funding_txid TEXT,
    funding_vout INTEGER,
    capacity_sat ANY NOT NULL,
    local_balance_msat ANY NOT NULL,
    short_channel_id ANY,
    status TEXT NOT NULL CHECK (status IN ('pending', 'open', 'closing', 'closed')),
    close_reason TEXT,
    is_outbound INTEGER NOT NULL CHECK (is_outbound IN (0, 1)),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (node_id, channel_id)
) STRICT;

CREATE TABLE payments (
    node_id TEXT NOT NULL REFERENCES nodes(node_id),
    payment_hash TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    amount_msat ANY,
    fee_msat ANY,
    preimage TEXT,
    bolt11 TEXT,
    failure_reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (node_id, payment_hash, direction)
) STRICT;

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX events_by_node ON events (node_id, id);
";

/// A payment may be `held`: a payment to a hold invoice, received and not yet settled or
/// cancelled. SQLite cannot change a CHECK in place, so the table is rebuilt.
const V2: &str = "
CREATE TABLE payments_v2 (
    node_id TEXT NOT NULL REFERENCES nodes(node_id),
    payment_hash TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'held', 'succeeded', 'failed')),
    amount_msat ANY,
    fee_msat ANY,
    preimage TEXT,
    bolt11 TEXT,
    failure_reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (node_id, payment_hash, direction)
) STRICT;
INSERT INTO payments_v2 SELECT * FROM payments;
DROP TABLE payments;
ALTER TABLE payments_v2 RENAME TO payments;
";

/// Access tokens of the node API (`api/token.rs`): only each secret's SHA-256 is kept. A node
/// token names its node; an operator token (scope `admin`) names none.
const V3: &str = "
CREATE TABLE api_tokens (
    id TEXT NOT NULL PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    node_id TEXT REFERENCES nodes(node_id),
    scopes TEXT NOT NULL,
    label TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
) STRICT;

CREATE INDEX api_tokens_by_node ON api_tokens (node_id);
";

/// The first answer to each node API call made with an idempotency key
/// (`api/idempotency.rs`), per node.
const V4: &str = "
CREATE TABLE api_idempotency (
    node_id TEXT NOT NULL REFERENCES nodes(node_id),
    key TEXT NOT NULL,
    method TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    response BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (node_id, key)
) STRICT;
";

/// Brings a database at version `from` (already checked to be `<= SCHEMA_VERSION`) up to date.
pub fn migrate(conn: &mut Connection, from: i64) -> Result<(), StoreError> {
    for (done, sql) in MIGRATIONS.iter().enumerate().skip(from.max(0) as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        // Set on every step so the very first commit already marks the file as ours.
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", done as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_keeps_every_payment_and_allows_held() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute_batch(
            "INSERT INTO nodes VALUES ('n', 'alias', NULL, 'running', 1);
             INSERT INTO payments VALUES ('n', 'h1', 'inbound', 'succeeded', 5000, NULL,
                 'p1', 'lnbcrt1', NULL, 1, 2);
             INSERT INTO payments VALUES ('n', 'h2', 'outbound', 'failed', 7000, 3,
                 NULL, NULL, 'no route', 3, 4);",
        )
        .unwrap();
        let all = |conn: &Connection| -> Vec<String> {
            let mut stmt = conn
                .prepare("SELECT * FROM payments ORDER BY payment_hash")
                .unwrap();
            let count = stmt.column_count();
            stmt.query_map([], |row| {
                let cells: Vec<String> = (0..count)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect();
                Ok(cells.join("|"))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let before = all(&conn);

        migrate(&mut conn, 1).unwrap();

        assert_eq!(all(&conn), before);
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(
            version, SCHEMA_VERSION,
            "migrate runs every later migration too"
        );
        let insert = |status: &str| {
            conn.execute(
                "INSERT INTO payments VALUES ('n', ?1, 'inbound', ?1, NULL, NULL, NULL, NULL,
                     NULL, 5, 5)",
                [status],
            )
        };
        insert("held").expect("held is a status");
        assert!(insert("bogus").is_err(), "the CHECK is kept");
    }
}
