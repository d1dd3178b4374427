//! Small file-system helpers used by several steps and verbs.

use std::ffi::CString;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

/// `p` made absolute against the current directory (unchanged when it is
/// absolute already). Paths given on the command line go through this.
pub fn absolute(p: &Utf8Path) -> Result<Utf8PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let cwd = Utf8PathBuf::from_path_buf(cwd)
        .map_err(|_| anyhow::anyhow!("current directory is not UTF-8"))?;
    Ok(cwd.join(p))
}

/// Run `f` (a tool writing `file`) while a thread starts the writeback of
/// what is already written (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, every
/// 100 ms, once the file exists): the disk writes while the tool does, and
/// the fsync after it ([`crate::exec::flush_and_digest`]) finds little
/// left to wait for. Best effort: a file system without it just flushes at
/// the end.
pub fn written_back_while<T>(file: &Utf8Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    use std::os::fd::AsRawFd;
    use std::sync::mpsc::RecvTimeoutError;
    // Dropping `done` wakes the thread at once: no sleep outlasts the tool.
    let (done, stop) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut opened: Option<std::fs::File> = None;
            while let Err(RecvTimeoutError::Timeout) =
                stop.recv_timeout(std::time::Duration::from_millis(100))
            {
                if opened.is_none() {
                    opened = std::fs::File::open(file).ok();
                }
                if let Some(h) = &opened {
                    // SAFETY: a valid descriptor; the call only starts I/O.
                    unsafe {
                        libc::sync_file_range(h.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
                    };
                }
            }
        });
        let r = f();
        drop(done);
        r
    })
}

/// Set the mtime and atime of `path` (not following a symlink) to `epoch`.
pub fn set_mtime(path: &Utf8Path, epoch: i64) -> Result<()> {
    let c = CString::new(path.as_str()).context("path contains a NUL byte")?;
    let t = libc::timespec {
        tv_sec: epoch as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: `c` is a valid NUL-terminated path and `times` has two entries.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting the time of {path}"));
    }
    Ok(())
}

/// Set every timestamp under (and of) `root` to `epoch`, so tools that take
/// times from the disk (xorriso, mkfs.ext4 -d) produce reproducible output.
pub fn set_tree_mtimes(root: &Utf8Path, epoch: i64) -> Result<()> {
    // Children before parents: writing a child would bump its directory's mtime.
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .contents_first(true)
    {
        let e = e.with_context(|| format!("walking {root}"))?;
        let p = Utf8Path::from_path(e.path()).context("non-UTF-8 path")?;
        set_mtime(p, epoch)?;
    }
    Ok(())
}

/// Free bytes on the file system holding `path`.
pub fn free_bytes(path: &Utf8Path) -> Result<u64> {
    let c = CString::new(path.as_str())?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path pointer and out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statvfs {path}"));
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// Copy `src` to the end into `dst` (a new, empty file), leaving holes where
/// whole blocks are zero: a decompressed disk image is mostly zeros, and a
/// plain copy would allocate every byte of it. Returns the bytes copied.
pub fn copy_sparse(src: &mut impl std::io::Read, dst: &mut std::fs::File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    const BLOCK: usize = 64 * 1024;
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        // Fill a whole block (a reader may return less), so holes line up
        // with file-system blocks.
        let mut n = 0;
        while n < BLOCK {
            match src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(n as i64))?;
        } else {
            dst.write_all(&buf[..n])?;
        }
        total += n as u64;
        if n < BLOCK {
            break;
        }
    }
    // A trailing hole has no bytes written after it: the length sets it.
    dst.set_len(total)?;
    Ok(total)
}

/// The parts of `f` within `[start, end)` that hold data, as `(offset,
/// length)` in order (absolute offsets); the rest are holes of a sparse
/// file, which read as zeros. `None` when the file system cannot say
/// (`SEEK_DATA` unsupported). Moves the file position.
pub fn data_runs(f: &std::fs::File, start: u64, end: u64) -> Option<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                break; // no data after `pos`
            }
            return None;
        }
        let data = data as u64;
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 {
            return None;
        }
        let hole = (hole as u64).min(end);
        out.push((data, hole - data));
        pos = hole;
    }
    Some(out)
}

/// Reads a file from start to end with its holes as zeros, without reading
/// them: the kernel would allocate and zero page-cache pages for every
/// hole read, which costs as much as compressing them. A disk image built
/// in-process is a third holes. The runs are taken when it opens.
pub struct SparseReader {
    file: std::fs::File,
    len: u64,
    /// Data runs `(offset, length)` in order, from [`data_runs`].
    runs: Vec<(u64, u64)>,
    /// The first run not wholly behind `pos`.
    idx: usize,
    pos: u64,
}

