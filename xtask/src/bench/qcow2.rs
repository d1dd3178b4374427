//! qcow2 bench cases (goals: cold build ≤ 1.15× a bare mmdebstrap of the same
//! packages, warm rebuild after one overlay change ≤ 10 s, no-op ≤ 2 s), the
//! arm64 cold build on this host against a bare arm64 mmdebstrap, and the
//! Raspberry Pi image (cold ≤ 10 min with the part under emulation against a
//! bare arm64 mmdebstrap, warm ≤ 30 s, no-op ≤ 2 s).
//! The input is a copy of the demo project with a small disk, generated in
//! the scratch directory; the baseline runs in the same process, same run.

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::{timed, BenchCx, Measurement};
use crate::plan::Plan;
use crate::recipe::Arch;

struct Project {
    root: Utf8PathBuf,
    recipe: Utf8PathBuf,
}

fn demo_project(scratch: &Utf8Path, arch: Arch) -> Result<Project> {
    let root = scratch.join(format!("qcow2-bench-{arch}"));
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {root}"))?;
    }
    let src = crate::cx::workspace_root();
    for d in ["overlay", "systemd", "nocloud", "recipes", "payloads"] {
        copy_dir(&src.join(d), &root.join(d))?;
    }
    let demo = std::fs::read_to_string(root.join("recipes/demo.yaml"))?;
    let recipe = root.join("recipes/bench-qcow2.yaml");
    std::fs::write(
        &recipe,
        format!("{demo}\narchitectures: [{arch}]\nqcow2:\n  size: 2G\n").replacen(
            "architectures: [amd64]\n",
            "",
            1,
        ),
    )?;
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

/// Plan with `add` and execute (no publication: the bench times the steps).
fn build_with(
    p: &Project,
    verb: &str,
    add: impl Fn(&crate::recipe::Resolved, &mut Plan) -> Result<()>,
) -> Result<Plan> {
    let r = crate::recipe::load_resolved(&p.recipe, &p.root)?;
    let mut plan = Plan::new(
        verb,
        &p.recipe,
        &p.root,
        &p.root.join("cache"),
        &p.root.join("output"),
    );
    add(&r, &mut plan)?;
    crate::exec::execute(&plan, &crate::exec::Options::default())?;
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

/// Boot the demo qcow2 (UEFI, TCG, offline but for one forwarded port) and
/// time, on the host, the first `GET /healthz` its web container answers.
/// No goal: reported to watch for regressions, with the guest's own time to
/// `demo: bootstrap ok` (its kernel clock) for scale.
pub fn boot_to_http(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    use crate::tools::qemu_system::{Boot, Firmware, OVMF_VARS};
    let p = demo_project(bcx.scratch, Arch::Amd64)?;
    let plan = build(&p, Arch::Amd64)?;
    let disk = plan
        .publish
        .iter()
        .find(|a| a.name.ends_with(".qcow2"))
        .map(|a| a.from.clone())
        .context("the qcow2 plan publishes no disk")?;
    // The guest writes to its disk: boot a copy, never the cache entry.
    let copy = bcx.scratch.join("boot.qcow2");
    std::fs::copy(&disk, &copy).with_context(|| format!("copying {disk}"))?;
    let vars = bcx.scratch.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars).with_context(|| format!("copying {OVMF_VARS}"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let boot = Boot::new(Firmware::Uefi)
        .disk(&copy, "qcow2")
        .vars(&vars)
        .forward(port, 80)
        .cmd();
    // qemu in the background; curl polls the forwarded port once a second.
    const PROBE: &str = r#"port=$1; shift
"$@" &
until curl -fsS --max-time 3 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do sleep 1; done
echo kiln-bench-http-ok
wait"#;
    let cmd = crate::tools::Cmd::new("sh", "boot the demo qcow2 until its web container answers")
        .args(["-c", PROBE, "sh"])
        .arg(port.to_string())
        .arg(&boot.program)
        .args(&boot.args);
    let limit = std::time::Duration::from_secs(900);
    let (watch, took) = timed(|| crate::tools::run_until(&cmd, &["kiln-bench-http-ok"], limit))?;
    let _ = std::fs::remove_dir_all(&p.root);
    let _ = std::fs::remove_file(&copy);
    let console = match watch {
        crate::tools::Watch::Matched { output } => output,
        crate::tools::Watch::Exited { output, .. } | crate::tools::Watch::TimedOut { output } => {
            anyhow::bail!(
                "the demo qcow2's web container did not answer within {limit:?}:\n{}",
                output.lines().rev().take(40).collect::<Vec<_>>().join("\n")
            )
        }
    };
    let bootstrap = console
        .lines()
        .find(|l| l.contains("demo: bootstrap ok"))
        .and_then(|l| {
            l.trim_start()
                .strip_prefix('[')?
                .split(']')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .map(std::time::Duration::from_secs_f64)
        .unwrap_or_default();
    Ok(vec![Measurement::report(
        "qcow2 boot to HTTP (TCG)",
        "host: qemu start to the first GET /healthz answered",
        took,
        "guest kernel clock at `demo: bootstrap ok`",
        bootstrap,
    )])
}
