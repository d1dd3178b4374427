//! The OVA: the appliance disk as a streamOptimized VMDK, an OVF 1.x
//! descriptor and a manifest, in one USTAR archive, all but the VMDK
//! conversion written in-process.
//!
//! Two steps per build:
//! 1. `ova-vmdk-<arch>`: `qemu-img convert` to a streamOptimized VMDK, then
//!    its random `CID=` is replaced by one derived from the source disk's
//!    fingerprint ([`vmdk::set_cid`]), so the VMDK is reproducible.
//! 2. `ova-<arch>`: the descriptor ([`ovf::render`]), the archive
//!    ([`tar::Writer`]: `.ovf`, `.mf`, `.vmdk`, in that order) with the VMDK
//!    hashed while it is copied (the manifest's space is reserved and filled
//!    in afterwards), then [`lint::lint`] re-reads the result. A failing
//!    lint fails the step, so nothing unlinted reaches `output/`.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{bail, ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::json;

use crate::plan::{Input, Op, OpCx, Plan, StepBuilder};
use crate::qcow2::gpt::{self, Guid};
use crate::recipe::ova::Converter;
use crate::recipe::{Arch, Resolved};
use crate::tools::{qemu_img, vmdk_convert};

pub mod lint;

/// Copy the (first) VMDK out of `ova` into `dir`; returns its path and
/// whether the descriptor asks for EFI firmware. For a smoke boot.
pub fn extract_disk(ova: &Utf8Path, dir: &Utf8Path) -> Result<(Utf8PathBuf, bool)> {
    let mut f = std::fs::File::open(ova).with_context(|| format!("opening {ova}"))?;
    let total = f.metadata()?.len();
    let listing =
        tar::list(&mut f, total).with_context(|| format!("reading {ova} as a tar archive"))?;
    let member = |ext: &str| listing.members.iter().find(|m| m.name.ends_with(ext));
    let (Some(ovf), Some(vmdk)) = (member(".ovf"), member(".vmdk")) else {
        bail!("{ova}: no .ovf descriptor and .vmdk disk in it (`cargo xtask ova lint {ova}` says more)");
    };
    let mut text = Vec::new();
    f.seek(SeekFrom::Start(ovf.offset))?;
    (&mut f).take(ovf.size).read_to_end(&mut text)?;
    let efi = String::from_utf8_lossy(&text).contains("vmw:key=\"firmware\" vmw:value=\"efi\"");
    let name = vmdk.name.rsplit('/').next().unwrap_or("disk.vmdk");
    let out = dir.join(name);
    f.seek(SeekFrom::Start(vmdk.offset))?;
    let mut w = std::fs::File::create(&out).with_context(|| format!("creating {out}"))?;
    let n = std::io::copy(&mut (&mut f).take(vmdk.size), &mut w)
        .with_context(|| format!("copying {} out of {ova}", vmdk.name))?;
    ensure!(n == vmdk.size, "{ova}: {} is cut short", vmdk.name);
    Ok((out, efi))
}
pub mod manifest;
pub mod ovf;
pub mod tar;
pub mod vmdk;

pub use manifest::DigestAlgo;

/// Formats a source disk may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vmdk,
}

impl DiskFormat {
    /// qemu-img's `-f` name.
    pub fn qemu(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
        }
    }
}

/// Which firmware the VM boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    /// UEFI when a raw disk is UEFI-only (GPT with an EFI system partition,
    /// no BIOS boot partition, no MBR boot code); BIOS otherwise.
    Auto,
    Efi,
    Bios,
}

/// The disk to wrap.
#[derive(Debug, Clone)]
pub struct DiskSource {
    pub path: Utf8PathBuf,
    pub format: DiskFormat,
    /// The VM boots with UEFI (`vmw:Config firmware=efi`).
    pub uefi_only: bool,
    /// What the VMDK step depends on: the file by content, or the step that built it.
    pub input: Input,
}

impl DiskSource {
    /// A disk image given on the command line: checked to exist and to be a
    /// disk image (qcow2 or sparse VMDK by magic, raw with an MBR/GPT boot
    /// signature).
    pub fn from_file(path: &Utf8Path, firmware: Firmware) -> Result<DiskSource> {
        let md = std::fs::metadata(path)
            .with_context(|| format!("the disk image {path} does not exist or cannot be read"))?;
        ensure!(md.is_file(), "the disk image {path} is not a regular file");
        let format = sniff(path)?;
        let uefi_only = match (firmware, format) {
            (Firmware::Efi, _) => true,
            (Firmware::Bios, _) => false,
            (Firmware::Auto, DiskFormat::Raw) => detect_uefi_only(path)?,
            (Firmware::Auto, _) => {
                crate::ui::info(&format!(
                    "{path}: cannot look inside a {} image for its boot loader; assuming BIOS (pass --firmware efi for UEFI)",
                    format.qemu()
                ));
                false
            }
        };
        Ok(DiskSource {
            path: path.to_owned(),
            format,
            uefi_only,
            input: Input::file(path)?,
        })
    }
}

