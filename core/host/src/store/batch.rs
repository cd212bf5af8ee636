//! Plain-table rows written together in one commit: what one LDK event changes (a payment,
//! its event, the channels' balances) costs one fsync, and a reader sees all of it or none.

use rusqlite::Connection;

use super::{channels, events, payments, ChannelRow, PaymentRow, Store, StoreError};

/// Rows to write in one commit, each checked as it is added.
#[derive(Default)]
pub struct Rows {
    ops: Vec<Op>,
}

enum Op {
    Payment(PaymentRow),
    Channel(ChannelRow),
    Event {
        node_id: String,
        kind: String,
        json: String,
    },
}

impl Rows {
    /// A payment to insert or merge, as [`Store::upsert_payment`].
    pub fn payment(&mut self, row: PaymentRow) -> Result<(), StoreError> {
        payments::check(&row)?;
        self.ops.push(Op::Payment(row));
        Ok(())
    }

    /// A channel to insert or merge, as [`Store::upsert_channel`].
    pub fn channel(&mut self, row: ChannelRow) -> Result<(), StoreError> {
        channels::check(&row)?;
        self.ops.push(Op::Channel(row));
        Ok(())
    }

    /// An event to append, as [`Store::insert_event`].
    pub fn event(
        &mut self,
        node_id: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let json = events::encode(data)?;
        self.ops.push(Op::Event {
            node_id: node_id.to_owned(),
            kind: kind.to_owned(),
            json,
        });
        Ok(())
    }

    fn apply(&self, conn: &Connection) -> Result<(), StoreError> {
        for op in &self.ops {
            match op {
                Op::Payment(row) => payments::upsert(conn, row)?,
                Op::Channel(row) => channels::upsert(conn, row)?,
                Op::Event {
                    node_id,
                    kind,
                    json,
                } => {
                    events::insert(conn, node_id, kind, json)?;
                }
            }
        }
        Ok(())
    }
}

impl Store {
    /// Writes `rows` in one transaction, in the order they were added; returns once they are
    /// durable. On error none of them remain. Nothing to write costs nothing.
    pub fn write_rows(&self, rows: Rows) -> Result<(), StoreError> {
        if rows.ops.is_empty() {
            return Ok(());
        }
        let mut nodes: Vec<String> = rows
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Event { node_id, .. } => Some(node_id.clone()),
                _ => None,
            })
            .collect();
        nodes.dedup();
        self.write(move |conn| rows.apply(conn))?;
        for node_id in nodes {
            self.inner.feed.written(&node_id);
        }
        Ok(())
    }
}
