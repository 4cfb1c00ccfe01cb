//! A shard's durable local store: a `redb` database holding the application's keys and
//! values, the shard's checkpoint, and the recovery log offset it reflects.
//!
//! Every change arrives as a [`LogRecord`] that is already durable in the recovery log;
//! [`Store::apply`] writes its key changes, its checkpoint and the log offset after it in
//! one `redb` transaction, so the state, the checkpoint and the offset always agree. After
//! a crash the store opens at its last commit, and replaying the log from
//! [`Store::applied_through`] brings it to the log's last record.
//!
//! Why `redb` is in docs/consumers.md: an embedded, pure-Rust, ACID key-value store whose
//! commits are atomic and crash-safe, with no C toolchain and one file per shard.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use folio_protocol::consumer::Checkpoint;
use prost::Message;
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::record::LogRecord;
use crate::{Error, Result};

/// The application's keys and values.
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
/// The shard's own entries: [`CHECKPOINT`] and [`APPLIED_THROUGH`].
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const CHECKPOINT: &str = "checkpoint";
const APPLIED_THROUGH: &str = "applied_through";
const LOG: &str = "log";

/// A shard's store (cheap to clone; clones share the database).
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn storage(path: &Path, err: impl std::fmt::Display) -> Error {
    Error::Store(format!("{}: {err}", path.display()))
}

impl Store {
    /// Opens the store at `path`, creating it (and its directory) when missing. A store
    /// that belongs to another recovery log than `log` is emptied first: its state came
    /// from a different history.
    pub fn open(path: &Path, log: &str) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| storage(dir, e))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::StoreBusy(path.to_owned()),
            e => storage(path, e),
        })?;
        let store = Self {
            db: Arc::new(db),
            path: path.to_owned(),
        };
        let belongs = store.meta(LOG)?.map(|v| v == log.as_bytes());
        if belongs != Some(true) {
            store.reset(log)?;
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match read.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let value = table.get(key).map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn err(&self, err: impl std::fmt::Display) -> Error {
        storage(&self.path, err)
    }

    /// Empties the store and marks it as following `log` from offset 0.
    pub fn reset(&self, log: &str) -> Result<()> {
        let write = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let _ = write.delete_table(STATE).map_err(|e| self.err(e))?;
            let mut meta = write.open_table(META).map_err(|e| self.err(e))?;
            meta.retain(|_, _| false).map_err(|e| self.err(e))?;
            meta.insert(LOG, log.as_bytes()).map_err(|e| self.err(e))?;
            meta.insert(APPLIED_THROUGH, &0i64.to_be_bytes()[..])
                .map_err(|e| self.err(e))?;
            write.open_table(STATE).map_err(|e| self.err(e))?;
        }
        write.commit().map_err(|e| self.err(e))
    }

    /// The recovery log offset the store reflects: every record before it is applied.
    pub fn applied_through(&self) -> Result<i64> {
        let bytes = self.meta(APPLIED_THROUGH)?.unwrap_or_default();
        Ok(bytes.try_into().map(i64::from_be_bytes).unwrap_or_default())
    }

    /// The checkpoint of the last applied commit (empty before the first).
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        match self.meta(CHECKPOINT)? {
            Some(bytes) => Checkpoint::decode(bytes.as_slice())
                .map_err(|e| self.err(format!("the stored checkpoint does not decode: {e}"))),
            None => Ok(Checkpoint::default()),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = read.open_table(STATE).map_err(|e| self.err(e))?;
        let value = table.get(key).map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Every key starting with `prefix` and its value, in key order.
    pub fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = read.open_table(STATE).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.range(prefix..).map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Applies the records that end at `through` in the recovery log, in order, in one
    /// transaction: their writes, the last checkpoint among them, and `through`.
    /// Blocking (it commits to disk): call it from a blocking thread.
    pub fn apply(&self, records: &[LogRecord], through: i64) -> Result<()> {
        let write = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut state = write.open_table(STATE).map_err(|e| self.err(e))?;
            let mut meta = write.open_table(META).map_err(|e| self.err(e))?;
            for record in records {
                for w in &record.writes {
                    match &w.value {
                        Some(value) => state.insert(w.key.as_slice(), value.as_slice()),
                        None => state.remove(w.key.as_slice()),
                    }
                    .map_err(|e| self.err(e))?;
                }
                if let Some(checkpoint) = &record.checkpoint {
                    meta.insert(CHECKPOINT, checkpoint.encode_to_vec().as_slice())
                        .map_err(|e| self.err(e))?;
                }
            }
            meta.insert(APPLIED_THROUGH, &through.to_be_bytes()[..])
                .map_err(|e| self.err(e))?;
        }
        write.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Write;

    fn put(k: &str, v: &str) -> Write {
        Write {
            key: k.as_bytes().to_vec(),
            value: Some(v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn commits_state_checkpoint_and_offset_together_and_reopen_at_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shard.redb");
        let store = Store::open(&path, "logs/a").expect("open");
        assert_eq!(store.applied_through().expect("offset"), 0);
        let mut checkpoint = Checkpoint::default();
        checkpoint
            .ack_intents
            .insert("out".into(), b"ack".to_vec().into());
        let record = LogRecord {
            author: 7,
            writes: vec![put("a/1", "x"), put("a/2", "y"), put("b/1", "z")],
            checkpoint: Some(checkpoint.clone()),
        };
        store.apply(&[record], 120).expect("apply");
        let delete = LogRecord {
            author: 7,
            writes: vec![Write {
                key: b"a/2".to_vec(),
                value: None,
            }],
            checkpoint: None,
        };
        store.apply(&[delete], 150).expect("apply");
        drop(store);

        let store = Store::open(&path, "logs/a").expect("reopen");
        assert_eq!(store.applied_through().expect("offset"), 150);
        assert_eq!(store.checkpoint().expect("checkpoint"), checkpoint);
        assert_eq!(store.get(b"a/1").expect("get"), Some(b"x".to_vec()));
        assert_eq!(store.get(b"a/2").expect("get"), None);
        let scanned = store.scan(b"a/").expect("scan");
        assert_eq!(scanned, vec![(b"a/1".to_vec(), b"x".to_vec())]);
        drop(store);

        // The same file opened for another recovery log starts empty.
        let store = Store::open(&path, "logs/b").expect("open for another log");
        assert_eq!(store.applied_through().expect("offset"), 0);
        assert_eq!(store.get(b"a/1").expect("get"), None);
        assert_eq!(
            store.checkpoint().expect("checkpoint"),
            Checkpoint::default()
        );
    }
}
