//! An artifact's inventory: every file at every nesting level, with its
//! size, its sha256 and, where the format records them, its ownership,
//! permissions and modification time. It opens what the scan opens, with the
//! scan's readers: tar (plain, gzip, zstd, xz), cpio, ISO 9660 (and the
//! partitions appended to a hybrid ISO), ZIP, partitioned disks (GPT/MBR),
//! ext2/3/4 ([`super::ext4`]), FAT (through mtools), qcow2/VMDK (through
//! `qemu-img`), nested to any depth the scan allows. Entries are named as the
//! scan names findings: levels joined by `!` (`p2!/etc/hostname`,
//! `/demo-disk1.vmdk!p2!/etc/hostname`).
//!
//! `cargo xtask release --check-reproducible` takes the inventories of two
//! builds of an artifact that differ and [`diff`]s them, to name the file
//! that differs. Everything streams: a file's bytes are hashed as they are
//! read and never held; a nested image that needs random access (a disk in
//! an OVA, a qcow2 converted to raw) is copied to a sparse temporary file in
//! the directory the caller gives, removed when its walk ends.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};

use super::source::{sniff, Format, Runs, Window, HEAD, HOLE};
use super::{cpio, disk, ext4, iso9660, zip};

/// Containers nested deeper than this are refused (as the scan does).
const MAX_DEPTH: u32 = 16;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A file whose bytes were hashed.
    File,
    /// A file kiln opened (its kind): its own bytes are hashed, and its
    /// members are entries of their own, under its path.
    Container(&'static str),
    Dir,
    /// A symbolic or hard link: its target is hashed.
    Link,
    /// A device node, FIFO or socket: only its metadata is recorded.
    Other,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Container(k) => k,
            Kind::Dir => "directory",
            Kind::Link => "link",
            Kind::Other => "special file",
        }
    }
}

/// One member of an artifact, at any nesting level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its nested path: levels joined by `!`; a partition is `p<N>`.
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    /// sha256 of its bytes (a link's: of its target; a directory: empty).
    /// A disk, partition or file system read in place (where most bytes
    /// are often holes) has a [`BLOCKS`] digest instead: of its non-zero
    /// 4 KiB blocks with their offsets, so that equal bytes give equal
    /// digests however sparse the file beneath, and holes are not read.
    pub sha256: String,
    /// What its container records besides the bytes, where it does (tar,
    /// cpio, ext: `mode 100644 uid 0 gid 0 mtime 1700000000`; a partition:
    /// its type and place on the disk).
    pub meta: Option<String>,
}

/// Marks a digest of non-zero blocks (see [`Entry::sha256`]).
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

/// Feeds what is read through it to a [`Blocks`] digest.
struct BlockHashing<R> {
    inner: R,
    b: Blocks,
    n: u64,
}

impl<R: Read> Read for BlockHashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.b.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// The inventory of one artifact.
#[derive(Debug)]
pub struct Inventory {
    /// What the artifact itself is (`None`: a plain file, nothing inside).
    pub kind: Option<&'static str>,
    /// Every member, in walk order (sorted names, containers before their
    /// members).
    pub entries: Vec<Entry>,
}

/// The inventory of the artifact at `path`; temporary copies go to `tmp`.
pub fn inventory(path: &Utf8Path, tmp: &Utf8Path) -> Result<Inventory> {
    let mut inv = Walk {
        tmp: tmp.to_owned(),
        entries: Vec::new(),
    };
    let w = Window::open(path)?;
    let (_, _, kind) = inv
        .content(&[], Data::Win(w), false, 0)
        .with_context(|| format!("listing the contents of {path}"))?;
    Ok(Inventory {
        kind,
        entries: inv.entries,
    })
}

/// How one entry differs between two inventories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Other bytes (size and sha256 on each side).
    Content { a: (u64, String), b: (u64, String) },
    /// The same bytes, other metadata.
    Meta { a: String, b: String },
    /// A file on one side, a directory or link on the other.
    Kind { a: Kind, b: Kind },
    /// Only in the first inventory.
    OnlyA,
    /// Only in the second inventory.
    OnlyB,
}

/// One entry that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub what: What,
}

