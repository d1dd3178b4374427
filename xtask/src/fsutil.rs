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

/// The kiln workspace (parent of `xtask/`), fixed at compile time.
pub fn workspace_root() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_owned()
}
