//! The durable, ordered purge log: one sled tree keyed by big-endian `seq`.

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::PurgeApiError;
use crate::wire::PurgeRecord;
use crate::{PurgeRequest, unix_ms};

const TREE: &str = "purges";

/// The purge log. Records are stored as JSON under their `seq` (8 bytes, big-endian, so sled's
/// key order is log order); the id embeds the `seq`, so looking one up needs no second index.
pub struct PurgeLog {
    tree: sled::Tree,
    /// Serialises appends so `seq`s are handed out without gaps, in the order written.
    append: Mutex<()>,
    /// The newest `seq` on disk; long-polls wait on it.
    last: watch::Sender<u64>,
}

impl std::fmt::Debug for PurgeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeLog")
            .field("last_seq", &self.last_seq())
            .finish_non_exhaustive()
    }
}

impl PurgeLog {
    /// Opens the log in `db`; the sequence continues after the last stored record.
    pub fn open(db: &sled::Db) -> Result<PurgeLog, PurgeApiError> {
        let tree = db.open_tree(TREE)?;
        let last = match tree.last()? {
            Some((key, _)) => decode_seq(&key)?,
            None => 0,
        };
        tracing::debug!(last_seq = last, "purge log opened");
        Ok(PurgeLog {
            tree,
            append: Mutex::new(()),
            last: watch::Sender::new(last),
        })
    }

    /// Stores `request` under the next `seq` and returns once it is flushed to disk.
    ///
    /// Blocking (an fsync): call it from `spawn_blocking`. Callers validate first.
    pub fn append(&self, request: PurgeRequest) -> Result<PurgeRecord, PurgeApiError> {
        let _guard = self.append.lock().unwrap_or_else(|p| p.into_inner());
        let seq = *self.last.borrow() + 1;
        let accepted_at = unix_ms();
        let random = RandomState::new().hash_one((seq, accepted_at));
        let record = PurgeRecord {
            id: format!("p-{seq}-{random:016x}"),
            seq,
            accepted_at,
            request,
        };
        let value = serde_json::to_vec(&record).map_err(|source| PurgeApiError::Corrupt {
            key: record.id.clone(),
            source,
        })?;
        self.tree.insert(seq.to_be_bytes(), value)?;
        self.tree.flush()?;
        // Only now may anyone see it: the 202 and the edges' long-polls both follow this.
        self.last.send_replace(seq);
        Ok(record)
    }

    /// Up to `limit` records with `seq > since`, in order.
    pub fn since(&self, since: u64, limit: usize) -> Result<Vec<PurgeRecord>, PurgeApiError> {
        let Some(start) = since.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.tree
            .range(start.to_be_bytes()..)
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                decode(&key, &value)
            })
            .collect()
    }

    /// The record with this id, if the log holds it.
    pub fn get(&self, id: &str) -> Result<Option<PurgeRecord>, PurgeApiError> {
        let Some(seq) = seq_of_id(id) else {
            return Ok(None);
        };
        Ok(self.get_seq(seq)?.filter(|record| record.id == id))
    }

    /// The record at `seq`, if the log holds it.
    pub fn get_seq(&self, seq: u64) -> Result<Option<PurgeRecord>, PurgeApiError> {
        let key = seq.to_be_bytes();
        match self.tree.get(key)? {
            Some(value) => decode(&key, &value).map(Some),
            None => Ok(None),
        }
    }

    /// The newest `seq` on disk; 0 for an empty log.
    pub fn last_seq(&self) -> u64 {
        *self.last.borrow()
    }

    /// Resolves once the log holds a record past `since`, or after `timeout`; returns
    /// whether there is one. This is what makes a long-poll the push path.
    pub async fn wait_past(&self, since: u64, timeout: Duration) -> bool {
        let mut last = self.last.subscribe();
        let waited = tokio::time::timeout(timeout, last.wait_for(|seq| *seq > since)).await;
        matches!(waited, Ok(Ok(_))) || self.last_seq() > since
    }
}

/// The `seq` embedded in an id `p-<seq>-<hex>`.
fn seq_of_id(id: &str) -> Option<u64> {
    let (seq, random) = id.strip_prefix("p-")?.split_once('-')?;
    if random.is_empty() || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    seq.parse().ok()
}

