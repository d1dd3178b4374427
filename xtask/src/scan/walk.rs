//! The one walker: opens every container it meets (directories, tars,
//! compressed streams, cpio, ISO 9660, ZIP, partitioned disks, ext2/3/4 and
//! FAT file systems, qemu disk formats), nested to [`MAX_DEPTH`] levels,
//! and hands each member to a [`Visit`]or. It knows formats and nesting;
//! what is done with a member is the visitor's: the secret scan
//! ([`super::secrets`]) applies the rules to each file's bytes, the
//! inventory ([`super::inventory`]) records each member's digest and
//! metadata.
//!
//! Members are named by their levels joined by `!` (`p2!/etc/hostname`,
//! `/demo-disk1.vmdk!p2!/etc/hostname`). Everything streams: a file's bytes
//! are read once, and hashed as they are read when the visitor asks for
//! digests ([`Visit::DETAIL`]); a nested image that needs random access (a
//! disk in an OVA, a qcow2 converted to raw) is copied to a sparse temporary
//! file in the caller's directory, removed when its walk ends. A visitor
//! that can [`Visit::fork`] has an ext file system's files walked on worker
//! threads, its parts merged back in file order, so a result never depends
//! on timing.

use std::io::{Cursor, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};

use super::sniff::{sniff, Format, HEAD};
use super::source::{Runs, Window, HOLE};
use super::{cpio, disk, ext4, iso9660, zip};

/// Archives nested deeper than this are refused (decompression bombs, loops).
const MAX_DEPTH: u32 = 16;
/// Threads that walk one file system's files.
const MAX_WORKERS: usize = 8;

/// Where a member is: the levels above and including it (`chain`, joined
/// by `!` to name it), and its path inside its innermost container
/// (`inner`: what the rules see; a compressed file's content keeps the
/// chain and drops the suffix).
#[derive(Clone)]
pub(super) struct At {
    pub chain: Vec<String>,
    pub inner: String,
}

impl At {
    /// A member of this level, named `name` inside it.
    fn join(&self, name: &str) -> At {
        let mut chain = self.chain.clone();
        chain.push(name.to_string());
        At {
            chain,
            inner: name.to_string(),
        }
    }

    /// Its nested path.
    pub fn path(&self) -> String {
        self.chain.join("!")
    }

    /// How errors name it: its nested path, or the artifact's.
    fn shown(&self) -> String {
        if self.chain.is_empty() {
            self.inner.clone()
        } else {
            self.path()
        }
    }
}

/// A member that is not a regular file.
pub(super) enum Member {
    Dir,
    /// A symbolic or hard link, with its target when [`Visit::DETAIL`].
    Link(Vec<u8>),
    /// A device node, FIFO or socket.
    Other,
}

/// What reading one file found.
pub(super) struct Got {
    /// sha256 of its bytes, when asked for (else empty); a window read in
    /// place or copied out has a [`BLOCKS`] digest.
    pub sha256: String,
    pub size: u64,
    /// The container it is, when kiln opened it.
    pub kind: Option<&'static str>,
}

/// What the walker hands members to.
pub(super) trait Visit: Sized + Send {
    /// Whether the visitor takes every member's record: directories and
    /// special files, link targets, ownership, modes and times, and each
    /// file's sha256 (hashed as the walk reads it). Without it, the walker
    /// does none of that work.
    const DETAIL: bool;
    /// A regular file, before its bytes are read (`meta` when
    /// [`Self::DETAIL`] and the format records any).
    fn file(&mut self, _at: &At, _meta: Option<String>) {}
    /// The file opened last by [`Self::file`] has been read.
    fn done(&mut self, _at: &At, _got: Got) {}
    /// A member that is not a regular file.
    fn member(&mut self, at: &At, member: Member, meta: Option<String>) -> Result<()>;
    /// The bytes of a file that is no container, from the first; what is
    /// not read is read to its end by the walker.
    fn leaf(&mut self, at: &At, r: &mut dyn Read) -> Result<()>;
    /// Content kiln recognises but does not open (`what`, `size` bytes,
    /// with this sha256).
    fn opaque(&mut self, at: &At, what: &str, size: u64, sha256: &str) -> Result<()>;
    /// Bytes where a file system was expected and none kiln reads is (the
    /// reason given): an error to fail closed on, or bytes to list as such.
    fn unreadable(&mut self, why: &str) -> Result<()>;
    /// A gzip, zstd or xz file (`len` bytes when known): its content is
    /// walked by [`Walker::decompress`], which a visitor may wrap.
    fn compressed(
        w: &mut Walker<'_, Self>,
        at: &At,
        fmt: Format,
        _len: Option<u64>,
        raw: Box<dyn Read + '_>,
        depth: u32,
        digest: bool,
    ) -> Result<Got> {
        w.decompress(at, fmt, raw, depth, digest)
    }
    /// An empty visitor for one item of a worker thread (`None`: this
    /// visitor walks on one thread).
    fn fork(&self) -> Option<Self> {
        None
    }
    /// Take in what a forked visitor found (in item order).
    fn merge(&mut self, _part: Self) {}
}

