//! The scan's walker: opens every container it meets (directories, tars,
//! compressed streams, cpio, ISO 9660, ZIP, partitioned disks, ext2/3/4 and
//! FAT file systems, qemu disk formats), nested to [`MAX_DEPTH`] levels, and
//! hands each file's bytes to the rules. An ext file system's files go to
//! worker threads; their findings are merged back in file order, so a report
//! never depends on timing.

use std::io::{Cursor, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::rules::{self, Engine, Hit, Kind};
use super::source::{sniff, Format, Runs, Window, HEAD, HOLE};
use super::{cpio, disk, dpkg, ext4, iso9660, zip};

/// Archives nested deeper than this are refused (decompression bombs, loops).
const MAX_DEPTH: u32 = 16;
/// Large files are scanned in chunks of this size…
const CHUNK: usize = 8 << 20;
/// …overlapping by this much, so a key that straddles two chunks is whole in one.
const OVERLAP: usize = 128 << 10;
/// Threads that scan one file system's files.
const MAX_WORKERS: usize = 8;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(Engine::new)
}

/// What walking one artifact found.
pub(super) struct Walked {
    /// Every hit, in walk order.
    pub hits: Vec<Located>,
    /// dpkg's md5sums lists met on the way.
    pub shipped: dpkg::Shipped,
    pub files: u64,
    pub bytes: u64,
    /// Whether all of it was read (an error: the scan fails closed).
    pub result: Result<()>,
}

/// Walk one artifact (a directory or a file of any supported format),
/// applying the rules to every file at every nesting level. Temporary
/// copies go to `tmp`.
pub(super) fn walk(path: &Utf8Path, tmp: Utf8PathBuf) -> Walked {
    let mut w = Walker {
        engine: engine(),
        tmp,
        hits: Vec::new(),
        shipped: dpkg::Shipped::default(),
        files: 0,
        bytes: 0,
        progress: None,
        fork_ok: true,
    };
    let result = w.artifact(path);
    if let Some(p) = w.progress.take() {
        if let Ok(p) = Arc::try_unwrap(p) {
            p.into_inner().unwrap_or_else(|e| e.into_inner()).finish();
        }
    }
    Walked {
        hits: w.hits,
        shipped: w.shipped,
        files: w.files,
        bytes: w.bytes,
        result,
    }
}

/// Bytes of one file: random access (a window of an image) or a stream.
enum Data<'r> {
    Win(Window),
    Stream(Box<dyn Read + 'r>),
}

/// Temporary files the walk creates are removed when these drop (also on errors).
enum Temp {
    File(#[allow(dead_code)] tempfile::NamedTempFile),
}

/// A hit where it was found: (nested path, innermost path, hit, MD5 of the
/// file when dpkg's record could excuse it).
pub(super) type Located = (String, String, Hit, Option<[u8; 16]>);

/// What one worker of [`Walker::each`] brings back.
struct Worked {
    walker: Walker,
    /// (item index, its hits)
    found: Vec<(usize, Vec<Located>)>,
    err: Option<(usize, anyhow::Error)>,
}

struct Walker {
    engine: &'static Engine,
    tmp: Utf8PathBuf,
    hits: Vec<Located>,
    /// dpkg's md5sums lists met on the way.
    shipped: dpkg::Shipped,
    files: u64,
    bytes: u64,
    progress: Option<Arc<Mutex<crate::ui::Progress>>>,
    /// Whether this walker may hand a file system's files to worker threads
    /// (only the outermost one does: nested images stay on their worker).
    fork_ok: bool,
}

fn join(chain: &[String], next: &str) -> Vec<String> {
    let mut c = chain.to_vec();
    c.push(next.to_string());
    c
}

/// `./etc/x`, `etc/x`, `/etc/x` → `/etc/x`.
fn norm(p: &str) -> String {
    let t = p
        .trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/');
    format!("/{t}")
}

/// Counts bytes read; flags a read that hit the end of its input.
struct Counted<R> {
    inner: R,
    n: u64,
    eof: bool,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        self.n += n as u64;
        Ok(n)
    }
}

