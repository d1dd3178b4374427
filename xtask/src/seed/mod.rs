//! Seeds: the autoinstall `user-data` for the ISO and the cloud-init NoCloud
//! seed for qcow2/Pi, generated from the recipe and validated before any
//! image is built.
//!
//! Contract for consumers (iso, qcow2, pi): [`plan`] adds a step whose output
//! directory holds [`USER_DATA`] and [`META_DATA`]; for cloud-init targets
//! also [`NETWORK_CONFIG`] (when the recipe has one), [`CIDATA_ISO`]
//! (ISO 9660, volume label `cidata`) and [`CIDATA_IMG`] (FAT, label `CIDATA`).
//! The ISO contract is owned here, so the ISO layout, the late-commands and
//! the boot menu agree: [`NOCLOUD_DIR`] (where the ISO carries the seed),
//! [`autoinstall_kernel_words`] (the boot arguments pointing the installer at
//! it), [`installed_marker`] (written last by the late-commands, searched by
//! the boot menu) and [`iso_overlay`]; the ISO builder reads them and checks
//! its arguments with [`check_kernel_args`].
//!
//! Generation and validation happen while planning (so `--dry-run` and every
//! verb that embeds a seed refuse a bad one before any work); `cloud-init
//! schema` and the cidata images run as the step's commands.

use anyhow::Result;
use camino::Utf8PathBuf;
use serde::Serialize;
use serde_json::json;

use crate::plan::{Input, Op, OpCx, Plan, StepBuilder, OUT};
use crate::recipe::Resolved;
use crate::tools;

mod generate;
mod validate;
pub mod yaml;

pub use crate::recipe::iso::OverlayFormat;
pub use generate::{generate, late_commands, merge_template, Seed};
pub use validate::{
    check_kernel_args, diagnose, validate_network_config, validate_user_data, Diag, SeedKind,
    Severity, Warning,
};

pub const USER_DATA: &str = "user-data";
pub const META_DATA: &str = "meta-data";
pub const NETWORK_CONFIG: &str = "network-config";
pub const CIDATA_ISO: &str = "cidata.iso";
pub const CIDATA_IMG: &str = "cidata.img";
/// Volume label of the cidata ISO (cloud-init's NoCloud looks for it).
pub const CIDATA_ISO_LABEL: &str = "cidata";
/// Label of the FAT image (NoCloud accepts `CIDATA` on vfat).
pub const CIDATA_FAT_LABEL: &str = "CIDATA";
/// Size of the FAT image in KiB: room for an operator to add files.
pub const CIDATA_FAT_KIB: u64 = 4096;
/// Directory at the installer ISO's root holding `user-data` and `meta-data`.
pub const NOCLOUD_DIR: &str = "nocloud";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedTarget {
    Iso,
    Qcow2,
    Pi,
}

impl SeedTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            SeedTarget::Iso => "iso",
            SeedTarget::Qcow2 => "qcow2",
            SeedTarget::Pi => "pi",
        }
    }
    pub fn kind(self) -> SeedKind {
        match self {
            SeedTarget::Iso => SeedKind::Autoinstall,
            _ => SeedKind::CloudConfig,
        }
    }
}

impl std::fmt::Display for SeedTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the staged overlay travels on the installer ISO.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IsoOverlay {
    /// Directory at the ISO root (`iso.overlay_dir`, default `kiln`).
    pub dir: String,
    pub format: OverlayFormat,
}

impl IsoOverlay {
    /// Path inside the ISO: `/kiln/overlay.tar.zst` (tar) or `/kiln` (tree:
    /// the staged tree's contents go directly under it).
    pub fn iso_path(&self) -> String {
        match self.format {
            OverlayFormat::Tar => format!("/{}/{}", self.dir, crate::stage::TARBALL),
            OverlayFormat::Tree => format!("/{}", self.dir),
        }
    }
    /// The same path as the installer sees it (the ISO is mounted at `/cdrom`).
    pub fn cdrom_path(&self) -> String {
        format!("/cdrom{}", self.iso_path())
    }
}

/// The overlay settings the ISO builder and the late-commands share.
pub fn iso_overlay(r: &Resolved) -> IsoOverlay {
    let i = &r.recipe.iso;
    IsoOverlay {
        dir: i.overlay_dir.clone(),
        format: i.overlay_format,
    }
}

/// The file the last late-command writes in the installed system
/// (`/etc/<name>/installed`): its presence on a disk means "the appliance is
/// installed here", and the ISO's default boot entry then boots that disk
/// instead of reinstalling.
pub fn installed_marker(name: &str) -> String {
    format!("/etc/{name}/installed")
}