/// Bytes of one file: random access (a window of an image) or a stream.
pub(super) enum Data<'r> {
    Win(Window),
    Stream(Box<dyn Read + 'r>),
}

/// Walk the artifact at `path` (a directory or a file of any supported
/// format) with `v`; temporary copies go to `tmp`. Returns what the
/// artifact is (`None`: a directory or a plain file).
pub(super) fn walk<V: Visit>(
    path: &Utf8Path,
    tmp: &Utf8Path,
    v: &mut V,
) -> Result<Option<&'static str>> {
    let mut w = Walker {
        v,
        tmp,
        parallel: true,
    };
    let at = At {
        chain: Vec::new(),
        inner: path.to_string(),
    };
    let md = std::fs::symlink_metadata(path).with_context(|| format!("reading {path}"))?;
    if md.is_dir() {
        w.dir(&at, path, 0)?;
        return Ok(None);
    }
    if !md.is_file() {
        bail!("{path} is neither a directory nor a regular file");
    }
    if md.len() == 0 {
        bail!("{path} is empty: nothing to scan (a truncated artifact?)");
    }
    let win = Window::open(path)?;
    if sniff(&win.head(HEAD)?, win.len) == Format::Leaf {
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
    // The artifact's own bytes are compared elsewhere: not hashed here.
    Ok(w.blob(&at, Data::Win(win), 0, false)?.kind)
}

/// Walks with one visitor; see the module's documentation.
pub(super) struct Walker<'a, V> {
    pub v: &'a mut V,
    tmp: &'a Utf8Path,
    /// Whether a file system's files may go to worker threads (only the
    /// outermost walker's do: nested images stay on their worker).
    parallel: bool,
}