/// Every entry that differs between `a` and `b`: those of `a` in its walk
/// order, then those only in `b`, in its order. A path met twice in one
/// inventory (two concatenated cpio archives naming the same file) is
/// matched by occurrence.
pub fn diff(a: &[Entry], b: &[Entry]) -> Vec<Change> {
    let keyed = |v: &[Entry]| -> Vec<(String, usize)> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        v.iter()
            .enumerate()
            .map(|(i, e)| {
                let n = seen.entry(e.path.as_str()).or_insert(0);
                *n += 1;
                let key = if *n == 1 {
                    e.path.clone()
                } else {
                    format!("{} ({})", e.path, n)
                };
                (key, i)
            })
            .collect()
    };
    let (ka, kb) = (keyed(a), keyed(b));
    let in_b: HashMap<&str, usize> = kb.iter().map(|(k, i)| (k.as_str(), *i)).collect();
    let in_a: HashMap<&str, usize> = ka.iter().map(|(k, i)| (k.as_str(), *i)).collect();
    let mut out = Vec::new();
    for (key, i) in &ka {
        let ea = &a[*i];
        let Some(&j) = in_b.get(key.as_str()) else {
            out.push(Change {
                path: key.clone(),
                what: What::OnlyA,
            });
            continue;
        };
        let eb = &b[j];
        let what = if !same_kind(ea.kind, eb.kind) {
            What::Kind {
                a: ea.kind,
                b: eb.kind,
            }
        } else if ea.sha256 != eb.sha256 || ea.size != eb.size {
            What::Content {
                a: (ea.size, ea.sha256.clone()),
                b: (eb.size, eb.sha256.clone()),
            }
        } else if ea.meta != eb.meta {
            What::Meta {
                a: ea.meta.clone().unwrap_or_default(),
                b: eb.meta.clone().unwrap_or_default(),
            }
        } else {
            continue;
        };
        out.push(Change {
            path: key.clone(),
            what,
        });
    }
    for (key, _) in &kb {
        if !in_a.contains_key(key.as_str()) {
            out.push(Change {
                path: key.clone(),
                what: What::OnlyB,
            });
        }
    }
    out
}

/// A file and a container are the same kind of entry: the same name read
/// as a tar on one side and as plain bytes on the other differs in content.
fn same_kind(a: Kind, b: Kind) -> bool {
    let file = |k| matches!(k, Kind::File | Kind::Container(_));
    a == b || file(a) && file(b)
}

/// The difference to name first: the first change in order, then, while a
/// change lies inside it (its path continues with `!`), the first of those;
/// so a disk whose partition differs because one file in it does names the
/// file, and a container that differs while all its members are the same
/// is named itself.
pub fn first(changes: &[Change]) -> Option<&Change> {
    let mut cur = changes.first()?;
    loop {
        let inside = format!("{}!", cur.path);
        match changes.iter().find(|c| c.path.starts_with(&inside)) {
            Some(c) => cur = c,
            None => return Some(cur),
        }
    }
}

/// The levels of `path` as a reader would say them: each level with what
/// it is (`partition 2 (ext file system) → /etc/hostname`), from the entries
/// of its inventory.
pub fn describe(path: &str, entries: &[Entry]) -> String {
    let kinds: HashMap<&str, Kind> = entries.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    let mut parts = Vec::new();
    let mut prefix = String::new();
    for level in path.split('!') {
        if !prefix.is_empty() {
            prefix.push('!');
        }
        prefix.push_str(level);
        let name = match level.strip_prefix('p') {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                format!("partition {n}")
            }
            _ => level.to_string(),
        };
        parts.push(match kinds.get(prefix.as_str()) {
            Some(Kind::Container(k)) => format!("{name} ({k})"),
            _ => name,
        });
    }
    parts.join(" → ")
}

/// Bytes of one entry: random access (a window of an image) or a stream.
enum Data<'r> {
    Win(Window),
    Stream(Box<dyn Read + 'r>),
}

/// Hashes and counts what is read through it.
struct Hashing<R> {
    inner: R,
    h: Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.h.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            h: Sha256::new(),
            n: 0,
        }
    }
    /// Read what is left, then the sha256 and the count of every byte.
    fn finish(mut self) -> Result<(String, u64)> {
        std::io::copy(&mut self, &mut std::io::sink()).context("reading to the end")?;
        Ok((hex::encode(self.h.finalize()), self.n))
    }
}

