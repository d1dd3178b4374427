//! ML models: a directory of files (a Hugging Face snapshot or anything
//! else) exported as the files themselves under `<dest>/<name>/` with a
//! `SHA256SUMS`, or as a deterministic `<dest>/<name>.tar.zst` (sorted,
//! uid/gid 0, mtime = `SOURCE_DATE_EPOCH`, which unpacks to `<name>/` with
//! the same `SHA256SUMS`). Every file is read once: hashed while it is
//! copied or compressed.
//!
//! Caching: the step key holds the files' paths in the model, modes and
//! content digests. Each digest is remembered by file identity (see
//! `digest::file_sha256_memo`), so an unchanged model is not re-read on the
//! next plan, and a fresh checkout or a `touch` (new mtimes, same bytes)
//! finds the same key.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{append_bytes, append_dir, tree_dir, Exact, Sink, MODEL_RECORD, SUMS};
use crate::plan::{Input, Op, OpCx, Plan, StepBuilder};
use crate::recipe::payloads::{Compression, ModelPackaging, ModelPayload};
use crate::recipe::Resolved;

/// zstd level of model archives (the rest of kiln's `.zst` files use
/// [`crate::archive::ZSTD_LEVEL`], 3). Weights are close to random for zstd's
/// match finder: what compresses is their entropy-coded literals, which
/// levels 1 and 3 code alike. On weight-like data (`cargo xtask bench --case
/// export`'s generator) level 1 wrote 0.02% more bytes than level 3 for
/// about two thirds of its CPU time. A step input, so changing it re-exports.
pub const ZSTD_LEVEL: i32 = 1;

/// One file of a model, as found while planning.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelFile {
    /// Path inside the model directory.
    pub rel: String,
    /// The file read (a symlink's target, resolved).
    pub src: Utf8PathBuf,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    /// 0644, or 0755 when any execute bit is set.
    pub mode: u32,
}

/// The files of a model directory, sorted. Links are followed when they stay
/// inside the model (for a Hugging Face `snapshots/<rev>` directory: inside
/// its repository directory, where `blobs/` lives); anything else is refused.
pub fn scan(name: &str, source: &Utf8Path) -> Result<Vec<ModelFile>> {
    let what = format!("model `{name}`");
    let md = std::fs::metadata(source)
        .with_context(|| format!("{what}: source directory {source} does not exist"))?;
    anyhow::ensure!(md.is_dir(), "{what}: source {source} is not a directory");
    let canon = |p: &Utf8Path| -> Result<Utf8PathBuf> {
        let c =
            std::fs::canonicalize(p).with_context(|| format!("{what}: {p} is a dangling link"))?;
        Utf8PathBuf::from_path_buf(c)
            .map_err(|c| anyhow::anyhow!("{what}: non-UTF-8 path {}", c.display()))
    };
    let root = canon(source)?;
    let fence = match root.parent() {
        Some(p) if p.file_name() == Some("snapshots") => p.parent().unwrap_or(&root).to_owned(),
        _ => root.clone(),
    };
    let mut files = Vec::new();
    for (rel, md) in
        crate::digest::walk_sorted(source).with_context(|| format!("{what}: reading {source}"))?
    {
        let full = source.join(&rel);
        let ft = md.file_type();
        let (src, md) = if ft.is_dir() {
            continue;
        } else if ft.is_symlink() {
            let target = canon(&full)?;
            if !target.starts_with(&fence) {
                bail!("{what}: {full} is a link to {target}, outside the model directory {fence}; copy the file in instead");
            }
            let tmd =
                std::fs::metadata(&target).with_context(|| format!("{what}: reading {target}"))?;
            if !tmd.is_file() {
                bail!("{what}: {full} links to {target}, which is not a regular file (links to directories are not followed)");
            }
            (target, tmd)
        } else if ft.is_file() {
            (full.clone(), md)
        } else {
            bail!("{what}: {full} is a device node, socket or FIFO; a model holds only files");
        };
        if rel.as_str() == SUMS {
            bail!("{what}: {full}: `{SUMS}` is the name kiln gives the model's digest list; rename the file");
        }
        files.push(ModelFile {
            rel: rel.to_string(),
            src,
            size: md.len(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec(),
            mode: if md.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            },
        });
    }
    anyhow::ensure!(
        !files.is_empty(),
        "{what}: source directory {source} holds no files"
    );
    Ok(files)
}

