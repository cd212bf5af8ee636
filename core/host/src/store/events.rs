//! The `events` table: an append-only log per node that API clients page through by id.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::types::Type;
use rusqlite::{params, Connection, Row};

use super::{EventRow, Store, StoreError};

impl Store {
    /// Appends an event for `node_id` (or `""` for host-wide events) stamped with the current
    /// time, and returns its id, which is larger than every id handed out before.
    pub fn insert_event(
        &self,
        node_id: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        let json = encode(data)?;
        let (node, kind) = (node_id.to_owned(), kind.to_owned());
        let id = self.write(move |conn| insert(conn, &node, &kind, &json))?;
        self.inner.feed.written(node_id);
        Ok(id)
    }

    /// Changes each time events of `node_id` are committed after this call: wait on it, then
    /// read [`Store::events`] after the last id seen.
    pub fn event_signal(&self, node_id: &str) -> tokio::sync::watch::Receiver<()> {
        self.inner.feed.subscribe(node_id)
    }

    /// As [`Store::insert_event`], without waiting for the commit, for callers that must not
    /// block (inside LDK's calls). The event is lost only if the store fails (logged).
    pub fn queue_event(&self, node_id: &str, kind: &str, data: &serde_json::Value) {
        let (node_id, kind) = (node_id.to_owned(), kind.to_owned());
        let queued = encode(data).map(|json| {
            let done_kind = kind.clone();
            // The feed, not the store: the writer thread must never drop the last store.
            let feed = self.inner.feed.clone();
            let done_node = node_id.clone();
            self.inner.writer.submit(
                move |conn| insert(conn, &node_id, &kind, &json),
                move |result| match result {
                    Ok(_) => feed.written(&done_node),
                    Err(e) => tracing::error!(kind = done_kind, error = %e, "event not recorded"),
                },
            )
        });
        if let Err(e) = queued {
            tracing::error!(error = %e, "event not recorded");
        }
    }

    /// Up to `limit` events of `node_id` with an id greater than `after_id`, oldest first.
    /// Start with `after_id = 0`, then pass the last id received.
    pub fn events(
        &self,
        node_id: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, node_id, kind, data, created_at FROM events
                 WHERE node_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![node_id, after_id, limit], from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

/// An event's data as stored.
pub(super) fn encode(data: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(data).map_err(|e| StoreError::InvalidValue(format!("event data: {e}")))
}

/// Appends an event within the caller's transaction; returns its id.
pub(super) fn insert(
    conn: &Connection,
    node_id: &str,
    kind: &str,
    json: &str,
) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO events (node_id, kind, data, created_at)
             VALUES (?1, ?2, ?3, ?4) RETURNING id",
        )?
        .query_row(params![node_id, kind, json, unix_now()], |r| r.get(0))?)
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    let data: String = r.get(3)?;
    Ok(EventRow {
        id: r.get(0)?,
        node_id: r.get(1)?,
        kind: r.get(2)?,
        data: serde_json::from_str(&data)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, Type::Text, Box::new(e)))?,
        created_at: r.get(4)?,
    })
}

/// Seconds since the Unix epoch; 0 if the clock is set before it.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
