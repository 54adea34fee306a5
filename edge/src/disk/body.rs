//! Body files of the disk tier: written to a temporary name with a CRC32 per block, then
//! fsynced and renamed; read back block by block, each block verified before use.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes covered by one checksum. Ranges read whole blocks, so this bounds the extra bytes
/// a range read touches.
pub const BLOCK: u64 = 256 * 1024;

/// A body being written. Readers may follow the file while it grows (see [`Self::reader`]).
pub struct BodyWriter {
    file: File,
    reader: Arc<File>,
    tmp: PathBuf,
    id: u64,
    len: u64,
    crcs: Vec<u32>,
    block: crc32fast::Hasher,
    in_block: u64,
}

/// A body written completely and synced, ready to be renamed into place.
pub struct FinishedBody {
    pub id: u64,
    pub tmp: PathBuf,
    pub len: u64,
    pub crcs: Vec<u32>,
}

impl BodyWriter {
    pub fn create(tmp_dir: &Path, id: u64) -> io::Result<Self> {
        let tmp = tmp_dir.join(format!("{id:016x}.part"));
        let file = OpenOptions::new().create_new(true).write(true).open(&tmp)?;
        let reader = Arc::new(File::open(&tmp)?);
        Ok(Self {
            file,
            reader,
            tmp,
            id,
            len: 0,
            crcs: Vec::new(),
            block: crc32fast::Hasher::new(),
            in_block: 0,
        })
    }

    /// Appends `data`, extending the block checksums.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        while !data.is_empty() {
            let room = usize::try_from(BLOCK - self.in_block).unwrap_or(usize::MAX);
            let take = room.min(data.len());
            self.block.update(&data[..take]);
            self.in_block += take as u64;
            data = &data[take..];
            if self.in_block == BLOCK {
                let done = std::mem::replace(&mut self.block, crc32fast::Hasher::new());
                self.crcs.push(done.finalize());
                self.in_block = 0;
            }
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A handle reading the same file: valid after the rename and even after removal.
    pub fn reader(&self) -> Arc<File> {
        self.reader.clone()
    }

    /// Closes the last block and, when `durable`, syncs the data to disk.
    pub fn finish(mut self, durable: bool) -> io::Result<FinishedBody> {
        if self.in_block > 0 {
            self.crcs.push(self.block.finalize());
        }
        self.file.flush()?;
        if durable {
            self.file.sync_data()?;
        }
        Ok(FinishedBody {
            id: self.id,
            tmp: self.tmp,
            len: self.len,
            crcs: self.crcs,
        })
    }

