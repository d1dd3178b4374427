//! `cargo xtask pi`: build the Raspberry Pi image; `cargo xtask pi lint
//! IMAGE`: check any Pi image.

use anyhow::Result;
use camino::Utf8PathBuf;

use crate::cx::Cx;

/// Build the Raspberry Pi card image (arm64); `pi lint IMAGE` checks any Pi image
///
/// Writes `output/<name>-<version>-arm64-pi.img.zst` (+ `.sha256`): a card
/// image to write with Raspberry Pi Imager or `zstdcat … | dd`, for the
/// boards in `pi.boards` (Pi 3 and Pi 4 families by default).
///
/// The arm64 root file system is the one the arm64 qcow2 uses (one cached
/// mmdebstrap step, with Debian's raspi-firmware; on an x86-64 host package
/// scripts run under qemu-user, which kiln installs and registers when run
/// as root). The image is written without mounts, loop devices or root: an
/// MBR with a disk id derived from SOURCE_DATE_EPOCH; partition 1 FAT32
/// (`pi.boot_size`, label `pi.boot_label`) with the GPU firmware, the
/// boards' device trees, the kernel, kiln's initrd, `config.txt` and a
/// one-line `cmdline.txt` (`root=PARTUUID=<disk id>-02`); partition 2 ext4
/// root, mounted with `/boot/firmware`, grown to fill the card at first
/// boot. Every build is linted and secret-scanned before it is published;
/// two builds from the same inputs are byte-identical.
///
/// Recipe keys (section `pi:`, whose presence also makes `build` include the
/// image): `size` (default: the smallest power of two that fits),
/// `boot_size` (512M), `boot_label` (BOOT), `boards` ([pi3, pi4]; pi5 needs a
/// kernel with bcm2712 device trees, e.g. `qcow2.suite: trixie`),
/// `compression` (zst | xz | none), `cmdline` (extra kernel arguments).
/// Packages, suite, mirror and host name come from the `qcow2:` section.
///
/// Examples:
///   cargo xtask pi                                  build the demo's Pi image
///   cargo xtask pi --dry-run                        the steps and commands
///   cargo xtask pi lint output/demo-1.0-arm64-pi.img.zst
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Option<Sub>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Check any Raspberry Pi image (`.img`, `.img.zst`, `.img.xz`): an MBR
    /// with a FAT boot partition first and 4 MiB alignment; for each board
    /// family with a device tree on the card, its firmware (Pi 3:
    /// bootcode.bin, start.elf, fixup.dat; Pi 4: start4.elf, fixup4.dat);
    /// every start*.elf with its matching fixup*.dat; config.txt syntax,
    /// `arm_64bit=1` and the kernel and initramfs it names; a one-line
    /// cmdline.txt whose root=PARTUUID= is a partition of the image. Exits
    /// non-zero listing every problem.
    Lint(LintArgs),
}

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// The image file.
    pub image: Utf8PathBuf,
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    if let Some(Sub::Lint(l)) = a.cmd {
        let report = crate::pi::lint::check(&l.image)?;
        if cx.json {
            println!(
                "{}",
                serde_json::json!({ "image": l.image, "ok": true, "boards": report.boards, "files": report.files })
            );
        } else {
            println!(
                "{}: ok (boards {}; {} boot files)",
                l.image,
                report.boards.join(", "),
                report.files.len()
            );
        }
        return Ok(());
    }
    let r = cx.recipe()?;
    let make = || {
        let mut plan = cx.plan("pi");
        crate::pi::plan(&r, &mut plan)?;
        Ok(plan)
    };
    let gate = crate::scan::gate(&r);
    cx.execute(make, Some(&gate))?;
    if !cx.dry_run && !cx.json {
        if let Some(p) = &r.recipe.pi {
            println!(
                "{}",
                cx.output.join(crate::pi::artifact_name(&r, p.compression))
            );
        }
    }
    Ok(())
}
