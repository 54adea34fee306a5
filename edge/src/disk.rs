//! The disk tier: response metadata in a sled index, bodies in their own files, bounded in
//! bytes by a frequency- and recency-aware policy (moka's TinyLFU), surviving restarts.
//!
//! Layout of the tier directory:
//! - `FORMAT`: the on-disk format; a directory written by another format is reset.
//! - `index/`: sled, tree `records` (record key → [`meta::Record`] JSON) and tree `sizes`
//!   (record key → file id and weight, all the start-up scan needs).
//! - `bodies/xx/<id>`: body files; `tmp/`: bodies being written.

pub mod body;
mod heads;
pub mod meta;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::Stream;
use http::HeaderMap;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use serde::Serialize;
use tracing::{info, warn};

use crate::entry::{CachedResponse, DiskRef};
use crate::error::EdgeError;
use crate::key::CacheKey;
use body::{BodyWriter, ReadError};
use heads::Heads;
use meta::Record;

const FORMAT: &str = "edgecache-disk 1\n";

/// What a disk lookup found.
#[derive(Debug)]
pub enum DiskLookup {
    Found(Arc<CachedResponse>),
    VaryMiss,
    Miss,
}

/// Policy slot of one record: which file it names and what it weighs.
#[derive(Debug, Clone, Copy)]
struct Slot {
    file: u64,
    weight: u32,
}

#[derive(Default)]
struct Counters {
    evictions: AtomicU64,
    corrupt: AtomicU64,
    read_bytes: AtomicU64,
    sent_bytes: AtomicU64,
    write_bytes: AtomicU64,
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    sizes: sled::Tree,
    policy: Cache<Arc<[u8]>, Slot>,
    capacity: u64,
    counters: Arc<Counters>,
    loaded: AtomicBool,
    /// Held for the tier's lifetime: the directory's exclusive lock.
    _lock: std::fs::File,
    /// Body files whose every block was verified (or written) by this process, as they
    /// were then. A file read back unchanged is not checksummed again: the page cache
    /// serves what was verified, and any change to the file changes its stamp.
    verified: Cache<u64, body::Stamp>,
    /// Decoded records of recently looked-up keys.
    heads: Arc<Heads>,
    /// Body files kept open for the hits that follow: opening one walks its path every
    /// time. Closed when their file is removed (and when idle or crowded out).
    open_files: Cache<u64, Arc<std::fs::File>>,
    /// Reads so far; one in [`RECHECK_EVERY`] is verified even when trusted, so damage
    /// under an unchanged file (bit rot after the page cache let go) is still found.
    reads: AtomicU64,
}

const RECHECK_EVERY: u64 = 64;

/// How many body files stay open at most (each holds a descriptor).
const OPEN_FILES: u64 = 128;
/// How long an unread body file stays open.
const OPEN_FILE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The disk tier. Cheap to clone.
#[derive(Clone)]
pub struct DiskTier {
    inner: Arc<Inner>,
}

/// `/stats` view of the disk tier.
#[derive(Debug, Serialize)]
pub struct DiskStats {
    pub entries: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub index_loaded: bool,
    pub evictions: u64,
    pub corrupt_dropped: u64,
    pub read_bytes: u64,
    /// Body bytes the connections sent straight from body files (`sendfile`), without
    /// reading them into memory.
    pub sent_bytes: u64,
    pub write_bytes: u64,
    /// Memory held by the decoded records of recently looked-up keys.
    pub index_cache_bytes: u64,
}

