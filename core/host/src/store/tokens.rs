//! The `api_tokens` table: who may call the node API, as hashes of their secrets.

use rusqlite::{params, OptionalExtension, Row};

use super::{validate, Store, StoreError, TokenRow};

const COLUMNS: &str = "id, node_id, scopes, label, created_at, expires_at, revoked_at";

impl Store {
    /// Records a new token; `secret_sha256` is all that is kept of its secret.
    pub fn insert_token(&self, row: &TokenRow, secret_sha256: &str) -> Result<(), StoreError> {
        validate::hash32("secret_sha256", secret_sha256)?;
        if let Some(node_id) = &row.node_id {
            validate::node_id("node_id", node_id)?;
        }
        let (row, hash) = (row.clone(), secret_sha256.to_owned());
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO api_tokens ({COLUMNS}, secret_sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                row.id,
                row.node_id,
                row.scopes,
                row.label,
                row.created_at,
                row.expires_at,
                row.revoked_at,
                hash
            ])?;
            Ok(())
        })
    }

    /// The token with this id and the hash of its secret, if any.
    pub fn token(&self, id: &str) -> Result<Option<(TokenRow, String)>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS}, secret_sha256 FROM api_tokens WHERE id = ?1"
                ))?
                .query_row([id], |r| Ok((from_row(r)?, r.get(7)?)))
                .optional()?)
        })
    }

    /// Every token of `node_id` (`None`: the operator's), oldest first.
    pub fn tokens(&self, node_id: Option<&str>) -> Result<Vec<TokenRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM api_tokens WHERE node_id IS ?1 ORDER BY created_at, id"
            ))?;
            let rows = stmt.query_map([node_id], from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Revokes a token at `at` (unix seconds); whether a live token of that id existed.
    pub fn revoke_token(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                )?
                .execute(params![id, at])?;
            Ok(changed == 1)
        })
    }
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: row.get(0)?,
        node_id: row.get(1)?,
        scopes: row.get(2)?,
        label: row.get(3)?,
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}
