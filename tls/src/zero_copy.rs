//! Zero-copy bodies on plain HTTP/1 connections: a response body can stand for a range of a
//! file, which the connection sends with `sendfile(2)` from the page cache instead of copying
//! it through user memory.
//!
//! hyper writes a response's head and body frames to the connection in order, and keeps each
//! body frame as its own slice (it queues frames rather than copying them into its buffer
//! when the connection writes vectors). A file-backed frame is a slice of [`placeholder`], a
//! zeroed region nothing else points into, and is queued with the file range it stands for
//! in the connection's [`FileSender`]. When [`ZeroCopyIo`] meets such a slice, it sends the
//! front queued range with `sendfile` instead. Frames are queued when hyper takes them from
//! the body, and an HTTP/1 connection writes them in that order, so the n-th placeholder
//! slice written is the n-th range queued. A placeholder the queue does not account for ends
//! the connection with an error: its zeros are never sent. A frame hyper copied would no
//! longer be recognised as a placeholder, and its zeros would go out: that depends on
//! hyper's queueing, which the tests of file-sent hits (`tests/edge_disk.rs`) guard by
//! comparing every byte a client receives.
//!
//! Only plain TCP connections get a [`FileSender`], and only HTTP/1 requests carry it (HTTP/2
//! copies frames into its own framing); everything else gets ordinary bodies.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The largest file range one body frame stands for.
pub const FRAME: usize = 1 << 20;

/// The zeroed region placeholder frames point into. It is allocated once and never written
/// or read (so its pages are never touched).
static PLACEHOLDER: LazyLock<Box<[u8]>> = LazyLock::new(|| vec![0u8; FRAME].into_boxed_slice());

/// The placeholder region.
pub fn placeholder() -> &'static [u8] {
    &PLACEHOLDER
}

/// Where `slice` starts in the placeholder region, if it lies in it.
fn placeholder_offset(slice: &[u8]) -> Option<usize> {
    let base = PLACEHOLDER.as_ptr() as usize;
    let at = slice.as_ptr() as usize;
    (!slice.is_empty() && at >= base && at + slice.len() <= base + FRAME).then(|| at - base)
}

/// A file range queued for one placeholder frame.
struct Range {
    file: Arc<File>,
    offset: u64,
    len: usize,
    sent: usize,
}

/// The file ranges queued on one connection, in the order their frames were produced.
#[derive(Clone, Default)]
pub struct FileSender {
    queue: Arc<Mutex<VecDeque<Range>>>,
}

impl FileSender {
    /// A body of `len` bytes of `file` from `offset`, sent with `sendfile` by this
    /// connection. The file must hold those bytes until the response is sent.
    pub fn body(&self, file: Arc<File>, offset: u64, len: u64) -> Body {
        let queue = self.queue.clone();
        let frames = futures_util::stream::unfold(0u64, move |done| {
            let queue = queue.clone();
            let file = file.clone();
            async move {
                if done >= len {
                    return None;
                }
                let size = usize::try_from(len - done).map_or(FRAME, |rest| rest.min(FRAME));
                queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_back(Range {
                        file,
                        offset: offset + done,
                        len: size,
                        sent: 0,
                    });
                let frame = Bytes::from_static(&placeholder()[..size]);
                Some((Ok::<_, io::Error>(frame), done + size as u64))
            }
        });
        Body::from_stream(frames)
    }
}

/// A TCP connection that sends placeholder frames from their files.
pub struct ZeroCopyIo {
    tcp: TcpStream,
    sender: FileSender,
}

impl ZeroCopyIo {
    /// Wraps an accepted plain TCP connection.
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            sender: FileSender::default(),
        }
    }

    /// The sender requests on this connection use for file-backed bodies.
    pub fn sender(&self) -> FileSender {
        self.sender.clone()
    }

    /// Sends from the front queued range the bytes `slice` (at `at` in the placeholder)
    /// stands for.
    fn poll_send_file(
        &self,
        cx: &mut Context<'_>,
        at: usize,
        slice: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut queue = self
            .sender
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(range) = queue.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "a file frame reached the connection with no file range queued for it",
            )));
        };
        if at != range.sent || at + slice.len() > range.len {
            return Poll::Ready(Err(io::Error::other(
                "a file frame reached the connection out of order",
            )));
        }
        let sent = ready!(self.poll_writing(cx, || {
            let mut offset = range.offset + at as u64;
            rustix::fs::sendfile(&self.tcp, &*range.file, Some(&mut offset), slice.len())
        }))?;
        if sent == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the body file ended before the bytes promised",
            )));
        }
        range.sent += sent;
        if range.sent == range.len {
            queue.pop_front();
        }
        Poll::Ready(Ok(sent))
    }

    /// Writes `bufs` (none of them a placeholder) with `MSG_MORE`: a file's bytes follow
    /// at once, and the head should leave in the same segment as their first bytes.
    fn poll_send_more(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_writing(cx, || {
            rustix::net::sendmsg(
                &self.tcp,
                bufs,
                &mut rustix::net::SendAncillaryBuffer::default(),
                rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL,
            )
        })
    }

    /// Runs the write `op` once the socket is writable, again after each time it would
    /// block.
    fn poll_writing(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> rustix::io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self
                .tcp
                .try_io(Interest::WRITABLE, || op().map_err(io::Error::from))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }
}