fn join(chain: &[String], next: &str) -> Vec<String> {
    let mut c = chain.to_vec();
    c.push(next.to_string());
    c
}

/// `./etc/x`, `etc/x`, `/etc/x` → `/etc/x` (as the scan names paths).
fn norm(p: &str) -> String {
    let t = p
        .trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/');
    format!("/{t}")
}

fn prefixed<'r>(head: Vec<u8>, data: Data<'r>) -> Box<dyn Read + 'r> {
    let hl = head.len() as u64;
    match data {
        Data::Win(w) => Box::new(Cursor::new(head).chain(w.reader(hl))),
        Data::Stream(r) => Box::new(Cursor::new(head).chain(r)),
    }
}

fn meta(mode: u32, uid: u64, gid: u64, mtime: i64) -> String {
    format!("mode {mode:o} uid {uid} gid {gid} mtime {mtime}")
}

fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn path_of(t: &tempfile::NamedTempFile) -> Result<Utf8PathBuf> {
    Utf8PathBuf::from_path_buf(t.path().to_path_buf())
        .map_err(|p| anyhow::anyhow!("temporary path {} is not UTF-8", p.display()))
}

struct Walk {
    tmp: Utf8PathBuf,
    entries: Vec<Entry>,
}

impl Walk {
    fn push(&mut self, chain: &[String], kind: Kind, bytes: &[u8], meta: Option<String>) {
        self.entries.push(Entry {
            path: chain.join("!"),
            kind,
            size: bytes.len() as u64,
            sha256: if kind == Kind::Dir || kind == Kind::Other {
                String::new()
            } else {
                digest_of(bytes)
            },
            meta,
        });
    }

    /// A file at `chain`: its entry, then (for a container) its members.
    fn file(
        &mut self,
        chain: &[String],
        data: Data,
        meta: Option<String>,
        depth: u32,
    ) -> Result<()> {
        let at = self.entries.len();
        self.entries.push(Entry {
            path: chain.join("!"),
            kind: Kind::File,
            size: 0,
            sha256: String::new(),
            meta,
        });
        let (sha256, size, kind) = self
            .content(chain, data, true, depth + 1)
            .with_context(|| format!("reading {}", chain.join("!")))?;
        let e = &mut self.entries[at];
        e.sha256 = sha256;
        e.size = size;
        if let Some(k) = kind {
            e.kind = Kind::Container(k);
        }
        Ok(())
    }