impl DiskSource {
    /// The disk an earlier step of the plan builds (e.g. the qcow2 builder's).
    pub fn from_step(
        step: &crate::plan::Step,
        path: Utf8PathBuf,
        format: DiskFormat,
        uefi_only: bool,
    ) -> DiskSource {
        DiskSource {
            path,
            format,
            uefi_only,
            input: Input::step(step),
        }
    }

    /// The recipe's own disk, the one the qcow2 builder makes: its steps join
    /// `plan` (once, however many formats wrap it).
    pub fn from_recipe(r: &Resolved, plan: &mut Plan, firmware: Firmware) -> Result<DiskSource> {
        let d = crate::qcow2::plan_disk(r, plan, Arch::Amd64)?;
        let format = match d.format {
            "raw" => DiskFormat::Raw,
            "qcow2" => DiskFormat::Qcow2,
            other => {
                bail!("the qcow2 builder made a `{other}` disk, which the OVA step cannot read")
            }
        };
        let uefi_only = match firmware {
            Firmware::Auto => d.uefi_only,
            Firmware::Efi => true,
            Firmware::Bios => false,
        };
        Ok(DiskSource::from_step(
            plan.step(d.step),
            d.path,
            format,
            uefi_only,
        ))
    }
}

/// The disk format by content.
pub fn sniff(path: &Utf8Path) -> Result<DiskFormat> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("opening the disk image {path}"))?;
    let len = f.metadata()?.len();
    let mut b = [0u8; 512];
    let n = f.read(&mut b).with_context(|| format!("reading {path}"))?;
    if n >= 4 && &b[..4] == b"QFI\xfb" {
        return Ok(DiskFormat::Qcow2);
    }
    if n >= 4 && &b[..4] == b"KDMV" {
        return Ok(DiskFormat::Vmdk);
    }
    if n == 512 && len % 512 == 0 && b[510] == 0x55 && b[511] == 0xaa {
        return Ok(DiskFormat::Raw);
    }
    bail!(
        "{path} is not a disk image: no qcow2 or VMDK magic, and not a raw disk with an MBR/GPT \
         (a raw image must be a whole number of 512-byte sectors with the 55 AA boot signature)"
    )
}

/// A raw disk is UEFI-only when it has a GPT with an EFI system partition,
/// no BIOS boot partition and no boot code in the MBR.
pub fn detect_uefi_only(path: &Utf8Path) -> Result<bool> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let mut head = vec![0u8; 1024];
    if f.read_exact(&mut head).is_err() {
        return Ok(false);
    }
    let mbr_code_empty = head[..440].iter().all(|&b| b == 0);
    let gpt = &head[512..1024];
    if &gpt[..8] != b"EFI PART" {
        return Ok(false);
    }
    let lba = u64::from_le_bytes(gpt[72..80].try_into().expect("8"));
    let count = u32::from_le_bytes(gpt[80..84].try_into().expect("4")).min(1024) as usize;
    let size = u32::from_le_bytes(gpt[84..88].try_into().expect("4")) as usize;
    if !(128..=4096).contains(&size) {
        return Ok(false);
    }
    let mut entries = vec![0u8; count * size];
    f.seek(SeekFrom::Start(lba * 512))?;
    f.read_exact(&mut entries)
        .with_context(|| format!("reading the GPT entries of {path}"))?;
    let types: Vec<String> = entries
        .chunks(size)
        .map(|e| Guid::from_disk(e[..16].try_into().expect("16 bytes")).to_string_lower())
        .collect();
    let esp = types.iter().any(|t| t == gpt::TYPE_ESP);
    let bios = types.iter().any(|t| t == gpt::TYPE_BIOS_BOOT);
    Ok(esp && !bios && mbr_code_empty)
}

/// What [`plan`] added.
pub struct Planned {
    pub vmdk_step: usize,
    pub ova_step: usize,
    /// `<name>-<version>-amd64.ova`
    pub file_name: String,
}

/// Member names inside the OVA.
pub struct Members {
    pub ovf: String,
    pub mf: String,
    pub vmdk: String,
}

impl Members {
    pub fn for_appliance(name: &str) -> Members {
        Members {
            ovf: format!("{name}.ovf"),
            mf: format!("{name}.mf"),
            vmdk: format!("{name}-disk1.vmdk"),
        }
    }
}