/// The cache input for a model: its files' paths in the model, modes and
/// content digests (remembered in `memo`, so an unchanged model is not read
/// again); nothing of where the model lives or when it was copied there.
pub fn content_input(
    source: &Utf8Path,
    files: &[ModelFile],
    memo: Option<&Utf8Path>,
) -> Result<Input> {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.rel.as_bytes());
        h.update([0]);
        h.update(f.mode.to_le_bytes());
        h.update(crate::digest::file_sha256_memo(&f.src, memo)?.as_bytes());
        h.update([0]);
    }
    Ok(Input::Tree {
        path: source.to_owned(),
        sha256: hex::encode(h.finalize()),
        files: files.len() as u64,
    })
}

pub fn step(r: &Resolved, plan: &Plan, m: &ModelPayload) -> Result<StepBuilder> {
    let source = r.path(&m.source);
    let files = scan(&m.name, &source)
        .with_context(|| format!("{}: payload model `{}`", r.file, m.name))?;
    let input = content_input(&source, &files, plan.digest_memo().as_deref())?;
    let op = ModelOp {
        params: Params {
            name: m.name.clone(),
            source: m.source.to_string(),
            revision: m.revision.clone(),
            dest: m.dest.clone(),
            packaging: m.packaging,
            epoch: r.epoch,
        },
        files,
    };
    let bytes: u64 = op.files.iter().map(|f| f.size).sum();
    let level =
        (m.packaging == ModelPackaging::TarZst).then(|| Input::value("zstd level", ZSTD_LEVEL));
    Ok(StepBuilder::new(
        format!("model-{}", m.name),
        format!(
            "export model `{}` ({} files, {bytes} bytes) to {}",
            m.name,
            op.files.len(),
            m.dest
        ),
    )
    .input(input)
    .input(Input::value("SOURCE_DATE_EPOCH", r.epoch))
    .inputs(level)
    .long()
    .op(op))
}

/// Everything that shapes a model export besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Params {
    pub name: String,
    /// As the recipe writes it.
    pub source: String,
    pub revision: Option<String>,
    pub dest: Utf8PathBuf,
    pub packaging: ModelPackaging,
    pub epoch: i64,
}

/// One `models.json` file entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// What a model step records (one `models.json` entry).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelRecord {
    pub name: String,
    pub revision: Option<String>,
    /// `tree` or `tar-zst`.
    pub packaging: ModelPackaging,
    /// Relative to the destination directory: `<name>/` or `<name>.tar.zst`.
    pub path: String,
    /// sha256 and size of the `.tar.zst` (tar-zst packaging only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
    pub files: Vec<FileEntry>,
}

pub struct ModelOp {
    pub params: Params,
    pub files: Vec<ModelFile>,
}

impl Op for ModelOp {
    fn describe(&self) -> serde_json::Value {
        json!({ "export_model": self.params })
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let p = &self.params;
        let what = format!("model `{}` ({})", p.name, p.source);
        let rec = export(p, &self.files, cx.out).with_context(|| what)?;
        crate::plan::write_json(&cx.out.join(MODEL_RECORD), &rec)
    }
}

