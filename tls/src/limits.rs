//! What one client may hold of a listener: how long a connection may sit with no request in
//! progress, how long a request head may take, how long a write may make no progress, how
//! many connections may be open (in all, and from one address), and HTTP/2's per-connection
//! limits. Every refusal and timeout is counted in [`ListenerStats`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::HttpBody;
use futures_util::task::AtomicWaker;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The limits of one listener. The defaults are those of a server facing strangers: no
/// looser than hyper's own 30 s for a request head or an idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// An HTTP/1 request head must arrive whole within this, counted from when the
    /// connection starts waiting for it (nginx `client_header_timeout`, 60 s).
    pub request_head_timeout: Duration,
    /// A connection with no request in progress is closed after this, whatever bytes trickle
    /// in meanwhile (nginx `keepalive_timeout`, 75 s; Varnish `timeout_idle`, 5 s).
    pub idle_timeout: Duration,
    /// A write that makes no progress for this long (a client that stopped reading) closes
    /// the connection (nginx `send_timeout`, 60 s; Varnish `send_timeout`, 600 s).
    pub send_timeout: Duration,
    /// Connections open at once; more are refused at accept (nginx `worker_connections`).
    pub max_connections: usize,
    /// Connections open at once from one client address (nginx `limit_conn`, unset).
    pub max_connections_per_ip: usize,
    /// HTTP/2 streams one connection may have open at once (nginx 128).
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 request header list, in bytes (decoded, per RFC 9113 §6.5.2).
    pub h2_max_header_list_size: u32,
    /// HTTP/2 streams reset by the client before the server saw them, per connection,
    /// before the connection is closed (rapid reset, CVE-2023-44487).
    pub h2_max_pending_resets: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            max_connections: 20_000,
            max_connections_per_ip: 512,
            h2_max_concurrent_streams: 128,
            h2_max_header_list_size: 64 << 10,
            h2_max_pending_resets: 20,
        }
    }
}

/// What a listener refused or closed, for metrics. Shared: each server reads it.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Refused at accept: `max_connections` reached.
    pub refused_total: AtomicU64,
    /// Refused at accept: the client's address had `max_connections_per_ip`.
    pub refused_per_ip: AtomicU64,
    /// Closed for sitting with no request in progress.
    pub idle_timeouts: AtomicU64,
    /// Closed for a request head that did not arrive in time.
    pub head_timeouts: AtomicU64,
    /// Closed for a write that made no progress (the client stopped reading).
    pub send_timeouts: AtomicU64,
}

impl ListenerStats {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a closed request-head timeout.
    pub(crate) fn head_timed_out(&self) {
        Self::count(&self.head_timeouts);
    }
}

/// Open connections in all and per client address.
#[derive(Debug, Default)]
pub(crate) struct ConnectionTable {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Total,
    PerIp,
}

/// A connection's place in the table; given back when dropped.
#[derive(Debug)]
pub(crate) struct Admission {
    table: Arc<ConnectionTable>,
    stats: Arc<ListenerStats>,
    ip: IpAddr,
}

