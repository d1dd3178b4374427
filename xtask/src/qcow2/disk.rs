//! Disk assembly of builder 1, in one cached step, with no mounts and no
//! loop devices:
//!
//! 1. walk the mmdebstrap tarball's headers to size the root file system
//!    and copy out the kernel, initrd and os-release (`merge.rs`);
//! 2. UEFI: on amd64 a unified kernel image (`uki.rs`); on arm64
//!    systemd-boot with one loader entry, the kernel and kiln's own initrd;
//!    either on a FAT ESP (`esp.rs`; mkfs.vfat + mtools);
//! 3. BIOS: a GRUB core image in a BIOS-boot partition, GRUB's boot.img in
//!    the MBR, both patched in process;
//! 4. a sparse raw disk; `mkfs.ext4 -d -` makes the root file system in
//!    place in its partition (`-E offset=`) from the merged root (`merge.rs`)
//!    streamed into its stdin;
//! 5. a GPT (protective MBR) written in process and the boot partitions
//!    copied in with positioned writes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::json;

use super::esp::{esp_layout, own_boot, systemd_boot_esp, OwnBoot};
use super::gpt::{self, Guid, Partition, SECTOR};
use super::merge::{generated, merge, staged, Boot, New};
use super::spec::DiskSpec;
use super::uki::{align, build_uki};
use crate::plan::{Op, OpCx};
use crate::recipe::Arch;
use crate::tools;

pub const DISK_RAW: &str = "disk.raw";
pub const LAYOUT_JSON: &str = "layout.json";
pub(crate) const MIB: u64 = 1 << 20;

pub struct DiskOp(pub DiskSpec);

impl Op for DiskOp {
    fn describe(&self) -> serde_json::Value {
        json!({ "qcow2-disk": self.0 })
    }
    fn commands(&self) -> Vec<tools::Cmd> {
        commands(&self.0, Utf8Path::new(crate::plan::OUT))
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        assemble(&self.0, cx.out)
    }
}

/// The commands [`assemble`] runs for `spec` into `out`, in order; `<…>`
/// stands for what is only known from the root file system's contents.
pub fn commands(spec: &DiskSpec, out: &Utf8Path) -> Vec<tools::Cmd> {
    let work = out.join("work");
    let esp_img = work.join("esp.img");
    let mut v = vec![];
    if spec.uefi {
        if !super::kiln_initrd(spec.arch) {
            let hole = |what: &str| Utf8PathBuf::from(format!("<{what}>"));
            let (osrel, kernel, initrd) = (hole("os-release"), hole("kernel"), hole("initrd"));
            let cmdline = work.join("cmdline");
            let sections: Vec<tools::objcopy::Section> = [
                (".osrel", &osrel),
                (".cmdline", &cmdline),
                (".linux", &kernel),
                (".initrd", &initrd),
            ]
            .into_iter()
            .map(|(name, file)| tools::objcopy::Section {
                name,
                file,
                vma: None,
            })
            .collect();
            v.push(tools::objcopy::add_sections(
                Utf8Path::new(tools::objcopy::EFI_STUB_X64),
                &sections,
                &work.join("BOOTX64.EFI"),
                spec.epoch,
            ));
        }
        let layout = esp_layout(spec, &work, Utf8Path::new("<kernel>"));
        v.push(tools::dosfstools::mkfs_vfat_invariant(
            &esp_img, "ESP", spec.epoch,
        ));
        let dirs: Vec<&str> = layout.dirs.iter().map(String::as_str).collect();
        v.push(tools::mtools::mmd(&esp_img, &dirs, spec.epoch));
        for (file, dest) in &layout.files {
            v.push(tools::mtools::mcopy_in(&esp_img, file, dest, spec.epoch));
        }
    }
    if spec.bios {
        v.push(tools::grub::mkimage_i386_pc(
            &work.join("grub-early.cfg"),
            "/boot/grub",
            &work.join("core.img"),
        ));
    }
    v.push(mkfs_root(
        spec,
        &out.join(DISK_RAW),
        &work.join("mke2fs.conf"),
        "<offset>",
        "<size>",
    ));
    v
}

/// `mkfs.ext4` of the root file system at `offset` of the disk, `bytes`
/// long, from the merged root on its stdin.
fn mkfs_root(
    spec: &DiskSpec,
    disk: &Utf8Path,
    conf: &Utf8Path,
    offset: impl std::fmt::Display,
    bytes: impl std::fmt::Display,
) -> tools::Cmd {
    tools::mke2fs::mkfs_ext4_at(
        disk,
        &offset.to_string(),
        &bytes.to_string(),
        "the merged root tarball",
        "root",
        &spec.ids.root_fs,
        &spec.ids.hash_seed,
        conf,
        spec.epoch,
    )
}