/// Export a model into `out/tree/<dest>/`; returns its record.
pub fn export(p: &Params, files: &[ModelFile], out: &Utf8Path) -> Result<ModelRecord> {
    let dest = tree_dir(out, &p.dest);
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {dest}"))?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    // Small models finish before a bar would say anything useful.
    let mut bar = (total >= 64 << 20)
        .then(|| crate::ui::Progress::bytes(&format!("model {}", p.name), total));
    let progress = bar.as_mut();
    let (path, archive, entries) = match p.packaging {
        ModelPackaging::Tree => {
            let entries = write_tree(&dest.join(&p.name), files, progress)?;
            (format!("{}/", p.name), None, entries)
        }
        ModelPackaging::TarZst => {
            let file = format!("{}.tar.zst", p.name);
            let (hex, size, entries) =
                write_tar_zst(&dest.join(&file), &p.name, files, p.epoch, progress)?;
            (file, Some((hex, size)), entries)
        }
    };
    if let Some(b) = bar {
        b.finish();
    }
    Ok(ModelRecord {
        name: p.name.clone(),
        revision: p.revision.clone(),
        packaging: p.packaging,
        path,
        sha256: archive.as_ref().map(|a| a.0.clone()),
        size: archive.map(|a| a.1),
        files: entries,
    })
}

fn sums(entries: &[FileEntry]) -> String {
    entries
        .iter()
        .map(|e| crate::digest::sha256sum_line(&e.sha256, &e.path))
        .collect()
}

/// Counts bytes read into a progress bar.
struct Counted<'a, R> {
    inner: R,
    progress: Option<&'a mut crate::ui::Progress>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Not ErrorKind::Interrupted: `io::copy` (inside tar's append) retries those.
        if crate::signals::interrupted() {
            return Err(std::io::Error::other(crate::signals::Interrupted));
        }
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress.as_deref_mut() {
            p.inc(n as u64);
        }
        Ok(n)
    }
}

fn open(f: &ModelFile) -> Result<std::fs::File> {
    std::fs::File::open(&f.src).with_context(|| format!("opening {}", f.src))
}