impl DiskTier {
    /// Opens (or creates) the tier in `dir`. Returns at once: the scan that feeds the
    /// eviction policy runs on its own thread, and lookups work from the first moment.
    pub fn open(dir: &Path, capacity: u64) -> Result<Self, EdgeError> {
        let io = |context: String| move |source| EdgeError::Io { context, source };
        std::fs::create_dir_all(dir).map_err(io(format!("edge.disk.dir {}", dir.display())))?;
        // One edge per tier directory: a second one would reset what the first is serving.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(io(format!("edge.disk.dir {}", dir.display())))?;
        if lock.try_lock().is_err() {
            return Err(EdgeError::Config(format!(
                "edge.disk.dir: {} is in use by another edge",
                dir.display()
            )));
        }
        prepare_layout(dir).map_err(io(format!("edge.disk.dir {}", dir.display())))?;
        let db = match sled::Config::new().path(dir.join("index")).open() {
            Ok(db) => db,
            Err(e @ (sled::Error::Corruption { .. } | sled::Error::Unsupported(_))) => {
                warn!(dir = %dir.display(), error = %e, "disk index unreadable; resetting the tier");
                reset(dir).map_err(io(format!("edge.disk.dir {}", dir.display())))?;
                sled::Config::new()
                    .path(dir.join("index"))
                    .open()
                    .map_err(|e| {
                        EdgeError::Config(format!("edge.disk.dir: cannot open index: {e}"))
                    })?
            }
            Err(e) => {
                return Err(EdgeError::Config(format!(
                    "edge.disk.dir: cannot open index: {e}"
                )));
            }
        };
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| EdgeError::Config(format!("edge.disk.dir: cannot open index: {e}")))
        };
        let records = tree("records")?;
        let sizes = tree("sizes")?;
        let counters = Arc::new(Counters::default());
        let heads = Arc::new(Heads::default());
        let open_files = Cache::builder()
            .max_capacity(OPEN_FILES)
            .time_to_idle(OPEN_FILE_IDLE)
            .build();
        let policy = {
            let open_files: Cache<u64, Arc<std::fs::File>> = open_files.clone();
            let records = records.clone();
            let sizes = sizes.clone();
            let dir = dir.to_path_buf();
            let counters = counters.clone();
            let heads = heads.clone();
            Cache::builder()
                .max_capacity(capacity)
                .weigher(|_: &Arc<[u8]>, slot: &Slot| slot.weight)
                .eviction_listener(move |key: Arc<Arc<[u8]>>, slot: Slot, cause| {
                    match cause {
                        // A newer body replaced this one under the same record. The
                        // startup scan may re-insert the very slot a concurrent store just
                        // inserted: a file the record still names is not garbage.
                        RemovalCause::Replaced => {
                            if !record_names(&sizes, &key, slot.file) {
                                remove_file(&dir, &open_files, slot.file);
                            }
                        }
                        RemovalCause::Size | RemovalCause::Explicit | RemovalCause::Expired => {
                            if cause == RemovalCause::Size {
                                counters.evictions.fetch_add(1, Ordering::Relaxed);
                            }
                            remove_record(&records, &sizes, &heads, &key, slot.file);
                            remove_file(&dir, &open_files, slot.file);
                        }
                    }
                })
                .build()
        };
        let tier = Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db,
                records,
                sizes,
                policy,
                capacity,
                counters,
                loaded: AtomicBool::new(false),
                _lock: lock,
                verified: Cache::new(1 << 20),
                heads,
                open_files,
                reads: AtomicU64::new(0),
            }),
        };
        let scan = tier.clone();
        std::thread::Builder::new()
            .name("disk-index-scan".into())
            .spawn(move || scan.scan())
            .map_err(io("starting the disk index scan".into()))?;
        Ok(tier)
    }

    /// Feeds every record's size to the eviction policy and removes what the index no
    /// longer names (records without files are found lazily, on read).
    fn scan(&self) {
        let started = std::time::Instant::now();
        // Files committed from now on get larger ids: the orphan sweep leaves them alone.
        let horizon = self.inner.db.generate_id().unwrap_or(0);
        let mut known: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let mut count = 0u64;
        for item in self.inner.sizes.iter() {
            let Ok((key, value)) = item else { continue };
            let Some(slot) = decode_slot(&value) else {
                let _ = self.inner.sizes.remove(&key);
                continue;
            };
            let key: Arc<[u8]> = Arc::from(&key[..]);
            known.insert(slot.file);
            if !self.inner.policy.contains_key(&key) {
                self.inner.policy.insert(key, slot);
            }
            count += 1;
        }
        self.inner.policy.run_pending_tasks();
        self.inner.loaded.store(true, Ordering::Release);
        info!(
            entries = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "disk index loaded"
        );
        let swept = self.sweep_orphans(&known, horizon);
        if swept > 0 {
            info!(files = swept, "removed body files no index record names");
        }
    }

    /// Removes body files older than `horizon` that no record names: left by a crash
    /// between a body's rename and its index write.
    fn sweep_orphans(&self, known: &std::collections::HashSet<u64>, horizon: u64) -> u64 {
        let mut swept = 0;
        let Ok(shards) = std::fs::read_dir(self.inner.dir.join("bodies")) else {
            return 0;
        };
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name();
                let Some(id) = name.to_str().and_then(|n| u64::from_str_radix(n, 16).ok()) else {
                    continue;
                };
                // A body committed while the scan ran may be named by a record the scan has
                // already passed: only files untouched for a minute count as orphans.
                let settled = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(60));
                if id < horizon
                    && settled
                    && !known.contains(&id)
                    && std::fs::remove_file(file.path()).is_ok()
                {
                    swept += 1;
                }
            }
        }
        swept
    }

    /// The record key: the cache key, a NUL, then the variant's request header values.
    pub fn record_key(key: &CacheKey, vary: &[(http::HeaderName, Option<String>)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(key.as_str().len() + 1 + vary.len() * 24);
        out.extend_from_slice(key.as_str().as_bytes());
        out.push(0);
        for (name, value) in vary {
            out.extend_from_slice(name.as_str().as_bytes());
            match value {
                Some(v) => {
                    out.push(b'=');
                    out.extend_from_slice(v.as_bytes());
                }
                None => out.push(b'!'),
            }
            out.push(0x1f);
        }
        out
    }

    fn prefix(key: &CacheKey) -> Vec<u8> {
        let mut p = key.as_str().as_bytes().to_vec();
        p.push(0);
        p
    }

    /// Finds the stored variant of `key` matching `request_headers`. The body stays on
    /// disk: read it with [`Self::read_all`] or [`Self::stream`].
    pub fn lookup(&self, key: &CacheKey, request_headers: &HeaderMap) -> DiskLookup {
        let heads = &self.inner.heads;
        let variants = match heads.get(key.as_str()) {
            Some(variants) => variants,
            None => {
                let generation = heads.generation();
                let variants = self.read_variants(key);
                heads.keep(key.as_str(), variants.clone(), generation);
                variants
            }
        };
        let Some(entry) = variants.iter().find(|e| e.matches(request_headers)) else {
            return if variants.is_empty() {
                DiskLookup::Miss
            } else {
                DiskLookup::VaryMiss
            };
        };
        if let Some(d) = &entry.disk {
            self.touch(&d.record, entry);
        }
        DiskLookup::Found(entry.clone())
    }

    /// Every readable record of `key` from the index; unreadable ones are dropped.
    fn read_variants(&self, key: &CacheKey) -> heads::Variants {
        let mut out = Vec::new();
        for item in self.inner.records.scan_prefix(Self::prefix(key)) {
            let Ok((rkey, value)) = item else { continue };
            let rkey: Arc<[u8]> = Arc::from(&rkey[..]);
            match serde_json::from_slice::<Record>(&value)
                .map_err(|e| e.to_string())
                .and_then(|r| r.into_entry(rkey.clone()))
            {
                Ok(entry) => out.push(Arc::new(entry)),
                Err(e) => {
                    warn!(key = %key, error = %e, "unreadable disk record dropped");
                    self.inner.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                    let _ = self.inner.records.remove(&rkey);
                    let _ = self.inner.sizes.remove(&rkey);
                    self.inner.heads.changed(&rkey);
                }
            }
        }
        out.into()
    }

    /// Records a use with the policy (inserting records the start-up scan has not reached).
    fn touch(&self, rkey: &Arc<[u8]>, entry: &CachedResponse) {
        if self.inner.policy.get(rkey).is_none()
            && let Some(d) = &entry.disk
        {
            self.inner
                .policy
                .insert(rkey.clone(), slot_of(d.file, d.len));
        }
    }

    /// Starts a body file.
    pub fn writer(&self) -> std::io::Result<BodyWriter> {
        let id = self.inner.db.generate_id().map_err(std::io::Error::other)?;
        BodyWriter::create(&self.inner.dir.join("tmp"), id)
    }

    /// Whether a body of `len` bytes can be kept at all.
    pub fn fits(&self, len: u64) -> bool {
        len <= self.inner.capacity
    }

    /// Makes a finished body durable and indexes `entry` for it. Blocking: call from a
    /// blocking thread. Returns the entry with its `disk` reference set.
    pub fn commit(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
        writer: BodyWriter,
    ) -> std::io::Result<CachedResponse> {
        self.commit_with(key, entry, writer, true)
    }

    fn commit_with(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
        writer: BodyWriter,
        durable: bool,
    ) -> std::io::Result<CachedResponse> {
        let body = writer.finish(durable)?;
        if !self.fits(body.len) {
            let _ = std::fs::remove_file(&body.tmp);
            return Err(std::io::Error::other("body larger than the disk tier"));
        }
        let final_path = body_path(&self.inner.dir, body.id);
        if let Some(parent) = final_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&body.tmp, &final_path)?;
        if let Ok(meta) = std::fs::metadata(&final_path) {
            self.inner.verified.insert(body.id, body::Stamp::of(&meta));
        }
        let rkey: Arc<[u8]> = Self::record_key(key, entry.vary()).into();
        let record = Record::from_entry(entry, body.id, body.len, &body.crcs);
        let json = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        self.inner
            .records
            .insert(&rkey[..], json)
            .map_err(std::io::Error::other)?;
        self.inner
            .sizes
            .insert(&rkey[..], &encode_slot(slot_of(body.id, body.len))[..])
            .map_err(std::io::Error::other)?;
        self.inner.heads.changed(&rkey);
        // A crash now still leaves the whole object or none: sled's log is synced here.
        if durable {
            self.inner.db.flush().map_err(std::io::Error::other)?;
        }
        self.inner
            .counters
            .write_bytes
            .fetch_add(body.len, Ordering::Relaxed);
        self.inner
            .policy
            .insert(rkey.clone(), slot_of(body.id, body.len));
        let mut stored = entry.clone();
        stored.disk = Some(Box::new(DiskRef {
            record: rkey,
            file: body.id,
            len: body.len,
            crcs: body.crcs.into(),
        }));
        Ok(stored)
    }

    /// Like [`Self::store_whole`] without syncing file or index: for bulk loads (benchmarks,
    /// warming) where a crash may lose the batch.
    pub fn store_whole_unsynced(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
    ) -> std::io::Result<CachedResponse> {
        self.store_whole_with(key, entry, false)
    }

    /// Writes a whole in-memory body and indexes it. Blocking.
    pub fn store_whole(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
    ) -> std::io::Result<CachedResponse> {
        self.store_whole_with(key, entry, true)
    }

    fn store_whole_with(
        &self,
        key: &CacheKey,
        entry: &CachedResponse,
        durable: bool,
    ) -> std::io::Result<CachedResponse> {
        let mut w = self.writer()?;
        if let Err(e) = w.write(&entry.body) {
            w.abandon();
            return Err(e);
        }
        let mut stored = self.commit_with(key, entry, w, durable)?;
        stored.body = entry.body.clone();
        Ok(stored)
    }

    /// Rewrites the metadata of a stored entry (after a 304 refreshed it, or a soft purge
    /// marked it stale). Blocking. Updates may land in any order: one made from an older
    /// response than the record's (a stale mark keeps its response's time, a refresh takes
    /// the 304's) is dropped, so a late stale mark never undoes a later revalidation.
    pub fn update(&self, entry: &CachedResponse) -> std::io::Result<()> {
        let Some(d) = &entry.disk else { return Ok(()) };
        // Only if the record still names this body: a newer one may have replaced it.
        let current = self.inner.sizes.get(&d.record[..]).ok().flatten();
        if current.as_deref().and_then(decode_slot).map(|s| s.file) != Some(d.file) {
            return Ok(());
        }
        let record = Record::from_entry(entry, d.file, d.len, &d.crcs);
        let json = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        self.inner
            .records
            .fetch_and_update(&d.record[..], |old| {
                let old = old?;
                let newer = serde_json::from_slice::<Record>(old).is_ok_and(|r| {
                    r.freshness.response_time_ms > record.freshness.response_time_ms
                });
                Some(if newer { old.to_vec() } else { json.clone() })
            })
            .map_err(std::io::Error::other)?;
        self.inner.heads.changed(&d.record);
        Ok(())
    }

    /// Reads and verifies a whole body.
    pub async fn read_all(&self, entry: &CachedResponse) -> Result<Bytes, ReadError> {
        let Some(d) = entry.disk.clone() else {
            return Ok(entry.body.clone());
        };
        let tier = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let (file, stamp) = tier.open_body(&d)?;
            let verify = tier.must_verify(d.file, stamp);
            let mut out = Vec::with_capacity(usize::try_from(d.len).unwrap_or(0));
            if d.len > 0 {
                let read = body::read_range(&file, d.len, &d.crcs, (0, d.len - 1), verify, |b| {
                    out.extend_from_slice(&b);
                    true
                })?;
                tier.inner
                    .counters
                    .read_bytes
                    .fetch_add(read, Ordering::Relaxed);
            }
            if verify {
                tier.inner.verified.insert(d.file, stamp);
            }
            Ok::<_, ReadError>(Bytes::from(out))
        })
        .await
        .unwrap_or_else(|e| Err(ReadError::Io(std::io::Error::other(e))));
        match &result {
            Ok(_) => {}
            Err(e) => self.on_read_error(entry, e),
        }
        result
    }

    /// Streams bytes `start..=end` of a stored body, each block verified before it is sent
    /// (unless this unchanged file was verified whole before). A damaged block ends the
    /// stream with an error (the client sees a broken response, never corrupt bytes) and
    /// drops the entry.
    pub fn stream(
        &self,
        entry: &CachedResponse,
        start: u64,
        end: u64,
    ) -> futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>> {
        use futures_util::StreamExt;
        let Some(d) = entry.disk.clone() else {
            return futures_util::stream::empty().boxed();
        };
        // A file verified whole by this process and unchanged since is almost surely in the
        // page cache: read it block by block on this thread, which costs less than handing
        // each response to the blocking pool. Anything else is read on the blocking pool.
        if let Ok((file, stamp)) = self.open_body(&d)
            && !self.must_verify(d.file, stamp)
        {
            return self.stream_hot(file, start, end).boxed();
        }
        self.stream_cold(entry.clone(), start, end).boxed()
    }

    /// Opens the body file of `d`, or takes it from the files kept open, and checks its
    /// length. A file kept open is checked with `fstat`, so a change made to it in place
    /// shows in its stamp as it would after opening it again.
    fn open_body(&self, d: &DiskRef) -> Result<(Arc<std::fs::File>, body::Stamp), ReadError> {
        if let Some(file) = self.inner.open_files.get(&d.file) {
            return match body::stamp_checked(&file, d.len) {
                Ok(stamp) => Ok((file, stamp)),
                Err(e) => {
                    close_kept(&self.inner.open_files, d.file);
                    Err(e)
                }
            };
        }
        let (file, stamp) = body::open_checked(&body_path(&self.inner.dir, d.file), d.len)?;
        let file = Arc::new(file);
        self.inner.open_files.insert(d.file, file.clone());
        // A removal that ran between the open and the insert has unlinked the file (see
        // `remove_file`): a file with no links left is not kept.
        if file.metadata().is_ok_and(|m| m.nlink() == 0) {
            close_kept(&self.inner.open_files, d.file);
        }
        Ok((file, stamp))
    }

    /// `len` bytes of the stored body of `entry` from `offset`, as a body `sender`'s
    /// connection sends straight from the file with `sendfile`, when the file was verified
    /// whole by this process and is unchanged since (the trust [`stream`](Self::stream)
    /// needs to read it without checksums). `None` for an entry with no body file, a file
    /// not trusted, one that cannot be opened, or a range past its end: the caller sends the
    /// bytes as it would otherwise. When the periodic recheck falls due on this read, the
    /// caller also sends them otherwise, and the blocks holding them are verified on the
    /// blocking pool meanwhile (damage found drops the entry).
    pub fn file_body(
        &self,
        entry: &CachedResponse,
        sender: &edgecache_tls::zero_copy::FileSender,
        offset: u64,
        len: u64,
    ) -> Option<axum::body::Body> {
        let d = entry.disk.as_ref()?;
        if offset.checked_add(len)? > d.len {
            return None;
        }
        let (file, stamp) = self.open_body(d).ok()?;
        if self.inner.verified.get(&d.file) != Some(stamp) {
            return None;
        }
        // Counted only for a trusted file, the read a recheck stands in for: an untrusted
        // one is not sent from, and a disk read the caller falls back to counts itself.
        if self.next_read_rechecks() {
            self.verify_in_background(entry.clone(), offset, len);
            return None;
        }
        self.inner
            .counters
            .sent_bytes
            .fetch_add(len, Ordering::Relaxed);
        Some(sender.body(file, offset, len))
    }

    /// Reads the blocks of `entry`'s body file that hold `len` bytes from `offset` on the
    /// blocking pool, checking each, as a read of those bytes would (see `read_verified`).
    /// A range checks only its own blocks, so a recheck costs no more than the read it
    /// stands in for.
    fn verify_in_background(&self, entry: CachedResponse, offset: u64, len: u64) {
        let tier = self.clone();
        tokio::task::spawn_blocking(move || {
            let Some(d) = &entry.disk else { return };
            let end = (offset + len).min(d.len).saturating_sub(1);
            if let Ok(read) = tier.read_verified(&entry, d, (offset, end), |_| true) {
                tier.inner
                    .counters
                    .read_bytes
                    .fetch_add(read, Ordering::Relaxed);
            }
        });
    }

    /// Reads bytes `start..=end` of the body file of `d` (`entry`'s), checking every block,
    /// and hands them to `sink` until it returns false. A whole body read to its end is
    /// trusted again; damage found drops the entry. Blocking. Returns the bytes of the
    /// blocks read.
    fn read_verified(
        &self,
        entry: &CachedResponse,
        d: &DiskRef,
        (start, end): (u64, u64),
        mut sink: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<u64, ReadError> {
        let result = self.open_body(d).and_then(|(file, stamp)| {
            let mut complete = true;
            let read = body::read_range(&file, d.len, &d.crcs, (start, end), true, |block| {
                complete = sink(block);
                complete
            })?;
            if complete && start == 0 && end + 1 == d.len {
                self.inner.verified.insert(d.file, stamp);
            }
            Ok(read)
        });
        if let Err(e) = &result {
            self.on_read_error(entry, e);
        }
        result
    }

    fn stream_hot(
        &self,
        file: Arc<std::fs::File>,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let tier = self.clone();
        let first = start / body::BLOCK;
        futures_util::stream::unfold(Some(first), move |next| {
            let out = next.and_then(|index| {
                let block_start = index * body::BLOCK;
                if block_start > end {
                    return None;
                }
                let from = start.max(block_start);
                let to = end.min(block_start + body::BLOCK - 1);
                let want = usize::try_from(to - from + 1).unwrap_or(0);
                let item = read_fresh(&file, from, want);
                if let Ok(b) = &item {
                    tier.inner
                        .counters
                        .read_bytes
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                let more = item.is_ok().then_some(index + 1);
                Some((item, more))
            });
            std::future::ready(out)
        })
    }

    fn stream_cold(
        &self,
        entry: CachedResponse,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let tier = self.clone();
        tokio::task::spawn_blocking(move || {
            let Some(d) = entry.disk.clone() else { return };
            // Counted before each block is sent: once a client has the last byte, the
            // counter already shows it.
            let result = tier.read_verified(&entry, &d, (start, end), |block| {
                tier.inner
                    .counters
                    .read_bytes
                    .fetch_add(block.len() as u64, Ordering::Relaxed);
                tx.blocking_send(Ok(Bytes::from(block))).is_ok()
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }

    fn must_verify(&self, file: u64, stamp: body::Stamp) -> bool {
        self.next_read_rechecks() || self.inner.verified.get(&file) != Some(stamp)
    }

    /// Counts a read; true for the one in [`RECHECK_EVERY`] verified even when trusted.
    fn next_read_rechecks(&self) -> bool {
        let n = self.inner.reads.fetch_add(1, Ordering::Relaxed);
        n.is_multiple_of(RECHECK_EVERY)
    }

    fn on_read_error(&self, entry: &CachedResponse, e: &ReadError) {
        let Some(d) = &entry.disk else { return };
        if e.is_corruption() {
            // Two reads can find the same damage (a response and a recheck): the one that
            // removes the file counts it.
            if self.drop_record(&d.record, d.file) {
                self.inner.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                warn!(file = d.file, error = %e, "corrupt disk entry dropped");
            }
        } else {
            warn!(file = d.file, error = %e, "disk read failed");
        }
    }

    /// Removes an entry's record and body file; true if this call removed the file.
    fn drop_record(&self, rkey: &Arc<[u8]>, file: u64) -> bool {
        self.inner.verified.invalidate(&file);
        remove_record(
            &self.inner.records,
            &self.inner.sizes,
            &self.inner.heads,
            rkey,
            file,
        );
        let removed = remove_file(&self.inner.dir, &self.inner.open_files, file);
        if self.inner.policy.get(rkey).is_some_and(|s| s.file == file) {
            self.inner.policy.invalidate(rkey);
        }
        removed
    }

    /// Applies `judge` to every stored entry: `Gone` ones are removed, `Stale` ones
    /// rewritten as stale. Blocking. Returns how many entries changed.
    pub fn sweep(
        &self,
        judge: impl Fn(&CacheKey, &CachedResponse) -> crate::purge::Verdict,
        now: std::time::SystemTime,
    ) -> usize {
        use crate::purge::Verdict;
        let mut changed = 0;
        for item in self.inner.records.iter() {
            let Ok((rkey, value)) = item else { continue };
            let Some(text) = rkey
                .split(|b| *b == 0)
                .next()
                .and_then(|t| std::str::from_utf8(t).ok())
            else {
                continue;
            };
            let Some(key) = CacheKey::from_stored(text) else {
                continue;
            };
            let rkey: Arc<[u8]> = Arc::from(&rkey[..]);
            let Ok(entry) = serde_json::from_slice::<Record>(&value)
                .map_err(|e| e.to_string())
                .and_then(|r| r.into_entry(rkey.clone()))
            else {
                continue;
            };
            match judge(&key, &entry) {
                Verdict::Keep => {}
                Verdict::Stale => {
                    changed += 1;
                    let _ = self.update(&crate::purge::mark_stale(&entry, now));
                }
                Verdict::Gone => {
                    changed += 1;
                    if let Some(d) = &entry.disk {
                        self.drop_record(&rkey, d.file);
                    }
                }
            }
        }
        changed
    }

    /// Removes every variant of `key`.
    pub fn invalidate(&self, key: &CacheKey) {
        for item in self.inner.records.scan_prefix(Self::prefix(key)) {
            let Ok((rkey, _)) = item else { continue };
            let rkey: Arc<[u8]> = Arc::from(&rkey[..]);
            if let Some(slot) = self
                .inner
                .sizes
                .get(&rkey[..])
                .ok()
                .flatten()
                .as_deref()
                .and_then(decode_slot)
            {
                self.drop_record(&rkey, slot.file);
            } else {
                let _ = self.inner.records.remove(&rkey[..]);
                self.inner.heads.changed(&rkey);
            }
        }
    }

    /// Syncs the index (at shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.inner.db.flush() {
            warn!(error = %e, "disk index flush failed");
        }
    }

    pub fn stats(&self) -> DiskStats {
        self.inner.policy.run_pending_tasks();
        let c = &self.inner.counters;
        DiskStats {
            entries: self.inner.policy.entry_count(),
            bytes: self.inner.policy.weighted_size(),
            capacity: self.inner.capacity,
            index_loaded: self.inner.loaded.load(Ordering::Acquire),
            evictions: c.evictions.load(Ordering::Relaxed),
            corrupt_dropped: c.corrupt.load(Ordering::Relaxed),
            read_bytes: c.read_bytes.load(Ordering::Relaxed),
            sent_bytes: c.sent_bytes.load(Ordering::Relaxed),
            write_bytes: c.write_bytes.load(Ordering::Relaxed),
            index_cache_bytes: self.inner.heads.weighted_size(),
        }
    }
}

fn slot_of(file: u64, len: u64) -> Slot {
    // Every file costs at least a block on most filesystems.
    let weight = u32::try_from(len.max(4096)).unwrap_or(u32::MAX);
    Slot { file, weight }
}

fn encode_slot(slot: Slot) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&slot.file.to_be_bytes());
    out[8..].copy_from_slice(&slot.weight.to_be_bytes());
    out
}

fn decode_slot(bytes: &[u8]) -> Option<Slot> {
    let file = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let weight = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
    Some(Slot { file, weight })
}

/// Reads `len` bytes at `offset` into a new buffer, which is filled by the reads themselves
/// (not zeroed first).
fn read_fresh(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        if rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "body file shorter than its record",
            ));
        }
    }
    Ok(Bytes::from(buf))
}

