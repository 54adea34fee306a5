//! Response bodies streamed from an open file in bounded chunks, never read whole into memory.

use std::collections::VecDeque;
use std::io::{self, SeekFrom};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Largest chunk read from disk at once: big enough to amortise the blocking-pool hop
/// tokio's file I/O makes, small enough that many slow clients don't pin much memory.
const CHUNK: usize = 64 * 1024;

/// A piece of a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Bytes generated in memory, such as a multipart part's header.
    Bytes(Bytes),
    /// `len` bytes of the file from offset `start`.
    File { start: u64, len: u64 },
}

/// The first `len` bytes of `file`.
///
/// Reading stops at `len` even if the file has grown since its size was taken, so the body
/// always agrees with the `Content-Length` already sent.
pub(crate) fn whole(file: File, len: u64) -> Body {
    stream(file, vec![Segment::File { start: 0, len }])
}

/// The segments in order, file bytes read as the client consumes them.
pub(crate) fn stream(file: File, segments: Vec<Segment>) -> Body {
    let state = Reader {
        file,
        segments: segments.into(),
        remaining: 0,
    };
    Body::from_stream(futures_util::stream::try_unfold(state, Reader::next_chunk))
}

struct Reader {
    file: File,
    segments: VecDeque<Segment>,
    /// Bytes still to send from the current file segment; the file is positioned at them.
    remaining: u64,
}

impl Reader {
    async fn next_chunk(mut self) -> io::Result<Option<(Bytes, Self)>> {
        loop {
            if self.remaining > 0 {
                let want = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
                let mut buf = BytesMut::with_capacity(want);
                let read = (&mut self.file)
                    .take(want as u64)
                    .read_buf(&mut buf)
                    .await?;
                if read == 0 {
                    // The file shrank after its length was sent; the only honest move left is
                    // to abort the response so the client sees a truncated transfer.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being sent",
                    ));
                }
                self.remaining -= read as u64;
                return Ok(Some((buf.freeze(), self)));
            }
            match self.segments.pop_front() {
                None => return Ok(None),
                Some(Segment::Bytes(bytes)) => return Ok(Some((bytes, self))),
                Some(Segment::File { start, len }) => {
                    self.file.seek(SeekFrom::Start(start)).await?;
                    self.remaining = len;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(body: Body) -> Result<Vec<u8>, axum::Error> {
        axum::body::to_bytes(body, usize::MAX)
            .await
            .map(|b| b.to_vec())
    }

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, std::path::PathBuf) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), content).unwrap();
        let path = file.path().to_path_buf();
        (file, path)
    }

    #[tokio::test]
    async fn whole_streams_exactly_len_bytes_in_chunks() {
        let content: Vec<u8> = (0..CHUNK * 2 + 7).map(|i| (i % 251) as u8).collect();
        let (_keep, path) = file_with(&content);
        let body = whole(File::open(&path).await.unwrap(), content.len() as u64);
        assert_eq!(collect(body).await.unwrap(), content);

        let body = whole(File::open(&path).await.unwrap(), 10);
        assert_eq!(
            collect(body).await.unwrap(),
            &content[..10],
            "a grown file is cut at len"
        );
    }

    #[tokio::test]
    async fn segments_interleave_memory_and_file_ranges() {
        let (_keep, path) = file_with(b"0123456789");
        let body = stream(
            File::open(&path).await.unwrap(),
            vec![
                Segment::Bytes(Bytes::from_static(b"[")),
                Segment::File { start: 7, len: 3 },
                Segment::Bytes(Bytes::from_static(b"|")),
                Segment::File { start: 0, len: 2 },
                Segment::File { start: 5, len: 0 },
                Segment::Bytes(Bytes::from_static(b"]")),
            ],
        );
        assert_eq!(collect(body).await.unwrap(), b"[789|01]");
    }

    #[tokio::test]
    async fn a_shrunken_file_fails_the_body() {
        let (_keep, path) = file_with(b"short");
        let body = whole(File::open(&path).await.unwrap(), 100);
        assert!(collect(body).await.is_err());
    }
}
