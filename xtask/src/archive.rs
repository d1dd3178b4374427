//! Deterministic archives written in-process: sorted entries, uid/gid 0,
//! `root` owner names, mtime = `SOURCE_DATE_EPOCH`, modes as on disk,
//! symlinks stored as links. zstd always runs with worker threads (its
//! multi-threaded output does not depend on the number of workers, but does
//! differ from single-threaded mode, so that mode is never used).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

use anyhow::{bail, Context, Result};
use camino::Utf8Path;

/// Compression level of the `.zst` files kiln writes (model archives use
/// [`crate::export::models::ZSTD_LEVEL`]).
pub const ZSTD_LEVEL: i32 = 3;

pub fn zstd_workers() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .max(1)
}

/// A zstd encoder with kiln's settings (multi-threaded, level 3, checksummed).
pub fn zstd_writer<W: Write>(w: W) -> Result<zstd::Encoder<'static, W>> {
    zstd_writer_with(w, ZSTD_LEVEL, zstd_workers())
}

/// [`zstd_writer`] at `level` with `workers` threads (at least 1): the bytes
/// written do not depend on the number of threads.
pub fn zstd_writer_with<W: Write>(
    w: W,
    level: i32,
    workers: u32,
) -> Result<zstd::Encoder<'static, W>> {
    let mut e = zstd::Encoder::new(w, level)?;
    e.multithread(workers.max(1))?;
    e.include_checksum(true)?;
    Ok(e)
}

/// Compress the file `src` into `w` with kiln's zstd settings at `level`
/// ([`zstd_writer_with`], a worker per core), showing `label`'s progress.
/// `src`'s holes are not read ([`crate::fsutil::SparseReader`]): the stream
/// is the one of its bytes all the same. Returns the bytes read and `w`,
/// the stream finished.
pub fn zstd_file<W: Write>(src: &Utf8Path, w: W, level: i32, label: &str) -> Result<(u64, W)> {
    let mut r = crate::fsutil::SparseReader::open(src)?;
    let mut z = zstd_writer_with(w, level, zstd_workers())?;
    let mut bar = crate::ui::Progress::bytes(label, r.size().max(1));
    let mut buf = vec![0u8; 4 << 20];
    let mut total = 0u64;
    loop {
        crate::signals::check()?;
        let n = r.read(&mut buf).with_context(|| format!("reading {src}"))?;
        if n == 0 {
            break;
        }
        z.write_all(&buf[..n]).context("compressing")?;
        total += n as u64;
        bar.inc(n as u64);
    }
    bar.finish();
    let w = z.finish().context("finishing the zstd stream")?;
    Ok((total, w))
}

/// A tar header with kiln's fixed owner and time (also for writers outside this module).
pub fn header(kind: tar::EntryType, mode: u32, size: u64, epoch: i64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(epoch.max(0) as u64);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

/// Append every entry under `root` (sorted, not following links) to `b`,
/// with paths prefixed by `prefix` (e.g. `"."` or `""`). Directory entries are
/// included; device nodes, sockets and FIFOs are refused.
pub fn append_tree<W: Write>(b: &mut tar::Builder<W>, root: &Utf8Path, epoch: i64) -> Result<()> {
    for (rel, md) in crate::digest::walk_sorted(root)? {
        crate::signals::check()?;
        let full = root.join(&rel);
        let mode = md.permissions().mode() & 0o7777;
        let ft = md.file_type();
        if ft.is_dir() {
            let mut h = header(tar::EntryType::Directory, mode, 0, epoch);
            b.append_data(&mut h, format!("{rel}/"), std::io::empty())
                .with_context(|| format!("archiving {full}"))?;
        } else if ft.is_symlink() {
            let target =
                std::fs::read_link(&full).with_context(|| format!("reading link {full}"))?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0, epoch);
            b.append_link(&mut h, rel.as_str(), &target)
                .with_context(|| format!("archiving link {full}"))?;
        } else if ft.is_file() {
            let f = std::fs::File::open(&full).with_context(|| format!("opening {full}"))?;
            let len = md.len();
            let mut h = header(tar::EntryType::Regular, mode, len, epoch);
            // Guard against a file that changes size while it is archived.
            let mut r = SizeGuard {
                inner: f,
                left: len,
                path: full.to_string(),
            };
            b.append_data(&mut h, rel.as_str(), &mut r)
                .with_context(|| format!("archiving {full}"))?;
            r.finish()?;
        } else {
            bail!("{full}: device nodes, sockets and FIFOs cannot be archived");
        }
    }
    Ok(())
}

/// Reads exactly `left` bytes; errors if the file is shorter, and
/// [`SizeGuard::finish`] errors if it grew.
struct SizeGuard {
    inner: std::fs::File,
    left: u64,
    path: String,
}

impl Read for SizeGuard {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        // Not ErrorKind::Interrupted: `io::copy` (inside tar's append) retries those.
        if crate::signals::interrupted() {
            return Err(std::io::Error::other(crate::signals::Interrupted));
        }
        let cap = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..cap])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was being read", self.path),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

impl SizeGuard {
    fn finish(mut self) -> Result<()> {
        let mut one = [0u8; 1];
        if self.inner.read(&mut one)? != 0 {
            bail!("{} grew while it was being read", self.path);
        }
        Ok(())
    }
}

/// Write `root` as a deterministic `.tar.zst` to `dest`; returns (sha256, bytes).
pub fn write_tree_tar_zst(root: &Utf8Path, dest: &Utf8Path, epoch: i64) -> Result<(String, u64)> {
    let f = std::fs::File::create(dest).with_context(|| format!("creating {dest}"))?;
    let hw = crate::digest::HashWriter::new(std::io::BufWriter::with_capacity(1 << 20, f));
    let z = zstd_writer(hw)?;
    let mut b = tar::Builder::new(z);
    b.follow_symlinks(false);
    append_tree(&mut b, root, epoch)?;
    let z = b
        .into_inner()
        .with_context(|| format!("finishing {dest}"))?;
    let hw = z
        .finish()
        .with_context(|| format!("finishing zstd stream of {dest}"))?;
    let (mut w, hex, n) = hw.finish();
    w.flush()?;
    Ok((hex, n))
}

/// Read a `.tar`, `.tar.gz` or `.tar.zst` by its magic bytes.
pub fn open_tar(path: &Utf8Path) -> Result<tar::Archive<Box<dyn Read>>> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic)?;
    drop(f);
    let f = std::io::BufReader::new(std::fs::File::open(path)?);
    let r: Box<dyn Read> = if n >= 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::Decoder::with_buffer(f)?)
    } else if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    Ok(tar::Archive::new(r))
}
