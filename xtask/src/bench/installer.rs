//! The offline installer ISO (issue 17), from a copy of the demo project
//! built on the step cache:
//!
//! - `installer-iso`: the ISO target's own step (`iso-amd64`: the payload
//!   compressed with zstd on every core with its sha256 taken on the
//!   writer's thread, straight into the ISO behind xorriso's head, the
//!   menu, xorriso's head again with the real sha256, the GPT entry, the
//!   flush and sha256 of the ISO)
//!   on the already built fitted disk and boot parts, against `zstd -T0` of
//!   the same raw disk at the same level, in alternating rounds of the same
//!   run. Goal: <= 1.2x. The disk, the Debian root, the installer's tools
//!   and the boot parts are built first, untimed (cached steps). Each timed
//!   round plans the ISO step again and runs it alone in a fresh cache
//!   directory of the scratch: its key is the cached entry's, but nothing
//!   is found under it, so the step really runs (no production code path
//!   is bypassed).
//! - `installer-boot`: the boot parts' step (`installer-boot-amd64`: the
//!   kernel and modules read from the root, the initramfs, GRUB for BIOS
//!   and UEFI, the ESP), run alone the same way, once. It depends on the
//!   root and the tools only, so a change of the appliance's files or
//!   version does not run it again; on a cold build it runs beside the
//!   disk step. Reported.
//! - `installer: install under TCG`: the built ISO installed onto a blank
//!   disk through the smoke (one instance, UEFI, no carrier): qemu's start
//!   to the installer's `install complete` line; and the installed disk's
//!   first boot to its last check. Reported, no goal.
//!
//! `--scale` below 1 runs one round instead of three and shrinks the blank
//! target disk (sparse; never below the image). The payload itself is the
//! demo's disk fitted to its content: no scale shrinks it.

use anyhow::{Context, Result};
use camino::Utf8Path;

use super::qcow2::{build_in, demo_project_as, plan_in, smoke_run, Project};
use super::{alternating, timed, BenchCx, Measurement};
use crate::iso::installer;
use crate::plan::Plan;
use crate::recipe::Arch;
use crate::tools::{self, zstd};

const GOAL: f64 = 1.2;
const ROUNDS: usize = 3;
/// The ISO step, the boot parts' step and the fitted disk step of [`installer::plan`].
const ISO_STEP: &str = "iso-amd64";
const BOOT_STEP: &str = "installer-boot-amd64";
const DISK_STEP: &str = "installer-disk-amd64";
/// The blank target disk at scale 1.
const TARGET_BYTES: u64 = 2 << 30;

fn add_installer(r: &crate::recipe::Resolved, plan: &mut Plan) -> Result<()> {
    installer::plan(r, plan).map(drop)
}

/// The step `name` of a new plan of `p`, alone, its output in `fresh` (a
/// cache directory of its own) instead of `cache`, publishing nothing:
/// executing it runs the step whatever `cache` holds.
fn step_alone(p: &Project, cache: &Utf8Path, fresh: &Utf8Path, name: &str) -> Result<Plan> {
    let mut plan = plan_in(p, cache, "iso", add_installer)?;
    let i = plan
        .steps
        .iter()
        .position(|s| s.name == name)
        .with_context(|| format!("the installer plan has no step {name}"))?;
    let mut step = plan.steps.swap_remove(i);
    step.out = fresh.join(&step.name).join(&step.key[..20]);
    plan.steps = vec![step];
    plan.publish.clear();
    Ok(plan)
}

/// Run the step `name` of the installer plan alone in a fresh directory
/// of the scratch (round `round`); its time.
fn run_alone(bcx: &BenchCx, p: &Project, name: &str, round: usize) -> Result<std::time::Duration> {
    let fresh = bcx.scratch.join(format!("installer-{name}-round-{round}"));
    let plan = step_alone(p, bcx.cache, &fresh, name)?;
    let (report, t) = timed(|| crate::exec::execute(&plan, &crate::exec::Options::default()))?;
    anyhow::ensure!(
        report.steps == [(name.to_string(), crate::exec::Outcome::Ran)],
        "kiln bug: the timed step {name} did not run: {:?}",
        report.steps
    );
    let _ = std::fs::remove_dir_all(&fresh);
    Ok(t)
}