/// True when the index record `rkey` names body `file`.
fn record_names(sizes: &sled::Tree, rkey: &[u8], file: u64) -> bool {
    let current = sizes.get(rkey).ok().flatten();
    current.as_deref().and_then(decode_slot).map(|s| s.file) == Some(file)
}

/// Removes a record, but only while it still names `file`.
fn remove_record(records: &sled::Tree, sizes: &sled::Tree, heads: &Heads, rkey: &[u8], file: u64) {
    if record_names(sizes, rkey, file) {
        let _ = sizes.remove(rkey);
        let _ = records.remove(rkey);
        heads.changed(rkey);
    }
}

/// Closes a body file if it is kept open and removes it; true if this call removed it.
/// It is closed before its path goes, so no one sees the file gone and still open, and again
/// after: a read that opened it just before the removal and keeps it open after the first
/// close is closed by the second, or, keeping it after both, finds it unlinked and lets it
/// go itself (see `open_body`).
fn remove_file(dir: &Path, open_files: &Cache<u64, Arc<std::fs::File>>, file: u64) -> bool {
    close_kept(open_files, file);
    let removed = std::fs::remove_file(body_path(dir, file)).is_ok();
    close_kept(open_files, file);
    removed
}

/// Stops keeping body file `file` open. The cache lets go of a removed value in its
/// housekeeping: that runs now, so the descriptor closes at once (once no read still holds
/// it), not some time after.
fn close_kept(open_files: &Cache<u64, Arc<std::fs::File>>, file: u64) {
    open_files.invalidate(&file);
    open_files.run_pending_tasks();
}