fn counted<R: Read>(inner: R) -> Counted<R> {
    Counted {
        inner,
        n: 0,
        eof: false,
    }
}

impl Walker {
    fn artifact(&mut self, path: &Utf8Path) -> Result<()> {
        let md = std::fs::symlink_metadata(path).with_context(|| format!("reading {path}"))?;
        if md.is_dir() {
            return self.dir(&[], path, 0);
        }
        if !md.is_file() {
            bail!("{path} is neither a directory nor a regular file");
        }
        if md.len() == 0 {
            bail!("{path} is empty: nothing to scan (a truncated artifact?)");
        }
        let w = Window::open(path)?;
        if md.len() > 256 << 20 {
            self.progress = Some(Arc::new(Mutex::new(crate::ui::Progress::bytes(
                &format!("scan {}", path.file_name().unwrap_or("")),
                md.len(),
            ))));
        }
        let head = w.head(HEAD)?;
        if sniff(&head, w.len) == Format::Leaf {
            let name = path.file_name().unwrap_or("");
            const CONTAINERS: &[&str] = &[
                ".iso", ".img", ".raw", ".qcow2", ".vmdk", ".vhdx", ".vdi", ".ova", ".tar", ".tgz",
                ".gz", ".zst", ".xz", ".cpio", ".ext4", ".fat",
            ];
            if CONTAINERS.iter().any(|e| name.ends_with(e)) {
                bail!(
                    "{path}: unknown format: named like an image or archive, but its content is none that \
                     kiln reads (tar/gzip/zstd/xz, cpio, ISO 9660, GPT/MBR disk, ext2/3/4, FAT, qcow2/VMDK/VHDX/VDI) \
                     — corrupt, truncated or unsupported"
                );
            }
        }
        self.blob(&[], path.as_str(), Data::Win(w), 0)
    }

    fn record(&mut self, chain: &[String], inner: &str, hits: Vec<Hit>) {
        self.record_file(chain, inner, hits, None);
    }

    /// Hits in a regular file, with its MD5 when dpkg's record may excuse them.
    fn record_file(
        &mut self,
        chain: &[String],
        inner: &str,
        hits: Vec<Hit>,
        md5: Option<[u8; 16]>,
    ) {
        let full = chain.join("!");
        for h in hits {
            self.hits.push((full.clone(), inner.to_string(), h, md5));
        }
    }

    fn dir(&mut self, chain: &[String], root: &Utf8Path, depth: u32) -> Result<()> {
        for e in walkdir::WalkDir::new(root)
            .sort_by_file_name()
            .follow_links(false)
        {
            crate::signals::check()?;
            let e = e.with_context(|| format!("walking {root}"))?;
            let rel = e
                .path()
                .strip_prefix(root)
                .expect("walkdir stays under its root");
            let rel = rel
                .to_str()
                .with_context(|| format!("{}: not UTF-8", e.path().display()))?;
            if rel.is_empty() {
                continue;
            }
            let inner = norm(rel);
            let ft = e.file_type();
            if ft.is_symlink() {
                let hits = self.engine.entry(&inner, Kind::Symlink);
                self.record(&join(chain, &inner), &inner, hits);
            } else if ft.is_file() {
                let p = Utf8Path::from_path(e.path()).expect("checked UTF-8");
                let w = Window::open(p)?;
                self.blob(&join(chain, &inner), &inner, Data::Win(w), depth + 1)
                    .with_context(|| format!("scanning {p}"))?;
            }
        }
        Ok(())
    }

