//! Container images as files, without a daemon: read an OCI image layout
//! (or an archive of one, or a `docker save` tar, or a registry image copied
//! with skopeo, or a directory kiln turns into an image), narrow it to one
//! platform, verify every blob against its descriptor, and write a
//! `docker-archive` or `oci-archive` tar in one streamed pass per blob.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::{json, Value};

use super::{append_bytes, append_dir, append_exact, tree_dir, ImageRecord, Sink, IMAGE_RECORD};
use crate::plan::{Op, OpCx};
use crate::recipe::payloads::{ArchiveFormat, Compression};
use crate::recipe::Arch;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and configs are small; anything larger is not one.
const MAX_JSON: u64 = 16 << 20;

/// Where an image comes from (absolute paths).
#[derive(Debug, Clone)]
pub enum Source {
    Layout(Utf8PathBuf),
    OciArchive(Utf8PathBuf),
    DockerArchive(Utf8PathBuf),
    /// A digest-pinned reference, and how skopeo talks TLS to its registry.
    Registry {
        reference: String,
        tls: crate::tools::skopeo::Tls,
    },
    RootfsDir(Utf8PathBuf),
    /// A Debian root tarball written by mmdebstrap (an earlier step), laid
    /// over by `overlay`, filtered into one layer ([`super::debian`]).
    DebianRoot {
        tar: Utf8PathBuf,
        overlay: Option<Utf8PathBuf>,
        docs: bool,
    },
}

/// The config kiln writes for an image it builds (`rootfs-dir`, `debian`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Added to the default `PATH`, which an entry named `PATH` replaces.
    pub env: std::collections::BTreeMap<String, String>,
    /// `port/proto`, as `resolve` normalized them.
    pub exposed_ports: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

/// The `PATH` of images kiln builds, unless the recipe sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ImageConfig {
    pub fn from_payload(i: &crate::recipe::payloads::ImagePayload) -> ImageConfig {
        ImageConfig {
            entrypoint: i.entrypoint.clone(),
            cmd: i.cmd.clone(),
            env: i.env.clone(),
            exposed_ports: i.exposed_ports.clone(),
            workdir: i.workdir.clone(),
            user: i.user.clone(),
        }
    }
    /// The OCI config's `config` object: `Env` sorted by name (`PATH`
    /// included), `ExposedPorts` as `{"8080/tcp": {}}`; unset fields absent.
    pub fn to_oci(&self) -> Value {
        let mut env = self.env.clone();
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut c = json!({ "Env": env });
        if !self.entrypoint.is_empty() {
            c["Entrypoint"] = json!(self.entrypoint);
        }
        if !self.cmd.is_empty() {
            c["Cmd"] = json!(self.cmd);
        }
        if !self.exposed_ports.is_empty() {
            let ports: serde_json::Map<String, Value> = self
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            c["ExposedPorts"] = Value::Object(ports);
        }
        if let Some(w) = &self.workdir {
            c["WorkingDir"] = json!(w);
        }
        if let Some(u) = &self.user {
            c["User"] = json!(u);
        }
        c
    }
    /// Added to an op's description (the key): `cmd` always, the rest when set.
    fn describe_into(&self, d: &mut Value) {
        d["cmd"] = json!(self.cmd);
        if !self.entrypoint.is_empty() {
            d["entrypoint"] = json!(self.entrypoint);
        }
        if !self.env.is_empty() {
            d["env"] = json!(self.env);
        }
        if !self.exposed_ports.is_empty() {
            d["exposed_ports"] = json!(self.exposed_ports);
        }
        if let Some(w) = &self.workdir {
            d["workdir"] = json!(w);
        }
        if let Some(u) = &self.user {
            d["user"] = json!(u);
        }
    }
}

/// One image step: read the source, write the archive and its record.
pub struct ImageOp {
    pub name: String,
    pub source_label: String,
    pub source: Source,
    pub arch: Arch,
    pub format: ArchiveFormat,
    pub compression: Compression,
    pub dest: Utf8PathBuf,
    pub archive: String,
    pub reference: String,
    pub config: ImageConfig,
    pub epoch: i64,
}

