//! The `channels` table: the latest known state of each channel, kept in step from LDK events.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::sqlval::{opt, U64};
use super::{validate, ChannelRow, ChannelStatus, Rows, Store, StoreError};

const COLUMNS: &str = "node_id, channel_id, user_channel_id, counterparty_node_id, funding_txid, \
     funding_vout, capacity_sat, local_balance_msat, short_channel_id, status, close_reason, \
     is_outbound, updated_at";

impl Store {
    /// Inserts or updates a channel of a node that is already in `nodes`
    /// ([`StoreError::UnknownNode`] otherwise).
    ///
    /// Updates merge rather than overwrite: a known optional value (funding outpoint, short
    /// channel id, close reason) is never erased by `None`, and a closed channel stays closed
    /// (a late event about it only fills in missing fields).
    pub fn upsert_channel(&self, row: &ChannelRow) -> Result<(), StoreError> {
        let mut rows = Rows::default();
        rows.channel(row.clone())?;
        self.write_rows(rows)
    }

    /// One channel of a node, if known.
    pub fn channel(
        &self,
        node_id: &str,
        channel_id: &str,
    ) -> Result<Option<ChannelRow>, StoreError> {
        self.read(|conn| Ok(select(conn, node_id, channel_id)?))
    }

    /// All channels of a node, in the order they were first recorded.
    pub fn channels(&self, node_id: &str) -> Result<Vec<ChannelRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM channels WHERE node_id = ?1 ORDER BY rowid"
            ))?;
            let rows = stmt.query_map([node_id], from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

/// Refuses a row whose ids are malformed, before it is queued.
pub(super) fn check(row: &ChannelRow) -> Result<(), StoreError> {
    validate::node_id("node_id", &row.node_id)?;
    validate::hash32("channel_id", &row.channel_id)?;
    validate::decimal_u128("user_channel_id", &row.user_channel_id)?;
    validate::node_id("counterparty_node_id", &row.counterparty_node_id)?;
    if let Some(txid) = &row.funding_txid {
        validate::hash32("funding_txid", txid)?;
    }
    Ok(())
}

/// Merges `row` into the stored one, within the caller's transaction.
pub(super) fn upsert(conn: &Connection, row: &ChannelRow) -> Result<(), StoreError> {
    let merged = match select(conn, &row.node_id, &row.channel_id)? {
        Some(old) => merge(old, row),
        None => row.clone(),
    };
    write(conn, &merged).map_err(|e| StoreError::from_node_write(e, &row.node_id))
}

/// Combines the stored row with an update; see [`Store::upsert_channel`].
fn merge(old: ChannelRow, new: &ChannelRow) -> ChannelRow {
    let stale = old.status == ChannelStatus::Closed && new.status != ChannelStatus::Closed;
    let (fresh, other) = if stale {
        (old, new.clone())
    } else {
        (new.clone(), old)
    };
    ChannelRow {
        funding_txid: fresh.funding_txid.or(other.funding_txid),
        funding_vout: fresh.funding_vout.or(other.funding_vout),
        short_channel_id: fresh.short_channel_id.or(other.short_channel_id),
        close_reason: fresh.close_reason.or(other.close_reason),
        updated_at: fresh.updated_at.max(other.updated_at),
        ..fresh
    }
}

fn select(
    conn: &Connection,
    node_id: &str,
    channel_id: &str,
) -> rusqlite::Result<Option<ChannelRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM channels WHERE node_id = ?1 AND channel_id = ?2"
    ))?
    .query_row([node_id, channel_id], from_row)
    .optional()
}

fn write(conn: &Connection, row: &ChannelRow) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO channels ({COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (node_id, channel_id) DO UPDATE SET
             user_channel_id = excluded.user_channel_id,
             counterparty_node_id = excluded.counterparty_node_id,
             funding_txid = excluded.funding_txid,
             funding_vout = excluded.funding_vout,
             capacity_sat = excluded.capacity_sat,
             local_balance_msat = excluded.local_balance_msat,
             short_channel_id = excluded.short_channel_id,
             status = excluded.status,
             close_reason = excluded.close_reason,
             is_outbound = excluded.is_outbound,
             updated_at = excluded.updated_at"
    ))?
    .execute(params![
        row.node_id,
        row.channel_id,
        row.user_channel_id,
        row.counterparty_node_id,
        row.funding_txid,
        row.funding_vout,
        U64(row.capacity_sat),
        U64(row.local_balance_msat),
        row.short_channel_id.map(U64),
        row.status,
        row.close_reason,
        row.is_outbound,
        row.updated_at,
    ])?;
    Ok(())
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<ChannelRow> {
    Ok(ChannelRow {
        node_id: r.get(0)?,
        channel_id: r.get(1)?,
        user_channel_id: r.get(2)?,
        counterparty_node_id: r.get(3)?,
        funding_txid: r.get(4)?,
        funding_vout: r.get(5)?,
        capacity_sat: r.get::<_, U64>(6)?.0,
        local_balance_msat: r.get::<_, U64>(7)?.0,
        short_channel_id: opt(r.get(8)?),
        status: r.get(9)?,
        close_reason: r.get(10)?,
        is_outbound: r.get(11)?,
        updated_at: r.get(12)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: ChannelStatus) -> ChannelRow {
        ChannelRow {
            node_id: "02".repeat(33),
            channel_id: "ab".repeat(32),
            user_channel_id: "7".into(),
            counterparty_node_id: "03".repeat(33),
            funding_txid: None,
            funding_vout: None,
            capacity_sat: 100_000,
            local_balance_msat: 0,
            short_channel_id: None,
            status,
            close_reason: None,
            is_outbound: true,
            updated_at: 10,
        }
    }

    #[test]
    fn update_keeps_known_optionals_and_takes_new_balances() {
        let mut old = row(ChannelStatus::Open);
        old.short_channel_id = Some(42);
        old.funding_txid = Some("cd".repeat(32));
        let mut new = row(ChannelStatus::Open);
        new.local_balance_msat = 5_000;
        new.updated_at = 20;
        let merged = merge(old, &new);
        assert_eq!(merged.short_channel_id, Some(42));
        assert_eq!(merged.funding_txid, Some("cd".repeat(32)));
        assert_eq!(merged.local_balance_msat, 5_000);
        assert_eq!(merged.updated_at, 20);
    }

    #[test]
    fn closed_channel_is_not_reopened_by_a_late_update() {
        let mut old = row(ChannelStatus::Closed);
        old.close_reason = Some("cooperative".into());
        let mut late = row(ChannelStatus::Open);
        late.local_balance_msat = 99;
        late.short_channel_id = Some(7);
        late.updated_at = 30;
        let merged = merge(old, &late);
        assert_eq!(merged.status, ChannelStatus::Closed);
        assert_eq!(merged.close_reason.as_deref(), Some("cooperative"));
        assert_eq!(merged.local_balance_msat, 0, "stale balance must not win");
        assert_eq!(
            merged.short_channel_id,
            Some(7),
            "missing fields are filled in"
        );
        assert_eq!(merged.updated_at, 30);
    }
}
