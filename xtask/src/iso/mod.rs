//! The installer ISO: remaster a stock Ubuntu live-server ISO into a
//! zero-touch installer of the appliance, without extracting it.
//!
//! The output starts as a copy of the base (reflinked where the file system
//! can share blocks, else copied in the kernel), and xorriso adds one session
//! to it (`-dev`): the changed and added files (`-map`) and a new directory
//! tree are appended, and the volume descriptors and system area at the
//! start are rewritten to point at them; every other byte of the base stays
//! where it is, so only what changed goes through xorriso. The base's boot
//! setup is replayed (`-report_el_torito cmd`, with its intervals read from
//! the base): El Torito BIOS and UEFI entries, the grub2 MBR, protective
//! MBR/GPT, the partition offset and the appended EFI partition (appended
//! again after the new session) stay as Ubuntu built them. Should adding a
//! session fail, the image is written whole instead (`-indev`/`-outdev`,
//! `-boot_image any replay`). On both paths, what the replay does not carry
//! (the cylinder alignment, the padding after the appended partitions) is
//! read from the base's reports and set explicitly ([`layout`]). Added: `/nocloud/` (the seed's `user-data` and
//! `meta-data`), the staged overlay under `/<overlay_dir>/` (`overlay.tar.zst`
//! or `tree/`), `/.disk/info` naming the appliance; patched: `grub.cfg` and
//! `loopback.cfg` (see [`grub`]) and the matching `md5sum.txt` lines.
//!
//! Reproducible: `SOURCE_DATE_EPOCH` is passed to xorriso (volume dates, GPT
//! GUIDs, file dates = mtimes) and every added path gets the epoch as its
//! date and uid/gid 0 inside the image, so two builds are byte-identical.

pub mod grub;
pub mod installer;
pub mod layout;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::json;

use crate::plan::{Input, Op, OpCx, Plan, StepBuilder};
use crate::recipe::iso::OverlayFormat;
use crate::recipe::{Arch, Resolved};
use crate::seed::NOCLOUD_DIR;
use crate::tools::{self, xorriso};
use crate::ui;

pub const GRUB_CFG: &str = "boot/grub/grub.cfg";
pub const LOOPBACK_CFG: &str = "boot/grub/loopback.cfg";
pub const MD5SUM_TXT: &str = "md5sum.txt";
pub const DISK_INFO: &str = ".disk/info";

/// Where the base ISO comes from.
#[derive(Debug, Clone, Serialize)]
pub struct BaseSpec {
    pub path: Utf8PathBuf,
    /// Expected sha256 (from the recipe or `--base-sha256`); verified while
    /// xorriso runs. `None` for `--base-iso` without a checksum: the file is
    /// then fingerprinted when planning.
    pub sha256: Option<String>,
}

/// What the command line overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub base_iso: Option<Utf8PathBuf>,
    pub base_sha256: Option<String>,
    /// Compute the grub.cfg diff and xorriso command into `plan.notes` (dry run).
    pub preview: bool,
}

/// Everything the remaster op needs, fixed at plan time.
#[derive(Debug, Clone, Serialize)]
struct Remaster {
    base: BaseSpec,
    seed_dir: Utf8PathBuf,
    stage_dir: Utf8PathBuf,
    overlay_dir: String,
    overlay_format: OverlayFormat,
    patch: grub::Patch,
    disk_info: String,
    epoch: i64,
    artifact: String,
    /// Where file digests are remembered by identity ([`Plan::digest_memo`]):
    /// a base whose sha256 was checked before, and which has not changed
    /// since, is not read again for the check. A location: not in the key.
    #[serde(skip)]
    digest_memo: Option<Utf8PathBuf>,
}

