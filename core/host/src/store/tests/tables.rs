//! The plain tables: nodes, channels, payments, events.

use rusqlite::Connection;

use super::{node, node_id, store_with_nodes, TempDir};
use crate::store::{
    ChannelRow, ChannelStatus, Direction, NodeRow, PaymentFilter, PaymentRow, PaymentStatus, Rows,
    Store, StoreError,
};

fn channel(node: u8) -> ChannelRow {
    ChannelRow {
        node_id: node_id(node),
        channel_id: "ab".repeat(32),
        user_channel_id: u128::MAX.to_string(),
        counterparty_node_id: node_id(9),
        funding_txid: Some("cd".repeat(32)),
        funding_vout: Some(u32::MAX),
        capacity_sat: 1_000_000,
        local_balance_msat: 400_000_000,
        short_channel_id: None,
        status: ChannelStatus::Pending,
        close_reason: None,
        is_outbound: true,
        updated_at: 100,
    }
}

fn payment(status: PaymentStatus, at: i64) -> PaymentRow {
    PaymentRow {
        node_id: node_id(2),
        payment_hash: "11".repeat(32),
        direction: Direction::Outbound,
        status,
        amount_msat: Some(5_000),
        fee_msat: None,
        preimage: None,
        bolt11: Some("lnbcrt50n1...".into()),
        failure_reason: None,
        created_at: at,
        updated_at: at,
    }
}

#[test]
fn nodes_upsert_keeps_created_at() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    let mut changed = node(2);
    changed.status = "stopped".into();
    changed.listen_addr = Some("127.0.0.1:9735".into());
    changed.created_at = 1;
    store.upsert_node(&changed).unwrap();

    let got = store.node(&node_id(2)).unwrap().unwrap();
    assert_eq!(got.status, "stopped");
    assert_eq!(got.listen_addr.as_deref(), Some("127.0.0.1:9735"));
    assert_eq!(got.created_at, node(2).created_at);
    assert_eq!(store.nodes().unwrap().len(), 2);
    assert_eq!(store.node(&node_id(7)).unwrap(), None);
}

#[test]
fn a_node_status_changes_alone_and_an_unknown_node_gains_no_row() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    store.set_node_status(&node_id(2), "halted").unwrap();
    let got = store.node(&node_id(2)).unwrap().unwrap();
    assert_eq!(
        got,
        NodeRow {
            status: "halted".into(),
            ..node(2)
        }
    );
    store.set_node_status(&node_id(7), "halted").unwrap();
    assert_eq!(store.node(&node_id(7)).unwrap(), None);
    assert!(store.set_node_status("not a node id", "halted").is_err());
}

#[test]
fn malformed_ids_are_rejected() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    let mut upper = node(2);
    upper.node_id = upper.node_id.replace("02", "0A");
    let mut short = node(2);
    short.node_id.pop();
    for row in [upper, short] {
        assert!(matches!(
            store.upsert_node(&row),
            Err(StoreError::InvalidValue(_))
        ));
    }
    let mut bad_user_id = channel(2);
    bad_user_id.user_channel_id = "0x12".into();
    assert!(matches!(
        store.upsert_channel(&bad_user_id),
        Err(StoreError::InvalidValue(_))
    ));
    let mut bad_hash = payment(PaymentStatus::Pending, 1);
    bad_hash.payment_hash = "zz".repeat(32);
    assert!(matches!(
        store.upsert_payment(&bad_hash),
        Err(StoreError::InvalidValue(_))
    ));
    assert_eq!(store.nodes().unwrap().len(), 2);
}

#[test]
fn rows_of_unknown_nodes_are_refused() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    match store.upsert_channel(&channel(7)) {
        Err(StoreError::UnknownNode { node_id: id }) => assert_eq!(id, node_id(7)),
        other => panic!("expected UnknownNode, got {other:?}"),
    }
    let mut orphan = payment(PaymentStatus::Pending, 1);
    orphan.node_id = node_id(7);
    assert!(matches!(
        store.upsert_payment(&orphan),
        Err(StoreError::UnknownNode { .. })
    ));
}

