//! LDK's key-value store on the `kv` table, one scope per node.
//!
//! Every write and remove is committed (and, with `synchronous=FULL`, on disk) before the call
//! returns: LDK treats a returned write of a `ChannelMonitor` update as durable. Where LDK wants
//! the async [`lightning::util::persist::KVStore`], wrap it in LDK's `KVStoreSyncWrapper`, which
//! performs the write before it hands back the future.
//! Removes are never deferred, whatever `lazy` says.

use std::fmt;
use std::sync::Arc;

use lightning::io;
use lightning::util::persist::{
    KVStoreSync, MigratableKVStore, KVSTORE_NAMESPACE_KEY_ALPHABET, KVSTORE_NAMESPACE_KEY_MAX_LEN,
};
use rusqlite::OptionalExtension;

use super::{Store, StoreError};

/// A node's scope of the store as LDK's key-value trait object, as the node's parts share it.
pub type Kv = Arc<dyn KVStoreSync + Send + Sync>;

/// LDK key-value store for one scope (a node's id, or [`super::HOST_SCOPE`]). Scopes never
/// see each other's keys. Cheap to clone; keeps the database open while alive.
#[derive(Clone)]
pub struct KvStore {
    store: Store,
    scope: Arc<str>,
}

impl KvStore {
    pub(super) fn new(store: Store, scope: &str) -> KvStore {
        KvStore {
            store,
            scope: Arc::from(scope),
        }
    }

    /// Applies every change in one transaction: after a crash, all of them or none (a node's
    /// channel monitors together with the channel manager that knows their updates).
    pub fn write_all(&self, changes: Vec<KvWrite>) -> Result<(), io::Error> {
        for change in &changes {
            match change {
                KvWrite::Put {
                    primary,
                    secondary,
                    key,
                    ..
                }
                | KvWrite::Remove {
                    primary,
                    secondary,
                    key,
                } => check_key(primary, secondary, key)?,
                KvWrite::Clear { primary, secondary } => check_namespaces(primary, secondary)?,
            }
        }
        let scope = self.scope.clone();
        self.store
            .write(move |conn| {
                for change in changes {
                    match change {
                        KvWrite::Put {
                            primary,
                            secondary,
                            key,
                            value,
                        } => conn
                            .prepare_cached(
                                "INSERT INTO kv
                                 (scope, primary_namespace, secondary_namespace, key, value)
                                 VALUES (?1, ?2, ?3, ?4, ?5)
                                 ON CONFLICT (scope, primary_namespace, secondary_namespace, key)
                                 DO UPDATE SET value = excluded.value",
                            )?
                            .execute(rusqlite::params![&*scope, primary, secondary, key, value])?,
                        KvWrite::Remove {
                            primary,
                            secondary,
                            key,
                        } => conn
                            .prepare_cached(
                                "DELETE FROM kv WHERE scope = ?1 AND primary_namespace = ?2
                                 AND secondary_namespace = ?3 AND key = ?4",
                            )?
                            .execute([&*scope, &primary, &secondary, &key])?,
                        KvWrite::Clear { primary, secondary } => conn
                            .prepare_cached(
                                "DELETE FROM kv WHERE scope = ?1 AND primary_namespace = ?2
                                 AND secondary_namespace = ?3",
                            )?
                            .execute([&*scope, &primary, &secondary])?,
                    };
                }
                Ok(())
            })
            .map_err(to_io)
    }

    /// The scope this store reads and writes.
    pub fn scope(&self) -> &str {
        &self.scope
    }
}

/// One change for [`KvStore::write_all`].
#[derive(Debug)]
pub enum KvWrite {
    /// Sets a key's value.
    Put {
        primary: String,
        secondary: String,
        key: String,
        value: Vec<u8>,
    },
    /// Removes a key.
    Remove {
        primary: String,
        secondary: String,
        key: String,
    },
    /// Removes every key of a namespace.
    Clear { primary: String, secondary: String },
}

impl KvWrite {
    pub fn put(primary: &str, secondary: &str, key: &str, value: Vec<u8>) -> Self {
        KvWrite::Put {
            primary: primary.to_owned(),
            secondary: secondary.to_owned(),
            key: key.to_owned(),
            value,
        }
    }

    pub fn remove(primary: &str, secondary: &str, key: &str) -> Self {
        KvWrite::Remove {
            primary: primary.to_owned(),
            secondary: secondary.to_owned(),
            key: key.to_owned(),
        }
    }

