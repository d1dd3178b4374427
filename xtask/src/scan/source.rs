//! Byte sources for the readers: random-access windows of a file (a disk's
//! partition, an ISO file's extent) and readers over lists of runs (an ext4
//! file's extents). What the bytes are is [`super::sniff`]'s question.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

/// A byte range of an open file. Every read is bounds-checked: reading past
/// the window is an error ("truncated"), never silent zeros.
#[derive(Clone)]
pub struct Window {
    file: Arc<File>,
    pub off: u64,
    pub len: u64,
    /// Set when the window is a whole file on disk (tools can open it by path).
    pub path: Option<Utf8PathBuf>,
    /// The file the window is part of, when it has a path.
    file_path: Option<Utf8PathBuf>,
}

impl Window {
    pub fn open(path: &Utf8Path) -> Result<Window> {
        let f = File::open(path).with_context(|| format!("opening {path}"))?;
        let len = f
            .metadata()
            .with_context(|| format!("reading the size of {path}"))?
            .len();
        Ok(Window {
            file: Arc::new(f),
            off: 0,
            len,
            path: Some(path.to_owned()),
            file_path: Some(path.to_owned()),
        })
    }

    pub fn from_file(f: File, path: Option<Utf8PathBuf>) -> Result<Window> {
        let len = f.metadata()?.len();
        Ok(Window {
            file: Arc::new(f),
            off: 0,
            len,
            file_path: path.clone(),
            path,
        })
    }

    /// The underlying file's path and this window's offset in it.
    pub fn base(&self) -> Option<(Utf8PathBuf, u64)> {
        self.file_path.clone().map(|p| (p, self.off))
    }

    /// A sub-range; errors if it does not fit (a truncated image).
    pub fn sub(&self, off: u64, len: u64) -> Result<Window> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => Ok(Window {
                file: self.file.clone(),
                off: self.off + off,
                len,
                path: if off == 0 && len == self.len { self.path.clone() } else { None },
                file_path: self.file_path.clone(),
            }),
            _ => bail!(
                "truncated: a range of {len} bytes at offset {off} lies beyond the end of its {}-byte container",
                self.len
            ),
        }
    }

    /// Read exactly `buf.len()` bytes at `pos`.
    pub fn read_at(&self, pos: u64, buf: &mut [u8]) -> Result<()> {
        if pos
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            bail!(
                "truncated: {} bytes at offset {pos} lie beyond the end of a {}-byte range",
                buf.len(),
                self.len
            );
        }
        self.file
            .read_exact_at(buf, self.off + pos)
            .with_context(|| format!("reading {} bytes at offset {}", buf.len(), self.off + pos))
    }

    pub fn bytes(&self, pos: u64, n: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.read_at(pos, &mut v)?;
        Ok(v)
    }

    /// Up to `n` bytes from the start.
    pub fn head(&self, n: usize) -> Result<Vec<u8>> {
        self.bytes(0, (self.len as usize).min(n))
    }

    /// The parts of this window that hold data in the file beneath, as
    /// `(offset in the window, length)` in order: the rest are holes of a
    /// sparse file (a disk converted to raw), which read as zeros. The whole
    /// window when the file system cannot say (`SEEK_DATA` unsupported).
    pub fn data_runs(&self) -> Vec<(u64, u64)> {
        let (start, end) = (self.off, self.off + self.len);
        match crate::fsutil::data_runs(&self.file, start, end) {
            Some(runs) => runs.into_iter().map(|(o, n)| (o - start, n)).collect(),
            None => vec![(0, self.len)],
        }
    }

    /// A sequential reader over `[pos, len)`.
    pub fn reader(&self, pos: u64) -> Runs {
        Runs::new(self.clone(), vec![(pos, self.len.saturating_sub(pos))])
    }
}

/// The offset of a run that is a hole: `length` zero bytes, not read from
/// the window (sparse files in file systems).
pub const HOLE: u64 = u64::MAX;

/// Reads a list of `(offset, length)` runs of a window in order; a run at
/// [`HOLE`] reads as zeros.
pub struct Runs {
    w: Window,
    runs: Vec<(u64, u64)>,
    idx: usize,
    pos: u64,
}

impl Runs {
    pub fn new(w: Window, runs: Vec<(u64, u64)>) -> Runs {
        Runs {
            w,
            runs,
            idx: 0,
            pos: 0,
        }
    }
}

impl Read for Runs {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.idx < self.runs.len() {
            let (off, len) = self.runs[self.idx];
            if self.pos >= len {
                self.idx += 1;
                self.pos = 0;
                continue;
            }
            let n = ((len - self.pos) as usize).min(buf.len());
            if off == HOLE {
                buf[..n].fill(0);
            } else {
                self.w.read_at(off + self.pos, &mut buf[..n]).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("{e:#}"))
                })?;
            }
            self.pos += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}