#[test]
fn channels_round_trip_and_update() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    store.upsert_channel(&channel(2)).unwrap();
    assert_eq!(store.channels(&node_id(2)).unwrap(), vec![channel(2)]);
    assert_eq!(store.channels(&node_id(3)).unwrap(), vec![]);

    let mut open = channel(2);
    open.status = ChannelStatus::Open;
    open.short_channel_id = Some(123 << 40);
    open.local_balance_msat = 1;
    open.updated_at = 200;
    store.upsert_channel(&open).unwrap();
    let mut closed = open.clone();
    closed.status = ChannelStatus::Closed;
    closed.close_reason = Some("counterparty force-closed".into());
    closed.short_channel_id = None;
    store.upsert_channel(&closed).unwrap();

    let got = store
        .channel(&node_id(2), &channel(2).channel_id)
        .unwrap()
        .unwrap();
    assert_eq!(got.status, ChannelStatus::Closed);
    assert_eq!(got.short_channel_id, Some(123 << 40));
    assert_eq!(
        got.close_reason.as_deref(),
        Some("counterparty force-closed")
    );
    assert_eq!(store.channels(&node_id(2)).unwrap().len(), 1);
}

#[test]
fn u64_extremes_round_trip_and_small_values_stay_integers() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    let mut max = channel(2);
    max.capacity_sat = u64::MAX;
    max.local_balance_msat = i64::MAX as u64 + 1;
    max.short_channel_id = Some(u64::MAX);
    store.upsert_channel(&max).unwrap();
    let mut huge = payment(PaymentStatus::Succeeded, 1);
    huge.amount_msat = Some(u64::MAX);
    huge.fee_msat = Some(i64::MAX as u64);
    store.upsert_payment(&huge).unwrap();
    let path = store.path().to_path_buf();
    drop(store);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.channels(&node_id(2)).unwrap(), vec![max]);
    assert_eq!(
        store
            .payment(&node_id(2), &huge.payment_hash, Direction::Outbound)
            .unwrap(),
        Some(huge)
    );
    drop(store);

    let raw = Connection::open(&path).unwrap();
    let types: (String, String) = raw
        .query_row(
            "SELECT typeof(amount_msat), typeof(fee_msat) FROM payments",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(types.0, "text", "above i64::MAX: decimal text");
    assert_eq!(types.1, "integer", "within i64: a plain integer");
}

#[test]
fn payment_status_never_regresses() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    store
        .upsert_payment(&payment(PaymentStatus::Pending, 10))
        .unwrap();
    let mut ok = payment(PaymentStatus::Succeeded, 20);
    ok.preimage = Some("22".repeat(32));
    ok.fee_msat = Some(7);
    ok.created_at = 20;
    store.upsert_payment(&ok).unwrap();

    let mut late = payment(PaymentStatus::Pending, 30);
    late.amount_msat = Some(1);
    store.upsert_payment(&late).unwrap();

    let got = store
        .payment(&node_id(2), &ok.payment_hash, Direction::Outbound)
        .unwrap()
        .unwrap();
    assert_eq!(got.status, PaymentStatus::Succeeded);
    assert_eq!(got.preimage, ok.preimage);
    assert_eq!(got.fee_msat, Some(7));
    assert_eq!(got.amount_msat, Some(5_000), "stale amount ignored");
    assert_eq!(got.created_at, 10, "first insert's created_at");
    assert_eq!(got.updated_at, 30);
}

#[test]
fn failed_payment_does_not_return_to_pending() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    let mut failed = payment(PaymentStatus::Failed, 10);
    failed.failure_reason = Some("route not found".into());
    store.upsert_payment(&failed).unwrap();
    store
        .upsert_payment(&payment(PaymentStatus::Pending, 11))
        .unwrap();
    let got = store.payments(&node_id(2)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].status, PaymentStatus::Failed);
    assert_eq!(got[0].failure_reason.as_deref(), Some("route not found"));
}

#[test]
fn directions_are_separate_payments() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    let out = payment(PaymentStatus::Pending, 1);
    let mut inbound = payment(PaymentStatus::Succeeded, 2);
    inbound.direction = Direction::Inbound;
    store.upsert_payment(&out).unwrap();
    store.upsert_payment(&inbound).unwrap();
    assert_eq!(
        store.payments(&node_id(2)).unwrap(),
        vec![out.clone(), inbound]
    );
    assert_eq!(
        store
            .payment(&node_id(2), &out.payment_hash, Direction::Outbound)
            .unwrap()
            .map(|p| p.status),
        Some(PaymentStatus::Pending)
    );
    assert_eq!(store.payments(&node_id(3)).unwrap(), vec![]);
}

