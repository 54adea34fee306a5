//! Request coalescing: concurrent misses for one key share one origin fetch, and every
//! waiting client is fed the body as it arrives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, StatusCode};
use tokio::sync::watch;

use crate::entry::CachedResponse;
use crate::error::UpstreamError;
use crate::key::CacheKey;
use crate::policy::{Freshness, NotStorable};

/// The head of an origin response, shared by everyone waiting on the fetch.
#[derive(Debug)]
pub struct FetchedHead {
    pub status: StatusCode,
    /// Headers as the client that caused the fetch sees them (no hop-by-hop fields, `Age`
    /// or `Edgecache-Cache-Control`).
    pub headers: HeaderMap,
    /// Fields named by a qualified `no-cache` / `private`: only that client gets them.
    pub unshared_fields: Vec<String>,
    /// Whether the response will be stored.
    pub stored: bool,
    pub freshness: Freshness,
    /// Why the response will not be stored, if it will not.
    pub not_storable: Option<NotStorable>,
    /// The leader's request values for the response's `Vary` fields: a waiter whose own
    /// values differ must not be given this response.
    pub vary: Vec<(http::HeaderName, Option<String>)>,
    /// True when the fetch revalidated a stale entry and got a full response instead.
    pub replaced_stale: bool,
}

impl FetchedHead {
    /// A response other clients may be given: one a shared cache could store.
    pub fn shareable(&self) -> bool {
        self.not_storable.is_none()
    }
}

/// What an origin fetch produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A response whose body streams through [`Inflight::body`].
    Response(Arc<FetchedHead>),
    /// A 304 confirmed the stale entry: here it is, refreshed.
    Refreshed(Arc<CachedResponse>),
    /// The origin could not be reached or failed before a response head.
    Failed(UpstreamError),
}

#[derive(Default)]
struct State {
    outcome: Option<Outcome>,
    chunks: Vec<Bytes>,
    /// Set when the body goes to a disk-tier file instead of `chunks`: waiters read the
    /// file as it grows, so a huge object costs no memory however many wait for it.
    file: Option<FileFeed>,
    /// `Some` once the body has ended: `Ok` when complete, `Err` when cut short.
    end: Option<Result<(), String>>,
}

struct FileFeed {
    reader: Arc<std::fs::File>,
    written: u64,
}

/// How much a waiter reads from a growing body file at once.
const FILE_READ: u64 = 256 * 1024;

/// One origin fetch in progress.
pub struct Inflight {
    state: Mutex<State>,
    changed: watch::Sender<()>,
}