/// Add the ISO steps (seed, stage, download if needed, remaster); returns
/// the remaster step's index. The artifact is `<step out>/<name>-<version>-amd64.iso`.
pub fn plan(r: &Resolved, plan: &mut Plan, o: &Overrides) -> Result<usize> {
    let io = &r.recipe.iso;
    // `--base-iso` asks for a remaster whatever the recipe's mode.
    if io.mode() == crate::recipe::iso::IsoMode::Installer && o.base_iso.is_none() {
        return installer::plan(r, plan);
    }
    let seed = crate::seed::plan(r, plan, crate::seed::SeedTarget::Iso)?;
    let stage = crate::stage::plan_or_reuse(r, plan, Arch::Amd64)?;
    let mut b = StepBuilder::new(
        "iso-amd64",
        "remaster the Ubuntu ISO into the appliance installer",
    )
    .long();
    let base = match (&o.base_iso, &io.base) {
        (Some(p), _) => {
            let p = crate::fsutil::absolute(p)?;
            check_readable(&p)?;
            if let Some(s) = &o.base_sha256 {
                anyhow::ensure!(
                    s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()),
                    "--base-sha256 must be 64 hex digits"
                );
            }
            BaseSpec {
                path: p,
                sha256: o.base_sha256.as_ref().map(|s| s.to_ascii_lowercase()),
            }
        }
        (None, Some(src)) => match (&src.path, &src.url) {
            (Some(p), _) => {
                let p = r.path(p);
                check_readable(&p).with_context(|| format!("{}: iso.base.path", r.file))?;
                BaseSpec {
                    path: p,
                    sha256: Some(src.sha256.clone()),
                }
            }
            (None, Some(url)) => {
                let dl = crate::download::plan(plan, url, &src.sha256, "iso-base", "base.iso")?;
                b = b.after(plan.step(dl));
                // Verified by the download step; not hashed a second time.
                BaseSpec {
                    path: plan.step(dl).output("base.iso"),
                    sha256: None,
                }
            }
            (None, None) => unreachable!("checked when the recipe was resolved"),
        },
        (None, None) => bail!(
            "no base ISO: pass `--base-iso PATH` or set `iso.base: {{path|url, sha256}}` in {}",
            r.file
        ),
    };
    b = match (
        &base.sha256,
        o.base_iso.is_some() || io.base.as_ref().is_some_and(|s| s.path.is_some()),
    ) {
        (Some(sha), _) => b.input(Input::value("base.sha256", sha)),
        (None, true) => b.input(Input::file_memo(&base.path, plan.digest_memo().as_deref())?),
        (None, false) => b, // downloaded: the download step's key carries the sha256
    };
    let name = r.name();
    let product = r.recipe.appliance.product();
    // The arguments go into GRUB: refuse the `;` trap and friends before any work.
    crate::seed::check_kernel_args(&crate::seed::autoinstall_kernel_args())?;
    let patch = grub::Patch {
        args: crate::seed::autoinstall_kernel_words(),
        title: io.title().to_string(),
        id: format!("kiln-{name}"),
        marker: crate::seed::installed_marker(name),
        timeout: io.timeout,
    };
    let op = Remaster {
        base: base.clone(),
        seed_dir: plan.step(seed).out.clone(),
        stage_dir: plan.step(stage).out.clone(),
        overlay_dir: io.overlay_dir.clone(),
        overlay_format: io.overlay_format,
        patch,
        disk_info: format!("{product} {} installer (autoinstall, {name})", r.version),
        epoch: r.epoch,
        artifact: r.artifact_name(Arch::Amd64, "iso"),
        digest_memo: plan.digest_memo(),
    };
    let op_copy = op.clone();
    let artifact = op.artifact.clone();
    b = b
        .after(plan.step(seed))
        .after(plan.step(stage))
        .input(Input::value("SOURCE_DATE_EPOCH", r.epoch))
        .op(op);
    let i = plan.add(b);
    let from = plan.step(i).output(&artifact);
    plan.publish(from, artifact, true);
    if o.preview {
        let out = plan.step(i).out.clone();
        preview(&op_copy, plan, &out)?;
    }
    Ok(i)
}

