//! A node whose state cannot be saved stops where it stands, as LDK's own loop would, instead
//! of staying connected and silent: here the database refuses the payer's writes (a trigger
//! plays a full disk) in the middle of a payment. The payer drops its peer and takes it not
//! back, refuses its user's calls with the reason, and its row says `halted`; the payee keeps
//! running.

use std::time::Duration;

use flotilla_host::HostError;
use flotilla_tests::in_process::{seed_signer, Pair};
use std::sync::Arc;

const CHANNEL_SAT: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_save_fails_stops_and_says_why() {
    let pair = Pair::with_channel(
        "failed-save",
        Arc::new(seed_signer(1)),
        Arc::new(seed_signer(2)),
        CHANNEL_SAT,
    )
    .await;
    let (payer, payee) = (&pair.payer, &pair.payee);
    let payer_id = payer.id.to_string();
    let db = rusqlite::Connection::open(pair.dir.join("host.db")).expect("host db");
    db.execute_batch(&format!(
        "CREATE TRIGGER full_disk BEFORE INSERT ON kv WHEN NEW.scope = '{payer_id}' \
         BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END;"
    ))
    .expect("trigger");

    let invoice = payee
        .create_invoice(Some(5_000_000), "unsaved", 600)
        .expect("invoice")
        .to_string();
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        payer.pay_invoice(&invoice, Duration::from_secs(20)),
    )
    .await;

    let mut halted = None;
    for _ in 0..300 {
        match payer.new_address() {
            Err(HostError::Halted { reason, .. }) => {
                halted = Some(reason);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let reason = halted.expect("the payer halted");
    assert!(reason.contains("disk full (test)"), "{reason}");
    assert!(matches!(
        payer.create_invoice(Some(1_000), "after", 600),
        Err(HostError::Halted { .. })
    ));
    // Its peer is dropped and stays dropped (the host's reconnect loop runs every 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        payer.peer_manager.list_peers().is_empty(),
        "the payer took a peer back"
    );
    assert!(
        payee.peer_manager.list_peers().is_empty(),
        "the payee still sees the payer"
    );
    let row = payer.store().node(&payer_id).expect("store").expect("row");
    assert_eq!(row.status, "halted");
    // The payee runs on.
    assert!(payee.create_invoice(Some(1_000), "still here", 600).is_ok());
    db.execute_batch("DROP TRIGGER full_disk;")
        .expect("drop trigger");
    pair.stop().await;
}
