//! `cargo xtask ova`: build the OVA; `cargo xtask ova lint FILE.ova`: check any OVA.

use anyhow::{bail, Result};
use camino::Utf8PathBuf;

use crate::cx::Cx;
use crate::ova::{DigestAlgo, DiskSource, Firmware};
use crate::recipe::Arch;

/// Wrap the appliance disk in an OVA for VMware/VirtualBox; `ova lint FILE` checks any OVA
///
/// Build `output/<name>-<version>-amd64.ova` (+ `.sha256`) for VMware and
/// VirtualBox: the appliance disk as a streamOptimized VMDK, an OVF 1.x
/// descriptor (CPUs, memory, NIC, guest OS and hardware version from the
/// recipe's `ova:` section) and a SHA256 manifest, in a plain USTAR archive
/// (`.ovf`, `.mf`, `.vmdk`, in that order). Two builds from the same inputs
/// are byte-identical. The OVA is linted before it is published.
///
/// Examples:
///   cargo xtask ova --disk build/disk.raw      wrap an existing disk image
///   cargo xtask ova lint output/demo-1.0-amd64.ova
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Option<Sub>,
    /// Wrap this disk image instead of building the recipe's disk (the qcow2
    /// target's raw disk): raw (with an MBR or GPT), qcow2, or a VMDK.
    #[arg(long, value_name = "PATH")]
    pub disk: Option<Utf8PathBuf>,
    /// Firmware the VM boots with. `auto`: UEFI when the disk is UEFI-only
    /// (GPT with an EFI system partition, no BIOS boot partition, no MBR boot
    /// code), else BIOS.
    #[arg(long, value_enum, default_value = "auto")]
    pub firmware: Firmware,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Check any OVA: plain USTAR; `.ovf` first, `.mf` next (or last), files
    /// in References order; the manifest's syntax, algorithm and every
    /// digest; each referenced file present with its declared size; disk
    /// capacities equal to the VMDKs' virtual sizes; streamOptimized VMDKs
    /// (magic, version >= 3, flags); well-formed OVF 1.x XML. Exits non-zero
    /// and lists every problem when one is found.
    Lint(LintArgs),
}

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// The OVA file.
    pub file: Utf8PathBuf,
    /// Manifest algorithm the OVA must use (current vSphere rejects SHA1).
    #[arg(long, value_enum, default_value = "sha256")]
    pub digest: DigestAlgo,
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    if let Some(Sub::Lint(l)) = a.cmd {
        return lint(cx, l);
    }
    let r = cx.recipe()?;
    let make = || {
        let mut plan = cx.plan("ova");
        plan_ova(&r, &mut plan, &a)?;
        Ok(plan)
    };
    let gate = crate::scan::gate(&r);
    cx.execute(make, Some(&gate))?;
    if !cx.dry_run && !cx.json {
        println!("{}", cx.output.join(r.artifact_name(Arch::Amd64, "ova")));
    }
    Ok(())
}

fn plan_ova(r: &crate::recipe::Resolved, plan: &mut crate::plan::Plan, a: &Args) -> Result<()> {
    let disk = match &a.disk {
        Some(p) => DiskSource::from_file(&crate::fsutil::absolute(p)?, a.firmware)?,
        None => DiskSource::from_recipe(r, plan, a.firmware)?,
    };
    crate::ova::plan(r, plan, Arch::Amd64, disk)?;
    Ok(())
}

fn lint(cx: &Cx, l: LintArgs) -> Result<()> {
    let report = crate::ova::lint::lint(&l.file, l.digest)?;
    if cx.json {
        println!(
            "{}",
            serde_json::json!({
                "file": l.file, "ok": report.ok(), "members": report.members,
                "problems": report.problems, "sha256": report.sha256,
            })
        );
    }
    if !report.ok() {
        bail!(
            "{} fails the OVA lint ({} problem(s)):\n  - {}",
            l.file,
            report.problems.len(),
            report.problems.join("\n  - ")
        );
    }
    if !cx.json {
        println!("{}: ok ({})", l.file, report.members.join(", "));
    }
    Ok(())
}
