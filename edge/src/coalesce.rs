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
    /// `Some` once the body has ended: `Ok` when complete, `Err` when cut short.
    end: Option<Result<(), String>>,
}

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
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        }
    }

    pub fn push_chunk(&self, chunk: Bytes) {
        self.lock().chunks.push(chunk);
        self.changed.send_replace(());
    }

    pub fn finish(&self, result: Result<(), String>) {
        self.lock().end = Some(result);
        self.changed.send_replace(());
    }

    /// The body from its first byte, yielding chunks as the fetch delivers them. A fetch cut
    /// short ends the stream with an error, so the client sees a broken response rather
    /// than a complete-looking truncated one.
    pub fn body(self: Arc<Self>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        let rx = self.changed.subscribe();
        futures_util::stream::unfold((self, 0usize, rx), |(me, next, mut rx)| async move {
            loop {
                if next == usize::MAX {
                    return None;
                }
                let step = {
                    let s = me.lock();
                    if let Some(chunk) = s.chunks.get(next) {
                        Some(Ok(chunk.clone()))
                    } else {
                        match &s.end {
                            Some(Ok(())) => return None,
                            Some(Err(e)) => Some(Err(std::io::Error::other(e.clone()))),
                            None => None,
                        }
                    }
                };
                match step {
                    Some(Ok(chunk)) => return Some((Ok(chunk), (me, next + 1, rx))),
                    Some(Err(e)) => return Some((Err(e), (me, usize::MAX, rx))),
                    None => {
                        if rx.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            }
        })
    }
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
