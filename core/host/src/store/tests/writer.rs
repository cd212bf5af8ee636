//! Group commit: writes from many threads share commits, and one failing write takes nothing
//! else down with it.

use super::*;
use crate::store::{PaymentStatus, StoreError};

#[test]
fn a_panicking_write_leaves_nothing_and_the_writer_goes_on() {
    let dir = TempDir::new();
    let store = Store::open(&dir.db()).unwrap();
    let result = store.write(|conn| -> Result<(), StoreError> {
        conn.execute(
            "INSERT INTO nodes VALUES ('x', 'half-written', NULL, 'running', 0)",
            [],
        )?;
        panic!("simulated bug in a write");
    });
    assert!(result.is_err(), "a panicking write reported success");
    assert!(store.nodes().unwrap().is_empty(), "the half write is gone");
    store.upsert_node(&node(2)).unwrap();
    assert_eq!(store.nodes().unwrap(), vec![node(2)]);
}

#[test]
fn concurrent_writes_share_commits_and_a_failure_stays_its_own() {
    let dir = TempDir::new();
    let store = store_with_nodes(&dir);
    let before = store.write_stats();
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50u8 {
                    let mut row = payment_row(&node_id(2), [t, i]);
                    // Every tenth write names a node the table does not have: refused alone.
                    if i % 10 == 0 {
                        row.node_id = node_id(200);
                        assert!(matches!(
                            store.upsert_payment(&row),
                            Err(StoreError::UnknownNode { .. })
                        ));
                    } else {
                        store.upsert_payment(&row).unwrap();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = store.write_stats();
    let (writes, commits) = (stats.writes - before.writes, stats.commits - before.commits);
    assert_eq!(writes, 400);
    assert!(
        commits < writes,
        "8 concurrent writers never shared a commit ({commits} commits for {writes} writes)"
    );
    assert_eq!(store.payments(&node_id(2)).unwrap().len(), 8 * 45);
}

fn payment_row(node: &str, id: [u8; 2]) -> crate::store::PaymentRow {
    let hash = format!("{:02x}{:02x}{}", id[0], id[1], "00".repeat(30));
    crate::store::PaymentRow {
        node_id: node.to_owned(),
        payment_hash: hash,
        direction: crate::store::Direction::Outbound,
        status: PaymentStatus::Pending,
        amount_msat: Some(1),
        fee_msat: None,
        preimage: None,
        bolt11: None,
        failure_reason: None,
        created_at: 1,
        updated_at: 1,
    }
}