impl Op for ImageOp {
    fn describe(&self) -> Value {
        let mut d = json!({ "export_image": {
            "name": self.name,
            "source": self.source_label,
            "platform": platform(self.arch),
            "format": self.format,
            "compression": self.compression,
            "dest": self.dest,
            "archive": self.archive,
            "reference": self.reference,
            "epoch": self.epoch,
        }});
        self.config.describe_into(&mut d["export_image"]);
        if let Source::DebianRoot { tar, overlay, docs } = &self.source {
            d["export_image"]["debian"] =
                json!({ "rootfs": tar, "overlay": overlay, "docs": docs });
        }
        // Part of the skopeo commands, so part of the key (registry sources only).
        // (The CA directory is not: it decides whether the copy is trusted,
        // not what it holds, which the digest pin fixes.)
        if let Source::Registry { tls, .. } = &self.source {
            d["export_image"]["tls_verify"] = json!(tls.verify);
        }
        d
    }
    fn commands(&self) -> Vec<crate::tools::Cmd> {
        use crate::tools::skopeo;
        match &self.source {
            Source::Registry { reference, tls } => vec![
                skopeo::inspect_raw(reference, tls),
                skopeo::copy_to_oci(reference, Utf8Path::new("<layout>"), self.arch, tls),
            ],
            _ => Vec::new(),
        }
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let what = format!("image `{}` ({})", self.name, self.source_label);
        self.export(cx.out).with_context(|| what)
    }
}

impl ImageOp {
    fn export(&self, out: &Utf8Path) -> Result<()> {
        // Scratch space for unpacked archives and generated layouts; removed
        // before the step finishes (and with the step's directory on error).
        let work = crate::exec::TempDir::new(out.join(".work"))?;
        let want = platform(self.arch);
        let img = match &self.source {
            Source::Layout(dir) => select(dir, &want)?,
            Source::OciArchive(file) => {
                let dir = work.path.join("layout");
                unpack(file, &dir)?;
                select(&dir, &want)?
            }
            Source::DockerArchive(file) => {
                let dir = work.path.join("docker");
                unpack(file, &dir)?;
                read_docker_archive(&dir, file, &want)?
            }
            Source::RootfsDir(root) => {
                let dir = work.path.join("layout");
                build_layout(root, &dir, self.arch, &self.config, self.epoch)?;
                select(&dir, &want)?
            }
            Source::DebianRoot { tar, overlay, docs } => {
                let dir = work.path.join("layout");
                let filter = super::debian::Filter {
                    docs: *docs,
                    epoch: self.epoch,
                };
                let label = format!("kiln: {}", self.source_label);
                layout_from_layer(&dir, self.arch, &self.config, self.epoch, &label, |b| {
                    super::debian::write_layer(b, tar, overlay.as_deref(), &filter)
                })?;
                select(&dir, &want)?
            }
            Source::Registry { reference, tls } => {
                let dir = work.path.join("layout");
                copy_from_registry(reference, tls, &dir, self.arch)?;
                select(&dir, &want)?
            }
        };
        let dest_dir = tree_dir(out, &self.dest);
        std::fs::create_dir_all(&dest_dir).with_context(|| format!("creating {dest_dir}"))?;
        let path = dest_dir.join(&self.archive);
        let mut sink = Sink::create(&path, self.compression)?;
        {
            let mut b = tar::Builder::new(&mut sink);
            match self.format {
                ArchiveFormat::OciArchive => {
                    write_oci_archive(&mut b, &img, &self.reference, self.epoch)?
                }
                ArchiveFormat::DockerArchive => {
                    write_docker_archive(&mut b, &img, &self.reference, self.epoch)?
                }
            }
            b.finish().with_context(|| format!("finishing {path}"))?;
        }
        let (sha256, size) = sink.finish().with_context(|| format!("finishing {path}"))?;
        drop(work);
        let rec = ImageRecord {
            name: self.name.clone(),
            archive: self.archive.clone(),
            reference: self.reference.clone(),
            manifest_digest: img.manifest_digest.clone(),
            config_digest: img.config_digest.clone(),
            platform: img.platform.clone(),
            format: match self.format {
                ArchiveFormat::DockerArchive => "docker-archive".into(),
                ArchiveFormat::OciArchive => "oci-archive".into(),
            },
            compression: format!("{:?}", self.compression).to_lowercase(),
            sha256,
            size,
            source: self.source_label.clone(),
        };
        crate::plan::write_json(&out.join(IMAGE_RECORD), &rec)?;
        crate::ui::info(&format!(
            "image {}: {} ({size} bytes, manifest {})",
            self.name, self.archive, rec.manifest_digest
        ));
        Ok(())
    }
}

/// `linux/amd64`.
pub fn platform(arch: Arch) -> String {
    format!("linux/{}", arch.oci())
}

/// A layer blob on disk.
#[derive(Debug, Clone)]
pub struct Layer {
    pub media_type: String,
    /// `sha256:<hex>` of the blob as stored.
    pub digest: String,
    pub size: u64,
    pub path: Utf8PathBuf,
    /// `sha256:<hex>` of the uncompressed tar (from the config).
    pub diff_id: String,
}

