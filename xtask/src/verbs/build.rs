//! `cargo xtask build`: every format the recipe builds, in one plan.

use anyhow::Result;
use camino::Utf8PathBuf;

use crate::cx::Cx;
use crate::recipe::Arch;
use crate::tools::Target;

/// Build every image format from the recipe in one plan, sharing steps (one
/// stage, one Debian root file system, one disk for qcow2 and OVA): the
/// overlay archive, the qcow2 per architecture, the OVA, and the installer
/// ISO when a base ISO is known (`iso.base` in the recipe, or `--base-iso`).
/// Every artifact is scanned for secrets before it lands in `output/`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Ubuntu live-server ISO to remaster (overrides `iso.base`).
    #[arg(long, value_name = "PATH")]
    pub base_iso: Option<Utf8PathBuf>,
    /// Expected sha256 of `--base-iso`.
    #[arg(long, value_name = "HEX", requires = "base_iso")]
    pub base_sha256: Option<String>,
    /// Skip the disk formats (qcow2, OVA): only the overlay archive and the ISO.
    #[arg(long)]
    pub no_disks: bool,
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    let r = cx.recipe()?;
    let with_iso = a.base_iso.is_some() || r.recipe.iso.base.is_some();
    let with_disks = !a.no_disks;
    if !cx.dry_run {
        let mut targets = vec![Target::Seed];
        if with_iso {
            targets.push(Target::Iso);
        }
        if with_disks {
            targets.extend([Target::Qcow2, Target::Ova]);
        }
        for t in targets {
            crate::doctor::require(t)?;
        }
        if with_disks {
            crate::ova::require_converter(&r)?;
            for &arch in &r.recipe.architectures {
                crate::qcow2::require_host(&r, arch)?;
            }
        }
    }
    let mut plan = cx.plan("build");
    for &arch in &r.recipe.architectures {
        let i = crate::stage::plan(&r, &mut plan, arch)?;
        let from = plan.step(i).output(crate::stage::TARBALL);
        plan.publish(from, r.artifact_name(arch, "overlay.tar.zst"), true);
    }
    if with_iso {
        let o = crate::iso::Overrides {
            base_iso: a.base_iso,
            base_sha256: a.base_sha256,
            preview: cx.dry_run,
        };
        crate::iso::plan(&r, &mut plan, &o)?;
    } else {
        crate::ui::info(
            "iso: skipped (no base ISO: set iso.base in the recipe or pass --base-iso)",
        );
    }
    if with_disks {
        for &arch in &r.recipe.architectures {
            crate::qcow2::plan(&r, &mut plan, arch)?;
        }
        if r.recipe.architectures.contains(&Arch::Amd64) {
            let disk =
                crate::ova::DiskSource::from_recipe(&r, &mut plan, crate::ova::Firmware::Auto)?;
            crate::ova::plan(&r, &mut plan, Arch::Amd64, disk)?;
        }
    }
    let gate = crate::scan::gate(&r);
    cx.run_plan(&plan, Some(&gate))?;
    Ok(())
}
