//! sha256 in-process: of files (streamed), of trees (for cache keys), and of
//! bytes as they are written ([`HashWriter`], one pass over the data).

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};

const BUF: usize = 1 << 20;

/// Hex sha256 of a file, streamed.
pub fn file_sha256(path: &Utf8Path) -> Result<String> {
    #[cfg(test)]
    reads::count(path);
    let f = std::fs::File::open(path).with_context(|| format!("opening {path} to hash it"))?;
    reader_sha256(f).with_context(|| format!("reading {path}"))
}

/// How many times each file was hashed, for tests that assert a no-op build
/// reads nothing (per path: tests run in parallel, each in its own directory).
#[cfg(test)]
pub mod reads {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use camino::{Utf8Path, Utf8PathBuf};

    static READS: Mutex<Option<HashMap<Utf8PathBuf, usize>>> = Mutex::new(None);

    pub(super) fn count(path: &Utf8Path) {
        let mut m = READS.lock().unwrap();
        *m.get_or_insert_with(HashMap::new)
            .entry(path.to_owned())
            .or_default() += 1;
    }

    /// Times [`super::file_sha256`] read files under `dir` so far.
    pub fn under(dir: &Utf8Path) -> usize {
        let m = READS.lock().unwrap();
        let m = m.iter().flatten();
        m.filter(|(p, _)| p.starts_with(dir)).map(|(_, n)| n).sum()
    }
}

pub fn reader_sha256(mut r: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub fn bytes_sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Sorted relative paths of everything under `root` (not following links).
pub fn walk_sorted(root: &Utf8Path) -> Result<Vec<(Utf8PathBuf, std::fs::Metadata)>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let e = e.with_context(|| format!("walking {root}"))?;
        let p = Utf8PathBuf::from_path_buf(e.path().to_path_buf())
            .map_err(|p| anyhow::anyhow!("non-UTF-8 path {}", p.display()))?;
        let rel = p.strip_prefix(root).expect("under root").to_owned();
        let md = e
            .metadata()
            .with_context(|| format!("reading metadata of {p}"))?;
        out.push((rel, md));
    }
    Ok(out)
}

/// Content digest of a tree: relative paths, kinds, permission bits, link
/// targets and file bytes. Returns (hex sha256, number of entries).
pub fn tree_content_digest(root: &Utf8Path) -> Result<(String, u64)> {
    let (hex, n, _) = tree_digest_memo(root, None)?;
    Ok((hex, n))
}

/// A file's identity for digest memos: device, inode, size, modification
/// and change times. Any write to the file changes it.
pub fn file_identity(md: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{}:{}:{}:{}.{}:{}.{}",
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec()
    )
}

/// sha256 of a file's content, remembered in `memo` under the file's
/// identity (device, inode, size, modification and change times), so an
/// unchanged multi-GiB file is not read again on the next plan — as git's
/// index does. Any change to the file changes its change time, so a stale
/// digest is never used; the digest itself is of the bytes alone.
pub fn file_sha256_memo(path: &Utf8Path, memo: Option<&Utf8Path>) -> Result<String> {
    let Some(memo) = memo else {
        return file_sha256(path);
    };
    let md = std::fs::metadata(path).with_context(|| format!("reading metadata of {path}"))?;
    let id = file_identity(&md);
    let entry = memo.join(&bytes_sha256(id.as_bytes())[..32]);
    if let Ok(s) = std::fs::read_to_string(&entry) {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(s);
        }
    }
    let hex = file_sha256(path)?;
    // Best effort: a memo that cannot be written only costs a re-read.
    if std::fs::create_dir_all(memo).is_ok() {
        let tmp = entry.with_extension(format!("tmp-{}", std::process::id()));
        if std::fs::write(&tmp, &hex).is_ok() {
            let _ = std::fs::rename(&tmp, &entry);
        }
    }
    Ok(hex)
}

/// [`tree_content_digest`], with each file's digest taken through
/// [`file_sha256_memo`] (for large trees fingerprinted on every plan:
/// models, image layouts). Returns (hex sha256, entries, file bytes).
pub fn tree_digest_memo(root: &Utf8Path, memo: Option<&Utf8Path>) -> Result<(String, u64, u64)> {
    let mut h = Sha256::new();
    let (mut n, mut bytes) = (0, 0);
    if !root.exists() {
        anyhow::bail!("{root} does not exist");
    }
    for (rel, md) in walk_sorted(root)? {
        n += 1;
        let ft = md.file_type();
        h.update(rel.as_str().as_bytes());
        h.update([0]);
        h.update((md.permissions().mode() & 0o7777).to_le_bytes());
        if ft.is_symlink() {
            let t = std::fs::read_link(root.join(&rel))?;
            h.update(b"L");
            h.update(t.as_os_str().as_encoded_bytes());
        } else if ft.is_file() {
            h.update(b"F");
            h.update(file_sha256_memo(&root.join(&rel), memo)?.as_bytes());
            bytes += md.size();
        } else if ft.is_dir() {
            h.update(b"D");
        } else {
            h.update(b"?");
        }
        h.update([0]);
    }
    Ok((hex::encode(h.finalize()), n, bytes))
}

/// A writer that hashes what passes through it and counts bytes.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// (inner writer, hex sha256, byte count)
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.count)
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes handed from one thread of a pipeline to the next at a time
/// ([`BackgroundWriter`], the model archive's reader): few hand-offs.
pub const CHUNK: usize = 1 << 20;