fn decode_seq(key: &[u8]) -> Result<u64, PurgeApiError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| PurgeApiError::Task(format!("purge log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode(key: &[u8], value: &[u8]) -> Result<PurgeRecord, PurgeApiError> {
    serde_json::from_slice(value).map_err(|source| PurgeApiError::Corrupt {
        key: decode_seq(key).map_or_else(|_| format!("{key:?}"), |seq| format!("seq {seq}")),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &tempfile::TempDir) -> sled::Db {
        sled::open(dir.path()).unwrap()
    }

    fn tag(t: &str) -> PurgeRequest {
        PurgeRequest {
            tags: vec![t.into()],
            ..Default::default()
        }
    }

    #[test]
    fn appends_get_consecutive_seqs_and_ids_that_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = PurgeLog::open(&db(&dir)).unwrap();
        assert_eq!(log.last_seq(), 0);
        let a = log.append(tag("a")).unwrap();
        let b = log.append(tag("b")).unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert!(
            a.id.starts_with("p-1-") && b.id.starts_with("p-2-"),
            "{}",
            a.id
        );
        assert_ne!(a.id[4..], b.id[4..]);
        assert_eq!(log.last_seq(), 2);
        assert_eq!(log.get(&b.id).unwrap(), Some(b.clone()));
        assert_eq!(log.get_seq(1).unwrap(), Some(a));
    }

    #[test]
    fn since_returns_later_records_in_order_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = PurgeLog::open(&db(&dir)).unwrap();
        for t in ["a", "b", "c", "d"] {
            log.append(tag(t)).unwrap();
        }
        let seqs = |v: Vec<PurgeRecord>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(log.since(0, 100).unwrap()), [1, 2, 3, 4]);
        assert_eq!(seqs(log.since(1, 2).unwrap()), [2, 3]);
        assert!(log.since(4, 10).unwrap().is_empty());
        assert!(log.since(u64::MAX, 10).unwrap().is_empty());
        assert_eq!(log.since(2, 1).unwrap()[0].request, tag("c"));
    }

    #[test]
    fn unknown_or_forged_ids_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let log = PurgeLog::open(&db(&dir)).unwrap();
        let a = log.append(tag("a")).unwrap();
        assert_eq!(log.get("p-1-0000000000000000").unwrap(), None);
        assert_eq!(log.get("p-2-00").unwrap(), None);
        assert_eq!(log.get("nonsense").unwrap(), None);
        assert_eq!(log.get(&a.id.replace("p-1", "p-01")).unwrap(), None);
    }

    #[test]
    fn reopening_keeps_records_and_continues_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let db = db(&dir);
            let log = PurgeLog::open(&db).unwrap();
            log.append(tag("a")).unwrap();
            log.append(tag("b")).unwrap()
        };
        let log = PurgeLog::open(&db(&dir)).unwrap();
        assert_eq!(log.last_seq(), 2);
        assert_eq!(log.get(&first.id).unwrap(), Some(first));
        assert_eq!(log.append(tag("c")).unwrap().seq, 3);
    }

    #[test]
    fn ids_carry_their_seq() {
        assert_eq!(seq_of_id("p-42-9f3c"), Some(42));
        assert_eq!(seq_of_id("p-42-"), None);
        assert_eq!(seq_of_id("p-42-xyz"), None);
        assert_eq!(seq_of_id("q-42-ab"), None);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_when_a_purge_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(PurgeLog::open(&db(&dir)).unwrap());
        let mut last = log.last.subscribe();
        let waiter = tokio::spawn({
            let log = log.clone();
            async move { log.wait_past(0, Duration::from_secs(60)).await }
        });
        // The waiter holds a receiver once it is parked; wait for that, not for time.
        while log.last.receiver_count() < 2 {
            tokio::task::yield_now().await;
        }
        let writer = log.clone();
        tokio::task::spawn_blocking(move || writer.append(tag("a")).unwrap());
        let woke = tokio::time::timeout(Duration::from_secs(10), waiter).await;
        assert!(woke.expect("woken well before its 60 s timeout").unwrap());
        assert_eq!(*last.borrow_and_update(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_with_nothing_new_times_out_false() {
        let dir = tempfile::tempdir().unwrap();
        let log = PurgeLog::open(&db(&dir)).unwrap();
        assert!(!log.wait_past(0, Duration::from_secs(5)).await);
    }
}
