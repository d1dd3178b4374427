//! Payload export: container-image archives and ML-model archives written
//! into trees that `stage` merges, so every format carries the same bytes.
//!
//! Steps (all write a `tree/` laid out at image paths, except the first):
//! - `image-root-<name>-<arch>`: for a `debian` source, mmdebstrap's root
//!   tarball of the image's packages ([`debian`]);
//! - `image-<name>-<arch>`: one archive `<dest>/<name>-<arch>.tar[.zst|.gz]`
//!   ([`oci`]), plus a record `image.json` outside the tree;
//! - `images-<arch>-<dest>`: per destination directory, `images.json` and
//!   `SHA256SUMS` over every archive of that directory (fails closed when a
//!   listed image produced no archive);
//! - `model-<name>`: the model's files under `<dest>/<name>/` with a
//!   `SHA256SUMS`, or a deterministic `<dest>/<name>.tar.zst` ([`models`]);
//! - `models-<dest>`: per destination directory, `models.json`.
//!
//! Every byte is streamed and hashed while it is written; nothing is held in
//! memory except manifests and configs.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::plan::{Input, Op, OpCx, Plan, StepBuilder};
use crate::recipe::payloads::{Compression, ImageSource};
use crate::recipe::{Arch, Resolved};

pub mod debian;
pub mod models;
pub mod oci;

/// The tree inside an export step's output that `stage` merges.
pub const TREE: &str = "tree";
/// Per-image record inside an image step's output (outside the tree).
pub const IMAGE_RECORD: &str = "image.json";
/// Per-model record inside a model step's output (outside the tree).
pub const MODEL_RECORD: &str = "model.json";
/// Manifest beside the image archives and inside each model directory.
pub const SUMS: &str = "SHA256SUMS";

/// Add the export steps for every payload; returns the indices of the steps
/// whose output holds a `tree/` for `stage` to merge. Model steps do not
/// depend on the architecture and are shared when several are staged.
pub fn plan(r: &Resolved, plan: &mut Plan, arch: Arch) -> Result<Vec<usize>> {
    let p = &r.recipe.payloads;
    let mut out = Vec::new();
    let mut by_dest: BTreeMap<Utf8PathBuf, Vec<usize>> = BTreeMap::new();
    for img in &p.images {
        let root = match &img.source {
            ImageSource::Debian(d) => Some(debian::plan_root(r, plan, img, d, arch)?),
            _ => None,
        };
        let i = add_once(plan, &format!("image-{}-{arch}", img.name), |plan| {
            image_step(r, plan, img, arch, root.map(|i| plan.step(i)))
        })?;
        by_dest.entry(img.dest.clone()).or_default().push(i);
        out.push(i);
    }
    for (dest, steps) in by_dest {
        let name = format!("images-{arch}-{}", slug(&dest));
        let i = add_once(plan, &name, |plan| {
            let mut b =
                StepBuilder::new(&name, format!("write images.json and SHA256SUMS in {dest}"));
            let mut parts = Vec::new();
            for &s in &steps {
                let st = plan.step(s);
                b = b.after(st);
                parts.push((st.name.clone(), st.out.clone()));
            }
            Ok(b.op(ImagesIndexOp {
                dest: dest.clone(),
                parts,
            }))
        })?;
        out.push(i);
    }
    let mut by_dest: BTreeMap<Utf8PathBuf, Vec<usize>> = BTreeMap::new();
    for m in &p.models {
        let i = add_once(plan, &format!("model-{}", m.name), |plan| {
            models::step(r, plan, m)
        })?;
        by_dest.entry(m.dest.clone()).or_default().push(i);
        out.push(i);
    }
    for (dest, steps) in by_dest {
        let name = format!("models-{}", slug(&dest));
        let i = add_once(plan, &name, |plan| {
            let mut b = StepBuilder::new(&name, format!("write models.json in {dest}"));
            let mut parts = Vec::new();
            for &s in &steps {
                let st = plan.step(s);
                b = b.after(st);
                parts.push((st.name.clone(), st.out.clone()));
            }
            Ok(b.op(models::IndexOp {
                dest: dest.clone(),
                parts,
            }))
        })?;
        out.push(i);
    }
    Ok(out)
}