/// Bytes per `read(2)`/`write(2)` in those pipelines, each hashed right
/// after it is read or right before it is written, while it is in the
/// core's cache. On a 2-core build VM, 128 KiB writes into the page cache
/// also cost the kernel less time than 1 MiB ones.
pub const IO_SIZE: usize = 128 << 10;

/// Chunks queued for the writer thread before [`BackgroundWriter::write`]
/// waits (32 MiB). A compressor's output comes in bursts (zstd finishes a
/// job of 8 MiB at a time) and the disk stalls now and then; with a queue
/// of a few MiB the compressor waited for the writer, and its workers for
/// it, for much of a multi-GiB export under load.
const DEPTH: usize = 32;

/// A writer that hashes, counts and writes on a thread of its own, so that
/// whoever produces the bytes (a compressor feeding its worker threads) does
/// not wait for the hash or the disk. Bytes reach `inner` in order, in
/// [`IO_SIZE`] writes; [`BackgroundWriter::finish`] returns the first error
/// the thread met. Dropping it without `finish` still waits for the thread,
/// so nothing is written after the caller has moved on.
pub struct BackgroundWriter<W: Write + Send + 'static> {
    buf: Vec<u8>,
    to_thread: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    /// Written chunks coming back for reuse.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<(W, String, u64)>>>,
}

impl<W: Write + Send + 'static> BackgroundWriter<W> {
    pub fn new(mut inner: W) -> std::io::Result<Self> {
        let (to_thread, chunks) = std::sync::mpsc::sync_channel::<Vec<u8>>(DEPTH);
        let (give_back, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(DEPTH + 2);
        let thread = std::thread::Builder::new()
            .name("kiln-write".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                let mut count = 0u64;
                for mut chunk in chunks {
                    for piece in chunk.chunks(IO_SIZE) {
                        hasher.update(piece);
                        inner.write_all(piece)?;
                    }
                    count += chunk.len() as u64;
                    chunk.clear();
                    let _ = give_back.try_send(chunk);
                }
                inner.flush()?;
                Ok((inner, hex::encode(hasher.finalize()), count))
            })?;
        Ok(BackgroundWriter {
            buf: Vec::with_capacity(CHUNK),
            to_thread: Some(to_thread),
            spare,
            thread: Some(thread),
        })
    }

    /// Hand the buffered bytes to the thread.
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        let sent = match &self.to_thread {
            Some(t) => t.send(full).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped early: it met an error; report that one.
        Err(match self.join() {
            Err(e) => e,
            Ok(_) => std::io::Error::other("the writer thread stopped early"),
        })
    }

    fn join(&mut self) -> std::io::Result<(W, String, u64)> {
        self.to_thread = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the writer thread panicked"))),
            None => Err(std::io::Error::other("the writer thread already stopped")),
        }
    }

    /// Write what is buffered, wait for the thread; returns (inner writer,
    /// hex sha256, byte count).
    pub fn finish(mut self) -> std::io::Result<(W, String, u64)> {
        self.send()?;
        self.join()
    }
}

impl<W: Write + Send + 'static> Write for BackgroundWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    /// Hands the buffered bytes to the thread (does not wait for the disk).
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl<W: Write + Send + 'static> Drop for BackgroundWriter<W> {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}

/// A reader that hashes what is read through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.count)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// `<hex>  <basename>\n`: the `sha256sum -c` line for a published file.
pub fn sha256sum_line(hex: &str, basename: &str) -> String {
    format!("{hex}  {basename}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_writer_writes_hashes_and_counts_in_order() {
        let data: Vec<u8> = (0..3 * CHUNK + 12_345).map(|i| (i % 251) as u8).collect();
        let mut w = BackgroundWriter::new(Vec::new()).unwrap();
        // Writes of every size, across chunk boundaries, and a flush mid-way.
        let mut at = 0;
        for (i, n) in [1, 7, CHUNK - 8, 2 * CHUNK + 5, 100]
            .into_iter()
            .enumerate()
        {
            w.write_all(&data[at..at + n]).unwrap();
            at += n;
            if i == 2 {
                w.flush().unwrap();
            }
        }
        w.write_all(&data[at..]).unwrap();
        let (out, hex, n) = w.finish().unwrap();
        assert_eq!(out, data);
        assert_eq!(hex, bytes_sha256(&data));
        assert_eq!(n, data.len() as u64);
    }

    /// Accepts `left` bytes, then fails.
    struct Full {
        left: usize,
    }
    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::other("disk full"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn background_writer_reports_the_threads_error() {
        let mut w = BackgroundWriter::new(Full { left: CHUNK + 10 }).unwrap();
        let chunk = vec![0u8; CHUNK];
        // The error surfaces on a later write or at the latest in finish.
        let mut err = None;
        for _ in 0..4 * DEPTH {
            if let Err(e) = w.write_all(&chunk) {
                err = Some(e);
                break;
            }
        }
        let e = match err {
            Some(e) => e,
            None => w.finish().map(|_| ()).unwrap_err(),
        };
        assert!(e.to_string().contains("disk full"), "{e}");
    }

    #[test]
    fn background_writer_dropped_unfinished_stops_its_thread() {
        let mut w = BackgroundWriter::new(Vec::new()).unwrap();
        w.write_all(&vec![1u8; 2 * CHUNK + 1]).unwrap();
        drop(w);
    }
}