/// One platform's image, verified up to its layers (whose digests are
/// checked as they are written).
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub manifest_digest: String,
    pub config: Vec<u8>,
    pub config_media_type: String,
    pub config_digest: String,
    pub layers: Vec<Layer>,
    pub platform: String,
}

fn hex_of(digest: &str, what: &str) -> Result<String> {
    match digest.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(h.into())
        }
        _ => bail!("{what}: unsupported or malformed digest `{digest}` (kiln handles sha256 only)"),
    }
}

fn blob_path(layout: &Utf8Path, digest: &str) -> Result<Utf8PathBuf> {
    Ok(layout
        .join("blobs/sha256")
        .join(hex_of(digest, layout.as_str())?))
}

/// A descriptor's media type, digest and size.
fn desc(v: &Value, what: &str) -> Result<(String, String, u64)> {
    let mt = v["mediaType"].as_str().unwrap_or_default().to_string();
    let digest = v["digest"]
        .as_str()
        .with_context(|| format!("{what}: descriptor without a digest"))?;
    let size = v["size"]
        .as_u64()
        .with_context(|| format!("{what}: descriptor without a size"))?;
    Ok((mt, digest.to_string(), size))
}

/// Read a small blob and check it against its descriptor.
fn read_blob(layout: &Utf8Path, digest: &str, size: u64) -> Result<Vec<u8>> {
    let p = blob_path(layout, digest)?;
    anyhow::ensure!(
        size <= MAX_JSON,
        "{p}: a {size}-byte manifest/config is not plausible"
    );
    let bytes = std::fs::read(&p)
        .with_context(|| format!("reading blob {p} (the layout lacks a blob its index names)"))?;
    anyhow::ensure!(
        bytes.len() as u64 == size,
        "{p}: broken blob: {} bytes, its descriptor says {size}",
        bytes.len()
    );
    let got = format!("sha256:{}", crate::digest::bytes_sha256(&bytes));
    anyhow::ensure!(
        got == digest,
        "{p}: broken blob: its digest is {got}, its descriptor says {digest}"
    );
    Ok(bytes)
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(bytes).with_context(|| format!("{what} is not valid JSON"))
}

/// `os/arch[/variant]` of an index entry's platform object.
fn platform_of(p: &Value) -> Option<String> {
    let os = p["os"].as_str()?;
    let arch = p["architecture"].as_str()?;
    Some(match p["variant"].as_str() {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    })
}

/// Does `have` (`os/arch[/variant]`) satisfy `want` (`linux/arch`)?
fn platform_matches(have: &str, want: &str) -> bool {
    have == want || (want == "linux/arm64" && have == "linux/arm64/v8")
}