/// Add a step unless the plan already has one of that name (model steps are
/// shared between architectures).
fn add_once(
    plan: &mut Plan,
    name: &str,
    f: impl FnOnce(&Plan) -> Result<StepBuilder>,
) -> Result<usize> {
    if let Some(i) = plan.steps.iter().position(|s| s.name == name) {
        return Ok(i);
    }
    let b = f(plan)?;
    Ok(plan.add(b))
}

/// `/opt/demo/images` -> `opt_demo_images`.
fn slug(dest: &Utf8Path) -> String {
    dest.as_str().trim_matches('/').replace('/', "_")
}

/// Relative path of a destination directory inside a tree.
pub fn tree_dir(out: &Utf8Path, dest: &Utf8Path) -> Utf8PathBuf {
    out.join(TREE).join(dest.as_str().trim_start_matches('/'))
}

fn image_step(
    r: &Resolved,
    plan: &Plan,
    img: &crate::recipe::payloads::ImagePayload,
    arch: Arch,
    root: Option<&crate::plan::Step>,
) -> Result<StepBuilder> {
    let what = format!("{}: image `{}`", r.file, img.name);
    let mut b = StepBuilder::new(
        format!("image-{}-{arch}", img.name),
        format!(
            "export image `{}` for linux/{arch} as {}",
            img.name,
            img.archive_name(arch)
        ),
    );
    let source = match &img.source {
        ImageSource::OciLayout(p) => {
            let abs = r.path(p);
            anyhow::ensure!(
                abs.is_dir(),
                "{what}: OCI layout directory {abs} does not exist"
            );
            b = b.input(
                Input::tree_memo(&abs, plan.digest_memo().as_deref())
                    .with_context(|| format!("{what}: reading {abs}"))?,
            );
            oci::Source::Layout(abs)
        }
        ImageSource::OciArchive(p) | ImageSource::DockerArchive(p) => {
            let abs = r.path(p);
            anyhow::ensure!(abs.is_file(), "{what}: archive {abs} does not exist");
            b = b.input(Input::file(&abs).with_context(|| format!("{what}: reading {abs}"))?);
            if matches!(img.source, ImageSource::OciArchive(_)) {
                oci::Source::OciArchive(abs)
            } else {
                oci::Source::DockerArchive(abs)
            }
        }
        ImageSource::RootfsDir(p) => {
            let abs = r.path(p);
            anyhow::ensure!(
                abs.is_dir(),
                "{what}: rootfs directory {abs} does not exist"
            );
            b = b.input(Input::tree(&abs).with_context(|| format!("{what}: reading {abs}"))?);
            oci::Source::RootfsDir(abs)
        }
        ImageSource::Debian(d) => {
            let root = root.expect("a debian source's root step is planned first");
            b = b.after(root);
            let overlay = match &d.overlay {
                Some(o) => {
                    let abs = r.path(o);
                    anyhow::ensure!(
                        abs.is_dir(),
                        "{}: image `{}`: overlay directory {abs} does not exist \
                         (source.debian.overlay)",
                        crate::recipe::locate(&r.file, &format!("name: {}", img.name), "overlay:"),
                        img.name
                    );
                    b = b.input(
                        Input::tree(&abs).with_context(|| format!("{what}: reading {abs}"))?,
                    );
                    Some(abs)
                }
                None => None,
            };
            oci::Source::DebianRoot {
                tar: root.output(debian::ROOTFS_TAR),
                overlay,
                docs: d.docs,
            }
        }
        ImageSource::Registry(reference) => {
            let cert_dir = match &img.cert_dir {
                Some(d) => {
                    let abs = r.path(d);
                    anyhow::ensure!(
                        abs.is_dir(),
                        "{what}: cert_dir {abs} is not a directory (it holds the registry's CA \
                         certificates as *.crt files)"
                    );
                    Some(abs)
                }
                None => None,
            };
            oci::Source::Registry {
                reference: reference.clone(),
                tls: crate::tools::skopeo::Tls {
                    verify: img.tls_verify,
                    cert_dir,
                },
            }
        }
    };
    let op = oci::ImageOp {
        name: img.name.clone(),
        source_label: img.source.label(),
        source,
        arch,
        format: img.format,
        compression: img.compression,
        dest: img.dest.clone(),
        archive: img.archive_name(arch),
        reference: img.reference().to_string(),
        config: oci::ImageConfig::from_payload(img),
        epoch: r.epoch,
    };
    Ok(b.input(Input::value("SOURCE_DATE_EPOCH", r.epoch)).op(op))
}