fn check_readable(p: &Utf8Path) -> Result<()> {
    let f =
        std::fs::File::open(p).with_context(|| format!("base ISO {p} is missing or unreadable"))?;
    anyhow::ensure!(
        f.metadata()?.is_file(),
        "base ISO {p} is not a regular file"
    );
    Ok(())
}

/// ISO 9660: the primary volume descriptor at byte 32768 starts `\x01CD001`.
pub fn is_iso9660(p: &Utf8Path) -> Result<bool> {
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {p}"))?;
    let mut buf = vec![0u8; 32768 + 6];
    match f.read_exact(&mut buf) {
        Ok(()) => Ok(&buf[32768..] == b"\x01CD001"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {p}")),
    }
}

/// What xorriso reports about a base ISO.
#[derive(Debug, Clone, Default)]
pub struct BaseInfo {
    /// `-report_el_torito as_mkisofs` lines.
    pub el_torito: Vec<String>,
    /// `-report_system_area plain` lines.
    pub system_area: Vec<String>,
    /// Files (without leading `/`) up to depth 3.
    pub files: BTreeSet<String>,
}

impl BaseInfo {
    pub fn bios(&self) -> bool {
        self.el_torito.iter().any(|l| l.starts_with("-b "))
    }
    pub fn efi(&self) -> bool {
        self.el_torito.iter().any(|l| l.starts_with("-e "))
    }
}

pub fn inspect(iso: &Utf8Path) -> Result<BaseInfo> {
    if !is_iso9660(iso)? {
        bail!("{iso} is not an ISO 9660 image (no CD001 volume descriptor at byte 32768)");
    }
    let out = tools::run(&xorriso::inspect(iso))?;
    let mut info = BaseInfo::default();
    for l in out.stdout_str().lines() {
        if let Some(f) = l.strip_prefix("'/").and_then(|l| l.strip_suffix('\'')) {
            info.files.insert(f.replace("'\"'\"'", "'"));
        } else if l.starts_with('-') {
            info.el_torito.push(l.to_string());
        } else if !l.trim().is_empty() {
            info.system_area.push(l.to_string());
        }
    }
    Ok(info)
}

/// Check the base and produce the patched files; shared by the op and `--dry-run`.
struct Prepared {
    info: BaseInfo,
    /// The base's boot setup as arguments for [`xorriso::grow`].
    boot: Vec<String>,
    /// The base's layout settings the replay drops ([`layout`]).
    kept: layout::Kept,
    /// (ISO path, original text or None, new text)
    texts: Vec<(String, Option<String>, String)>,
}

fn prepare(op: &Remaster, work: &Utf8Path) -> Result<Prepared> {
    let base = &op.base.path;
    let info = inspect(base)?;
    if !info.bios() && !info.efi() {
        bail!("{base} has no El Torito boot record: it is not a bootable installer ISO");
    }
    if !info.efi() {
        ui::warn(&format!(
            "{base} has no EFI El Torito entry (BIOS-only): the installer will not boot on UEFI machines"
        ));
    }
    if !info.files.contains(GRUB_CFG) {
        bail!("{base} has no /{GRUB_CFG}: kiln patches GRUB's menu (an Ubuntu 20.04+ live-server ISO has it)");
    }
    let wanted: Vec<&str> = [GRUB_CFG, LOOPBACK_CFG, MD5SUM_TXT, DISK_INFO]
        .into_iter()
        .filter(|f| info.files.contains(*f))
        .collect();
    std::fs::create_dir_all(work)?;
    let pairs: Vec<(String, String)> = wanted
        .iter()
        .map(|f| (format!("/{f}"), work.join(f.replace('/', "_")).to_string()))
        .collect();
    tools::run(&xorriso::extract(base, &pairs))?;
    let read = |f: &str| -> Result<String> {
        let p = work.join(f.replace('/', "_"));
        let bytes =
            std::fs::read(&p).with_context(|| format!("reading /{f} copied out of {base}"))?;
        String::from_utf8(bytes).with_context(|| format!("{base}: /{f} is not UTF-8 text"))
    };
    let mut texts = Vec::new();
    for f in [GRUB_CFG, LOOPBACK_CFG] {
        if !wanted.contains(&f) {
            ui::warn(&format!(
                "{base} has no /{f}; only the other GRUB configuration is patched"
            ));
            continue;
        }
        let old = read(f)?;
        let new = grub::patch(&old, &op.patch, &format!("{base}:/{f}"))?;
        texts.push((f.to_string(), Some(old), new));
    }
    let old_info = if wanted.contains(&DISK_INFO) {
        Some(read(DISK_INFO)?)
    } else {
        None
    };
    texts.push((
        DISK_INFO.to_string(),
        old_info,
        format!("{}\n", op.disk_info),
    ));
    if wanted.contains(&MD5SUM_TXT) {
        // Filled in by the op once every added file exists.
        texts.push((
            MD5SUM_TXT.to_string(),
            Some(read(MD5SUM_TXT)?),
            String::new(),
        ));
    }
    let report = tools::run(&xorriso::boot_setup(base))?;
    let boot = xorriso::replay_for_growing(&report.stdout_str(), base)?;
    let kept = layout::Kept::from_reports(&info.el_torito, &info.system_area)
        .with_context(|| format!("reading the system area layout of {base}"))?;
    Ok(Prepared {
        info,
        boot,
        kept,
        texts,
    })
}

/// Mapped inputs: (local path, ISO path). Seed and stage outputs are mapped
/// straight from their cache directories (no copy).
fn maps(
    op: &Remaster,
    add: &Utf8Path,
    texts: &[(String, Option<String>, String)],
) -> Vec<(String, String)> {
    let mut m: Vec<(String, String)> = texts
        .iter()
        .map(|(f, _, _)| (add.join(f).to_string(), format!("/{f}")))
        .collect();
    for f in ["user-data", "meta-data"] {
        m.push((
            op.seed_dir.join(f).to_string(),
            format!("/{NOCLOUD_DIR}/{f}"),
        ));
    }
    let d = &op.overlay_dir;
    match op.overlay_format {
        OverlayFormat::Tar => {
            for f in [
                crate::stage::TARBALL.to_string(),
                format!("{}.sha256", crate::stage::TARBALL),
            ] {
                m.push((op.stage_dir.join(&f).to_string(), format!("/{d}/{f}")));
            }
        }
        // The tree's contents directly under /<dir> (what the late-commands copy).
        OverlayFormat::Tree => m.push((
            op.stage_dir.join(crate::stage::TREE).to_string(),
            format!("/{d}"),
        )),
    }
    m
}

/// How the image is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// A session added to a copy of the base (`-dev`).
    Grow,
    /// The whole image written anew (`-indev`/`-outdev`).
    Rewrite,
}