/// Pick the image for `want` out of an OCI layout: follows nested indexes,
/// reads configs of entries without a platform, and names what the layout
/// has when the platform is missing.
pub fn select(layout: &Utf8Path, want: &str) -> Result<Image> {
    anyhow::ensure!(
        layout.join("oci-layout").is_file(),
        "{layout} is not an OCI image layout (it has no `oci-layout` file)"
    );
    let index_path = layout.join("index.json");
    let index_bytes =
        std::fs::read(&index_path).with_context(|| format!("reading {index_path}"))?;
    let index = parse_json(&index_bytes, index_path.as_str())?;
    // (media type, digest, size, platform)
    let mut found: Vec<(String, String, u64, String)> = Vec::new();
    collect(layout, &index, index_path.as_str(), &mut found, 0)?;
    let mut have = BTreeSet::new();
    let mut matches: Vec<&(String, String, u64, String)> = Vec::new();
    for f in &found {
        if f.3 == "unknown/unknown" {
            continue; // attestation manifests (buildkit)
        }
        have.insert(f.3.clone());
        if platform_matches(&f.3, want) && !matches.iter().any(|m| m.1 == f.1) {
            matches.push(f);
        }
    }
    match matches.as_slice() {
        [] if have.is_empty() => bail!("{layout}: the layout's index.json lists no image"),
        [] => bail!(
            "{layout} has no {want} image; it has {} (build or pull the image for {want}, \
             or drop that architecture from the recipe)",
            have.into_iter().collect::<Vec<_>>().join(", ")
        ),
        [one] => load(layout, &one.0, &one.1, one.2),
        many => bail!(
            "{layout} has {} different {want} images ({}); keep one in the layout",
            many.len(),
            many.iter()
                .map(|m| m.1.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn collect(
    layout: &Utf8Path,
    index: &Value,
    what: &str,
    out: &mut Vec<(String, String, u64, String)>,
    depth: u32,
) -> Result<()> {
    anyhow::ensure!(depth < 4, "{what}: image indexes nested too deeply");
    let list = index["manifests"]
        .as_array()
        .with_context(|| format!("{what}: no `manifests` list"))?;
    for m in list {
        let (mt, digest, size) = desc(m, what)?;
        if mt == OCI_INDEX || mt == DOCKER_LIST {
            let bytes = read_blob(layout, &digest, size)?;
            let nested = parse_json(&bytes, &format!("index {digest}"))?;
            collect(layout, &nested, &format!("index {digest}"), out, depth + 1)?;
            continue;
        }
        let plat = match platform_of(&m["platform"]) {
            Some(p) => p,
            None => {
                // No platform in the index: the config says which it is.
                let bytes = read_blob(layout, &digest, size)?;
                let man = parse_json(&bytes, &format!("manifest {digest}"))?;
                let (_, cd, cs) = desc(&man["config"], &format!("manifest {digest}"))?;
                let cfg = parse_json(&read_blob(layout, &cd, cs)?, &format!("config {cd}"))?;
                platform_of(&cfg).unwrap_or_else(|| "unknown/unknown".into())
            }
        };
        out.push((mt, digest, size, plat));
    }
    Ok(())
}

/// The config's `rootfs.diff_ids`, one per layer of the manifest (`what`
/// names the manifest in the error).
fn diff_ids(cfg: &serde_json::Value, layers: usize, what: &str) -> Result<Vec<String>> {
    let ids: Vec<String> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(
        layers == ids.len(),
        "{what}: {layers} layers but its config lists {} diff_ids",
        ids.len()
    );
    Ok(ids)
}

fn load(layout: &Utf8Path, media_type: &str, digest: &str, size: u64) -> Result<Image> {
    let manifest = read_blob(layout, digest, size)?;
    let what = format!("manifest {digest}");
    let man = parse_json(&manifest, &what)?;
    let mt = man["mediaType"].as_str().unwrap_or(media_type).to_string();
    anyhow::ensure!(
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST || mt.is_empty(),
        "{what}: media type `{mt}` is not an image manifest"
    );
    let (cmt, cd, cs) = desc(&man["config"], &what)?;
    let config = read_blob(layout, &cd, cs)?;
    let cfg = parse_json(&config, &format!("config {cd}"))?;
    let ls = man["layers"]
        .as_array()
        .with_context(|| format!("{what}: no `layers` list"))?;
    let diff_ids = diff_ids(&cfg, ls.len(), &what)?;
    let mut layers = Vec::new();
    for (l, diff_id) in ls.iter().zip(diff_ids) {
        let (lmt, ld, lsz) = desc(l, &what)?;
        let path = blob_path(layout, &ld)?;
        let md = std::fs::metadata(&path)
            .with_context(|| format!("{path}: the layout lacks layer blob {ld}"))?;
        anyhow::ensure!(
            md.len() == lsz,
            "{path}: broken blob: {} bytes, its descriptor says {lsz}",
            md.len()
        );
        hex_of(&diff_id, &format!("config {cd}"))?;
        layers.push(Layer {
            media_type: lmt,
            digest: ld,
            size: lsz,
            path,
            diff_id,
        });
    }
    Ok(Image {
        manifest,
        manifest_media_type: if mt.is_empty() {
            media_type.to_string()
        } else {
            mt
        },
        manifest_digest: digest.to_string(),
        config,
        config_media_type: if cmt.is_empty() {
            OCI_CONFIG.into()
        } else {
            cmt
        },
        config_digest: cd,
        layers,
        platform: platform_of(&cfg).unwrap_or_default(),
    })
}

/// Unpack a tar (optionally compressed) into `dir` (the tar crate refuses
/// entries that escape it).
fn unpack(file: &Utf8Path, dir: &Utf8Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut a = crate::archive::open_tar(file)?;
    a.set_preserve_permissions(false);
    a.set_overwrite(true);
    a.unpack(dir).with_context(|| format!("unpacking {file}"))
}

/// What kind of compression a blob has, by its magic bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Magic {
    Plain,
    Gzip,
    Zstd,
}

fn magic(path: &Utf8Path) -> Result<Magic> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let mut m = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        let k = f.read(&mut m[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(if n >= 2 && m[..2] == [0x1f, 0x8b] {
        Magic::Gzip
    } else if n == 4 && m == [0x28, 0xb5, 0x2f, 0xfd] {
        Magic::Zstd
    } else {
        Magic::Plain
    })
}

fn decoder<'a>(m: Magic, r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    Ok(match m {
        Magic::Plain => Box::new(r),
        Magic::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Magic::Zstd => Box::new(zstd::Decoder::new(r)?),
    })
}

/// First pass over a compressed layer: check its blob digest and its
/// diff_id, return the uncompressed size (the tar entry needs it up front).
fn measure(l: &Layer) -> Result<u64> {
    let f = std::fs::File::open(&l.path).with_context(|| format!("opening {}", l.path))?;
    let mut raw = crate::digest::HashReader::new(std::io::BufReader::with_capacity(1 << 20, f));
    let m = magic(&l.path)?;
    let mut hw = crate::digest::HashWriter::new(std::io::sink());
    let decoded = decoder(m, &mut raw).and_then(|mut d| Ok(std::io::copy(&mut d, &mut hw)?));
    std::io::copy(&mut raw, &mut std::io::sink())?;
    let (rawhex, rawn) = raw.finish();
    let (_, diffhex, n) = hw.finish();
    anyhow::ensure!(
        rawn == l.size && format!("sha256:{rawhex}") == l.digest,
        "{}: broken blob: sha256:{rawhex} ({rawn} bytes), its descriptor says {} ({} bytes)",
        l.path,
        l.digest,
        l.size
    );
    decoded.with_context(|| format!("decompressing layer {}", l.path))?;
    anyhow::ensure!(
        format!("sha256:{diffhex}") == l.diff_id,
        "{}: the uncompressed layer is sha256:{diffhex}, the image config says {}",
        l.path,
        l.diff_id
    );
    Ok(n)
}

/// A `docker save` style tar: `manifest.json`, `<config hex>.json`,
/// uncompressed layers `<diff_id hex>.tar` (what `docker load`, `k3s ctr
/// images import` and skopeo read).
pub fn write_docker_archive<W: Write>(
    b: &mut tar::Builder<W>,
    img: &Image,
    reference: &str,
    epoch: i64,
) -> Result<()> {
    let chex = hex_of(&img.config_digest, "config")?;
    let config_name = format!("{chex}.json");
    append_bytes(b, &config_name, &img.config, epoch)?;
    let mut names = Vec::new();
    let mut written = BTreeSet::new();
    for l in &img.layers {
        let dhex = hex_of(&l.diff_id, "config diff_id")?;
        let name = format!("{dhex}.tar");
        names.push(name.clone());
        if !written.insert(dhex.clone()) {
            continue;
        }
        let m = magic(&l.path)?;
        let f = std::fs::File::open(&l.path).with_context(|| format!("opening {}", l.path))?;
        let what = format!("layer {}", l.path);
        let got = if m == Magic::Plain {
            let got = append_exact(b, &name, 0o644, l.size, f, epoch, &what)?;
            anyhow::ensure!(
                format!("sha256:{got}") == l.digest,
                "{}: broken blob: its digest is sha256:{got}, its descriptor says {}",
                l.path,
                l.digest
            );
            got
        } else {
            let size = measure(l)?;
            let d = decoder(m, std::io::BufReader::with_capacity(1 << 20, f))?;
            append_exact(b, &name, 0o644, size, d, epoch, &what)?
        };
        anyhow::ensure!(
            format!("sha256:{got}") == l.diff_id,
            "{}: the layer is sha256:{got}, the image config says {}",
            l.path,
            l.diff_id
        );
    }
    let manifest = json!([{ "Config": config_name, "RepoTags": [reference], "Layers": names }]);
    let mut text = serde_json::to_vec(&manifest)?;
    text.push(b'\n');
    append_bytes(b, "manifest.json", &text, epoch)?;
    Ok(())
}

/// An OCI image layout in a tar, holding exactly this platform's manifest
/// (its digest unchanged), config and layer blobs.
pub fn write_oci_archive<W: Write>(
    b: &mut tar::Builder<W>,
    img: &Image,
    reference: &str,
    epoch: i64,
) -> Result<()> {
    append_bytes(
        b,
        "oci-layout",
        b"{\"imageLayoutVersion\":\"1.0.0\"}",
        epoch,
    )?;
    let (os_arch, tag) = (
        img.platform.split('/').collect::<Vec<_>>(),
        tag_of(reference),
    );
    let mut platform = json!({ "os": os_arch.first().copied().unwrap_or("linux"), "architecture": os_arch.get(1).copied().unwrap_or("") });
    if let Some(v) = os_arch.get(2) {
        platform["variant"] = json!(v);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": img.manifest_media_type,
            "digest": img.manifest_digest,
            "size": img.manifest.len(),
            "platform": platform,
            "annotations": {
                "org.opencontainers.image.ref.name": tag,
                "io.containerd.image.name": reference,
            },
        }],
    });
    let mut text = serde_json::to_vec(&index)?;
    text.push(b'\n');
    append_bytes(b, "index.json", &text, epoch)?;
    append_dir(b, "blobs/", epoch)?;
    append_dir(b, "blobs/sha256/", epoch)?;
    let mut written = BTreeSet::new();
    let mut put = |b: &mut tar::Builder<W>, digest: &str, bytes: &[u8]| -> Result<()> {
        if written.insert(digest.to_string()) {
            append_bytes(
                b,
                &format!("blobs/sha256/{}", hex_of(digest, "blob")?),
                bytes,
                epoch,
            )?;
        }
        Ok(())
    };
    put(b, &img.manifest_digest, &img.manifest)?;
    put(b, &img.config_digest, &img.config)?;
    for l in &img.layers {
        if !written.insert(l.digest.clone()) {
            continue;
        }
        let f = std::fs::File::open(&l.path).with_context(|| format!("opening {}", l.path))?;
        let name = format!("blobs/sha256/{}", hex_of(&l.digest, "layer")?);
        let got = append_exact(
            b,
            &name,
            0o644,
            l.size,
            f,
            epoch,
            &format!("layer {}", l.path),
        )?;
        anyhow::ensure!(
            format!("sha256:{got}") == l.digest,
            "{}: broken blob: its digest is sha256:{got}, its descriptor says {}",
            l.path,
            l.digest
        );
    }
    Ok(())
}