impl<V: Visit> Walker<'_, V> {
    /// A regular file at `at`: announced, its bytes walked, reported read.
    fn file(&mut self, at: &At, meta: Option<String>, data: Data, depth: u32) -> Result<()> {
        self.v.file(at, meta);
        let got = self.blob(at, data, depth + 1, V::DETAIL)?;
        self.v.done(at, got);
        Ok(())
    }

    fn dir(&mut self, at: &At, root: &Utf8Path, depth: u32) -> Result<()> {
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
            let here = at.join(&norm(rel));
            let ft = e.file_type();
            if ft.is_symlink() {
                let target = match V::DETAIL {
                    true => std::fs::read_link(e.path())?
                        .into_os_string()
                        .into_encoded_bytes(),
                    false => Vec::new(),
                };
                self.v.member(&here, Member::Link(target), None)?;
            } else if ft.is_dir() {
                self.v.member(&here, Member::Dir, None)?;
            } else if ft.is_file() {
                let p = Utf8Path::from_path(e.path()).expect("checked UTF-8");
                let w = Window::open(p)?;
                self.file(&here, None, Data::Win(w), depth)
                    .with_context(|| format!("scanning {p}"))?;
            }
        }
        Ok(())
    }

    /// One file's bytes: opened if a container, else handed to the visitor.
    /// With `digest`, its sha256 is taken as it is read.
    fn blob(&mut self, at: &At, data: Data, depth: u32, digest: bool) -> Result<Got> {
        if depth > MAX_DEPTH {
            bail!(
                "{}: archives nested more than {MAX_DEPTH} levels deep",
                at.path()
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
        let streamed = |kind, (sha256, size)| Got { sha256, size, kind };
        match fmt {
            Format::Leaf => {
                let mut r = Tally::new(prefixed(head, data), digest);
                self.v.leaf(at, &mut r)?;
                Ok(streamed(None, r.finish()?))
            }
            Format::Opaque(kind) => {
                let got = self.opaque(at, &format!("{kind} data"), None, prefixed(head, data))?;
                Ok(streamed(None, got))
            }
            Format::Gzip | Format::Zstd | Format::Xz => {
                V::compressed(self, at, fmt, len, prefixed(head, data), depth, digest)
            }
            Format::Tar => {
                let mut r = Tally::new(prefixed(head, data), digest);
                self.tar(at, &mut r, depth)
                    .with_context(|| format!("reading the tar archive {}", at.shown()))?;
                Ok(streamed(Some("tar archive"), r.finish()?))
            }
            Format::Cpio => {
                let newc = cpio::is_newc(&head);
                let mut r = Tally::new(prefixed(head, data), digest);
                self.cpio(at, &mut r, newc, depth)
                    .with_context(|| format!("reading the cpio archive {}", at.shown()))?;
                Ok(streamed(Some("cpio archive"), r.finish()?))
            }
            Format::Iso
            | Format::Zip
            | Format::Disk
            | Format::Ext
            | Format::Fat
            | Format::Qemu(_) => {
                let (w, sha256, _keep) = self.window(head, data, digest)?;
                let (kind, r) = match fmt {
                    Format::Iso => ("ISO 9660 image", self.iso(at, &w, depth)),
                    Format::Zip => ("ZIP archive", self.zip(at, &w, depth)),
                    Format::Disk => ("partitioned disk", self.disk(at, &w, depth)),
                    Format::Ext => ("ext file system", self.ext(at, &w, depth)),
                    Format::Fat => ("FAT file system", self.fat(at, &w, depth)),
                    Format::Qemu(f) => (
                        match f {
                            "qcow2" => "qcow2 disk",
                            "vmdk" => "VMDK disk",
                            "vhdx" => "VHDX disk",
                            "vdi" => "VDI disk",
                            _ => "virtual disk",
                        },
                        self.qemu(at, &w, f, depth),
                    ),
                    _ => unreachable!(),
                };
                let what = match fmt {
                    Format::Disk => "disk image".to_string(),
                    Format::Qemu(f) => format!("{f} disk image"),
                    _ => kind.to_string(),
                };
                r.with_context(|| format!("reading the {what} {}", at.shown()))?;
                Ok(Got {
                    sha256,
                    size: w.len,
                    kind: Some(kind),
                })
            }
        }
    }

    /// Content not opened: hashed whole and handed to the visitor, named
    /// `what` and sized `size` (default: the bytes read).
    fn opaque(
        &mut self,
        at: &At,
        what: &str,
        size: Option<u64>,
        r: impl Read,
    ) -> Result<(String, u64)> {
        let (sha256, n) = Tally::new(r, true).finish()?;
        self.v.opaque(at, what, size.unwrap_or(n), &sha256)?;
        Ok((sha256, n))
    }

    /// Random access for a blob: its window, or a temporary copy of a
    /// stream (removed when the guard drops); with `digest`, its
    /// [`BLOCKS`] digest (a window's data runs are read once more for it).
    fn window(
        &mut self,
        head: Vec<u8>,
        data: Data,
        digest: bool,
    ) -> Result<(Window, String, Option<tempfile::NamedTempFile>)> {
        match data {
            Data::Win(w) => {
                let sha = if digest {
                    window_blocks(&w)?
                } else {
                    String::new()
                };
                Ok((w, sha, None))
            }
            Data::Stream(r) => {
                let mut t = tempfile::NamedTempFile::new_in(self.tmp)
                    .with_context(|| format!("creating a temporary file in {}", self.tmp))?;
                let mut src = BlockHashing {
                    inner: Cursor::new(head).chain(r),
                    b: digest.then(Blocks::new),
                    n: 0,
                };
                crate::fsutil::copy_sparse(&mut src, t.as_file_mut())
                    .context("copying a nested image to a temporary file")?;
                let sha = src.b.map(|b| b.finish(src.n)).unwrap_or_default();
                let w = Window::from_file(t.reopen()?, Some(path_of(&t)?))?;
                Ok((w, sha, Some(t)))
            }
        }
    }

    /// A gzip, zstd or xz stream: its content walked under the name
    /// without the suffix; the compressed bytes hashed with `digest`.
    pub fn decompress(
        &mut self,
        at: &At,
        fmt: Format,
        raw: Box<dyn Read + '_>,
        depth: u32,
        digest: bool,
    ) -> Result<Got> {
        let content = |ext: &str| At {
            chain: at.chain.clone(),
            inner: at.inner.strip_suffix(ext).unwrap_or(&at.inner).to_string(),
        };
        let mut raw = Tally::new(raw, digest);
        let kind = match fmt {
            Format::Gzip => {
                let mut r = flate2::read::MultiGzDecoder::new(&mut raw);
                self.blob(
                    &content(".gz"),
                    Data::Stream(Box::new(&mut r)),
                    depth + 1,
                    false,
                )
                .with_context(|| format!("reading the gzip stream {}", at.shown()))?;
                std::io::copy(&mut r, &mut std::io::sink())?;
                "gzip stream"
            }
            Format::Zstd => {
                let mut r = zstd::stream::read::Decoder::new(&mut raw)?;
                self.blob(
                    &content(".zst"),
                    Data::Stream(Box::new(&mut r)),
                    depth + 1,
                    false,
                )
                .with_context(|| format!("reading the zstd stream {}", at.shown()))?;
                std::io::copy(&mut r, &mut std::io::sink())?;
                "zstd stream"
            }
            Format::Xz => {
                let t = tempfile::NamedTempFile::new_in(self.tmp)
                    .with_context(|| format!("creating a temporary file in {}", self.tmp))?;
                let mut src = std::io::BufReader::new(&mut raw);
                let mut dst = std::io::BufWriter::new(t.as_file());
                lzma_rs::xz_decompress(&mut src, &mut dst).map_err(|e| {
                    anyhow::anyhow!("corrupt or truncated xz stream {}: {e:?}", at.shown())
                })?;
                drop(dst);
                let w = Window::from_file(t.reopen()?, Some(path_of(&t)?))?;
                self.blob(&content(".xz"), Data::Win(w), depth + 1, false)?;
                "xz stream"
            }
            _ => unreachable!("decompress is called for compressed formats"),
        };
        let (sha256, size) = raw.finish()?;
        Ok(Got {
            sha256,
            size,
            kind: Some(kind),
        })
    }

    fn tar<R: Read>(&mut self, at: &At, src: &mut Tally<R>, depth: u32) -> Result<()> {
        let mut ar = tar::Archive::new(&mut *src);
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
            let here = at.join(&inner);
            let h = e.header();
            let m = V::DETAIL.then(|| {
                meta(
                    h.mode().unwrap_or(0),
                    h.uid().unwrap_or(0),
                    h.gid().unwrap_or(0),
                    h.mtime().unwrap_or(0) as i64,
                )
            });
            let et = h.entry_type();
            if et.is_file() || et == tar::EntryType::Continuous || et == tar::EntryType::GNUSparse {
                let size = e.size();
                let mut c = Tally::new(&mut e, false);
                self.file(&here, m, Data::Stream(Box::new(&mut c)), depth)?;
                std::io::copy(&mut c, &mut std::io::sink())?;
                if c.n != size {
                    bail!("truncated tar archive: {inner} should hold {size} bytes, only {} are there", c.n);
                }
            } else if et.is_symlink() || et.is_hard_link() {
                let target = match V::DETAIL {
                    true => e.link_name_bytes().map(|t| t.into_owned()),
                    false => None,
                };
                let link = if et.is_hard_link() {
                    "hard link"
                } else {
                    "symlink"
                };
                let m = m.map(|m| format!("{link} {m}"));
                self.v
                    .member(&here, Member::Link(target.unwrap_or_default()), m)?;
            } else if et.is_dir() {
                self.v.member(&here, Member::Dir, m)?;
            } else {
                self.v.member(&here, Member::Other, m)?;
            }
        }
        if src.eof {
            bail!("truncated tar archive: it ends without an end-of-archive marker");
        }
        Ok(())
    }

    fn cpio(&mut self, at: &At, mut r: &mut dyn Read, newc: bool, depth: u32) -> Result<()> {
        let mut pos = 0u64;
        while let Some(h) = cpio::next(&mut r, &mut pos)? {
            crate::signals::check()?;
            let inner = norm(&h.name);
            let here = at.join(&inner);
            let m = V::DETAIL.then(|| format!("mode {:o}", h.mode));
            let mut c = Tally::new((&mut r).take(h.size), false);
            match h.mode & 0o170000 {
                _ if inner == "/" => {}
                0o100000 => self.file(&here, m, Data::Stream(Box::new(&mut c)), depth)?,
                0o120000 => {
                    let mut target = Vec::new();
                    if V::DETAIL {
                        c.read_to_end(&mut target)?;
                    }
                    self.v.member(&here, Member::Link(target), m)?;
                }
                0o040000 => self.v.member(&here, Member::Dir, m)?,
                _ => self.v.member(&here, Member::Other, m)?,
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
        // Concatenated archives (early microcode, then the main initramfs):
        // past the padding, what follows is walked as more members.
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = r.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            if let Some(i) = chunk[..n].iter().position(|&b| b != 0) {
                let rest = Cursor::new(chunk[i..n].to_vec()).chain(r);
                self.blob(at, Data::Stream(Box::new(rest)), depth + 1, false)?;
                return Ok(());
            }
        }
    }

    fn iso(&mut self, at: &At, w: &Window, depth: u32) -> Result<()> {
        let iso = iso9660::Iso::open(w.clone())?;
        iso.walk(|e| {
            let here = at.join(&e.path);
            match e.kind {
                iso9660::Kind::Symlink => self.v.member(&here, Member::Link(Vec::new()), None),
                iso9660::Kind::File(runs) => {
                    let data = if runs.len() == 1 {
                        Data::Win(w.sub(runs[0].0, runs[0].1)?)
                    } else {
                        Data::Stream(Box::new(Runs::new(w.clone(), runs)))
                    };
                    self.file(&here, None, data, depth)
                }
            }
        })?;
        // Partitions appended after the ISO file system (a hybrid ISO's EFI image).
        let head = w.head(HEAD)?;
        if disk::is_gpt(&head) || disk::is_mbr(&head, w.len) {
            for p in disk::partitions(w)? {
                if p.start >= iso.volume_bytes {
                    self.partition(at, w, &p, depth)?;
                }
            }
        }
        Ok(())
    }

    fn zip(&mut self, at: &At, w: &Window, depth: u32) -> Result<()> {
        for m in zip::members(w)? {
            crate::signals::check()?;
            let inner = norm(&m.name);
            let here = at.join(&inner);
            if m.dir {
                self.v.member(&here, Member::Dir, None)?;
                continue;
            }
            let raw = w.sub(m.data.0, m.data.1)?;
            if m.encrypted || !matches!(m.method, 0 | 8) {
                let what = if m.encrypted {
                    "encrypted ZIP member".to_string()
                } else {
                    format!("ZIP member (method {})", m.method)
                };
                self.v.file(&here, None);
                let (sha256, size) = self.opaque(&here, &what, Some(m.size), raw.reader(0))?;
                let kind = None;
                self.v.done(&here, Got { sha256, size, kind });
                continue;
            }
            let mut c = if m.method == 0 {
                Tally::new(Box::new(raw.reader(0)) as Box<dyn Read>, false)
            } else {
                let r = flate2::read::DeflateDecoder::new(raw.reader(0));
                Tally::new(Box::new(r) as Box<dyn Read>, false)
            };
            self.file(&here, None, Data::Stream(Box::new(&mut c)), depth)?;
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

    fn disk(&mut self, at: &At, w: &Window, depth: u32) -> Result<()> {
        for p in disk::partitions(w)? {
            self.partition(at, w, &p, depth)?;
        }
        Ok(())
    }

    /// A partition, named `p<N>`: its file system, or (BIOS boot, swap,
    /// zeros) its bytes.
    fn partition(&mut self, at: &At, w: &Window, p: &disk::Partition, depth: u32) -> Result<()> {
        let ctx = || {
            format!(
                "partition {} (type {}) at offset {}",
                p.index, p.kind, p.start
            )
        };
        let pw = w
            .sub(p.start, p.len)
            .with_context(|| format!("partition {} (type {})", p.index, p.kind))?;
        let here = at.join(&format!("p{}", p.index));
        let head = pw.head(HEAD)?;
        let swap = head.len() >= 4096
            && (&head[4086..4096] == b"SWAPSPACE2" || &head[4086..4096] == b"SWAP-SPACE");
        let empty = head.iter().all(|&b| b == 0);
        if sniff(&head, pw.len) == Format::Leaf
            && !(p.kind == crate::qcow2::gpt::TYPE_BIOS_BOOT || swap || empty)
        {
            self.v
                .unreadable(
                    "no file system kiln can read (ext2/3/4, FAT, ISO 9660): it cannot be proven clean",
                )
                .with_context(ctx)?;
        }
        let m = V::DETAIL.then(|| format!("type {} at byte {}, {} bytes", p.kind, p.start, p.len));
        self.file(&here, m, Data::Win(pw), depth).with_context(ctx)
    }

    fn ext(&mut self, at: &At, w: &Window, depth: u32) -> Result<()> {
        let fs = ext4::Fs::open(w.clone())?;
        let mut items = Vec::new();
        fs.walk(|path, ino, is_dir| {
            if V::DETAIL || !is_dir {
                items.push((path.to_string(), ino, is_dir));
            }
            Ok(())
        })?;
        self.each(&items, |wk, (path, ino, is_dir)| {
            let here = at.join(path);
            let m = match V::DETAIL {
                true => {
                    let md = fs.meta(*ino).with_context(|| format!("reading {path}"))?;
                    Some(meta(md.mode, md.uid as u64, md.gid as u64, md.mtime))
                }
                false => None,
            };
            if *is_dir {
                return wk.v.member(&here, Member::Dir, m);
            }
            match fs.node(*ino).with_context(|| format!("reading {path}"))? {
                ext4::Node::File { runs, size, inline } => {
                    let data = match inline {
                        Some(b) => Data::Stream(Box::new(Cursor::new(b))),
                        None if runs.len() == 1 && runs[0].1 == size && runs[0].0 != HOLE => {
                            Data::Win(w.sub(runs[0].0, size)?)
                        }
                        None => Data::Stream(Box::new(Runs::new(w.clone(), runs))),
                    };
                    wk.file(&here, m, data, depth)
                        .with_context(|| format!("scanning {path}"))
                }
                ext4::Node::Symlink => {
                    let target = match V::DETAIL {
                        true => fs
                            .link_target(*ino)
                            .with_context(|| format!("reading the link {path}"))?,
                        false => Vec::new(),
                    };
                    wk.v.member(&here, Member::Link(target), m)
                }
                ext4::Node::Other => wk.v.member(&here, Member::Other, m),
            }
        })
    }

    /// Run `f` on every item: on worker threads, each item with a visitor
    /// of its own, when this is the outermost walker and its visitor
    /// forks. The parts are merged in item order, so results do not depend
    /// on thread timing; the first failing item (in item order) is the
    /// error.
    fn each<T: Sync>(
        &mut self,
        items: &[T],
        f: impl Fn(&mut Walker<V>, &T) -> Result<()> + Sync,
    ) -> Result<()> {
        // A scan worker holds up to TEXT_LIMIT (16 MiB) of one file: cap the
        // count so a many-core host does not turn that into gigabytes.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS)
            .min(items.len());
        let proto = match self.parallel && workers >= 2 {
            true => self.v.fork(),
            false => None,
        };
        let Some(proto) = proto else {
            return items.iter().try_for_each(|it| f(self, it));
        };
        let (next, stop, tmp) = (AtomicUsize::new(0), AtomicBool::new(false), self.tmp);
        type Done<V> = (Vec<(usize, V)>, Option<(usize, anyhow::Error)>);
        let done: Vec<Done<V>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let proto = proto.fork().expect("a visitor that forks forks again");
                    let (next, stop, f) = (&next, &stop, &f);
                    s.spawn(move || {
                        let (mut found, mut err) = (Vec::new(), None);
                        while !stop.load(Ordering::Relaxed) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(it) = items.get(i) else { break };
                            let mut part = proto.fork().expect("a visitor that forks forks again");
                            let mut wk = Walker {
                                v: &mut part,
                                tmp,
                                parallel: false,
                            };
                            let r = f(&mut wk, it);
                            found.push((i, part));
                            if let Err(e) = r {
                                stop.store(true, Ordering::Relaxed);
                                err = Some((i, e));
                                break;
                            }
                        }
                        (found, err)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("walk worker panicked"))
                .collect()
        });
        let mut found = Vec::new();
        let mut first_err: Option<(usize, anyhow::Error)> = None;
        for (f, err) in done {
            found.extend(f);
            if let Some((i, e)) = err {
                if first_err.as_ref().is_none_or(|(j, _)| i < *j) {
                    first_err = Some((i, e));
                }
            }
        }
        found.sort_by_key(|(i, _)| *i);
        for (_, part) in found {
            self.v.merge(part);
        }
        match first_err {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// A temporary copy of `w`, for a tool that needs a whole file.
    fn copy(&mut self, w: &Window) -> Result<(Utf8PathBuf, Option<tempfile::NamedTempFile>)> {
        let (w2, _, keep) = self.window(Vec::new(), Data::Stream(Box::new(w.reader(0))), false)?;
        Ok((w2.path.clone().expect("temporary copies have a path"), keep))
    }

    /// FAT: its files copied out with mtools into a temporary directory,
    /// then walked as one (FAT's times are not recorded: mtools sets its own).
    fn fat(&mut self, at: &At, w: &Window, depth: u32) -> Result<()> {
        let (base, off, keep) = match w.base() {
            Some((p, off)) => (p, off, None),
            None => {
                let (p, keep) = self.copy(w)?;
                (p, 0, keep)
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("kiln-walk-fat-")
            .tempdir_in(self.tmp)
            .with_context(|| format!("creating a temporary directory in {}", self.tmp))?;
        let d = Utf8Path::from_path(dir.path()).context("temporary directory is not UTF-8")?;
        crate::tools::run(&crate::tools::mtools::extract_all(&base, off, d))?;
        drop(keep);
        self.dir(at, d, depth)
    }

    /// A qcow2/VMDK/…: checked, converted to a sparse raw file, then read as
    /// the disk or file system it holds; its members stay under its own path.
    fn qemu(&mut self, at: &At, w: &Window, format: &str, depth: u32) -> Result<()> {
        let (src, keep) = match &w.path {
            Some(p) => (p.clone(), None),
            None => self.copy(w)?,
        };
        match crate::tools::run_unchecked(&crate::tools::qemu_img::check(&src, format))? {
            Ok(_) => {}
            Err(f) if crate::tools::qemu_img::check_ok(f.code) => {}
            Err(f) => bail!("the {format} image is corrupt or truncated: {f}"),
        }
        let raw = tempfile::Builder::new()
            .prefix("kiln-walk-")
            .suffix(".raw")
            .tempfile_in(self.tmp)
            .with_context(|| format!("creating a temporary file in {}", self.tmp))?;
        let rawp = path_of(&raw)?;
        crate::tools::run(&crate::tools::qemu_img::convert_to_raw(&src, format, &rawp))?;
        drop(keep);
        let rw = Window::open(&rawp)?;
        let head = rw.head(HEAD)?;
        match sniff(&head, rw.len) {
            Format::Disk => self.disk(at, &rw, depth + 1),
            Format::Ext => self.ext(at, &rw, depth + 1),
            Format::Fat => self.fat(at, &rw, depth + 1),
            Format::Iso => self.iso(at, &rw, depth + 1),
            _ => {
                if !head.iter().all(|&b| b == 0) {
                    self.v.unreadable(&format!(
                        "the {format} disk holds no partition table or file system kiln can read"
                    ))?;
                }
                // Its raw bytes, as one member.
                self.file(&at.join("disk"), None, Data::Win(rw), depth)
            }
        }
    }
}

/// `./etc/x`, `etc/x`, `/etc/x` → `/etc/x`.
fn norm(p: &str) -> String {
    let t = p
        .trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/');
    format!("/{t}")
}

/// What a format records besides the bytes (tar, cpio, ext).
fn meta(mode: u32, uid: u64, gid: u64, mtime: i64) -> String {
    format!("mode {mode:o} uid {uid} gid {gid} mtime {mtime}")
}

fn prefixed<'r>(head: Vec<u8>, data: Data<'r>) -> Box<dyn Read + 'r> {
    let hl = head.len() as u64;
    match data {
        Data::Win(w) => Box::new(Cursor::new(head).chain(w.reader(hl))),
        Data::Stream(r) => Box::new(Cursor::new(head).chain(r)),
    }
}

fn path_of(t: &tempfile::NamedTempFile) -> Result<Utf8PathBuf> {
    Utf8PathBuf::from_path_buf(t.path().to_path_buf())
        .map_err(|p| anyhow::anyhow!("temporary path {} is not UTF-8", p.display()))
}

/// Counts what is read through it (and hashes it, when asked); flags a
/// read that hit the end of its input.
struct Tally<R> {
    inner: R,
    h: Option<Sha256>,
    n: u64,
    eof: bool,
}

impl<R: Read> Read for Tally<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        if let Some(h) = &mut self.h {
            h.update(&buf[..n]);
        }
        self.n += n as u64;
        Ok(n)
    }
}

impl<R: Read> Tally<R> {
    fn new(inner: R, hash: bool) -> Tally<R> {
        Tally {
            inner,
            h: hash.then(Sha256::new),
            n: 0,
            eof: false,
        }
    }

    /// Read what is left, then the sha256 (empty when not hashing) and the
    /// count of every byte.
    fn finish(mut self) -> Result<(String, u64)> {
        std::io::copy(&mut self, &mut std::io::sink()).context("reading to the end")?;
        Ok((
            self.h
                .map(|h| hex::encode(h.finalize()))
                .unwrap_or_default(),
            self.n,
        ))
    }
}

/// Marks a digest of non-zero blocks: a disk, partition or file system
/// read in place (where most bytes are often holes) is hashed as its
/// non-zero 4 KiB blocks with their offsets, so that equal bytes give
/// equal digests however sparse the file beneath, and holes are not read.
pub const BLOCKS: &str = "blocks:";

/// Block size of [`BLOCKS`] digests.
const BLOCK: usize = 4096;

/// A [`BLOCKS`] digest: sha256 over each non-zero [`BLOCK`]-byte block's
/// offset and bytes, then the length. Blocks are counted from the start of
/// what is hashed, wherever the bytes come from.
struct Blocks {
    h: Sha256,
    /// Offset of `part`'s first byte.
    at: u64,
    part: Vec<u8>,
}

impl Blocks {
    fn new() -> Blocks {
        Blocks {
            h: Sha256::new(),
            at: 0,
            part: Vec::with_capacity(BLOCK),
        }
    }
    /// Hash bytes that start at `at` (a multiple of [`BLOCK`] past the
    /// end of what was hashed; the blocks skipped are zeros).
    fn skip_to(&mut self, at: u64) {
        debug_assert!(self.part.is_empty() && at.is_multiple_of(BLOCK as u64) && at >= self.at);
        self.at = at;
    }
    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = (BLOCK - self.part.len()).min(bytes.len());
            self.part.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.part.len() == BLOCK {
                self.block();
            }
        }
    }
    fn block(&mut self) {
        if self.part.iter().any(|&b| b != 0) {
            self.h.update(self.at.to_le_bytes());
            self.h.update(&self.part);
        }
        self.at += self.part.len() as u64;
        self.part.clear();
    }
    fn finish(mut self, len: u64) -> String {
        if !self.part.is_empty() {
            self.block();
        }
        self.h.update(len.to_le_bytes());
        format!("{BLOCKS}{}", hex::encode(self.h.finalize()))
    }
}