/// Copy `src` into `disk` at `offset`, skipping all-zero blocks so the disk
/// stays sparse.
pub(crate) fn copy_at(disk: &File, offset: u64, src: &Utf8Path, label: &str) -> Result<()> {
    let mut r = File::open(src).with_context(|| format!("opening {src}"))?;
    let total = r.metadata()?.len();
    let mut p = crate::ui::Progress::bytes(label, total);
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut pos = 0u64;
    loop {
        crate::signals::check()?;
        let mut n = 0;
        while n < buf.len() {
            let k = r.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        for (i, chunk) in buf[..n].chunks(64 * 1024).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                disk.write_all_at(chunk, offset + pos + (i * 64 * 1024) as u64)
                    .with_context(|| format!("writing {label} into the disk image"))?;
            }
        }
        pos += n as u64;
        p.inc(n as u64);
    }
    p.finish();
    Ok(())
}

/// The disk's partitions, in order, as planned before anything is written.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub size: u64,
    pub disk_guid: String,
    pub partitions: Vec<LayoutPart>,
    pub root_fs_bytes: u64,
    pub root_fs_uuid: String,
    pub cmdline: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayoutPart {
    pub number: usize,
    pub name: String,
    pub type_guid: String,
    pub partuuid: String,
    pub offset: u64,
    pub bytes: u64,
}

/// Root file system size for what the merge counted: data, inodes and the
/// journal, with headroom; whole MiB.
pub(crate) fn root_fs_bytes(boot: &Boot) -> u64 {
    let by_data = (boot.data_bytes + 64 * MIB) * 115 / 100 + 64 * MIB;
    // One inode per 16 KiB (mke2fs.conf above), with 30% spare inodes.
    let by_inodes = boot.entries * 13 / 10 * 16384;
    align(by_data.max(by_inodes), MIB)
}

/// What kiln lays over the Debian root: its generated files (with the
/// first-boot units of the per-install identities of the packages the root
/// holds, dependencies included), the staged tree, and with kiln's initrd
/// (arm64) that initrd in `/boot`, returned too for the boot partition.
pub(crate) fn root_news(spec: &DiskSpec) -> Result<(BTreeMap<String, New>, Option<OwnBoot>)> {
    let installed = super::merge::installed_packages(&spec.rootfs_tar)?;
    let mut news = generated(spec, &installed);
    for (rel, n) in staged(&spec.overlay_tree)? {
        if rel == "etc/machine-id" {
            bail!("the staged tree provides /etc/machine-id; it must stay empty in an image (identity reset)");
        }
        match (news.get(&rel), &n) {
            (Some(New::DirIfMissing | New::Dir { .. }), New::Dir { .. }) => {}
            _ => {
                news.insert(rel, n);
            }
        }
    }
    // arm64: kiln's initrd, also in /boot where Debian's links point.
    let own = if super::kiln_initrd(spec.arch) {
        let own = own_boot(spec)?;
        news.insert(
            format!("boot/initrd.img-{}", own.release),
            New::Bytes {
                data: own.initrd.clone(),
                mode: 0o644,
            },
        );
        Some(own)
    } else {
        None
    };
    Ok((news, own))
}

/// Make the root file system in place at `offset` of `disk_path`, `fs_bytes`
/// long, from the merged root streamed into `mkfs.ext4 -d -`; check it holds
/// what the counting pass (`counted`) found.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_root_at(
    spec: &DiskSpec,
    news: &BTreeMap<String, New>,
    counted: &Boot,
    disk_path: &Utf8Path,
    offset: u64,
    fs_bytes: u64,
    work: &Utf8Path,
) -> Result<()> {
    let conf = work.join("mke2fs.conf");
    std::fs::write(&conf, tools::mke2fs::MKE2FS_CONF)?;
    crate::ui::info(&format!(
        "  root file system: {} MiB for {} entries",
        fs_bytes / MIB,
        counted.entries
    ));
    // mke2fs reads a size without a unit as 1 KiB blocks.
    let mkfs = mkfs_root(
        spec,
        disk_path,
        &conf,
        offset,
        format!("{}k", fs_bytes / 1024),
    );
    let boot_dir = work.join("boot");
    let mut written = None;
    tools::run_feeding(&mkfs, |w| {
        written = Some(merge(spec, news, Some(w), &boot_dir)?);
        Ok(())
    })?;
    let written = written.context("the merge did not run")?;
    ensure!(
        (written.entries, written.data_bytes) == (counted.entries, counted.data_bytes),
        "kiln bug: the merged root has {} entries ({} bytes) but {} ({} bytes) were counted",
        written.entries,
        written.data_bytes,
        counted.entries,
        counted.data_bytes
    );
    Ok(())
}

