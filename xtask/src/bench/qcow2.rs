//! qcow2 bench cases (goals: cold build ≤ 1.15× a bare mmdebstrap of the same
//! packages, warm rebuild after one overlay change ≤ 10 s, no-op ≤ 2 s), the
//! arm64 cold build on this host against a bare arm64 mmdebstrap, and the
//! Raspberry Pi image (cold ≤ 10 min with the part under emulation against a
//! bare arm64 mmdebstrap, warm ≤ 30 s, no-op ≤ 2 s), and the smoke of the
//! demo qcow2: one instance, then two side by side (≤ 1.3× one).
//! The input is a copy of the demo project with a small disk, generated in
//! the scratch directory; the baseline runs in the same process, same run.
//! The demo copy, its builds and one smoke run are shared with the installer
//! case ([`super::installer`]).

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::{timed, BenchCx, Measurement};
use crate::plan::Plan;
use crate::recipe::Arch;

/// A copy of the demo project in the bench scratch.
pub(super) struct Project {
    pub root: Utf8PathBuf,
    pub recipe: Utf8PathBuf,
}

fn demo_project(scratch: &Utf8Path, arch: Arch) -> Result<Project> {
    demo_project_as(
        scratch,
        &format!("qcow2-bench-{arch}"),
        arch,
        "  size: 2G\n",
    )
}

/// The demo project copied into `scratch/<dir>`, its recipe
/// (`recipes/bench-qcow2.yaml`) the demo's for `arch` alone, with
/// `qcow2_lines` (YAML, indented) added to its `qcow2:` section.
pub(super) fn demo_project_as(
    scratch: &Utf8Path,
    dir: &str,
    arch: Arch,
    qcow2_lines: &str,
) -> Result<Project> {
    let root = scratch.join(dir);
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {root}"))?;
    }
    let src = crate::fsutil::workspace_root();
    for d in ["overlay", "systemd", "nocloud", "recipes", "payloads"] {
        copy_dir(&src.join(d), &root.join(d))?;
    }
    let demo = std::fs::read_to_string(root.join("recipes/demo.yaml"))?;
    let recipe = root.join("recipes/bench-qcow2.yaml");
    let text =
        format!("{demo}\narchitectures: [{arch}]\n").replacen("architectures: [amd64]\n", "", 1);
    let text = if qcow2_lines.is_empty() {
        text
    } else {
        crate::recipe::with_section_lines(&text, "qcow2", qcow2_lines)
    };
    std::fs::write(&recipe, text)?;
    Ok(Project { root, recipe })
}

fn copy_dir(from: &Utf8Path, to: &Utf8Path) -> Result<()> {
    for (rel, md) in crate::digest::walk_sorted(from)? {
        let (s, d) = (from.join(&rel), to.join(&rel));
        if md.is_dir() {
            std::fs::create_dir_all(&d)?;
        } else if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&s)?, &d)?;
        } else {
            std::fs::create_dir_all(d.parent().expect("has parent"))?;
            std::fs::copy(&s, &d).with_context(|| format!("copying {s}"))?;
        }
    }
    Ok(())
}

fn build(p: &Project, arch: Arch) -> Result<Plan> {
    build_with(p, "qcow2", |r, plan| {
        crate::qcow2::plan(r, plan, arch).map(drop)
    })
}

/// Plan with `add` and execute on the project's own cache (`<root>/cache`,
/// empty at first: cold builds); artifacts are published into
/// `<root>/output` without the secret scan.
fn build_with(
    p: &Project,
    verb: &str,
    add: impl Fn(&crate::recipe::Resolved, &mut Plan) -> Result<()>,
) -> Result<Plan> {
    build_in(p, &p.root.join("cache"), verb, add)
}

/// [`build_with`] on the step cache `cache`.
pub(super) fn build_in(
    p: &Project,
    cache: &Utf8Path,
    verb: &str,
    add: impl Fn(&crate::recipe::Resolved, &mut Plan) -> Result<()>,
) -> Result<Plan> {
    let plan = plan_in(p, cache, verb, add)?;
    crate::exec::execute(&plan, &crate::exec::Options::default())?;
    Ok(plan)
}

/// The plan [`build_in`] executes.
pub(super) fn plan_in(
    p: &Project,
    cache: &Utf8Path,
    verb: &str,
    add: impl Fn(&crate::recipe::Resolved, &mut Plan) -> Result<()>,
) -> Result<Plan> {
    let r = crate::recipe::load_resolved(&p.recipe, &p.root)?;
    let mut plan = Plan::new(verb, &p.recipe, &p.root, cache, &p.root.join("output"));
    add(&r, &mut plan)?;
    Ok(plan)
}