fn body_path(dir: &Path, file: u64) -> PathBuf {
    dir.join("bodies")
        .join(format!("{:02x}", file & 0xff))
        .join(format!("{file:016x}"))
}

/// Checks the format marker, resetting a directory written by another format, and clears
/// bodies left half-written by a crash.
fn prepare_layout(dir: &Path) -> std::io::Result<()> {
    let marker = dir.join("FORMAT");
    match std::fs::read_to_string(&marker) {
        Ok(found) if found == FORMAT => {}
        Ok(found) => {
            warn!(dir = %dir.display(), found = found.trim(), "disk tier written by another format; resetting it");
            reset(dir)?;
        }
        Err(_) => {
            let mut others = std::fs::read_dir(dir)?
                .flatten()
                .filter(|e| e.file_name() != "LOCK");
            if others.next().is_some() {
                warn!(dir = %dir.display(), "disk tier directory has no format marker; resetting it");
                reset(dir)?;
            }
        }
    }
    std::fs::create_dir_all(dir.join("bodies"))?;
    let tmp = dir.join("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    std::fs::write(&marker, FORMAT)?;
    Ok(())
}

/// Empties the tier directory (but for the lock this edge holds).
fn reset(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n == "LOCK") {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    std::fs::write(dir.join("FORMAT"), FORMAT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyRules;
    use crate::policy::PolicyConfig;
    use http::{HeaderValue, StatusCode};

    fn entry(body: &'static [u8]) -> CachedResponse {
        let mut h = HeaderMap::new();
        h.insert("cache-control", HeaderValue::from_static("max-age=60"));
        let now = std::time::SystemTime::now();
        CachedResponse::new(
            StatusCode::OK,
            &h,
            Bytes::from_static(body),
            &HeaderMap::new(),
            now,
            now,
            &PolicyConfig::default(),
        )
    }

    #[tokio::test]
    async fn a_slot_inserted_again_keeps_its_body() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
        let key = CacheKey::new("http", "h", &"/a".parse().unwrap(), &KeyRules::default());
        let stored = tier.store_whole(&key, &entry(b"body")).unwrap();
        let d = stored.disk.clone().unwrap();
        // What the startup scan does when it meets a record a store has just written.
        tier.inner
            .policy
            .insert(d.record.clone(), slot_of(d.file, d.len));
        tier.inner.policy.run_pending_tasks();
        assert_eq!(&tier.read_all(&stored).await.unwrap()[..], b"body");
    }

    #[tokio::test]
    async fn a_replaced_body_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
        let key = CacheKey::new("http", "h", &"/a".parse().unwrap(), &KeyRules::default());
        let old = tier.store_whole(&key, &entry(b"old")).unwrap();
        let new = tier.store_whole(&key, &entry(b"new")).unwrap();
        tier.inner.policy.run_pending_tasks();
        let old_file = old.disk.unwrap().file;
        assert!(!body_path(dir.path(), old_file).exists());
        assert_eq!(&tier.read_all(&new).await.unwrap()[..], b"new");
    }
}