impl AsyncRead for ZeroCopyIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopyIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match placeholder_offset(buf) {
            Some(at) => self.poll_send_file(cx, at, buf),
            None => Pin::new(&mut self.tcp).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let bufs = match bufs.iter().position(|b| !b.is_empty()) {
            Some(first) => &bufs[first..],
            None => return Poll::Ready(Ok(0)),
        };
        if let Some(at) = placeholder_offset(&bufs[0]) {
            return self.poll_send_file(cx, at, &bufs[0]);
        }
        match bufs.iter().position(|b| placeholder_offset(b).is_some()) {
            Some(file_at) => self.poll_send_more(cx, &bufs[..file_at]),
            None => Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slices_of_the_placeholder_are_placeholders() {
        let region = placeholder();
        assert_eq!(placeholder_offset(&region[..10]), Some(0));
        assert_eq!(placeholder_offset(&region[4096..8192]), Some(4096));
        assert_eq!(placeholder_offset(&region[..0]), None);
        let other = vec![0u8; 64];
        assert_eq!(placeholder_offset(&other), None);
    }

    use futures_util::StreamExt;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair on loopback: the writing end wrapped, and the reading end.
    async fn pair() -> (ZeroCopyIo, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (ZeroCopyIo::new(accepted.unwrap().0), client.unwrap())
    }

    /// A file of `n` bytes that differ from one offset to the next.
    fn pattern_file(n: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&bytes).unwrap();
        (file, bytes)
    }

    #[tokio::test]
    async fn placeholder_frames_go_out_as_their_file_ranges_in_order() {
        // Two bodies, the second larger than one frame, written with plain bytes around
        // them as hyper writes heads, through vectored and single writes.
        let (file, bytes) = pattern_file(FRAME + 300_000);
        let file = Arc::new(file.reopen().unwrap());
        let (mut io, mut client) = pair().await;
        let sender = io.sender();
        let first = sender.body(file.clone(), 100, 5_000);
        let second = sender.body(file, 200_000, FRAME as u64 + 50_000);
        let mut frames = Vec::new();
        for body in [first, second] {
            let mut stream = body.into_data_stream();
            while let Some(frame) = stream.next().await {
                frames.push(frame.unwrap());
            }
        }
        assert_eq!(frames.len(), 3, "a body over one frame is split");
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut head = &b"head-1|"[..];
        let mut body = &frames[0][..];
        while !head.is_empty() || !body.is_empty() {
            let n = io
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await
                .unwrap();
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        io.write_all(b"|head-2|").await.unwrap();
        io.write_all(&frames[1]).await.unwrap();
        io.write_all(&frames[2]).await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);

        let mut want = b"head-1|".to_vec();
        want.extend_from_slice(&bytes[100..5_100]);
        want.extend_from_slice(b"|head-2|");
        want.extend_from_slice(&bytes[200_000..200_000 + FRAME + 50_000]);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes sent differ from the file's");
        assert!(
            sender.queue.lock().unwrap().is_empty(),
            "ranges left queued"
        );
    }

    #[tokio::test]
    async fn a_placeholder_with_no_range_queued_ends_the_connection_unsent() {
        let (mut io, mut client) = pair().await;
        let err = io.write_all(&placeholder()[..10]).await.unwrap_err();
        assert!(err.to_string().contains("no file range queued"), "{err}");
        drop(io);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty(), "placeholder bytes were sent: {got:?}");
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_ends_the_connection() {
        let (file, _) = pattern_file(1_000);
        let (mut io, _client) = pair().await;
        let body = io.sender().body(Arc::new(file.reopen().unwrap()), 0, 5_000);
        let frame = body.into_data_stream().next().await.unwrap().unwrap();
        let err = io.write_all(&frame).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }
}
