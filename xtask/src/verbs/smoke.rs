//! `cargo xtask smoke`: boot artifacts under qemu and check them against the
//! recipe's `smoke:` section.

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::cx::Cx;
use crate::plan::Plan;
use crate::recipe::{Arch, Resolved};
use crate::smoke::{Artifact, FirmwareChoice, Format};

/// Boot the appliance's images under qemu and check what the recipe promises
///
/// With no ARTIFACT, builds the recipe's images first (through the cache: a
/// no-op when they are current) and boots those of `--format`. Every guest
/// runs on a throw-away overlay: the artifact is never written. Guests boot
/// in parallel, up to the cores available, under TCG. With `--accel kvm`, a
/// probe boot (30 s at most, on a snapshot) first checks that KVM makes
/// progress here (the guest's kernel shows time past one second); guests
/// of the host's architecture then boot under KVM, and anything else (the
/// Pi, arm64 on x86, a host where KVM hangs or /dev/kvm is missing) under
/// TCG, with a warning saying why.
///
/// What is checked comes from the recipe's `smoke:` section (`cargo xtask
/// recipe show` prints it with its defaults):
///   boot:      console patterns and HTTP GETs, in order, each with its time
///              (`within`, seconds): the first boot of every instance
///   again:     a second boot of the first instance's disk
///   once:      first-boot work: seen on the first boot, never on the second
///   identity:  the appliance's report of per-instance identity (digests);
///              every instance must differ in every name, and a second boot
///              must repeat the first boot's report
///   carrier:   the config carrier: the recipe's cloud-init seed with fresh
///              values in provision.env, given to the first instance at its
///              first boot: a VM gets cidata.iso as a CD-ROM, or with
///              `--carrier-as disk` cidata.img (FAT, label CIDATA) as a
///              second disk; a Pi gets it written onto its own copy of the
///              card's FAT boot partition. The appliance must report the
///              values' digests (`report`). With `--carrier-broken`, every
///              other instance gets the same carrier with a malformed
///              user-data: its first boot must pass every check, show the
///              appliance's report that the carrier was not applied
///              (`refused`) and report none of its values. The summary
///              gives each instance's first-boot time and what a carrier
///              adds to it (also in junit.xml's properties and smoke.json)
///   fail:      console patterns that fail a boot at once
///   iso:       extra console checks for the ISO: a remastered Ubuntu ISO
///              boots as a CD-ROM and must first show the autoinstall words
///              on its kernel command line; kiln's offline installer ISO
///              installs each instance onto a blank disk of `qcow2.size`
///              (these checks, then the installer's done line; its FAILED
///              line fails at once), and that disk then boots alone through
///              every check above
///
/// Two instances (the default for `--format all`) boot the same image side
/// by side, so a baked machine-id or host key fails even if the secret scan
/// missed it. Firmwares are taken in turn by the instances (`--firmware
/// both` with two instances: the first UEFI, the second BIOS).
///
/// Results: a line per check with its time to marker; `output/smoke/`
/// holds `junit.xml`, `smoke.json` and every console log
/// (`<artifact>/instance-N-<machine>-{install,boot-M}.log`); a failure shows the
/// check, why, and the last 50 console lines. qemu is always stopped: after
/// the last check, on a failure, on Ctrl-C.
///
/// Examples:
///   cargo xtask smoke                              build, then boot every format twice
///   cargo xtask smoke --format qcow2 --firmware both
///   cargo xtask smoke output/demo-1.0-amd64.ova --instances 1
///   cargo xtask smoke --format qcow2 --carrier-as disk --carrier-broken
///                                                  #1 reads cidata.img, #2 survives a bad seed
///   cargo xtask smoke --dry-run                    the build plan and the guests
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Artifacts to boot (`.qcow2`, `.ova`, `.iso`, Pi `.img[.zst]`);
    /// default: build and boot the recipe's.
    pub artifacts: Vec<Utf8PathBuf>,
    /// Which of the recipe's formats to build and boot.
    #[arg(long, value_enum, default_value = "all")]
    pub format: FormatArg,
    /// Firmware of the guests (see above).
    #[arg(long, value_enum, default_value = "auto")]
    pub firmware: FirmwareChoice,
    /// Instances of each disk image (default: 2 with `--format all`, else 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub instances: Option<u32>,
    /// qemu's accelerator: tcg, or kvm where a probe boot shows KVM makes progress.
    #[arg(long, default_value = "tcg", value_parser = ["tcg", "kvm"])]
    pub accel: String,
    /// Do not attach the config carrier.
    #[arg(long)]
    pub no_carrier: bool,
    /// How a VM gets the carrier: cidata.iso as a CD-ROM, or cidata.img
    /// (FAT, label CIDATA) as a second disk. (A Pi: its boot partition.)
    #[arg(long, value_enum, value_name = "HOW", default_value = "cdrom")]
    pub carrier_as: crate::smoke::CarrierAs,
    /// Give every instance without the carrier (all of them with
    /// `--no-carrier`) one with a malformed user-data: its first boot must
    /// complete, report the carrier as not applied, and mint its settings.
    #[arg(long)]
    pub carrier_broken: bool,
    /// Boots at once (default: the cores available).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    All,
    Iso,
    Qcow2,
    Ova,
    Pi,
}

