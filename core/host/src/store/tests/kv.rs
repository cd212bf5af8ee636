//! The LDK key-value store: contract of KVStoreSync/KVStore, validation, scopes.

use std::future::Future;

use lightning::io::ErrorKind;
use lightning::util::persist::{self, KVStoreSync, MigratableKVStore};

use super::{node_id, TempDir};
use crate::store::{KvStore, Store, HOST_SCOPE};

fn open(dir: &TempDir) -> Store {
    Store::open(&dir.db()).unwrap()
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn kv_store_is_clone_send_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<KvStore>();
    assert_traits::<Store>();
}

#[test]
fn read_write_overwrite_remove() {
    let dir = TempDir::new();
    let kv = open(&dir).kv(&node_id(2));

    let missing = kv.read("monitors", "", "k").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);

    kv.write("monitors", "", "k", b"one".to_vec()).unwrap();
    assert_eq!(kv.read("monitors", "", "k").unwrap(), b"one");
    kv.write("monitors", "", "k", b"two".to_vec()).unwrap();
    assert_eq!(kv.read("monitors", "", "k").unwrap(), b"two");
    kv.write("monitors", "", "empty", Vec::new()).unwrap();
    assert_eq!(kv.read("monitors", "", "empty").unwrap(), b"");

    kv.remove("monitors", "", "k", false).unwrap();
    assert_eq!(
        kv.read("monitors", "", "k").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Removing what is not there succeeds; a lazy remove is applied at once.
    kv.remove("monitors", "", "k", false).unwrap();
    kv.remove("monitors", "", "empty", true).unwrap();
    assert_eq!(kv.list("monitors", "").unwrap(), Vec::<String>::new());
}

#[test]
fn list_is_per_namespace_pair() {
    let dir = TempDir::new();
    let kv = open(&dir).kv(&node_id(2));
    kv.write("", "", "manager", vec![1]).unwrap();
    kv.write("monitor_updates", "chan_a", "1", vec![1]).unwrap();
    kv.write("monitor_updates", "chan_a", "2", vec![2]).unwrap();
    kv.write("monitor_updates", "chan_b", "1", vec![3]).unwrap();

    assert_eq!(kv.list("", "").unwrap(), vec!["manager"]);
    assert_eq!(
        kv.list("monitor_updates", "chan_a").unwrap(),
        vec!["1", "2"]
    );
    assert_eq!(kv.list("monitor_updates", "chan_b").unwrap(), vec!["1"]);
    assert_eq!(
        kv.list("monitor_updates", "").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(kv.list("unknown", "").unwrap(), Vec::<String>::new());
    assert_eq!(
        kv.read("monitor_updates", "chan_b", "1").unwrap(),
        vec![3],
        "same key in another secondary namespace is a different entry"
    );

    let mut all = kv.list_all_keys().unwrap();
    all.sort();
    assert_eq!(
        all,
        vec![
            ("".into(), "".into(), "manager".into()),
            ("monitor_updates".into(), "chan_a".into(), "1".into()),
            ("monitor_updates".into(), "chan_a".into(), "2".into()),
            ("monitor_updates".into(), "chan_b".into(), "1".into()),
        ]
    );
}

#[test]
fn invalid_namespaces_and_keys_are_rejected() {
    let dir = TempDir::new();
    let kv = open(&dir).kv(&node_id(2));
    let longest = "a".repeat(120);
    let too_long = "a".repeat(121);

    let bad: &[(&str, &str, &str)] = &[
        ("monitors", "", ""),
        ("", "secondary", "key"),
        ("mon/itors", "", "key"),
        ("monitors", "", "../key"),
        ("monitors", "", "ключ"),
        ("monitors", "a b", "key"),
        ("monitors", "", &too_long),
        (&too_long, "", "key"),
    ];
    for &(p, s, k) in bad {
        let kinds = [
            kv.write(p, s, k, vec![1]).unwrap_err().kind(),
            kv.read(p, s, k).unwrap_err().kind(),
            kv.remove(p, s, k, false).unwrap_err().kind(),
        ];
        assert_eq!(kinds, [ErrorKind::InvalidInput; 3], "{p:?}/{s:?}/{k:?}");
    }
    assert_eq!(
        kv.list("", "secondary").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kv.list("bad ns", "").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(kv.list_all_keys().unwrap(), vec![], "nothing was written");

    kv.write(&longest, &longest, &longest, vec![9]).unwrap();
    kv.write("A-Z_a-z", "0-9", "Key_-09", vec![8]).unwrap();
    assert_eq!(kv.read(&longest, &longest, &longest).unwrap(), vec![9]);
}

#[test]
fn scopes_isolate_nodes() {
    let dir = TempDir::new();
    let store = open(&dir);
    let a = store.kv(&node_id(2));
    let b = store.kv(&node_id(3));
    let host = store.kv(HOST_SCOPE);

    a.write("", "", "manager", b"a".to_vec()).unwrap();
    host.write("", "", "network_graph", b"g".to_vec()).unwrap();

    assert_eq!(
        b.read("", "", "manager").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(b.list("", "").unwrap(), Vec::<String>::new());
    assert_eq!(host.list("", "").unwrap(), vec!["network_graph"]);
    assert_eq!(a.list("", "").unwrap(), vec!["manager"]);

    b.write("", "", "manager", b"b".to_vec()).unwrap();
    b.remove("", "", "manager", false).unwrap();
    assert_eq!(
        a.read("", "", "manager").unwrap(),
        b"a",
        "B's remove left A alone"
    );
}

#[test]
fn async_wrapper_write_is_committed_before_the_call_returns() {
    let dir = TempDir::new();
    let store = open(&dir);
    let kv = store.kv(&node_id(2));
    let other_handle = store.kv(&node_id(2));
    let kv = persist::KVStoreSyncWrapper(&kv);

    let pending = persist::KVStore::write(&kv, "monitors", "", "chan", b"state".to_vec());
    assert_eq!(
        other_handle.read("monitors", "", "chan").unwrap(),
        b"state",
        "visible before the future is polled"
    );
    block_on(pending).unwrap();

    assert_eq!(
        block_on(persist::KVStore::read(&kv, "monitors", "", "chan")).unwrap(),
        b"state"
    );
    assert_eq!(
        block_on(persist::KVStore::list(&kv, "monitors", "")).unwrap(),
        vec!["chan"]
    );
    block_on(persist::KVStore::remove(&kv, "monitors", "", "chan", true)).unwrap();
    let missing = block_on(persist::KVStore::read(&kv, "monitors", "", "chan")).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    let invalid = block_on(persist::KVStore::write(&kv, "", "x", "k", vec![])).unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::InvalidInput);
}

#[test]
fn concurrent_writers_from_many_threads() {
    let dir = TempDir::new();
    let store = open(&dir);
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let kv = store.kv(&node_id(t));
            std::thread::spawn(move || {
                for i in 0..25 {
                    kv.write("monitors", "", &format!("k{i}"), vec![t; 100])
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for t in 0..8u8 {
        let kv = store.kv(&node_id(t));
        assert_eq!(kv.list("monitors", "").unwrap().len(), 25);
        assert_eq!(kv.read("monitors", "", "k24").unwrap(), vec![t; 100]);
    }
}