/// What an image step records about its archive (one `images.json` entry).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    pub name: String,
    /// File name beside `images.json`.
    pub archive: String,
    /// `repo:tag` inside the archive.
    pub reference: String,
    /// Digest of the image manifest for the platform (the source's, or the
    /// one kiln wrote for a docker-archive / rootfs-dir source).
    pub manifest_digest: String,
    /// Digest of the image config (the image ID `docker images` shows).
    pub config_digest: String,
    /// `linux/amd64`, `linux/arm64`.
    pub platform: String,
    /// `docker-archive` or `oci-archive`.
    pub format: String,
    pub compression: String,
    /// sha256 and size of the archive file.
    pub sha256: String,
    pub size: u64,
    /// Where it came from, as the recipe says.
    pub source: String,
}

/// Writes `images.json` and `SHA256SUMS` for the images of one directory.
struct ImagesIndexOp {
    dest: Utf8PathBuf,
    /// (step name, step output directory)
    parts: Vec<(String, Utf8PathBuf)>,
}

impl Op for ImagesIndexOp {
    fn describe(&self) -> serde_json::Value {
        let steps: Vec<&String> = self.parts.iter().map(|(n, _)| n).collect();
        json!({ "images_index": { "dest": self.dest, "images": steps } })
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let mut records = Vec::new();
        for (step, out) in &self.parts {
            let rec_path = out.join(IMAGE_RECORD);
            let rec: ImageRecord = read_record(&rec_path, step)?;
            let archive = tree_dir(out, &self.dest).join(&rec.archive);
            check_present(&archive, rec.size, &format!("image `{}`", rec.name))?;
            records.push(rec);
        }
        records.sort_by(|a, b| a.archive.cmp(&b.archive));
        let dir = tree_dir(cx.out, &self.dest);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir}"))?;
        crate::plan::write_json(&dir.join("images.json"), &json!({ "images": records }))?;
        let sums: String = records
            .iter()
            .map(|r| crate::digest::sha256sum_line(&r.sha256, &r.archive))
            .collect();
        std::fs::write(dir.join(SUMS), sums).with_context(|| format!("writing {dir}/{SUMS}"))?;
        Ok(())
    }
}

pub(crate) fn read_record<T: for<'de> Deserialize<'de>>(path: &Utf8Path, step: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("{path}: step `{step}` left no record (it produced no archive); refusing to stage without it")
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {path}"))
}

/// Fail closed: the archive a record lists must exist with its recorded size.
pub(crate) fn check_present(path: &Utf8Path, size: u64, what: &str) -> Result<()> {
    let md = std::fs::metadata(path).with_context(|| {
        format!("{what}: archive {path} is missing (fail closed: nothing is staged without it)")
    })?;
    if md.len() != size {
        bail!(
            "{what}: archive {path} is {} bytes, its record says {size}",
            md.len()
        );
    }
    Ok(())
}