impl Inflight {
    fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the response head (or the failure).
    pub async fn outcome(&self) -> Outcome {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(o) = &self.lock().outcome {
                return o.clone();
            }
            // The fetch task always sets an outcome before it drops its sender.
            if rx.changed().await.is_err() {
                return Outcome::Failed(UpstreamError::Protocol("fetch abandoned".into()));
            }
        }
    }

    pub fn set_outcome(&self, outcome: Outcome) {
        let mut s = self.lock();
        s.outcome = Some(outcome);
        if !matches!(s.outcome, Some(Outcome::Response(_))) {
            s.end = Some(Ok(()));
        }
        drop(s);
        self.changed.send_replace(());
    }

    /// Sets the outcome unless one was set already.
    pub fn set_outcome_if_unset(&self, outcome: Outcome) {
        if self.lock().outcome.is_none() {
            self.set_outcome(outcome);
        }
    }

    /// Ends the body with `result` unless it has ended already.
    pub fn finish_if_open(&self, result: Result<(), String>) {
        let mut s = self.lock();
        if s.end.is_none() {
            s.end = Some(result);
            drop(s);
            self.changed.send_replace(());
        }
    }

    /// Waits until the body has ended, completely or not.
    pub async fn wait_end(&self) {
        let mut rx = self.changed.subscribe();
        loop {
            if self.lock().end.is_some() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The body received so far, in one piece.
    pub fn body_so_far(&self) -> Bytes {
        match self.lock().chunks.as_slice() {
            [] => Bytes::new(),
            // A lone chunk may be a slice of the connection's read buffer: a copy keeps
            // only the body's own bytes alive while it is cached.
            [one] => Bytes::copy_from_slice(one),
            many => Bytes::from(many.concat()),
        }
    }

    /// The body received so far followed by `last`, in one buffer of its own.
    pub fn body_with(&self, last: &Bytes) -> Bytes {
        let inner = self.lock();
        let len = inner.chunks.iter().map(Bytes::len).sum::<usize>() + last.len();
        let mut body = Vec::with_capacity(len);
        for chunk in inner.chunks.iter().chain(std::iter::once(last)) {
            body.extend_from_slice(chunk);
        }
        Bytes::from(body)
    }

    pub fn push_chunk(&self, chunk: Bytes) {
        self.lock().chunks.push(chunk);
        self.changed.send_replace(());
    }

    pub fn finish(&self, result: Result<(), String>) {
        self.lock().end = Some(result);
        self.changed.send_replace(());
    }

    /// Switches the body to a file being written (before any byte arrives).
    pub fn set_file(&self, reader: Arc<std::fs::File>) {
        self.lock().file = Some(FileFeed { reader, written: 0 });
    }

    /// Announces that the body file now holds `written` bytes.
    pub fn file_written(&self, written: u64) {
        if let Some(f) = self.lock().file.as_mut() {
            f.written = written;
        }
        self.changed.send_replace(());
    }

    /// The body from its first byte, yielding chunks as the fetch delivers them. A fetch cut
    /// short ends the stream with an error, so the client sees a broken response rather
    /// than a complete-looking truncated one.
    pub fn body(self: Arc<Self>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        enum Step {
            Chunk(Bytes),
            Read(Arc<std::fs::File>, u64),
            End,
            Fail(std::io::Error),
            Wait,
        }
        let rx = self.changed.subscribe();
        // `pos` counts chunks in memory mode and bytes in file mode.
        futures_util::stream::unfold(
            (self, 0u64, rx, false),
            |(me, pos, mut rx, failed)| async move {
                if failed {
                    return None;
                }
                loop {
                    let step = {
                        let s = me.lock();
                        let ended = || match &s.end {
                            Some(Ok(())) => Step::End,
                            Some(Err(e)) => Step::Fail(std::io::Error::other(e.clone())),
                            None => Step::Wait,
                        };
                        match &s.file {
                            Some(f) if pos < f.written => Step::Read(f.reader.clone(), f.written),
                            Some(_) => ended(),
                            None => match usize::try_from(pos).ok().and_then(|i| s.chunks.get(i)) {
                                Some(chunk) => Step::Chunk(chunk.clone()),
                                None => ended(),
                            },
                        }
                    };
                    match step {
                        Step::Chunk(c) => return Some((Ok(c), (me, pos + 1, rx, false))),
                        Step::Read(file, written) => {
                            let n = (written - pos).min(FILE_READ);
                            return match read_at(file, pos, n).await {
                                Ok(b) => Some((Ok(b), (me, pos + n, rx, false))),
                                Err(e) => Some((Err(e), (me, pos, rx, true))),
                            };
                        }
                        Step::End => return None,
                        Step::Fail(e) => return Some((Err(e), (me, pos, rx, true))),
                        Step::Wait => {
                            if rx.changed().await.is_err() {
                                return None;
                            }
                        }
                    }
                }
            },
        )
    }

    /// Bytes `start..=end` of the body, as they arrive.
    pub fn body_range(
        self: Arc<Self>,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        use futures_util::StreamExt;
        let mut offset = 0u64;
        self.body()
            .filter_map(move |item| {
                let out = match item {
                    Err(e) => Some(Err(e)),
                    Ok(chunk) => {
                        let (from, to) = (offset, offset + chunk.len() as u64);
                        offset = to;
                        if to <= start || from > end {
                            None
                        } else {
                            let a = usize::try_from(start.saturating_sub(from)).unwrap_or(0);
                            let b = usize::try_from((end + 1).min(to) - from).unwrap_or(0);
                            Some(Ok(chunk.slice(a..b)))
                        }
                    }
                };
                std::future::ready(out)
            })
            .take_while(|item| std::future::ready(item.as_ref().map_or(true, |b| !b.is_empty())))
    }
}

/// Reads `n` bytes at `pos` on a blocking thread.
async fn read_at(file: Arc<std::fs::File>, pos: u64, n: u64) -> Result<Bytes, std::io::Error> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
        file.read_exact_at(&mut buf, pos)?;
        Ok(Bytes::from(buf))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// The table of fetches in progress, by cache key.
#[derive(Default)]
pub struct Coalescer {
    inflight: Mutex<HashMap<CacheKey, Arc<Inflight>>>,
}

impl Coalescer {
    /// Joins the fetch in progress for `key`, or registers a new one. The boolean is true for
    /// the caller that must start the fetch.
    pub fn join(&self, key: &CacheKey) -> (Arc<Inflight>, bool) {
        let mut map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = map.get(key) {
            return (existing.clone(), false);
        }
        let fresh = Arc::new(Inflight::new());
        map.insert(key.clone(), fresh.clone());
        (fresh, true)
    }

    /// Stops new requests from joining `inflight` (those already waiting keep reading it).
    pub fn release(&self, key: &CacheKey, inflight: &Arc<Inflight>) {
        let mut map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(key).is_some_and(|cur| Arc::ptr_eq(cur, inflight)) {
            map.remove(key);
        }
    }

    /// Fetches in progress.
    pub fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyRules;
    use futures_util::StreamExt;

    fn key() -> CacheKey {
        CacheKey::new("http", "a", &"/x".parse().unwrap(), &KeyRules::default())
    }

    #[test]
    fn second_caller_joins_the_first() {
        let c = Coalescer::default();
        let (a, lead_a) = c.join(&key());
        let (b, lead_b) = c.join(&key());
        assert!(lead_a && !lead_b);
        assert!(Arc::ptr_eq(&a, &b));
        c.release(&key(), &a);
        let (_, lead_c) = c.join(&key());
        assert!(lead_c);
    }

    #[tokio::test]
    async fn late_reader_gets_every_chunk() {
        let c = Coalescer::default();
        let (f, _) = c.join(&key());
        let early = f.clone().body();
        f.push_chunk(Bytes::from_static(b"ab"));
        let late = f.clone().body();
        let feeder = {
            let f = f.clone();
            tokio::spawn(async move {
                f.push_chunk(Bytes::from_static(b"cd"));
                f.finish(Ok(()));
            })
        };
        let a: Vec<_> = early.map(|r| r.unwrap()).collect().await;
        let b: Vec<_> = late.map(|r| r.unwrap()).collect().await;
        feeder.await.unwrap();
        assert_eq!(a.concat(), b"abcd");
        assert_eq!(b.concat(), b"abcd");
    }

    #[tokio::test]
    async fn range_of_a_streaming_body() {
        let c = Coalescer::default();
        let (f, _) = c.join(&key());
        for part in [&b"0123"[..], b"4567", b"89"] {
            f.push_chunk(Bytes::from_static(part));
        }
        f.finish(Ok(()));
        let got: Vec<_> = f
            .clone()
            .body_range(3, 8)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(got.concat(), b"345678");
    }

    #[tokio::test]
    async fn waiters_follow_a_growing_file() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("body");
        let mut w = std::fs::File::create(&path).unwrap();
        let c = Coalescer::default();
        let (f, _) = c.join(&key());
        f.set_file(Arc::new(std::fs::File::open(&path).unwrap()));
        let reader = tokio::spawn(f.clone().body().map(|r| r.unwrap()).collect::<Vec<_>>());
        w.write_all(b"hello ").unwrap();
        f.file_written(6);
        w.write_all(b"world").unwrap();
        f.file_written(11);
        f.finish(Ok(()));
        assert_eq!(reader.await.unwrap().concat(), b"hello world");
    }

    #[tokio::test]
    async fn cut_short_body_ends_in_error() {
        let c = Coalescer::default();
        let (f, _) = c.join(&key());
        f.push_chunk(Bytes::from_static(b"ab"));
        f.finish(Err("origin reset".into()));
        let items: Vec<_> = f.clone().body().collect().await;
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
    }
}