#[test]
fn payments_page_newest_first_filtered_and_never_another_nodes() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    for (i, status) in [
        PaymentStatus::Succeeded,
        PaymentStatus::Pending,
        PaymentStatus::Failed,
        PaymentStatus::Succeeded,
    ]
    .into_iter()
    .enumerate()
    {
        let mut row = payment(status, i as i64);
        row.payment_hash = format!("{:02x}", i + 1).repeat(32);
        row.direction = if i == 3 {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        store.upsert_payment(&row).unwrap();
        row.node_id = node_id(3);
        row.payment_hash = "ee".repeat(32);
        store.upsert_payment(&row).unwrap();
    }
    // A later update of the first payment does not move it in the order.
    store
        .upsert_payment(&PaymentRow {
            payment_hash: "01".repeat(32),
            ..payment(PaymentStatus::Succeeded, 9)
        })
        .unwrap();
    let hashes = |page: &[(i64, PaymentRow)]| -> Vec<String> {
        page.iter()
            .map(|(_, r)| r.payment_hash[..2].to_owned())
            .collect()
    };
    let all = PaymentFilter::default();
    let first = store.payments_page(&node_id(2), all, None, 3).unwrap();
    assert_eq!(hashes(&first), ["04", "03", "02"]);
    let rest = store
        .payments_page(&node_id(2), all, Some(first[2].0), 3)
        .unwrap();
    assert_eq!(hashes(&rest), ["01"]);
    let outbound_succeeded = PaymentFilter {
        direction: Some(Direction::Outbound),
        status: Some(PaymentStatus::Succeeded),
    };
    let page = store
        .payments_page(&node_id(2), outbound_succeeded, None, 10)
        .unwrap();
    assert_eq!(hashes(&page), ["01"]);
    let other = store.payments_page(&node_id(3), all, None, 10).unwrap();
    assert_eq!(hashes(&other), ["ee", "ee"], "node 3's own, by direction");
}

#[test]
fn events_page_by_id_per_node() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    let (a, b) = (node_id(2), node_id(3));
    let first = store
        .insert_event(&a, "channel_pending", &serde_json::json!({"sat": 1}))
        .unwrap();
    let other = store
        .insert_event(&b, "payment", &serde_json::json!(null))
        .unwrap();
    let second = store
        .insert_event(&a, "channel_ready", &serde_json::json!(["x", 2]))
        .unwrap();
    let third = store
        .insert_event(&a, "channel_closed", &serde_json::json!({"reason": "coop"}))
        .unwrap();
    assert!(first < other && other < second && second < third);

    let all = store.events(&a, 0, 100).unwrap();
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![first, second, third]);
    assert_eq!(all[1].kind, "channel_ready");
    assert_eq!(all[1].data, serde_json::json!(["x", 2]));
    assert!(all
        .iter()
        .all(|e| e.node_id == a && e.created_at > 1_600_000_000));

    let page = store.events(&a, first, 1).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, second);
    assert_eq!(store.events(&a, third, 10).unwrap(), vec![]);
    assert_eq!(store.events(&a, 0, 0).unwrap(), vec![]);
    assert_eq!(store.events(&b, 0, 10).unwrap().len(), 1);
}

#[test]
fn rows_are_written_in_one_commit_or_not_at_all() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    let commits = store.write_stats().commits;

    let mut rows = Rows::default();
    rows.payment(payment(PaymentStatus::Succeeded, 5)).unwrap();
    rows.event(&node_id(2), "payment_sent", &serde_json::json!({"n": 1}))
        .unwrap();
    rows.channel(channel(2)).unwrap();
    store.write_rows(rows).unwrap();
    assert_eq!(store.write_stats().commits, commits + 1);
    assert_eq!(store.payments(&node_id(2)).unwrap().len(), 1);
    assert_eq!(store.events(&node_id(2), 0, 10).unwrap().len(), 1);
    assert_eq!(store.channels(&node_id(2)).unwrap().len(), 1);

    // A malformed row is refused as it is added, before anything is queued.
    let mut bad = channel(3);
    bad.channel_id = "zz".into();
    assert!(matches!(
        Rows::default().channel(bad),
        Err(StoreError::InvalidValue(_))
    ));

    // One row the database refuses (unknown node) takes the others with it.
    let mut rows = Rows::default();
    rows.event(&node_id(3), "payment_received", &serde_json::json!(null))
        .unwrap();
    rows.payment(PaymentRow {
        node_id: node_id(3),
        ..payment(PaymentStatus::Pending, 6)
    })
    .unwrap();
    rows.channel(channel(7)).unwrap();
    assert!(matches!(
        store.write_rows(rows),
        Err(StoreError::UnknownNode { .. })
    ));
    assert_eq!(store.events(&node_id(3), 0, 10).unwrap(), vec![]);
    assert_eq!(store.payments(&node_id(3)).unwrap(), vec![]);

    let commits = store.write_stats().commits;
    store.write_rows(Rows::default()).unwrap();
    assert_eq!(
        store.write_stats().commits,
        commits,
        "nothing to write, no commit"
    );
}