impl FormatArg {
    fn takes(self, f: Format) -> bool {
        match self {
            FormatArg::All => true,
            FormatArg::Iso => f == Format::Iso,
            FormatArg::Qcow2 => f == Format::Qcow2,
            FormatArg::Ova => f == Format::Ova,
            FormatArg::Pi => f == Format::Pi,
        }
    }
}

/// The recipe's artifacts of `format`, and the plan that builds them.
fn plan(cx: &Cx, r: &Resolved, format: FormatArg) -> Result<(Plan, Vec<Utf8PathBuf>)> {
    let mut plan = cx.plan("smoke");
    let mut out = Vec::new();
    // A remaster needs a base ISO; the offline installer (the default
    // without one) is built from the appliance's own disk.
    let installer = r.recipe.iso.mode() == crate::recipe::iso::IsoMode::Installer;
    let iso = installer || r.recipe.iso.base.is_some();
    if format == FormatArg::Iso && !iso {
        bail!(
            "{}: no ISO to boot: the recipe remasters (`iso.mode: remaster`) but has no `iso.base` \
             (set it, or pass a built ISO as ARTIFACT)",
            r.file
        );
    }
    if format.takes(Format::Iso) && iso {
        let o = crate::iso::Overrides {
            base_iso: None,
            base_sha256: None,
            preview: cx.dry_run,
        };
        crate::iso::plan(r, &mut plan, &o)?;
        out.push(cx.output.join(r.artifact_name(Arch::Amd64, "iso")));
    }
    if format.takes(Format::Qcow2) {
        for &arch in &r.recipe.architectures {
            crate::qcow2::plan(r, &mut plan, arch)?;
            out.push(cx.output.join(r.artifact_name(arch, "qcow2")));
        }
    }
    if format.takes(Format::Ova) && r.recipe.architectures.contains(&Arch::Amd64) {
        let disk = crate::ova::DiskSource::from_recipe(r, &mut plan, crate::ova::Firmware::Auto)?;
        crate::ova::plan(r, &mut plan, Arch::Amd64, disk)?;
        out.push(cx.output.join(r.artifact_name(Arch::Amd64, "ova")));
    }
    if format.takes(Format::Pi) {
        if let Some(pi) = &r.recipe.pi {
            crate::pi::plan(r, &mut plan)?;
            out.push(cx.output.join(crate::pi::artifact_name(r, pi.compression)));
        } else if format == FormatArg::Pi {
            bail!(
                "{}: the recipe has no `pi:` section: no Raspberry Pi image to boot",
                r.file
            );
        }
    }
    if out.is_empty() {
        bail!(
            "{}: the recipe builds no {format:?} artifact to boot",
            r.file
        );
    }
    Ok((plan, out))
}

/// Removes a directory when dropped (the run's scratch space, a report
/// being written), so a failure or Ctrl-C leaves nothing behind.
struct Scratch(Utf8PathBuf);

