//! The Pi image, assembled in one cached step with no mounts and no loop
//! devices, from the same merged root as the arm64 qcow2
//! ([`crate::qcow2::disk`]):
//!
//! 1. one walk of the root tarball's headers sizes the root file system and
//!    copies out the kernel; kiln's initrd is built from the image's busybox
//!    and modules; the firmware and device trees are read from the packages;
//! 2. the FAT32 boot partition is made in an image file (`mkfs.vfat`,
//!    mtools) with those files, `config.txt` and `cmdline.txt`;
//! 3. a sparse raw image: `mkfs.ext4 -d -` makes the root in place in
//!    partition 2 from the merged root streamed into it, the MBR is written
//!    in process and the boot partition copied in;
//! 4. the image is linted ([`super::lint`]) before the step counts as done.

use std::fs::File;

use anyhow::{bail, ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::json;

use super::boot;
use super::mbr::{self, Part, ALIGN, SECTOR};
use crate::plan::{Op, OpCx};
use crate::qcow2::disk::{self, MIB};
use crate::qcow2::merge::{merge, read_from_rootfs};
use crate::qcow2::spec::DiskSpec;
use crate::recipe::pi::Board;
use crate::tools;

/// The raw image inside the step's output.
pub const IMAGE: &str = "pi.img";
pub const LAYOUT_JSON: &str = "layout.json";

/// Everything the image step needs; `describe` hashes all of it.
#[derive(Debug, Clone, Serialize)]
pub struct PiSpec {
    /// The root file system: the same settings as a disk's, with
    /// `pi_boot` set and `cmdline` the card's `cmdline.txt`.
    pub root: DiskSpec,
    /// The image size; `None`: the smallest power of two that fits.
    pub size: Option<u64>,
    pub boot_bytes: u64,
    pub boot_label: String,
    pub boards: Vec<Board>,
    pub disk_id: u32,
    /// The cloud-init NoCloud seed step's output (`user-data`, `meta-data`,
    /// `network-config`), when the image has cloud-init: copied onto the
    /// boot partition, where cloud-init finds it by the partition's label
    /// and an operator edits it from any PC.
    pub seed_dir: Option<Utf8PathBuf>,
}

pub struct PiOp(pub PiSpec);

impl Op for PiOp {
    fn describe(&self) -> serde_json::Value {
        json!({ "pi-image": self.0 })
    }
    fn commands(&self) -> Vec<tools::Cmd> {
        commands(&self.0, Utf8Path::new(crate::plan::OUT))
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        assemble(&self.0, cx.out)
    }
}

/// The FAT image's directories and files, in the order they are written.
fn fat_commands(spec: &PiSpec, fat: &Utf8Path, files: &[(Utf8PathBuf, String)]) -> Vec<tools::Cmd> {
    let e = spec.root.epoch;
    let mut v = vec![
        tools::dosfstools::mkfs_vfat_invariant(fat, &spec.boot_label, e),
        tools::mtools::mmd(fat, &["/overlays"], e),
    ];
    for (src, dest) in files {
        v.push(tools::mtools::mcopy_in(fat, src, dest, e));
    }
    v
}

/// The commands [`assemble`] runs into `out`; `<…>` stands for what is
/// known only from the root file system's contents.
pub fn commands(spec: &PiSpec, out: &Utf8Path) -> Vec<tools::Cmd> {
    let work = out.join("work");
    let any = vec![(work.join("fat/<file>"), "/<file>".to_string())];
    let mut v = fat_commands(spec, &work.join("boot.img"), &any);
    v.push(tools::mke2fs::mkfs_ext4_at(
        &out.join(IMAGE),
        "<offset>",
        "<size>",
        "the merged root tarball",
        "root",
        &spec.root.ids.root_fs,
        &spec.root.ids.hash_seed,
        &work.join("mke2fs.conf"),
        spec.root.epoch,
    ));
    v.push(super::lint::extract_command(
        &out.join(IMAGE),
        "<offset>",
        &work.join("lint"),
    ));
    v
}

/// Where the partitions go.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub size: u64,
    pub disk_id: String,
    pub boot: Part,
    pub root: Part,
    pub root_partuuid: String,
    pub root_fs_bytes: u64,
    pub cmdline: String,
    pub boot_files: Vec<String>,
}

/// The image size: the recipe's, or the smallest power of two holding
/// `needed` bytes. A recipe size that is too small fails naming the size
/// that fits.
pub fn image_size(wanted: Option<u64>, needed: u64) -> Result<u64> {
    let needed = needed.div_ceil(ALIGN) * ALIGN;
    match wanted {
        None => Ok(needed.next_power_of_two()),
        Some(s) if s < needed => bail!(
            "pi.size ({} MiB) is too small: the boot partition and the root file system need \
             {} MiB (set `pi.size: {}M` or more in the recipe, or leave it out to fit)",
            s / MIB,
            needed / MIB,
            needed / MIB
        ),
        Some(s) => Ok(s),
    }
}

