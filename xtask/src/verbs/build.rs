//! `cargo xtask build`: every format the recipe builds, in one plan.

use anyhow::Result;
use camino::Utf8PathBuf;

use crate::cx::Cx;
use crate::plan::Plan;
use crate::recipe::{Arch, Resolved};

/// Build every image format from the recipe in one plan, sharing steps (one
/// stage, one Debian root file system, one disk for qcow2 and OVA): the
/// overlay archive, the qcow2 per architecture, the OVA, the Raspberry Pi
/// image when the recipe has a `pi:` section, and the ISO: kiln's offline
/// installer of the appliance's disk (`iso.mode: installer`, the default
/// without a base), or a remastered Ubuntu ISO (`iso.base`, `--base-iso`).
/// Every artifact is scanned for secrets before it lands in `output/`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Ubuntu live-server ISO to remaster (overrides `iso.base`).
    #[arg(long, value_name = "PATH")]
    pub base_iso: Option<Utf8PathBuf>,
    /// Expected sha256 of `--base-iso`.
    #[arg(long, value_name = "HEX", requires = "base_iso")]
    pub base_sha256: Option<String>,
    /// Skip the disk formats (qcow2, OVA, Pi image): only the overlay archive and the ISO.
    #[arg(long)]
    pub no_disks: bool,
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    let r = cx.recipe()?;
    if !with_iso(&r, &a) {
        crate::ui::info(
            "iso: skipped (iso.mode: remaster without a base ISO: set iso.base in the recipe or pass --base-iso)",
        );
    }
    let gate = crate::scan::gate(&r);
    cx.execute(|| plan(cx, &r, &a), Some(&gate))?;
    Ok(())
}

/// The ISO is built in installer mode, or with a base to remaster.
fn with_iso(r: &Resolved, a: &Args) -> bool {
    a.base_iso.is_some()
        || r.recipe.iso.base.is_some()
        || r.recipe.iso.mode() == crate::recipe::iso::IsoMode::Installer
}

/// The whole build as one plan: every target and architecture of the recipe.
pub fn plan(cx: &Cx, r: &Resolved, a: &Args) -> Result<Plan> {
    let mut plan = cx.plan("build");
    for &arch in &r.recipe.architectures {
        crate::stage::plan_published(r, &mut plan, arch)?;
    }
    if with_iso(r, a) {
        let o = crate::iso::Overrides {
            base_iso: a.base_iso.clone(),
            base_sha256: a.base_sha256.clone(),
            preview: cx.dry_run,
        };
        crate::iso::plan(r, &mut plan, &o)?;
    }
    if !a.no_disks {
        for &arch in &r.recipe.architectures {
            crate::qcow2::plan(r, &mut plan, arch)?;
        }
        if r.recipe.architectures.contains(&Arch::Amd64) {
            let disk =
                crate::ova::DiskSource::from_recipe(r, &mut plan, crate::ova::Firmware::Auto)?;
            crate::ova::plan(r, &mut plan, Arch::Amd64, disk)?;
        }
        if r.recipe.pi.is_some() {
            crate::pi::plan(r, &mut plan)?;
        }
    }
    Ok(plan)
}