/// The [`BLOCKS`] digest of a window, reading only its data runs.
fn window_blocks(w: &Window) -> Result<String> {
    let mut b = Blocks::new();
    let mut buf = vec![0u8; 1 << 20];
    let block = BLOCK as u64;
    for (off, len) in w.data_runs() {
        // Whole blocks: from the block holding `off` (or where the last
        // run's blocks ended) to the end of the block holding its end.
        let from = (off / block * block).max(b.at);
        let to = (off + len).div_ceil(block).saturating_mul(block).min(w.len);
        if from >= to {
            continue;
        }
        b.skip_to(from);
        let mut pos = from;
        while pos < to {
            crate::signals::check()?;
            let n = ((to - pos) as usize).min(buf.len());
            w.read_at(pos, &mut buf[..n])?;
            b.update(&buf[..n]);
            pos += n as u64;
        }
    }
    Ok(b.finish(w.len))
}

/// Feeds what is read through it to a [`Blocks`] digest, when there is one.
struct BlockHashing<R> {
    inner: R,
    b: Option<Blocks>,
    n: u64,
}

impl<R: Read> Read for BlockHashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &mut self.b {
            b.update(&buf[..n]);
        }
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_digests_are_the_same_for_the_same_bytes_however_sparse() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        // 1 MiB: data at 8 KiB and at 600 KiB, zeros elsewhere; written
        // once with holes, once with every zero written out.
        let mut bytes = vec![0u8; 1 << 20];
        bytes[8192..8200].copy_from_slice(b"kiln-abc");
        bytes[600 << 10] = 1;
        let sparse = dir.join("sparse");
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::File::create(&sparse).unwrap();
            f.set_len(1 << 20).unwrap();
            f.seek(SeekFrom::Start(8192)).unwrap();
            f.write_all(b"kiln-abc").unwrap();
            f.seek(SeekFrom::Start(600 << 10)).unwrap();
            f.write_all(&[1]).unwrap();
        }
        let dense = dir.join("dense");
        std::fs::write(&dense, &bytes).unwrap();
        let of = |p: &Utf8Path| window_blocks(&Window::open(p).unwrap()).unwrap();
        let mut streamed = Blocks::new();
        for c in bytes.chunks(1000) {
            streamed.update(c);
        }
        let want = streamed.finish(bytes.len() as u64);
        assert!(want.starts_with(BLOCKS));
        assert_eq!(of(&sparse), want);
        assert_eq!(of(&dense), want);
        // A window that does not start at a block of its file.
        let w = Window::open(&dense).unwrap().sub(8000, 4000).unwrap();
        let mut part = Blocks::new();
        part.update(&bytes[8000..12000]);
        assert_eq!(window_blocks(&w).unwrap(), part.finish(4000));
        bytes[700 << 10] = 2;
        std::fs::write(&dense, &bytes).unwrap();
        assert_ne!(of(&dense), want);
    }
}
