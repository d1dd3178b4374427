//! `cargo xtask build`: every format the recipe builds, in one plan.

use anyhow::Result;
use camino::Utf8PathBuf;

use crate::cx::Cx;
use crate::plan::Plan;
use crate::recipe::Resolved;
use crate::targets::{self, Format};

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

impl Args {
    fn options(&self, cx: &Cx) -> targets::Options {
        targets::Options {
            base_iso: self.base_iso.clone(),
            base_sha256: self.base_sha256.clone(),
            preview: cx.dry_run,
            arches: Vec::new(),
        }
    }
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    let r = cx.recipe()?;
    if !targets::with_iso(&r, &a.options(cx)) {
        crate::ui::info(
            "iso: skipped (iso.mode: remaster without a base ISO: set iso.base in the recipe or pass --base-iso)",
        );
    }
    let gate = crate::scan::gate(&r);
    cx.execute(|| plan(cx, &r, &a), Some(&gate))?;
    Ok(())
}

/// The whole build as one plan: every target and architecture of the recipe.
pub fn plan(cx: &Cx, r: &Resolved, a: &Args) -> Result<Plan> {
    let o = a.options(cx);
    let formats: Vec<Format> = targets::available(r, &o)
        .into_iter()
        .filter(|f| !a.no_disks || matches!(f, Format::Overlay | Format::Iso))
        .collect();
    let mut plan = cx.plan("build");
    targets::plan(r, &mut plan, &formats, &o)?;
    Ok(plan)
}