/// The full xorriso command: maps, then dates/owners of everything added.
fn remaster_cmd(
    op: &Remaster,
    out: &Utf8Path,
    maps: &[(String, String)],
    boot: &[String],
    kept: &layout::Kept,
    method: Method,
) -> tools::Cmd {
    let mut c = match method {
        Method::Grow => xorriso::grow(out, maps, boot, op.epoch),
        Method::Rewrite => xorriso::remaster(&op.base.path, out, maps, op.epoch),
    }
    .args(kept.args());
    // Added directories (/nocloud, /<overlay_dir>) and files: epoch dates
    // (xorriso takes ctime/atime from mtime), owner root.
    let mut targets: BTreeSet<String> = maps.iter().map(|(_, i)| i.clone()).collect();
    targets.insert(format!("/{NOCLOUD_DIR}"));
    targets.insert(format!("/{}", op.overlay_dir));
    let targets: Vec<String> = targets.into_iter().collect();
    let epoch = format!("={}", op.epoch);
    c = c
        .args(["-alter_date_r", "b", &epoch])
        .args(&targets)
        .arg("--");
    c = c.args(["-chown_r", "0"]).args(&targets).arg("--");
    c.args(["-chgrp_r", "0"]).args(&targets).arg("--")
}

/// `md5sum.txt`: replace the lines of changed files, append lines for new
/// ones (sorted), keep everything else.
pub fn update_md5sums(old: &str, new: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    for line in old.lines() {
        let path = line
            .split_once("  ")
            .map(|(_, p)| p.trim_start_matches('*'));
        match path.and_then(|p| p.strip_prefix("./").map(|q| (p, q))) {
            Some((_, rel)) if new.contains_key(rel) => {
                out.push_str(&format!("{}  ./{rel}\n", new[rel]));
                seen.insert(rel.to_string());
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (rel, md5) in new {
        if !seen.contains(rel) {
            out.push_str(&format!("{md5}  ./{rel}\n"));
        }
    }
    out
}

fn file_md5(p: &Utf8Path) -> Result<String> {
    use md5::{Digest, Md5};
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {p}"))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {p}"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Every file under the mapped inputs, by ISO path (without leading `/`).
fn mapped_files(maps: &[(String, String)]) -> Result<BTreeMap<String, Utf8PathBuf>> {
    let mut v = BTreeMap::new();
    for (local, iso) in maps {
        let local = Utf8Path::new(local);
        let iso = iso.trim_start_matches('/');
        if local.is_dir() {
            for (rel, md) in crate::digest::walk_sorted(local)? {
                if md.is_file() {
                    v.insert(format!("{iso}/{rel}"), local.join(&rel));
                }
            }
        } else {
            v.insert(iso.to_string(), local.to_owned());
        }
    }
    Ok(v)
}

impl Op for Remaster {
    fn describe(&self) -> serde_json::Value {
        json!({ "iso_remaster": self })
    }
    /// `<...>` stands for the files found in the base (extracted, then
    /// patched and mapped back) and the date and owner fixes for each.
    fn commands(&self) -> Vec<tools::Cmd> {
        use tools::MORE;
        let more = || vec![(MORE.to_string(), MORE.to_string())];
        let iso = Utf8Path::new(crate::plan::OUT).join(&self.artifact);
        vec![
            xorriso::inspect(&self.base.path),
            xorriso::extract(&self.base.path, &more()),
            xorriso::boot_setup(&self.base.path),
            xorriso::grow(&iso, &more(), &[MORE.to_string()], self.epoch).arg(MORE),
            xorriso::remaster(&self.base.path, &iso, &more(), self.epoch).arg(MORE),
        ]
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        self.run_in(cx.out, Method::Grow)
    }
}

/// Remaster `base` into `out/<name>.iso` with default options (benchmarks);
/// `whole` writes the whole image (the fallback) instead of adding a session.
/// `digest_memo` as [`Plan::digest_memo`] (for the base's sha256 check).
#[allow(clippy::too_many_arguments)]
pub fn remaster_into(
    base: &Utf8Path,
    sha256: Option<&str>,
    seed_dir: &Utf8Path,
    stage_dir: &Utf8Path,
    out: &Utf8Path,
    epoch: i64,
    whole: bool,
    digest_memo: Option<&Utf8Path>,
) -> Result<Utf8PathBuf> {
    let op = Remaster {
        base: BaseSpec {
            path: base.to_owned(),
            sha256: sha256.map(str::to_string),
        },
        seed_dir: seed_dir.to_owned(),
        stage_dir: stage_dir.to_owned(),
        overlay_dir: "kiln".into(),
        overlay_format: OverlayFormat::Tar,
        patch: grub::Patch {
            args: crate::seed::autoinstall_kernel_words(),
            title: "Install bench".into(),
            id: "kiln-bench".into(),
            marker: crate::seed::installed_marker("bench"),
            timeout: 5,
        },
        disk_info: "bench".into(),
        epoch,
        artifact: "bench.iso".into(),
        digest_memo: digest_memo.map(Utf8Path::to_owned),
    };
    let method = if whole { Method::Rewrite } else { Method::Grow };
    op.run_in(out, method)?;
    Ok(out.join(&op.artifact))
}

impl Remaster {
    fn run_in(&self, out: &Utf8Path, method: Method) -> Result<()> {
        // Verify the base's checksum on another core while xorriso reads it.
        let verify = self.base.sha256.clone().map(|want| {
            let p = self.base.path.clone();
            let memo = self.digest_memo.clone();
            std::thread::spawn(move || -> Result<()> {
                let got = crate::digest::file_sha256_memo(&p, memo.as_deref())?;
                anyhow::ensure!(
                    got == want,
                    "base ISO {p}: sha256 mismatch: expected {want}, got {got} (wrong file, or a corrupt download)"
                );
                Ok(())
            })
        });
        let result = self.build(out, method);
        if let Some(t) = verify {
            t.join()
                .map_err(|_| anyhow::anyhow!("checksum thread panicked"))??;
        }
        result
    }

    fn build(&self, out: &Utf8Path, method: Method) -> Result<()> {
        let work = out.join("base-files");
        let add = out.join("iso-files");
        let mut prep = prepare(self, &work)?;
        // Write the patched/added text files (md5sum.txt last, it lists the others).
        let maps_now = maps(self, &add, &prep.texts);
        let files = mapped_files(&maps_now)?;
        for (f, _, new) in &prep.texts {
            if f == MD5SUM_TXT {
                continue;
            }
            write_file(&add.join(f), new.as_bytes())?;
        }
        if let Some(t) = prep.texts.iter_mut().find(|t| t.0 == MD5SUM_TXT) {
            let mut sums = BTreeMap::new();
            for (iso, local) in &files {
                if iso != MD5SUM_TXT {
                    sums.insert(iso.clone(), file_md5(local)?);
                }
            }
            t.2 = update_md5sums(t.1.as_deref().unwrap_or(""), &sums);
            write_file(&add.join(MD5SUM_TXT), t.2.as_bytes())?;
        }
        let _ = &prep.info;
        let _ = std::fs::remove_dir_all(&work);
        crate::fsutil::set_tree_mtimes(&add, self.epoch)?;
        let iso = out.join(&self.artifact);
        let size = std::fs::metadata(&self.base.path)
            .map(|m| m.len())
            .unwrap_or(0);
        let progress = watch_size(&iso, size);
        let r = self.write_image(&iso, &maps_now, &prep.boot, &prep.kept, method);
        progress.stop();
        r?;
        // xorriso leaves the flush to kiln (`-stdio_sync off`): flush the image
        // and take its sha256 for `.sha256` at the same time, the hash reading
        // from the page cache while the disk writes.
        crate::exec::flush_and_digest(&iso)?;
        Ok(())
    }
}

/// `to` (new, mode 0644) with the bytes of `from`: a reflink (`FICLONE`)
/// where the file system shares blocks between files, else an in-kernel copy
/// (`copy_file_range`, which `std::io::copy` uses between files; it falls back
/// to reading and writing by itself).
fn clone_or_copy(from: &Utf8Path, to: &Utf8Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = std::fs::File::open(from).with_context(|| format!("opening {from}"))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(to)
        .with_context(|| format!("creating {to}"))?;
    // SAFETY: FICLONE takes the source descriptor; both files are open.
    if unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0 {
        return Ok(());
    }
    std::io::copy(&mut src, &mut dst).with_context(|| format!("copying {from} to {to}"))?;
    Ok(())
}

impl Remaster {
    /// Add a session to a copy of the base, or write the image whole (asked
    /// to, or when adding the session fails; a failed copy, i.e. a full disk,
    /// is an error).
    fn write_image(
        &self,
        iso: &Utf8Path,
        maps: &[(String, String)],
        boot: &[String],
        kept: &layout::Kept,
        method: Method,
    ) -> Result<()> {
        if method == Method::Grow {
            clone_or_copy(&self.base.path, iso)?;
            let cmd = remaster_cmd(self, iso, maps, boot, kept, Method::Grow);
            ui::info(&format!("  $ {cmd}"));
            match tools::run(&cmd) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    crate::signals::check()?;
                    ui::warn(&format!(
                        "adding a session to a copy of the base failed ({e:#}); writing the whole image instead"
                    ));
                    std::fs::remove_file(iso).with_context(|| format!("removing {iso}"))?;
                }
            }
        }
        let cmd = remaster_cmd(self, iso, maps, boot, kept, Method::Rewrite);
        ui::info(&format!("  $ {cmd}"));
        tools::run(&cmd)?;
        Ok(())
    }
}

fn write_file(p: &Utf8Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {d}"))?;
    }
    std::fs::write(p, bytes).with_context(|| format!("writing {p}"))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// A progress bar that follows a file growing towards `total` bytes.
struct SizeWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn watch_size(p: &Utf8Path, total: u64) -> SizeWatch {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (s, p) = (stop.clone(), p.to_owned());
    let thread = std::thread::spawn(move || {
        let mut bar = ui::Progress::bytes("write ISO", total.max(1));
        let mut last = 0;
        while !s.load(Ordering::Relaxed) {
            let now = std::fs::metadata(&p)
                .map(|m| m.len())
                .unwrap_or(0)
                .min(total);
            if now > last {
                bar.inc(now - last);
                last = now;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        bar.finish();
    });
    SizeWatch {
        stop,
        thread: Some(thread),
    }
}

impl SizeWatch {
    fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `--dry-run`: the grub.cfg diffs and the xorriso command, when the base is
/// at hand (a URL base not yet downloaded has no preview).
fn preview(op: &Remaster, plan: &mut Plan, step_out: &Utf8Path) -> Result<()> {
    if !op.base.path.is_file() {
        plan.notes.push(format!(
            "base ISO {} is not downloaded yet: the grub.cfg diff is shown once it is in the cache",
            op.base.path
        ));
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix("kiln-iso-preview-")
        .tempdir()
        .context("creating a temporary directory")?;
    let work = Utf8Path::from_path(tmp.path())
        .context("temporary directory is not UTF-8")?
        .to_owned();
    let p = prepare(op, &work)?;
    for (f, old, new) in &p.texts {
        if f == GRUB_CFG || f == LOOPBACK_CFG {
            plan.notes
                .push(grub::diff(old.as_deref().unwrap_or(""), new, f));
        }
    }
    let m = maps(op, &step_out.join("iso-files"), &p.texts);
    plan.notes.push(format!(
        "system area layout of the base that the replayed boot setup does not carry, set explicitly: {}",
        p.kept.describe()
    ));
    let cmd = remaster_cmd(
        op,
        &step_out.join(&op.artifact),
        &m,
        &p.boot,
        &p.kept,
        Method::Grow,
    );
    plan.notes.push(format!(
        "xorriso command of step iso-amd64, run on a copy of the base:\n  $ {cmd}"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5sums_replace_changed_and_append_new() {
        let old = "aaa  ./boot/grub/grub.cfg\nbbb  ./casper/vmlinuz\nccc  ./.disk/info\n";
        let mut new = BTreeMap::new();
        new.insert("boot/grub/grub.cfg".to_string(), "111".to_string());
        new.insert(".disk/info".to_string(), "333".to_string());
        new.insert("nocloud/user-data".to_string(), "222".to_string());
        assert_eq!(
            update_md5sums(old, &new),
            "111  ./boot/grub/grub.cfg\nbbb  ./casper/vmlinuz\n333  ./.disk/info\n222  ./nocloud/user-data\n"
        );
    }
}