/// Where the cloud-init seed writes the operator's provision.env.
pub fn provision_path(r: &Resolved) -> String {
    format!("/etc/{}/provision.env", r.name())
}

/// Kernel arguments that make the Ubuntu installer run unattended from the
/// ISO's NoCloud seed, added to every `linux` line of the ISO's boot menu.
/// They are GRUB words: the `;` is escaped, otherwise GRUB silently cuts the
/// command line there.
pub fn autoinstall_kernel_words() -> Vec<String> {
    vec![
        "autoinstall".into(),
        format!("ds=nocloud\\;s=/cdrom/{NOCLOUD_DIR}/"),
    ]
}

/// [`autoinstall_kernel_words`] as one line.
pub fn autoinstall_kernel_args() -> String {
    autoinstall_kernel_words().join(" ")
}

/// Writes the seed files with the epoch as their time (xorriso and mtools
/// take file times from the disk).
struct WriteSeed {
    files: Vec<(String, Vec<u8>)>,
    epoch: i64,
}

impl Op for WriteSeed {
    fn describe(&self) -> serde_json::Value {
        let files: Vec<_> = self
            .files
            .iter()
            .map(|(n, b)| json!({ "file": n, "bytes": b.len(), "sha256": crate::digest::bytes_sha256(b) }))
            .collect();
        json!({ "write_seed": files, "mtime": self.epoch })
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for (name, bytes) in &self.files {
            let p = cx.out.join(name);
            std::fs::write(&p, bytes).map_err(|e| anyhow::anyhow!("writing {p}: {e}"))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
            crate::fsutil::set_mtime(&p, self.epoch)?;
        }
        Ok(())
    }
}

/// The name of `target`'s seed step.
pub fn step_name(target: SeedTarget) -> String {
    format!("seed-{target}")
}

/// Add the seed step for `target`; returns its index. Generates and
/// validates now (errors name file, line and column); warnings are printed.
pub fn plan(r: &Resolved, plan: &mut Plan, target: SeedTarget) -> Result<usize> {
    let seed = generate(r, target)?;
    for w in &seed.warnings {
        crate::ui::warn(&w.to_string());
    }
    let mut files = vec![
        (USER_DATA.to_string(), seed.user_data.clone().into_bytes()),
        (META_DATA.to_string(), seed.meta_data.clone().into_bytes()),
    ];
    if let Some(n) = &seed.network_config {
        files.push((NETWORK_CONFIG.to_string(), n.clone()));
    }
    let mut b = StepBuilder::new(
        step_name(target),
        match target {
            SeedTarget::Iso => "write and validate the autoinstall NoCloud seed".to_string(),
            _ => format!("write and validate the cloud-init NoCloud seed for {target}, with cidata ISO and FAT images"),
        },
    );
    for s in &seed.sources {
        b = b.input(Input::file(s)?);
    }
    b = b
        .input(Input::value("version", &r.version))
        .input(Input::value("SOURCE_DATE_EPOCH", r.epoch))
        .op(WriteSeed {
            files: files.clone(),
            epoch: r.epoch,
        });
    let user_data = format!("{OUT}/{USER_DATA}");
    if tools::find("cloud-init").is_some() {
        b = b.cmd(tools::cloud_init::schema(user_data.as_str().into()));
    } else {
        crate::ui::warn(
            "cloud-init is not installed: the seed's cloud-config keys are not checked against \
             cloud-init's schema (install the `cloud-init` package)",
        );
    }
    if target != SeedTarget::Iso {
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let paths: Vec<(Utf8PathBuf, &str)> = names
            .iter()
            .map(|n| (Utf8PathBuf::from(format!("{OUT}/{n}")), *n))
            .collect();
        let img = Utf8PathBuf::from(format!("{OUT}/{CIDATA_IMG}"));
        b = b
            .cmd(tools::xorriso::cidata_iso(
                &Utf8PathBuf::from(format!("{OUT}/{CIDATA_ISO}")),
                CIDATA_ISO_LABEL,
                &paths,
                r.epoch,
            ))
            .cmd(tools::dosfstools::mkfs_vfat_image(
                &img,
                CIDATA_FAT_LABEL,
                CIDATA_FAT_KIB,
                r.epoch,
            ))
            .cmd(tools::mtools::mcopy_into(
                &img,
                &paths.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
                r.epoch,
            ));
    }
    Ok(plan.add(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_contract() {
        assert_eq!(installed_marker("demo"), "/etc/demo/installed");
        assert_eq!(
            autoinstall_kernel_words(),
            ["autoinstall", r"ds=nocloud\;s=/cdrom/nocloud/"]
        );
        check_kernel_args(&autoinstall_kernel_args()).unwrap();
    }
}