pub fn installer_iso(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    // The demo's own disk settings (no qcow2.size), so the steps are the
    // ones a build of the demo caches.
    let p = demo_project_as(bcx.scratch, "installer-bench", Arch::Amd64, "")?;
    let built = build_in(&p, bcx.cache, "iso", add_installer)?;
    let raw = built
        .find(DISK_STEP)
        .with_context(|| format!("the installer plan has no step {DISK_STEP}"))?
        .output(crate::qcow2::disk::DISK_RAW);
    let iso = built
        .publish
        .iter()
        .find(|a| a.name.ends_with(".iso"))
        .map(|a| a.from.clone())
        .context("the installer plan publishes no ISO")?;
    let raw_bytes = std::fs::metadata(&raw)
        .with_context(|| format!("reading the size of the fitted disk {raw}"))?
        .len();
    let iso_bytes = std::fs::metadata(&iso)
        .with_context(|| format!("reading the size of {iso}"))?
        .len();

    let rounds = if bcx.scale < 1.0 { 1 } else { ROUNDS };
    let by_zstd = bcx.scratch.join("installer-bench-disk.raw.zst");
    let mut round = 0;
    let (_, kiln, base) = alternating(
        rounds,
        || {
            let _ = std::fs::remove_file(&by_zstd);
            let ((), t) = timed(|| {
                tools::run(&zstd::compress_file(&raw, &by_zstd, installer::ZSTD_LEVEL))?;
                Ok(())
            })?;
            let _ = std::fs::remove_file(&by_zstd);
            Ok(t)
        },
        || {
            round += 1;
            let t = run_alone(bcx, &p, ISO_STEP, round)?;
            Ok(((), t))
        },
    )?;
    let mib = |b: u64| b >> 20;
    let mut ms = vec![Measurement::time(
        "installer-iso",
        &format!(
            "the installer ISO step on the built disk ({} MiB raw -> {} MiB ISO: zstd + sha256, \
             menu, xorriso, flush + sha256; median of {rounds})",
            mib(raw_bytes),
            mib(iso_bytes)
        ),
        kiln,
        &format!(
            "zstd -T0 -{} of the same raw disk, median of {rounds}",
            installer::ZSTD_LEVEL
        ),
        base,
        GOAL,
    )];

    let boot = run_alone(bcx, &p, BOOT_STEP, 1)?;
    ms.push(Measurement::report(
        "installer-boot",
        "the installer's boot parts (kernel and modules read from the root, initramfs, GRUB \
         for BIOS and UEFI, ESP): once per root or tools change, beside the disk step",
        boot,
        "(no baseline: watched for regressions)",
        boot,
    ));

    // The install: the ISO onto a blank disk, then that disk's first boot.
    let mut r = crate::recipe::load_resolved(&p.recipe, &p.root)?;
    r.recipe.smoke.again.clear();
    r.recipe.smoke.once.clear();
    r.recipe.qcow2.size_bytes = bcx.bytes(TARGET_BYTES).max(raw_bytes).div_ceil(1 << 20) << 20;
    let artifact = crate::smoke::Artifact {
        path: iso,
        format: crate::smoke::Format::Iso,
        arch: Arch::Amd64,
    };
    let report = smoke_run(bcx, &r, &artifact, 1, None)?;
    let install = report
        .outcomes
        .iter()
        .find(|o| o.guest.ends_with(" install") && o.check.contains(installer::DONE_MARKER))
        .and_then(|o| o.at_secs)
        .context("the smoke report has no time for the installer's done line")?;
    let install = std::time::Duration::from_secs_f64(install);
    let none = "(no baseline: watched for regressions)";
    ms.push(Measurement::report(
        "installer: install under TCG",
        &format!(
            "one instance, UEFI, blank {} MiB disk: qemu start to `{}` ({} MiB image)",
            mib(r.recipe.qcow2.size_bytes),
            installer::DONE_MARKER,
            mib(raw_bytes)
        ),
        install,
        none,
        install,
    ));
    if let Some(b) = report.first_boots.first() {
        let first = std::time::Duration::from_secs_f64(b.secs);
        ms.push(Measurement::report(
            "installer: first boot (TCG)",
            "the installed disk's first boot, UEFI: qemu start to its last check",
            first,
            none,
            first,
        ));
    }
    let _ = std::fs::remove_dir_all(&p.root);
    Ok(ms)
}