    /// One file's bytes: open it if it is a container, else apply the rules.
    fn blob(&mut self, chain: &[String], inner: &str, data: Data, depth: u32) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!(
                "{}: archives nested more than {MAX_DEPTH} levels deep",
                chain.join("!")
            );
        }
        crate::signals::check()?;
        let (head, len, data) = match data {
            Data::Win(w) => (w.head(HEAD)?, Some(w.len), Data::Win(w)),
            Data::Stream(mut r) => {
                let mut head = Vec::with_capacity(HEAD);
                (&mut r).take(HEAD as u64).read_to_end(&mut head)?;
                (head, None, Data::Stream(r))
            }
        };
        let fmt = if head.is_empty() {
            Format::Leaf
        } else {
            sniff(&head, len.unwrap_or(u64::MAX))
        };
        let at = || {
            if chain.is_empty() {
                inner.to_string()
            } else {
                chain.join("!")
            }
        };
        match fmt {
            Format::Leaf => self.leaf(chain, inner, head, data),
            Format::Gzip | Format::Zstd | Format::Xz
                if dpkg::candidate(inner) && len.is_none_or(|l| l <= rules::TEXT_LIMIT) =>
            {
                self.shipped_compressed(fmt, chain, inner, head, data, depth)
            }
            Format::Gzip | Format::Zstd | Format::Xz => {
                self.decompress(fmt, chain, inner, head, data, depth)
            }
            Format::Tar => self
                .tar(chain, prefixed(head, data), depth)
                .with_context(|| format!("reading the tar archive {}", at())),
            Format::Cpio => {
                let newc = cpio::is_newc(&head);
                self.cpio(chain, inner, prefixed(head, data), newc, depth)
                    .with_context(|| format!("reading the cpio archive {}", at()))
            }
            Format::Opaque(kind) => {
                let r = counted(prefixed(head, data));
                let mut r = r;
                let digest = crate::digest::reader_sha256(&mut r)?;
                self.files += 1;
                self.bytes += r.n;
                let mut h = Hit::new(
                    "opaque-content",
                    format!("{kind} data, {} bytes, not opened", r.n),
                    &[],
                    0,
                    0,
                );
                h.sha256 = digest;
                h.hash_public = true;
                self.record(chain, inner, vec![h]);
                Ok(())
            }
            Format::Iso
            | Format::Zip
            | Format::Disk
            | Format::Ext
            | Format::Fat
            | Format::Qemu(_) => {
                let (w, _keep) = self.window(head, data)?;
                match fmt {
                    Format::Iso => self
                        .iso(chain, w, depth)
                        .with_context(|| format!("reading the ISO 9660 image {}", at())),
                    Format::Zip => self
                        .zip(chain, w, depth)
                        .with_context(|| format!("reading the ZIP archive {}", at())),
                    Format::Disk => self
                        .disk(chain, w, depth)
                        .with_context(|| format!("reading the disk image {}", at())),
                    Format::Ext => self
                        .ext(chain, w, depth)
                        .with_context(|| format!("reading the ext file system {}", at())),
                    Format::Fat => self
                        .fat(chain, w, depth)
                        .with_context(|| format!("reading the FAT file system {}", at())),
                    Format::Qemu(f) => self
                        .qemu(chain, w, f, depth)
                        .with_context(|| format!("reading the {f} disk image {}", at())),
                    _ => unreachable!(),
                }
            }
        }
    }

    /// Random access for a blob: its window, or a temporary copy of a stream.
    fn window(&mut self, head: Vec<u8>, data: Data) -> Result<(Window, Option<Temp>)> {
        match data {
            Data::Win(w) => Ok((w, None)),
            Data::Stream(r) => {
                let mut t = tempfile::NamedTempFile::new_in(&self.tmp)
                    .with_context(|| format!("creating a temporary file in {}", self.tmp))?;
                let mut src = Cursor::new(head).chain(r);
                crate::fsutil::copy_sparse(&mut src, t.as_file_mut())
                    .context("copying a nested image to a temporary file")?;
                let w = Window::from_file(t.reopen()?, Some(path_of(&t)?))?;
                Ok((w, Some(Temp::File(t))))
            }
        }
    }

    /// A gzip, zstd or xz stream: its content, walked under the name
    /// without the suffix.
    fn decompress(
        &mut self,
        fmt: Format,
        chain: &[String],
        inner: &str,
        head: Vec<u8>,
        data: Data,
        depth: u32,
    ) -> Result<()> {
        let at = || {
            if chain.is_empty() {
                inner.to_string()
            } else {
                chain.join("!")
            }
        };
        match fmt {
            Format::Gzip => {
                let r = flate2::read::MultiGzDecoder::new(prefixed(head, data));
                self.blob(
                    chain,
                    strip_ext(inner, ".gz"),
                    Data::Stream(Box::new(r)),
                    depth + 1,
                )
                .with_context(|| format!("reading the gzip stream {}", at()))
            }
            Format::Zstd => {
                let r = zstd::stream::read::Decoder::new(prefixed(head, data))?;
                self.blob(
                    chain,
                    strip_ext(inner, ".zst"),
                    Data::Stream(Box::new(r)),
                    depth + 1,
                )
                .with_context(|| format!("reading the zstd stream {}", at()))
            }
            Format::Xz => {
                let t = tempfile::NamedTempFile::new_in(&self.tmp)
                    .with_context(|| format!("creating a temporary file in {}", self.tmp))?;
                let mut src = std::io::BufReader::new(prefixed(head, data));
                let mut dst = std::io::BufWriter::new(t.as_file());
                lzma_rs::xz_decompress(&mut src, &mut dst).map_err(|e| {
                    anyhow::anyhow!("corrupt or truncated xz stream {}: {e:?}", at())
                })?;
                drop(dst);
                let w = Window::from_file(t.reopen()?, Some(path_of(&t)?))?;
                let _keep = Temp::File(t);
                self.blob(chain, strip_ext(inner, ".xz"), Data::Win(w), depth + 1)
            }
            _ => unreachable!("decompress is called for compressed formats"),
        }
    }

    /// A small compressed file where a Debian package may have put it
    /// (`/usr/share/doc/*/examples/*.gz`): dpkg's md5sums record the file as
    /// shipped, compressed, so the hits in its content carry the compressed
    /// file's path and MD5, by which that record excuses them.
    fn shipped_compressed(
        &mut self,
        fmt: Format,
        chain: &[String],
        inner: &str,
        head: Vec<u8>,
        data: Data,
        depth: u32,
    ) -> Result<()> {
        let mut r = prefixed(head, data);
        let mut all = Vec::new();
        (&mut r).take(rules::TEXT_LIMIT + 1).read_to_end(&mut all)?;
        let md5 = (all.len() as u64 <= rules::TEXT_LIMIT).then(|| dpkg::md5(&all));
        let before = self.hits.len();
        let whole = Data::Stream(Box::new(Cursor::new(all).chain(r)));
        self.decompress(fmt, chain, inner, Vec::new(), whole, depth)?;
        if md5.is_some() {
            let full = chain.join("!");
            for (f, i, _, m) in &mut self.hits[before..] {
                if *f == full {
                    *i = inner.to_string();
                    *m = md5;
                }
            }
        }
        Ok(())
    }

    fn leaf(&mut self, chain: &[String], inner: &str, head: Vec<u8>, data: Data) -> Result<()> {
        self.files += 1;
        let hl = head.len() as u64;
        let mut rest: Box<dyn Read> = match data {
            Data::Win(w) => Box::new(w.reader(hl)),
            Data::Stream(r) => r,
        };
        let mut buf = head;
        (&mut rest)
            .take(rules::TEXT_LIMIT + 1 - hl.min(rules::TEXT_LIMIT))
            .read_to_end(&mut buf)?;
        let fs = chain[..chain.len().saturating_sub(1)].join("!");
        let candidate = dpkg::candidate(inner);
        if buf.len() as u64 <= rules::TEXT_LIMIT {
            self.add_bytes(buf.len() as u64);
            if let Some(pkg) = dpkg::md5sums_package(inner) {
                self.shipped.add_list(&fs, pkg, &buf);
            }
            let hits = self.engine.file(inner, &buf);
            let md5 = (candidate && !hits.is_empty()).then(|| dpkg::md5(&buf));
            self.record_file(chain, inner, hits, md5);
            return Ok(());
        }
        let mut hasher = candidate.then(dpkg::Hasher::default);
        // Large: path rules on the head, markers chunk by chunk.
        let mut hits =
            self.engine
                .large_file_path_rules(inner, buf.len() as u64, &buf[..HEAD.min(buf.len())]);
        let mut base = 0u64;
        loop {
            let mut more = Vec::with_capacity(CHUNK);
            (&mut rest)
                .take((CHUNK.saturating_sub(buf.len())) as u64 + 1)
                .read_to_end(&mut more)?;
            let last = more.is_empty();
            buf.extend_from_slice(&more);
            let until = if last {
                buf.len()
            } else {
                buf.len().saturating_sub(OVERLAP)
            };
            hits.extend(
                self.engine
                    .chunk(inner, &buf[..], base, 0)
                    .into_iter()
                    .filter(|h| h.start < base + until as u64),
            );
            if let Some(h) = &mut hasher {
                h.update(&buf[..until]);
            }
            if last {
                self.add_bytes(buf.len() as u64);
                break;
            }
            self.add_bytes(until as u64);
            buf.drain(..until);
            base += until as u64;
        }
        // Hits in the overlap were seen twice only if they started before `until`; dedupe by start.
        hits.sort_by_key(|h| (h.start, h.rule));
        hits.dedup_by_key(|h| (h.start, h.rule));
        let md5 = hasher
            .filter(|_| !hits.is_empty())
            .map(dpkg::Hasher::finish);
        self.record_file(chain, inner, hits, md5);
        Ok(())
    }

    fn add_bytes(&mut self, n: u64) {
        self.bytes += n;
        if let Some(p) = &self.progress {
            p.lock().unwrap_or_else(|e| e.into_inner()).inc(n);
        }
    }

    fn tar(&mut self, chain: &[String], r: Box<dyn Read + '_>, depth: u32) -> Result<()> {
        let mut src = counted(r);
        {
            let mut ar = tar::Archive::new(&mut src);
            for e in ar.entries().context("reading tar headers")? {
                crate::signals::check()?;
                let mut e = e.context("reading a tar header (corrupt or truncated archive)")?;
                let name = e
                    .path()
                    .context("a tar entry's path")?
                    .to_string_lossy()
                    .into_owned();
                let inner = norm(&name);
                if inner == "/" {
                    continue;
                }
                let here = join(chain, &inner);
                let et = e.header().entry_type();
                if et.is_file()
                    || et == tar::EntryType::Continuous
                    || et == tar::EntryType::GNUSparse
                {
                    let size = e.size();
                    let mut c = counted(&mut e);
                    self.blob(&here, &inner, Data::Stream(Box::new(&mut c)), depth + 1)?;
                    std::io::copy(&mut c, &mut std::io::sink())?;
                    if c.n != size {
                        bail!("truncated tar archive: {inner} should hold {size} bytes, only {} are there", c.n);
                    }
                } else if et.is_symlink() || et.is_hard_link() {
                    let hits = self.engine.entry(&inner, Kind::Symlink);
                    self.record(&here, &inner, hits);
                }
            }
        }
        if src.eof {
            bail!("truncated tar archive: it ends without an end-of-archive marker");
        }
        Ok(())
    }

    fn cpio(
        &mut self,
        chain: &[String],
        inner_self: &str,
        r: Box<dyn Read + '_>,
        newc: bool,
        depth: u32,
    ) -> Result<()> {
        let mut r = r;
        let mut pos = 0u64;
        while let Some(h) = cpio::next(&mut r, &mut pos)? {
            crate::signals::check()?;
            let inner = norm(&h.name);
            let here = join(chain, &inner);
            let mut c = counted((&mut r).take(h.size));
            match h.mode & 0o170000 {
                0o100000 if inner != "/" => {
                    self.blob(&here, &inner, Data::Stream(Box::new(&mut c)), depth + 1)?
                }
                0o120000 => {
                    let hits = self.engine.entry(&inner, Kind::Symlink);
                    self.record(&here, &inner, hits);
                }
                _ => {}
            }
            std::io::copy(&mut c, &mut std::io::sink())?;
            if c.n != h.size {
                bail!(
                    "truncated cpio archive: {inner} should hold {} bytes, only {} are there",
                    h.size,
                    c.n
                );
            }
            pos += h.size;
            if newc {
                cpio::skip_pad(&mut r, &mut pos)?;
            }
        }
        // Concatenated archives (early microcode + main initramfs): skip padding, scan the rest.
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = r.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            if let Some(i) = chunk[..n].iter().position(|&b| b != 0) {
                let rest = Cursor::new(chunk[i..n].to_vec()).chain(r);
                return self.blob(chain, inner_self, Data::Stream(Box::new(rest)), depth + 1);
            }
        }
    }

    fn iso(&mut self, chain: &[String], w: Window, depth: u32) -> Result<()> {
        let iso = iso9660::Iso::open(w.clone())?;
        iso.walk(|e| {
            let here = join(chain, &e.path);
            match e.kind {
                iso9660::Kind::Symlink => {
                    let hits = self.engine.entry(&e.path, Kind::Symlink);
                    self.record(&here, &e.path, hits);
                    Ok(())
                }
                iso9660::Kind::File(runs) => {
                    let data = if runs.len() == 1 {
                        Data::Win(w.sub(runs[0].0, runs[0].1)?)
                    } else {
                        Data::Stream(Box::new(Runs::new(w.clone(), runs)))
                    };
                    self.blob(&here, &e.path, data, depth + 1)
                }
            }
        })?;
        // Partitions appended after the ISO file system (a hybrid ISO's EFI image).
        let head = w.head(HEAD)?;
        if disk::is_gpt(&head) || disk::is_mbr(&head, w.len) {
            for p in disk::partitions(&w)? {
                if p.start >= iso.volume_bytes {
                    self.partition(chain, &w, &p, depth)?;
                }
            }
        }
        Ok(())
    }

    fn zip(&mut self, chain: &[String], w: Window, depth: u32) -> Result<()> {
        for m in zip::members(&w)? {
            crate::signals::check()?;
            if m.dir {
                continue;
            }
            let inner = norm(&m.name);
            let here = join(chain, &inner);
            let raw = w.sub(m.data.0, m.data.1)?;
            if m.encrypted || !matches!(m.method, 0 | 8) {
                let what = if m.encrypted {
                    "encrypted ZIP member".to_string()
                } else {
                    format!("ZIP member (method {})", m.method)
                };
                let mut h = Hit::new(
                    "opaque-content",
                    format!("{what}, {} bytes, not opened", m.size),
                    &[],
                    0,
                    0,
                );
                h.sha256 = crate::digest::reader_sha256(raw.reader(0))?;
                h.hash_public = true;
                self.record(&here, &inner, vec![h]);
                continue;
            }
            let mut c = if m.method == 0 {
                counted(Box::new(raw.reader(0)) as Box<dyn Read>)
            } else {
                counted(Box::new(flate2::read::DeflateDecoder::new(raw.reader(0))) as Box<dyn Read>)
            };
            self.blob(&here, &inner, Data::Stream(Box::new(&mut c)), depth + 1)?;
            std::io::copy(&mut c, &mut std::io::sink())?;
            if c.n != m.size {
                bail!(
                    "corrupt ZIP: {inner} should expand to {} bytes, got {}",
                    m.size,
                    c.n
                );
            }
        }
        Ok(())
    }

    fn disk(&mut self, chain: &[String], w: Window, depth: u32) -> Result<()> {
        let parts = disk::partitions(&w)?;
        for p in &parts {
            self.partition(chain, &w, p, depth)?;
        }
        Ok(())
    }

    fn partition(
        &mut self,
        chain: &[String],
        w: &Window,
        p: &disk::Partition,
        depth: u32,
    ) -> Result<()> {
        let label = format!("p{}", p.index);
        let pw = w
            .sub(p.start, p.len)
            .with_context(|| format!("partition {} (type {})", p.index, p.kind))?;
        let here = join(chain, &label);
        let head = pw.head(HEAD)?;
        let fmt = sniff(&head, pw.len);
        let swap = head.len() >= 4096
            && (&head[4086..4096] == b"SWAPSPACE2" || &head[4086..4096] == b"SWAP-SPACE");
        let empty = head.iter().all(|&b| b == 0);
        let ctx = || {
            format!(
                "partition {} (type {}) at offset {}",
                p.index, p.kind, p.start
            )
        };
        match fmt {
            Format::Leaf if p.kind == crate::qcow2::gpt::TYPE_BIOS_BOOT || swap || empty => {
                // No file system: every byte is scanned for key markers.
                self.leaf(&here, &label, head, Data::Win(pw))
                    .with_context(ctx)
            }
            Format::Leaf => Err(anyhow::anyhow!(
                "no file system kiln can read (ext2/3/4, FAT, ISO 9660): it cannot be proven clean"
            ))
            .with_context(ctx),
            _ => self
                .blob(&here, &label, Data::Win(pw), depth + 1)
                .with_context(ctx),
        }
    }

    fn ext(&mut self, chain: &[String], w: Window, depth: u32) -> Result<()> {
        let fs = ext4::Fs::open(w.clone())?;
        let mut files = Vec::new();
        fs.walk(|path, ino, is_dir| {
            if !is_dir {
                files.push((path.to_string(), ino));
            }
            Ok(())
        })?;
        self.each(&files, |wk, (path, ino)| {
            let here = join(chain, path);
            match fs.node(*ino).with_context(|| format!("reading {path}"))? {
                ext4::Node::File { runs, size, inline } => {
                    let data = match inline {
                        Some(b) => Data::Stream(Box::new(Cursor::new(b))),
                        None if runs.len() == 1 && runs[0].1 == size && runs[0].0 != HOLE => {
                            Data::Win(w.sub(runs[0].0, size)?)
                        }
                        None => Data::Stream(Box::new(Runs::new(w.clone(), runs))),
                    };
                    wk.blob(&here, path, data, depth + 1)
                        .with_context(|| format!("scanning {path}"))
                }
                ext4::Node::Symlink => {
                    let hits = wk.engine.entry(path, Kind::Symlink);
                    wk.record(&here, path, hits);
                    Ok(())
                }
                ext4::Node::Other => Ok(()),
            }
        })
    }

    /// A walker for a worker thread: same rules, progress and temporary
    /// directory, its own findings.
    fn fork(&self) -> Walker {
        Walker {
            engine: self.engine,
            tmp: self.tmp.clone(),
            hits: Vec::new(),
            shipped: dpkg::Shipped::default(),
            files: 0,
            bytes: 0,
            progress: self.progress.clone(),
            fork_ok: false,
        }
    }

    /// Run `f` on every item, on all cores when this is the outermost walker.
    /// Findings are merged in item order, so reports do not depend on thread
    /// timing; the first failing item (in item order) is the error.
    fn each<T: Sync>(
        &mut self,
        items: &[T],
        f: impl Fn(&mut Walker, &T) -> Result<()> + Sync,
    ) -> Result<()> {
        // Each worker holds up to TEXT_LIMIT (16 MiB) of one file: cap the
        // count so a many-core host does not turn that into gigabytes.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS)
            .min(items.len());
        if !self.fork_ok || workers < 2 {
            return items.iter().try_for_each(|it| f(self, it));
        }
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let done: Vec<Worked> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let mut wk = self.fork();
                    let (next, stop, f) = (&next, &stop, &f);
                    s.spawn(move || {
                        let mut found = Vec::new();
                        let mut err = None;
                        while !stop.load(Ordering::Relaxed) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(it) = items.get(i) else { break };
                            match f(&mut wk, it) {
                                Ok(()) => found.push((i, std::mem::take(&mut wk.hits))),
                                Err(e) => {
                                    stop.store(true, Ordering::Relaxed);
                                    err = Some((i, e));
                                    break;
                                }
                            }
                        }
                        Worked {
                            walker: wk,
                            found,
                            err,
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("scan worker panicked"))
                .collect()
        });
        let mut found = Vec::new();
        let mut first_err: Option<(usize, anyhow::Error)> = None;
        for Worked {
            walker: wk,
            found: f,
            err,
        } in done
        {
            self.files += wk.files;
            self.bytes += wk.bytes;
            self.shipped.merge(wk.shipped);
            found.extend(f);
            if let Some((i, e)) = err {
                if first_err.as_ref().is_none_or(|(j, _)| i < *j) {
                    first_err = Some((i, e));
                }
            }
        }
        found.sort_by_key(|(i, _)| *i);
        for (_, hits) in found {
            self.hits.extend(hits);
        }
        match first_err {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    fn fat(&mut self, chain: &[String], w: Window, depth: u32) -> Result<()> {
        let (base, off, _keep) = match w.base() {
            Some((p, off)) => (p, off, None),
            None => {
                let (w2, keep) = self.window(Vec::new(), Data::Stream(Box::new(w.reader(0))))?;
                (
                    w2.path.clone().expect("temporary copies have a path"),
                    0,
                    keep,
                )
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("kiln-scan-fat-")
            .tempdir_in(&self.tmp)
            .with_context(|| format!("creating a temporary directory in {}", self.tmp))?;
        let d = Utf8Path::from_path(dir.path()).context("temporary directory is not UTF-8")?;
        crate::tools::run(&crate::tools::mtools::extract_all(&base, off, d))?;
        self.dir(chain, d, depth)
    }

    fn qemu(&mut self, chain: &[String], w: Window, format: &str, depth: u32) -> Result<()> {
        let (src, _keep) = match &w.path {
            Some(p) => (p.clone(), None),
            None => {
                let (w2, keep) = self.window(Vec::new(), Data::Stream(Box::new(w.reader(0))))?;
                (w2.path.clone().expect("temporary copies have a path"), keep)
            }
        };
        match crate::tools::run_unchecked(&crate::tools::qemu_img::check(&src, format))? {
            Ok(_) => {}
            Err(f) if crate::tools::qemu_img::check_ok(f.code) => {}
            Err(f) => bail!("the {format} image is corrupt or truncated: {f}"),
        }
        let raw = tempfile::Builder::new()
            .prefix("kiln-scan-")
            .suffix(".raw")
            .tempfile_in(&self.tmp)
            .with_context(|| format!("creating a temporary file in {}", self.tmp))?;
        let rawp = path_of(&raw)?;
        crate::tools::run(&crate::tools::qemu_img::convert_to_raw(&src, format, &rawp))?;
        let rw = Window::open(&rawp)?;
        let head = rw.head(HEAD)?;
        match sniff(&head, rw.len) {
            Format::Disk => self.disk(chain, rw, depth + 1),
            Format::Ext => self.ext(chain, rw, depth + 1),
            Format::Fat => self.fat(chain, rw, depth + 1),
            Format::Iso => self.iso(chain, rw, depth + 1),
            _ if head.iter().all(|&b| b == 0) => self.leaf(chain, "disk", head, Data::Win(rw)),
            _ => bail!("the {format} disk holds no partition table or file system kiln can read"),
        }
    }
}

fn prefixed<'r>(head: Vec<u8>, data: Data<'r>) -> Box<dyn Read + 'r> {
    let hl = head.len() as u64;
    match data {
        Data::Win(w) => Box::new(Cursor::new(head).chain(w.reader(hl))),
        Data::Stream(r) => Box::new(Cursor::new(head).chain(r)),
    }
}

fn strip_ext<'a>(p: &'a str, ext: &str) -> &'a str {
    p.strip_suffix(ext).unwrap_or(p)
}

fn path_of(t: &tempfile::NamedTempFile) -> Result<Utf8PathBuf> {
    Utf8PathBuf::from_path_buf(t.path().to_path_buf())
        .map_err(|p| anyhow::anyhow!("temporary path {} is not UTF-8", p.display()))
}