    pub fn clear(primary: &str, secondary: &str) -> Self {
        KvWrite::Clear {
            primary: primary.to_owned(),
            secondary: secondary.to_owned(),
        }
    }
}

impl fmt::Debug for KvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvStore")
            .field("path", &self.store.path())
            .field("scope", &&*self.scope)
            .finish()
    }
}

impl KVStoreSync for KvStore {
    fn read(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
        key: &str,
    ) -> Result<Vec<u8>, io::Error> {
        check_key(primary_namespace, secondary_namespace, key)?;
        let value = self
            .store
            .read(|conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT value FROM kv WHERE scope = ?1 AND primary_namespace = ?2
                         AND secondary_namespace = ?3 AND key = ?4",
                    )?
                    .query_row(
                        [&*self.scope, primary_namespace, secondary_namespace, key],
                        |row| row.get::<_, Vec<u8>>(0),
                    )
                    .optional()?)
            })
            .map_err(to_io)?;
        value.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no value for {primary_namespace}/{secondary_namespace}/{key}"),
            )
        })
    }

    fn write(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
        key: &str,
        buf: Vec<u8>,
    ) -> Result<(), io::Error> {
        self.write_all(vec![KvWrite::put(
            primary_namespace,
            secondary_namespace,
            key,
            buf,
        )])
    }

    fn remove(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
        key: &str,
        _lazy: bool,
    ) -> Result<(), io::Error> {
        self.write_all(vec![KvWrite::remove(
            primary_namespace,
            secondary_namespace,
            key,
        )])
    }

    fn list(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
    ) -> Result<Vec<String>, io::Error> {
        check_namespaces(primary_namespace, secondary_namespace)?;
        self.store
            .read(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT key FROM kv WHERE scope = ?1 AND primary_namespace = ?2
                     AND secondary_namespace = ?3 ORDER BY key",
                )?;
                let keys = stmt.query_map(
                    [&*self.scope, primary_namespace, secondary_namespace],
                    |row| row.get(0),
                )?;
                Ok(keys.collect::<Result<_, _>>()?)
            })
            .map_err(to_io)
    }
}

impl MigratableKVStore for KvStore {
    /// Every (primary namespace, secondary namespace, key) of this scope.
    fn list_all_keys(&self) -> Result<Vec<(String, String, String)>, io::Error> {
        self.store
            .read(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT primary_namespace, secondary_namespace, key FROM kv WHERE scope = ?1
                     ORDER BY primary_namespace, secondary_namespace, key",
                )?;
                let keys = stmt.query_map([&*self.scope], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?;
                Ok(keys.collect::<Result<_, _>>()?)
            })
            .map_err(to_io)
    }
}

fn to_io(e: StoreError) -> io::Error {
    io::Error::new(io::ErrorKind::Other, e)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// LDK's rule for a namespace or key: at most [`KVSTORE_NAMESPACE_KEY_MAX_LEN`] characters,
/// all from [`KVSTORE_NAMESPACE_KEY_ALPHABET`].
fn check_name(what: &str, name: &str) -> Result<(), io::Error> {
    if name.len() > KVSTORE_NAMESPACE_KEY_MAX_LEN {
        return Err(invalid(format!(
            "{what} is longer than {KVSTORE_NAMESPACE_KEY_MAX_LEN} characters"
        )));
    }
    let alphabet = KVSTORE_NAMESPACE_KEY_ALPHABET.as_bytes();
    if !name.bytes().all(|b| alphabet.contains(&b)) {
        return Err(invalid(format!(
            "{what} {name:?} has characters outside [A-Za-z0-9_-]"
        )));
    }
    Ok(())
}

/// Namespaces may be empty, but a secondary namespace needs a primary one.
fn check_namespaces(primary: &str, secondary: &str) -> Result<(), io::Error> {
    check_name("primary namespace", primary)?;
    check_name("secondary namespace", secondary)?;
    if primary.is_empty() && !secondary.is_empty() {
        return Err(invalid(format!(
            "secondary namespace {secondary:?} given without a primary namespace"
        )));
    }
    Ok(())
}

/// Keys must additionally be non-empty.
fn check_key(primary: &str, secondary: &str, key: &str) -> Result<(), io::Error> {
    check_namespaces(primary, secondary)?;
    if key.is_empty() {
        return Err(invalid("empty key".to_owned()));
    }
    check_name("key", key)
}

/// A stored value, or `None` when it was never written.
pub fn read_optional(
    kv: &dyn KVStoreSync,
    primary: &str,
    secondary: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, io::Error> {
    match kv.read(primary, secondary, key) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