/// After a cold build: one overlay file changed and `build` timed (goal
/// `warm_max` seconds), then `build` again with nothing changed (goal 2 s).
fn warm_and_noop(
    p: &Project,
    what: &str,
    cold: std::time::Duration,
    warm_max: f64,
    build: impl Fn() -> Result<Plan>,
) -> Result<Vec<Measurement>> {
    let f = p.root.join("overlay/etc/demo/README");
    let mut text = std::fs::read_to_string(&f).unwrap_or_default();
    text.push_str("\nchanged for the warm-rebuild bench\n");
    std::fs::write(&f, text)?;
    let (_, warm) = timed(&build)?;
    let (_, noop) = timed(&build)?;
    Ok(vec![
        Measurement::within_secs(
            &format!("{what} warm rebuild"),
            "one overlay file changed",
            warm,
            "cold build (ratio)",
            cold,
            warm_max,
        ),
        Measurement::within_secs(
            &format!("{what} no-op rebuild"),
            "nothing changed",
            noop,
            "cold build (ratio)",
            cold,
            2.0,
        ),
    ])
}

/// Time a bare mmdebstrap of `arch`'s packages, the command kiln runs.
fn bare_mmdebstrap(bcx: &BenchCx, p: &Project, arch: Arch) -> Result<std::time::Duration> {
    let r = crate::recipe::load_resolved(&p.recipe, &p.root)?;
    let q = &r.recipe.qcow2;
    let packages = r.root_packages(arch);
    let mirrors = crate::qcow2::rootfs::mirror_lines(&r, arch)?;
    let bare_out = bcx.scratch.join("bare-mmdebstrap.tar");
    let bare = crate::tools::mmdebstrap::rootfs_tar(
        arch.debian(),
        &q.suite,
        &packages,
        &mirrors,
        &bare_out,
        r.epoch,
        crate::qcow2::kiln_initrd(arch),
    );
    let (_, base) = timed(|| crate::tools::run(&bare))?;
    let _ = std::fs::remove_file(&bare_out);
    Ok(base)
}

/// Cold build vs bare mmdebstrap; warm rebuild after one overlay change; no-op.
pub fn qcow2_builds(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    let p = demo_project(bcx.scratch, Arch::Amd64)?;
    let base = bare_mmdebstrap(bcx, &p, Arch::Amd64)?;
    let (_, cold) = timed(|| build(&p, Arch::Amd64))?;
    let mut ms = vec![Measurement::time(
        "qcow2 cold build",
        "kiln qcow2 (mmdebstrap + assembly + zstd qcow2)",
        cold,
        "bare mmdebstrap, same packages",
        base,
        1.15,
    )];

    ms.extend(warm_and_noop(&p, "qcow2", cold, 10.0, || {
        build(&p, Arch::Amd64)
    })?);
    let _ = std::fs::remove_dir_all(&p.root);
    Ok(ms)
}

/// arm64 on this host: the cold build (mmdebstrap under qemu-user, kiln's
/// initrd, systemd-boot, zstd qcow2) against the bare mmdebstrap it runs.
pub fn qcow2_arm64_cold(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    crate::tools::binfmt::require(Arch::Arm64)?;
    let p = demo_project(bcx.scratch, Arch::Arm64)?;
    let base = bare_mmdebstrap(bcx, &p, Arch::Arm64)?;
    let (_, cold) = timed(|| build(&p, Arch::Arm64))?;
    let _ = std::fs::remove_dir_all(&p.root);
    Ok(vec![Measurement::time(
        "qcow2 arm64 cold build",
        "kiln qcow2 for arm64 (mmdebstrap under qemu-user + kiln initrd + assembly)",
        cold,
        "bare arm64 mmdebstrap, same packages",
        base,
        1.3,
    )])
}

/// The Raspberry Pi image from the demo recipe: the cold build in two timed
/// parts (the arm64 root under qemu-user, then everything else), against a
/// bare arm64 mmdebstrap of the same packages; a warm rebuild after one
/// overlay change; a no-op.
pub fn pi_builds(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    crate::tools::binfmt::require(Arch::Arm64)?;
    let p = demo_project(bcx.scratch, Arch::Arm64)?;
    let base = bare_mmdebstrap(bcx, &p, Arch::Arm64)?;
    let (_, emulated) = timed(|| {
        build_with(&p, "pi", |r, plan| {
            crate::qcow2::rootfs::plan(r, plan, Arch::Arm64).map(drop)
        })
    })?;
    let pi = |r: &crate::recipe::Resolved, plan: &mut Plan| crate::pi::plan(r, plan).map(drop);
    let (_, rest) = timed(|| build_with(&p, "pi", pi))?;
    let cold = emulated + rest;
    let mut ms = vec![
        Measurement::within_secs(
            "pi cold build",
            "kiln pi (arm64 root + image + zstd), 2-core goal",
            cold,
            "bare arm64 mmdebstrap (ratio)",
            base,
            600.0,
        ),
        Measurement::time(
            "pi cold: under emulation",
            "the arm64 root step (mmdebstrap under qemu-user)",
            emulated,
            "bare arm64 mmdebstrap, same packages",
            base,
            1.15,
        ),
    ];
    ms.extend(warm_and_noop(&p, "pi", cold, 30.0, || {
        build_with(&p, "pi", pi)
    })?);
    let _ = std::fs::remove_dir_all(&p.root);
    Ok(ms)
}