pub fn assemble(spec: &PiSpec, out: &Utf8Path) -> Result<()> {
    let work = out.join("work");
    let boot_dir = work.join("boot");
    std::fs::create_dir_all(&boot_dir)?;
    let root = &spec.root;

    // 1. The root's content and the boot files.
    let (news, own) = disk::root_news(root)?;
    let own = own.context("kiln bug: a Pi root without kiln's initrd")?;
    let counted = merge(root, &news, None, &boot_dir)?;
    let (release, kernel) = counted
        .kernel
        .clone()
        .context("the root file system has no /boot/vmlinuz-*: is linux-image-arm64 installed?")?;
    ensure!(
        release == own.release,
        "the newest kernel is /boot/vmlinuz-{release} but the newest modules are for {}",
        own.release
    );
    let dtb_dir = format!("lib/linux-image-{release}/broadcom/");
    let from_root = read_from_rootfs(&root.rootfs_tar, |p| {
        p.starts_with(boot::FIRMWARE_DIR) || (p.starts_with(&dtb_dir) && p.ends_with(".dtb"))
    })?;
    let strip = |prefix: &str| {
        from_root
            .iter()
            .filter_map(|(p, d)| Some((p.strip_prefix(prefix)?.to_string(), d.clone())))
            .filter(|(n, _)| !n.contains('/'))
            .collect()
    };
    let chosen = boot::select(
        &spec.boards,
        &release,
        &strip(boot::FIRMWARE_DIR),
        &strip(&dtb_dir),
    )?;

    // 2. Layout.
    let fs_bytes = disk::root_fs_bytes(&counted);
    let boot_part = Part {
        kind: mbr::TYPE_FAT32_LBA,
        first_lba: ALIGN / SECTOR,
        sectors: spec.boot_bytes / SECTOR,
    };
    let root_first = boot_part.first_lba + boot_part.sectors;
    let size = image_size(spec.size, root_first * SECTOR + fs_bytes)?;
    let root_part = Part {
        kind: mbr::TYPE_LINUX,
        first_lba: root_first,
        sectors: size / SECTOR - root_first,
    };

    // 3. The boot partition.
    let fat_dir = work.join("fat");
    std::fs::create_dir_all(&fat_dir)?;
    let mut files: Vec<(Utf8PathBuf, String)> = Vec::new();
    let mut put = |name: &str, data: &[u8]| -> Result<()> {
        let f = fat_dir.join(name);
        std::fs::write(&f, data).with_context(|| format!("writing {f}"))?;
        crate::fsutil::set_mtime(&f, root.epoch)?;
        files.push((f, format!("/{name}")));
        Ok(())
    };
    for (name, data) in &chosen {
        put(name, data)?;
    }
    let kernel_bytes =
        std::fs::read(&kernel).with_context(|| format!("reading the kernel {kernel}"))?;
    put(boot::KERNEL, &kernel_bytes)?;
    put(boot::INITRD, &own.initrd)?;
    put(
        boot::CONFIG,
        boot::config_txt(&root.name, &spec.boards).as_bytes(),
    )?;
    put(boot::CMDLINE, format!("{}\n", root.cmdline).as_bytes())?;
    if let Some(seed) = &spec.seed_dir {
        for n in [
            crate::seed::USER_DATA,
            crate::seed::META_DATA,
            crate::seed::NETWORK_CONFIG,
        ] {
            let f = seed.join(n);
            if f.exists() {
                put(
                    n,
                    &std::fs::read(&f).with_context(|| format!("reading {f}"))?,
                )?;
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    let content: u64 = chosen.values().map(|d| d.len() as u64).sum::<u64>()
        + kernel_bytes.len() as u64
        + own.initrd.len() as u64;
    ensure!(
        content + 8 * MIB <= spec.boot_bytes,
        "pi.boot_size ({} MiB) is too small for the boot files ({} MiB): set `pi.boot_size: {}M`",
        spec.boot_bytes / MIB,
        content.div_ceil(MIB),
        (content + 8 * MIB).div_ceil(ALIGN) * 4
    );
    let fat = work.join("boot.img");
    File::create(&fat)?.set_len(spec.boot_bytes)?;
    for c in fat_commands(spec, &fat, &files) {
        tools::run(&c)?;
    }

    // 4. The image: root in place, table, boot partition.
    let img = out.join(IMAGE);
    let f = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&img)
        .with_context(|| format!("creating {img}"))?;
    f.set_len(size)?;
    disk::make_root_at(
        root,
        &news,
        &counted,
        &img,
        root_part.offset(),
        fs_bytes,
        &work,
    )?;
    mbr::write(&f, spec.disk_id, &[boot_part, root_part])?;
    disk::copy_at(&f, boot_part.offset(), &fat, "boot partition")?;
    f.sync_all()?;
    drop(f);

    // 5. Lint before the step counts as done.
    let report = super::lint::check_with(&img, &work.join("lint"))?;
    crate::ui::info(&format!(
        "  lint: ok ({} boot files, boards {})",
        report.files.len(),
        report.boards.join(", ")
    ));
    let layout = Layout {
        size,
        disk_id: format!("{:08x}", spec.disk_id),
        boot: boot_part,
        root: root_part,
        root_partuuid: mbr::partuuid(spec.disk_id, 2),
        root_fs_bytes: fs_bytes,
        cmdline: root.cmdline.clone(),
        boot_files: files.iter().map(|(_, d)| d.clone()).collect(),
    };
    crate::plan::write_json(&out.join(LAYOUT_JSON), &layout)?;
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {work}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fit_or_say_what_fits() {
        assert_eq!(image_size(None, 900 * MIB).unwrap(), 1024 * MIB);
        assert_eq!(image_size(None, 1100 * MIB).unwrap(), 2048 * MIB);
        assert_eq!(
            image_size(Some(1200 * MIB), 1100 * MIB).unwrap(),
            1200 * MIB
        );
        let e = image_size(Some(1024 * MIB), 1101 * MIB)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("need 1104 MiB") && e.contains("`pi.size: 1104M`"),
            "{e}"
        );
    }
}