impl SparseReader {
    pub fn open(path: &Utf8Path) -> Result<SparseReader> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading the size of {path}"))?
            .len();
        let runs = data_runs(&file, 0, len).unwrap_or_else(|| vec![(0, len)]);
        Ok(SparseReader {
            file,
            len,
            runs,
            idx: 0,
            pos: 0,
        })
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.len
    }
}

impl std::io::Read for SparseReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        while self.idx < self.runs.len()
            && self.runs[self.idx].0 + self.runs[self.idx].1 <= self.pos
        {
            self.idx += 1;
        }
        let (next, end) = match self.runs.get(self.idx) {
            Some(&(off, n)) => (off, off + n),
            None => (self.len, self.len),
        };
        let room = buf.len() as u64;
        let n = if self.pos < next {
            let n = (next - self.pos).min(room) as usize;
            buf[..n].fill(0);
            n
        } else {
            let n = (end - self.pos).min(room) as usize;
            self.file.read_at(&mut buf[..n], self.pos)?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// The kiln workspace (parent of `xtask/`), fixed at compile time.
pub fn workspace_root() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    /// The tool's result and error come back as they were, with what it
    /// wrote intact, whether the file appears late or never.
    #[test]
    fn written_back_while_returns_what_the_tool_did() {
        let d = tempfile::tempdir().unwrap();
        let file = camino::Utf8Path::from_path(d.path())
            .unwrap()
            .join("out.img");
        let got = super::written_back_while(&file, || {
            std::thread::sleep(std::time::Duration::from_millis(250));
            std::fs::write(&file, vec![7u8; 1 << 20])?;
            std::thread::sleep(std::time::Duration::from_millis(250));
            Ok(42)
        })
        .unwrap();
        assert_eq!(got, 42);
        assert_eq!(std::fs::read(&file).unwrap(), vec![7u8; 1 << 20]);
        let none = d.path().join("never").to_string_lossy().into_owned();
        let e =
            super::written_back_while(camino::Utf8Path::new(&none), || -> anyhow::Result<()> {
                anyhow::bail!("the tool failed")
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "the tool failed");
    }

    #[test]
    fn a_sparse_copy_has_the_bytes_and_leaves_zero_blocks_unallocated() {
        // 8 MiB of zeros around a few bytes of data, ending in a hole, and
        // read in odd-sized pieces.
        let mut data = vec![0u8; 8 << 20];
        data[3 << 20..(3 << 20) + 5].copy_from_slice(b"kiln!");
        data[100] = 7;
        struct Dribble<'a>(&'a [u8]);
        impl std::io::Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(40_000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut t = tempfile::NamedTempFile::new().unwrap();
        let n = super::copy_sparse(&mut Dribble(&data), t.as_file_mut()).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(t.path()).unwrap(), data);
        let allocated = t.as_file().metadata().unwrap().blocks() * 512;
        assert!(
            allocated < 1 << 20,
            "{allocated} bytes allocated for two 64 KiB blocks of data"
        );
    }

    /// A sparse file reads the same through [`super::SparseReader`] as
    /// through a plain read, in any read size, with its holes found (not
    /// read) and a trailing hole included.
    #[test]
    fn a_sparse_file_reads_the_same_with_its_holes_skipped() {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut t = tempfile::NamedTempFile::new().unwrap();
        let f = t.as_file_mut();
        f.write_all(&[1u8; 5000]).unwrap();
        f.seek(SeekFrom::Start(4 << 20)).unwrap();
        f.write_all(b"middle").unwrap();
        f.seek(SeekFrom::Start(9 << 20)).unwrap();
        f.write_all(&[2u8; 70_000]).unwrap();
        f.set_len(16 << 20).unwrap();
        let plain = std::fs::read(t.path()).unwrap();
        let path = camino::Utf8Path::from_path(t.path()).unwrap();

        let runs = super::data_runs(t.as_file(), 0, 16 << 20)
            .expect("SEEK_DATA on the test's file system");
        assert!(runs.len() >= 3, "{runs:?}");
        let data: u64 = runs.iter().map(|r| r.1).sum();
        assert!(data < 1 << 20, "{runs:?}: the holes were not found");
        assert_eq!(
            super::data_runs(t.as_file(), 10 << 20, 16 << 20),
            Some(vec![])
        );

        for chunk in [1usize, 4096, 65_537, 8 << 20] {
            let mut r = super::SparseReader::open(path).unwrap();
            assert_eq!(r.size(), 16 << 20);
            let mut got = Vec::new();
            let mut buf = vec![0xAAu8; chunk];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if chunk == 1 && got.len() > 6000 {
                    // One byte at a time through the first run and hole
                    // start is enough; the rest in one go.
                    r.read_to_end(&mut got).unwrap();
                    break;
                }
            }
            assert!(got == plain, "read {chunk} bytes at a time: other bytes");
        }
    }
}
