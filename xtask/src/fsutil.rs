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
}
