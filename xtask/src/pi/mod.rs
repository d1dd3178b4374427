//! The Raspberry Pi target: a flashable arm64 image of the appliance
//! (`output/<name>-<version>-arm64-pi.img.zst`), built rootless on any host.
//!
//! It shares everything up to the root file system with the arm64 qcow2
//! ([`crate::qcow2`]): one stage, one cached mmdebstrap root (which, for a
//! recipe with `pi:`, also holds Debian's `raspi-firmware`), the same merge
//! of the staged tree and kiln's initrd (which finds the root by
//! `PARTUUID=`). The image step ([`image`]) writes an MBR card with a FAT32
//! boot partition (firmware, device trees, kernel, initrd, `config.txt`,
//! `cmdline.txt`; [`boot`]) and an ext4 root, then lints it ([`lint`]).
//! A second step compresses it; the secret scan gates publication.

pub mod boot;
pub mod image;
pub mod lint;
pub mod mbr;

use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use serde_json::json;

use crate::plan::{Input, Op, OpCx, Plan, StepBuilder, OUT};
use crate::qcow2::spec::{Carrier, DiskSpec, Ids};
use crate::recipe::pi::Compression;
use crate::recipe::{Arch, Resolved};

/// The published file name: `<name>-<version>-arm64-pi.img[.zst|.xz]`.
pub fn artifact_name(r: &Resolved, c: Compression) -> String {
    format!("{}-{}-arm64-pi.img{}", r.name(), r.version, c.suffix())
}

/// What the Raspberry Pi 3B's firmware loads from a card's boot partition,
/// copied out of it (for a smoke boot on qemu's `raspi3b`, which does not
/// run the GPU firmware).
pub struct BootFiles {
    pub kernel: camino::Utf8PathBuf,
    pub dtb: camino::Utf8PathBuf,
    pub initrd: camino::Utf8PathBuf,
    /// `cmdline.txt`, one line.
    pub cmdline: String,
}

/// Byte offset of the boot partition (the MBR's first partition, FAT) of
/// the raw `card`.
pub fn boot_partition_offset(card: &Utf8Path) -> Result<u64> {
    use std::io::Read;
    let mut head = [0u8; 512];
    std::fs::File::open(card)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("reading the partition table of {card}"))?;
    let table = mbr::parse(&head).with_context(|| format!("{card}: not a Raspberry Pi card"))?;
    let Some((_, fat)) = table.parts.first() else {
        bail!("{card}: the partition table is empty (no boot partition)");
    };
    Ok(fat.offset())
}

/// Copy the boot partition (the MBR's first partition) of the raw `card`
/// into `dir/boot` and name the Pi 3B's files in it.
pub fn boot_files(card: &Utf8Path, dir: &Utf8Path) -> Result<BootFiles> {
    let boot = dir.join("boot");
    std::fs::create_dir_all(&boot).with_context(|| format!("creating {boot}"))?;
    crate::tools::run(&crate::tools::mtools::extract_all(
        card,
        boot_partition_offset(card)?,
        &boot,
    ))?;
    let file = |name: &str| -> Result<camino::Utf8PathBuf> {
        let p = boot.join(name);
        if !p.is_file() {
            bail!("{card}: the boot partition has no {name}");
        }
        Ok(p)
    };
    let cmdline = std::fs::read_to_string(file("cmdline.txt")?)
        .with_context(|| format!("reading cmdline.txt of {card}"))?
        .trim()
        .to_string();
    Ok(BootFiles {
        kernel: file("vmlinuz")?,
        dtb: file("bcm2837-rpi-3-b.dtb")?,
        initrd: file("initrd.img")?,
        cmdline,
    })
}