impl ConnectionTable {
    /// Admits a connection from `ip`, or says why not (and counts it).
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &Limits,
        stats: &Arc<ListenerStats>,
    ) -> Result<Admission, Refusal> {
        let mut per_ip = self
            .per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if stats.open.load(Ordering::Relaxed) >= limits.max_connections {
            ListenerStats::count(&stats.refused_total);
            return Err(Refusal::Total);
        }
        let held = per_ip.entry(ip).or_insert(0);
        if *held >= limits.max_connections_per_ip {
            ListenerStats::count(&stats.refused_per_ip);
            return Err(Refusal::PerIp);
        }
        *held += 1;
        stats.open.fetch_add(1, Ordering::Relaxed);
        Ok(Admission {
            table: self.clone(),
            stats: stats.clone(),
            ip,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut per_ip = self
            .table
            .per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = per_ip.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests in progress on one connection: from the request head to the end of its
/// response body. When the last one ends, the connection's reader is woken so that its idle
/// timer starts even if nothing else would poll it (HTTP/2 reads only when woken).
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    /// Requests begun on the connection so far: an idle spell that saw a request begin
    /// is over, even if the reader never saw the connection busy.
    begun: AtomicU64,
    reader: AtomicWaker,
}

impl InFlight {
    /// Marks a request as started; the guard marks it ended.
    pub(crate) fn start(self: &Arc<Self>) -> RequestGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.begun.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    fn busy(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }
}

/// Held by a request until its response body is done (or dropped).
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<InFlight>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// A connection's byte stream with the idle and send timeouts applied.
///
/// The timers cost nothing per request: each is one `Sleep`, allocated the first time it is
/// needed and reset only when it fires early (the connection was busy meanwhile), not every
/// time a request starts or ends.
pub(crate) struct Guarded<I> {
    io: I,
    in_flight: Arc<InFlight>,
    stats: Arc<ListenerStats>,
    idle_timeout: Duration,
    send_timeout: Duration,
    /// Since when the connection has had no request in progress, as last seen by a read;
    /// reads do not push it back.
    idle_since: Option<Instant>,
    /// `InFlight::begun` when `idle_since` was set.
    idle_begun: u64,
    idle: Option<Pin<Box<Sleep>>>,
    /// Since when a write has made no progress.
    stuck_since: Option<Instant>,
    send: Option<Pin<Box<Sleep>>>,
}

/// Whether `since + limit` has passed, by `timer`, which is (re)set to that deadline and
/// polled, so the task wakes when it passes.
fn expired(
    timer: &mut Option<Pin<Box<Sleep>>>,
    since: Instant,
    limit: Duration,
    cx: &mut Context<'_>,
) -> bool {
    let deadline = since + limit;
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    timer.as_mut().poll(cx).is_ready()
}

impl<I> Guarded<I> {
    pub(crate) fn new(
        io: I,
        in_flight: Arc<InFlight>,
        limits: &Limits,
        stats: Arc<ListenerStats>,
    ) -> Self {
        Self {
            io,
            in_flight,
            stats,
            idle_timeout: limits.idle_timeout,
            send_timeout: limits.send_timeout,
            idle_since: None,
            idle_begun: 0,
            idle: None,
            stuck_since: None,
            send: None,
        }
    }

    /// After a read found nothing: has the connection been idle too long?
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        // Woken when the last request in progress ends, to start the idle clock.
        self.in_flight.reader.register(cx.waker());
        if self.in_flight.busy() {
            self.idle_since = None;
            return false;
        }
        let begun = self.in_flight.begun.load(Ordering::Relaxed);
        if begun != self.idle_begun {
            self.idle_begun = begun;
            self.idle_since = None;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        expired(&mut self.idle, since, self.idle_timeout, cx)
    }

    fn write_outcome<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stuck_since = None;
            return polled;
        }
        let since = *self.stuck_since.get_or_insert_with(Instant::now);
        if expired(&mut self.send, since, self.send_timeout, cx) {
            ListenerStats::count(&self.stats.send_timeouts);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "send timeout: the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending if this.idle_expired(cx) => {
                ListenerStats::count(&this.stats.idle_timeouts);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "idle timeout: no request in progress",
                )))
            }
            Poll::Pending => Poll::Pending,
            ready => {
                // A reader that got bytes is not parked: nothing to wake when a request
                // ends (HTTP/1 reads the next head by itself).
                drop(this.in_flight.reader.take());
                if this.in_flight.busy() {
                    this.idle_since = None;
                }
                ready
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.write_outcome(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.write_outcome(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.write_outcome(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.write_outcome(cx, polled)
    }
}

/// A response body that holds its request's place in [`InFlight`] until it is done.
pub(crate) struct GuardedBody {
    inner: axum::body::Body,
    _guard: RequestGuard,
}

impl GuardedBody {
    pub(crate) fn new(inner: axum::body::Body, guard: RequestGuard) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

impl HttpBody for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
