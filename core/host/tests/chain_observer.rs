//! The shared chain observer against real btcd: one fetch per block for many nodes, late
//! joiners synced from their own best block, a reorg between two btcd instances followed by
//! every node, and typed errors for a wrong password or a chain node that is down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::{Block, BlockHash, Network};
use flotilla_host::chain::{ChainError, ChainObserver, RpcConfig, RpcError};
use flotilla_regtest::Regtest;
use lightning::chain::{BestBlock, Listen};

/// A stand-in node that records the chain it was shown.
#[derive(Default)]
struct Recorder {
    chain: Mutex<Vec<(u32, BlockHash)>>,
    disconnects: Mutex<Vec<u32>>,
}

impl Recorder {
    fn tip(&self) -> Option<(u32, BlockHash)> {
        self.chain.lock().unwrap().last().copied()
    }
}

impl Listen for Recorder {
    fn filtered_block_connected(
        &self,
        header: &bitcoin::block::Header,
        _: &lightning::chain::transaction::TransactionData,
        height: u32,
    ) {
        let mut chain = self.chain.lock().unwrap();
        if let Some((h, hash)) = chain.last() {
            assert_eq!(*h + 1, height, "blocks out of order");
            assert_eq!(
                *hash, header.prev_blockhash,
                "block does not build on the last one"
            );
        }
        chain.push((height, header.block_hash()));
    }

    fn block_connected(&self, block: &Block, height: u32) {
        self.filtered_block_connected(&block.header, &[], height);
    }

    fn blocks_disconnected(&self, fork_point: BestBlock) {
        self.chain
            .lock()
            .unwrap()
            .retain(|(h, _)| *h <= fork_point.height);
        self.disconnects.lock().unwrap().push(fork_point.height);
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

async fn join_at_tip(observer: &ChainObserver, name: &str) -> Arc<Recorder> {
    let best = observer.best_block().unwrap();
    let recorder = Arc::new(Recorder::default());
    recorder
        .chain
        .lock()
        .unwrap()
        .push((best.height, best.block_hash));
    observer
        .join(name.into(), recorder.clone(), best)
        .await
        .unwrap();
    recorder
}

async fn wait_tip(observer: &ChainObserver, chain: &Regtest) -> u32 {
    let height = chain.height().await.unwrap();
    for _ in 0..200 {
        if observer.stats().tip_height == height {
            return height;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("observer did not reach height {height}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_block_is_fetched_once_for_all_nodes_and_late_joiners_catch_up() {
    let dir = tempdir();
    let chain = Regtest::spawn_owned(dir.path()).await.unwrap();
    chain.mine(5).await.unwrap();
    let observer = ChainObserver::start(
        &chain.rpc_config(),
        Network::Regtest,
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    let start = observer.best_block().unwrap();
    let mut nodes = Vec::new();
    for i in 0..50 {
        nodes.push(join_at_tip(&observer, &format!("n{i}")).await);
    }
    let before = observer.stats();
    chain.mine(10).await.unwrap();
    let tip = wait_tip(&observer, &chain).await;
    let after = observer.stats();
    assert_eq!(
        after.getblock_calls - before.getblock_calls,
        10,
        "one getblock per new block"
    );
    assert_eq!(after.block_deliveries - before.block_deliveries, 500);
    let best = chain.best_block_hash().await.unwrap();
    for n in &nodes {
        assert_eq!(n.tip(), Some((tip, best)));
    }

    // A node that was down since `start` syncs from its own best block, from the shared cache.
    let late = Arc::new(Recorder::default());
    late.chain
        .lock()
        .unwrap()
        .push((start.height, start.block_hash));
    observer
        .join("late".into(), late.clone(), start)
        .await
        .unwrap();
    assert_eq!(late.tip(), Some((tip, best)));
    assert_eq!(late.chain.lock().unwrap().len(), 11);
    assert_eq!(
        observer.stats().getblock_calls,
        after.getblock_calls,
        "catch-up served from cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_between_two_btcds_is_followed_by_every_node() {
    let (da, db) = (tempdir(), tempdir());
    let a = Regtest::spawn_owned(da.path()).await.unwrap();
    let b = Regtest::spawn_owned(db.path()).await.unwrap();
    a.connect_to(&b).await.unwrap();
    a.mine(3).await.unwrap();
    b.wait_synced(&a, Duration::from_secs(20)).await.unwrap();
    let fork_height = a.height().await.unwrap();

    let observer =
        ChainObserver::start(&a.rpc_config(), Network::Regtest, Duration::from_millis(50))
            .await
            .unwrap();
    let nodes = [
        join_at_tip(&observer, "x").await,
        join_at_tip(&observer, "y").await,
    ];

    // Split: A mines 2 blocks the nodes see, B mines a longer branch of 4.
    a.disconnect_from(&b).await.unwrap();
    a.mine(2).await.unwrap();
    wait_tip(&observer, &a).await;
    b.mine(4).await.unwrap();
    assert_eq!(nodes[0].tip().unwrap().0, fork_height + 2);

    // Rejoin: A reorganises onto B's branch, and so does every node.
    a.connect_to(&b).await.unwrap();
    let best = a.wait_synced(&b, Duration::from_secs(20)).await.unwrap();
    assert_eq!(best, b.best_block_hash().await.unwrap());
    let tip = wait_tip(&observer, &a).await;
    assert_eq!(tip, fork_height + 4);
    for n in &nodes {
        assert_eq!(n.tip(), Some((tip, best)));
        assert_eq!(*n.disconnects.lock().unwrap(), vec![fork_height]);
    }
    assert_eq!(observer.stats().blocks_disconnected, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_missing_chain_node_are_typed_errors() {
    let dir = tempdir();
    let chain = Regtest::spawn_owned(dir.path()).await.unwrap();
    let mut bad = chain.rpc_config();
    bad.password = "wrong".into();
    let err = ChainObserver::start(&bad, Network::Regtest, Duration::from_millis(50))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ChainError::Rpc(RpcError::Unauthorized)),
        "{err}"
    );

    let nowhere = RpcConfig {
        url: "http://127.0.0.1:9".into(),
        user: "u".into(),
        password: "p".into(),
        ca_path: None,
    };
    let started = std::time::Instant::now();
    let err = ChainObserver::start(&nowhere, Network::Regtest, Duration::from_millis(50))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ChainError::Unreachable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