    /// Hash `data` (skipped for a window when not `digest`: the artifact
    /// itself, compared byte for byte elsewhere) and list its members when
    /// it is a container; returns its sha256, size and container kind.
    fn content(
        &mut self,
        chain: &[String],
        data: Data,
        digest: bool,
        depth: u32,
    ) -> Result<(String, u64, Option<&'static str>)> {
        if depth > MAX_DEPTH {
            bail!("containers nested more than {MAX_DEPTH} levels deep");
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
        match fmt {
            Format::Leaf | Format::Opaque(_) => {
                let (sha, n) = Hashing::new(prefixed(head, data)).finish()?;
                Ok((sha, n, None))
            }
            Format::Gzip | Format::Zstd | Format::Xz => {
                let mut raw = Hashing::new(prefixed(head, data));
                let kind = match fmt {
                    Format::Gzip => {
                        let mut r = flate2::read::MultiGzDecoder::new(&mut raw);
                        self.content(chain, Data::Stream(Box::new(&mut r)), false, depth + 1)?;
                        std::io::copy(&mut r, &mut std::io::sink())?;
                        "gzip stream"
                    }
                    Format::Zstd => {
                        let mut r = zstd::stream::read::Decoder::new(&mut raw)?;
                        self.content(chain, Data::Stream(Box::new(&mut r)), false, depth + 1)?;
                        std::io::copy(&mut r, &mut std::io::sink())?;
                        "zstd stream"
                    }
                    _ => {
                        let t = tempfile::NamedTempFile::new_in(&self.tmp).with_context(|| {
                            format!("creating a temporary file in {}", self.tmp)
                        })?;
                        let mut src = std::io::BufReader::new(&mut raw);
                        let mut dst = std::io::BufWriter::new(t.as_file());
                        lzma_rs::xz_decompress(&mut src, &mut dst).map_err(|e| {
                            anyhow::anyhow!("corrupt or truncated xz stream: {e:?}")
                        })?;
                        drop(dst);
                        let w = Window::from_file(t.reopen()?, Some(path_of(&t)?))?;
                        self.content(chain, Data::Win(w), false, depth + 1)?;
                        "xz stream"
                    }
                };
                let (sha, n) = raw.finish()?;
                Ok((sha, n, Some(kind)))
            }
            Format::Tar => {
                let mut raw = Hashing::new(prefixed(head, data));
                self.tar(chain, &mut raw, depth)
                    .context("reading a tar archive")?;
                let (sha, n) = raw.finish()?;
                Ok((sha, n, Some("tar archive")))
            }
            Format::Cpio => {
                let newc = cpio::is_newc(&head);
                let mut raw = Hashing::new(prefixed(head, data));
                self.cpio(chain, &mut raw, newc, depth)
                    .context("reading a cpio archive")?;
                let (sha, n) = raw.finish()?;
                Ok((sha, n, Some("cpio archive")))
            }
            Format::Iso
            | Format::Zip
            | Format::Disk
            | Format::Ext
            | Format::Fat
            | Format::Qemu(_) => {
                let (w, sha, _keep) = self.window(head, data, digest)?;
                let kind = match fmt {
                    Format::Iso => {
                        self.iso(chain, &w, depth)
                            .context("reading an ISO 9660 image")?;
                        "ISO 9660 image"
                    }
                    Format::Zip => {
                        self.zip(chain, &w, depth)
                            .context("reading a ZIP archive")?;
                        "ZIP archive"
                    }
                    Format::Disk => {
                        self.disk(chain, &w, depth)
                            .context("reading a disk image")?;
                        "partitioned disk"
                    }
                    Format::Ext => {
                        self.ext(chain, &w, depth)
                            .context("reading an ext file system")?;
                        "ext file system"
                    }
                    Format::Fat => {
                        self.fat(chain, &w, depth)
                            .context("reading a FAT file system")?;
                        "FAT file system"
                    }
                    Format::Qemu(f) => {
                        self.qemu(chain, &w, f, depth)
                            .with_context(|| format!("reading a {f} disk image"))?;
                        match f {
                            "qcow2" => "qcow2 disk",
                            "vmdk" => "VMDK disk",
                            "vhdx" => "VHDX disk",
                            "vdi" => "VDI disk",
                            _ => "virtual disk",
                        }
                    }
                    _ => unreachable!(),
                };
                Ok((sha, w.len, Some(kind)))
            }
        }
    }

    /// Random access to `data`, with its [`BLOCKS`] digest (when
    /// `digest`): a window as it is (its data runs read once more to hash
    /// them), or a stream copied to a sparse temporary file while it is
    /// hashed (removed when the guard drops).
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
                let mut t = tempfile::NamedTempFile::new_in(&self.tmp)
                    .with_context(|| format!("creating a temporary file in {}", self.tmp))?;
                let mut src = BlockHashing {
                    inner: Cursor::new(head).chain(r),
                    b: Blocks::new(),
                    n: 0,
                };
                crate::fsutil::copy_sparse(&mut src, t.as_file_mut())
                    .context("copying a nested image to a temporary file")?;
                let sha = src.b.finish(src.n);
                let w = Window::from_file(t.reopen()?, Some(path_of(&t)?))?;
                Ok((w, sha, Some(t)))
            }
        }
    }

    fn tar(&mut self, chain: &[String], r: &mut dyn Read, depth: u32) -> Result<()> {
        let mut ar = tar::Archive::new(r);
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
            let h = e.header();
            let m = Some(meta(
                h.mode().unwrap_or(0),
                h.uid().unwrap_or(0),
                h.gid().unwrap_or(0),
                h.mtime().unwrap_or(0) as i64,
            ));
            let et = h.entry_type();
            if et.is_file() || et == tar::EntryType::Continuous || et == tar::EntryType::GNUSparse {
                self.file(&here, Data::Stream(Box::new(&mut e)), m, depth)?;
            } else if et.is_symlink() || et.is_hard_link() {
                let target = e
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let kind = if et.is_hard_link() {
                    "hard link"
                } else {
                    "symlink"
                };
                let m = m.map(|m| format!("{kind} {m}"));
                self.push(&here, Kind::Link, &target, m);
            } else if et.is_dir() {
                self.push(&here, Kind::Dir, &[], m);
            } else {
                self.push(&here, Kind::Other, &[], m);
            }
        }
        Ok(())
    }

    fn cpio(
        &mut self,
        chain: &[String],
        mut r: &mut dyn Read,
        newc: bool,
        depth: u32,
    ) -> Result<()> {
        let mut pos = 0u64;
        while let Some(h) = cpio::next(&mut r, &mut pos)? {
            crate::signals::check()?;
            let inner = norm(&h.name);
            let here = join(chain, &inner);
            let m = Some(format!("mode {:o}", h.mode));
            let mut body = (&mut *r).take(h.size);
            match h.mode & 0o170000 {
                0o100000 if inner != "/" => {
                    self.file(&here, Data::Stream(Box::new(&mut body)), m, depth)?
                }
                0o120000 => {
                    let mut target = Vec::new();
                    body.read_to_end(&mut target)?;
                    self.push(&here, Kind::Link, &target, m);
                }
                0o040000 if inner != "/" => self.push(&here, Kind::Dir, &[], m),
                _ if inner != "/" => self.push(&here, Kind::Other, &[], m),
                _ => {}
            }
            std::io::copy(&mut body, &mut std::io::sink())?;
            pos += h.size;
            if newc {
                cpio::skip_pad(&mut r, &mut pos)?;
            }
        }
        // Concatenated archives (early microcode, then the main initramfs):
        // past the padding, what follows is listed as more members.
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = r.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            if let Some(i) = chunk[..n].iter().position(|&b| b != 0) {
                let rest = Cursor::new(chunk[i..n].to_vec()).chain(&mut *r);
                self.content(chain, Data::Stream(Box::new(rest)), false, depth + 1)?;
                return Ok(());
            }
        }
    }

    fn iso(&mut self, chain: &[String], w: &Window, depth: u32) -> Result<()> {
        let iso = iso9660::Iso::open(w.clone())?;
        iso.walk(|e| {
            let here = join(chain, &e.path);
            match e.kind {
                iso9660::Kind::Symlink => {
                    self.push(&here, Kind::Link, &[], None);
                    Ok(())
                }
                iso9660::Kind::File(runs) => {
                    let data = if runs.len() == 1 {
                        Data::Win(w.sub(runs[0].0, runs[0].1)?)
                    } else {
                        Data::Stream(Box::new(Runs::new(w.clone(), runs)))
                    };
                    self.file(&here, data, None, depth)
                }
            }
        })?;
        // Partitions appended after the ISO file system (a hybrid ISO's ESP).
        let head = w.head(HEAD)?;
        if disk::is_gpt(&head) || disk::is_mbr(&head, w.len) {
            for p in disk::partitions(w)? {
                if p.start >= iso.volume_bytes {
                    self.partition(chain, w, &p, depth)?;
                }
            }
        }
        Ok(())
    }

    fn zip(&mut self, chain: &[String], w: &Window, depth: u32) -> Result<()> {
        for m in zip::members(w)? {
            crate::signals::check()?;
            let here = join(chain, &norm(&m.name));
            if m.dir {
                self.push(&here, Kind::Dir, &[], None);
                continue;
            }
            let raw = w.sub(m.data.0, m.data.1)?;
            if m.encrypted || !matches!(m.method, 0 | 8) {
                self.file(&here, Data::Win(raw), None, depth)?;
            } else if m.method == 0 {
                self.file(&here, Data::Stream(Box::new(raw.reader(0))), None, depth)?;
            } else {
                let r = flate2::read::DeflateDecoder::new(raw.reader(0));
                self.file(&here, Data::Stream(Box::new(r)), None, depth)?;
            }
        }
        Ok(())
    }

    fn disk(&mut self, chain: &[String], w: &Window, depth: u32) -> Result<()> {
        for p in disk::partitions(w)? {
            self.partition(chain, w, &p, depth)?;
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
        let pw = w
            .sub(p.start, p.len)
            .with_context(|| format!("partition {} (type {})", p.index, p.kind))?;
        let m = Some(format!(
            "type {} at byte {}, {} bytes",
            p.kind, p.start, p.len
        ));
        self.file(
            &join(chain, &format!("p{}", p.index)),
            Data::Win(pw),
            m,
            depth,
        )
    }

    fn ext(&mut self, chain: &[String], w: &Window, depth: u32) -> Result<()> {
        let fs = ext4::Fs::open(w.clone())?;
        let mut items = Vec::new();
        fs.walk(|path, ino, is_dir| {
            items.push((path.to_string(), ino, is_dir));
            Ok(())
        })?;
        for (path, ino, is_dir) in items {
            crate::signals::check()?;
            let here = join(chain, &path);
            let md = fs.meta(ino).with_context(|| format!("reading {path}"))?;
            let m = Some(meta(md.mode, md.uid as u64, md.gid as u64, md.mtime));
            if is_dir {
                self.push(&here, Kind::Dir, &[], m);
                continue;
            }
            match fs.node(ino).with_context(|| format!("reading {path}"))? {
                ext4::Node::File { runs, size, inline } => {
                    let data = match inline {
                        Some(b) => Data::Stream(Box::new(Cursor::new(b))),
                        None if runs.len() == 1 && runs[0].1 == size && runs[0].0 != HOLE => {
                            Data::Win(w.sub(runs[0].0, size)?)
                        }
                        None => Data::Stream(Box::new(Runs::new(w.clone(), runs))),
                    };
                    self.file(&here, data, m, depth)?;
                }
                ext4::Node::Symlink => {
                    let target = fs
                        .link_target(ino)
                        .with_context(|| format!("reading the link {path}"))?;
                    self.push(&here, Kind::Link, &target, m);
                }
                ext4::Node::Other => self.push(&here, Kind::Other, &[], m),
            }
        }
        Ok(())
    }

    /// FAT: its files copied out with mtools into a temporary directory,
    /// then listed (FAT's times are not compared: mtools sets its own).
    fn fat(&mut self, chain: &[String], w: &Window, depth: u32) -> Result<()> {
        let mut keep = None;
        let (base, off) = match w.base() {
            Some(b) => b,
            None => {
                let (w2, _, t) =
                    self.window(Vec::new(), Data::Stream(Box::new(w.reader(0))), false)?;
                keep = t;
                (w2.path.clone().expect("temporary copies have a path"), 0)
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("kiln-inventory-fat-")
            .tempdir_in(&self.tmp)
            .with_context(|| format!("creating a temporary directory in {}", self.tmp))?;
        let d = Utf8Path::from_path(dir.path()).context("temporary directory is not UTF-8")?;
        crate::tools::run(&crate::tools::mtools::extract_all(&base, off, d))?;
        drop(keep);
        for e in walkdir::WalkDir::new(d).sort_by_file_name().min_depth(1) {
            crate::signals::check()?;
            let e = e.with_context(|| format!("walking {d}"))?;
            let rel = e
                .path()
                .strip_prefix(d)
                .expect("walkdir stays under its root");
            let rel = rel
                .to_str()
                .with_context(|| format!("{}: not UTF-8", e.path().display()))?;
            let here = join(chain, &norm(rel));
            if e.file_type().is_dir() {
                self.push(&here, Kind::Dir, &[], None);
            } else if e.file_type().is_file() {
                let p = Utf8Path::from_path(e.path()).expect("checked UTF-8");
                self.file(&here, Data::Win(Window::open(p)?), None, depth)?;
            }
        }
        Ok(())
    }

    /// A qcow2/VMDK/…: converted to a sparse raw file, then read as the
    /// disk or file system it holds; its members stay under its own path.
    fn qemu(&mut self, chain: &[String], w: &Window, format: &str, depth: u32) -> Result<()> {
        let mut keep = None;
        let src = match &w.path {
            Some(p) => p.clone(),
            None => {
                let (w2, _, t) =
                    self.window(Vec::new(), Data::Stream(Box::new(w.reader(0))), false)?;
                keep = t;
                w2.path.clone().expect("temporary copies have a path")
            }
        };
        let raw = tempfile::Builder::new()
            .prefix("kiln-inventory-")
            .suffix(".raw")
            .tempfile_in(&self.tmp)
            .with_context(|| format!("creating a temporary file in {}", self.tmp))?;
        let rawp = path_of(&raw)?;
        crate::tools::run(&crate::tools::qemu_img::convert_to_raw(&src, format, &rawp))?;
        drop(keep);
        let rw = Window::open(&rawp)?;
        let head = rw.head(HEAD)?;
        match sniff(&head, rw.len) {
            Format::Disk => self.disk(chain, &rw, depth + 1),
            Format::Ext => self.ext(chain, &rw, depth + 1),
            Format::Fat => self.fat(chain, &rw, depth + 1),
            Format::Iso => self.iso(chain, &rw, depth + 1),
            // Anything else: the raw bytes, as one member.
            _ => self.file(&join(chain, "disk"), Data::Win(rw), None, depth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar archive of `(path, bytes, mode)` files, each dated `mtime`.
    fn tar_of(files: &[(&str, &[u8], u32)], mtime: u64) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, bytes, mode) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(mtime);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *bytes).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn listed(dir: &Utf8Path, name: &str, bytes: &[u8]) -> Inventory {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        inventory(&p, dir).unwrap()
    }

    #[test]
    fn a_changed_member_of_a_compressed_tar_is_named_with_what_differs() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let inner = tar_of(&[("etc/motd", b"hello\n", 0o644)], 10);
        let build = |nonce: &[u8], mode: u32, extra: bool| {
            let mut files: Vec<(&str, &[u8], u32)> = vec![
                ("etc/build-info.json", b"{}", 0o644),
                ("etc/nonce", nonce, 0o644),
                ("opt/nested.tar", &inner, 0o644),
                ("usr/bin/tool", b"#!/bin/sh\n", mode),
            ];
            if extra {
                files.push(("zz/only-here", b"x", 0o644));
            }
            zstd::encode_all(&tar_of(&files, 1_700_000_000)[..], 3).unwrap()
        };
        let a = listed(dir, "a.tar.zst", &build(b"one", 0o755, false));
        let b = listed(dir, "b.tar.zst", &build(b"two", 0o700, true));
        assert_eq!(a.kind, Some("zstd stream"));
        let paths: Vec<&str> = a.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/build-info.json",
                "/etc/nonce",
                "/opt/nested.tar",
                "/opt/nested.tar!/etc/motd",
                "/usr/bin/tool"
            ]
        );
        assert_eq!(a.entries[2].kind, Kind::Container("tar archive"));
        assert_eq!(a.entries[1].sha256, digest_of(b"one"));
        assert!(
            a.entries[1].meta.as_deref().unwrap().contains("mode 644"),
            "{:?}",
            a.entries[1]
        );

        let changes = diff(&a.entries, &b.entries);
        let whats: Vec<(&str, &What)> =
            changes.iter().map(|c| (c.path.as_str(), &c.what)).collect();
        assert_eq!(whats.len(), 3, "{whats:#?}");
        assert_eq!(
            whats[0],
            (
                "/etc/nonce",
                &What::Content {
                    a: (3, digest_of(b"one")),
                    b: (3, digest_of(b"two"))
                }
            )
        );
        assert!(
            matches!(whats[1], ("/usr/bin/tool", What::Meta { a, b }) if a.contains("mode 755") && b.contains("mode 700")),
            "{whats:#?}"
        );
        assert_eq!(whats[2], ("/zz/only-here", &What::OnlyB));
        assert_eq!(first(&changes).unwrap().path, "/etc/nonce");
        // The same bytes: nothing differs.
        let again = listed(dir, "c.tar.zst", &build(b"one", 0o755, false));
        assert!(diff(&a.entries, &again.entries).is_empty());
    }

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

    #[test]
    fn the_deepest_difference_is_named_first() {
        let e = |path: &str, what: What| Change {
            path: path.into(),
            what,
        };
        let content = || What::Content {
            a: (1, "a".into()),
            b: (1, "b".into()),
        };
        // A disk's partition differs because a file in an image in it does.
        let changes = [
            e("/disk.vmdk", content()),
            e("/disk.vmdk!p2", content()),
            e("/disk.vmdk!p2!/etc/x", content()),
            e("/disk.vmdk!p2!/etc/y", What::OnlyB),
            e("/other", content()),
        ];
        assert_eq!(first(&changes).unwrap().path, "/disk.vmdk!p2!/etc/x");
        // A container whose members are all the same is named itself.
        assert_eq!(first(&changes[4..]).unwrap().path, "/other");
        assert!(first(&[]).is_none());
        let entries = [
            Entry {
                path: "/disk.vmdk".into(),
                kind: Kind::Container("VMDK disk"),
                size: 0,
                sha256: String::new(),
                meta: None,
            },
            Entry {
                path: "/disk.vmdk!p2".into(),
                kind: Kind::Container("ext file system"),
                size: 0,
                sha256: String::new(),
                meta: None,
            },
        ];
        assert_eq!(
            describe("/disk.vmdk!p2!/etc/x", &entries),
            "/disk.vmdk (VMDK disk) → partition 2 (ext file system) → /etc/x"
        );
    }

    #[test]
    fn ext4_images_are_listed_with_owners_modes_times_and_link_targets() {
        if !crate::testing::require(&["mkfs.ext4"]) {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let image = |name: &str, nonce: &str| -> Inventory {
            let tree = dir.join(format!("{name}-tree"));
            std::fs::create_dir_all(tree.join("etc")).unwrap();
            std::fs::write(tree.join("etc/hostname"), "demo\n").unwrap();
            std::fs::write(tree.join("etc/nonce"), nonce).unwrap();
            std::os::unix::fs::symlink("/proc/self/mounts", tree.join("etc/mtab")).unwrap();
            let long = format!("/usr/lib/{}", "x".repeat(80));
            std::os::unix::fs::symlink(&long, tree.join("etc/long-link")).unwrap();
            // mkfs.ext4 -d copies the tree's times: pin them, or two images
            // written in different seconds differ in more than their nonce.
            crate::fsutil::set_tree_mtimes(&tree, 1_700_000_000).unwrap();
            let img = dir.join(format!("{name}.ext4"));
            let out = std::process::Command::new(crate::tools::find("mkfs.ext4").unwrap())
                .args([
                    "-q",
                    "-F",
                    "-t",
                    "ext4",
                    "-U",
                    "clear",
                    "-E",
                    "root_owner=0:0,hash_seed=00000000-0000-0000-0000-000000000000",
                    "-d",
                ])
                .arg(tree.as_str())
                .args([img.as_str(), "8M"])
                .env("E2FSPROGS_FAKE_TIME", "1700000000")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            inventory(&img, dir).unwrap()
        };
        let a = image("a", "one\n");
        let b = image("b", "two\n");
        assert_eq!(a.kind, Some("ext file system"));
        let get = |inv: &Inventory, p: &str| {
            inv.entries
                .iter()
                .find(|e| e.path == p)
                .unwrap_or_else(|| panic!("no {p} in {:#?}", inv.entries))
                .clone()
        };
        let host = get(&a, "/etc/hostname");
        assert_eq!((host.kind, host.size), (Kind::File, 5));
        assert_eq!(host.sha256, digest_of(b"demo\n"));
        assert!(host.meta.unwrap().starts_with("mode 100644 uid 0 gid 0"));
        assert_eq!(get(&a, "/etc/mtab").sha256, digest_of(b"/proc/self/mounts"));
        let long = format!("/usr/lib/{}", "x".repeat(80));
        assert_eq!(get(&a, "/etc/long-link").sha256, digest_of(long.as_bytes()));
        assert_eq!(get(&a, "/etc").kind, Kind::Dir);
        let changes = diff(&a.entries, &b.entries);
        let c = first(&changes).unwrap();
        assert_eq!(c.path, "/etc/nonce", "{changes:#?}");
        assert!(matches!(c.what, What::Content { .. }));
    }
}