impl Scratch {
    fn new(dir: Utf8PathBuf) -> Result<Scratch> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir}"))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    let r = cx.recipe()?;
    let paths = if a.artifacts.is_empty() {
        let gate = crate::scan::gate(&r);
        let (_, paths) = plan(cx, &r, a.format)?;
        cx.execute(|| Ok(plan(cx, &r, a.format)?.0), Some(&gate))?;
        paths
    } else {
        a.artifacts.clone()
    };
    let mut artifacts = Vec::new();
    for p in &paths {
        if cx.dry_run && !p.exists() {
            continue;
        }
        let art = Artifact::from_path(p)?;
        if a.artifacts.is_empty() || a.format.takes(art.format) {
            artifacts.push(art);
        }
    }
    let instances = a
        .instances
        .map(|n| n as usize)
        .unwrap_or(if a.format == FormatArg::All { 2 } else { 1 });
    if cx.dry_run {
        println!(
            "smoke: {} artifact(s) after the build, {instances} instance(s) each, firmware {:?}, {}",
            paths.len(),
            a.firmware,
            a.accel
        );
        for p in &paths {
            println!("  {p}");
        }
        let o = &r.recipe.smoke;
        if o.carrier.is_some() {
            let good = (!a.no_carrier).then_some("instance 1: the config carrier");
            let broken = a.carrier_broken.then_some(if a.no_carrier {
                "every instance: a broken carrier (malformed user-data)"
            } else {
                "instances 2 and on: a broken carrier (malformed user-data)"
            });
            let what: Vec<&str> = [good, broken].into_iter().flatten().collect();
            if !what.is_empty() {
                println!(
                    "  carrier ({}; a Pi: its boot partition): {}",
                    match a.carrier_as {
                        crate::smoke::CarrierAs::Cdrom => "cidata.iso as a CD-ROM",
                        crate::smoke::CarrierAs::Disk => "cidata.img as a second disk",
                    },
                    what.join("; ")
                );
            }
        }
        let installs = paths.iter().any(|p| p.as_str().ends_with(".iso"))
            && r.recipe.iso.mode() == crate::recipe::iso::IsoMode::Installer;
        let install = if installs {
            crate::smoke::install_checks(o)
        } else {
            Vec::new()
        };
        for (what, checks) in [
            ("install", &install),
            ("first boot", &o.boot),
            ("second boot", &o.again),
        ] {
            for c in checks.iter() {
                println!("  {what}: {} within {}s", c.describe(), c.within);
            }
        }
        return Ok(());
    }
    let needs = crate::smoke::needs(
        &artifacts,
        a.carrier_as == crate::smoke::CarrierAs::Disk && r.recipe.smoke.carrier.is_some(),
    );
    crate::doctor::ensure(&needs, "`cargo xtask smoke`", cx.no_install)?;
    let work = Scratch::new(cx.cache.join(format!("smoke.tmp-{}", std::process::id())))?;
    let partial = Scratch::new(cx.output.join(".smoke.kiln-partial"))?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let opts = crate::smoke::Options {
        instances,
        firmware: a.firmware,
        accel: a.accel.clone(),
        carrier: !a.no_carrier,
        carrier_as: a.carrier_as,
        carrier_broken: a.carrier_broken,
        work: work.0.clone(),
        logs: partial.0.clone(),
        parallel: a.parallel.unwrap_or(cores).max(1),
        vcpus: None,
    };
    let report = crate::smoke::run(&r, &artifacts, &opts)?;
    write(&partial.0.join("junit.xml"), &report.junit())?;
    write(&partial.0.join("smoke.json"), &report.json())?;
    let dest = cx.output.join("smoke");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&partial.0, &dest)
        .with_context(|| format!("moving the smoke report into {dest}"))?;
    if cx.json {
        print!("{}", report.json());
    }
    for line in report.timing_lines() {
        crate::ui::info(&format!("smoke: {line}"));
    }
    let failures = report.failures();
    if failures > 0 {
        for o in report.outcomes.iter().filter(|o| !o.ok) {
            eprintln!("\nFAILED {}", o.line());
            if !o.console_tail.is_empty() {
                eprintln!("--- last console lines ---\n{}\n---", o.console_tail);
            }
        }
        bail!(
            "smoke: {failures} of {} checks failed ({dest}/junit.xml; console logs in {dest}/)",
            report.outcomes.len()
        );
    }
    crate::ui::info(&format!(
        "smoke: all {} checks passed in {:.0}s ({dest}/junit.xml)",
        report.outcomes.len(),
        report.secs
    ));
    Ok(())
}

fn write(p: &Utf8Path, text: &str) -> Result<()> {
    std::fs::write(p, text).with_context(|| format!("writing {p}"))
}
