//! The `payments` table: one row per (node, payment hash, direction), kept in step from LDK
//! events, which may arrive twice or late (e.g. replayed after a restart).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::sqlval::{opt, U64};
use super::{validate, Direction, PaymentRow, PaymentStatus, Rows, Store, StoreError};

const COLUMNS: &str = "node_id, payment_hash, direction, status, amount_msat, fee_msat, \
     preimage, bolt11, failure_reason, created_at, updated_at";

impl Store {
    /// Inserts or updates a payment of a node that is already in `nodes`
    /// ([`StoreError::UnknownNode`] otherwise).
    ///
    /// The status only moves forward (pending, then failed, then succeeded; see
    /// [`PaymentStatus::rank`]): an update that would move it back is stale and only fills in
    /// fields still missing. A known optional value is never erased by `None`, except the
    /// failure reason, which is dropped once the payment succeeds. `created_at` stays that of
    /// the first insert.
    pub fn upsert_payment(&self, row: &PaymentRow) -> Result<(), StoreError> {
        let mut rows = Rows::default();
        rows.payment(row.clone())?;
        self.write_rows(rows)
    }

    /// One payment, if known.
    pub fn payment(
        &self,
        node_id: &str,
        payment_hash: &str,
        direction: Direction,
    ) -> Result<Option<PaymentRow>, StoreError> {
        self.read(|conn| Ok(select(conn, node_id, payment_hash, direction)?))
    }

    /// All payments of a node, oldest first.
    pub fn payments(&self, node_id: &str) -> Result<Vec<PaymentRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM payments WHERE node_id = ?1 ORDER BY created_at, rowid"
            ))?;
            let rows = stmt.query_map([node_id], from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// A page of a node's payments, newest first: up to `limit` rows made before the row
    /// `before` (a cursor this returned; `None` for the first page), of `direction` and
    /// `status` when given. Each row comes with its cursor.
    pub fn payments_page(
        &self,
        node_id: &str,
        filter: PaymentFilter,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, PaymentRow)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS}, rowid FROM payments
                 WHERE node_id = ?1 AND rowid < ?2
                   AND (?3 IS NULL OR direction = ?3) AND (?4 IS NULL OR status = ?4)
                 ORDER BY rowid DESC LIMIT ?5"
            ))?;
            let rows = stmt.query_map(
                params![
                    node_id,
                    before.unwrap_or(i64::MAX),
                    filter.direction,
                    filter.status,
                    limit
                ],
                |r| Ok((r.get(11)?, from_row(r)?)),
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

/// Which payments a page holds: all, or those of one direction and/or status.
#[derive(Clone, Copy, Debug, Default)]
pub struct PaymentFilter {
    pub direction: Option<Direction>,
    pub status: Option<PaymentStatus>,
}

/// Refuses a row whose keys or preimage are malformed, before it is queued.
pub(super) fn check(row: &PaymentRow) -> Result<(), StoreError> {
    validate::node_id("node_id", &row.node_id)?;
    validate::hash32("payment_hash", &row.payment_hash)?;
    if let Some(preimage) = &row.preimage {
        validate::hash32("preimage", preimage)?;
    }
    Ok(())
}

/// Merges `row` into the stored one, within the caller's transaction.
pub(super) fn upsert(conn: &Connection, row: &PaymentRow) -> Result<(), StoreError> {
    let merged = match select(conn, &row.node_id, &row.payment_hash, row.direction)? {
        Some(old) => merge(old, row),
        None => row.clone(),
    };
    write(conn, &merged).map_err(|e| StoreError::from_node_write(e, &row.node_id))
}

/// Combines the stored row with an update; see [`Store::upsert_payment`].
fn merge(old: PaymentRow, new: &PaymentRow) -> PaymentRow {
    let created_at = old.created_at;
    let stale = new.status.rank() < old.status.rank();
    let (fresh, other) = if stale {
        (old, new.clone())
    } else {
        (new.clone(), old)
    };
    let failure_reason = match fresh.status {
        PaymentStatus::Succeeded => None,
        _ => fresh.failure_reason.or(other.failure_reason),
    };
    PaymentRow {
        amount_msat: fresh.amount_msat.or(other.amount_msat),
        fee_msat: fresh.fee_msat.or(other.fee_msat),
        preimage: fresh.preimage.or(other.preimage),
        bolt11: fresh.bolt11.or(other.bolt11),
        failure_reason,
        created_at,
        updated_at: fresh.updated_at.max(other.updated_at),
        ..fresh
    }
}

fn select(
    conn: &Connection,
    node_id: &str,
    payment_hash: &str,
    direction: Direction,
) -> rusqlite::Result<Option<PaymentRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM payments
         WHERE node_id = ?1 AND payment_hash = ?2 AND direction = ?3"
    ))?
    .query_row(params![node_id, payment_hash, direction], from_row)
    .optional()
}

fn write(conn: &Connection, row: &PaymentRow) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO payments ({COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (node_id, payment_hash, direction) DO UPDATE SET
             status = excluded.status,
             amount_msat = excluded.amount_msat,
             fee_msat = excluded.fee_msat,
             preimage = excluded.preimage,
             bolt11 = excluded.bolt11,
             failure_reason = excluded.failure_reason,
             created_at = excluded.created_at,
             updated_at = excluded.updated_at"
    ))?
    .execute(params![
        row.node_id,
        row.payment_hash,
        row.direction,
        row.status,
        row.amount_msat.map(U64),
        row.fee_msat.map(U64),
        row.preimage,
        row.bolt11,
        row.failure_reason,
        row.created_at,
        row.updated_at,
    ])?;
    Ok(())
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<PaymentRow> {
    Ok(PaymentRow {
        node_id: r.get(0)?,
        payment_hash: r.get(1)?,
        direction: r.get(2)?,
        status: r.get(3)?,
        amount_msat: opt(r.get(4)?),
        fee_msat: opt(r.get(5)?),
        preimage: r.get(6)?,
        bolt11: r.get(7)?,
        failure_reason: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: PaymentStatus, at: i64) -> PaymentRow {
        PaymentRow::update(
            &"02".repeat(33),
            &"11".repeat(32),
            Direction::Outbound,
            status,
            at,
        )
    }

    #[test]
    fn failed_then_succeeded_drops_failure_reason() {
        let mut failed = row(PaymentStatus::Failed, 10);
        failed.failure_reason = Some("no route".into());
        let mut ok = row(PaymentStatus::Succeeded, 20);
        ok.preimage = Some("22".repeat(32));
        let merged = merge(failed, &ok);
        assert_eq!(merged.status, PaymentStatus::Succeeded);
        assert_eq!(merged.failure_reason, None);
        assert_eq!(merged.created_at, 10);
        assert_eq!(merged.updated_at, 20);
    }

    #[test]
    fn succeeded_is_final_but_stale_update_fills_gaps() {
        let mut ok = row(PaymentStatus::Succeeded, 10);
        ok.fee_msat = Some(3);
        let mut late_fail = row(PaymentStatus::Failed, 5);
        late_fail.failure_reason = Some("late".into());
        late_fail.bolt11 = Some("lnbcrt1".into());
        late_fail.fee_msat = Some(999);
        let merged = merge(ok, &late_fail);
        assert_eq!(merged.status, PaymentStatus::Succeeded);
        assert_eq!(merged.failure_reason, None);
        assert_eq!(merged.fee_msat, Some(3), "stale value must not win");
        assert_eq!(merged.bolt11.as_deref(), Some("lnbcrt1"));
        assert_eq!(merged.updated_at, 10);
    }
}