pub fn assemble(spec: &DiskSpec, out: &Utf8Path) -> Result<()> {
    let work = out.join("work");
    std::fs::create_dir_all(&work)?;
    let boot_dir = work.join("boot");
    std::fs::create_dir_all(&boot_dir)?;

    // 1. Merge.
    let (news, own) = root_news(spec)?;
    // What the root needs, and its boot files, from the tarball's headers;
    // the merged root itself streams into mkfs.ext4 once the layout is known.
    let boot = merge(spec, &news, None, &boot_dir)?;

    // 2. Layout.
    let fs_bytes = root_fs_bytes(&boot);
    // With kiln's initrd, systemd-boot loads it; else the UKI carries Debian's.
    let esp = match (spec.uefi, &own) {
        (false, _) => None,
        (true, Some(own)) => Some(systemd_boot_esp(spec, &boot, own, &work)?),
        (true, None) => {
            build_uki(&work, &boot, &spec.cmdline, spec.epoch)?;
            Some(esp_layout(spec, &work, Utf8Path::new("")))
        }
    };
    let esp_bytes = match &esp {
        Some(e) => {
            let mut sum = 0;
            for (f, _) in &e.files {
                sum += std::fs::metadata(f)?.len();
            }
            align((sum * 3 / 2 + 8 * MIB).max(128 * MIB), MIB)
        }
        None => 0,
    };
    let mut next = MIB / SECTOR;
    let boot_bytes = [(spec.bios, MIB), (spec.uefi, esp_bytes)]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, b)| b)
        .sum::<u64>();
    // Fitted: the first MiB (GPT), the boot partitions, the root and one
    // MiB for the backup GPT.
    let size = if spec.fit {
        MIB + boot_bytes + fs_bytes + MIB
    } else {
        spec.size
    };
    let sectors = size / SECTOR;
    let mut parts = Vec::new();
    let guid = |s: &str| Guid::parse(s);
    // The boot partitions, in order, from the first MiB.
    for (wanted, type_guid, id, bytes, name) in [
        (
            spec.bios,
            gpt::TYPE_BIOS_BOOT,
            &spec.ids.bios_part,
            MIB,
            "bios",
        ),
        (
            spec.uefi,
            gpt::TYPE_ESP,
            &spec.ids.esp_part,
            esp_bytes,
            "esp",
        ),
    ] {
        if wanted {
            parts.push(Partition {
                type_guid: guid(type_guid)?,
                guid: guid(id)?,
                first_lba: next,
                last_lba: next + bytes / SECTOR - 1,
                name: name.into(),
                attributes: 0,
            });
            next += bytes / SECTOR;
        }
    }
    // Root to the end, 4 KiB aligned, so systemd-repart finds nothing to grow.
    let root_last = (gpt::last_usable(sectors) + 1) / 8 * 8 - 1;
    let needed = next * SECTOR + fs_bytes + MIB;
    if size < needed {
        bail!(
            "qcow2.size ({} MiB) is too small: the root file system needs {} MiB, so the disk \
             needs at least {} MiB (set `qcow2.size: {}M` or more in the recipe)",
            size / MIB,
            fs_bytes / MIB,
            needed.div_ceil(MIB),
            needed.div_ceil(MIB)
        );
    }
    let root_type = match spec.arch {
        Arch::Amd64 => gpt::TYPE_ROOT_X86_64,
        Arch::Arm64 => gpt::TYPE_ROOT_ARM64,
    };
    parts.push(Partition {
        type_guid: guid(root_type)?,
        guid: guid(&spec.ids.root_part)?,
        first_lba: next,
        last_lba: root_last,
        name: "root".into(),
        attributes: 0,
    });

    // 4. ESP.
    let esp_img = work.join("esp.img");
    if let Some(esp) = &esp {
        File::create(&esp_img)?.set_len(esp_bytes)?;
        tools::run(&tools::dosfstools::mkfs_vfat_invariant(
            &esp_img, "ESP", spec.epoch,
        ))?;
        let dirs: Vec<&str> = esp.dirs.iter().map(String::as_str).collect();
        tools::run(&tools::mtools::mmd(&esp_img, &dirs, spec.epoch))?;
        for (file, dest) in &esp.files {
            crate::fsutil::set_mtime(file, spec.epoch)?;
            tools::run(&tools::mtools::mcopy_in(&esp_img, file, dest, spec.epoch))?;
        }
    }

    // 5. GRUB core for BIOS.
    let mut boot_code = None;
    let core_img = work.join("core.img");
    if spec.bios {
        let kernel = if boot.root_links.contains("vmlinuz") {
            "/vmlinuz".to_string()
        } else {
            format!(
                "/boot/vmlinuz-{}",
                boot.kernel
                    .as_ref()
                    .context("no kernel in the root file system")?
                    .0
            )
        };
        let initrd = if boot.root_links.contains("initrd.img") {
            "/initrd.img".to_string()
        } else {
            format!(
                "/boot/initrd.img-{}",
                boot.initrd
                    .as_ref()
                    .context("no initrd in the root file system")?
                    .0
            )
        };
        let cfg = format!(
            "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n\
             search --no-floppy --fs-uuid --set=root {}\necho 'Loading Linux...'\nlinux {kernel} {}\ninitrd {initrd}\nboot\n",
            spec.ids.root_fs, spec.cmdline
        );
        let cfg_file = work.join("grub-early.cfg");
        std::fs::write(&cfg_file, cfg)?;
        tools::run(&tools::grub::mkimage_i386_pc(
            &cfg_file,
            "/boot/grub",
            &core_img,
        ))?;
        let core_len = std::fs::metadata(&core_img)?.len();
        ensure!(
            core_len <= MIB,
            "the GRUB core image is {core_len} bytes; the BIOS-boot partition holds 1 MiB"
        );
        let img = std::fs::read(tools::grub::BOOT_IMG)
            .with_context(|| format!("reading {}", tools::grub::BOOT_IMG))?;
        ensure!(
            img.len() == 512,
            "{} is not a 512-byte boot sector",
            tools::grub::BOOT_IMG
        );
        let mut code = img[..440].to_vec();
        // GRUB_BOOT_MACHINE_KERNEL_SECTOR: where boot.img finds core.img.
        code[0x5c..0x64].copy_from_slice(&parts[0].first_lba.to_le_bytes());
        boot_code = Some(code);
        // diskboot.img's first block list: the rest of core.img follows its first sector.
        let mut core = std::fs::read(&core_img)?;
        core[0x200 - 12..0x200 - 4].copy_from_slice(&(parts[0].first_lba + 1).to_le_bytes());
        std::fs::write(&core_img, core)?;
    }

    // 6. Assemble.
    let disk_path = out.join(DISK_RAW);
    let disk = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&disk_path)
        .with_context(|| format!("creating {disk_path}"))?;
    disk.set_len(size)?;

    // Root file system, made in place in its partition from the merged root
    // streamed into mkfs.ext4 (no tarball or image file in between).
    let root = parts.last().expect("the root partition");
    make_root_at(
        spec,
        &news,
        &boot,
        &disk_path,
        root.offset(),
        fs_bytes,
        &work,
    )?;
    gpt::write(
        &disk,
        size,
        guid(&spec.ids.disk)?,
        &parts,
        boot_code.as_deref(),
    )?;
    for p in &parts {
        match p.name.as_str() {
            "bios" => copy_at(&disk, p.offset(), &core_img, "GRUB core")?,
            "esp" => copy_at(&disk, p.offset(), &esp_img, "EFI system partition")?,
            _ => {} // made in place above
        }
    }
    disk.sync_all()?;
    let layout = Layout {
        size,
        disk_guid: spec.ids.disk.clone(),
        partitions: parts
            .iter()
            .enumerate()
            .map(|(i, p)| LayoutPart {
                number: i + 1,
                name: p.name.clone(),
                type_guid: p.type_guid.to_string_lower(),
                partuuid: p.guid.to_string_lower(),
                offset: p.offset(),
                bytes: p.bytes(),
            })
            .collect(),
        root_fs_bytes: fs_bytes,
        root_fs_uuid: spec.ids.root_fs.clone(),
        cmdline: spec.cmdline.clone(),
    };
    crate::plan::write_json(&out.join(LAYOUT_JSON), &layout)?;
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {work}"))?;
    let _ = std::io::stdout().flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_fs_sizes() {
        let b = Boot {
            data_bytes: 600 * MIB,
            entries: 30000,
            ..Default::default()
        };
        let s = root_fs_bytes(&b);
        assert!(s > 600 * MIB && s.is_multiple_of(MIB));
    }
}