/// Plan the image, its compression and publication; returns the last step.
pub fn plan(r: &Resolved, plan: &mut Plan) -> Result<usize> {
    let Some(p) = &r.recipe.pi else {
        bail!(
            "{}: the recipe has no `pi:` section; add `pi: {{}}` to build a Raspberry Pi image",
            r.file
        );
    };
    let arch = Arch::Arm64;
    let q = &r.recipe.qcow2;
    if !matches!(q.base, crate::recipe::qcow2::Base::Packages) {
        bail!(
            "{}: the Raspberry Pi image is built from Debian packages; `qcow2.base: image` \
             (a vendor cloud image) cannot make one",
            r.file
        );
    }
    let stage = crate::stage::plan_or_reuse(r, plan, arch)?;
    let rootfs = crate::qcow2::rootfs::plan(r, plan, arch)?;
    let ids = Ids::derive_in("pi", r.epoch, r.name(), arch);
    let disk_id = mbr::disk_id(&crate::epoch::derived_uuid(
        r.epoch,
        &format!("pi/{}/disk-id", r.name()),
    ))?;
    // With cloud-init in the image, its NoCloud seed rides on the boot partition.
    let carries = r.root_has_cloud_init(arch);
    let root = DiskSpec {
        pi_boot: Some(mbr::partuuid(disk_id, 1)),
        carrier: carries.then(|| Carrier::BootPartition {
            label: p.boot_label.clone(),
        }),
        ..DiskSpec::root(
            r,
            arch,
            ids,
            plan.step(rootfs).output(crate::qcow2::rootfs::ROOTFS_TAR),
            plan.step(stage).output(crate::stage::TREE),
            boot::cmdline(&mbr::partuuid(disk_id, 2), &p.cmdline),
        )
    };
    let seed = if carries {
        let name = crate::seed::step_name(crate::seed::SeedTarget::Pi);
        Some(match plan.steps.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => crate::seed::plan(r, plan, crate::seed::SeedTarget::Pi)?,
        })
    } else {
        None
    };
    let spec = image::PiSpec {
        root,
        size: p.size_bytes,
        boot_bytes: p.boot_bytes,
        boot_label: p.boot_label.clone(),
        boards: p.boards.clone(),
        disk_id,
        seed_dir: seed.map(|i| plan.step(i).out.clone()),
    };
    let boards: Vec<&str> = p.boards.iter().map(|b| b.section()).collect();
    let b = StepBuilder::new(
        "pi-image",
        format!(
            "assemble the Raspberry Pi image (MBR, FAT32 boot for {}, ext4 root) and lint it",
            boards.join("+")
        ),
    )
    .after(plan.step(rootfs))
    .after(plan.step(stage))
    .requires(crate::tools::mke2fs::LIBARCHIVE)
    .op(image::PiOp(spec))
    .long();
    let b = match seed {
        Some(i) => b.after(plan.step(i)),
        None => b,
    };
    let img_step = plan.add(b);
    let raw = plan.step(img_step).output(image::IMAGE);
    let file = artifact_name(r, p.compression);
    let out = Utf8Path::new(OUT).join(&file);
    let mut b = StepBuilder::new("pi-compress", format!("write {file}"))
        .after(plan.step(img_step))
        .input(Input::value(
            "compression",
            format!("{:?}", p.compression).to_lowercase(),
        ))
        .long();
    b = match p.compression {
        Compression::Zst => b.op(Zstd {
            src: raw,
            file: file.clone(),
        }),
        Compression::Xz => b.cmd(crate::tools::xz::compress(&raw, &out)),
        Compression::None => b.op(Copy {
            src: raw,
            file: file.clone(),
        }),
    };
    let i = plan.add(b);
    let from = plan.step(i).output(&file);
    plan.publish(from, file, true);
    Ok(i)
}

/// The raw image compressed with kiln's zstd settings, in process.
struct Zstd {
    src: camino::Utf8PathBuf,
    file: String,
}

impl Op for Zstd {
    fn describe(&self) -> serde_json::Value {
        json!({ "zstd": { "src": self.src, "file": self.file } })
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let dest = cx.out.join(&self.file);
        let f = std::fs::File::create(&dest).with_context(|| format!("creating {dest}"))?;
        let w = std::io::BufWriter::with_capacity(1 << 20, f);
        let label = "compress the Pi image (zstd)";
        let (_, mut w) = crate::archive::zstd_file(&self.src, w, crate::archive::ZSTD_LEVEL, label)
            .with_context(|| format!("compressing {} into {dest}", self.src))?;
        std::io::Write::flush(&mut w).with_context(|| format!("writing {dest}"))?;
        Ok(())
    }
}

/// The raw image as is (`pi.compression: none`).
struct Copy {
    src: camino::Utf8PathBuf,
    file: String,
}

impl Op for Copy {
    fn describe(&self) -> serde_json::Value {
        json!({ "copy": { "src": self.src, "file": self.file } })
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        let dest = cx.out.join(&self.file);
        let f = std::fs::File::create(&dest).with_context(|| format!("creating {dest}"))?;
        let len = std::fs::metadata(&self.src)?.len();
        f.set_len(len)?;
        crate::qcow2::disk::copy_at(&f, 0, &self.src, "copy the Pi image")?;
        f.sync_all()?;
        Ok(())
    }
}