/// The smoke of the demo qcow2 (UEFI, TCG, first boot only, no carrier):
/// one instance alone, then two instances of the same disk side by side,
/// then one instance alone on the vCPUs each of the two had. Reports the
/// time to the last marker of one instance (qemu's start to the last
/// first-boot check, the web container's `/healthz`); the ratio of the
/// two-instance run to one instance on the same share of the cores (goal
/// <= 1.3x on 2 cores: what running side by side costs); and, reported,
/// its ratio to one instance on every core.
pub fn smoke(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    let p = demo_project(bcx.scratch, Arch::Amd64)?;
    let plan = build(&p, Arch::Amd64)?;
    let disk = plan
        .publish
        .iter()
        .find(|a| a.name.ends_with(".qcow2"))
        .map(|a| a.from.clone())
        .context("the qcow2 plan publishes no disk")?;
    let artifact = crate::smoke::Artifact {
        path: disk,
        format: crate::smoke::Format::Qcow2,
        arch: Arch::Amd64,
    };
    let mut r = crate::recipe::load_resolved(&p.recipe, &p.root)?;
    r.recipe.smoke.again.clear();
    r.recipe.smoke.once.clear();
    let run = |instances: usize, vcpus: Option<u32>| -> Result<std::time::Duration> {
        let report = smoke_run(bcx, &r, &artifact, instances, vcpus)?;
        let last = report
            .outcomes
            .iter()
            .filter_map(|o| o.at_secs)
            .fold(0.0f64, f64::max);
        Ok(std::time::Duration::from_secs_f64(last))
    };
    let one = run(1, None)?;
    let two = run(2, None)?;
    // What each of the two guests had (one vCPU each on two cores): the
    // same guest alone on the same share is the baseline of the ratio.
    let share = crate::smoke::vcpus_each(2);
    let alone = run(1, Some(share))?;
    let _ = std::fs::remove_dir_all(&p.root);
    Ok(vec![
        Measurement::report(
            "smoke: demo qcow2 (TCG)",
            "one instance, UEFI: qemu start to the last first-boot check",
            one,
            "(no baseline: watched for regressions)",
            one,
        ),
        Measurement::time(
            "smoke: two instances",
            &format!("two instances side by side ({share} vCPU each), to the last check of both"),
            two,
            &format!("one instance alone with {share} vCPU"),
            alone,
            1.3,
        ),
        Measurement::report(
            "smoke: two vs one with all cores",
            "two instances side by side, against the one instance above (TCG is CPU-bound: \
             near cores/instances when one guest already uses every core)",
            two,
            "one instance, UEFI, every core",
            one,
        ),
    ])
}

/// One smoke run of `artifact` under TCG: `instances` UEFI instances, no
/// config carrier, in a work directory of the scratch (removed after). A
/// failed check is an error naming the failures.
pub(super) fn smoke_run(
    bcx: &BenchCx,
    r: &crate::recipe::Resolved,
    artifact: &crate::smoke::Artifact,
    instances: usize,
    vcpus: Option<u32>,
) -> Result<crate::smoke::report::Report> {
    // qemu and the firmware, installed as `cargo xtask smoke` would.
    let needs = crate::smoke::needs(std::slice::from_ref(artifact), false);
    crate::doctor::ensure(&needs, "`cargo xtask bench` (its smoke)", false)?;
    let work = bcx.scratch.join(format!("smoke-{instances}"));
    let _ = std::fs::remove_dir_all(&work);
    let opts = crate::smoke::Options {
        instances,
        firmware: crate::smoke::FirmwareChoice::Uefi,
        accel: "tcg".into(),
        carrier: false,
        carrier_as: crate::smoke::CarrierAs::Cdrom,
        carrier_broken: false,
        work: work.join("work"),
        logs: work.join("logs"),
        parallel: instances,
        vcpus,
    };
    let report = crate::smoke::run(r, std::slice::from_ref(artifact), &opts)?;
    let _ = std::fs::remove_dir_all(&work);
    if report.failures() > 0 {
        let failed: Vec<String> = report
            .outcomes
            .iter()
            .filter(|o| !o.ok)
            .map(|o| o.line())
            .collect();
        anyhow::bail!(
            "the smoke of {} failed:\n{}",
            artifact.name(),
            failed.join("\n")
        );
    }
    Ok(report)
}
