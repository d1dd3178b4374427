//! `cargo xtask iso`.

use anyhow::{Context, Result};
use camino::Utf8PathBuf;

use crate::cx::Cx;

/// Remaster an Ubuntu live-server ISO into a zero-touch installer of the appliance.
///
/// Remaster an Ubuntu live-server ISO (22.04/24.04) into a zero-touch
/// installer of the appliance: `output/<name>-<version>-amd64.iso` and its
/// `.sha256`.
///
/// The base comes from `--base-iso PATH` or the recipe's `iso.base` (`path`
/// or `url`, with a required `sha256`; a URL is downloaded once into the
/// cache, resumably). kiln adds `/nocloud/` (autoinstall user-data and
/// meta-data), the staged overlay under `/<iso.overlay_dir>/`, `/.disk/info`,
/// and patches `boot/grub/grub.cfg` and `loopback.cfg`: a new default entry
/// boots an already installed disk (marker `/etc/<name>/installed`) or else
/// installs with `autoinstall ds=nocloud\;s=/cdrom/nocloud/`. The base's BIOS
/// and UEFI boot records are replayed unchanged. `--dry-run` prints the
/// grub.cfg diffs and the xorriso command.
#[derive(Debug, clap::Args)]
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