/// The descriptor's values from the recipe.
pub fn params(r: &Resolved, uefi: bool, disk_file: &str) -> ovf::Params {
    let a = &r.recipe.appliance;
    let o = &r.recipe.ova;
    ovf::Params {
        name: a.name.clone(),
        product: a.product().to_string(),
        vendor: a.vendor.clone(),
        version: r.version.clone(),
        url: a.url.clone(),
        description: a.description.clone(),
        os_type: o.os_type.clone(),
        os_id: o
            .os_type_id()
            .expect("os_type checked when the recipe was resolved"),
        cpus: o.cpus,
        memory_mb: o.memory_mb,
        nic: o.nic.ovf_subtype().into(),
        virtual_system_type: o.virtual_system_type.clone(),
        efi: uefi,
        disk_file: disk_file.into(),
    }
}

/// Add the VMDK and OVA steps and publish the OVA (after the secret scan).
pub fn plan(r: &Resolved, plan: &mut Plan, arch: Arch, disk: DiskSource) -> Result<Planned> {
    ensure!(
        arch == Arch::Amd64,
        "OVAs are built for amd64 only (VMware and VirtualBox run x86 guests)"
    );
    let members = Members::for_appliance(r.name());
    let fingerprint = match &disk.input {
        Input::File { sha256, .. } => sha256.clone(),
        Input::Step { key, .. } => key.clone(),
        other => serde_json::to_string(other)?,
    };
    let cid = vmdk::cid_from(&format!("{fingerprint}\0{}", members.vmdk));
    let vmdk_out = format!("{}/{}", crate::plan::OUT, members.vmdk);
    let converter = r.recipe.ova.converter;
    let mut b = StepBuilder::new(
        format!("ova-vmdk-{arch}"),
        "convert the disk to a streamOptimized VMDK",
    )
    .input(disk.input.clone())
    .input(Input::value("disk-format", disk.format.qemu()));
    b = match converter {
        Converter::QemuImg => b.cmd(qemu_img::convert_stream_vmdk(
            &disk.path,
            disk.format.qemu(),
            Utf8Path::new(&vmdk_out),
        )),
        Converter::VmdkConvert => {
            b = b.input(Input::value("converter", "vmdk-convert"));
            if disk.format == DiskFormat::Raw {
                b.cmd(vmdk_convert::convert(&disk.path, Utf8Path::new(&vmdk_out)))
            } else {
                // vmdk-convert reads raw disks only: a raw copy in the step's
                // directory, removed once the VMDK is written.
                let raw = format!("{}/disk.raw", crate::plan::OUT);
                b.cmd(qemu_img::convert_to_raw(
                    &disk.path,
                    disk.format.qemu(),
                    Utf8Path::new(&raw),
                ))
                .cmd(vmdk_convert::convert(
                    Utf8Path::new(&raw),
                    Utf8Path::new(&vmdk_out),
                ))
                .op(RemoveFile {
                    file: "disk.raw".into(),
                })
            }
        }
    };
    let vmdk_step = plan.add(
        b.op(SetCid {
            file: members.vmdk.clone(),
            cid,
        })
        .long(),
    );
    let vmdk_path = plan.step(vmdk_step).output(&members.vmdk);
    let file_name = r.artifact_name(arch, "ova");
    let p = params(r, disk.uefi_only, &members.vmdk);
    let digest = r.recipe.ova.digest;
    let ova_step = plan.add(
        StepBuilder::new(
            format!("ova-{arch}"),
            "write the OVF descriptor, manifest and OVA, then lint it",
        )
        .after(plan.step(vmdk_step))
        .input(Input::value("epoch", r.epoch))
        .op(WriteOva {
            vmdk: vmdk_path,
            file_name: file_name.clone(),
            members,
            params: p,
            digest,
            mtime: r.epoch,
        }),
    );
    let from = plan.step(ova_step).output(&file_name);
    plan.publish(from, file_name.clone(), true);
    Ok(Planned {
        vmdk_step,
        ova_step,
        file_name,
    })
}

/// Remove an intermediate file from the step's directory.
struct RemoveFile {
    file: String,
}

impl Op for RemoveFile {
    fn describe(&self) -> serde_json::Value {
        json!({ "remove": self.file })
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let p = cx.out.join(&self.file);
        std::fs::remove_file(&p).with_context(|| format!("removing {p}"))
    }
}

struct SetCid {
    file: String,
    cid: u32,
}

impl Op for SetCid {
    fn describe(&self) -> serde_json::Value {
        json!({ "vmdk-set-cid": { "file": self.file, "cid": format!("{:08x}", self.cid) } })
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        vmdk::set_cid(&cx.out.join(&self.file), self.cid)
    }
}

struct WriteOva {
    vmdk: Utf8PathBuf,
    file_name: String,
    members: Members,
    params: ovf::Params,
    digest: DigestAlgo,
    mtime: i64,
}

