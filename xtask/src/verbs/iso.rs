//! `cargo xtask iso`.

use anyhow::{Context, Result};
use camino::Utf8PathBuf;

use crate::cx::Cx;

/// Build the installer ISO: kiln's offline installer, or a remastered Ubuntu live-server ISO
///
/// Builds `output/<name>-<version>-amd64.iso` and its `.sha256`. The
/// recipe's `iso.mode` picks what it is: `installer` (the default when the
/// recipe names no `iso.base`) or `remaster` (the default with one, and what
/// `--base-iso` asks for). Both erase the disk they install onto.
///
/// installer: a hybrid ISO (BIOS and UEFI, CD and USB stick written with
/// `dd`) holding the appliance's own disk, zstd-compressed, as a GPT
/// partition after the ISO file system (named `disk.img.zst`, its sha256
/// in `/kiln/disk.img.zst.sha256`), the appliance's kernel and a small
/// initramfs. Its default menu entry, after `iso.timeout` seconds, writes
/// the disk onto the first non-removable disk that is not the medium and
/// is large enough; it refuses a disk that holds partitions unless
/// `iso.wipe: true` or the kernel argument `kiln.wipe=1` (`kiln.disk=vda`
/// names the disk). The partition table is written last, after the
/// payload's checksum matched, so a failed install never leaves a disk
/// that boots. Needs no download.
///
/// remaster: the base comes from `--base-iso PATH` or the recipe's
/// `iso.base` (`path` or `url`, with a required `sha256`; a URL is
/// downloaded once into the cache, resumably). kiln adds `/nocloud/`
/// (autoinstall user-data and meta-data: unattended by default, it erases
/// the disk `seed.autoinstall.storage_match` picks), the staged overlay
/// under `/<iso.overlay_dir>/`, `/.disk/info`, and patches
/// `boot/grub/grub.cfg` and `loopback.cfg`: a new default entry boots an
/// already installed disk (marker `/etc/<name>/installed`) or else installs
/// with `autoinstall ds=nocloud\;s=/cdrom/nocloud/`. The base's BIOS and
/// UEFI boot records and system area layout are replayed.
///
/// `--dry-run` prints the plan: for a remaster the grub.cfg diffs, for both
/// the xorriso command. `cargo xtask smoke ISO` installs it under qemu onto
/// a blank disk and boots that disk.
///
/// Examples:
///   cargo xtask iso                                kiln's offline installer (the demo's)
///   cargo xtask iso --base-iso ubuntu-24.04-live-server-amd64.iso --base-sha256 HEX
///   cargo xtask iso --dry-run                      every step, command and key
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The base ISO (overrides `iso.base` in the recipe).
    #[arg(long, value_name = "PATH")]
    pub base_iso: Option<Utf8PathBuf>,
    /// Expected sha256 of `--base-iso` (verified; without it the file is only fingerprinted).
    #[arg(long, value_name = "HEX", requires = "base_iso")]
    pub base_sha256: Option<String>,
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    let r = cx.recipe()?;
    if !cx.dry_run {
        check_output_writable(&cx.output)?;
    }
    let o = crate::iso::Overrides {
        base_iso: a.base_iso,
        base_sha256: a.base_sha256,
        preview: cx.dry_run,
    };
    let make = || {
        let mut plan = cx.plan("iso");
        crate::iso::plan(&r, &mut plan, &o)?;
        Ok(plan)
    };
    let gate = crate::scan::gate(&r);
    cx.execute(make, Some(&gate))?;
    Ok(())
}

/// Fail before a long build when the output directory cannot take files.
fn check_output_writable(dir: &camino::Utf8Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("the output directory {dir} cannot be created"))?;
    let probe = dir.join(".kiln-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("the output directory {dir} is not writable"))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