/// Copy the files under `dir`, hashing each while it is copied, and write
/// `dir/SHA256SUMS`.
pub fn write_tree(
    dir: &Utf8Path,
    files: &[ModelFile],
    mut progress: Option<&mut crate::ui::Progress>,
) -> Result<Vec<FileEntry>> {
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let dst = dir.join(&f.rel);
        let parent = dst.parent().expect("a file has a parent");
        std::fs::create_dir_all(parent).with_context(|| format!("creating {parent}"))?;
        let mut r = Exact::new(
            Counted {
                inner: open(f)?,
                progress: progress.as_deref_mut(),
            },
            f.size,
            f.src.as_str(),
        );
        let mut w = std::fs::File::create(&dst).with_context(|| format!("creating {dst}"))?;
        loop {
            let n = r
                .read(&mut buf)
                .with_context(|| format!("reading {}", f.src))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])
                .with_context(|| format!("writing {dst}"))?;
        }
        let sha256 = r.finish()?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(f.mode))?;
        entries.push(FileEntry {
            path: f.rel.clone(),
            size: f.size,
            sha256,
        });
    }
    for (rel, md) in crate::digest::walk_sorted(dir)? {
        if md.is_dir() {
            std::fs::set_permissions(dir.join(rel), std::fs::Permissions::from_mode(0o755))?;
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(dir.join(SUMS), sums(&entries))
        .with_context(|| format!("writing {dir}/{SUMS}"))?;
    Ok(entries)
}

/// Write the files as a deterministic `.tar.zst` whose entries sit under
/// `<name>/` (with `<name>/SHA256SUMS` last), hashing each file while it is
/// compressed. Returns (archive sha256, archive bytes, file entries).
///
/// Three stages overlap: one thread reads the files ahead and hashes them
/// ([`read_ahead`]), this one builds the tar stream and feeds the zstd
/// workers, and the [`Sink`]'s thread hashes and writes the archive. No
/// stage waits for another's hash or disk unless its queue is full.
pub fn write_tar_zst(
    path: &Utf8Path,
    name: &str,
    files: &[ModelFile],
    epoch: i64,
    progress: Option<&mut crate::ui::Progress>,
) -> Result<(String, u64, Vec<FileEntry>)> {
    let workers = crate::archive::zstd_workers();
    write_tar_zst_workers(path, name, files, epoch, progress, workers)
}

/// [`write_tar_zst`] with `workers` zstd threads: the archive's bytes are the
/// same for any number.
pub fn write_tar_zst_workers(
    path: &Utf8Path,
    name: &str,
    files: &[ModelFile],
    epoch: i64,
    mut progress: Option<&mut crate::ui::Progress>,
    workers: u32,
) -> Result<(String, u64, Vec<FileEntry>)> {
    let mut sink = Sink::create_with(path, Compression::Zstd, ZSTD_LEVEL, workers)?;
    let mut entries = Vec::new();
    std::thread::scope(|s| -> Result<()> {
        let (to_main, pieces) = mpsc::sync_channel(READ_AHEAD);
        let (give_back, spare) = mpsc::sync_channel(READ_AHEAD + 2);
        std::thread::Builder::new()
            .name("kiln-read".into())
            .spawn_scoped(s, move || read_ahead(files, to_main, spare))
            .context("starting the reader thread")?;
        let mut next = Pieces {
            pieces,
            give_back,
            chunk: Vec::new(),
            at: 0,
        };
        let mut b = tar::Builder::new(&mut sink);
        append_dir(&mut b, &format!("{name}/"), epoch)?;
        let mut dirs = BTreeSet::new();
        for f in files {
            let rel = Utf8Path::new(&f.rel);
            let mut ancestors: Vec<&Utf8Path> = rel
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_str().is_empty())
                .collect();
            ancestors.reverse();
            for a in ancestors {
                if dirs.insert(a.to_owned()) {
                    append_dir(&mut b, &format!("{name}/{a}/"), epoch)?;
                }
            }
            let mut h = crate::archive::header(tar::EntryType::Regular, f.mode, f.size, epoch);
            let path = format!("{name}/{}", f.rel);
            let sha256 = if h.set_path(&path).is_ok() {
                // The name fits the header (what `append_data` would write
                // too): the read-ahead chunks go to zstd whole, with no
                // copy through tar's small buffer.
                h.set_cksum();
                let w = b.get_mut();
                w.write_all(h.as_bytes())
                    .with_context(|| format!("archiving {}", f.src))?;
                let hex = next
                    .copy_file(w, f.size, progress.as_deref_mut())
                    .with_context(|| format!("archiving {}", f.src))?;
                let pad = (512 - f.size % 512) % 512;
                w.write_all(&[0u8; 512][..pad as usize])
                    .with_context(|| format!("archiving {}", f.src))?;
                hex
            } else {
                // A long name: tar's GNU extension entry, through its writer.
                let mut r = Counted {
                    inner: next.file(),
                    progress: progress.as_deref_mut(),
                };
                b.append_data(&mut h, &path, &mut r)
                    .with_context(|| format!("archiving {}", f.src))?;
                r.inner.digest.take().with_context(|| {
                    format!("archiving {}: the reader ended without a digest", f.src)
                })?
            };
            entries.push(FileEntry {
                path: f.rel.clone(),
                size: f.size,
                sha256,
            });
        }
        append_bytes(
            &mut b,
            &format!("{name}/{SUMS}"),
            sums(&entries).as_bytes(),
            epoch,
        )?;
        b.finish().with_context(|| format!("finishing {path}"))
    })?;
    let (hex, size) = sink.finish().with_context(|| format!("finishing {path}"))?;
    Ok((hex, size, entries))
}

/// Chunks [`read_ahead`] may run ahead of the archive writer (32 MiB, like
/// [`crate::digest::BackgroundWriter`]'s queue): zstd takes its input in
/// 8 MiB jobs, in bursts, and a shallow queue leaves its workers waiting
/// while the reader catches up.
const READ_AHEAD: usize = 32;

/// What [`read_ahead`] sends: the bytes of the current file, then its digest
/// (or why it could not be read exactly).
enum Piece {
    Data(Vec<u8>),
    Done(Result<String>),
}