    /// Gives up: the partial file is removed.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("body file: {0}")]
    Io(#[from] io::Error),
    #[error("body file is {actual} bytes, expected {expected}")]
    Truncated { expected: u64, actual: u64 },
    #[error("checksum mismatch in block {0}")]
    Checksum(usize),
}

impl ReadError {
    /// True when the file is damaged (as opposed to a passing I/O failure).
    pub fn is_corruption(&self) -> bool {
        match self {
            Self::Io(e) => {
                e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::UnexpectedEof
            }
            Self::Truncated { .. } | Self::Checksum(_) => true,
        }
    }
}

/// What identifies one version of a body file: a changed length or modification time
/// means its contents must be verified again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    pub modified: Option<std::time::SystemTime>,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// Opens a body file and checks its length.
pub fn open_checked(path: &Path, len: u64) -> Result<(File, Stamp), ReadError> {
    let file = File::open(path)?;
    let stamp = stamp_checked(&file, len)?;
    Ok((file, stamp))
}

/// The stamp of an open body file (`fstat`), checked against the length it should have.
pub fn stamp_checked(file: &File, len: u64) -> Result<Stamp, ReadError> {
    let stamp = Stamp::of(&file.metadata()?);
    if stamp.len != len {
        return Err(ReadError::Truncated {
            expected: len,
            actual: stamp.len,
        });
    }
    Ok(stamp)
}

/// Reads block `index` of a body of `len` bytes and, when `verify`, checks it against `crcs`.
pub fn read_block(
    file: &File,
    index: usize,
    len: u64,
    crcs: &[u32],
    verify: bool,
) -> Result<Vec<u8>, ReadError> {
    let start = index as u64 * BLOCK;
    let end = (start + BLOCK).min(len);
    let size = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
    let mut buf = vec![0u8; size];
    file.read_exact_at(&mut buf, start)?;
    match crcs.get(index) {
        Some(_) if !verify => Ok(buf),
        Some(&crc) if crc32fast::hash(&buf) == crc => Ok(buf),
        _ => Err(ReadError::Checksum(index)),
    }
}

/// Reads bytes `start..=end` of a body, verifying every block it touches when `verify`, and
/// hands each slice to `sink` (which returns false to stop early). Returns the bytes read
/// from the file (whole blocks).
pub fn read_range(
    file: &File,
    len: u64,
    crcs: &[u32],
    (start, end): (u64, u64),
    verify: bool,
    mut sink: impl FnMut(Vec<u8>) -> bool,
) -> Result<u64, ReadError> {
    if len == 0 || start > end || end >= len {
        return Ok(0);
    }
    let mut read = 0u64;
    let first = usize::try_from(start / BLOCK).unwrap_or(usize::MAX);
    let last = usize::try_from(end / BLOCK).unwrap_or(usize::MAX);
    for index in first..=last {
        let mut block = read_block(file, index, len, crcs, verify)?;
        read += block.len() as u64;
        let block_start = index as u64 * BLOCK;
        let from = usize::try_from(start.saturating_sub(block_start)).unwrap_or(0);
        let to = usize::try_from((end + 1 - block_start).min(block.len() as u64)).unwrap_or(0);
        if from > 0 || to < block.len() {
            block = block[from..to].to_vec();
        }
        if !sink(block) {
            break;
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_body(dir: &Path, data: &[u8]) -> FinishedBody {
        let mut w = BodyWriter::create(dir, 1).unwrap();
        for chunk in data.chunks(10_000) {
            w.write(chunk).unwrap();
        }
        w.finish(true).unwrap()
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn checksums_cover_every_block() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(BLOCK as usize * 2 + 17);
        let body = write_body(dir.path(), &data);
        assert_eq!(body.len, data.len() as u64);
        assert_eq!(body.crcs.len(), 3);
        assert_eq!(body.crcs[2], crc32fast::hash(&data[2 * BLOCK as usize..]));
    }

    #[test]
    fn range_reads_return_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(BLOCK as usize * 3);
        let body = write_body(dir.path(), &data);
        let (file, _) = open_checked(&body.tmp, body.len).unwrap();
        let (start, end) = (BLOCK - 5, BLOCK * 2 + 9);
        let mut got = Vec::new();
        read_range(&file, body.len, &body.crcs, (start, end), true, |b| {
            got.extend(b);
            true
        })
        .unwrap();
        assert_eq!(got, &data[start as usize..=end as usize]);
    }

    #[test]
    fn a_flipped_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(1000);
        let body = write_body(dir.path(), &data);
        let mut bytes = std::fs::read(&body.tmp).unwrap();
        bytes[500] ^= 1;
        std::fs::write(&body.tmp, &bytes).unwrap();
        let (file, _) = open_checked(&body.tmp, body.len).unwrap();
        let err = read_block(&file, 0, body.len, &body.crcs, true).unwrap_err();
        assert!(matches!(err, ReadError::Checksum(0)));
        assert!(err.is_corruption());
    }

    #[test]
    fn a_short_file_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let body = write_body(dir.path(), &pattern(1000));
        std::fs::write(&body.tmp, b"short").unwrap();
        let err = open_checked(&body.tmp, body.len).unwrap_err();
        assert!(matches!(err, ReadError::Truncated { .. }));
    }
}
