//! The `nodes` table: one row per node this host runs.

use rusqlite::{params, OptionalExtension, Row};

use super::{validate, NodeRow, Store, StoreError};

const COLUMNS: &str = "node_id, alias, listen_addr, status, created_at";

impl Store {
    /// Inserts a node or updates its alias, address and status; `created_at` stays that of
    /// the first insert.
    pub fn upsert_node(&self, row: &NodeRow) -> Result<(), StoreError> {
        validate::node_id("node_id", &row.node_id)?;
        let row = row.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO nodes (node_id, alias, listen_addr, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (node_id) DO UPDATE SET
                     alias = excluded.alias,
                     listen_addr = excluded.listen_addr,
                     status = excluded.status",
            )?
            .execute(params![
                row.node_id,
                row.alias,
                row.listen_addr,
                row.status,
                row.created_at
            ])?;
            Ok(())
        })
    }

    /// Sets a known node's status (`stopped`, `halted`); a node without a row is left alone.
    pub fn set_node_status(&self, node_id: &str, status: &str) -> Result<(), StoreError> {
        validate::node_id("node_id", node_id)?;
        let (node_id, status) = (node_id.to_owned(), status.to_owned());
        self.write(move |conn| {
            conn.prepare_cached("UPDATE nodes SET status = ?2 WHERE node_id = ?1")?
                .execute(params![node_id, status])?;
            Ok(())
        })
    }

    /// The node with this id, if any.
    pub fn node(&self, node_id: &str) -> Result<Option<NodeRow>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM nodes WHERE node_id = ?1"))?
                .query_row([node_id], from_row)
                .optional()?)
        })
    }

    /// All nodes, oldest first.
    pub fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM nodes ORDER BY created_at, node_id"
            ))?;
            let rows = stmt.query_map([], from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<NodeRow> {
    Ok(NodeRow {
        node_id: r.get(0)?,
        alias: r.get(1)?,
        listen_addr: r.get(2)?,
        status: r.get(3)?,
        created_at: r.get(4)?,
    })
}