/// `repo:tag` -> `tag` (default `latest`); a `:` in a registry host is not a tag.
fn tag_of(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.rsplit_once(':') {
        Some((_, t)) => t.to_string(),
        None => "latest".into(),
    }
}

/// Read a `docker save` tar unpacked into `dir`; the image must be for `want`.
fn read_docker_archive(dir: &Utf8Path, file: &Utf8Path, want: &str) -> Result<Image> {
    let mpath = dir.join("manifest.json");
    let bytes = std::fs::read(&mpath)
        .with_context(|| format!("{file} has no manifest.json: not a docker-archive"))?;
    let list = parse_json(&bytes, &format!("{file}: manifest.json"))?;
    let entries = list
        .as_array()
        .with_context(|| format!("{file}: manifest.json is not a list"))?;
    let e = match entries.as_slice() {
        [one] => one,
        [] => bail!("{file}: manifest.json lists no image"),
        many => bail!(
            "{file} holds {} images ({}); kiln exports one image per payload",
            many.len(),
            many.iter()
                .map(|e| e["RepoTags"].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let cname = e["Config"]
        .as_str()
        .with_context(|| format!("{file}: manifest.json entry without Config"))?;
    let cpath = safe_join(dir, cname, file)?;
    let config =
        std::fs::read(&cpath).with_context(|| format!("{file}: reading config {cname}"))?;
    let chex = crate::digest::bytes_sha256(&config);
    let stem = cname
        .trim_end_matches(".json")
        .rsplit('/')
        .next()
        .unwrap_or("");
    if stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::ensure!(
            stem == chex,
            "{file}: config {cname} has digest sha256:{chex}, which does not match its name in manifest.json"
        );
    }
    let cfg = parse_json(&config, &format!("{file}: config {cname}"))?;
    let plat = platform_of(&cfg).unwrap_or_else(|| "unknown/unknown".into());
    anyhow::ensure!(
        platform_matches(&plat, want),
        "{file} has no {want} image; it has {plat} (a docker-archive holds one platform)"
    );
    let lnames = e["Layers"]
        .as_array()
        .with_context(|| format!("{file}: manifest.json entry without Layers"))?;
    let diff_ids = diff_ids(&cfg, lnames.len(), &format!("{file}: manifest.json"))?;
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for (ln, diff_id) in lnames.iter().zip(diff_ids) {
        let ln = ln
            .as_str()
            .with_context(|| format!("{file}: a layer name is not a string"))?;
        let path = safe_join(dir, ln, file)?;
        let m = magic(&path).with_context(|| format!("{file}: layer {ln} is missing"))?;
        let size = std::fs::metadata(&path)?.len();
        let digest = format!("sha256:{}", crate::digest::file_sha256(&path)?);
        let media_type = match m {
            Magic::Plain => OCI_LAYER,
            Magic::Gzip => OCI_LAYER_GZIP,
            Magic::Zstd => OCI_LAYER_ZSTD,
        };
        let l = Layer {
            media_type: media_type.into(),
            digest,
            size,
            path,
            diff_id,
        };
        // Verify the layer against the config now (the docker-archive's manifest).
        if m == Magic::Plain {
            anyhow::ensure!(
                l.digest == l.diff_id,
                "{file}: layer {ln} is {}, the config says {}: the archive does not match its manifest",
                l.digest,
                l.diff_id
            );
        } else {
            measure(&l).with_context(|| format!("{file}: layer {ln}"))?;
        }
        descs.push(json!({ "mediaType": l.media_type, "digest": l.digest, "size": l.size }));
        layers.push(l);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": format!("sha256:{chex}"), "size": config.len() },
        "layers": descs,
    });
    let manifest = serde_json::to_vec(&manifest)?;
    Ok(Image {
        manifest_digest: format!("sha256:{}", crate::digest::bytes_sha256(&manifest)),
        manifest,
        manifest_media_type: OCI_MANIFEST.into(),
        config,
        config_media_type: OCI_CONFIG.into(),
        config_digest: format!("sha256:{chex}"),
        layers,
        platform: plat,
    })
}

fn safe_join(dir: &Utf8Path, rel: &str, file: &Utf8Path) -> Result<Utf8PathBuf> {
    let p = Utf8Path::new(rel);
    anyhow::ensure!(
        p.components()
            .all(|c| matches!(c, camino::Utf8Component::Normal(_))),
        "{file}: manifest.json names `{rel}`, which is outside the archive"
    );
    Ok(dir.join(p))
}

/// Turn a directory into a single-layer OCI image layout at `dir`:
/// deterministic layer tar (sorted, uid/gid 0, mtime = epoch), config,
/// manifest, index.
pub fn build_layout(
    root: &Utf8Path,
    dir: &Utf8Path,
    arch: Arch,
    config: &ImageConfig,
    epoch: i64,
) -> Result<()> {
    layout_from_layer(dir, arch, config, epoch, "kiln: rootfs-dir", |b| {
        crate::archive::append_tree(b, root, epoch)
            .with_context(|| format!("archiving {root} as an image layer"))
    })
}

/// The tar writer of a layer kiln builds (hashing what it writes).
pub type LayerBuilder = tar::Builder<crate::digest::HashWriter<std::io::BufWriter<std::fs::File>>>;

/// A single-layer OCI image layout at `dir` whose layer `fill` writes
/// (uncompressed, so its digest is its diff_id), with `config` and the
/// platform of `arch` in the image config; `created_by` goes into its history.
pub fn layout_from_layer(
    dir: &Utf8Path,
    arch: Arch,
    config: &ImageConfig,
    epoch: i64,
    created_by: &str,
    fill: impl FnOnce(&mut LayerBuilder) -> Result<()>,
) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {blobs}"))?;
    let tmp = dir.join("layer.tar");
    let f = std::fs::File::create(&tmp).with_context(|| format!("creating {tmp}"))?;
    let mut b = tar::Builder::new(crate::digest::HashWriter::new(
        std::io::BufWriter::with_capacity(1 << 20, f),
    ));
    b.follow_symlinks(false);
    fill(&mut b)?;
    let (mut w, lhex, lsize) = b.into_inner()?.finish();
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, blobs.join(&lhex))?;
    let created = super::rfc3339(epoch);
    let mut config = json!({
        "created": created,
        "architecture": arch.oci(),
        "os": "linux",
        "config": config.to_oci(),
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{lhex}")] },
        "history": [{ "created": created, "created_by": created_by }],
    });
    if arch == Arch::Arm64 {
        config["variant"] = json!("v8");
    }
    let config = serde_json::to_vec(&config)?;
    let chex = crate::digest::bytes_sha256(&config);
    std::fs::write(blobs.join(&chex), &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": format!("sha256:{chex}"), "size": config.len() },
        "layers": [{ "mediaType": OCI_LAYER, "digest": format!("sha256:{lhex}"), "size": lsize }],
    }))?;
    let mhex = crate::digest::bytes_sha256(&manifest);
    std::fs::write(blobs.join(&mhex), &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{ "mediaType": OCI_MANIFEST, "digest": format!("sha256:{mhex}"), "size": manifest.len() }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(
        dir.join("oci-layout"),
        b"{\"imageLayoutVersion\":\"1.0.0\"}",
    )?;
    Ok(())
}