/// Read every file in order, exactly its planned size, hashing each read
/// while it is in the cache; send its bytes in [`crate::digest::CHUNK`]-sized
/// pieces, then its digest. Stops at the first error (after sending it) or
/// when the receiver is gone.
fn read_ahead(
    files: &[ModelFile],
    to_main: mpsc::SyncSender<Piece>,
    spare: mpsc::Receiver<Vec<u8>>,
) {
    for f in files {
        let done = (|| -> Result<String> {
            let mut r = Exact::new(open(f)?, f.size, f.src.as_str());
            loop {
                crate::signals::check()?;
                let mut chunk = spare.try_recv().unwrap_or_default();
                chunk.resize(crate::digest::CHUNK, 0);
                let mut n = 0;
                while n < chunk.len() {
                    let end = chunk.len().min(n + crate::digest::IO_SIZE);
                    match r.read(&mut chunk[n..end]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e).with_context(|| format!("reading {}", f.src)),
                    }
                }
                if n == 0 {
                    return r.finish();
                }
                chunk.truncate(n);
                if to_main.send(Piece::Data(chunk)).is_err() {
                    bail!("stopped: the archive writer is gone");
                }
            }
        })();
        let failed = done.is_err();
        if to_main.send(Piece::Done(done)).is_err() || failed {
            return;
        }
    }
}

/// The archive writer's end of [`read_ahead`].
struct Pieces {
    pieces: mpsc::Receiver<Piece>,
    give_back: mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Pieces {
    /// Write the next file's bytes (exactly `size`, as [`read_ahead`] read
    /// them) to `w` in the chunks they came in; returns its sha256.
    fn copy_file(
        &mut self,
        w: &mut impl Write,
        size: u64,
        mut progress: Option<&mut crate::ui::Progress>,
    ) -> Result<String> {
        let mut left = size;
        loop {
            crate::signals::check()?;
            match self.pieces.recv() {
                Ok(Piece::Data(chunk)) => {
                    anyhow::ensure!(
                        chunk.len() as u64 <= left,
                        "the reader sent more than the file's {size} bytes"
                    );
                    w.write_all(&chunk)?;
                    left -= chunk.len() as u64;
                    if let Some(p) = progress.as_deref_mut() {
                        p.inc(chunk.len() as u64);
                    }
                    let _ = self.give_back.try_send(chunk);
                }
                Ok(Piece::Done(Ok(hex))) => {
                    anyhow::ensure!(left == 0, "the reader ended {left} bytes early");
                    return Ok(hex);
                }
                Ok(Piece::Done(Err(e))) => return Err(e),
                Err(_) => bail!("the reader thread stopped early"),
            }
        }
    }

    /// A reader of the next file's bytes.
    fn file(&mut self) -> FileReader<'_> {
        FileReader {
            from: self,
            digest: None,
        }
    }
}

/// Reads one file's bytes from [`Pieces`]; at its end, `digest` holds its
/// sha256. A file that could not be read exactly is a read error.
struct FileReader<'a> {
    from: &'a mut Pieces,
    digest: Option<String>,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let p = &mut *self.from;
        loop {
            if p.at < p.chunk.len() {
                let n = buf.len().min(p.chunk.len() - p.at);
                buf[..n].copy_from_slice(&p.chunk[p.at..p.at + n]);
                p.at += n;
                return Ok(n);
            }
            if self.digest.is_some() {
                return Ok(0);
            }
            match p.pieces.recv() {
                Ok(Piece::Data(next)) => {
                    let used = std::mem::replace(&mut p.chunk, next);
                    p.at = 0;
                    let _ = p.give_back.try_send(used);
                }
                Ok(Piece::Done(Ok(hex))) => self.digest = Some(hex),
                Ok(Piece::Done(Err(e))) => return Err(std::io::Error::other(format!("{e:#}"))),
                Err(_) => return Err(std::io::Error::other("the reader thread stopped early")),
            }
        }
    }
}

