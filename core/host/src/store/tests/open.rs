//! Opening: persistence across reopen, the lock, and refusal of files that are not ours.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use lightning::util::persist::KVStoreSync;
use rusqlite::Connection;

use super::{node, TempDir};
use crate::store::{Store, StoreError, APPLICATION_ID, SCHEMA_VERSION};

#[test]
fn data_survives_close_and_reopen() {
    let dir = TempDir::new();
    let event_id;
    {
        let store = Store::open(&dir.db()).unwrap();
        store.upsert_node(&node(2)).unwrap();
        store
            .kv(&node(2).node_id)
            .write("monitors", "", "abc", vec![1, 2, 3])
            .unwrap();
        event_id = store
            .insert_event(&node(2).node_id, "started", &serde_json::json!({"n": 1}))
            .unwrap();
    }
    let store = Store::open(&dir.db()).unwrap();
    assert_eq!(store.node(&node(2).node_id).unwrap(), Some(node(2)));
    assert_eq!(
        store
            .kv(&node(2).node_id)
            .read("monitors", "", "abc")
            .unwrap(),
        vec![1, 2, 3]
    );
    let events = store.events(&node(2).node_id, 0, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, event_id);
    assert_eq!(events[0].data, serde_json::json!({"n": 1}));
}

#[test]
fn file_is_marked_and_configured() {
    let dir = TempDir::new();
    let store = Store::open(&dir.db()).unwrap();
    drop(store);
    let raw = Connection::open(dir.db()).unwrap();
    let app: i32 = raw
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(app, APPLICATION_ID);
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(mode, "wal");
}

#[test]
fn second_open_is_locked_until_last_handle_drops() {
    let dir = TempDir::new();
    let first = Store::open(&dir.db()).unwrap();
    let kv = first.kv("");
    match Store::open(&dir.db()) {
        Err(StoreError::Locked { path }) => assert_eq!(path, dir.db()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    // The KvStore still holds the database open.
    assert!(matches!(
        Store::open(&dir.db()),
        Err(StoreError::Locked { .. })
    ));
    drop(kv);
    Store::open(&dir.db()).expect("opens once every handle is gone");
}

/// Child side of [`lock_held_by_killed_process_is_released`]: holds the store until stdin
/// closes. Does nothing unless the parent test set the variable.
#[test]
#[ignore = "helper run as a child process by lock_held_by_killed_process_is_released"]
fn lock_holder_child() {
    let Ok(path) = std::env::var("FLOTILLA_STORE_TEST_HOLD") else {
        return;
    };
    let _store = Store::open(path.as_ref()).expect("child opens the store");
    println!("HOLDING");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn lock_held_by_killed_process_is_released() {
    let dir = TempDir::new();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::open::lock_holder_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FLOTILLA_STORE_TEST_HOLD", dir.db())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let holding = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("HOLDING"));
    assert!(holding, "child never opened the store");

    assert!(matches!(
        Store::open(&dir.db()),
        Err(StoreError::Locked { .. })
    ));
    child.kill().unwrap(); // SIGKILL: no destructor runs in the child.
    child.wait().unwrap();
    Store::open(&dir.db()).expect("the kernel released the dead process's lock");
}

#[test]
fn random_bytes_are_corrupt_and_left_alone() {
    let dir = TempDir::new();
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.db(), &garbage).unwrap();
    match Store::open(&dir.db()) {
        Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, dir.db()),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(std::fs::read(dir.db()).unwrap(), garbage);
}

#[test]
fn another_apps_database_is_foreign_and_left_alone() {
    let dir = TempDir::new();
    {
        let other = Connection::open(dir.db()).unwrap();
        other
            .execute_batch("CREATE TABLE recipes (name TEXT); INSERT INTO recipes VALUES ('soup');")
            .unwrap();
    }
    match Store::open(&dir.db()) {
        Err(StoreError::Foreign { path }) => assert_eq!(path, dir.db()),
        other => panic!("expected Foreign, got {other:?}"),
    }
    let other = Connection::open(dir.db()).unwrap();
    let mode: String = other
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "journal mode must not have been changed");
    let tables: i64 = other
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1);
}

#[test]
fn empty_database_with_other_application_id_is_foreign() {
    let dir = TempDir::new();
    {
        let other = Connection::open(dir.db()).unwrap();
        other.pragma_update(None, "application_id", 42).unwrap();
    }
    assert!(matches!(
        Store::open(&dir.db()),
        Err(StoreError::Foreign { .. })
    ));
}

#[test]
fn empty_file_is_initialised() {
    let dir = TempDir::new();
    std::fs::write(dir.db(), b"").unwrap();
    let store = Store::open(&dir.db()).unwrap();
    assert_eq!(store.nodes().unwrap(), vec![]);
}

#[test]
fn newer_schema_is_too_new() {
    let dir = TempDir::new();
    drop(Store::open(&dir.db()).unwrap());
    {
        let raw = Connection::open(dir.db()).unwrap();
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match Store::open(&dir.db()) {
        Err(StoreError::TooNew { found, supported }) => {
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[test]
fn missing_directory_is_an_io_error() {
    let dir = TempDir::new();
    let path = dir.db().with_file_name("absent").join("host.db");
    assert!(matches!(Store::open(&path), Err(StoreError::Io(_))));
}

#[test]
fn poisoned_read_connection_rolls_back_and_keeps_working() {
    let dir = TempDir::new();
    let store = Store::open(&dir.db()).unwrap();
    store.upsert_node(&node(2)).unwrap();
    let clone = store.clone();
    let panicked = std::thread::spawn(move || {
        let _ = clone.read(|conn| -> Result<(), _> {
            conn.execute_batch("BEGIN; SELECT count(*) FROM nodes;")?;
            panic!("simulated bug while holding the connection");
        });
    })
    .join();
    assert!(panicked.is_err());
    assert!(store.inner.conn.is_poisoned());

    store.upsert_node(&node(3)).unwrap();
    assert_eq!(store.nodes().unwrap(), vec![node(2), node(3)]);
    assert!(!store.inner.conn.is_poisoned());
}

#[test]
fn the_read_connection_cannot_write() {
    let dir = TempDir::new();
    let store = Store::open(&dir.db()).unwrap();
    let write = store.read(|conn| Ok(conn.execute("DELETE FROM nodes", [])?));
    assert!(matches!(write, Err(StoreError::Sqlite(_))), "{write:?}");
}
