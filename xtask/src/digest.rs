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
    let f = std::fs::File::open(path).with_context(|| format!("opening {path} to hash it"))?;
    reader_sha256(f).with_context(|| format!("reading {path}"))
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
    let id = format!(
        "{}:{}:{}:{}.{}:{}.{}",
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec()
    );
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