impl Op for WriteOva {
    fn describe(&self) -> serde_json::Value {
        json!({ "ova": {
            "file": self.file_name,
            "members": [self.members.ovf, self.members.mf, self.members.vmdk],
            "descriptor": self.params,
            "digest": self.digest,
            "mtime": self.mtime,
            "vmdk": self.vmdk,
        }})
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let dest = cx.out.join(&self.file_name);
        let built = write_ova(
            &self.vmdk,
            &dest,
            &self.members,
            &self.params,
            self.digest,
            self.mtime,
        )?;
        // Remember the digest the lint pass computed, so publishing does not
        // read the file again (same memo as `exec::cached_digest`).
        crate::exec::remember_digest(&dest, &built.sha256);
        Ok(())
    }
}

/// What [`write_ova`] produced.
#[derive(Debug)]
pub struct Built {
    /// sha256 of the OVA (from the lint pass).
    pub sha256: String,
    pub capacity: u64,
    pub vmdk_size: u64,
}

/// Write the OVA for `vmdk` to `dest` and lint it; a lint failure is an error.
pub fn write_ova(
    vmdk_path: &Utf8Path,
    dest: &Utf8Path,
    members: &Members,
    params: &ovf::Params,
    digest: DigestAlgo,
    mtime: i64,
) -> Result<Built> {
    let t0 = std::time::Instant::now();
    let mut src = std::fs::File::open(vmdk_path).with_context(|| format!("opening {vmdk_path}"))?;
    let vmdk_size = src.metadata()?.len();
    let (h, desc) = vmdk::read_header_and_descriptor(&mut src)
        .with_context(|| format!("reading {vmdk_path}"))?;
    let problems = h.stream_optimized_problems();
    ensure!(problems.is_empty(), "{vmdk_path}: {}", problems.join("; "));
    ensure!(
        vmdk::create_type(&desc) == Some("streamOptimized"),
        "{vmdk_path}: the descriptor's createType is not streamOptimized"
    );
    tar::check_member_size(&members.vmdk, vmdk_size)?;
    src.seek(SeekFrom::Start(0))?;
    let facts = ovf::DiskFacts {
        file_size: vmdk_size,
        capacity: h.virtual_size(),
    };
    let ovf_text = ovf::render(params, facts);
    let ovf_hex = {
        let mut hh = manifest::Hasher::new(digest);
        hh.update(ovf_text.as_bytes());
        hh.hex()
    };
    // The manifest's length is known before the VMDK's digest: reserve it.
    let placeholder = "0".repeat(digest.hex_len());
    let mf_len = manifest::line(digest, &members.ovf, &ovf_hex).len()
        + manifest::line(digest, &members.vmdk, &placeholder).len();

    let out = std::fs::File::create(dest).with_context(|| format!("creating {dest}"))?;
    let mut w = tar::Writer::new(std::io::BufWriter::with_capacity(1 << 20, out), mtime);
    w.append_bytes(&members.ovf, ovf_text.as_bytes())?;
    let mf_offset = w.position() + tar::BLOCK;
    w.append_bytes(&members.mf, &vec![b'\n'; mf_len])?;
    // The VMDK's digest is computed on a second thread while it is copied.
    let mut hasher = manifest::Background::spawn(manifest::Hasher::new(digest));
    let mut progress = crate::ui::Progress::bytes("ova", vmdk_size);
    w.append_reader(&members.vmdk, vmdk_size, &mut src, |chunk| {
        hasher.feed(chunk);
        progress.inc(chunk.len() as u64);
    })?;
    progress.finish();
    let mut out = w
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {dest}"))?;
    let mf = manifest::line(digest, &members.ovf, &ovf_hex)
        + &manifest::line(digest, &members.vmdk, &hasher.finish());
    ensure!(
        mf.len() == mf_len,
        "internal error: manifest length changed"
    );
    out.seek(SeekFrom::Start(mf_offset))?;
    out.write_all(mf.as_bytes())?;
    out.flush().with_context(|| format!("writing {dest}"))?;
    drop(out);

    crate::ui::debug(&format!(
        "ova: archive written in {:.2}s",
        t0.elapsed().as_secs_f64()
    ));
    let t1 = std::time::Instant::now();
    let report = lint::lint(dest, digest)?;
    crate::ui::debug(&format!(
        "ova: lint took {:.2}s",
        t1.elapsed().as_secs_f64()
    ));
    if !report.ok() {
        bail!(
            "the OVA kiln wrote does not pass `ova lint`:\n  - {}",
            report.problems.join("\n  - ")
        );
    }
    let want = [
        members.ovf.as_str(),
        members.mf.as_str(),
        members.vmdk.as_str(),
    ];
    ensure!(
        report.members == want,
        "unexpected members {:?}",
        report.members
    );
    Ok(Built {
        sha256: report.sha256,
        capacity: facts.capacity,
        vmdk_size,
    })
}