/// sha256 of every file, on all cores (files are handed out one at a time);
/// each file must still have its planned size.
pub fn hash_files(files: &[ModelFile]) -> Result<Vec<String>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<String>>>> =
        Mutex::new((0..files.len()).map(|_| None).collect());
    let workers = crate::archive::zstd_workers()
        .min(files.len() as u32)
        .max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = files.get(i) else { break };
                    let r = (|| -> Result<String> {
                        let mut r = Exact::new(open(f)?, f.size, f.src.as_str());
                        while r
                            .read(&mut buf)
                            .with_context(|| format!("reading {}", f.src))?
                            > 0
                        {
                            crate::signals::check()?;
                        }
                        r.finish()
                    })();
                    results.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every file hashed"))
        .collect()
}

/// Writes `models.json` for the models of one directory.
pub struct IndexOp {
    pub dest: Utf8PathBuf,
    /// (step name, step output directory)
    pub parts: Vec<(String, Utf8PathBuf)>,
}

impl Op for IndexOp {
    fn describe(&self) -> serde_json::Value {
        let steps: Vec<&String> = self.parts.iter().map(|(n, _)| n).collect();
        json!({ "models_index": { "dest": self.dest, "models": steps } })
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let mut records = Vec::new();
        for (step, out) in &self.parts {
            let rec: ModelRecord = super::read_record(&out.join(MODEL_RECORD), step)?;
            let at = tree_dir(out, &self.dest).join(&rec.path);
            let what = format!("model `{}`", rec.name);
            match rec.size {
                Some(size) => super::check_present(&at, size, &what)?,
                None => anyhow::ensure!(
                    at.join(SUMS).is_file(),
                    "{what}: {at} holds no {SUMS} (fail closed: nothing is staged without it)"
                ),
            }
            records.push(rec);
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        let dir = tree_dir(cx.out, &self.dest);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir}"))?;
        crate::plan::write_json(&dir.join("models.json"), &json!({ "models": records }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, Utf8PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = Utf8PathBuf::from_path_buf(t.path().to_path_buf()).unwrap();
        (t, p)
    }

    #[test]
    fn scan_follows_inner_links_and_refuses_escapes() {
        let (_t, d) = dir();
        let m = d.join("m");
        std::fs::create_dir_all(m.join("sub")).unwrap();
        std::fs::write(m.join("sub/a.bin"), b"abc").unwrap();
        std::os::unix::fs::symlink("sub/a.bin", m.join("link.bin")).unwrap();
        let files = scan("m", &m).unwrap();
        assert_eq!(
            files.iter().map(|f| f.rel.as_str()).collect::<Vec<_>>(),
            ["link.bin", "sub/a.bin"]
        );
        assert_eq!(files[0].size, 3);
        std::fs::write(d.join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink("../secret", m.join("out")).unwrap();
        let e = format!("{:#}", scan("m", &m).unwrap_err());
        assert!(
            e.contains("model `m`")
                && e.contains("/m/out is a link to")
                && e.contains("outside the model directory"),
            "{e}"
        );
    }

    #[test]
    fn hugging_face_snapshot_links_into_blobs_are_followed() {
        let (_t, d) = dir();
        let repo = d.join("models--org--tiny");
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::write(repo.join("blobs/1111"), b"{}").unwrap();
        std::os::unix::fs::symlink(
            "../../blobs/1111",
            repo.join("snapshots/abc123/config.json"),
        )
        .unwrap();
        let files = scan("tiny", &repo.join("snapshots/abc123")).unwrap();
        assert_eq!(files[0].rel, "config.json");
        assert_eq!(files[0].size, 2);
    }

    #[test]
    fn a_file_that_changed_size_since_planning_is_an_error() {
        let (_t, d) = dir();
        let m = d.join("m");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("w.bin"), vec![7u8; 5000]).unwrap();
        let files = scan("m", &m).unwrap();
        let p = Params {
            name: "m".into(),
            source: "m".into(),
            revision: None,
            dest: "/opt/x".into(),
            packaging: ModelPackaging::TarZst,
            epoch: 1,
        };
        std::fs::write(m.join("w.bin"), vec![7u8; 6000]).unwrap();
        let e = format!("{:#}", export(&p, &files, &d.join("out1")).unwrap_err());
        assert!(e.contains("w.bin grew"), "{e}");
        std::fs::write(m.join("w.bin"), vec![7u8; 10]).unwrap();
        let p = Params {
            packaging: ModelPackaging::Tree,
            ..p
        };
        let e = format!("{:#}", export(&p, &files, &d.join("out2")).unwrap_err());
        assert!(e.contains("w.bin ended") && e.contains("early"), "{e}");
    }

    /// The threaded writer makes exactly the bytes of a plain `tar::Builder`
    /// over kiln's zstd settings fed one file at a time: the format and the
    /// reproducibility do not depend on how the work is split.
    #[test]
    fn tar_zst_bytes_are_those_of_a_plain_sequential_writer() {
        let (_t, d) = dir();
        let m = d.join("m");
        std::fs::create_dir_all(m.join("a/b")).unwrap();
        let big: Vec<u8> = (0..3 * crate::digest::CHUNK + 777)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(m.join("a/b/weights.bin"), &big).unwrap();
        std::fs::write(m.join("a/empty"), b"").unwrap();
        // Too long for the header: tar's GNU long-name entry.
        let long = format!("a/{}.bin", "l".repeat(120));
        std::fs::write(m.join(&long), &big[..70_000]).unwrap();
        std::fs::write(m.join("config.json"), b"{}").unwrap();
        std::fs::write(m.join("run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(m.join("run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let files = scan("m", &m).unwrap();
        let out = d.join("m.tar.zst");
        let (hex, size, entries) = write_tar_zst(&out, "m", &files, 1234, None).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(hex, crate::digest::bytes_sha256(&bytes));
        assert_eq!(size, bytes.len() as u64);
        for (f, e) in files.iter().zip(&entries) {
            assert_eq!(e.sha256, crate::digest::file_sha256(&f.src).unwrap());
        }

        let mut z = crate::archive::zstd_writer_with(Vec::new(), ZSTD_LEVEL, 1).unwrap();
        {
            let mut b = tar::Builder::new(&mut z);
            let file = |b: &mut tar::Builder<_>, rel: &str, mode: u32| {
                let src = m.join(rel);
                let len = std::fs::metadata(&src).unwrap().len();
                let mut h = crate::archive::header(tar::EntryType::Regular, mode, len, 1234);
                b.append_data(
                    &mut h,
                    format!("m/{rel}"),
                    std::fs::File::open(&src).unwrap(),
                )
                .unwrap();
            };
            append_dir(&mut b, "m/", 1234).unwrap();
            append_dir(&mut b, "m/a/", 1234).unwrap();
            append_dir(&mut b, "m/a/b/", 1234).unwrap();
            file(&mut b, "a/b/weights.bin", 0o644);
            file(&mut b, "a/empty", 0o644);
            file(&mut b, &long, 0o644);
            file(&mut b, "config.json", 0o644);
            file(&mut b, "run.sh", 0o755);
            append_bytes(&mut b, "m/SHA256SUMS", sums(&entries).as_bytes(), 1234).unwrap();
            b.finish().unwrap();
        }
        assert!(z.finish().unwrap() == bytes, "the archive's bytes differ");
    }

    #[test]
    fn parallel_hashes_match_single_file_hashes() {
        let (_t, d) = dir();
        for i in 0..5 {
            std::fs::write(d.join(format!("f{i}")), vec![i as u8; 1000 * i + 1]).unwrap();
        }
        let files = scan("d", &d).unwrap();
        let h = hash_files(&files).unwrap();
        for (f, h) in files.iter().zip(h) {
            assert_eq!(h, crate::digest::file_sha256(&f.src).unwrap());
        }
    }
}