/// Copy one platform of a digest-pinned registry image into an OCI layout.
fn copy_from_registry(
    reference: &str,
    tls: &crate::tools::skopeo::Tls,
    dir: &Utf8Path,
    arch: Arch,
) -> Result<()> {
    let want = platform(arch);
    let raw = crate::tools::run(&crate::tools::skopeo::inspect_raw(reference, tls))?;
    let top = parse_json(&raw.stdout, &format!("the manifest of {reference}"))?;
    let mt = top["mediaType"].as_str().unwrap_or_default();
    if mt == OCI_INDEX || mt == DOCKER_LIST || top["manifests"].is_array() {
        let have: Vec<String> = top["manifests"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| platform_of(&m["platform"]))
                    .collect()
            })
            .unwrap_or_default();
        anyhow::ensure!(
            have.iter().any(|p| platform_matches(p, &want)),
            "{reference} has no {want} image; it has {}",
            have.join(", ")
        );
    }
    crate::tools::run(&crate::tools::skopeo::copy_to_oci(
        reference, dir, arch, tls,
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_platforms() {
        assert_eq!(tag_of("demo-web:1.2"), "1.2");
        assert_eq!(tag_of("registry.local:5000/demo-web"), "latest");
        assert_eq!(tag_of("registry.local:5000/demo-web:v1"), "v1");
        assert!(platform_matches("linux/arm64/v8", "linux/arm64"));
        assert!(!platform_matches("linux/arm/v7", "linux/arm64"));
        assert_eq!(
            platform_of(&json!({"os":"linux","architecture":"amd64"})).unwrap(),
            "linux/amd64"
        );
    }

    /// The config kiln writes: every field the recipe sets, the platform
    /// (arm64 with variant v8), and a layer whose digest is its diff_id.
    #[test]
    fn a_built_image_carries_the_recipes_config_and_platform() {
        let t = tempfile::tempdir().unwrap();
        let base = Utf8Path::from_path(t.path()).unwrap();
        let root = base.join("root");
        std::fs::create_dir_all(root.join("srv/www")).unwrap();
        std::fs::write(root.join("srv/www/healthz"), "ok").unwrap();
        let config = ImageConfig {
            entrypoint: vec!["/bin/busybox".into()],
            cmd: vec!["httpd".into(), "-f".into()],
            env: [("LANG", "C.UTF-8"), ("APP", "demo")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            exposed_ports: vec!["53/udp".into(), "8080/tcp".into()],
            workdir: Some("/srv/www".into()),
            user: Some("65534:65534".into()),
        };
        for (arch, variant) in [(Arch::Amd64, None), (Arch::Arm64, Some("v8"))] {
            let dir = base.join(format!("layout-{arch}"));
            build_layout(&root, &dir, arch, &config, 1_700_000_000).unwrap();
            let img = select(&dir, &platform(arch)).unwrap();
            let cfg: Value = serde_json::from_slice(&img.config).unwrap();
            assert_eq!(cfg["architecture"], arch.oci());
            assert_eq!(cfg["os"], "linux");
            assert_eq!(cfg["variant"].as_str(), variant);
            assert_eq!(cfg["created"], "2023-11-14T22:13:20Z");
            let c = &cfg["config"];
            assert_eq!(c["Entrypoint"], json!(["/bin/busybox"]));
            assert_eq!(c["Cmd"], json!(["httpd", "-f"]));
            assert_eq!(
                c["Env"],
                json!(["APP=demo", "LANG=C.UTF-8", format!("PATH={DEFAULT_PATH}")])
            );
            assert_eq!(c["ExposedPorts"], json!({"53/udp": {}, "8080/tcp": {}}));
            assert_eq!(c["WorkingDir"], "/srv/www");
            assert_eq!(c["User"], "65534:65534");
            assert_eq!(img.layers.len(), 1);
            let l = &img.layers[0];
            assert_eq!(l.media_type, OCI_LAYER);
            assert_eq!(cfg["rootfs"]["diff_ids"], json!([l.diff_id]));
            assert_eq!(l.digest, l.diff_id, "an uncompressed layer");
            assert_eq!(
                format!("sha256:{}", crate::digest::file_sha256(&l.path).unwrap()),
                l.digest
            );
        }
        // PATH set by the recipe replaces the default; unset fields stay out.
        let only_path = ImageConfig {
            env: [("PATH".to_string(), "/opt/bin".to_string())].into(),
            ..ImageConfig::default()
        };
        assert_eq!(only_path.to_oci(), json!({ "Env": ["PATH=/opt/bin"] }));
    }

    #[test]
    fn built_layout_is_deterministic_and_selectable() {
        let t = tempfile::tempdir().unwrap();
        let base = Utf8Path::from_path(t.path()).unwrap();
        let root = base.join("root");
        std::fs::create_dir_all(root.join("srv")).unwrap();
        std::fs::write(root.join("srv/index.html"), "hi\n").unwrap();
        let config = ImageConfig {
            cmd: vec!["/bin/true".into()],
            ..ImageConfig::default()
        };
        build_layout(&root, &base.join("a"), Arch::Amd64, &config, 1_700_000_000).unwrap();
        build_layout(&root, &base.join("b"), Arch::Amd64, &config, 1_700_000_000).unwrap();
        let a = select(&base.join("a"), "linux/amd64").unwrap();
        let b = select(&base.join("b"), "linux/amd64").unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.platform, "linux/amd64");
        let e = select(&base.join("a"), "linux/arm64")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has no linux/arm64 image; it has linux/amd64"),
            "{e}"
        );
    }
}