/// The output file of an archive writer: hashes and counts the bytes that
/// reach the file, behind the chosen compression. The hash and the writes
/// run on a thread of their own ([`crate::digest::BackgroundWriter`]), so
/// the compressor never waits for them.
pub enum Sink {
    Plain(FileWriter),
    Zstd(zstd::Encoder<'static, FileWriter>),
    Gzip(flate2::write::GzEncoder<FileWriter>),
}

type FileWriter = crate::digest::BackgroundWriter<std::fs::File>;

impl Sink {
    pub fn create(path: &Utf8Path, c: Compression) -> Result<Sink> {
        let workers = crate::archive::zstd_workers();
        Sink::create_with(path, c, crate::archive::ZSTD_LEVEL, workers)
    }
    /// [`Sink::create`] with a zstd `level` and `workers` zstd threads (the
    /// bytes do not depend on the number of threads).
    pub fn create_with(path: &Utf8Path, c: Compression, level: i32, workers: u32) -> Result<Sink> {
        let f = std::fs::File::create(path).with_context(|| format!("creating {path}"))?;
        let hw = crate::digest::BackgroundWriter::new(f)?;
        Ok(match c {
            Compression::None => Sink::Plain(hw),
            Compression::Zstd => Sink::Zstd(crate::archive::zstd_writer_with(hw, level, workers)?),
            // The gzip header carries no name and mtime 0: deterministic.
            Compression::Gzip => {
                Sink::Gzip(flate2::GzBuilder::new().write(hw, flate2::Compression::default()))
            }
        })
    }
    /// Finish the stream; returns (sha256 hex, bytes) of the file.
    pub fn finish(self) -> Result<(String, u64)> {
        let hw = match self {
            Sink::Plain(hw) => hw,
            Sink::Zstd(z) => z.finish()?,
            Sink::Gzip(g) => g.finish()?,
        };
        let (_, hex, n) = hw.finish()?;
        Ok((hex, n))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }
}

/// Reads exactly `left` bytes from `inner`, hashing them: a reader that ends
/// early is an error (the file shrank, or a blob is truncated), and
/// [`Exact::finish`] errors when more bytes follow (the file grew).
pub struct Exact<R> {
    inner: R,
    left: u64,
    hasher: Sha256,
    what: String,
}

impl<R: Read> Exact<R> {
    pub fn new(inner: R, size: u64, what: impl Into<String>) -> Exact<R> {
        Exact {
            inner,
            left: size,
            hasher: Sha256::new(),
            what: what.into(),
        }
    }
    /// Hex sha256 of the bytes read; errors when the source has more.
    pub fn finish(mut self) -> Result<String> {
        let mut one = [0u8; 1];
        if self
            .inner
            .read(&mut one)
            .with_context(|| format!("reading {}", self.what))?
            != 0
        {
            bail!(
                "{} grew while it was being read (its size changed since it was planned)",
                self.what
            );
        }
        Ok(hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let cap = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..cap])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{} ended {} bytes early (it shrank while being read, or is truncated)",
                    self.what, self.left
                ),
            ));
        }
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Append a regular file entry of exactly `size` bytes from `r`; returns the
/// sha256 of the bytes (one pass: read, hash, archive).
pub fn append_exact<W: Write, R: Read>(
    b: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    size: u64,
    r: R,
    epoch: i64,
    what: &str,
) -> Result<String> {
    let mut h = crate::archive::header(tar::EntryType::Regular, mode, size, epoch);
    // 1 MiB reads: the tar writer copies through the BufReader's buffer.
    let mut br = std::io::BufReader::with_capacity(1 << 20, Exact::new(r, size, what));
    b.append_data(&mut h, path, &mut br)
        .with_context(|| format!("archiving {what}"))?;
    br.into_inner().finish()
}

/// Append a small in-memory file.
pub fn append_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    epoch: i64,
) -> Result<()> {
    let mut h = crate::archive::header(tar::EntryType::Regular, 0o644, bytes.len() as u64, epoch);
    b.append_data(&mut h, path, bytes)
        .with_context(|| format!("archiving {path}"))
}

/// Append a directory entry (`path` ends with `/`).
pub fn append_dir<W: Write>(b: &mut tar::Builder<W>, path: &str, epoch: i64) -> Result<()> {
    let mut h = crate::archive::header(tar::EntryType::Directory, 0o755, 0, epoch);
    b.append_data(&mut h, path, std::io::empty())
        .with_context(|| format!("archiving {path}"))
}

/// `SOURCE_DATE_EPOCH` as RFC 3339 UTC (`2023-11-14T22:13:20Z`), for image configs.
pub fn rfc3339(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn exact_reader_reports_short_and_long_sources() {
        let mut short = Exact::new(&b"abc"[..], 5, "f");
        let mut buf = Vec::new();
        let e = short.read_to_end(&mut buf).unwrap_err();
        assert!(e.to_string().contains("f ended 2 bytes early"), "{e}");
        let mut long = Exact::new(&b"abcdef"[..], 3, "g");
        let mut buf = Vec::new();
        long.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"abc");
        let e = long.finish().unwrap_err();
        assert!(e.to_string().contains("g grew"), "{e}");
        let mut ok = Exact::new(&b"abc"[..], 3, "h");
        std::io::copy(&mut ok, &mut std::io::sink()).unwrap();
        assert_eq!(ok.finish().unwrap(), crate::digest::bytes_sha256(b"abc"));
    }

    #[test]
    fn slugs_and_tree_dirs() {
        assert_eq!(slug(Utf8Path::new("/opt/demo/images")), "opt_demo_images");
        assert_eq!(
            tree_dir(Utf8Path::new("/c"), Utf8Path::new("/opt/x")),
            "/c/tree/opt/x"
        );
    }
}
