//! One node that cannot start does not take the host down: its stored signer handover is
//! corrupted between two runs of `flotilla host`; on the next start that node is reported
//! failed and left out, and the other node runs and answers.

use flotilla_tests::{free_port, fresh_chain, req, write_seed, HostProcess, SignerProcess};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_start_leaves_the_others_running() {
    let (dir, _chain, chain_json) = fresh_chain("start-failure").await;
    let (a, b) = (write_seed(&dir, "a"), write_seed(&dir, "b"));
    let nodes = [("a", a.as_path()), ("b", b.as_path())];
    let port = free_port();

    let mut host = HostProcess::start(&dir, "h", &chain_json, port, &nodes)
        .await
        .expect("host");
    let mut signer = SignerProcess::start(&dir, "s", &host, &[&a, &b], json!({})).expect("signer");
    host.ready().await.expect("both nodes start");
    let b_id = host.node_id("b");
    host.stop().await;

    // b's handover (what its signer handed over, needed to rebuild it) is now garbage.
    let db = rusqlite::Connection::open(dir.join("h.db")).expect("host db");
    let changed = db
        .execute(
            "UPDATE kv SET value = x'00ff' WHERE scope = ?1 AND primary_namespace = 'signer' \
             AND key = 'handover'",
            [&b_id],
        )
        .expect("corrupt b");
    assert_eq!(changed, 1, "b's handover row");
    drop(db);

    let mut host = HostProcess::start(&dir, "h", &chain_json, port, &nodes)
        .await
        .expect("host restarts");
    host.ready().await.expect("the host comes up without b");
    assert!(!host.node_id("a").is_empty(), "a runs");
    assert!(host.node_id("b").is_empty(), "b is left out");
    assert_eq!(host.failed[0]["alias"], "b", "{}", host.failed);
    let reason = host.failed[0]["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("handover"),
        "b's failure says why: {reason}"
    );
    let balance = host.must(req("balance", "a")).await;
    assert!(balance.is_object(), "a answers: {balance}");
    assert!(
        host.call(req("balance", "b")).await.is_err(),
        "b is not served"
    );
    host.stop().await;
    signer.kill9().await;
    let _ = std::fs::remove_dir_all(&dir);
}
